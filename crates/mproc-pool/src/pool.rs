//! `Pool` and its scheduler: calls cut into jobs for a backend, jobs'
//! outcomes filed into results.
//!
//! The scheduler is the part of a pool that every backend shares. It owns
//! the pool's phase — running, closed (no new calls; what was accepted
//! finishes), terminated, broken — and the table of jobs it has handed to
//! the backend and not yet heard back about. Each job has a handler that
//! turns its outcome into a result: it fills an [`AsyncResult`], a `map`'s
//! gather, or an `imap` window, and runs the call's callbacks. Handlers run
//! on the backend's thread that reports the event; a handler that submits
//! more work (a callback calling `apply_async`) reaches the backend's
//! `submit`, which never waits for a worker.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::time::Duration;

use mproc_call::{panic_message, Callable, ContextFn, RemoteFn};
use mproc_shm::transfer::{FdTable, Message};
use parking_lot::{Condvar, Mutex};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{Backend, Calls, Event, Events, IdMap, Job, JobId, Work};
use crate::chunk;
use crate::error::PoolError;
use crate::imap::Imap;
use crate::progress::Hook;
use crate::result::{AsyncResult, Slot};
use crate::Builder;

/// What becomes of a job's outcome: the chunk's encoded results, or the
/// error for the whole chunk.
pub(crate) type Handler = Box<dyn FnOnce(Result<Message, PoolError>) + Send>;

/// Runs a handler; a panicking callback must not take the reporting thread
/// down with it.
fn run_handler(handler: Handler, outcome: Result<Message, PoolError>) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| handler(outcome))) {
        let message = panic_message(&*p);
        // With `tracing` the subscriber decides where it goes; without, it
        // must still be seen.
        #[cfg(feature = "tracing")]
        tracing::error!(target: "mproc::pool", %message, "a result callback panicked");
        #[cfg(not(feature = "tracing"))]
        eprintln!("mproc-pool: a result callback panicked: {message}");
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
    /// takes jobs of calls it had already accepted (`accepted`).
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
    jobs: IdMap<Handler>,
    next_job: JobId,
    joined: bool,
}

pub(crate) struct Scheduler {
    backend: Arc<dyn Backend>,
    calls: Calls,
    parallelism: usize,
    state: Mutex<State>,
    /// Signalled when the job table empties and when the phase changes.
    changed: Condvar,
}

impl Events for Scheduler {
    fn event(&self, event: Event) {
        match event {
            Event::Done { job, output } => {
                event!(debug, job, "task done");
                if let Some(h) = self.take(job) {
                    run_handler(
                        h,
                        Ok(Message {
                            bytes: output,
                            fds: FdTable::new(),
                        }),
                    );
                }
            }
            Event::DoneWithHandles { job, output } => {
                event!(debug, job, "task done");
                if let Some(h) = self.take(job) {
                    run_handler(h, Ok(output));
                }
            }
            Event::Failed { job, error } => {
                event!(warn, job, %error, "task failed");
                if let Some(h) = self.take(job) {
                    run_handler(h, Err(PoolError::Task(error)));
                }
            }
            Event::Broken(why) => {
                event!(error, %why, "pool broken");
                self.break_pool(why)
            }
        }
    }
}

impl Scheduler {
    fn take(&self, job: JobId) -> Option<Handler> {
        let mut st = self.state.lock();
        let h = st.jobs.remove(&job);
        if st.jobs.is_empty() {
            self.changed.notify_all();
        }
        h
    }

    /// `Ok` while the pool takes new calls.
    pub(crate) fn check_open(&self) -> Result<(), PoolError> {
        match self.state.lock().phase.refusal(false) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// The job for `f` over `items`, in the form the backend runs.
    pub(crate) fn work<F, M>(&self, f: F, items: &[F::Args]) -> Result<Work, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        Ok(match &self.calls {
            Calls::SameBuild => {
                let (runner, input) = chunk::same_build(RemoteFn::new(f), items)?;
                Work::SameBuild {
                    runner,
                    input: Arc::new(input),
                }
            }
            Calls::Named(registry) => {
                let task = registry
                    .find(f)
                    .ok_or(PoolError::NotRegistered(std::any::type_name::<F>()))?;
                Work::Named {
                    task: task.name(),
                    types: task.types(),
                    items: Arc::new(chunk::named_items(items)?),
                }
            }
        })
    }

