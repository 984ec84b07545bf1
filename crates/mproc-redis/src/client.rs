//! `RedisBackend`: the client side — a [`Backend`] that puts a pool's jobs
//! on the task stream and gathers their results from its own result stream.
//!
//! # Threads
//!
//! - The **submitter** takes jobs from [`submit`](Backend::submit) (which
//!   never waits: it hands the job over a channel) and XADDs them in
//!   batches, each batch one MULTI/EXEC transaction that also sets a batch
//!   marker. When the reply is lost (the connection broke), the marker says
//!   whether the batch went in, so it is never added twice.
//! - The **reader** gathers every outstanding result with one blocking
//!   XREAD on the client's result stream, reports each (the scheduler runs
//!   the callbacks there), and trims what it has read from the stream and
//!   deletes its done-markers in the same round trip as its next read.
//! - The **keeper** runs the client's janitor at every heartbeat: tasks
//!   that have used up their deliveries on workers that died are
//!   dead-lettered even when no worker is left to do it. When it finds
//!   Redis restarted (a new `run_id`), it checks every outstanding task:
//!   one whose entry and result are both gone (a server without
//!   persistence, or writes lost in its last second) fails with
//!   [`TaskError::Lost`] instead of being waited for for ever. The run it
//!   compares with is read when the pool starts, before any task is sent
//!   (with no run known, its first look checks every task), so a restart
//!   before the keeper's first look counts too. Its first look is the
//!   named point `redis.keeper-first-look` (see `mproc_shm::fault`).
//!
//! Each has its own connection, reopened after a failure; a Redis that
//! stays unreachable for [`Options::reconnect_for`] breaks the pool.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mproc_call::{BuildId, Registry};
use mproc_pool::{Backend, Calls, Event, Events, Job, JobId, Pool, TaskError, Work};
use parking_lot::Mutex;
use redis::{Cmd, Value};

use crate::conn::Conn;
use crate::error::Error;
use crate::options::{ms, random_u64, Keys, Options, GROUP, RELEASED};
use crate::scripts::Scripts;
use crate::wire::{self, Outcome, TaskEntry};

/// How long one blocking read waits before it looks at the stop flag.
const SLICE: Duration = Duration::from_millis(100);

/// How many jobs one transaction carries at most.
const BATCH: usize = 512;

/// How long a connection may take to answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// Set on a client's reader thread (where callbacks run).
    static ON_READER: Cell<bool> = const { Cell::new(false) };
}

/// A fingerprint of a registry: its task names and type fingerprints.
/// Two builds whose registries have the same fingerprint can run each
/// other's tasks.
pub fn registry_fingerprint(registry: &Registry) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in registry.iter() {
        for b in t
            .name()
            .bytes()
            .chain(t.types().to_le_bytes())
            .chain([0xff])
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// What a client has seen, for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Tasks put on the task stream.
    pub submitted: u64,
    /// Results reported to the pool.
    pub results: u64,
    /// Results that came for a task already reported (never expected: the
    /// protocol sends one result per task; counted to prove it).
    pub duplicates: u64,
    /// Result entries that could not be read.
    pub corrupt: u64,
    /// Tasks found gone from a restarted Redis, failed as lost.
    pub lost: u64,
    /// Batches whose reply was lost and whose marker said they went in
    /// (so they were not sent again).
    pub batches_recovered: u64,
}

/// The client side of a Redis pool: a [`Backend`] for
/// [`Pool::builder().backend(…)`](mproc_pool::Builder::backend), or
/// [`pool`](RedisBackend::pool) for short. Clones share the client (keep
/// one to read its [`stats`](RedisBackend::stats)); one backend runs one
/// pool.
///
/// # Examples
///
/// ```no_run
/// use mproc_pool::Pool;
/// use mproc_redis::{task, Registry, RedisBackend};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn tasks() -> Registry {
///     Registry::new().with(task!(square))
/// }
///
/// let backend = RedisBackend::connect("redis://127.0.0.1/")?.tasks(tasks());
/// let pool = Pool::builder().backend(backend).build()?;
/// assert_eq!(pool.map(square, 0..4)?, [0, 1, 4, 9]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    opts: Options,
    keys: Keys,
    id: String,
    reply: String,
    done: String,
    registry: Registry,
    regfp: u64,
    parallelism: Option<usize>,
    build: String,
    scripts: Scripts,
    state: Mutex<State>,
    stop: AtomicBool,
    broken: AtomicBool,
    submitted: AtomicU64,
    results: AtomicU64,
    duplicates: AtomicU64,
    corrupt: AtomicU64,
    lost: AtomicU64,
    recovered: AtomicU64,
}

