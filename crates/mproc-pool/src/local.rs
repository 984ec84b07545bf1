//! The local backend: worker processes on this machine.
//!
//! # Threads
//!
//! - The **caller's thread** sends a job to a worker itself when one can
//!   take it (the fast path: no hand-off); a full pipe blocks the caller,
//!   which is backpressure.
//! - The **result thread** reads the result queue: it reports outcomes to
//!   the scheduler (which runs the callbacks there), and notes workers that
//!   are ready or gone. It never sends on a worker's pipe and never starts a
//!   worker, so nothing it waits for can wait for it: a job a callback
//!   submits, and a job to send again after a worker died, go to the
//!   backlog.
//! - The **dispatcher thread** starts replacement workers and sends the
//!   backlog: jobs no worker could take when they came (every worker at
//!   `maxtasksperchild`, or none alive), jobs submitted from the result
//!   thread, and jobs to send again. While the backlog is not empty, or
//!   the dispatcher holds a job it took from it and has not yet sent (kill
//!   point `pool.backlog-taken`), a new job queues behind them: jobs go to
//!   workers in the order they were submitted.
//!
//! If the result machinery fails — the result queue reports an error, or
//! the result thread panics — the backend is broken: it reports
//! [`Event::Broken`], kills the workers, and `join` still returns (it reaps
//! the workers itself).
//!
//! # A job's states
//!
//! ```text
//! submitted ──send──▶ in flight on worker W (seq s) ──Done──▶ reported
//!                          │
//!                          ├─ W dies, started[W] ≥ s ──▶ reported: WorkerDied
//!                          ├─ W dies, started[W] < s ──▶ sent again
//!                          └─ terminated / broken ─────▶ dropped
//! ```
//!
//! Before it runs job `seq`, a worker writes `seq` into its slot of a small
//! shared array; after a worker dies, the parent reads that slot to tell the
//! job it was running (failed with `WorkerDied`) from the ones queued behind
//! it (sent again: they never ran).
//!
//! # A worker's states
//!
//! ```text
//! starting ──Ready──▶ ready ──maxtasks done / told to finish──▶ exited ──▶ replaced
//!    │                  │                                       (unless closed
//!    │ dies             │ dies                                   and drained,
//!    ▼                  ▼                                       terminated, broken)
//!  init failure      WorkerDied for its running job, the rest resent, replaced
//!  (5 in a row: broken)
//! ```

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mproc_call::panic_message;
use mproc_process::{Process, StartMethod};
use mproc_queue::{Pipe, Queue};
use mproc_shm::transfer::{self, FdTable, Message, SharedFd};
use mproc_shm::{fault, RawArray};
use parking_lot::{Condvar, Mutex};

use crate::backend::{Backend, Calls, Event, Events, Job, JobId, LocalInput, Runner, Work};
use crate::error::TaskError;
use crate::worker::{worker_main, Init, JobPipe, Jobs, Msg, WireJob, WorkerArgs};

