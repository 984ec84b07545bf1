//! `Worker`: the worker side — a host process on any machine that takes
//! tasks from the stream and runs them on a local [`Pool`] of worker
//! processes of the same binary.
//!
//! # Threads of the host
//!
//! - The **fetch thread** reads new tasks with XREADGROUP (as many as
//!   there is room for: `prefetch`) and hands each to the local pool.
//! - The **host thread** completes what the local pool finished (the
//!   completion script, pipelined), hands back what it could not run,
//!   and at every heartbeat: refreshes the worker's heartbeat key, renews
//!   the lease of every task it holds (fenced: a task it no longer owns is
//!   let go), and runs the janitor, which claims tasks of dead workers and
//!   tasks whose lease ran out.
//!
//! Tasks never renew their own leases: a task that hogs its process, or
//! hangs, cannot starve the heartbeat — the host is another process.
//! A task that kills its process (abort, out of memory, SIGKILL) is handed
//! back with the reason; the local pool replaces the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mproc_call::{BuildId, Callable, Registry, RemoteFn};
use mproc_pool::{Pool, PoolError, TaskError, Work};
use parking_lot::{Condvar, Mutex};
use redis::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::client::registry_fingerprint;
use crate::conn::Conn;
use crate::error::Error;
use crate::options::{ms, random_u64, Keys, Options, GROUP, RELEASED};
use crate::scripts::{evalsha, Scripts};
use crate::wire::{self, Entry, TaskEntry};

/// How long one blocking read waits before it looks at the stop flag.
const SLICE: Duration = Duration::from_millis(100);

/// The registry of this process, when it is a worker (or a worker's
/// process), and the worker's id.
static REGISTRY: OnceLock<Registry> = OnceLock::new();
static WORKER_ID: OnceLock<String> = OnceLock::new();

/// The id of the worker this process belongs to — inside a task, the
/// worker running it — or `None` outside workers.
pub fn current_worker() -> Option<&'static str> {
    WORKER_ID.get().map(String::as_str)
}

/// Runs a user's initializer: decodes `(RemoteFn<A, ()>, A)`.
type InitRunner = RemoteFn<ByteBuf, Result<(), String>>;

fn run_user_init<A: DeserializeOwned + Send + 'static>(bytes: ByteBuf) -> Result<(), String> {
    let (f, a): (RemoteFn<A, ()>, A) = postcard::from_bytes(&bytes)
        .map_err(|e| format!("cannot decode the initializer's arguments: {e}"))?;
    f.call(a).map_err(|e| e.to_string())
}

/// What each local worker process is started with.
#[derive(Serialize, Deserialize)]
struct ChildInit {
    registry: RemoteFn<(), Registry>,
    worker: String,
    user: Option<(InitRunner, ByteBuf)>,
}

/// Exit code of a local process whose set-up failed.
const BAD_INIT: i32 = 70;

fn child_init(init: ChildInit) {
    let _ = WORKER_ID.set(init.worker);
    match init.registry.call(()) {
        Ok(r) => {
            let _ = REGISTRY.set(r);
        }
        Err(e) => {
            eprintln!("mproc-redis: the task registry cannot be built here: {e}");
            mproc_pool_exit();
        }
    }
    if let Some((runner, bytes)) = init.user {
        match runner.call(bytes) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                eprintln!("mproc-redis: the initializer failed: {why}");
                mproc_pool_exit();
            }
            Err(why) => {
                eprintln!("mproc-redis: the initializer cannot run here: {why}");
                mproc_pool_exit();
            }
        }
    }
}

fn mproc_pool_exit() -> ! {
    mproc_process::exit(BAD_INIT)
}

/// Runs a task entry's chunk in a local worker process: the registered
/// task on each item; the chunk's encoded results, or why it cannot run.
fn child_run((name, types, args): (String, u64, ByteBuf)) -> Result<ByteBuf, String> {
    let registry = REGISTRY
        .get()
        .ok_or("this worker process has no task registry")?;
    let task = registry
        .get(&name)
        .ok_or_else(|| format!("no task named {name:?} is registered on this worker"))?;
    let items: Vec<ByteBuf> = postcard::from_bytes(&args)
        .map_err(|e| format!("cannot decode the task's arguments: {e}"))?;
    let work = Work::Named {
        task: task.name(),
        types,
        items: Arc::new(items.into_iter().map(ByteBuf::into_vec).collect()),
    };
    mproc_pool::run_job(&work, Some(registry))
        .map(ByteBuf::from)
        .map_err(|e| match e {
            TaskError::Refused(why) => why,
            other => other.to_string(),
        })
}