#[derive(Default)]
struct State {
    tx: Option<Sender<Job>>,
    events: Option<Arc<dyn Events>>,
    /// Jobs submitted and not yet reported, with their entry id once the
    /// server has confirmed it.
    outstanding: HashMap<JobId, Option<String>>,
    /// Entries of jobs given up by `terminate`, for `join` to delete.
    cancelled: Vec<String>,
    threads: Vec<JoinHandle<()>>,
    started: bool,
}

impl Inner {
    fn new(client: redis::Client, opts: Options, registry: Registry) -> Inner {
        let keys = opts.keys();
        let id = format!("{:016x}", random_u64());
        let reply = keys.results(&id);
        Inner {
            client,
            done: Keys::done(&reply),
            reply,
            id,
            keys,
            opts,
            regfp: registry_fingerprint(&registry),
            registry,
            parallelism: None,
            build: BuildId::current().to_string(),
            scripts: Scripts::new(),
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            submitted: AtomicU64::new(0),
            results: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
        }
    }
}

impl RedisBackend {
    /// A client of the Redis at `url`, with the default [`Options`]:
    /// `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS, with
    /// the `tls` feature), `redis+unix:///path/to/socket[?user=…&pass=…]`.
    /// Checks that the server answers and is new enough.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when the URL is bad or the server cannot be reached
    /// (or refuses the credentials); [`Error::Server`] for a server older
    /// than 6.2.
    pub fn connect(url: &str) -> Result<RedisBackend, Error> {
        RedisBackend::with_options(url, Options::default())
    }

    /// [`connect`](RedisBackend::connect) with `opts`.
    ///
    /// # Errors
    ///
    /// As [`connect`](RedisBackend::connect); [`Error::Options`] for
    /// options that do not make sense together.
    pub fn with_options(url: &str, opts: Options) -> Result<RedisBackend, Error> {
        opts.check()?;
        let client = redis::Client::open(url)?;
        let mut con = client.get_connection_with_timeout(IO_TIMEOUT)?;
        crate::check_server(&mut con)?;
        Ok(RedisBackend {
            inner: Arc::new(Inner::new(client, opts, Registry::new())),
        })
    }

    fn edit(self, f: impl FnOnce(&mut Inner)) -> RedisBackend {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            // A clone exists: configure a client of its own (its own id and
            // result stream) with the same settings.
            Err(shared) => {
                let mut fresh = Inner::new(
                    shared.client.clone(),
                    shared.opts.clone(),
                    shared.registry.clone(),
                );
                fresh.parallelism = shared.parallelism;
                fresh
            }
        };
        f(&mut inner);
        RedisBackend {
            inner: Arc::new(inner),
        }
    }

    /// The tasks this pool may call: the registry the workers run (build it
    /// in one function that both sides call). Only these run; nothing but
    /// their names, type fingerprints and postcard arguments crosses.
    pub fn tasks(self, registry: Registry) -> RedisBackend {
        self.edit(|i| {
            i.regfp = registry_fingerprint(&registry);
            i.registry = registry;
        })
    }

    /// How many tasks run at once, for the default chunk size of `map`
    /// (default: the worker processes alive when the pool is built, read
    /// from the workers' heartbeats; at least 1).
    pub fn parallelism(self, n: usize) -> RedisBackend {
        self.edit(|i| i.parallelism = Some(n.max(1)))
    }

    /// This client's id (its result stream is `NAMESPACE:r:ID`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// What this client has seen so far.
    pub fn stats(&self) -> ClientStats {
        let i = &self.inner;
        ClientStats {
            submitted: i.submitted.load(Ordering::Relaxed),
            results: i.results.load(Ordering::Relaxed),
            duplicates: i.duplicates.load(Ordering::Relaxed),
            corrupt: i.corrupt.load(Ordering::Relaxed),
            lost: i.lost.load(Ordering::Relaxed),
            batches_recovered: i.recovered.load(Ordering::Relaxed),
        }
    }

    /// A [`Pool`] on this backend: `Pool::builder().backend(self).build()`.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`](mproc_pool::Builder::build).
    pub fn pool(self) -> Result<Pool, mproc_pool::BuildError> {
        Pool::builder().backend(self).build()
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("id", &self.inner.id)
            .field("namespace", &self.inner.opts.namespace)
            .finish_non_exhaustive()
    }
}

