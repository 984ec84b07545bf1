//! The process pool for mproc: Python's `multiprocessing.Pool`, with
//! workers whose death fails only their own task.
//!
//! - [`Pool`] — `apply`, `apply_async` (with callbacks), `map`,
//!   `map_async`, `starmap`, `imap`, `imap_unordered`, `close`, `join`,
//!   `terminate`; [`Pool::builder`] for `processes`, `initializer`,
//!   `maxtasksperchild` and `start_method`.
//! - [`AsyncResult`] — `get`, `get_timeout`, `wait`, `wait_timeout`,
//!   `ready`, `successful`.
//! - [`Imap`] — the lazy, bounded iterator of `imap` and `imap_unordered`.
//! - [`PoolError`] — the pool's own errors: [`WorkerDied`], [`TaskPanicked`],
//!   `Timeout`, `Closed`, `Terminated`, `Broken`, …
//!
//! Tasks are non-capturing `fn(A) -> R` items, as [`Process`] targets are;
//! `A` and `R` cross the process boundary with serde + postcard. The pool
//! never looks inside `R`: a task returning a `Result` yields `Ok(Err(e))`.
//!
//! ```no_run
//! use mproc_pool::Pool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = Pool::new(4)?;
//! assert_eq!(pool.map(square, 0..10)?, (0..10).map(square).collect::<Vec<_>>());
//! let r = pool.apply_async(square, 7)?;
//! assert_eq!(r.get()?, 49);
//! let total: u64 = pool.imap(square, 0..1_000_000).map(Result::unwrap).sum();
//! # let _ = total;
//! pool.close();
//! pool.join()?;
//! # Ok::<(), mproc_pool::PoolError>(())
//! ```
//!
//! # Never hang
//!
//! A worker that dies mid-task (SIGKILL, abort, out of memory, an `exit` in
//! the task) is noticed at once — a watcher thread per worker waits on it
//! (a pidfd on Linux) — and *that* task resolves to
//! [`PoolError::WorkerDied`]; the worker is replaced and every other task
//! completes. CPython's pool hangs forever here (gh-66587). A panicking task
//! resolves to [`PoolError::TaskPanicked`] and its worker lives on. Workers
//! that keep dying in their initializer break the pool after
//! `MAX_INIT_FAILURES` (5) in a row: every pending and later call then
//! fails with [`PoolError::Broken`] instead of respawning for ever.
//!
//! Workers are daemon processes that ignore SIGINT: a Ctrl-C to the
//! terminal's process group ends the parent, and its workers die with it
//! (a daemon is tied to its parent process by a lifeline, whichever thread
//! started it). Dropping a pool terminates and reaps its workers; a worker
//! that does not leave within a grace period (5 s) is killed.
//!
//! # How it works
//!
//! Each worker has its own job pipe (a shared-memory ring); all workers
//! share one result queue read by the pool's result thread. A job is a chunk
//! of arguments and a function, named by its offset in this binary
//! ([`FnOffset`]). Before it runs job `seq`, a worker writes `seq` into its
//! slot of a small shared array; after a worker dies, the parent reads that
//! slot to tell the job it was running (failed with `WorkerDied`) from the
//! ones queued behind it (sent again, to another worker: they never ran).
//!
//! ## A job's states
//!
//! ```text
//! submitted ──dispatch──▶ in flight on worker W (seq s) ──Done──▶ resolved
//!     │                        │
//!     │ pool closed,           ├─ W dies, started[W] ≥ s ──▶ resolved: WorkerDied
//!     │ terminated, broken     ├─ W dies, started[W] < s ──▶ submitted again
//!     ▼                        └─ pool terminated/broken ──▶ resolved: Terminated/Broken
//!  resolved: the error
//! ```
//!
//! Dispatch picks the live worker with the fewest jobs in flight that is
//! under its `maxtasksperchild` and sends the job on the caller's thread; if
//! no worker can take it, the job waits in a backlog that a dispatcher
//! thread sends as replacements start. A job goes to one worker when it is
//! sent (there is no shared task queue to steal from), so tasks of very
//! uneven length balance less well than in CPython; chunks (`map`) and the
//! bounded window (`imap`) keep this small in practice.
//!
//! ## A worker's states
//!
//! ```text
//! starting ──Ready──▶ ready ──maxtasks done / pipe closed──▶ exited ──▶ replaced
//!    │                  │                                    (unless closed
//!    │ dies             │ dies                                and drained,
//!    ▼                  ▼                                    terminated, broken)
//!  init failure      WorkerDied for its running job, the rest resent, replaced
//!  (5 in a row: the pool is broken)
//! ```
//!
//! ## The pool's states
//!
//! `Running` ─`close`▶ `Closed` (no new tasks; queued ones finish) ─`join`▶
//! done; `terminate` (from either) fails what is left with `Terminated` and
//! SIGTERMs the workers; `join` then reaps them. `join` before `close` or
//! `terminate` is [`PoolError::StillRunning`].
//!
//! Callbacks run on the result thread, in the parent; they may capture, as
//! they never leave the process, and they may submit more tasks to the pool
//! (those go to the dispatcher thread: the result thread never waits for a
//! worker). A callback that panics is reported on stderr and does not stop
//! the pool. A failure of the result machinery itself — an error from the
//! result queue, a panic of the result thread — breaks the pool: every
//! pending and later call fails with [`PoolError::Broken`] instead of
//! waiting for results that cannot come.
//!
//! [`Process`]: mproc_process::Process
//! [`FnOffset`]: mproc_process::FnOffset
//! [`WorkerDied`]: PoolError::WorkerDied
//! [`TaskPanicked`]: PoolError::TaskPanicked