/// A worker: connects to Redis, starts `processes` local worker processes
/// of this binary, and runs the registered tasks it is given until it is
/// told to stop.
///
/// # Examples
///
/// In the program's `main`, on every machine (the same build as the
/// clients):
///
/// ```no_run
/// use mproc_call::{task, Registry};
/// use mproc_redis::Worker;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn tasks() -> Registry {
///     Registry::new().with(task!(square))
/// }
///
/// // Runs until SIGTERM or Ctrl-C, then finishes or hands back its tasks.
/// Worker::connect("redis://10.0.0.5/")?.tasks(tasks).processes(8).run()?;
/// # Ok::<(), mproc_redis::Error>(())
/// ```
#[must_use]
pub struct Worker {
    client: redis::Client,
    opts: Options,
    processes: usize,
    prefetch: Option<usize>,
    maxtasks: Option<u64>,
    start_method: Option<mproc_process::StartMethod>,
    registry: Option<(RemoteFn<(), Registry>, Registry)>,
    init: Option<(InitRunner, ByteBuf)>,
    init_error: Option<String>,
    id: Option<String>,
    grace: Duration,
    build: BuildId,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("processes", &self.processes)
            .field("namespace", &self.opts.namespace)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker of the Redis at `url` (as
    /// [`RedisBackend::connect`](crate::RedisBackend::connect)), with the
    /// default options and one process per core.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when the server cannot be reached;
    /// [`Error::Server`] for a server older than 6.2.
    pub fn connect(url: &str) -> Result<Worker, Error> {
        let client = redis::Client::open(url)?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(5))?;
        crate::check_server(&mut con)?;
        Ok(Worker {
            client,
            opts: Options::default(),
            processes: mproc_process::cpu_count(),
            prefetch: None,
            maxtasks: None,
            start_method: None,
            registry: None,
            init: None,
            init_error: None,
            id: None,
            grace: Duration::from_secs(30),
            build: BuildId::current(),
        })
    }

    /// The tasks this worker runs: `f` builds the registry (called here and
    /// in each local process, which cannot be sent a registry). Required.
    pub fn tasks<F, M>(mut self, f: F) -> Worker
    where
        F: Callable<M, Args = (), Output = Registry>,
    {
        self.registry = Some((RemoteFn::new(f), f.call(())));
        self
    }

    /// Local worker processes (default: one per core).
    pub fn processes(mut self, n: usize) -> Worker {
        self.processes = n.max(1);
        self
    }

    /// How many tasks the worker holds at once, running or waiting for its
    /// processes (default: four per process, as Celery's prefetch
    /// multiplier). More hides the round trip to Redis behind short tasks
    /// (for trivial tasks 64 moves about three times as many per second as
    /// the default); fewer leaves more for other workers — for long tasks,
    /// use the process count, so that no task waits on a busy machine while
    /// another is idle.
    pub fn prefetch(mut self, n: usize) -> Worker {
        self.prefetch = Some(n.max(1));
        self
    }

    /// A local process retires after this many tasks (chunks) and is
    /// replaced, as the local pool's.
    pub fn maxtasksperchild(mut self, n: u64) -> Worker {
        self.maxtasks = Some(n);
        self
    }

    /// `f(args)` runs once in each local process before it takes tasks, as
    /// the local pool's initializer (arguments are plain data here).
    pub fn initializer<F, M>(mut self, f: F, args: F::Args) -> Worker
    where
        F: Callable<M, Output = ()>,
        F::Args: Serialize + DeserializeOwned,
    {
        match postcard::to_allocvec(&(RemoteFn::new(f), args)) {
            Ok(bytes) => {
                let runner: InitRunner = RemoteFn::new(run_user_init::<F::Args>);
                self.init = Some((runner, ByteBuf::from(bytes)));
            }
            Err(e) => self.init_error = Some(e.to_string()),
        }
        self
    }

    /// How local processes are started (default: the process-wide method).
    pub fn start_method(mut self, m: mproc_process::StartMethod) -> Worker {
        self.start_method = Some(m);
        self
    }

    /// The protocol's options; they must match the clients'.
    pub fn options(mut self, opts: Options) -> Worker {
        self.opts = opts;
        self
    }

    /// The worker's id, its consumer name in the group (default:
    /// `HOST:PID:RANDOM`). Two live workers must not share one.
    pub fn id(mut self, id: impl Into<String>) -> Worker {
        self.id = Some(id.into());
        self
    }

