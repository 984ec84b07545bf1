//! What can go wrong with a pool call.

use std::fmt;

/// Why a pool call, or one task of it, failed.
///
/// The pool never looks inside a task's return value: a task returning a
/// `Result` yields `Ok(Err(e))`. These are the pool's own errors.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// The worker running the task died (killed, aborted, out of memory, or
    /// exited from inside the task). `signal` is the signal that ended it,
    /// if one did. The worker is replaced; other tasks are unaffected.
    WorkerDied {
        /// The dead worker's pid.
        pid: u32,
        /// The signal that ended it (`None` for an exit).
        signal: Option<i32>,
    },
    /// The task panicked; the worker caught it and lives on.
    TaskPanicked {
        /// The panic's message.
        message: String,
    },
    /// The result was not ready within the timeout; it can still be had.
    Timeout,
    /// The pool was closed: it takes no more tasks.
    Closed,
    /// The pool was terminated before the task finished.
    Terminated,
    /// The pool is broken — its workers cannot be started or keep dying in
    /// their initializer — and fails every call.
    Broken(String),
    /// `successful()` before the result is ready.
    NotReady,
    /// The result was already taken by an earlier `get`.
    Taken,
    /// `join()` on a pool that is neither closed nor terminated.
    StillRunning,
    /// `Pool::new(0)`: a pool needs at least one process.
    NoProcesses,
    /// A chunk size of 0.
    ZeroChunksize,
    /// A `maxtasksperchild` of 0 (CPython raises `ValueError`).
    ZeroMaxTasks,
    /// A task's arguments or result could not be (de)serialized.
    Codec(String),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::WorkerDied {
                pid,
                signal: Some(sig),
            } => write!(
                f,
                "the worker (pid {pid}) died of signal {sig} running this task"
            ),
            PoolError::WorkerDied { pid, signal: None } => {
                write!(f, "the worker (pid {pid}) exited while running this task")
            }
            PoolError::TaskPanicked { message } => write!(f, "the task panicked: {message}"),
            PoolError::Timeout => f.write_str("the result was not ready in time"),
            PoolError::Closed => f.write_str("the pool is closed"),
            PoolError::Terminated => f.write_str("the pool was terminated"),
            PoolError::Broken(why) => write!(f, "the pool is broken: {why}"),
            PoolError::NotReady => f.write_str("the result is not ready"),
            PoolError::Taken => f.write_str("the result was already taken"),
            PoolError::StillRunning => {
                f.write_str("join needs the pool closed or terminated first")
            }
            PoolError::NoProcesses => f.write_str("a pool needs at least one process"),
            PoolError::ZeroChunksize => f.write_str("a chunk size must be at least 1"),
            PoolError::ZeroMaxTasks => f.write_str("maxtasksperchild must be at least 1"),
            PoolError::Codec(why) => write!(f, "serialization failed: {why}"),
        }
    }
}

impl std::error::Error for PoolError {}