#![warn(missing_docs)]

mod sys;

mod error;
mod imap;
mod pool;
mod result;
mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;

use mproc_process::StartMethod;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::PoolError;
pub use imap::Imap;
pub use result::AsyncResult;

use pool::{Config, Inner};
use result::Slot;
use worker::{Call, ChunkOut, Init, InitTrampoline};

/// A pool of worker processes: CPython's `multiprocessing.Pool`.
///
/// See the [crate docs](crate) for what happens when workers die.
pub struct Pool {
    inner: Arc<Inner>,
    processes: usize,
    /// The result thread and the dispatcher thread, until `join`.
    threads: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
}

/// Options for a [`Pool`]: `Pool::builder().processes(4).build()`.
#[derive(Default)]
#[must_use]
pub struct Builder {
    processes: Option<usize>,
    maxtasks: Option<u64>,
    method: Option<StartMethod>,
    init: Option<Result<Init, PoolError>>,
}

impl Builder {
    /// Worker processes (default: [`cpu_count`](mproc_process::cpu_count)).
    /// Many more than cores is fine (`Pool::new(200)` on 2 cores works).
    pub fn processes(mut self, n: usize) -> Builder {
        self.processes = Some(n);
        self
    }

    /// `f(args)` runs once in each worker before it takes tasks. `args`
    /// travel like a task's arguments: they may carry mproc handles (a
    /// `Value`, a `Lock`, a `Queue`…), CPython's usual `initargs`.
    pub fn initializer<A>(mut self, f: fn(A), args: A) -> Builder
    where
        A: Serialize + DeserializeOwned,
    {
        self.init = Some(
            mproc_shm::transfer::encode(&args)
                .map(|msg| Init {
                    trampoline: mproc_process::FnOffset::of(
                        worker::run_init::<A> as InitTrampoline as usize,
                    ),
                    f: mproc_process::FnOffset::of(f as usize),
                    args: Arc::new(msg.bytes),
                    fds: Arc::new(msg.fds.into_vec()),
                })
                .map_err(|e| PoolError::Codec(e.to_string())),
        );
        self
    }

    /// A worker retires after this many tasks (chunks) and is replaced
    /// (default: never).
    ///
    /// [`build`](Builder::build) refuses 0 with
    /// [`PoolError::ZeroMaxTasks`], as CPython raises `ValueError`.
    pub fn maxtasksperchild(mut self, n: u64) -> Builder {
        self.maxtasks = Some(n);
        self
    }