    /// How long a stopping worker lets running tasks finish before it
    /// hands them back (default 30 s).
    pub fn grace(mut self, d: Duration) -> Worker {
        self.grace = d;
        self
    }

    /// Acts as if this binary were build `build` (tests of version skew).
    #[doc(hidden)]
    pub fn pretend_build(mut self, build: BuildId) -> Worker {
        self.build = build;
        self
    }

    /// Runs until SIGTERM or SIGINT, then stops gracefully: no new tasks;
    /// running ones finish within the grace period or are handed back
    /// (without spending a delivery).
    ///
    /// Send the signal to this process only (with systemd,
    /// `KillMode=mixed`): a SIGTERM to the whole process group would also
    /// end the local processes in the middle of their tasks.
    ///
    /// # Errors
    ///
    /// [`Error::NoTasks`] without [`tasks`](Worker::tasks);
    /// [`Error::Workers`] when the local processes cannot be started or
    /// keep dying in their initializer; [`Error::Unreachable`] when Redis
    /// stayed unreachable for longer than [`Options::reconnect_for`].
    pub fn run(self) -> Result<(), Error> {
        crate::sys::catch_stop_signals().map_err(|e| Error::Workers(e.to_string()))?;
        let handle = self.start()?;
        while !crate::sys::stop_requested() && !handle.host.ended.load(Ordering::Acquire) {
            // A signal handler can only set a flag: look at it in slices.
            std::thread::sleep(SLICE);
        }
        handle.stop()
    }

    /// Starts the worker on threads of this process and returns at once
    /// (for programs that stop it themselves, and tests).
    ///
    /// # Errors
    ///
    /// As [`run`](Worker::run); [`Error::Options`] for options that do not
    /// make sense together or a bad id.
    pub fn start(self) -> Result<WorkerHandle, Error> {
        self.opts.check()?;
        let (registry_fn, registry) = self.registry.ok_or(Error::NoTasks)?;
        if let Some(why) = self.init_error {
            return Err(Error::Workers(format!(
                "the initializer's arguments cannot be sent: {why}"
            )));
        }
        let id = self.id.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "host".into());
            format!(
                "{host}:{}:{:04x}",
                std::process::id(),
                random_u64() & 0xffff
            )
        });
        if id.is_empty() || id == RELEASED || id.len() > 200 {
            return Err(Error::Options(format!("{id:?} cannot be a worker id")));
        }
        let _ = WORKER_ID.set(id.clone());
        let mut b = Pool::builder().processes(self.processes).initializer(
            child_init,
            ChildInit {
                registry: registry_fn,
                worker: id.clone(),
                user: self.init,
            },
        );
        if let Some(n) = self.maxtasks {
            b = b.maxtasksperchild(n);
        }
        if let Some(m) = self.start_method {
            b = b.start_method(m);
        }
        let pool = b.build().map_err(|e| Error::Workers(e.to_string()))?;
        let (tx, rx) = mpsc::channel();
        let host = Arc::new(Host {
            regfp: registry_fingerprint(&registry),
            registry,
            client: self.client,
            keys: self.opts.keys(),
            id,
            build: self.build.to_string(),
            processes: self.processes,
            capacity: self.prefetch.unwrap_or(4 * self.processes),
            grace: self.grace,
            opts: self.opts,
            scripts: Scripts::new(),
            pool,
            held: Mutex::new(HashMap::new()),
            room: Condvar::new(),
            tx,
            stop: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            failure: Mutex::new(None),
            stats: Counters::default(),
        });
        // The heartbeat goes first: a consumer must never be seen without
        // one, or a janitor would take its tasks. What a previous life of a
        // worker of this id left pending goes back at once.
        let mut conn = Conn::new(host.client.clone(), IO_TIMEOUT);
        let set_up = conn
            .run(&host.scripts, |c| host.beat_cmd().query::<()>(c))
            .and_then(|()| conn.run(&host.scripts, |c| ensure_group(c, &host.keys)))
            .and_then(|()| {
                conn.run(&host.scripts, |c| {
                    host.scripts
                        .adopt
                        .key(host.keys.tasks())
                        .arg(GROUP)
                        .arg(&host.id)
                        .arg(RELEASED)
                        .invoke::<u64>(c)
                })
            });
        if let Err(e) = set_up {
            host.pool.terminate();
            let _ = host.pool.join();
            return Err(e.into());
        }
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::Workers(format!("cannot start the {name} thread: {e}")))
        };
        let h = host.clone();
        let fetch = match spawn("mproc-redis-fetch", Box::new(move || h.fetch_loop())) {
            Ok(f) => f,
            Err(e) => {
                host.pool.terminate();
                let _ = host.pool.join();
                return Err(e);
            }
        };
        let h = host.clone();
        let main = match spawn("mproc-redis-host", Box::new(move || h.host_loop(rx, conn))) {
            Ok(m) => m,
            Err(e) => {
                host.stop.store(true, Ordering::Release);
                let _ = fetch.join();
                host.pool.terminate();
                let _ = host.pool.join();
                return Err(e);
            }
        };
        Ok(WorkerHandle {
            host,
            threads: vec![fetch, main],
        })
    }
}

