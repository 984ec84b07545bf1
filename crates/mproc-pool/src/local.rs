//! The local backend: worker processes on this machine.
//!
//! # Threads
//!
//! - The **caller's thread** sends a job to a worker itself when one has
//!   room (the fast path: no hand-off), and otherwise leaves it in the
//!   backlog; a full pipe blocks the caller, which is backpressure.
//! - The **result thread** reads the result queue: it reports outcomes to
//!   the scheduler (which runs the callbacks there), and notes workers that
//!   are ready or gone. It never sends on a worker's pipe and never starts a
//!   worker, so nothing it waits for can wait for it: a job a callback
//!   submits, and a job to send again after a worker died, go to the
//!   backlog.
//! - The **dispatcher thread** starts replacement workers, sends the
//!   backlog — jobs no worker had room for when they came, jobs submitted
//!   from the result thread, jobs to send again — as workers make room, and
//!   takes queued jobs back from a worker stuck in a long job for one that
//!   is idle. While the backlog is not empty, or a thread holds a job it
//!   took from it and has not yet sent (kill point `pool.backlog-taken`), a
//!   new job queues behind them: jobs go to workers in the order they were
//!   submitted.
//!
//! # Balancing: idle workers pull
//!
//! A worker holds at most a few jobs: the one it runs and as many queued
//! behind it as hide the hand-off of a result and the next job (`Prefetch`;
//! one at a time while jobs are long). The rest wait in the backlog and go
//! to whichever worker answers first, as on CPython's shared task queue,
//! but the parent always knows which worker holds which job, so a death
//! fails exactly the job it ran. A job that runs far past the mean is
//! overdue: nothing more queues behind it, and once some worker is idle,
//! the jobs queued behind it are taken back (revoked through the worker's
//! `Gates` word) and given to the idle one.
//!
//! # Runs: many short tasks, one job
//!
//! At chunk size 1 `imap` makes a job per task; when tasks take a few
//! microseconds, the job's own cost — its bookkeeping here, a message each
//! way — is most of the time. So, once the pool has measured how long tasks
//! take, it sends several (`Prefetch::run_length`: about 100 µs of work, at
//! most 64) as one job marked a *run*. The worker runs its tasks one by one
//! and reports each on its own before it starts the next — into its item
//! log (`itemlog`: a byte ring shared with the parent, read when the run
//! ends; nobody is woken), or as a message (`Msg::Item`) when it does not
//! fit there — after setting the second word of its `Gates` slot to the
//! task it starts.
//! So when it dies, the parent knows: the tasks it reported stand, the one
//! it had started fails with `WorkerDied`, and the rest go again — to
//! another worker, as a run that skips what was done (`RunFrom`). The
//! run's results reach the caller together, put back into one chunk's
//! results (`chunk::run_output`; handles in them are numbered across the
//! run by `transfer::encode_from`).
//!
//! If the result machinery fails — the result queue reports an error, or
//! the result thread panics — the backend is broken: it reports
//! [`Event::Broken`], kills the workers, and `join` still returns (it reaps
//! the workers itself).
//!
//! # A job's states
//!
//! ```text
//! submitted ──▶ backlog ──send──▶ in flight on worker W (seq s) ──Done──▶ reported
//!                  ▲                   │
//!                  │                   ├─ W dies, started[W] ≥ s ──▶ reported: WorkerDied
//!                  ├── W dies, ────────┤
//!                  │   started[W] < s  │
//!                  └── taken back, ────┤
//!                      started[W] < s  └─ terminated / broken ─────▶ dropped
//! ```
//!
//! Before it runs job `seq`, a worker swaps `seq` into its word of a small
//! shared array (`Gates`), unless the parent has revoked the jobs it has
//! not started; after a worker dies, the parent reads that word to tell the
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
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mproc_call::panic_message;
use mproc_process::{Process, StartMethod};
use mproc_queue::{Pipe, Queue};
use mproc_shm::fault;
use mproc_shm::transfer::{self, FdTable, Message, SharedFd};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::backend::{Backend, Calls, Event, Events, IdMap, Job, JobId, LocalInput, Runner, Work};
use crate::chunk::Piece;
use crate::error::TaskError;
use crate::itemlog::{self, ItemLog};
use crate::worker::{
    worker_main, Gates, Init, ItemFailure, JobPipe, Jobs, Msg, RunFrom, Wire, WireJob, WorkerArgs,
};