    /// The job for `f(&ctx, item)` over `items`: the context travels once
    /// with the chunk, not with each item.
    pub(crate) fn work_with<C, A, R>(
        &self,
        f: ContextFn<C, A, R>,
        ctx: &C,
        items: &[A],
    ) -> Result<Work, PoolError>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        match &self.calls {
            Calls::SameBuild => {
                let (runner, input) = chunk::same_build_with(f, ctx, items)?;
                Ok(Work::SameBuild {
                    runner,
                    input: Arc::new(input),
                })
            }
            // A named task takes its item alone; its context would have to
            // travel in every item.
            Calls::Named(_) => Err(PoolError::NotRegistered(std::any::type_name::<
                ContextFn<C, A, R>,
            >())),
        }
    }

    /// Hands a job to the backend, with the handler for its outcome and a
    /// timeout for the job; its id, unless the pool refused it. With
    /// `even_if_closed`, a closed pool still takes it (the later chunks of
    /// an `imap` begun before `close`). If the pool refuses, the handler
    /// gets the error.
    pub(crate) fn submit_timed(
        &self,
        work: Work,
        items: usize,
        handler: Handler,
        even_if_closed: bool,
        timeout: Option<Duration>,
    ) -> Option<JobId> {
        let id = {
            let mut st = self.state.lock();
            if let Some(e) = st.phase.refusal(even_if_closed) {
                drop(st);
                run_handler(handler, Err(e));
                return None;
            }
            let id = st.next_job;
            st.next_job += 1;
            st.jobs.insert(id, handler);
            id
        };
        event!(debug, job = id, items, "task submitted");
        self.backend.submit(Job {
            id,
            work,
            items,
            timeout,
            run: false,
        });
        Some(id)
    }

    /// Hands several jobs to the backend at once, in order, each with its
    /// handler (as [`submit_timed`](Scheduler::submit_timed) hands each).
    ///
    /// With `runs`, each job's items are separate tasks ([`Job::run`]).
    pub(crate) fn submit_many(
        &self,
        jobs: Vec<(Work, usize, Handler)>,
        runs: bool,
        even_if_closed: bool,
    ) {
        let (accepted, refused) = {
            let mut st = self.state.lock();
            match st.phase.refusal(even_if_closed) {
                Some(e) => (Vec::new(), Some((e, jobs))),
                None => {
                    let mut accepted = Vec::with_capacity(jobs.len());
                    for (work, items, handler) in jobs {
                        let id = st.next_job;
                        st.next_job += 1;
                        st.jobs.insert(id, handler);
                        accepted.push(Job {
                            id,
                            work,
                            items,
                            timeout: None,
                            run: runs && items > 1,
                        });
                    }
                    (accepted, None)
                }
            }
        };
        if let Some((e, jobs)) = refused {
            for (_, _, handler) in jobs {
                run_handler(handler, Err(e.clone()));
            }
            return;
        }
        event!(debug, tasks = accepted.len(), "tasks submitted");
        self.backend.submit_many(accepted);
    }

    /// How many items of a call at chunk size 1 go together as one run now
    /// (see [`Backend::run_length`]).
    pub(crate) fn run_length(&self) -> usize {
        self.backend.run_length().max(1)
    }

    /// Cancels `jobs` (see [`AsyncResult::cancel`]): each the backend drops
    /// resolves [`PoolError::Cancelled`]. Whether any was.
    pub(crate) fn cancel(&self, jobs: &[JobId], running: bool) -> bool {
        let mut any = false;
        for &id in jobs {
            if !self.state.lock().jobs.contains_key(&id) {
                continue;
            }
            if self.backend.cancel(id, running) {
                event!(info, job = id, "task cancelled");
                if let Some(h) = self.take(id) {
                    run_handler(h, Err(PoolError::Cancelled));
                    any = true;
                }
            }
        }
        any
    }

    fn close(&self) {
        let mut st = self.state.lock();
        if st.phase == Phase::Running {
            st.phase = Phase::Closed;
        }
        self.changed.notify_all();
    }

    fn fail_all(&self, phase: Phase, e: PoolError) {
        let failed: Vec<Handler> = {
            let mut st = self.state.lock();
            st.phase = phase;
            self.changed.notify_all();
            st.jobs.drain().map(|(_, h)| h).collect()
        };
        for h in failed {
            run_handler(h, Err(e.clone()));
        }
    }

    fn terminate(&self) {
        if matches!(self.state.lock().phase, Phase::Terminated) {
            return;
        }
        self.fail_all(Phase::Terminated, PoolError::Terminated);
        self.backend.terminate();
    }

    fn break_pool(&self, why: String) {
        if matches!(
            self.state.lock().phase,
            Phase::Terminated | Phase::Broken(_)
        ) {
            return;
        }
        self.fail_all(Phase::Broken(why.clone()), PoolError::Broken(why));
        self.backend.terminate();
    }

    /// Waits for the jobs (after `close`), then lets the backend finish.
    fn join(&self) -> Result<(), PoolError> {
        let closed = {
            let mut st = self.state.lock();
            if st.phase == Phase::Running {
                return Err(PoolError::StillRunning);
            }
            while st.phase == Phase::Closed && !st.jobs.is_empty() {
                self.changed.wait(&mut st);
            }
            if st.joined {
                return Ok(());
            }
            st.joined = true;
            st.phase == Phase::Closed
        };
        if closed {
            self.backend.close();
        }
        self.backend.join();
        Ok(())
    }
}