/// How long a connection may take to answer (besides a BLOCK).
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn ensure_group(c: &mut redis::Connection, keys: &Keys) -> redis::RedisResult<()> {
    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys.tasks())
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(c);
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        r => r,
    }
}

/// What a worker has done, for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Results it sent.
    pub completed: u64,
    /// Completions refused because the task was no longer its own (its
    /// lease had run out, or its heartbeat, and another worker took it).
    pub fenced: u64,
    /// Tasks it ran whose result another delivery had already sent.
    pub already_done: u64,
    /// Tasks it handed back (a local process died, or it stopped).
    pub released: u64,
    /// Tasks it claimed from dead workers or expired leases.
    pub reclaimed: u64,
    /// Tasks it handed back because they come from another build with
    /// another registry (version skew).
    pub skewed: u64,
    /// Replies of Redis it could not use (logged).
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    fenced: AtomicU64,
    already_done: AtomicU64,
    released: AtomicU64,
    reclaimed: AtomicU64,
    skewed: AtomicU64,
    errors: AtomicU64,
}

/// A running worker (from [`Worker::start`]).
#[derive(Debug)]
pub struct WorkerHandle {
    host: Arc<Host>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerHandle {
    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.host.id
    }

    /// What it has done so far.
    pub fn stats(&self) -> WorkerStats {
        self.host.stats()
    }