thread_local! {
    /// Set on a local backend's result thread: a job submitted here (by a
    /// callback) goes to the backlog instead of a worker's pipe.
    static ON_RESULT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Consecutive workers that may die before their initializer finishes
/// before the pool gives up and is broken.
pub(crate) const MAX_INIT_FAILURES: u32 = 5;

/// How long `join` waits for a worker to leave on its own before SIGKILL.
const LEAVE_GRACE: Duration = Duration::from_secs(5);

/// A job the backend holds until it reports it.
struct Pending {
    runner: Runner,
    input: Arc<LocalInput>,
}

/// A worker's ends: the job pipe, and the socket that carries descriptors.
struct Ends {
    pipe: JobPipe,
    socket: UnixStream,
}

/// One worker process, as the parent sees it.
struct Worker {
    gen: u64,
    process: Arc<Process>,
    /// The job pipe's sending end; `None` once the backend lets it go.
    conn: Arc<Mutex<Option<Ends>>>,
    /// Its initializer is done.
    ready: bool,
    /// Jobs given to it (for `maxtasksperchild`).
    assigned: u64,
    /// Dispatches that chose it and wait for its pipe.
    reserved: u32,
    next_seq: u64,
    /// `(seq, job)` of what it was sent and has not answered, in order.
    inflight: VecDeque<(u64, JobId)>,
}

impl Worker {
    fn pid(&self) -> u32 {
        self.process.pid().unwrap_or(0)
    }

    fn load(&self) -> usize {
        self.inflight.len() + self.reserved as usize
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Terminated,
    Broken,
}

struct State {
    phase: Phase,
    workers: Vec<Option<Worker>>,
    jobs: HashMap<JobId, Pending>,
    /// Jobs waiting for the dispatcher, oldest first.
    backlog: VecDeque<JobId>,
    /// Slots whose worker the dispatcher must start again.
    replace: Vec<usize>,
    /// The dispatcher has taken a job from the backlog and not yet sent
    /// it: a new job must queue behind it, not overtake it.
    dispatching: bool,
    next_gen: u64,
    /// Workers in a row that died before their initializer finished.
    init_failures: u32,
    /// `join` has let the workers go: do not replace them.
    shutting_down: bool,
    /// The dispatcher thread should end.
    stop_dispatch: bool,
    watchers: Vec<JoinHandle<()>>,
}

struct Local {
    state: Mutex<State>,
    /// Signalled when the dispatcher has work (backlog, replacements, stop).
    work: Condvar,
    results: Queue<Msg>,
    /// `join` is closing the result queue: its end is not a failure.
    stopping: AtomicBool,
    /// `started[slot]`: the sequence number of the job the worker in that
    /// slot runs or ran last.
    started: RawArray<u64>,
    maxtasks: u64,
    method: Option<StartMethod>,
    init: Option<Init>,
    /// The scheduler, from `start` until `join`.
    events: Mutex<Option<Arc<dyn Events>>>,
}

/// Worker processes on this machine: the backend of [`Pool::new`](crate::Pool::new).
pub(crate) struct LocalBackend {
    local: Arc<Local>,
    processes: usize,
    /// The result thread and the dispatcher thread, until `join`.
    threads: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
}

/// What the local backend is made with.
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) maxtasks: u64,
    pub(crate) method: Option<StartMethod>,
    pub(crate) init: Option<Init>,
}

/// Sends copies of `fds` on a worker's socket.
fn send_fds(socket: &UnixStream, fds: &[OwnedFd]) -> std::io::Result<()> {
    let mut table = FdTable::new();
    for fd in fds {
        table.push(fd.try_clone()?);
    }
    transfer::send(
        socket,
        &Message {
            bytes: Vec::new(),
            fds: table,
        },
    )
}

impl LocalBackend {
    pub(crate) fn new(cfg: Config) -> std::io::Result<LocalBackend> {
        Ok(LocalBackend {
            local: Arc::new(Local {
                state: Mutex::new(State {
                    phase: Phase::Running,
                    workers: (0..cfg.processes).map(|_| None).collect(),
                    jobs: HashMap::new(),
                    backlog: VecDeque::new(),
                    replace: Vec::new(),
                    dispatching: false,
                    next_gen: 1,
                    init_failures: 0,
                    shutting_down: false,
                    stop_dispatch: false,
                    watchers: Vec::new(),
                }),
                work: Condvar::new(),
                results: Queue::new()?,
                stopping: AtomicBool::new(false),
                started: RawArray::new(cfg.processes)?,
                maxtasks: cfg.maxtasks,
                method: cfg.method,
                init: cfg.init,
                events: Mutex::new(None),
            }),
            processes: cfg.processes,
            threads: Mutex::new(None),
        })
    }
}

impl Backend for LocalBackend {
    fn calls(&self) -> Calls {
        Calls::SameBuild
    }

    fn parallelism(&self) -> usize {
        self.processes
    }