/// The worker processes alive now, from their heartbeats.
fn live_processes(con: &mut redis::Connection, keys: &Keys) -> redis::RedisResult<usize> {
    let pattern = keys.worker("*");
    let mut total = 0usize;
    let mut cursor = 0u64;
    loop {
        let (next, names): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(con)?;
        if !names.is_empty() {
            let counts: Vec<Option<u64>> = redis::cmd("MGET").arg(&names).query(con)?;
            let sum: u64 = counts.into_iter().flatten().map(|n| n.min(1 << 20)).sum();
            total = total.saturating_add(usize::try_from(sum).unwrap_or(usize::MAX));
        }
        if next == 0 {
            return Ok(total);
        }
        cursor = next;
    }
}

impl Backend for RedisBackend {
    fn calls(&self) -> Calls {
        Calls::Named(self.inner.registry.clone())
    }

    fn parallelism(&self) -> usize {
        if let Some(n) = self.inner.parallelism {
            return n;
        }
        let i = &self.inner;
        i.client
            .get_connection_with_timeout(IO_TIMEOUT)
            .and_then(|mut c| live_processes(&mut c, &i.keys))
            .unwrap_or(1)
            .max(1)
    }

    fn start(&self, events: Arc<dyn Events>) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        {
            let mut st = self.inner.state.lock();
            if st.started {
                return Err("this backend already runs a pool (make one per pool)".into());
            }
            st.started = true;
            st.tx = Some(tx);
            st.events = Some(events);
        }
        // The server run the pool starts against, read before any task can
        // be sent: a restart between the first task and the keeper's first
        // look is then still seen as one.
        let run_id = self
            .inner
            .client
            .get_connection_with_timeout(IO_TIMEOUT)
            .ok()
            .and_then(|mut c| server_run_id(&mut c).ok());
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| format!("cannot start the client's {name} thread: {e}"))
        };
        let me = self.inner.clone();
        let a = spawn("mproc-redis-submit", Box::new(move || me.submit_loop(rx)));
        let me = self.inner.clone();
        let b = spawn("mproc-redis-results", Box::new(move || me.read_loop()));
        let me = self.inner.clone();
        let c = spawn("mproc-redis-keeper", Box::new(move || me.keep_loop(run_id)));
        let mut st = self.inner.state.lock();
        let mut why = None;
        for t in [a, b, c] {
            match t {
                Ok(t) => st.threads.push(t),
                Err(e) => why = Some(e),
            }
        }
        if let Some(why) = why {
            self.inner.stop.store(true, Ordering::Release);
            st.tx = None;
            st.events = None;
            let threads = std::mem::take(&mut st.threads);
            drop(st);
            for t in threads {
                let _ = t.join();
            }
            return Err(why);
        }
        Ok(())
    }

    fn submit(&self, job: Job) {
        let mut st = self.inner.state.lock();
        if self.inner.stop.load(Ordering::Acquire) {
            return;
        }
        st.outstanding.insert(job.id, None);
        if let Some(tx) = &st.tx {
            let _ = tx.send(job);
        }
    }

    fn close(&self) {}

    fn terminate(&self) {
        // Tasks already running finish (at least once); their results
        // expire unread. Those not yet delivered are deleted by `join`.
        self.inner.stop.store(true, Ordering::Release);
        let mut st = self.inner.state.lock();
        st.tx = None;
        let cancelled: Vec<String> = st.outstanding.drain().filter_map(|(_, e)| e).collect();
        st.cancelled.extend(cancelled);
    }

    fn join(&self) {
        self.inner.stop.store(true, Ordering::Release);
        let (threads, cancelled) = {
            let mut st = self.inner.state.lock();
            st.tx = None;
            (
                std::mem::take(&mut st.threads),
                std::mem::take(&mut st.cancelled),
            )
        };
        for t in threads {
            if ON_READER.with(Cell::get) && t.thread().id() == std::thread::current().id() {
                continue;
            }
            let _ = t.join();
        }
        // What is left of our result stream is nobody's now; entries of
        // terminated calls that no worker took need not run.
        let i = &self.inner;
        if let Ok(mut c) = i.client.get_connection_with_timeout(IO_TIMEOUT) {
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(&i.reply).arg(&i.done).ignore();
            for ids in cancelled.chunks(BATCH) {
                pipe.cmd("XDEL").arg(i.keys.tasks()).arg(ids).ignore();
            }
            let _: redis::RedisResult<()> = pipe.query(&mut c);
        }
        i.state.lock().events = None;
    }
}

