//! The process pool for mproc: Python's `multiprocessing.Pool`, with
//! workers whose death fails only their own task.
//!
//! - [`Pool`] — `apply`, `apply_async` (with callbacks, or with its own
//!   timeout), `map`, `map_async`, `starmap`, `imap`, `imap_unordered`,
//!   `map_reduce` (rayon's `map().reduce()`, reduced in the workers),
//!   `close`, `join`, `terminate`; [`Pool::builder`] for `processes`,
//!   `initializer`, `maxtasksperchild`, `max_memory_per_child`,
//!   `task_timeout`, `prefetch`, `run_length` and `start_method`.
//! - Short tasks: `imap` at chunk size 1 keeps every item a task of its
//!   own, but once it has seen that tasks take microseconds it sends them
//!   to a worker several at a time, as a *run*
//!   ([`Builder::run_length`]); a worker that dies in a run fails only the
//!   task it was running.
//! - [`AsyncResult`] — `get`, `get_timeout`, `wait`, `wait_timeout`,
//!   `ready`, `successful`, `cancel`, `cancel_even_if_running`.
//! - Balancing: idle workers pull. A worker holds only the job it runs and
//!   a few queued behind it (as many as hide the hand-off); the rest wait
//!   in the pool for the first worker free, and jobs queued behind one that
//!   runs long are taken back for an idle worker — while the pool still
//!   knows which worker runs which job, so a death fails exactly that one.
//! - [`Imap`] — the lazy, bounded iterator of `imap` and `imap_unordered`.
//! - Errors: a task's own failure is a [`TaskError`] ([`WorkerDied`],
//!   [`Panicked`], `TimedOut`, `Lost`, `Refused`, `VersionSkew`); a call's error is a
//!   [`PoolError`] (`Task(TaskError)` — its `source` — `Timeout`, `Cancelled`, `Closed`,
//!   `Terminated`, `Broken`, …); a pool that cannot be built is a [`BuildError`].
//! - [`Backend`] — the seam between the scheduler (submission, chunking,
//!   gather, the `imap` window, callbacks, `AsyncResult`, the pool's
//!   phases) and the workers that run jobs: local processes by default,
//!   other machines with `mproc-redis`, or your own ([`backend`] says how).
//!
//! Tasks are `fn` items — or closures that capture nothing — of up to eight
//! arguments, as [`Process`] targets are; arguments (one value, or a tuple
//! for several) and results cross the process boundary with serde +
//! postcard. The pool never looks inside a result: a task returning a
//! `Result` yields `Ok(Err(e))`.
//!
//! ```no_run
//! use mproc_pool::Pool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn add(a: u64, b: u64) -> u64 {
//!     a + b
//! }
//!
//! let pool = Pool::new(4)?;
//! assert_eq!(pool.map(square, 0..10)?, (0..10).map(square).collect::<Vec<_>>());
//! let r = pool.apply_async(add, (40, 2))?;
//! assert_eq!(r.get()?, 42);
//! let total: u64 = pool.imap(square, 0..1_000_000).map(Result::unwrap).sum();
//! # let _ = total;
//! pool.close();
//! pool.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Never hang
//!
//! A worker that dies mid-task (SIGKILL, abort, out of memory, an `exit` in
//! the task) is noticed at once — a watcher thread per worker waits on it
//! (a pidfd on Linux) — and *that* task resolves to [`TaskError::WorkerDied`];
//! the worker is replaced and every other task completes. CPython's pool
//! hangs forever here (gh-66587). A panicking task resolves to
//! [`TaskError::Panicked`] and its worker lives on. Workers
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
//! The scheduler turns each call into jobs — a chunk of items and the
//! function, named by a [`RemoteFn`](mproc_call::RemoteFn) whose build id
//! the worker checks — and hands them to the backend. The local backend
//! ([its docs](local)) gives each worker its own job pipe (a shared-memory
//! ring) and reads one shared result queue; it tells the job a dead worker
//! was running from the ones queued behind it (sent again: they never ran)
//! by a slot each worker writes before it starts a job.
//!
//! `Running` ─`close`▶ `Closed` (no new tasks; queued ones finish) ─`join`▶
//! done; `terminate` (from either) fails what is left with `Terminated` and
//! stops the workers; `join` then reaps them. `join` before `close` or
//! `terminate` is [`PoolError::StillRunning`].
//!
//! Callbacks run in the parent, on the thread that files results; they may
//! capture, as they never leave the process, and they may submit more
//! tasks (the local backend sends those from its dispatcher thread: the
//! result thread never waits for a worker). A callback that panics is
//! reported on stderr and does not stop the pool. A failure of the result
//! machinery itself breaks the pool: every pending and later call fails
//! with [`PoolError::Broken`] instead of waiting for results that cannot
//! come.
//!
//! [`Process`]: mproc_process::Process
//! [`WorkerDied`]: TaskError::WorkerDied
//! [`Panicked`]: TaskError::Panicked

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

/// A `tracing` event of target `mproc::pool` with the `tracing` feature;
/// nothing (its arguments not even evaluated) without.
macro_rules! event {
    ($level:ident, $($rest:tt)*) => {{
        #[cfg(feature = "tracing")]
        tracing::$level!(target: "mproc::pool", $($rest)*);
    }};
}

mod sys;

pub mod backend;
mod builder;
mod chunk;
mod error;
mod imap;
mod itemlog;
pub mod local;
mod pool;
mod progress;
mod result;
mod worker;

pub use backend::{Backend, Calls, Event, Events, Job, JobId, LocalInput, Runner, Work};
pub use builder::Builder;
pub use chunk::{in_task, run_job, ChunkResults};
pub use error::{BuildError, PoolError, TaskError};
pub use imap::Imap;
pub use pool::Pool;
pub use result::AsyncResult;
#[cfg(feature = "async")]
pub use result::ResultFuture;

/// Re-exported for [`Pool::map_progress`] and [`Imap::progress_bar`].
#[cfg(feature = "progress")]
pub use indicatif;