    fn start(&self, events: Arc<dyn Events>) -> Result<(), String> {
        *self.local.events.lock() = Some(events);
        // Any thread may start workers: a daemon child is tied to its parent
        // process, not to the thread that started it.
        self.local.start_all()?;
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| format!("cannot start the pool's {name} thread: {e}"))
        };
        let me = self.local.clone();
        let results = spawn("mproc-pool-results", Box::new(move || me.result_loop()));
        let me = self.local.clone();
        let dispatch = spawn("mproc-pool-dispatch", Box::new(move || me.dispatch_loop()));
        match (results, dispatch) {
            (Ok(r), Ok(d)) => {
                *self.threads.lock() = Some((r, d));
                Ok(())
            }
            (r, d) => {
                let why = [r.as_ref().err(), d.as_ref().err()]
                    .into_iter()
                    .flatten()
                    .next()
                    .cloned()
                    .unwrap_or_default();
                self.local.terminate();
                self.local.join_workers();
                for t in [r.ok(), d.ok()].into_iter().flatten() {
                    let _ = t.join();
                }
                self.local.events.lock().take();
                Err(why)
            }
        }
    }

    fn submit(&self, job: Job) {
        let Work::SameBuild { runner, input } = job.work else {
            // The scheduler makes SameBuild jobs for this backend.
            self.local.report(Event::Failed {
                job: job.id,
                error: TaskError::Refused("a local worker runs only same-build jobs".into()),
            });
            return;
        };
        let id = job.id;
        {
            let mut st = self.local.state.lock();
            if st.phase != Phase::Running {
                return;
            }
            st.jobs.insert(id, Pending { runner, input });
            // The result thread never sends (it must keep reading results);
            // and jobs already waiting, or in the dispatcher's hands, go
            // first.
            if ON_RESULT_THREAD.with(Cell::get) || !st.backlog.is_empty() || st.dispatching {
                st.backlog.push_back(id);
                self.local.work.notify_one();
                return;
            }
        }
        self.local.send(id);
    }

    fn close(&self) {}

    fn terminate(&self) {
        self.local.terminate();
    }

    fn join(&self) {
        self.local.join_workers();
        if let Some((results, dispatch)) = self.threads.lock().take() {
            let _ = dispatch.join();
            // On the result thread itself (a callback dropped the last
            // handle), it ends on its own once this callback returns.
            if !ON_RESULT_THREAD.with(Cell::get) {
                let _ = results.join();
            }
        }
        // The scheduler holds this backend: let go of it.
        self.local.events.lock().take();
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.local
            .state
            .lock()
            .workers
            .iter()
            .flatten()
            .map(Worker::pid)
            .collect()
    }
}

impl Local {
    fn report(&self, e: Event) {
        let events = self.events.lock().clone();
        if let Some(events) = events {
            events.event(e);
        }
    }