    /// How workers are started (default: the process-wide start method).
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// [`PoolError::NoProcesses`] for 0 processes;
    /// [`PoolError::ZeroMaxTasks`] for a `maxtasksperchild` of 0;
    /// [`PoolError::Codec`] when the initializer's arguments cannot be
    /// serialized; [`PoolError::Broken`] when the workers cannot be started.
    pub fn build(self) -> Result<Pool, PoolError> {
        let processes = self.processes.unwrap_or_else(mproc_process::cpu_count);
        if processes == 0 {
            return Err(PoolError::NoProcesses);
        }
        if self.maxtasks == Some(0) {
            return Err(PoolError::ZeroMaxTasks);
        }
        let init = self.init.transpose()?;
        let inner = Inner::new(Config {
            processes,
            maxtasks: self.maxtasks.unwrap_or(0),
            method: self.method,
            init,
        })?;
        // Any thread may start workers: a daemon child is tied to its parent
        // process, not to the thread that started it.
        inner.start_all().map_err(PoolError::Broken)?;
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| format!("cannot start the pool's {name} thread: {e}"))
        };
        let me = inner.clone();
        let results = spawn("mproc-pool-results", Box::new(move || me.result_loop()));
        let me = inner.clone();
        let dispatch = spawn("mproc-pool-dispatch", Box::new(move || me.dispatch_loop()));
        let pool = Pool {
            inner,
            processes,
            threads: Mutex::new(None),
        };
        match (results, dispatch) {
            (Ok(r), Ok(d)) => {
                *pool.threads.lock() = Some((r, d));
                Ok(pool)
            }
            (r, d) => {
                let why = [r.as_ref().err(), d.as_ref().err()]
                    .into_iter()
                    .flatten()
                    .next()
                    .cloned()
                    .unwrap_or_default();
                pool.terminate();
                let _ = pool.inner.join_workers();
                for t in [r.ok(), d.ok()].into_iter().flatten() {
                    let _ = t.join();
                }
                Err(PoolError::Broken(why))
            }
        }
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("processes", &self.processes)
            .field("maxtasksperchild", &self.maxtasks)
            .field("start_method", &self.method)
            .field("initializer", &self.init.is_some())
            .finish()
    }
}

/// Decodes a chunk's outcome: one result per item, a panic as
/// [`PoolError::TaskPanicked`].
pub(crate) fn decode_chunk<R: DeserializeOwned>(
    bytes: &[u8],
) -> Result<Vec<Result<R, PoolError>>, PoolError> {
    Ok(match decode_outcome::<R>(bytes)? {
        ChunkOut::All(v) => v.into_iter().map(Ok).collect(),
        ChunkOut::Each(v) => v
            .into_iter()
            .map(|r| r.map_err(|message| PoolError::TaskPanicked { message }))
            .collect(),
    })
}

/// Decodes a chunk's outcome as all its results, or the first error.
pub(crate) fn decode_all<R: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<R>, PoolError> {
    match decode_outcome::<R>(bytes)? {
        ChunkOut::All(v) => Ok(v),
        ChunkOut::Each(v) => v
            .into_iter()
            .map(|r| r.map_err(|message| PoolError::TaskPanicked { message }))
            .collect(),
    }
}

fn decode_outcome<R: DeserializeOwned>(bytes: &[u8]) -> Result<ChunkOut<R>, PoolError> {
    postcard::from_bytes(bytes)
        .map_err(|e| PoolError::Codec(format!("cannot decode a task's result: {e}")))
}

/// Encodes a chunk of arguments, with the descriptors of any handles in it.
pub(crate) fn encode<T: Serialize>(items: &[T]) -> Result<mproc_shm::transfer::Message, PoolError> {
    mproc_shm::transfer::encode(items).map_err(|e| PoolError::Codec(e.to_string()))
}

/// CPython's default `map` chunk size: `ceil(len / (4 × workers))`.
fn default_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(4 * workers).max(1)
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
}