thread_local! {
    /// Set on a local backend's result thread: a job submitted here (by a
    /// callback) goes to the backlog instead of a worker's pipe.
    static ON_RESULT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Consecutive workers that may die before their initializer finishes
/// before the pool gives up and is broken.
pub(crate) const MAX_INIT_FAILURES: u32 = 5;

/// How long the result thread waits for descriptors a worker announced.
const RESULT_FDS_WAIT: Duration = Duration::from_secs(2);

/// Threads that start a pool's workers at once (see `start_all`).
const START_THREADS: usize = 8;
/// Workers per starting thread below that: a small pool starts on the
/// caller's thread alone.
const WORKERS_PER_START_THREAD: usize = 8;

/// How long `join` waits for a worker to leave on its own before SIGKILL.
const LEAVE_GRACE: Duration = Duration::from_secs(5);

/// How many jobs a worker may hold at once: enough queued behind the one
/// it runs to hide the hand-off (a result's way to the parent and the next
/// job's way back), and no more — a job queued behind a long one waits
/// while another worker may be idle. Jobs past every worker's cap wait in
/// the parent's backlog and go to the first worker that answers, so idle
/// workers pull: uneven work balances as on a shared queue, and the parent
/// still knows which worker holds which job.
///
/// The cap follows the mean time a job occupies a worker (a moving average
/// over the pool's jobs): 1 while jobs take [`LONG_JOB`] or more, then
/// `1 + HAND_OFF / mean`, at most [`MAX_PREFETCH`]. It starts at 1: the
/// first jobs of a call of long tasks must not queue behind each other.
#[derive(Debug)]
struct Prefetch {
    /// The moving average, in nanoseconds (`None` before the first job).
    mean_ns: Option<f64>,
    /// The same per item of a job (`None` before the first job).
    item_ns: Option<f64>,
    cap: usize,
    /// The cap was set by the user ([`Builder::prefetch`](crate::Builder::prefetch)).
    fixed: bool,
}

/// What a worker's queued jobs must cover: the parent's hand-off of one
/// result and the next job, on a busy machine.
const HAND_OFF: Duration = Duration::from_millis(1);
/// Jobs at least this long go one at a time.
const LONG_JOB: Duration = Duration::from_micros(500);
/// The most jobs a worker holds at once, however short they are.
const MAX_PREFETCH: usize = 64;
/// A job is overdue after 8 times the mean, and never before this: a worker
/// that a busy machine leaves unscheduled for a few time slices is not
/// stuck, and taking its queue back would cost more than it gains.
const OVERDUE_FLOOR: Duration = Duration::from_millis(2);
/// How soon the dispatcher looks again at a timed job that its worker has
/// not started yet.
const RECHECK_TIMED: Duration = Duration::from_millis(5);
/// The shortest wait of the dispatcher for a job to become overdue.
const MIN_STEAL_WAIT: Duration = Duration::from_micros(50);

/// Whether a worker holds jobs queued behind the one it runs.
fn holds_queued(st: &State) -> bool {
    st.workers.iter().flatten().any(|w| w.inflight.len() >= 2)
}

impl Prefetch {
    fn new(fixed: Option<usize>) -> Prefetch {
        Prefetch {
            mean_ns: None,
            item_ns: None,
            cap: fixed.unwrap_or(1).max(1),
            fixed: fixed.is_some(),
        }
    }

    fn cap(&self) -> usize {
        self.cap
    }

    /// A job running this long is overdue: what is queued behind it may go
    /// to an idle worker, and (with an adaptive cap) nothing more queues
    /// behind it.
    fn overdue(&self) -> Duration {
        let mean = Duration::from_nanos(self.mean_ns.unwrap_or(0.0) as u64);
        (mean * 8).max(OVERDUE_FLOOR)
    }

    /// How many items of a call at chunk size 1 go together as one run:
    /// enough to fill [`RUN_SPAN`] at the mean time per item, at most
    /// [`MAX_RUN`]; 1 before any job has been measured.
    fn run_length(&self) -> usize {
        match self.item_ns {
            Some(ns) if ns > 0.0 => ((RUN_SPAN.as_nanos() as f64 / ns) as usize).clamp(1, MAX_RUN),
            _ => 1,
        }
    }

    /// A job of `items` items occupied its worker for `ran`.
    fn ran(&mut self, ran: Duration, items: usize) {
        let ns = ran.as_nanos() as f64;
        let mean = match self.mean_ns {
            None => ns,
            Some(m) => m + (ns - m) / 8.0,
        };
        self.mean_ns = Some(mean);
        let per_item = ns / items.max(1) as f64;
        self.item_ns = Some(match self.item_ns {
            None => per_item,
            Some(m) => m + (per_item - m) / 8.0,
        });
        if self.fixed {
            return;
        }
        self.cap = if mean >= LONG_JOB.as_nanos() as f64 {
            1
        } else {
            let more = (HAND_OFF.as_nanos() as f64 / mean.max(1.0)).ceil();
            (1 + more.min(MAX_PREFETCH as f64) as usize).min(MAX_PREFETCH)
        };
    }
}

/// How long a run of tasks at chunk size 1 should keep its worker busy
/// (see [`Prefetch::run_length`]): long enough that the job's own cost is
/// small beside its tasks, short enough that a run holds nothing up.
const RUN_SPAN: Duration = Duration::from_micros(100);
/// The most tasks in one run.
const MAX_RUN: usize = 64;

/// A job the backend holds until it reports it.
struct Pending {
    runner: Runner,
    input: Arc<LocalInput>,
    /// How long it may run once started.
    timeout: Option<Duration>,
    /// How many items it has.
    items: usize,
    /// It is a run: its items are separate tasks, reported one by one.
    run: Option<Run>,
}

impl Pending {
    fn new(job_items: usize, runner: Runner, input: Arc<LocalInput>, run: bool) -> Pending {
        Pending {
            runner,
            input,
            timeout: None,
            items: job_items,
            run: run.then(|| Run::new(job_items)),
        }
    }

    /// Where its worker starts: the whole job, or the items of the run not
    /// yet reported.
    fn from(&self) -> Option<RunFrom> {
        self.run.as_ref().map(|r| {
            let skip = r.prefix();
            RunFrom {
                skip: skip as u32,
                fd_base: r.fd_count(skip),
            }
        })
    }
}

/// Reads what the worker in `slot` has written to its item log into the
/// runs it holds (`inflight`) and has claimed: before a run's end is taken,
/// before a task's result that came as a message, and after the worker's
/// death. (A record for a run it has not claimed is a confused worker's,
/// and dropped.)
fn absorb(w: &Worker, gates: &Gates, slot: usize, jobs: &mut IdMap<Pending>) {
    let inflight = &w.inflight;
    // Loaded once, after the published position (the first record read):
    // a claim comes before the records of its run.
    let started = std::cell::OnceCell::new();
    let claimed = |seq: u64| seq <= *started.get_or_init(|| gates.started(slot));
    let read = w.items.drain(|e| {
        let Some(&(_, id, _)) = inflight
            .iter()
            .find(|f| f.0 == e.seq)
            .filter(|_| claimed(e.seq))
        else {
            return;
        };
        let Some(run) = jobs.get_mut(&id).and_then(|p| p.run.as_mut()) else {
            return;
        };
        let part = match e.kind {
            itemlog::OK => return run.push_logged(e.index, e.payload),
            itemlog::PANICKED => Err(TaskError::Panicked {
                message: String::from_utf8_lossy(e.payload).into_owned(),
            }),
            itemlog::REFUSED => Err(TaskError::Refused(
                String::from_utf8_lossy(e.payload).into_owned(),
            )),
            other => {
                run.broken
                    .get_or_insert(format!("a task's result of unknown kind {other}"));
                return;
            }
        };
        run.push(e.index, part);
    });
    if let Err(why) = read {
        for &(_, id, _) in inflight.iter().filter(|f| claimed(f.0)) {
            if let Some(run) = jobs.get_mut(&id).and_then(|p| p.run.as_mut()) {
                run.broken.get_or_insert(why.clone());
            }
        }
    }
}

/// What has come back of a run: each task's outcome, by index. They come
/// through two channels — the worker's item log and, for what does not fit
/// there, the result queue — so not always in order; the tasks themselves
/// run in order, so once both are read to the same point, what came is the
/// run's first tasks.
struct Run {
    parts: Vec<Option<Part>>,
    /// The values read from the item log, one after the other.
    arena: Vec<u8>,
    /// How many of `parts` are in.
    count: usize,
    /// A task's handles did not arrive, or the worker reported something
    /// impossible: the run's results cannot be put together.
    broken: Option<String>,
}

/// One task's outcome in a [`Run`].
enum Part {
    /// A value from the item log: these bytes of the run's arena.
    Logged(std::ops::Range<usize>),
    /// A value that came as a message (with its handles), or a failure:
    /// boxed, as these are rare and a run's parts are made all at once.
    Sent(Box<Result<Message, TaskError>>),
}

impl Run {
    fn new(items: usize) -> Run {
        Run {
            parts: (0..items).map(|_| None).collect(),
            arena: Vec::new(),
            count: 0,
            broken: None,
        }
    }

    /// Task `index` of the run, reported: each once, within the run;
    /// anything else is a confused worker, and the run's end says so.
    fn push(&mut self, index: u32, part: Result<Message, TaskError>) {
        self.put(index, |_| Part::Sent(Box::new(part)));
    }

    /// Task `index`'s value, read from the item log: kept in the arena, so
    /// a run's values take no allocation each.
    fn push_logged(&mut self, index: u32, value: &[u8]) {
        self.put(index, |arena| {
            let start = arena.len();
            arena.extend_from_slice(value);
            Part::Logged(start..arena.len())
        });
    }

    fn put(&mut self, index: u32, part: impl FnOnce(&mut Vec<u8>) -> Part) {
        match self.parts.get_mut(index as usize) {
            Some(slot @ None) => {
                *slot = Some(part(&mut self.arena));
                self.count += 1;
            }
            _ => {
                self.broken.get_or_insert(format!(
                    "the worker reported task {index} of a run twice or out of range"
                ));
            }
        }
    }

    /// How many of its first tasks are in (where a delivery starts again).
    fn prefix(&self) -> usize {
        self.parts.iter().take_while(|p| p.is_some()).count()
    }

    /// Whether every task is in.
    fn complete(&self) -> bool {
        self.count == self.parts.len()
    }

    /// The descriptors the results of its first `n` tasks hold.
    fn fd_count(&self, n: usize) -> u32 {
        self.parts
            .iter()
            .take(n)
            .flatten()
            .map(|p| match p {
                Part::Sent(sent) => sent.as_ref().as_ref().map_or(0, |m| m.fds.len() as u32),
                Part::Logged(_) => 0,
            })
            .sum()
    }

    /// The run's event once every item is accounted for (or it broke).
    fn event(self, job: JobId) -> Event {
        if let Some(why) = self.broken {
            return Event::Failed {
                job,
                error: TaskError::Refused(why),
            };
        }
        if !self.complete() {
            return Event::Failed {
                job,
                error: TaskError::Refused(format!(
                    "the worker reported {} of the run's {} tasks",
                    self.count,
                    self.parts.len()
                )),
            };
        }
        let arena = &self.arena;
        let count = self.parts.len();
        let pieces = self.parts.into_iter().flatten().map(|p| match p {
            Part::Logged(range) => Piece::Value(arena.get(range).unwrap_or_default()),
            Part::Sent(outcome) => Piece::Sent(*outcome),
        });
        // Complete: every part is in, so `count` pieces follow.
        match crate::chunk::run_output(pieces, count, arena.len()) {
            Ok(output) if output.fds.is_empty() => Event::Done {
                job,
                output: output.bytes,
            },
            Ok(output) => Event::DoneWithHandles { job, output },
            Err(why) => Event::Failed {
                job,
                error: TaskError::Refused(why),
            },
        }
    }
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
    /// `(seq, job, when sent)` of what it was sent and has not answered,
    /// in order.
    inflight: VecDeque<(u64, JobId, Instant)>,
    /// When it last answered (a job queued behind another starts then).
    last_done: Option<Instant>,
    /// A revocation failed: do not try again before then.
    no_steal_until: Option<Instant>,
    /// It was killed for the job of this sequence number: that job ran past
    /// its timeout (`Some(timeout)`) or was cancelled (`None`).
    killed_for: Option<(u64, Option<Duration>)>,
    /// When its initializer was seen done.
    ready_at: Option<Instant>,
    /// The job the deadline keeper saw it running, and since when.
    running: Option<(u64, Instant)>,
    /// Its socket's other use: the result thread reads the descriptors of
    /// handles in its results here (a clone, so no pipe lock is needed).
    back: Arc<UnixStream>,
    /// Where it writes the results of a run's tasks.
    items: ItemLog,
}

impl Worker {
    fn pid(&self) -> u32 {
        self.process.pid().unwrap_or(0)
    }

    fn load(&self) -> usize {
        self.inflight.len() + self.reserved as usize
    }

    /// When the job it runs now (the oldest it holds) began, as far as the
    /// parent can tell: when it was sent, when the one before it ended, or
    /// when the worker's initializer was done, whichever came last.
    fn began(&self) -> Option<Instant> {
        let &(_, _, sent) = self.inflight.front()?;
        Some(
            [self.last_done, self.ready_at]
                .into_iter()
                .flatten()
                .fold(sent, Instant::max),
        )
    }

    /// Its job has run for `overdue` or more: nothing more should queue
    /// behind it. (A worker still in its initializer is not overdue.)
    fn is_overdue(&self, now: Instant, overdue: Duration) -> bool {
        self.ready
            && self
                .began()
                .is_some_and(|b| now.saturating_duration_since(b) >= overdue)
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
    jobs: IdMap<Pending>,
    /// Jobs waiting for the dispatcher, oldest first.
    backlog: VecDeque<JobId>,
    /// Slots whose worker the dispatcher must start again.
    replace: Vec<usize>,
    /// The dispatcher has taken a job from the backlog and not yet sent
    /// it: a new job must queue behind it, not overtake it.
    dispatching: bool,
    /// The deadline keeper's thread, from the first timed job until `join`.
    keeper: Option<JoinHandle<()>>,
    /// How many jobs a worker may hold at once (see [`Prefetch`]).
    prefetch: Prefetch,
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
    /// Signalled when the deadline keeper has a new timed job, or must stop.
    deadlines: Condvar,
    results: Queue<Msg>,
    /// `join` is closing the result queue: its end is not a failure.
    stopping: AtomicBool,
    /// Each slot's gate: the job its worker runs or ran last, and the jobs
    /// taken back from it (see [`Gates`]).
    gates: Gates,
    /// Each slot's item log (see [`ItemLog`]), one segment for all.
    logs: mproc_shm::Segment,
    maxtasks: u64,
    /// A fixed run length (`None`: adaptive).
    run_length: Option<usize>,
    task_timeout: Option<Duration>,
    max_memory: u64,
    method: Option<StartMethod>,
    /// Forward the workers' output (`None`: the process-wide default).
    forward_output: Option<bool>,
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
    /// A fixed prefetch depth (`None`: adaptive).
    pub(crate) prefetch: Option<usize>,
    /// A fixed run length (`None`: adaptive; see [`Prefetch::run_length`]).
    pub(crate) run_length: Option<usize>,
    /// How long a job may run (a job's own overrides it).
    pub(crate) task_timeout: Option<Duration>,
    /// Resident bytes past which a worker retires after a task (0: none).
    pub(crate) max_memory: u64,
    pub(crate) method: Option<StartMethod>,
    pub(crate) forward_output: Option<bool>,
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
                    jobs: IdMap::default(),
                    backlog: VecDeque::new(),
                    replace: Vec::new(),
                    dispatching: false,
                    keeper: None,
                    prefetch: Prefetch::new(cfg.prefetch),
                    next_gen: 1,
                    init_failures: 0,
                    shutting_down: false,
                    stop_dispatch: false,
                    watchers: Vec::new(),
                }),
                work: Condvar::new(),
                deadlines: Condvar::new(),
                results: Queue::new()?,
                stopping: AtomicBool::new(false),
                gates: Gates::new(cfg.processes)?,
                logs: ItemLog::segment(cfg.processes)?,
                maxtasks: cfg.maxtasks,
                run_length: cfg.run_length,
                task_timeout: cfg.task_timeout,
                max_memory: cfg.max_memory,
                method: cfg.method,
                forward_output: cfg.forward_output,
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

    fn run_length(&self) -> usize {
        if self.local.task_timeout.is_some()
            || self.local.maxtasks != 0
            || self.local.max_memory != 0
        {
            // A timeout is per task (a run would share one), and so are
            // the count of `maxtasksperchild` and the memory check.
            return 1;
        }
        match self.local.run_length {
            Some(n) => n,
            None => self.local.state.lock().prefetch.run_length(),
        }
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
        let mut st = self.local.state.lock();
        if st.phase != Phase::Running {
            return;
        }
        let timeout = job.timeout.or(self.local.task_timeout);
        let mut pending = Pending::new(job.items, runner, input, job.run && timeout.is_none());
        pending.timeout = timeout;
        st.jobs.insert(id, pending);
        if timeout.is_some() && st.keeper.is_none() {
            // The first timed job: start the deadline keeper.
            let me = self.local.clone();
            match std::thread::Builder::new()
                .name("mproc-pool-deadlines".into())
                .spawn(move || me.keep_deadlines())
            {
                Ok(h) => st.keeper = Some(h),
                Err(e) => {
                    st.jobs.remove(&id);
                    drop(st);
                    self.local.report(Event::Failed {
                        job: id,
                        error: TaskError::Refused(format!(
                            "cannot start the pool's deadline thread: {e}"
                        )),
                    });
                    return;
                }
            }
        }
        if ON_RESULT_THREAD.with(Cell::get) {
            // The result thread never sends: it must keep reading results.
            st.backlog.push_back(id);
            self.local.work.notify_one();
            return;
        }
        self.local.enqueue(st, VecDeque::from([id]));
    }

    fn submit_many(&self, jobs: Vec<Job>) {
        // Timed jobs have their deadline keeper to start, and the result
        // thread never sends: those go one by one.
        let simple = |j: &Job| j.timeout.is_none() && matches!(j.work, Work::SameBuild { .. });
        if self.local.task_timeout.is_some()
            || ON_RESULT_THREAD.with(Cell::get)
            || !jobs.iter().all(simple)
        {
            for job in jobs {
                self.submit(job);
            }
            return;
        }
        let mut st = self.local.state.lock();
        if st.phase != Phase::Running {
            return;
        }
        let mut ids = VecDeque::with_capacity(jobs.len());
        for job in jobs {
            if let Work::SameBuild { runner, input } = job.work {
                let pending = Pending::new(job.items, runner, input, job.run);
                st.jobs.insert(job.id, pending);
                ids.push_back(job.id);
            }
        }
        self.local.enqueue(st, ids);
    }

    fn close(&self) {}

    fn cancel(&self, job: JobId, running: bool) -> bool {
        self.local.cancel(job, running)
    }

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
        let (worker, watcher) = self.launch_worker(slot, gen)?;
        st.watchers.retain(|w| !w.is_finished());
        st.watchers.push(watcher);
        st.workers[slot] = Some(worker);
        Ok(())
    }

    /// Starts worker `gen` for `slot` and its watcher thread, which reports
    /// its end; the caller puts them in the table. Touches no pool state but
    /// the slot's gate, so workers of different slots start in parallel.
    fn launch_worker(&self, slot: usize, gen: u64) -> Result<(Worker, JoinHandle<()>), String> {
        let (rx, tx) =
            Pipe::<Jobs>::simplex().map_err(|e| format!("cannot make a job pipe: {e}"))?;
        let (mine, theirs) =
            UnixStream::pair().map_err(|e| format!("cannot make a socket pair: {e}"))?;
        let back = mine
            .try_clone()
            .and_then(|b| {
                // The descriptors are there before their result; a worker
                // that says otherwise must not hold the result thread up.
                b.set_read_timeout(Some(RESULT_FDS_WAIT))?;
                Ok(b)
            })
            .map_err(|e| format!("cannot share the worker's socket: {e}"))?;
        self.gates.reset(slot);
        let items = ItemLog::slot(&self.logs, slot);
        items.reset();
        let args = WorkerArgs {
            items: items.clone(),
            slot: slot as u32,
            gen,
            jobs: rx,
            fd_socket: SharedFd::new(theirs),
            results: self.results.clone(),
            gates: self.gates.clone(),
            maxtasks: self.maxtasks,
            max_memory: self.max_memory,
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
        if let Some(on) = self.forward_output {
            p = p.forward_output(on);
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
        event!(
            info,
            worker = slot,
            generation = gen,
            pid = process.pid().unwrap_or(0),
            "worker started"
        );
        let worker = Worker {
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
            last_done: None,
            no_steal_until: None,
            killed_for: None,
            ready_at: None,
            running: None,
            back: Arc::new(back),
            items,
        };
        Ok((worker, watcher))
    }

    /// Starts every worker — on up to [`START_THREADS`] threads at once, so
    /// that the forkserver always has a request in hand and the parent's
    /// share of each start overlaps the others — and on failure stops those
    /// already started.
    fn start_all(&self) -> Result<(), String> {
        let (n, first_gen) = {
            let mut st = self.state.lock();
            let n = st.workers.len();
            let first = st.next_gen;
            st.next_gen += n as u64;
            (n, first)
        };
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let started = Mutex::new(Vec::with_capacity(n));
        let why = Mutex::new(None);
        let starter = || loop {
            let slot = next.fetch_add(1, Ordering::Relaxed);
            if slot >= n || failed.load(Ordering::Acquire) {
                return;
            }
            match self.launch_worker(slot, first_gen + slot as u64) {
                Ok(w) => started.lock().push((slot, w)),
                Err(e) => {
                    failed.store(true, Ordering::Release);
                    why.lock().get_or_insert(e);
                }
            }
        };
        let threads = n.div_ceil(WORKERS_PER_START_THREAD).min(START_THREADS);
        if threads <= 1 {
            starter();
        } else {
            std::thread::scope(|s| {
                let helpers: Vec<_> = (1..threads)
                    .map(|_| {
                        std::thread::Builder::new()
                            .name("mproc-pool-start".into())
                            .spawn_scoped(s, starter)
                    })
                    .collect();
                // This thread starts workers too (and alone, if no helper
                // thread could be had).
                starter();
                drop(helpers);
            });
        }
        let mut st = self.state.lock();
        for (slot, (worker, watcher)) in started.into_inner() {
            st.workers[slot] = Some(worker);
            st.watchers.push(watcher);
        }
        if let Some(why) = why.into_inner() {
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
        Ok(())
    }

    /// The live worker with the fewest jobs that is under its
    /// `maxtasksperchild` and has room — it is idle, or holds fewer jobs
    /// than the prefetch allows and its job is not overdue — if there is
    /// one.
    fn pick(&self, st: &State) -> Option<usize> {
        let maxtasks = self.maxtasks;
        let cap = st.prefetch.cap();
        let now = std::cell::OnceCell::new();
        let overdue = st.prefetch.overdue();
        let adaptive = !st.prefetch.fixed;
        st.workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let w = w.as_ref().filter(|w| w.killed_for.is_none())?;
                let load = w.load();
                // Nothing queues behind a job whose worker had jobs taken
                // back and has not resumed (it is stuck in a long one), nor,
                // when the depth adapts, behind an overdue job.
                let room = load == 0
                    || (load < cap
                        && !(adaptive && w.is_overdue(*now.get_or_init(Instant::now), overdue))
                        && !self.gates.revoked(i));
                (room && (maxtasks == 0 || w.assigned < maxtasks)).then_some((load, i))
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
            let Some((runner, input, timed, run)) = st.jobs.get(&id).map(|job| {
                (
                    job.runner,
                    job.input.clone(),
                    job.timeout.is_some(),
                    job.from(),
                )
            }) else {
                // Cancelled meanwhile.
                if let Some(w) = st.workers[slot].as_mut() {
                    w.assigned -= 1;
                }
                return;
            };
            let Some(w) = st.workers[slot].as_mut() else {
                return;
            };
            let seq = w.next_seq;
            w.next_seq += 1;
            w.inflight.push_back((seq, id, Instant::now()));
            if timed {
                // Its deadline is the keeper's to keep.
                self.deadlines.notify_one();
            }
            drop(st);
            let bytes = postcard::to_allocvec(&Wire::Job(WireJob {
                seq,
                fds: input.fds.len() as u32,
                runner,
                input: &input.bytes,
                run,
            }));
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

    /// Sends jobs `ids` (in order) from the caller's thread: straight to
    /// workers if nothing waits before them (or, where none has room, to
    /// the backlog); otherwise behind the jobs already waiting, sending
    /// what workers have room for (unless another thread is at it), so a
    /// steady stream of jobs needs no hand-off to the dispatcher.
    fn enqueue(&self, st: MutexGuard<'_, State>, mut ids: VecDeque<JobId>) {
        if st.backlog.is_empty() && !st.dispatching {
            drop(st);
            match (ids.len(), ids.front()) {
                (1, Some(&id)) => self.send(id),
                _ => self.send_many(ids),
            }
            return;
        }
        let mut st = st;
        st.backlog.append(&mut ids);
        drop(self.drain(st));
    }

    /// Sends jobs `ids` (untimed, in order) to workers with room, as many
    /// to each as its prefetch allows, in one message per worker (see
    /// [`Wire::Batch`]); what no worker has room for goes to the front of
    /// the backlog, in order. As [`send`](Local::send), it may block on a
    /// full pipe: never call it on the result thread.
    fn send_many(&self, mut ids: VecDeque<JobId>) {
        let mut st = self.state.lock();
        loop {
            if st.phase != Phase::Running {
                return;
            }
            // Cancelled meanwhile: dropped.
            ids.retain(|id| st.jobs.contains_key(id));
            if ids.is_empty() {
                return;
            }
            let Some(slot) = self.pick(&st) else {
                for id in ids.into_iter().rev() {
                    st.backlog.push_front(id);
                }
                self.work.notify_one();
                return;
            };
            let cap = st.prefetch.cap();
            let Some(w) = st.workers[slot].as_mut() else {
                continue;
            };
            let mut room = cap.saturating_sub(w.load()).max(1);
            if self.maxtasks != 0 {
                // `pick` chose it under its limit: room for one at least.
                room = room.min(self.maxtasks.saturating_sub(w.assigned).max(1) as usize);
            }
            let n = room.min(ids.len());
            w.assigned += n as u64;
            w.reserved += n as u32;
            let (gen, conn) = (w.gen, w.conn.clone());
            drop(st);
            let pipe = conn.lock();
            st = self.state.lock();
            let st_ref = &mut *st;
            let Some(w) = st_ref.workers[slot].as_mut().filter(|w| w.gen == gen) else {
                // It died while we waited for its pipe: choose again.
                drop(pipe);
                continue;
            };
            w.reserved -= n as u32;
            let now = Instant::now();
            let mut batch = Vec::with_capacity(n);
            for id in ids.drain(..n) {
                let Some(job) = st_ref.jobs.get(&id) else {
                    // Cancelled meanwhile.
                    w.assigned -= 1;
                    continue;
                };
                let seq = w.next_seq;
                w.next_seq += 1;
                w.inflight.push_back((seq, id, now));
                batch.push((seq, job.runner, job.input.clone(), job.from()));
            }
            drop(st);
            let wire = Wire::Batch(
                batch
                    .iter()
                    .map(|(seq, runner, input, run)| WireJob {
                        seq: *seq,
                        fds: input.fds.len() as u32,
                        runner: *runner,
                        input: &input.bytes,
                        run: *run,
                    })
                    .collect(),
            );
            event!(
                debug,
                tasks = batch.len(),
                worker = slot,
                "tasks dispatched"
            );
            if let (Some(ends), Ok(bytes), false) = (
                pipe.as_ref(),
                postcard::to_allocvec(&wire),
                batch.is_empty(),
            ) {
                // A dead worker's pipe refuses: its watcher reports the
                // death, and the jobs, sent but never started, are sent
                // again.
                if ends.pipe.send_bytes(&bytes).is_ok() {
                    for (_, _, input, _) in &batch {
                        if !input.fds.is_empty() {
                            let _ = send_fds(&ends.socket, &input.fds);
                        }
                    }
                }
            }
            drop(wire);
            drop(pipe);
            st = self.state.lock();
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
            if self.sendable(&st) {
                st = self.drain(st);
                continue;
            }
            match self.steal_plan(&st) {
                Ok(victim) => st = self.steal(st, victim),
                Err(Some(wait)) => {
                    self.work.wait_for(&mut st, wait);
                }
                Err(None) => self.work.wait(&mut st),
            }
        }
    }

    /// Whether a worker is idle and could take a job now.
    fn idle_thief(&self, st: &State) -> bool {
        let maxtasks = self.maxtasks;
        st.phase == Phase::Running
            && st
                .workers
                .iter()
                .flatten()
                .any(|w| w.ready && w.load() == 0 && (maxtasks == 0 || w.assigned < maxtasks))
    }

    /// Whether worker `w` in `slot` holds jobs queued behind the one it
    /// runs, some of them not started yet (so there is something to take
    /// back).
    fn holds_unstarted(&self, slot: usize, w: &Worker) -> bool {
        w.inflight.len() >= 2
            && w.inflight
                .back()
                .is_some_and(|&(seq, ..)| seq > self.gates.started(slot))
    }

    /// Whether to take queued jobs back for an idle worker: from which
    /// worker now (the one holding the most jobs behind an overdue one), or
    /// how soon to look again (when one's job becomes overdue), or neither.
    fn steal_plan(&self, st: &State) -> Result<usize, Option<Duration>> {
        if !st.backlog.is_empty() || !self.idle_thief(st) {
            return Err(None);
        }
        let (now, overdue) = (Instant::now(), st.prefetch.overdue());
        let mut victim: Option<(usize, usize)> = None;
        let mut soonest: Option<Instant> = None;
        for (i, w) in st.workers.iter().enumerate() {
            let Some(w) = w.as_ref().filter(|w| self.holds_unstarted(i, w)) else {
                continue;
            };
            let allowed = w.no_steal_until.is_none_or(|t| t <= now);
            if allowed && w.is_overdue(now, overdue) {
                if victim.is_none_or(|(n, _)| w.inflight.len() > n) {
                    victim = Some((w.inflight.len(), i));
                }
            } else if let Some(began) = w.began() {
                let due = (began + overdue).max(w.no_steal_until.unwrap_or(began));
                soonest = Some(soonest.map_or(due, |s| s.min(due)));
            }
        }
        match victim {
            Some((_, i)) => Ok(i),
            None => Err(soonest.map(|at| at.saturating_duration_since(now).max(MIN_STEAL_WAIT))),
        }
    }

    /// Takes back the jobs the worker in `slot` holds but has not started
    /// and puts them at the front of the backlog, for idle workers (see
    /// [`Gates`]). Holds the worker's pipe from the revocation until its
    /// `Resume` is sent, so no job sent to it in between is taken back.
    fn steal<'a>(&'a self, st: MutexGuard<'a, State>, slot: usize) -> MutexGuard<'a, State> {
        let overdue = st.prefetch.overdue();
        let (mut st, taken) = self.take_back(st, slot, None, false);
        if let Some((_, _back, _)) = taken {
            event!(
                info,
                worker = slot,
                tasks = _back,
                "queued tasks taken back for an idle worker"
            );
        } else if let Some(w) = st.workers[slot].as_mut() {
            // It started a job just now, or has not yet read the last
            // `Resume`: not before a while.
            w.no_steal_until = Some(Instant::now() + overdue);
        }
        st
    }

    /// Revokes the jobs the worker in `slot` holds and has not started
    /// (see [`Gates`]): they go back to the front of the backlog, in order,
    /// except `forget`, which is dropped with them. `Some((started, jobs
    /// put back, forget was among them))` if the revocation took; `None`
    /// when the worker started a job meanwhile, has not yet read the last
    /// `Resume`, or is gone — or, without `wait`, another thread holds its
    /// pipe (sending it a job, perhaps blocked on a full pipe). Holds the
    /// worker's pipe from the revocation until its `Resume` is sent, so no
    /// job sent to it in between is taken back.
    fn take_back<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
        slot: usize,
        forget: Option<JobId>,
        wait: bool,
    ) -> (MutexGuard<'a, State>, Option<(u64, usize, bool)>) {
        let Some((gen, conn)) = st.workers[slot].as_ref().map(|w| (w.gen, w.conn.clone())) else {
            return (st, None);
        };
        drop(st);
        let pipe = if wait {
            conn.lock()
        } else {
            match conn.try_lock() {
                Some(p) => p,
                None => return (self.state.lock(), None),
            }
        };
        let mut st = self.state.lock();
        let st_ref = &mut *st;
        let Some(w) = st_ref.workers[slot].as_mut().filter(|w| w.gen == gen) else {
            return (st, None);
        };
        let Some(started) = self.gates.revoke(slot) else {
            return (st, None);
        };
        let at = w.inflight.partition_point(|&(seq, ..)| seq <= started);
        let back: Vec<JobId> = w.inflight.drain(at..).map(|(_, id, _)| id).collect();
        w.assigned -= back.len() as u64;
        let mut forgot = false;
        for &id in back.iter().rev() {
            if Some(id) == forget {
                st_ref.jobs.remove(&id);
                forgot = true;
            } else {
                st_ref.backlog.push_front(id);
            }
        }
        let put_back = back.len() - usize::from(forgot);
        self.work.notify_one();
        drop(st);
        if let (Some(ends), Ok(bytes)) = (pipe.as_ref(), postcard::to_allocvec(&Wire::Resume)) {
            // A dead worker's pipe refuses: nothing is lost, the jobs it
            // held past `started` are in the backlog.
            let _ = ends.pipe.send_bytes(&bytes);
        }
        drop(pipe);
        (self.state.lock(), Some((started, put_back, forgot)))
    }

    /// Cancels job `id` (see [`Backend::cancel`]): from the backlog, or
    /// taken back from the worker that holds it; with `running`, a job its
    /// worker has started is stopped by killing the worker. `true` if the
    /// job will not be reported.
    fn cancel(&self, id: JobId, running: bool) -> bool {
        let mut st = self.state.lock();
        for _ in 0..3 {
            if st.phase != Phase::Running || !st.jobs.contains_key(&id) {
                return false;
            }
            if let Some(at) = st.backlog.iter().position(|&j| j == id) {
                st.backlog.remove(at);
                st.jobs.remove(&id);
                return true;
            }
            let holder = st.workers.iter().enumerate().find_map(|(slot, w)| {
                let w = w.as_ref()?;
                let &(seq, ..) = w.inflight.iter().find(|e| e.1 == id)?;
                Some((slot, seq))
            });
            let Some((slot, seq)) = holder else {
                // In a sending thread's hands, between the backlog and a
                // pipe: `send` finds it gone and drops it.
                st.jobs.remove(&id);
                return true;
            };
            if seq <= self.gates.started(slot) {
                // Started. Stopped only on request, and only if it has not
                // finished: the worker starts nothing more, then dies.
                let Some(w) = st.workers[slot].as_mut() else {
                    return false;
                };
                if !running || !self.gates.stop(slot, seq) {
                    return false;
                }
                w.killed_for = Some((seq, None));
                let _ = w.process.kill();
                st.jobs.remove(&id);
                event!(
                    warn,
                    worker = slot,
                    job = id,
                    "running task cancelled: worker killed"
                );
                return true;
            }
            if ON_RESULT_THREAD.with(Cell::get) {
                // Taking a job back waits for the worker's pipe, which the
                // result thread must never do.
                return false;
            }
            let (guard, taken) = self.take_back(st, slot, Some(id), true);
            st = guard;
            if let Some((_, _, true)) = taken {
                return true;
            }
            // It started meanwhile, or the worker is stuck before the last
            // `Resume`: look again.
        }
        false
    }

    /// The deadline keeper's thread (started with the first timed job):
    /// stops each job that runs past its timeout, until `join`. It takes no
    /// worker's pipe, so no full pipe can hold it up.
    fn keep_deadlines(&self) {
        let mut st = self.state.lock();
        while !st.stop_dispatch {
            match self.enforce_timeouts(&mut st) {
                Some(wait) => {
                    self.deadlines.wait_for(&mut st, wait);
                }
                None => self.deadlines.wait(&mut st),
            }
        }
    }

    /// Stops each job that has run past its timeout — its worker is told
    /// to start nothing more ([`Gates::stop`]) and killed — and says how
    /// long until the next deadline, if a timed job is in flight. A job's
    /// clock starts when the keeper first sees its worker running it.
    fn enforce_timeouts(&self, st: &mut State) -> Option<Duration> {
        if st.phase != Phase::Running {
            return None;
        }
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let mut soon = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
        for (slot, w) in st.workers.iter_mut().enumerate() {
            let Some(w) = w.as_mut().filter(|w| w.killed_for.is_none()) else {
                continue;
            };
            let Some(&(seq, id, _)) = w.inflight.front() else {
                continue;
            };
            let Some(timeout) = st.jobs.get(&id).and_then(|p| p.timeout) else {
                continue;
            };
            if !self.gates.running(slot, seq) {
                // Not started yet, or finished with its result on the way:
                // look again soon.
                soon(RECHECK_TIMED);
                continue;
            }
            let since = match w.running {
                Some((s, at)) if s == seq => at,
                _ => {
                    w.running = Some((seq, now));
                    now
                }
            };
            let ran = now.saturating_duration_since(since);
            if ran < timeout {
                soon(timeout - ran);
            } else if self.gates.stop(slot, seq) {
                w.killed_for = Some((seq, Some(timeout)));
                let _ = w.process.kill();
                event!(
                    warn,
                    worker = slot,
                    job = id,
                    "task ran past its timeout: worker killed"
                );
            } else {
                // It finished just now.
                soon(RECHECK_TIMED);
            }
        }
        next
    }

    /// Whether a thread may take the backlog's first job and send it now:
    /// no other thread is at it, and a worker has room (or the job is to
    /// be dropped).
    fn sendable(&self, st: &State) -> bool {
        !st.backlog.is_empty()
            && !st.dispatching
            && (st.phase != Phase::Running || self.pick(st).is_some())
    }

    /// Sends backlog jobs, oldest first, while workers have room and no
    /// other thread is sending them; one thread at a time takes the
    /// backlog (`dispatching`), so jobs reach workers in the order they
    /// were submitted. May block on a full pipe: never on the result
    /// thread.
    fn drain<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        while self.sendable(&st) {
            let Some(id) = st.backlog.pop_front() else {
                break;
            };
            // Untimed jobs that follow it go with it, a batch per worker.
            let untimed =
                |st: &State, id: &JobId| st.jobs.get(id).is_some_and(|j| j.timeout.is_none());
            let mut run = VecDeque::new();
            if untimed(&st, &id) {
                while run.len() < MAX_PREFETCH * st.workers.len()
                    && st.backlog.front().is_some_and(|next| untimed(&st, next))
                {
                    run.extend(st.backlog.pop_front());
                }
            }
            st.dispatching = true;
            drop(st);
            fault::point("pool.backlog-taken");
            if run.is_empty() {
                self.send(id);
            } else {
                run.push_front(id);
                self.send_many(run);
            }
            st = self.state.lock();
            st.dispatching = false;
        }
        st
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
        // It sleeps rather than spin long for the next result: the caller
        // it just woke needs a core to run, and a worker is likely spinning
        // on the other.
        mproc_sync::wait::spin_briefly(true);
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
                        w.ready_at = Some(Instant::now());
                        st.init_failures = 0;
                        if holds_queued(&st) {
                            // A new idle worker: queued jobs may come to it.
                            self.work.notify_one();
                        }
                    }
                }
                Msg::Done {
                    slot,
                    gen,
                    seq,
                    out,
                    fds,
                } => {
                    // The descriptors of handles in the results came first,
                    // on the worker's socket: take them now, wanted or not,
                    // so the next ones are read in their turn.
                    let handles = self.result_fds(slot as usize, gen, fds);
                    let id = {
                        let mut st = self.state.lock();
                        let st = &mut *st;
                        if let Some(w) = st.workers[slot as usize].as_ref().filter(|w| w.gen == gen)
                        {
                            // A run's last tasks may be in its item log.
                            absorb(w, &self.gates, slot as usize, &mut st.jobs);
                        }
                        let now = Instant::now();
                        let taken = st.workers[slot as usize]
                            .as_mut()
                            .filter(|w| w.gen == gen)
                            .and_then(|w| {
                                let at = w.inflight.iter().position(|&(s, ..)| s == seq)?;
                                let (_, id, sent) = w.inflight.remove(at)?;
                                // Jobs run in order: this one began when it
                                // was sent or when the one before it ended.
                                let began = [w.last_done, w.ready_at]
                                    .into_iter()
                                    .flatten()
                                    .fold(sent, Instant::max);
                                w.last_done = Some(now);
                                Some((id, now.saturating_duration_since(began), w.load()))
                            });
                        let id = taken.map(|(id, ran, load)| {
                            let items = st.jobs.get(&id).map_or(1, |p| p.items);
                            st.prefetch.ran(ran, items);
                            // Once the worker has drained to half its cap,
                            // the dispatcher refills it (one wake-up per
                            // half a cap of jobs, not per job).
                            if !st.backlog.is_empty() && load <= st.prefetch.cap() / 2 {
                                self.work.notify_one();
                            } else if load == 0 && st.backlog.is_empty() && holds_queued(st) {
                                // Idle while another holds queued jobs:
                                // the dispatcher may take them back.
                                self.work.notify_one();
                            }
                            id
                        });
                        id.and_then(|id| st.jobs.remove(&id).map(|p| (id, p)))
                    };
                    if let Some((job, pending)) = id {
                        self.report(match (out, handles, pending.run) {
                            // A run's results came item by item; its own
                            // output is empty.
                            (Ok(_), Ok(_), Some(run)) => run.event(job),
                            (Ok(output), Ok(fds), None) if fds.is_empty() => Event::Done {
                                job,
                                output: output.into_vec(),
                            },
                            (Ok(output), Ok(fds), None) => Event::DoneWithHandles {
                                job,
                                output: Message {
                                    bytes: output.into_vec(),
                                    fds,
                                },
                            },
                            (Err(why), ..) | (_, Err(why), _) => Event::Failed {
                                job,
                                error: TaskError::Refused(why),
                            },
                        });
                    }
                }
                Msg::Item {
                    slot,
                    gen,
                    seq,
                    index,
                    out,
                    fds,
                } => {
                    let handles = self.result_fds(slot as usize, gen, fds);
                    let mut st = self.state.lock();
                    let st = &mut *st;
                    let Some(w) = st.workers[slot as usize].as_ref().filter(|w| w.gen == gen)
                    else {
                        continue;
                    };
                    // What it logged before this one comes first.
                    absorb(w, &self.gates, slot as usize, &mut st.jobs);
                    let id = w.inflight.iter().find(|e| e.0 == seq).map(|e| e.1);
                    let pending = id.and_then(|id| st.jobs.get_mut(&id));
                    if let Some(run) = pending.and_then(|p| p.run.as_mut()) {
                        let part = match (out, handles) {
                            (Ok(bytes), Ok(fds)) => Ok(Message {
                                bytes: bytes.into_vec(),
                                fds,
                            }),
                            (Err(ItemFailure::Panicked(message)), _) => {
                                Err(TaskError::Panicked { message })
                            }
                            (Err(ItemFailure::Refused(why)), _) => Err(TaskError::Refused(why)),
                            (Ok(_), Err(why)) => {
                                run.broken.get_or_insert(why.clone());
                                Err(TaskError::Refused(why))
                            }
                        };
                        run.push(index, part);
                    }
                }
                Msg::Exited { slot, gen } => self.on_exit(slot as usize, gen),
            }
        }
    }

    /// The `n` descriptors a worker sent on its socket just before a result
    /// that holds handles (none for 0). They are there already (sent before
    /// the result was put), so the wait is a safeguard against a confused
    /// worker.
    fn result_fds(&self, slot: usize, gen: u64, n: u32) -> Result<FdTable, String> {
        if n == 0 {
            return Ok(FdTable::new());
        }
        let back = self.state.lock().workers[slot]
            .as_ref()
            .filter(|w| w.gen == gen)
            .map(|w| w.back.clone())
            .ok_or("the worker is gone with its results' handles")?;
        let msg = transfer::recv(&back)
            .map_err(|e| format!("the results' handles did not arrive: {e}"))?;
        if msg.fds.len() != n as usize || !msg.bytes.is_empty() {
            return Err(format!(
                "the worker sent {} descriptors for results holding {n}",
                msg.fds.len()
            ));
        }
        Ok(msg.fds)
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
            let started = self.gates.started(slot);
            // What it logged before it died stands.
            absorb(&w, &self.gates, slot, &mut st.jobs);
            let mut again = Vec::new();
            for &(seq, id, _) in &w.inflight {
                if seq == started && w.killed_for.is_none() {
                    // A run it had started: the items it reported stand, the
                    // one it was running fails, the rest go again.
                    let item = self.gates.started_item(slot);
                    if let Some(p) = st.jobs.get_mut(&id) {
                        if let Some(run) = p.run.as_mut().filter(|r| r.broken.is_none()) {
                            // Everything it reported has been read (the log
                            // above, its messages before this one): the
                            // tasks in are the run's first.
                            let reported = run.prefix();
                            if !run.complete() && item.is_some_and(|i| i >= reported) {
                                run.push(reported as u32, Err(died.clone()));
                            }
                            if !run.complete() {
                                again.push(id);
                            } else if let Some(p) = st.jobs.remove(&id) {
                                if let Some(run) = p.run {
                                    events.push(run.event(id));
                                }
                            }
                            continue;
                        }
                    }
                }
                if seq <= started {
                    if st.jobs.remove(&id).is_some() {
                        let error = match w.killed_for {
                            Some((s, Some(after))) if s == seq => TaskError::TimedOut {
                                after,
                                pid: w.pid(),
                            },
                            _ => died.clone(),
                        };
                        events.push(Event::Failed { job: id, error });
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
            self.deadlines.notify_all();
            let mut threads = std::mem::take(&mut st.watchers);
            threads.extend(st.keeper.take());
            threads
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