/// CPython's default `map` chunk size: `ceil(len / (4 × workers))`.
fn default_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(4 * workers.max(1)).max(1)
}

/// Resolves a `map`'s result.
type Finish<R> = Box<dyn FnOnce(Result<Vec<R>, PoolError>) + Send>;
/// A `map`'s callbacks, before the result is ready.
type Notify<R> = Box<dyn FnOnce(&Result<Vec<R>, PoolError>) + Send>;

/// The parts of a `map` as they come back.
struct Gather<R> {
    parts: Vec<Option<Vec<R>>>,
    remaining: usize,
    /// The error of the lowest-numbered failed chunk.
    first_error: Option<(usize, PoolError)>,
    finish: Option<Finish<R>>,
    /// Reports items done (successful or not) as chunks come back.
    progress: Option<Hook>,
    done_items: u64,
    total_items: u64,
}

/// A pool of workers: CPython's `multiprocessing.Pool`.
///
/// Tasks are `fn` items (or closures that capture nothing) of up to eight
/// arguments; their arguments travel as one value — the argument itself, or
/// a tuple for several — with serde + postcard, and may carry mproc handles
/// to local workers. See the [crate docs](crate) for what happens when
/// workers die.
///
/// # Examples
///
/// ```no_run
/// use mproc_pool::Pool;
///
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.apply(add, (2, 3))?, 5);
/// assert_eq!(pool.starmap(add, vec![(1, 1), (2, 2)])?, [2, 4]);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool {
    sched: Arc<Scheduler>,
}