impl Pool {
    /// A pool of `processes` workers, started now.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Pool::builder().processes(processes).build()
    }

    /// Options: processes, initializer, maxtasksperchild, start method.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// How many workers the pool keeps.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the workers alive now (a replaced worker has a new one).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner.pids()
    }

    /// Runs `f(args)` in a worker and waits for the result.
    ///
    /// # Errors
    ///
    /// The pool's [`PoolError`] for the task (`WorkerDied`,
    /// `TaskPanicked`, …), or `Closed` after [`close`](Pool::close).
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async(f, args)?.get()
    }

    /// Runs `f(args)` in a worker; the result arrives later.
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] after [`close`](Pool::close) (and `Terminated`,
    /// `Broken`); [`PoolError::Codec`] when `args` cannot be serialized.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> Result<AsyncResult<R>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async_with(f, args, |_| {}, |_| {})
    }

    /// [`apply_async`](Pool::apply_async) with a `callback` for the result
    /// and an `error_callback` for the pool's error. They run in this
    /// process, on the pool's result thread, before the result is ready to
    /// `get` — so they may capture, and should be quick.
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    pub fn apply_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        callback: impl FnOnce(&R) + Send + 'static,
        error_callback: impl FnOnce(&PoolError) + Send + 'static,
    ) -> Result<AsyncResult<R>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.inner.check_open()?;
        let bytes = encode(std::slice::from_ref(&args))?;
        let slot = Slot::new();
        let filled = slot.clone();
        self.inner.submit(
            Call::new(f),
            bytes,
            Box::new(move |out| {
                let r = out.and_then(|b| decode_chunk::<R>(&b)).and_then(|items| {
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
        );
        Ok(AsyncResult { slot })
    }

    /// `f` over every item, in order, in chunks of CPython's default size
    /// (`ceil(len / (4 × processes))`).
    ///
    /// # Errors
    ///
    /// The error of the first item (in input order) that failed; `Closed`
    /// after [`close`](Pool::close).
    pub fn map<A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async(f, iterable)?.get()
    }

    /// [`map`](Pool::map) with an explicit chunk size.
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map); [`PoolError::ZeroChunksize`] for 0.
    pub fn map_chunked<A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        let items: Vec<A> = iterable.into_iter().collect();
        self.gather(Call::new(f), items, Some(chunksize), Box::new(|_| {}))?
            .get()
    }

    /// [`map`](Pool::map), with the result arriving later.
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    pub fn map_async<A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        let items: Vec<A> = iterable.into_iter().collect();
        self.gather(Call::new(f), items, None, Box::new(|_| {}))
    }

    /// [`map_async`](Pool::map_async) with callbacks: `callback` gets the
    /// whole list once, `error_callback` the first error. They run as in
    /// [`apply_async_with`](Pool::apply_async_with).
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    pub fn map_async_with<A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
        callback: impl FnOnce(&Vec<R>) + Send + 'static,
        error_callback: impl FnOnce(&PoolError) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        let items: Vec<A> = iterable.into_iter().collect();
        self.gather(
            Call::new(f),
            items,
            None,
            Box::new(move |r: &Result<Vec<R>, PoolError>| match r {
                Ok(v) => callback(v),
                Err(e) => error_callback(e),
            }),
        )
    }

    /// `f(a, b)` for every pair, in order: CPython's `starmap` for
    /// two-argument functions (for more, take a tuple and use
    /// [`map`](Pool::map)).
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map).
    pub fn starmap<A, B, R, I>(&self, f: fn(A, B) -> R, iterable: I) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        B: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = (A, B)>,
    {
        self.starmap_async(f, iterable)?.get()
    }

    /// [`starmap`](Pool::starmap), with the result arriving later.
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    pub fn starmap_async<A, B, R, I>(
        &self,
        f: fn(A, B) -> R,
        iterable: I,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        B: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = (A, B)>,
    {
        let items: Vec<(A, B)> = iterable.into_iter().collect();
        self.gather(Call::star(f), items, None, Box::new(|_| {}))
    }

    /// Sends `items` in chunks and gathers the results in order.
    fn gather<T, R>(
        &self,
        call: Call,
        items: Vec<T>,
        chunksize: Option<usize>,
        notify: Notify<R>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        T: Serialize,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.inner.check_open()?;
        let chunksize = match chunksize {
            Some(0) => return Err(PoolError::ZeroChunksize),
            Some(n) => n,
            None => default_chunksize(items.len(), self.processes),
        };
        let chunks = items
            .chunks(chunksize)
            .map(encode)
            .collect::<Result<Vec<_>, _>>()?;
        drop(items);
        let slot = Slot::new();
        let filled = slot.clone();
        let finish: Finish<R> = Box::new(move |r: Result<Vec<R>, PoolError>| {
            notify(&r);
            filled.fill(r);
        });
        if chunks.is_empty() {
            finish(Ok(Vec::new()));
            return Ok(AsyncResult { slot });
        }
        let gather = Arc::new(Mutex::new(Gather {
            parts: (0..chunks.len()).map(|_| None).collect(),
            remaining: chunks.len(),
            first_error: None,
            finish: Some(finish),
        }));
        for (i, bytes) in chunks.into_iter().enumerate() {
            let gather = gather.clone();
            self.inner.submit(
                call,
                bytes,
                Box::new(move |out| {
                    let part = out.and_then(|b| decode_all::<R>(&b));
                    let mut g = gather.lock();
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
                            None => Ok(g.parts.drain(..).flatten().flatten().collect()),
                        };
                        let finish = g.finish.take();
                        drop(g);
                        if let Some(finish) = finish {
                            finish(r);
                        }
                    }
                }),
                false,
            );
        }
        Ok(AsyncResult { slot })
    }

    /// `f` over `iterable`, lazily, results in input order; chunk size 1
    /// unless set with [`Imap::chunksize`]. The input is pulled as the
    /// results are taken, with a bounded number of chunks in flight.
    ///
    /// On a pool that is closed, terminated or broken, the iterator yields
    /// that error once and ends.
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Imap<'_, A, R, I::IntoIter>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.imap_inner(Call::new(f), iterable.into_iter(), true)
    }

    /// [`imap`](Pool::imap), with results in the order they finish.
    pub fn imap_unordered<A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Imap<'_, A, R, I::IntoIter>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.imap_inner(Call::new(f), iterable.into_iter(), false)
    }

    fn imap_inner<A, R, I>(&self, call: Call, input: I, ordered: bool) -> Imap<'_, A, R, I>
    where
        A: Serialize,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: Iterator<Item = A>,
    {
        Imap::new(self, call, input, ordered, self.inner.check_open().err())
    }

    /// No more tasks: later calls fail with [`PoolError::Closed`]; tasks
    /// already submitted run to the end.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Stops at once: unfinished tasks fail with [`PoolError::Terminated`]
    /// and the workers get SIGTERM. [`join`](Pool::join) reaps them.
    pub fn terminate(&self) {
        self.inner.terminate();
    }

    /// Waits for every task (after [`close`](Pool::close)) and for every
    /// worker to exit — a worker that does not leave within a grace period
    /// is killed — and stops the pool's threads. It returns even when the
    /// result machinery has failed (the pool is then broken).
    ///
    /// Called from a result callback after `close`, it would wait for
    /// tasks whose results only that thread can file: terminate first
    /// there (as dropping the pool does).
    ///
    /// # Errors
    ///
    /// [`PoolError::StillRunning`] unless the pool was closed or
    /// terminated first.
    pub fn join(&self) -> Result<(), PoolError> {
        self.inner.join_workers()?;
        if let Some((results, dispatch)) = self.threads.lock().take() {
            let _ = dispatch.join();
            // On the result thread itself (a callback dropped the last
            // handle), it ends on its own once this callback returns.
            if !Inner::on_result_thread() {
                let _ = results.join();
            }
        }
        Ok(())
    }
}

impl Drop for Pool {
    /// Terminates the workers and reaps them (CPython's `__del__` and
    /// context-manager exit terminate too). Close and join first to let
    /// queued tasks finish.
    fn drop(&mut self) {
        if self.threads.lock().is_some() {
            self.terminate();
            let _ = self.join();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .finish_non_exhaustive()
    }
}