    /// Starts a worker in `slot`, with a watcher thread that reports its end.
    fn start_worker(&self, st: &mut State, slot: usize) -> Result<(), String> {
        let gen = st.next_gen;
        st.next_gen += 1;
        let (rx, tx) =
            Pipe::<Jobs>::simplex().map_err(|e| format!("cannot make a job pipe: {e}"))?;
        let (mine, theirs) =
            UnixStream::pair().map_err(|e| format!("cannot make a socket pair: {e}"))?;
        let _ = self.started.set(slot, 0);
        let args = WorkerArgs {
            slot: slot as u32,
            gen,
            jobs: rx,
            fd_socket: SharedFd::new(theirs),
            results: self.results.clone(),
            started: self.started.clone(),
            maxtasks: self.maxtasks,
            init: self
                .init
                .as_ref()
                .map(Init::for_worker)
                .transpose()
                .map_err(|e| format!("cannot pass the initializer's handles: {e}"))?,
        };
        let mut p = Process::new(worker_main, args)
            .name(format!("PoolWorker-{slot}.{gen}"))
            .daemon(true);
        if let Some(m) = self.method {
            p = p.start_method(m);
        }
        p.start()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let process = Arc::new(p);
        let watcher = {
            let (p, results) = (process.clone(), self.results.clone());
            std::thread::Builder::new()
                .name("mproc-pool-watch".into())
                .stack_size(64 << 10)
                .spawn(move || {
                    let _ = p.join();
                    let _ = results.put(Msg::Exited {
                        slot: slot as u32,
                        gen,
                    });
                })
        };
        let watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                let _ = process.kill();
                let _ = process.join();
                return Err(format!("cannot start a watcher thread: {e}"));
            }
        };
        st.watchers.retain(|w| !w.is_finished());
        st.watchers.push(watcher);
        event!(
            info,
            worker = slot,
            generation = gen,
            pid = process.pid().unwrap_or(0),
            "worker started"
        );
        st.workers[slot] = Some(Worker {
            gen,
            process,
            conn: Arc::new(Mutex::new(Some(Ends {
                pipe: tx,
                socket: mine,
            }))),
            ready: false,
            assigned: 0,
            reserved: 0,
            next_seq: 1,
            inflight: VecDeque::new(),
        });
        Ok(())
    }

    /// Starts every worker; on failure, stops those already started.
    fn start_all(&self) -> Result<(), String> {
        let mut st = self.state.lock();
        for slot in 0..st.workers.len() {
            if let Err(why) = self.start_worker(&mut st, slot) {
                st.phase = Phase::Broken;
                for w in st.workers.iter_mut().filter_map(Option::take) {
                    let _ = w.process.kill();
                    let _ = w.process.join();
                }
                for w in st.watchers.drain(..) {
                    let _ = w.join();
                }
                return Err(why);
            }
        }
        Ok(())
    }

    /// The live worker with the fewest jobs that is under its
    /// `maxtasksperchild`, if there is one.
    fn pick(&self, st: &State) -> Option<usize> {
        let maxtasks = self.maxtasks;
        st.workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let w = w.as_ref()?;
                (maxtasks == 0 || w.assigned < maxtasks).then_some((w.load(), i))
            })
            .min()
            .map(|(_, i)| i)
    }

    /// Sends job `id` to the least loaded worker that takes jobs; if none
    /// does, puts it at the front of the backlog for the dispatcher. The
    /// sequence number is assigned under the worker's pipe lock, so a
    /// worker gets its jobs in sequence order. A full pipe blocks: never
    /// call this on the result thread.
    fn send(&self, id: JobId) {
        let mut st = self.state.lock();
        loop {
            if st.phase != Phase::Running || !st.jobs.contains_key(&id) {
                return;
            }
            let Some(slot) = self.pick(&st) else {
                st.backlog.push_front(id);
                self.work.notify_one();
                return;
            };
            let Some(w) = st.workers[slot].as_mut() else {
                continue;
            };
            w.assigned += 1;
            w.reserved += 1;
            let (gen, conn) = (w.gen, w.conn.clone());
            drop(st);
            let pipe = conn.lock();
            st = self.state.lock();
            let Some(w) = st.workers[slot].as_mut().filter(|w| w.gen == gen) else {
                // It died while we waited for its pipe: choose again.
                drop(pipe);
                continue;
            };
            w.reserved -= 1;
            let seq = w.next_seq;
            w.next_seq += 1;
            w.inflight.push_back((seq, id));
            let Some(job) = st.jobs.get(&id) else {
                return;
            };
            let (runner, input) = (job.runner, job.input.clone());
            drop(st);
            let bytes = postcard::to_allocvec(&WireJob {
                seq,
                fds: input.fds.len() as u32,
                runner,
                input: &input.bytes,
            });
            event!(debug, job = id, seq, worker = slot, "task dispatched");
            if let (Some(ends), Ok(bytes)) = (pipe.as_ref(), bytes) {
                // A dead worker's pipe refuses: its watcher reports the
                // death, and the job, sent but never started, is sent again.
                if ends.pipe.send_bytes(&bytes).is_ok() && !input.fds.is_empty() {
                    let _ = send_fds(&ends.socket, &input.fds);
                }
            }
            return;
        }
    }

    /// The dispatcher thread: starts replacement workers and sends the
    /// backlog, until `join` stops it.
    fn dispatch_loop(&self) {
        let mut st = self.state.lock();
        loop {
            if st.stop_dispatch {
                return;
            }
            if !st.replace.is_empty() {
                let mut broken = None;
                for slot in std::mem::take(&mut st.replace) {
                    if !self.replacing(&st) || st.workers[slot].is_some() {
                        continue;
                    }
                    if let Err(why) = self.start_worker(&mut st, slot) {
                        self.break_backend(&mut st);
                        broken = Some(why);
                        break;
                    }
                }
                if let Some(why) = broken {
                    drop(st);
                    self.report(Event::Broken(why));
                    st = self.state.lock();
                }
                continue;
            }
            let sendable =
                !st.backlog.is_empty() && (st.phase != Phase::Running || self.pick(&st).is_some());
            if let Some(id) = sendable.then(|| st.backlog.pop_front()).flatten() {
                st.dispatching = true;
                drop(st);
                fault::point("pool.backlog-taken");
                self.send(id);
                st = self.state.lock();
                st.dispatching = false;
                continue;
            }
            self.work.wait(&mut st);
        }
    }

    /// Whether a worker that ended should be replaced now.
    fn replacing(&self, st: &State) -> bool {
        st.phase == Phase::Running && !st.shutting_down
    }

    /// The result thread: reports outcomes and supervises workers until
    /// `join` closes the queue. Any other end — an error from the queue, a
    /// panic — breaks the backend, so that nothing waits for results that
    /// cannot come.
    fn result_loop(self: &Arc<Self>) {
        ON_RESULT_THREAD.with(|t| t.set(true));
        let why = match catch_unwind(AssertUnwindSafe(|| self.read_results())) {
            Ok(None) => return,
            Ok(Some(why)) => why,
            Err(p) => format!("the result thread panicked: {}", panic_message(&*p)),
        };
        let report = {
            let mut st = self.state.lock();
            let live = st.phase == Phase::Running;
            if live {
                self.break_backend(&mut st);
            }
            live
        };
        if report {
            self.report(Event::Broken(why));
        }
    }

    /// Reads results until the queue ends: `None` when `join` closed it,
    /// else why it failed.
    fn read_results(self: &Arc<Self>) -> Option<String> {
        loop {
            let msg = match self.results.get() {
                Ok(m) => m,
                Err(_) if self.stopping.load(Ordering::Acquire) => return None,
                Err(e) => return Some(format!("the result queue failed: {e}")),
            };
            fault::point("pool.result-received");
            match msg {
                Msg::Ready { slot, gen } => {
                    let mut st = self.state.lock();
                    if let Some(w) = st.workers[slot as usize].as_mut().filter(|w| w.gen == gen) {
                        w.ready = true;
                        st.init_failures = 0;
                    }
                }
                Msg::Done {
                    slot,
                    gen,
                    seq,
                    out,
                } => {
                    let id = {
                        let mut st = self.state.lock();
                        let id = st.workers[slot as usize]
                            .as_mut()
                            .filter(|w| w.gen == gen)
                            .and_then(|w| {
                                let at = w.inflight.iter().position(|&(s, _)| s == seq)?;
                                w.inflight.remove(at).map(|(_, id)| id)
                            });
                        id.filter(|id| st.jobs.remove(id).is_some())
                    };
                    if let Some(job) = id {
                        self.report(match out {
                            Ok(output) => Event::Done {
                                job,
                                output: output.into_vec(),
                            },
                            Err(why) => Event::Failed {
                                job,
                                error: TaskError::Refused(why),
                            },
                        });
                    }
                }
                Msg::Exited { slot, gen } => self.on_exit(slot as usize, gen),
            }
        }
    }

    /// A worker has ended: fail the job it was running, put the jobs it
    /// never started back in the backlog, and have it replaced (or break).
    /// Sends and starts nothing itself: it runs on the result thread.
    fn on_exit(&self, slot: usize, gen: u64) {
        let mut events: Vec<Event> = Vec::new();
        {
            let mut st = self.state.lock();
            let Some(w) = st.workers[slot].take_if(|w| w.gen == gen) else {
                return;
            };
            let code = w.process.exitcode();
            // A worker that leaves with exit code 0 and nothing in flight
            // retired (maxtasksperchild); any other end is a death.
            #[cfg(feature = "tracing")]
            if code == Some(0) && w.inflight.is_empty() {
                tracing::info!(
                    target: "mproc::pool",
                    worker = slot,
                    pid = w.pid(),
                    tasks = w.assigned,
                    "worker retired"
                );
            } else {
                tracing::warn!(
                    target: "mproc::pool",
                    worker = slot,
                    pid = w.pid(),
                    exit_code = code,
                    in_flight = w.inflight.len(),
                    "worker died"
                );
            }
            let died = TaskError::WorkerDied {
                pid: w.pid(),
                signal: code.filter(|&c| c < 0).map(|c| -c),
            };
            let started = self.started.get(slot).unwrap_or(0);
            let mut again = Vec::new();
            for &(seq, id) in &w.inflight {
                if seq <= started {
                    if st.jobs.remove(&id).is_some() {
                        events.push(Event::Failed {
                            job: id,
                            error: died.clone(),
                        });
                    }
                } else {
                    again.push(id);
                }
            }
            // Older than anything in the backlog: in front, in order.
            for id in again.into_iter().rev() {
                event!(
                    info,
                    job = id,
                    "task retried (its worker died before starting it)"
                );
                st.backlog.push_front(id);
            }
            if !w.ready {
                st.init_failures += 1;
            }
            let replace = self.replacing(&st);
            if replace && st.init_failures >= MAX_INIT_FAILURES {
                let last = match w.process.panic_message() {
                    Some(m) => format!("panicked: {m}"),
                    None => format!("exit code {code:?}"),
                };
                let why = format!(
                    "{} workers in a row died before their initializer finished (the last {last})",
                    st.init_failures
                );
                self.break_backend(&mut st);
                events.push(Event::Broken(why));
            } else if replace {
                st.replace.push(slot);
            }
            self.work.notify_one();
        }
        for e in events {
            self.report(e);
        }
    }

    /// Marks the backend broken: every job is dropped (the scheduler fails
    /// them on the `Broken` event), every worker is killed.
    fn break_backend(&self, st: &mut State) {
        st.phase = Phase::Broken;
        st.jobs.clear();
        st.backlog.clear();
        st.replace.clear();
        for w in st.workers.iter().flatten() {
            let _ = w.process.kill();
        }
        self.work.notify_one();
    }

    fn terminate(&self) {
        let procs = {
            let mut st = self.state.lock();
            if st.phase == Phase::Terminated {
                return;
            }
            st.phase = Phase::Terminated;
            st.jobs.clear();
            st.backlog.clear();
            st.replace.clear();
            self.work.notify_one();
            st.workers
                .iter()
                .flatten()
                .map(|w| w.process.clone())
                .collect::<Vec<_>>()
        };
        for p in procs {
            let _ = p.terminate();
        }
    }

    /// Lets the workers go and reaps every one itself — SIGKILL after
    /// [`LEAVE_GRACE`] for one that will not go — without relying on the
    /// result thread, which may be gone. Then stops the dispatcher and the
    /// result machinery.
    fn join_workers(&self) {
        let (workers, running) = {
            let mut st = self.state.lock();
            st.shutting_down = true;
            st.replace.clear();
            let workers: Vec<_> = st
                .workers
                .iter()
                .flatten()
                .map(|w| (w.conn.clone(), w.process.clone()))
                .collect();
            (workers, st.phase == Phase::Running)
        };
        // An empty job tells a worker to finish. (Closing the pipe is not
        // enough: a worker started by fork holds copies of its siblings'
        // pipe ends, so they would never see the end of theirs.) A
        // terminated or broken backend's workers were signalled already.
        for (conn, _) in &workers {
            if let Some(ends) = conn.lock().take() {
                if running {
                    let _ = ends.pipe.send_bytes(&[]);
                }
            }
        }
        for (_, p) in &workers {
            let _ = p.join_timeout(LEAVE_GRACE);
            if p.is_alive() {
                let _ = p.kill();
                let _ = p.join();
            }
        }
        let watchers = {
            let mut st = self.state.lock();
            for w in st.workers.iter_mut() {
                *w = None;
            }
            st.stop_dispatch = true;
            self.work.notify_all();
            std::mem::take(&mut st.watchers)
        };
        // The watchers may wait to report to a result thread that is gone:
        // closing the queue releases them (and ends the result thread once
        // it has read what is left).
        self.stopping.store(true, Ordering::Release);
        self.results.close();
        for w in watchers {
            let _ = w.join();
        }
    }
}