    /// Stops gracefully — no new tasks; running ones finish within the
    /// grace period or are handed back — and waits for it.
    ///
    /// # Errors
    ///
    /// Why the worker failed, if it did.
    pub fn stop(mut self) -> Result<(), Error> {
        self.halt();
        match self.host.failure.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn halt(&mut self) {
        self.host.stop.store(true, Ordering::Release);
        self.host.room.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    /// Stops as [`stop`](WorkerHandle::stop) does.
    fn drop(&mut self) {
        self.halt();
    }
}

/// A task the worker holds: the delivery it holds it by.
struct Held {
    deliveries: u32,
    /// Renewal found it is not ours any more.
    lost: bool,
}

/// What became of a task on the local pool.
enum Finished {
    /// The chunk's encoded results.
    Ran(Vec<u8>),
    /// It cannot run here (bad arguments, unknown types).
    Refused(String),
    /// Its process died, or it comes from another build: hand it back with
    /// this reason (a delivery is spent).
    Died(String),
    /// The worker is stopping: hand it back without spending a delivery.
    Stopped,
    /// The local pool broke (its processes keep dying in their
    /// initializer): hand it back without spending a delivery, and stop.
    Broken(String),
}

struct Done {
    entry: String,
    deliveries: u32,
    task_id: String,
    index: u64,
    reply: String,
    /// Its arguments are in a blob key (deleted at completion).
    blob: bool,
    what: Finished,
}

struct Host {
    client: redis::Client,
    opts: Options,
    keys: Keys,
    id: String,
    build: String,
    registry: Registry,
    regfp: u64,
    processes: usize,
    capacity: usize,
    grace: Duration,
    scripts: Scripts,
    pool: Pool,
    held: Mutex<HashMap<String, Held>>,
    /// Signalled when a held task is let go.
    room: Condvar,
    tx: Sender<Done>,
    stop: AtomicBool,
    /// The host thread has ended (stopped or failed).
    ended: AtomicBool,
    failure: Mutex<Option<Error>>,
    stats: Counters,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How many finished tasks one completion round trip carries at most.
const COMPLETIONS: usize = 512;

impl Host {
    fn stats(&self) -> WorkerStats {
        let s = &self.stats;
        WorkerStats {
            completed: s.completed.load(Ordering::Relaxed),
            fenced: s.fenced.load(Ordering::Relaxed),
            already_done: s.already_done.load(Ordering::Relaxed),
            released: s.released.load(Ordering::Relaxed),
            reclaimed: s.reclaimed.load(Ordering::Relaxed),
            skewed: s.skewed.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn fail(&self, e: Error) {
        let mut f = self.failure.lock();
        if f.is_none() {
            eprintln!("mproc-redis: worker {} stops: {e}", self.id);
            *f = Some(e);
        }
        self.stop.store(true, Ordering::Release);
        self.room.notify_all();
    }

    fn error(&self, what: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("mproc-redis: worker {}: {what}", self.id);
    }

    /// SET of the heartbeat key: the process count, for clients that size
    /// their chunks by it.
    fn beat_cmd(&self) -> redis::Cmd {
        let mut c = redis::cmd("SET");
        c.arg(self.keys.worker(&self.id))
            .arg(self.processes)
            .arg("PX")
            .arg(ms(self.opts.heartbeat_ttl()));
        c
    }

    fn room_left(&self) -> usize {
        self.capacity.saturating_sub(self.held.lock().len())
    }

    fn fetch_loop(&self) {
        let mut conn = Conn::new(self.client.clone(), SLICE + IO_TIMEOUT);
        let tasks = self.keys.tasks();
        while !self.stopping() {
            let room = {
                let mut held = self.held.lock();
                if held.len() >= self.capacity {
                    self.room.wait_for(&mut held, SLICE);
                    continue;
                }
                self.capacity - held.len()
            };
            let r = conn.run(&self.scripts, |c| {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.id)
                    .arg("COUNT")
                    .arg(room)
                    .arg("BLOCK")
                    .arg(SLICE.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&tasks)
                    .arg(">")
                    .query::<Value>(c)
            });
            let reply = match r {
                Ok(v) => v,
                Err(e) if e.code() == Some("NOGROUP") => {
                    // A Redis that lost the stream (restarted without
                    // persistence): make it again.
                    let _ = conn.run(&self.scripts, |c| ensure_group(c, &self.keys));
                    continue;
                }
                Err(e) => {
                    if let Some(failing) = conn.failing_for() {
                        if failing > self.opts.reconnect_for {
                            self.fail(Error::Unreachable(format!("{failing:?} (last: {e})")));
                            return;
                        }
                    }
                    std::thread::sleep(SLICE);
                    continue;
                }
            };
            match wire::read_reply(&reply) {
                Ok(entries) => {
                    for e in entries {
                        self.accept(&mut conn, e, 1);
                    }
                }
                Err(why) => self.error(&format!("an unreadable reply from XREADGROUP: {why}")),
            }
        }
    }

    /// Records an entry that cannot be a task (malformed, or naming a
    /// result stream that is not one) in the dead letters and drops it:
    /// nobody can be told.
    fn drop_malformed(&self, conn: &mut Conn, e: &Entry, why: &str) {
        self.error(&format!("dead-lettering a malformed task entry: {why}"));
        let tasks = self.keys.tasks();
        let _ = conn.run(&self.scripts, |c| {
            redis::pipe()
                .cmd("XADD")
                .arg(self.keys.dead())
                .arg("MAXLEN")
                .arg("~")
                .arg(crate::DEAD_LETTERS)
                .arg("*")
                .arg("id")
                .arg(&e.id)
                .arg("reason")
                .arg(why)
                .ignore()
                .cmd("XACK")
                .arg(&tasks)
                .arg(GROUP)
                .arg(&e.id)
                .ignore()
                .cmd("XDEL")
                .arg(&tasks)
                .arg(&e.id)
                .ignore()
                .query::<()>(c)
        });
    }

    /// Takes a delivered entry: checks it, and hands it to the local pool
    /// (or gives it back, or refuses it).
    fn accept(&self, conn: &mut Conn, e: Entry, deliveries: u32) {
        if e.fields.is_empty() {
            // Deleted while pending (its caller terminated): nothing to run.
            let tasks = self.keys.tasks();
            let _ = conn.run(&self.scripts, |c| {
                redis::cmd("XACK")
                    .arg(&tasks)
                    .arg(GROUP)
                    .arg(&e.id)
                    .query::<()>(c)
            });
            return;
        }
        let t = match TaskEntry::parse(&e) {
            Ok(t) if self.keys.is_results(&t.reply) => t,
            Ok(t) => {
                let why = format!("entry {} names {:?} as its result stream", e.id, t.reply);
                return self.drop_malformed(conn, &e, &why);
            }
            Err(why) => return self.drop_malformed(conn, &e, &why),
        };
        let in_blob = t.args.is_none();
        let done = |what: Finished| Done {
            entry: e.id.clone(),
            deliveries,
            task_id: t.task_id.clone(),
            index: t.index,
            reply: t.reply.clone(),
            blob: in_blob,
            what,
        };
        self.held.lock().insert(
            e.id.clone(),
            Held {
                deliveries,
                lost: false,
            },
        );
        if t.build != self.build && t.registry != self.regfp {
            self.stats.skewed.fetch_add(1, Ordering::Relaxed);
            let why = format!(
                "version skew: worker {} runs build {} (registry {:016x}); the task comes from \
                 build {} (registry {:016x})",
                self.id, self.build, self.regfp, t.build, t.registry
            );
            return self.send(done(Finished::Died(why)));
        }
        let args = match t.args {
            Some(a) => a,
            None => {
                let blob = self.keys.blob(&t.task_id);
                match conn.run(&self.scripts, |c| {
                    redis::cmd("GET").arg(&blob).query::<Option<Vec<u8>>>(c)
                }) {
                    Ok(Some(a)) => a,
                    Ok(None) => {
                        return self.send(done(Finished::Refused(
                            "the task's arguments expired before a worker took it".into(),
                        )));
                    }
                    Err(e) => {
                        return self.send(done(Finished::Died(format!(
                            "the task's arguments could not be read: {e}"
                        ))));
                    }
                }
            }
        };
        if self.registry.get(&t.name).is_none() {
            return self.send(done(Finished::Refused(format!(
                "no task named {:?} is registered on worker {}",
                t.name, self.id
            ))));
        }
        let (ok_tx, err_tx) = (self.tx.clone(), self.tx.clone());
        let (ok_done, err_done) = (done(Finished::Stopped), done(Finished::Stopped));
        let r = self.pool.apply_async_with(
            child_run,
            (t.name, t.types, ByteBuf::from(args)),
            move |r: &Result<ByteBuf, String>| {
                let what = match r {
                    Ok(out) => Finished::Ran(out.to_vec()),
                    Err(why) => Finished::Refused(why.clone()),
                };
                let _ = ok_tx.send(Done { what, ..ok_done });
            },
            move |e: &PoolError| {
                let _ = err_tx.send(Done {
                    what: local_failure(e),
                    ..err_done
                });
            },
        );
        if let Err(e) = r {
            self.send(done(local_failure(&e)));
        }
    }

    fn send(&self, d: Done) {
        let _ = self.tx.send(d);
    }

    fn host_loop(&self, rx: Receiver<Done>, mut conn: Conn) {
        let mut pending: Vec<Done> = Vec::new();
        let mut next_beat = Instant::now();
        let mut stop_by: Option<Instant> = None;
        let mut cursor = "0-0".to_string();
        loop {
            let wait = next_beat
                .saturating_duration_since(Instant::now())
                .min(SLICE);
            if pending.is_empty() {
                if let Ok(d) = rx.recv_timeout(wait) {
                    pending.push(d);
                }
            }
            while pending.len() < COMPLETIONS {
                match rx.try_recv() {
                    Ok(d) => pending.push(d),
                    Err(_) => break,
                }
            }
            if !pending.is_empty() {
                self.finish(&mut conn, &mut pending);
            }
            if Instant::now() >= next_beat {
                next_beat = Instant::now() + self.opts.heartbeat;
                self.beat(&mut conn, &mut cursor);
            }
            if let Some(failing) = conn.failing_for() {
                if failing > self.opts.reconnect_for {
                    self.fail(Error::Unreachable(format!("{failing:?}")));
                    break;
                }
                // Not a hot loop while Redis is away.
                std::thread::sleep(SLICE);
            }
            if self.stopping() {
                let by = *stop_by.get_or_insert_with(|| Instant::now() + self.grace);
                if self.held.lock().is_empty() && pending.is_empty() {
                    break;
                }
                if Instant::now() >= by {
                    self.hand_back_all(&mut conn);
                    break;
                }
            }
        }
        self.pool.terminate();
        let _ = self.pool.join();
        let (hb, tasks) = (self.keys.worker(&self.id), self.keys.tasks());
        let _ = conn.run(&self.scripts, |c| {
            redis::cmd("DEL").arg(&hb).query::<()>(c)?;
            self.scripts
                .leave
                .key(&tasks)
                .arg(GROUP)
                .arg(&self.id)
                .invoke::<()>(c)
        });
        self.ended.store(true, Ordering::Release);
    }

    /// The command that hands back one finished task: with a reason (a
    /// delivery spent), or — stopping — with its delivery count set back.
    fn release_cmd(&self, d: &Done) -> redis::Cmd {
        let (tasks, why) = (self.keys.tasks(), self.keys.why(&d.task_id));
        let ttl = ms(self.opts.result_ttl).to_string();
        let count = d.deliveries.to_string();
        let (reason, retry) = match &d.what {
            Finished::Died(reason) => (format!("{reason} (on worker {})", self.id), String::new()),
            _ => (String::new(), d.deliveries.saturating_sub(1).to_string()),
        };
        evalsha(
            &self.scripts.release,
            &[&tasks, &why],
            &[
                GROUP.as_bytes(),
                d.entry.as_bytes(),
                self.id.as_bytes(),
                count.as_bytes(),
                reason.as_bytes(),
                RELEASED.as_bytes(),
                ttl.as_bytes(),
                retry.as_bytes(),
            ],
        )
    }

    /// The one command that completes `done` (each a result or a refusal).
    fn complete_cmd(&self, done: &[&Done]) -> redis::Cmd {
        let mut c = redis::cmd("EVALSHA");
        c.arg(self.scripts.complete.get_hash())
            .arg(2)
            .arg(self.keys.tasks())
            .arg(self.keys.stats())
            .arg(GROUP)
            .arg(&self.id)
            .arg(ms(self.opts.result_ttl));
        for d in done {
            let (kind, value): (&str, &[u8]) = match &d.what {
                Finished::Ran(out) => (wire::OK, out),
                Finished::Refused(why) => (wire::REFUSED, why.as_bytes()),
                _ => (wire::REFUSED, b"not a completion"),
            };
            let blob = if d.blob {
                self.keys.blob(&d.task_id)
            } else {
                String::new()
            };
            // A failure note exists only for a task delivered before.
            let why = if d.deliveries > 1 {
                self.keys.why(&d.task_id)
            } else {
                String::new()
            };
            c.arg(&d.entry)
                .arg(d.deliveries)
                .arg(d.index)
                .arg(kind)
                .arg(value)
                .arg(&d.reply)
                .arg(Keys::done(&d.reply))
                .arg(blob)
                .arg(why);
        }
        c
    }

    /// Completes or hands back what the local pool finished, in one round
    /// trip: one script call completes every result. What could not be
    /// sent (Redis away) stays in `pending`.
    fn finish(&self, conn: &mut Conn, pending: &mut Vec<Done>) {
        let completes = |d: &Done| matches!(d.what, Finished::Ran(_) | Finished::Refused(_));
        let completing: Vec<&Done> = pending.iter().filter(|d| completes(d)).collect();
        let mut cmds = Vec::new();
        if !completing.is_empty() {
            cmds.push(self.complete_cmd(&completing));
        }
        cmds.extend(
            pending
                .iter()
                .filter(|d| !completes(d))
                .map(|d| self.release_cmd(d)),
        );
        let Ok(mut replies) = conn.batch(&self.scripts, &cmds) else {
            return;
        };
        if let Some(why) = pending.iter().find_map(|d| match &d.what {
            Finished::Broken(why) => Some(why.clone()),
            _ => None,
        }) {
            self.fail(Error::Workers(why));
        }
        // The completion codes, one per completing task, in order.
        let codes: Vec<Value> = if completing.is_empty() {
            Vec::new()
        } else {
            match replies.remove(0) {
                Value::Array(codes) if codes.len() == completing.len() => codes,
                other => {
                    self.error(&format!(
                        "redis refused to settle {} results: {}",
                        completing.len(),
                        crate::client::server_error(&other)
                    ));
                    vec![Value::Nil; completing.len()]
                }
            }
        };
        let (mut codes, mut releases) = (codes.into_iter(), replies.into_iter());
        let s = &self.stats;
        let mut held = self.held.lock();
        for d in pending.drain(..) {
            let counter = if completes(&d) {
                match codes.next() {
                    Some(Value::Int(1)) => &s.completed,
                    Some(Value::Int(2)) => &s.already_done,
                    Some(Value::Int(0)) => &s.fenced,
                    _ => &s.errors,
                }
            } else {
                match releases.next() {
                    Some(Value::Int(1)) => &s.released,
                    Some(Value::Int(0)) => &s.fenced,
                    _ => &s.errors,
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if held
                .get(&d.entry)
                .is_some_and(|h| h.deliveries == d.deliveries)
            {
                held.remove(&d.entry);
            }
        }
        drop(held);
        self.room.notify_all();
    }

    /// The heartbeat, in one round trip: the worker's key, the leases of
    /// what it holds, and — once its connection has been up for a heartbeat
    /// TTL — the janitor.
    fn beat(&self, conn: &mut Conn, cursor: &mut String) {
        let tasks = self.keys.tasks();
        let held: Vec<(String, String)> = self
            .held
            .lock()
            .iter()
            .filter(|(_, h)| !h.lost)
            .map(|(id, h)| (id.clone(), h.deliveries.to_string()))
            .collect();
        let mut cmds = vec![self.beat_cmd()];
        // Orphans: nobody renewed them for two beats.
        let min_idle = ms(self.opts.heartbeat * 2).to_string();
        let mut args: Vec<&[u8]> = vec![
            GROUP.as_bytes(),
            self.id.as_bytes(),
            min_idle.as_bytes(),
            RELEASED.as_bytes(),
        ];
        for (id, n) in &held {
            args.push(id.as_bytes());
            args.push(n.as_bytes());
        }
        cmds.push(evalsha(&self.scripts.renew, &[&tasks], &args));
        let janitor = conn.connected_for() >= self.opts.heartbeat_ttl();
        if janitor {
            let room = if self.stopping() { 0 } else { self.room_left() };
            let (lease, room, ttl, dead_max) = (
                ms(self.opts.lease).to_string(),
                room.to_string(),
                ms(self.opts.result_ttl).to_string(),
                crate::DEAD_LETTERS.to_string(),
            );
            cmds.push(evalsha(
                &self.scripts.reclaim,
                &[&tasks, &self.keys.dead(), &self.keys.stats()],
                &[
                    GROUP.as_bytes(),
                    self.id.as_bytes(),
                    lease.as_bytes(),
                    room.as_bytes(),
                    self.keys.ns.as_bytes(),
                    ttl.as_bytes(),
                    dead_max.as_bytes(),
                    RELEASED.as_bytes(),
                    cursor.as_bytes(),
                ],
            ));
        }
        let Ok(mut replies) = conn.batch(&self.scripts, &cmds) else {
            return;
        };
        let claimed = if janitor { replies.pop() } else { None };
        match replies.pop() {
            Some(lost) => {
                if let Some(lost) = wire::array(&lost) {
                    let mut h = self.held.lock();
                    for id in lost.iter().filter_map(wire::text) {
                        if let Some(h) = h.get_mut(&id) {
                            h.lost = true;
                        }
                    }
                } else {
                    self.error(&format!(
                        "renewing leases failed: {}",
                        crate::client::server_error(&lost)
                    ));
                }
            }
            None => self.error("renewing leases got no reply"),
        }
        if let Some(claimed) = claimed {
            match wire::claimed(&claimed) {
                Ok((next, entries)) => {
                    *cursor = next;
                    for (e, n) in entries {
                        self.stats.reclaimed.fetch_add(1, Ordering::Relaxed);
                        self.accept(conn, e, n);
                    }
                }
                Err(why) => {
                    *cursor = "0-0".into();
                    self.error(&format!("an unreadable reply from the janitor: {why}"));
                }
            }
        }
    }

    /// Hands back every task still held, without spending a delivery.
    fn hand_back_all(&self, conn: &mut Conn) {
        let held: Vec<Done> = self
            .held
            .lock()
            .iter()
            .filter(|(_, h)| !h.lost)
            .map(|(id, h)| Done {
                entry: id.clone(),
                deliveries: h.deliveries,
                task_id: String::new(),
                index: 0,
                reply: String::new(),
                blob: false,
                what: Finished::Stopped,
            })
            .collect();
        let cmds: Vec<redis::Cmd> = held.iter().map(|d| self.release_cmd(d)).collect();
        if let Ok(replies) = conn.batch(&self.scripts, &cmds) {
            let n = replies
                .iter()
                .filter(|r| matches!(r, Value::Int(1)))
                .count();
            self.stats.released.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// What the local pool's failure of a task means for its entry.
fn local_failure(e: &PoolError) -> Finished {
    match e {
        PoolError::Terminated | PoolError::Closed => Finished::Stopped,
        // The local processes cannot be started or keep dying in their
        // initializer: the host stops; the task goes back for another
        // worker.
        PoolError::Broken(why) => Finished::Broken(why.clone()),
        PoolError::Task(TaskError::Refused(why)) => Finished::Refused(why.clone()),
        other => Finished::Died(other.to_string()),
    }
}
