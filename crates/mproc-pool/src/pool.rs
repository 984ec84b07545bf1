//! The scheduler: job table, dispatch, the result thread, the dispatcher
//! thread, supervision.
//!
//! # Threads
//!
//! - The **caller's thread** accepts a job and sends it to a worker itself
//!   when one can take it (the fast path: no hand-off); a full pipe blocks
//!   the caller, which is backpressure.
//! - The **result thread** reads the result queue: it files outcomes, runs
//!   callbacks, and notes workers that are ready or gone. It never sends on
//!   a worker's pipe and never starts a worker, so nothing it waits for can
//!   wait for it: a job a callback submits, and a job to send again after a
//!   worker died, go to the backlog.
//! - The **dispatcher thread** starts replacement workers and sends the
//!   backlog: jobs no worker could take when they came (every worker at
//!   `maxtasksperchild`, or none alive), jobs submitted from the result
//!   thread, and jobs to send again.
//!
//! If the result machinery fails — the result queue reports an error, or
//! the result thread panics — the pool is broken: every pending job and
//! every later call fails with [`PoolError::Broken`], the workers are
//! killed, and `join` still returns (it reaps the workers itself).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mproc_process::{Process, StartMethod};
use mproc_queue::{Pipe, Queue};
use mproc_shm::transfer::{self, FdTable, Message, SharedFd};
use mproc_shm::{fault, RawArray};
use parking_lot::{Condvar, Mutex};

use crate::worker::{worker_main, Call, Init, Job, JobPipe, Jobs, Msg, WorkerArgs};
use crate::PoolError;

thread_local! {
    /// Set on a pool's result thread: a job submitted here (by a callback)
    /// goes to the backlog instead of a worker's pipe.
    static ON_RESULT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Consecutive workers that may die before their initializer finishes
/// before the pool gives up and is broken.
pub(crate) const MAX_INIT_FAILURES: u32 = 5;

/// How long `join` waits for a worker to leave on its own before SIGKILL.
const LEAVE_GRACE: Duration = Duration::from_secs(5);

/// What the result thread does with a job's outcome: the encoded
/// `ChunkOut<R>`, or the pool's error for the whole chunk.
pub(crate) type Handler = Box<dyn FnOnce(Result<Vec<u8>, PoolError>) + Send>;

/// A job the pool has accepted and not yet resolved.
struct Pending {
    call: Call,
    args: Arc<Vec<u8>>,
    /// Descriptors of handles inside `args`, duplicated for each send.
    fds: Arc<Vec<OwnedFd>>,
    handler: Handler,
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
    /// The job pipe's sending end; `None` once the pool lets the worker go.
    conn: Arc<Mutex<Option<Ends>>>,
    /// Its initializer is done.
    ready: bool,
    /// Jobs given to it (for `maxtasksperchild`).
    assigned: u64,
    /// Dispatches that chose it and wait for its pipe.
    reserved: u32,
    next_seq: u64,
    /// `(seq, job id)` of what it was sent and has not answered, in order.
    inflight: VecDeque<(u64, u64)>,
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
    Closed,
    Terminated,
    Broken(String),
}

impl Phase {
    /// Why the pool refuses a job now, if it does. A closed pool still
    /// takes jobs it had already accepted (`accepted`).
    fn refusal(&self, accepted: bool) -> Option<PoolError> {
        match self {
            Phase::Running => None,
            Phase::Closed if accepted => None,
            Phase::Closed => Some(PoolError::Closed),
            Phase::Terminated => Some(PoolError::Terminated),
            Phase::Broken(why) => Some(PoolError::Broken(why.clone())),
        }
    }
}

struct State {
    phase: Phase,
    workers: Vec<Option<Worker>>,
    jobs: HashMap<u64, Pending>,
    next_job: u64,
    next_gen: u64,
    /// Accepted jobs waiting for the dispatcher, oldest first.
    backlog: VecDeque<u64>,
    /// Slots whose worker the dispatcher must start again.
    replace: Vec<usize>,
    /// Workers in a row that died before their initializer finished.
    init_failures: u32,
    /// `join` has let the workers go: do not replace them.
    shutting_down: bool,
    /// The dispatcher thread should end.
    stop_dispatch: bool,
    watchers: Vec<JoinHandle<()>>,
}

pub(crate) struct Inner {
    state: Mutex<State>,
    /// Signalled when workers come and go and when the job table empties.
    changed: Condvar,
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
}

/// What a pool is configured with.
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

/// Runs a handler; a panicking callback must not take the result thread
/// down with it.
fn run_handler(handler: Handler, outcome: Result<Vec<u8>, PoolError>) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| handler(outcome))) {
        eprintln!(
            "mproc-pool: a result callback panicked: {}",
            crate::worker::panic_text(&*p)
        );
    }
}