impl Inner {
    fn report(&self, e: Event) {
        let events = self.state.lock().events.clone();
        if let Some(events) = events {
            events.event(e);
        }
    }

    /// Reports a lasting failure to reach Redis once: the pool is broken.
    fn give_up(&self, what: &str, e: &redis::RedisError) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            self.stop.store(true, Ordering::Release);
            self.report(Event::Broken(format!(
                "redis could not be reached for {:?} ({what}): {e}",
                self.opts.reconnect_for
            )));
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits a slice before the next attempt; `false` (after breaking the
    /// pool) once Redis has failed for longer than `reconnect_for`, or when
    /// the client stops.
    fn retry(&self, conn: &Conn, what: &str, e: &redis::RedisError) -> bool {
        if self.stopped() {
            return false;
        }
        if conn.failing_for() > Some(self.opts.reconnect_for) {
            self.give_up(what, e);
            return false;
        }
        std::thread::sleep(SLICE);
        true
    }

    /// The entry for `job`, or why it cannot be sent.
    fn entry(&self, job: &Job) -> Result<TaskEntry, TaskError> {
        let Work::Named { task, types, items } = &job.work else {
            return Err(TaskError::Refused(
                "a redis pool runs named tasks only (register the function)".into(),
            ));
        };
        let args = postcard::to_allocvec(&**items)
            .map_err(|e| TaskError::Refused(format!("cannot encode the arguments: {e}")))?;
        Ok(TaskEntry {
            task_id: format!("{}:{}", self.id, job.id),
            name: (*task).to_owned(),
            types: *types,
            build: self.build.clone(),
            registry: self.regfp,
            args: Some(args),
            index: job.id,
            reply: self.reply.clone(),
            max: self.opts.max_deliveries,
        })
    }

    fn submit_loop(&self, rx: Receiver<Job>) {
        let mut conn = Conn::new(self.client.clone(), IO_TIMEOUT);
        let tasks = self.keys.tasks();
        let ttl = ms(self.opts.result_ttl);
        let marker_ttl = ms(self.opts.reconnect_for + Duration::from_secs(60));
        let mut batch_no = 0u64;
        // Markers of batches known to have gone in: deleted in the next
        // round trip (they expire anyway), so that they cost nothing while
        // tasks stream in.
        let mut settled: Vec<String> = Vec::new();
        loop {
            let first = match rx.recv_timeout(SLICE) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) if !self.stopped() => {
                    if !settled.is_empty() {
                        let del = redis::cmd("DEL").arg(&settled).clone();
                        if conn.batch(&self.scripts, &[del]).is_ok() {
                            settled.clear();
                        }
                    }
                    continue;
                }
                Err(_) => {
                    if !settled.is_empty() {
                        let del = redis::cmd("DEL").arg(&settled).clone();
                        let _ = conn.batch(&self.scripts, &[del]);
                    }
                    return;
                }
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            batch_no += 1;
            let marker = self.keys.batch(&self.id, batch_no);
            let mut cmds = Vec::with_capacity(batch.len() + 4);
            if !settled.is_empty() {
                cmds.push(redis::cmd("DEL").arg(&settled).clone());
            }
            cmds.push(redis::cmd("MULTI"));
            let mut sent: Vec<JobId> = Vec::with_capacity(batch.len());
            for job in &batch {
                let mut entry = match self.entry(job) {
                    Ok(e) => e,
                    Err(error) => {
                        self.fail_job(job.id, error);
                        continue;
                    }
                };
                if let Some(args) = entry.args.take_if(|a| a.len() > self.opts.blob_threshold) {
                    let mut set = redis::cmd("SET");
                    set.arg(self.keys.blob(&entry.task_id))
                        .arg(args)
                        .arg("PX")
                        .arg(ttl);
                    cmds.push(set);
                }
                let mut xadd = redis::cmd("XADD");
                xadd.arg(&tasks).arg("*");
                for (k, v) in entry.fields() {
                    xadd.arg(k).arg(v);
                }
                cmds.push(xadd);
                sent.push(job.id);
            }
            if sent.is_empty() {
                continue;
            }
            let mut mark = redis::cmd("SET");
            mark.arg(&marker).arg(1).arg("PX").arg(marker_ttl);
            cmds.push(mark);
            cmds.push(redis::cmd("EXEC"));
            if !self.send_batch(&mut conn, &cmds, &marker, &sent) {
                return;
            }
            settled.clear();
            settled.push(marker);
        }
    }