impl Pool {
    /// A pool of `processes` local worker processes, started now.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(4)?;
    /// assert_eq!(pool.map(square, 0..4)?, [0, 1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool, crate::BuildError> {
        Pool::builder().processes(processes).build()
    }

    /// Options: processes, initializer, maxtasksperchild, start method, or
    /// another backend.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn init(tag: String) {
    ///     println!("worker {tag}");
    /// }
    ///
    /// let pool = mproc_pool::Pool::builder()
    ///     .processes(2)
    ///     .initializer(init, "ready".to_string())
    ///     .build()?;
    /// # drop(pool);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn with_backend(backend: Arc<dyn Backend>) -> Result<Pool, String> {
        let sched = Arc::new(Scheduler {
            calls: backend.calls(),
            parallelism: backend.parallelism(),
            backend,
            state: Mutex::new(State {
                phase: Phase::Running,
                jobs: IdMap::default(),
                next_job: 0,
                joined: false,
            }),
            changed: Condvar::new(),
        });
        sched.backend.start(sched.clone())?;
        Ok(Pool { sched })
    }

    pub(crate) fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    /// How many tasks run at once (the workers of a local pool).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let pool = mproc_pool::Pool::new(3)?;
    /// assert_eq!(pool.processes(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.sched.parallelism
    }

    /// The pids of the local workers alive now (a replaced worker has a new
    /// one); empty for workers that are not local processes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let pool = mproc_pool::Pool::new(2)?;
    /// assert_eq!(pool.worker_pids().len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.sched.backend.worker_pids()
    }

    /// Runs `f(args)` in a worker and waits for the result.
    ///
    /// # Errors
    ///
    /// [`PoolError::Task`] when the task failed (a panic, its worker's
    /// death); `Closed`, `Terminated`, `Broken`; `Codec`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String, times: usize) -> String {
    ///     format!("hello {name}").repeat(times)
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(1)?;
    /// assert_eq!(pool.apply(greet, ("bob".into(), 2))?, "hello bobhello bob");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<F, M>(&self, f: F, args: F::Args) -> Result<F::Output, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
    {
        self.apply_async(f, args)?.get()
    }

    /// Runs `f(args)` in a worker; the result arrives later.
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] after [`close`](Pool::close) (and `Terminated`,
    /// `Broken`); [`PoolError::Codec`] when `args` cannot be serialized;
    /// [`PoolError::NotRegistered`] for a pool of named tasks.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let pending: Vec<_> = (0..4)
    ///     .map(|x| pool.apply_async(square, x))
    ///     .collect::<Result<_, _>>()?;
    /// let got: Vec<u64> = pending.into_iter().map(|r| r.get()).collect::<Result<_, _>>()?;
    /// assert_eq!(got, [0, 1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_async<F, M>(
        &self,
        f: F,
        args: F::Args,
    ) -> Result<AsyncResult<F::Output>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
    {
        self.apply_async_with(f, args, |_| {}, |_| {})
    }

    /// [`apply_async`](Pool::apply_async) with a `callback` for the result
    /// and an `error_callback` for the pool's error. They run in this
    /// process, on the thread that files results, before the result is
    /// ready to `get` — so they may capture, should be quick, and may submit
    /// more tasks.
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::mpsc;
    ///
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// pool.apply_async_with(square, 7, move |r| tx.send(*r).unwrap(), |e| eprintln!("{e}"))?;
    /// assert_eq!(rx.recv()?, 49);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_async_with<F, M>(
        &self,
        f: F,
        args: F::Args,
        callback: impl FnOnce(&F::Output) + Send + 'static,
        error_callback: impl FnOnce(&PoolError) + Send + 'static,
    ) -> Result<AsyncResult<F::Output>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
    {
        self.apply_timed(f, args, callback, error_callback, None)
    }

    /// [`apply_async`](Pool::apply_async) with a timeout for this task: if
    /// it runs longer than `timeout` (counted from when its worker starts
    /// it), its worker is killed and replaced, the result is
    /// [`TaskError::TimedOut`](crate::TaskError::TimedOut), and the other
    /// tasks go on. It overrides the pool's
    /// [`task_timeout`](crate::Builder::task_timeout). Local workers only: a
    /// pool of another backend runs the task without one.
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use mproc_pool::{Pool, PoolError, TaskError};
    ///
    /// fn hang(_: ()) {
    ///     loop {
    ///         std::thread::park();
    ///     }
    /// }
    ///
    /// let pool = Pool::new(2)?;
    /// let r = pool.apply_async_timeout(hang, (), Duration::from_millis(100))?;
    /// assert!(matches!(r.get(), Err(PoolError::Task(TaskError::TimedOut { .. }))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_async_timeout<F, M>(
        &self,
        f: F,
        args: F::Args,
        timeout: Duration,
    ) -> Result<AsyncResult<F::Output>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
    {
        self.apply_timed(f, args, |_| {}, |_| {}, Some(timeout))
    }

    fn apply_timed<F, M>(
        &self,
        f: F,
        args: F::Args,
        callback: impl FnOnce(&F::Output) + Send + 'static,
        error_callback: impl FnOnce(&PoolError) + Send + 'static,
        timeout: Option<Duration>,
    ) -> Result<AsyncResult<F::Output>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
    {
        self.sched.check_open()?;
        let work = self.sched.work(f, std::slice::from_ref(&args))?;
        drop(args);
        let slot = Slot::new();
        let filled = slot.clone();
        let id = self.sched.submit_timed(
            work,
            1,
            Box::new(move |out| {
                let r = out
                    .and_then(chunk::decode_each::<F::Output>)
                    .and_then(|items| {
                        items.into_iter().next().unwrap_or_else(|| {
                            Err(PoolError::Codec(
                                "a task came back without its result".into(),
                            ))
                        })
                    });
                match &r {
                    Ok(v) => callback(v),
                    Err(e) => error_callback(e),
                }
                filled.fill(r);
            }),
            false,
            timeout,
        );
        Ok(AsyncResult::new(
            slot,
            id.into_iter().collect(),
            Arc::downgrade(&self.sched),
        ))
    }

    /// `f` over every item, in order, in chunks of CPython's default size
    /// (`ceil(len / (4 × processes))`). Items are `f`'s arguments: a tuple
    /// for a function of several.
    ///
    /// # Errors
    ///
    /// The error of the first item (in input order) that failed; `Closed`
    /// after [`close`](Pool::close).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// assert_eq!(pool.map(square, vec![1, 2, 3])?, [1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<F, M, I>(&self, f: F, iterable: I) -> Result<Vec<F::Output>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: IntoIterator<Item = F::Args>,
    {
        self.map_async(f, iterable)?.get()
    }

    /// `f` over every item, reduced with `reduce` to one value — rayon's
    /// `map(f).reduce(…)` across processes: each worker reduces its chunk
    /// of results itself, and only one value per chunk comes back, to be
    /// reduced here in input order. `reduce` must be associative (the
    /// chunks are reduced separately), not commutative. `None` for no
    /// items. Chunks of CPython's default `map` size
    /// (`ceil(len / (4 × processes))`).
    ///
    /// Where [`map`](Pool::map) or [`imap_unordered`](Pool::imap_unordered)
    /// followed by a fold here would bring every result to this process
    /// and combine them on one thread, this combines most of them in the
    /// workers, in parallel: word counts over many files, say, where each
    /// file's counts are large and the totals much smaller than their sum.
    /// A pool whose workers run named tasks elsewhere (a remote backend)
    /// maps there and reduces everything here.
    ///
    /// # Errors
    ///
    /// The error of the first chunk (in input order) that failed — a
    /// panic in `f` or in `reduce`, or its worker's death; `Closed` after
    /// [`close`](Pool::close).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::collections::HashMap;
    ///
    /// fn count(text: String) -> HashMap<String, u64> {
    ///     let mut m = HashMap::new();
    ///     for w in text.split_whitespace() {
    ///         *m.entry(w.to_owned()).or_default() += 1;
    ///     }
    ///     m
    /// }
    ///
    /// fn merge(mut a: HashMap<String, u64>, b: HashMap<String, u64>) -> HashMap<String, u64> {
    ///     for (w, n) in b {
    ///         *a.entry(w).or_default() += n;
    ///     }
    ///     a
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let texts = vec!["a b".to_string(), "b c".to_string(), "c c".to_string()];
    /// let total = pool.map_reduce(count, merge, texts)?.unwrap_or_default();
    /// assert_eq!(total["c"], 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_reduce<F, M, G, N, I>(
        &self,
        f: F,
        reduce: G,
        iterable: I,
    ) -> Result<Option<F::Output>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        G: Callable<N, Args = (F::Output, F::Output), Output = F::Output>,
        I: IntoIterator<Item = F::Args>,
    {
        let items: Vec<F::Args> = iterable.into_iter().collect();
        let parts = match &self.sched.calls {
            Calls::SameBuild => {
                let (f, g) = (RemoteFn::new(f), RemoteFn::new(reduce));
                self.gather_works(
                    items,
                    None,
                    |c| {
                        let (runner, input) = chunk::same_build_reduce(f, g, c)?;
                        Ok(Work::SameBuild {
                            runner,
                            input: Arc::new(input),
                        })
                    },
                    Box::new(|_| {}),
                    None,
                )?
                .get()?
            }
            Calls::Named(_) => self.map(f, items)?,
        };
        Ok(parts.into_iter().reduce(|a, b| reduce.call((a, b))))
    }

    /// [`map`](Pool::map) with an explicit chunk size.
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map); [`PoolError::ZeroChunksize`] for 0.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// assert_eq!(pool.map_chunked(square, 0..100, 10)?.len(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_chunked<F, M, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
    ) -> Result<Vec<F::Output>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: IntoIterator<Item = F::Args>,
    {
        let items: Vec<F::Args> = iterable.into_iter().collect();
        self.gather(f, items, Some(chunksize), Box::new(|_| {}), None)?
            .get()
    }

    /// [`map`](Pool::map), with the result arriving later.
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let r = pool.map_async(square, 0..4)?;
    /// assert_eq!(r.get()?, [0, 1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async<F, M, I>(
        &self,
        f: F,
        iterable: I,
    ) -> Result<AsyncResult<Vec<F::Output>>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: IntoIterator<Item = F::Args>,
    {
        let items: Vec<F::Args> = iterable.into_iter().collect();
        self.gather(f, items, None, Box::new(|_| {}), None)
    }

    /// [`map_async`](Pool::map_async) with callbacks: `callback` gets the
    /// whole list once, `error_callback` the first error. They run as in
    /// [`apply_async_with`](Pool::apply_async_with).
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let r = pool.map_async_with(square, 0..3, |v| println!("{v:?}"), |e| eprintln!("{e}"))?;
    /// r.wait();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async_with<F, M, I>(
        &self,
        f: F,
        iterable: I,
        callback: impl FnOnce(&Vec<F::Output>) + Send + 'static,
        error_callback: impl FnOnce(&PoolError) + Send + 'static,
    ) -> Result<AsyncResult<Vec<F::Output>>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: IntoIterator<Item = F::Args>,
    {
        let items: Vec<F::Args> = iterable.into_iter().collect();
        self.gather(
            f,
            items,
            None,
            Box::new(move |r: &Result<Vec<F::Output>, PoolError>| match r {
                Ok(v) => callback(v),
                Err(e) => error_callback(e),
            }),
            None,
        )
    }

    /// CPython's `starmap`: `f(a, b, …)` for every tuple, in order. It is
    /// [`map`](Pool::map) under another name: a function of several
    /// arguments already takes its items as tuples.
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn area(w: u32, h: u32, unit: String) -> String {
    ///     format!("{}{unit}", w * h)
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let got = pool.starmap(area, vec![(2, 3, "m2".to_string()), (1, 1, "cm2".into())])?;
    /// assert_eq!(got, ["6m2", "1cm2"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap<F, M, I>(&self, f: F, iterable: I) -> Result<Vec<F::Output>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: IntoIterator<Item = F::Args>,
    {
        self.map(f, iterable)
    }

    /// [`starmap`](Pool::starmap), with the result arriving later.
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn add(a: u64, b: u64) -> u64 {
    ///     a + b
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// assert_eq!(pool.starmap_async(add, vec![(1, 2)])?.get()?, [3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap_async<F, M, I>(
        &self,
        f: F,
        iterable: I,
    ) -> Result<AsyncResult<Vec<F::Output>>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: IntoIterator<Item = F::Args>,
    {
        self.map_async(f, iterable)
    }

    /// [`map`](Pool::map), calling `on_progress(done, total)` as chunks come
    /// back. Both count *items*, never chunks (`total` is always `Some`):
    /// with a chunk size of 50, `done` goes 50, 100, … up to `total`. The
    /// hook runs on the thread that files results: keep it quick.
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let v = pool.map_on_progress(square, 0..1_000, |done, total| {
    ///     eprint!("\r{done}/{}", total.unwrap_or(0));
    /// })?;
    /// assert_eq!(v.len(), 1_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_on_progress<F, M, I>(
        &self,
        f: F,
        iterable: I,
        on_progress: impl FnMut(u64, Option<u64>) + Send + 'static,
    ) -> Result<Vec<F::Output>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: IntoIterator<Item = F::Args>,
    {
        let items: Vec<F::Args> = iterable.into_iter().collect();
        self.gather(
            f,
            items,
            None,
            Box::new(|_| {}),
            Some(Box::new(on_progress)),
        )?
        .get()
    }

    /// [`map`](Pool::map) with an indicatif bar (the `progress` feature):
    /// its length is set to the number of items and it advances by the
    /// items of each chunk that comes back; it is finished at the end.
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use indicatif::ProgressBar;
    ///
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let bar = ProgressBar::new(0);
    /// let v = pool.map_progress(square, 0..10_000, bar.clone())?;
    /// assert_eq!((v.len(), bar.position()), (10_000, 10_000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "progress")]
    pub fn map_progress<F, M, I>(
        &self,
        f: F,
        iterable: I,
        bar: indicatif::ProgressBar,
    ) -> Result<Vec<F::Output>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: IntoIterator<Item = F::Args>,
    {
        self.map_on_progress(f, iterable, crate::progress::bar_hook(bar))
    }

    /// `f(&ctx, item)` for every item, in order: one context — a model, a
    /// lookup table, a handle — shared by every task (rayon's `map_with`,
    /// Python's `partial(f, ctx)`).
    ///
    /// `ctx` is serialized once per chunk and sent with the chunk; a worker
    /// decodes it once and lends it to each item of the chunk. With the
    /// default chunk size that is about four copies per worker, whatever
    /// the number of items. (Not once per worker: a worker may be replaced,
    /// and a chunk must be able to run on any worker, so each carries what
    /// it needs.) `ctx` may carry mproc handles.
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map); [`PoolError::Codec`] when `ctx` cannot be
    /// serialized; [`PoolError::NotRegistered`] on a pool of named tasks
    /// (other machines), whose tasks take one value: put the context in
    /// each item there.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::collections::HashMap;
    ///
    /// fn price(table: &HashMap<String, u32>, item: String) -> u32 {
    ///     table.get(&item).copied().unwrap_or(0)
    /// }
    ///
    /// let table = HashMap::from([("apple".to_string(), 3), ("pear".to_string(), 5)]);
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let got = pool.map_with(price, table, vec!["pear".to_string(), "fig".into()])?;
    /// assert_eq!(got, [5, 0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_with<F, C, A, R, I>(&self, f: F, ctx: C, iterable: I) -> Result<Vec<R>, PoolError>
    where
        F: Fn(&C, A) -> R + Copy + Send + Sync + 'static,
        C: Serialize + DeserializeOwned + Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        let f = ContextFn::new(f);
        let items: Vec<A> = iterable.into_iter().collect();
        self.gather_works(
            items,
            None,
            |c| self.sched.work_with(f, &ctx, c),
            Box::new(|_| {}),
            None,
        )?
        .get()
    }

    /// Sends `items` in chunks and gathers the results in order.
    fn gather<F, M>(
        &self,
        f: F,
        items: Vec<F::Args>,
        chunksize: Option<usize>,
        notify: Notify<F::Output>,
        progress: Option<Hook>,
    ) -> Result<AsyncResult<Vec<F::Output>>, PoolError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
    {
        self.gather_works(
            items,
            chunksize,
            |c| self.sched.work(f, c),
            notify,
            progress,
        )
    }

    /// Cuts `items` into chunks, makes each a job with `work`, sends them
    /// and gathers the results in order.
    fn gather_works<A, R>(
        &self,
        items: Vec<A>,
        chunksize: Option<usize>,
        work: impl Fn(&[A]) -> Result<Work, PoolError>,
        notify: Notify<R>,
        progress: Option<Hook>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.sched.check_open()?;
        let chunksize = match chunksize {
            Some(0) => return Err(PoolError::ZeroChunksize),
            Some(n) => n,
            None => default_chunksize(items.len(), self.sched.parallelism),
        };
        let total_items = items.len() as u64;
        let works = items
            .chunks(chunksize)
            .map(|c| Ok((work(c)?, c.len())))
            .collect::<Result<Vec<_>, PoolError>>()?;
        drop(items);
        let slot = Slot::new();
        let filled = slot.clone();
        let finish: Finish<R> = Box::new(move |r| {
            notify(&r);
            filled.fill(r);
        });
        if works.is_empty() {
            if let Some(mut hook) = progress {
                hook(0, Some(0));
            }
            finish(Ok(Vec::new()));
            return Ok(AsyncResult::new(slot, Vec::new(), Weak::new()));
        }
        let gather = Arc::new(Mutex::new(Gather {
            parts: (0..works.len()).map(|_| None).collect(),
            remaining: works.len(),
            first_error: None,
            finish: Some(finish),
            progress,
            done_items: 0,
            total_items,
        }));
        let mut ids = Vec::with_capacity(works.len());
        for (i, (work, len)) in works.into_iter().enumerate() {
            let gather = gather.clone();
            let id = self.sched.submit_timed(
                work,
                len,
                Box::new(move |out| {
                    let part = out.and_then(chunk::decode_all::<R>);
                    let mut g = gather.lock();
                    g.done_items += len as u64;
                    let (done, total) = (g.done_items, g.total_items);
                    if let Some(hook) = g.progress.as_mut() {
                        hook(done, Some(total));
                    }
                    match part {
                        Ok(v) => g.parts[i] = Some(v),
                        Err(e) => {
                            if g.first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                                g.first_error = Some((i, e));
                            }
                        }
                    }
                    g.remaining -= 1;
                    if g.remaining == 0 {
                        let r = match g.first_error.take() {
                            Some((_, e)) => Err(e),
                            None => {
                                let mut all = Vec::with_capacity(g.total_items as usize);
                                for part in g.parts.drain(..).flatten() {
                                    all.extend(part);
                                }
                                Ok(all)
                            }
                        };
                        let finish = g.finish.take();
                        drop(g);
                        if let Some(finish) = finish {
                            finish(r);
                        }
                    }
                }),
                false,
                None,
            );
            ids.extend(id);
        }
        Ok(AsyncResult::new(slot, ids, Arc::downgrade(&self.sched)))
    }

    /// `f` over `iterable`, lazily, results in input order; chunk size 1
    /// unless set with [`Imap::chunksize`]. The input is pulled as the
    /// results are taken, with a bounded number of chunks in flight.
    ///
    /// On a pool that is closed, terminated or broken, the iterator yields
    /// that error once and ends.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let total: u64 = pool
    ///     .imap(square, 0..1_000)
    ///     .chunksize(50)?
    ///     .map(Result::unwrap)
    ///     .sum();
    /// assert_eq!(total, (0..1_000u64).map(|x| x * x).sum::<u64>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap<F, M, I>(&self, f: F, iterable: I) -> Imap<'_, F::Args, F::Output, I::IntoIter>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: IntoIterator<Item = F::Args>,
    {
        self.imap_inner(f, iterable.into_iter(), true)
    }

    /// [`imap`](Pool::imap), with results in the order they finish.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let mut got: Vec<u64> = pool.imap_unordered(square, 0..4).map(Result::unwrap).collect();
    /// got.sort();
    /// assert_eq!(got, [0, 1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap_unordered<F, M, I>(
        &self,
        f: F,
        iterable: I,
    ) -> Imap<'_, F::Args, F::Output, I::IntoIter>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: IntoIterator<Item = F::Args>,
    {
        self.imap_inner(f, iterable.into_iter(), false)
    }

    fn imap_inner<F, M, I>(&self, f: F, input: I, ordered: bool) -> Imap<'_, F::Args, F::Output, I>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        I: Iterator<Item = F::Args>,
    {
        let sched = self.sched.clone();
        let make = Box::new(move |items: &[F::Args]| sched.work(f, items));
        Imap::new(self, make, input, ordered, self.sched.check_open().err())
    }

    /// No more tasks: later calls fail with [`PoolError::Closed`]; tasks
    /// already submitted run to the end.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use mproc_pool::PoolError;
    ///
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let r = pool.apply_async(square, 3)?;
    /// pool.close();
    /// assert_eq!(pool.apply(square, 4), Err(PoolError::Closed));
    /// assert_eq!(r.get()?, 9); // accepted before close: it finishes
    /// pool.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.sched.close();
    }

    /// Stops at once: unfinished tasks fail with [`PoolError::Terminated`]
    /// and the workers are stopped. [`join`](Pool::join) reaps them.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use mproc_pool::PoolError;
    ///
    /// fn nap(ms: u64) -> u64 {
    ///     std::thread::sleep(std::time::Duration::from_millis(ms));
    ///     ms
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(1)?;
    /// let r = pool.apply_async(nap, 10_000)?;
    /// pool.terminate();
    /// assert_eq!(r.get(), Err(PoolError::Terminated));
    /// pool.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn terminate(&self) {
        self.sched.terminate();
    }

    /// Waits for every task (after [`close`](Pool::close)) and for every
    /// worker to exit — a local worker that does not leave within a grace
    /// period is killed — and stops the pool's threads. It returns even when
    /// the result machinery has failed (the pool is then broken).
    ///
    /// Called from a result callback after `close`, it would wait for
    /// tasks whose results only that thread can file: terminate first
    /// there (as dropping the pool does).
    ///
    /// # Errors
    ///
    /// [`PoolError::StillRunning`] unless the pool was closed or
    /// terminated first.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let pool = mproc_pool::Pool::new(2)?;
    /// pool.close();
    /// pool.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self) -> Result<(), PoolError> {
        self.sched.join()
    }
}

impl Drop for Pool {
    /// Terminates the workers and reaps them (CPython's `__del__` and
    /// context-manager exit terminate too). Close and join first to let
    /// queued tasks finish.
    fn drop(&mut self) {
        self.sched.terminate();
        let _ = self.sched.join();
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.sched.parallelism)
            .finish_non_exhaustive()
    }
}