impl Inner {
    pub(crate) fn new(cfg: Config) -> Result<Arc<Inner>, PoolError> {
        let setup = |e: std::io::Error| PoolError::Broken(format!("cannot set the pool up: {e}"));
        Ok(Arc::new(Inner {
            state: Mutex::new(State {
                phase: Phase::Running,
                workers: (0..cfg.processes).map(|_| None).collect(),
                jobs: HashMap::new(),
                next_job: 0,
                next_gen: 1,
                backlog: VecDeque::new(),
                replace: Vec::new(),
                init_failures: 0,
                shutting_down: false,
                stop_dispatch: false,
                watchers: Vec::new(),
            }),
            changed: Condvar::new(),
            work: Condvar::new(),
            results: Queue::new().map_err(setup)?,
            stopping: AtomicBool::new(false),
            started: RawArray::new(cfg.processes).map_err(setup)?,
            maxtasks: cfg.maxtasks,
            method: cfg.method,
            init: cfg.init,
        }))
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
    pub(crate) fn start_all(&self) -> Result<(), String> {
        let mut st = self.state.lock();
        for slot in 0..st.workers.len() {
            if let Err(why) = self.start_worker(&mut st, slot) {
                st.phase = Phase::Broken(why.clone());
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

    /// The pids of the live workers, by slot.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.state
            .lock()
            .workers
            .iter()
            .flatten()
            .map(Worker::pid)
            .collect()
    }

    /// `Ok` while the pool takes new tasks.
    pub(crate) fn check_open(&self) -> Result<(), PoolError> {
        match self.state.lock().phase.refusal(false) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Accepts a job and sends it to a worker (or to the backlog). With
    /// `even_if_closed`, a closed pool still takes it (the later chunks of an
    /// `imap` begun before `close`). If the pool refuses, the handler gets
    /// the error.
    pub(crate) fn submit(&self, call: Call, args: Message, handler: Handler, even_if_closed: bool) {
        let id = {
            let mut st = self.state.lock();
            if let Some(e) = st.phase.refusal(even_if_closed) {
                drop(st);
                run_handler(handler, Err(e));
                return;
            }
            let id = st.next_job;
            st.next_job += 1;
            st.jobs.insert(
                id,
                Pending {
                    call,
                    args: Arc::new(args.bytes),
                    fds: Arc::new(args.fds.into_vec()),
                    handler,
                },
            );
            // The result thread never sends (it must keep reading results);
            // and jobs already waiting go first.
            if ON_RESULT_THREAD.with(Cell::get) || !st.backlog.is_empty() {
                st.backlog.push_back(id);
                self.work.notify_one();
                return;
            }
            id
        };
        self.send(id);
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

    /// Sends accepted job `id` to the least loaded worker that takes jobs;
    /// if none does, puts it at the front of the backlog for the dispatcher.
    /// The sequence number is assigned under the worker's pipe lock, so a
    /// worker gets its jobs in sequence order. A full pipe blocks: never
    /// call this on the result thread.
    fn send(&self, id: u64) {
        let mut st = self.state.lock();
        loop {
            if let Some(e) = st.phase.refusal(true) {
                if let Some(p) = st.jobs.remove(&id) {
                    drop(st);
                    run_handler(p.handler, Err(e));
                }
                return;
            }
            if !st.jobs.contains_key(&id) {
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
            let (c, args, fds) = (job.call, job.args.clone(), job.fds.clone());
            drop(st);
            let bytes = postcard::to_allocvec(&Job {
                seq,
                fds: fds.len() as u32,
                trampoline: c.trampoline,
                f: c.f,
                args: &args,
            });
            if let (Some(ends), Ok(bytes)) = (pipe.as_ref(), bytes) {
                // A dead worker's pipe refuses: its watcher reports the
                // death, and the job, sent but never started, is sent again.
                if ends.pipe.send_bytes(&bytes).is_ok() && !fds.is_empty() {
                    let _ = send_fds(&ends.socket, &fds);
                }
            }
            return;
        }
    }

    /// The dispatcher thread: starts replacement workers and sends the
    /// backlog, until `join` stops it.
    pub(crate) fn dispatch_loop(&self) {
        let mut st = self.state.lock();
        loop {
            if st.stop_dispatch {
                return;
            }
            if !st.replace.is_empty() {
                let mut failed = Vec::new();
                for slot in std::mem::take(&mut st.replace) {
                    if !self.replacing(&st) || st.workers[slot].is_some() {
                        continue;
                    }
                    if let Err(why) = self.start_worker(&mut st, slot) {
                        self.break_pool(&mut st, why, &mut failed);
                        break;
                    }
                }
                self.changed.notify_all();
                if !failed.is_empty() {
                    drop(st);
                    for (h, e) in failed {
                        run_handler(h, Err(e));
                    }
                    st = self.state.lock();
                }
                continue;
            }
            let sendable = !st.backlog.is_empty()
                && (st.phase.refusal(true).is_some() || self.pick(&st).is_some());
            if let Some(id) = sendable.then(|| st.backlog.pop_front()).flatten() {
                drop(st);
                self.send(id);
                st = self.state.lock();
                continue;
            }
            self.work.wait(&mut st);
        }
    }

    /// Whether a worker that ended should be replaced now.
    fn replacing(&self, st: &State) -> bool {
        match st.phase {
            Phase::Running => true,
            Phase::Closed => !st.shutting_down,
            Phase::Terminated | Phase::Broken(_) => false,
        }
    }

    /// The result thread: files outcomes and supervises workers until `join`
    /// closes the queue. Any other end — an error from the queue, a panic —
    /// breaks the pool, so that nothing waits for results that cannot come.
    pub(crate) fn result_loop(self: &Arc<Self>) {
        ON_RESULT_THREAD.with(|t| t.set(true));
        let why = match catch_unwind(AssertUnwindSafe(|| self.read_results())) {
            Ok(None) => return,
            Ok(Some(why)) => why,
            Err(p) => format!(
                "the result thread panicked: {}",
                crate::worker::panic_text(&*p)
            ),
        };
        let mut failed = Vec::new();
        {
            let mut st = self.state.lock();
            if !matches!(st.phase, Phase::Terminated | Phase::Broken(_)) {
                self.break_pool(&mut st, why, &mut failed);
            }
        }
        for (h, e) in failed {
            run_handler(h, Err(e));
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
                    let handler = {
                        let mut st = self.state.lock();
                        let id = st.workers[slot as usize]
                            .as_mut()
                            .filter(|w| w.gen == gen)
                            .and_then(|w| {
                                let at = w.inflight.iter().position(|&(s, _)| s == seq)?;
                                w.inflight.remove(at).map(|(_, id)| id)
                            });
                        let h = id.and_then(|id| st.jobs.remove(&id)).map(|p| p.handler);
                        if st.jobs.is_empty() {
                            self.changed.notify_all();
                        }
                        h
                    };
                    if let Some(h) = handler {
                        run_handler(h, out.map(|b| b.into_vec()).map_err(PoolError::Codec));
                    }
                }
                Msg::Exited { slot, gen } => self.on_exit(slot as usize, gen),
            }
        }
    }

    /// A worker has ended: fail the job it was running, put the jobs it
    /// never started back in the backlog, and have it replaced (or break the
    /// pool). Sends and starts nothing itself: it runs on the result thread.
    fn on_exit(&self, slot: usize, gen: u64) {
        let mut failed: Vec<(Handler, PoolError)> = Vec::new();
        {
            let mut st = self.state.lock();
            let Some(w) = st.workers[slot].take_if(|w| w.gen == gen) else {
                return;
            };
            let code = w.process.exitcode();
            let died = PoolError::WorkerDied {
                pid: w.pid(),
                signal: code.filter(|&c| c < 0).map(|c| -c),
            };
            let started = self.started.get(slot).unwrap_or(0);
            let mut again = Vec::new();
            for &(seq, id) in &w.inflight {
                if seq <= started {
                    if let Some(p) = st.jobs.remove(&id) {
                        failed.push((p.handler, died.clone()));
                    }
                } else {
                    again.push(id);
                }
            }
            // Older than anything in the backlog: in front, in order.
            for id in again.into_iter().rev() {
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
                self.break_pool(&mut st, why, &mut failed);
            } else if replace {
                st.replace.push(slot);
            }
            self.work.notify_one();
            self.changed.notify_all();
        }
        for (h, e) in failed {
            run_handler(h, Err(e));
        }
    }

    /// Marks the pool broken: every job fails, every worker is killed.
    fn break_pool(&self, st: &mut State, why: String, failed: &mut Vec<(Handler, PoolError)>) {
        let e = PoolError::Broken(why.clone());
        st.phase = Phase::Broken(why);
        failed.extend(st.jobs.drain().map(|(_, p)| (p.handler, e.clone())));
        st.backlog.clear();
        st.replace.clear();
        for w in st.workers.iter().flatten() {
            let _ = w.process.kill();
        }
        self.work.notify_one();
        self.changed.notify_all();
    }

    pub(crate) fn close(&self) {
        let mut st = self.state.lock();
        if st.phase == Phase::Running {
            st.phase = Phase::Closed;
        }
        self.changed.notify_all();
    }

    pub(crate) fn terminate(&self) {
        let (failed, procs) = {
            let mut st = self.state.lock();
            if matches!(st.phase, Phase::Terminated) {
                return;
            }
            st.phase = Phase::Terminated;
            let failed: Vec<Handler> = st.jobs.drain().map(|(_, p)| p.handler).collect();
            st.backlog.clear();
            st.replace.clear();
            let procs: Vec<Arc<Process>> = st
                .workers
                .iter()
                .flatten()
                .map(|w| w.process.clone())
                .collect();
            self.changed.notify_all();
            (failed, procs)
        };
        for p in procs {
            let _ = p.terminate();
        }
        for h in failed {
            run_handler(h, Err(PoolError::Terminated));
        }
    }

    /// Waits for the jobs (after `close`), lets the workers go, and reaps
    /// every one itself — SIGKILL after [`LEAVE_GRACE`] for one that will
    /// not go — without relying on the result thread, which may be gone.
    /// Then stops the dispatcher and the result machinery.
    pub(crate) fn join_workers(&self) -> Result<(), PoolError> {
        let (workers, closed) = {
            let mut st = self.state.lock();
            if st.phase == Phase::Running {
                return Err(PoolError::StillRunning);
            }
            while st.phase == Phase::Closed && !st.jobs.is_empty() {
                self.changed.wait(&mut st);
            }
            st.shutting_down = true;
            st.replace.clear();
            let workers: Vec<_> = st
                .workers
                .iter()
                .flatten()
                .map(|w| (w.conn.clone(), w.process.clone()))
                .collect();
            (workers, st.phase == Phase::Closed)
        };
        // An empty job tells a worker to finish. (Closing the pipe is not
        // enough: a worker started by fork holds copies of its siblings'
        // pipe ends, so they would never see the end of theirs.) A
        // terminated or broken pool's workers were signalled already.
        for (conn, _) in &workers {
            if let Some(ends) = conn.lock().take() {
                if closed {
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
        Ok(())
    }

    /// Whether this is the result thread (a callback is running here).
    pub(crate) fn on_result_thread() -> bool {
        ON_RESULT_THREAD.with(Cell::get)
    }
}