    /// Sends one transaction of jobs `sent` until it is known to have gone
    /// in (or failed for good); `false` when the client stops or gives up.
    fn send_batch(&self, conn: &mut Conn, cmds: &[Cmd], marker: &str, sent: &[JobId]) -> bool {
        loop {
            let err = match conn.batch(&self.scripts, cmds) {
                Ok(mut replies) => match replies.pop() {
                    Some(Value::Array(results)) => {
                        self.confirm(sent, &results);
                        return true;
                    }
                    // EXECABORT: refused as a whole (out of memory, say).
                    Some(Value::ServerError(e)) => redis::RedisError::from(e),
                    _ => redis::RedisError::from((
                        redis::ErrorKind::ResponseError,
                        "a transaction of tasks came back without its results",
                    )),
                },
                Err(e) => e,
            };
            // The reply may be lost with the transaction applied: the
            // marker, set inside it, tells.
            loop {
                if !self.retry(conn, "sending tasks", &err) {
                    return false;
                }
                match conn.run(&self.scripts, |c| {
                    redis::cmd("EXISTS").arg(marker).query::<bool>(c)
                }) {
                    Ok(true) => {
                        self.recovered.fetch_add(1, Ordering::Relaxed);
                        self.submitted
                            .fetch_add(sent.len() as u64, Ordering::Relaxed);
                        return true;
                    }
                    Ok(false) => break,
                    Err(_) => continue,
                }
            }
        }
    }

    /// Records the entry ids of a transaction's results; a job whose XADD
    /// failed fails.
    fn confirm(&self, sent: &[JobId], results: &[Value]) {
        // The results are those of the blob SETs, the XADDs and the marker,
        // in order: the XADDs are the ones that give an entry id (or fail).
        let mut ids = results.iter().filter_map(|v| match v {
            Value::Okay => None,
            Value::SimpleString(s) if s == "OK" => None,
            other => Some(other),
        });
        let mut failed = Vec::new();
        {
            let mut st = self.state.lock();
            for &job in sent {
                match ids.next() {
                    Some(v @ Value::ServerError(_)) => failed.push((job, server_error(v))),
                    Some(v) => {
                        if let (Some(slot), Some(id)) =
                            (st.outstanding.get_mut(&job), wire::text(v))
                        {
                            *slot = Some(id);
                        }
                    }
                    None => failed.push((job, "no reply for its entry".to_owned())),
                }
            }
        }
        self.submitted
            .fetch_add((sent.len() - failed.len()) as u64, Ordering::Relaxed);
        for (job, why) in failed {
            self.fail_job(
                job,
                TaskError::Refused(format!("redis refused the task: {why}")),
            );
        }
    }

