//! The scheduler: job table, dispatch, the result thread, supervision.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mproc_process::{Process, StartMethod};
use mproc_queue::{Pipe, Queue};
use mproc_shm::transfer::{self, FdTable, Message, SharedFd};
use mproc_shm::RawArray;
use parking_lot::{Condvar, Mutex};

use crate::worker::{worker_main, Call, Init, Job, JobPipe, Jobs, Msg, WorkerArgs};
use crate::PoolError;

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
    /// Workers in a row that died before their initializer finished.
    init_failures: u32,
    /// `join` has let the workers go: do not replace them.
    shutting_down: bool,
    watchers: Vec<JoinHandle<()>>,
}

pub(crate) struct Inner {
    state: Mutex<State>,
    /// Signalled when workers come and go and when the job table empties.
    changed: Condvar,
    results: Queue<Msg>,
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
                init_failures: 0,
                shutting_down: false,
                watchers: Vec::new(),
            }),
            changed: Condvar::new(),
            results: Queue::new().map_err(setup)?,
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
            init: self.init.clone(),
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

    /// Accepts a job and sends it to a worker. With `even_if_closed`, a
    /// closed pool still takes it (the later chunks of an `imap` begun
    /// before `close`). If the pool refuses, the handler gets the error.
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
            id
        };
        self.dispatch(id);
    }

    /// Sends accepted job `id` to the least loaded worker that takes jobs,
    /// waiting for one if none does. The sequence number is assigned under
    /// the worker's pipe lock, so a worker gets its jobs in sequence order.
    fn dispatch(&self, id: u64) {
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
            let maxtasks = self.maxtasks;
            let pick = st
                .workers
                .iter()
                .enumerate()
                .filter_map(|(i, w)| {
                    let w = w.as_ref()?;
                    (maxtasks == 0 || w.assigned < maxtasks).then_some((w.load(), i))
                })
                .min();
            let Some((_, slot)) = pick else {
                self.changed.wait(&mut st);
                continue;
            };
            let (gen, conn) = {
                let w = st.workers[slot].as_mut().expect("picked a live worker");
                w.assigned += 1;
                w.reserved += 1;
                (w.gen, w.conn.clone())
            };
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

    /// The result thread: files outcomes and supervises workers until told
    /// to stop.
    pub(crate) fn result_loop(self: &Arc<Self>) {
        loop {
            let msg = match self.results.get() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("mproc-pool: the result queue failed: {e}");
                    return;
                }
            };
            match msg {
                Msg::Stop => return,
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

    /// A worker has ended: fail the job it was running, send again the jobs
    /// it never started, and replace it (or break the pool).
    fn on_exit(self: &Arc<Self>, slot: usize, gen: u64) {
        let mut failed: Vec<(Handler, PoolError)> = Vec::new();
        let mut again: Vec<u64> = Vec::new();
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
            for &(seq, id) in &w.inflight {
                if seq <= started {
                    if let Some(p) = st.jobs.remove(&id) {
                        failed.push((p.handler, died.clone()));
                    }
                } else {
                    again.push(id);
                }
            }
            if !w.ready {
                st.init_failures += 1;
            }
            let replace = match st.phase {
                Phase::Running => true,
                Phase::Closed => !st.shutting_down,
                Phase::Terminated | Phase::Broken(_) => false,
            };
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
                if let Err(why) = self.start_worker(&mut st, slot) {
                    self.break_pool(&mut st, why, &mut failed);
                }
            }
            self.changed.notify_all();
        }
        for (h, e) in failed {
            run_handler(h, Err(e));
        }
        if !again.is_empty() {
            // Sending may block on a pipe; the result thread must not.
            let me = self.clone();
            let resend = std::thread::Builder::new()
                .name("mproc-pool-resend".into())
                .spawn(move || again.into_iter().for_each(|id| me.dispatch(id)));
            if resend.is_err() {
                let mut st = self.state.lock();
                let why = "cannot start a thread to resend jobs".to_owned();
                let mut failed = Vec::new();
                self.break_pool(&mut st, why, &mut failed);
                drop(st);
                for (h, e) in failed {
                    run_handler(h, Err(e));
                }
            }
        }
    }

    /// Marks the pool broken: every job fails, every worker is killed.
    fn break_pool(&self, st: &mut State, why: String, failed: &mut Vec<(Handler, PoolError)>) {
        let e = PoolError::Broken(why.clone());
        st.phase = Phase::Broken(why);
        failed.extend(st.jobs.drain().map(|(_, p)| (p.handler, e.clone())));
        for w in st.workers.iter().flatten() {
            let _ = w.process.kill();
        }
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

    /// Waits for the jobs (after `close`), lets the workers go and waits
    /// until every one has been reaped and reported.
    pub(crate) fn join_workers(&self) -> Result<(), PoolError> {
        let conns: Vec<_> = {
            let mut st = self.state.lock();
            if st.phase == Phase::Running {
                return Err(PoolError::StillRunning);
            }
            while st.phase == Phase::Closed && !st.jobs.is_empty() {
                self.changed.wait(&mut st);
            }
            st.shutting_down = true;
            st.workers
                .iter()
                .flatten()
                .map(|w| w.conn.clone())
                .collect()
        };
        // An empty job tells a worker to finish. (Closing the pipe is not
        // enough: a worker started by fork holds copies of its siblings'
        // pipe ends, so they would never see the end of theirs.)
        for c in conns {
            if let Some(ends) = c.lock().take() {
                let _ = ends.pipe.send_bytes(&[]);
            }
        }
        let mut st = self.state.lock();
        while st.workers.iter().any(Option::is_some) {
            if self.changed.wait_for(&mut st, LEAVE_GRACE).timed_out() {
                for w in st.workers.iter().flatten() {
                    let _ = w.process.kill();
                }
            }
        }
        let watchers: Vec<_> = st.watchers.drain(..).collect();
        drop(st);
        for w in watchers {
            let _ = w.join();
        }
        Ok(())
    }

    /// Tells the result thread to stop.
    pub(crate) fn stop_results(&self) {
        let _ = self.results.put(Msg::Stop);
    }
}