    fn fail_job(&self, job: JobId, error: TaskError) {
        if self.state.lock().outstanding.remove(&job).is_some() {
            self.report(Event::Failed { job, error });
        }
    }

    fn read_loop(&self) {
        ON_READER.with(|r| r.set(true));
        let mut conn = Conn::new(self.client.clone(), SLICE + IO_TIMEOUT);
        let mut last = "0-0".to_string();
        let (mut read, mut jobs): (Vec<String>, Vec<u64>) = (Vec::new(), Vec::new());
        while !self.stopped() {
            let mut cmds = Vec::with_capacity(3);
            if !read.is_empty() {
                // Read: trimmed a node at a time (cheaper than XDEL of
                // each), and their done-markers deleted.
                let mut c = redis::cmd("XTRIM");
                c.arg(&self.reply).arg("MINID").arg("~").arg(&last);
                cmds.push(c);
                let mut c = redis::cmd("HDEL");
                c.arg(&self.done).arg(&jobs);
                cmds.push(c);
            }
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(SLICE.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.reply)
                .arg(&last);
            cmds.push(xread);
            let reply = match conn.batch(&self.scripts, &cmds) {
                Ok(mut v) => {
                    read.clear();
                    jobs.clear();
                    v.pop().unwrap_or(Value::Nil)
                }
                Err(e) => {
                    if !self.retry(&conn, "reading results", &e) {
                        return;
                    }
                    continue;
                }
            };
            let entries = match wire::read_reply(&reply) {
                Ok(e) => e,
                Err(why) => {
                    self.corrupt.fetch_add(1, Ordering::Relaxed);
                    eprintln!("mproc-redis: an unreadable reply on the result stream: {why}");
                    std::thread::sleep(SLICE);
                    continue;
                }
            };
            for e in entries {
                last.clone_from(&e.id);
                read.push(e.id.clone());
                match wire::parse_result(&e) {
                    Ok((job, outcome)) => {
                        jobs.push(job);
                        self.file(job, outcome);
                    }
                    Err(why) => {
                        self.corrupt.fetch_add(1, Ordering::Relaxed);
                        eprintln!("mproc-redis: an unreadable result: {why}");
                    }
                }
            }
        }
    }

    /// Reports one result, once.
    fn file(&self, job: JobId, outcome: Outcome) {
        if self.state.lock().outstanding.remove(&job).is_none() {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.results.fetch_add(1, Ordering::Relaxed);
        self.report(match outcome {
            Outcome::Done(output) => Event::Done { job, output },
            Outcome::Lost { deliveries, reason } => Event::Failed {
                job,
                error: TaskError::Lost { deliveries, reason },
            },
            Outcome::Refused(why) => Event::Failed {
                job,
                error: TaskError::Refused(why),
            },
            Outcome::Skew(why) => Event::Failed {
                job,
                error: TaskError::VersionSkew(why),
            },
        });
    }

    /// The keeper; `run_id` is the server run the pool started against
    /// (`None` when `start` could not read it).
    fn keep_loop(&self, mut run_id: Option<String>) {
        let mut conn = Conn::new(self.client.clone(), IO_TIMEOUT);
        let (tasks, dead, stats) = (self.keys.tasks(), self.keys.dead(), self.keys.stats());
        let mut next = Instant::now();
        let mut cursor = "0-0".to_string();
        let mut seen = 0u64;
        let mut looked = false;
        mproc_shm::fault::point("redis.keeper-first-look");
        while !self.stopped() {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(SLICE.min(next - now));
                continue;
            }
            next = now + self.opts.heartbeat;
            if !conn.is_connected() || conn.opened() != seen || !looked {
                // (Re)connecting: has the server restarted since? With no
                // run known, every outstanding task is checked: one whose
                // entry and result are both gone cannot be waited for.
                match conn.run(&self.scripts, server_run_id) {
                    Ok(id) => {
                        seen = conn.opened();
                        looked = true;
                        if run_id.as_ref().is_none_or(|old| *old != id) {
                            self.check_outstanding(&mut conn);
                        }
                        run_id = Some(id);
                    }
                    Err(e) => {
                        if conn.failing_for() > Some(self.opts.reconnect_for) {
                            self.give_up("running the janitor", &e);
                            return;
                        }
                        continue;
                    }
                }
            }
            // After a (re)connection, the janitor waits a heartbeat TTL:
            // live workers re-beat and renew before anyone judges them.
            if conn.connected_for() < self.opts.heartbeat_ttl() {
                continue;
            }
            let r = conn.run(&self.scripts, |c| {
                self.scripts
                    .reclaim
                    .key(&tasks)
                    .key(&dead)
                    .key(&stats)
                    .arg(GROUP)
                    .arg("")
                    .arg(ms(self.opts.lease))
                    .arg(0)
                    .arg(&self.keys.ns)
                    .arg(ms(self.opts.result_ttl))
                    .arg(crate::DEAD_LETTERS)
                    .arg(RELEASED)
                    .arg(&cursor)
                    .invoke::<Value>(c)
            });
            match r.map(|v| wire::claimed(&v)) {
                Ok(Ok((next_cursor, _))) => cursor = next_cursor,
                Ok(Err(why)) => {
                    eprintln!("mproc-redis: an unreadable reply from the janitor: {why}");
                    cursor = "0-0".into();
                }
                Err(e) => {
                    if conn.failing_for() > Some(self.opts.reconnect_for) {
                        self.give_up("running the janitor", &e);
                        return;
                    }
                }
            }
        }
    }

    /// After a Redis restart: fails every outstanding task whose entry and
    /// result are both gone — it can no longer run or report.
    fn check_outstanding(&self, conn: &mut Conn) {
        let known: Vec<(JobId, String)> = self
            .state
            .lock()
            .outstanding
            .iter()
            .filter_map(|(&job, id)| Some((job, id.clone()?)))
            .collect();
        let tasks = self.keys.tasks();
        for part in known.chunks(BATCH) {
            let mut cmds = Vec::with_capacity(2 * part.len());
            for (job, id) in part {
                let mut c = redis::cmd("XRANGE");
                c.arg(&tasks).arg(id).arg(id);
                cmds.push(c);
                let mut c = redis::cmd("HEXISTS");
                c.arg(&self.done).arg(job);
                cmds.push(c);
            }
            let Ok(replies) = conn.batch(&self.scripts, &cmds) else {
                return;
            };
            for ((job, _), r) in part.iter().zip(replies.chunks(2)) {
                let entry_gone = matches!(&r[0], Value::Array(a) if a.is_empty());
                let unresolved = matches!(&r[1], Value::Int(0));
                if entry_gone && unresolved && self.state.lock().outstanding.remove(job).is_some() {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                    self.report(Event::Failed {
                        job: *job,
                        error: TaskError::Lost {
                            deliveries: 0,
                            reason: "redis restarted without the task (persistence off, or its \
                                     last writes lost): it can no longer run or report"
                                .into(),
                        },
                    });
                }
            }
        }
    }
}

/// The server's `run_id` (a new one after every restart).
fn server_run_id(c: &mut redis::Connection) -> redis::RedisResult<String> {
    let info: String = redis::cmd("INFO").arg("server").query(c)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// An unexpected reply — a server's error above all — as a message.
pub(crate) fn server_error(v: &Value) -> String {
    match v {
        Value::ServerError(e) => redis::RedisError::from(e.clone()).to_string(),
        other => format!("an unexpected reply {other:?}"),
    }
}
