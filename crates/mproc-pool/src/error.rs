//! What can go wrong: a task's own failure ([`TaskError`]), a pool call's
//! error ([`PoolError`], which carries a `TaskError` as its source), and a
//! pool that cannot be built ([`BuildError`]).
//!
//! The pool never looks inside a task's return value: a task returning a
//! `Result` yields `Ok(Err(e))`. These are the pool's own errors.

use std::fmt;
use std::time::Duration;

/// Why one task failed, whatever pool ran it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// The worker running the task died (killed, aborted, out of memory, or
    /// exited from inside the task). `signal` is the signal that ended it,
    /// if one did. The worker is replaced; other tasks are unaffected.
    WorkerDied {
        /// The dead worker's pid (0 when the worker is not a local process).
        pid: u32,
        /// The signal that ended it (`None` for an exit).
        signal: Option<i32>,
    },
    /// The task panicked; the worker caught it and lives on.
    Panicked {
        /// The panic's message.
        message: String,
    },
    /// The task was given up on after every delivery failed (its workers
    /// died or went silent each time; a remote backend's dead letter).
    Lost {
        /// How many times it was delivered.
        deliveries: u32,
        /// The last reason.
        reason: String,
    },
    /// The worker could not run the job at all: its arguments or results
    /// did not decode or encode, or it runs another build.
    Refused(String),
    /// The task ran past its timeout ([`Builder::task_timeout`](crate::Builder::task_timeout),
    /// [`Pool::apply_async_timeout`](crate::Pool::apply_async_timeout)): its
    /// worker was killed and is replaced; the other tasks go on.
    TimedOut {
        /// The timeout it ran past.
        after: Duration,
        /// The killed worker's pid.
        pid: u32,
    },
    /// Every worker that was given the task runs another build of the
    /// program whose registry of tasks differs from the caller's (a name or
    /// a type means something else there), so none would run it; a remote
    /// backend dead-letters it after its delivery limit.
    VersionSkew(String),
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::WorkerDied {
                pid,
                signal: Some(sig),
            } => write!(
                f,
                "the worker (pid {pid}) died of signal {sig} running this task"
            ),
            TaskError::WorkerDied { pid, signal: None } => {
                write!(f, "the worker (pid {pid}) exited while running this task")
            }
            TaskError::Panicked { message } => write!(f, "the task panicked: {message}"),
            TaskError::Lost { deliveries, reason } => write!(
                f,
                "the task was lost after {deliveries} deliveries (last: {reason})"
            ),
            TaskError::Refused(why) => write!(f, "the worker could not run the task: {why}"),
            TaskError::TimedOut { after, pid } => write!(
                f,
                "the task ran past its timeout of {after:?}; its worker (pid {pid}) was killed"
            ),
            TaskError::VersionSkew(why) => {
                write!(f, "no worker runs a build that can run this task ({why})")
            }
        }
    }
}

impl std::error::Error for TaskError {}

/// Why a pool call, or one task of it, failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// The task itself failed (its [`source`](std::error::Error::source)).
    Task(TaskError),
    /// The result was not ready within the timeout; it can still be had.
    Timeout,
    /// The result was already taken by an earlier `get_timeout`.
    Taken,
    /// The task was cancelled ([`AsyncResult::cancel`](crate::AsyncResult::cancel)).
    Cancelled,
    /// The pool was closed: it takes no more tasks.
    Closed,
    /// The pool was terminated before the task finished.
    Terminated,
    /// The pool is broken — its workers cannot be started, keep dying in
    /// their initializer, or its result machinery failed — and fails every
    /// call.
    Broken(String),
    /// `join()` on a pool that is neither closed nor terminated.
    StillRunning,
    /// A chunk size of 0.
    ZeroChunksize,
    /// A task's arguments or result could not be serialized.
    Codec(String),
    /// The pool runs named tasks (on other machines) and this function is
    /// not in its registry.
    NotRegistered(&'static str),
}

impl From<TaskError> for PoolError {
    fn from(e: TaskError) -> PoolError {
        PoolError::Task(e)
    }
}

impl PoolError {
    /// The task's own failure, if that is what this is.
    pub fn task(&self) -> Option<&TaskError> {
        match self {
            PoolError::Task(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Task(t) => fmt::Display::fmt(t, f),
            PoolError::Timeout => f.write_str("the result was not ready in time"),
            PoolError::Taken => f.write_str("the result was already taken"),
            PoolError::Cancelled => f.write_str("the task was cancelled"),
            PoolError::Closed => f.write_str("the pool is closed"),
            PoolError::Terminated => f.write_str("the pool was terminated"),
            PoolError::Broken(why) => write!(f, "the pool is broken: {why}"),
            PoolError::StillRunning => {
                f.write_str("join needs the pool closed or terminated first")
            }
            PoolError::ZeroChunksize => f.write_str("a chunk size must be at least 1"),
            PoolError::Codec(why) => write!(f, "serialization failed: {why}"),
            PoolError::NotRegistered(name) => write!(
                f,
                "{name} is not a registered task of this pool's workers (add it to the registry)"
            ),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Task(t) => Some(t),
            _ => None,
        }
    }
}

/// Why a pool could not be built.
#[derive(Clone, PartialEq, Eq)]
pub struct BuildError {
    why: BuildWhy,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum BuildWhy {
    NoProcesses,
    ZeroMaxTasks,
    ZeroPrefetch,
    Initializer(String),
    Start(String),
}

impl BuildError {
    pub(crate) fn no_processes() -> BuildError {
        BuildError {
            why: BuildWhy::NoProcesses,
        }
    }

    pub(crate) fn zero_max_tasks() -> BuildError {
        BuildError {
            why: BuildWhy::ZeroMaxTasks,
        }
    }

    pub(crate) fn zero_prefetch() -> BuildError {
        BuildError {
            why: BuildWhy::ZeroPrefetch,
        }
    }

    pub(crate) fn initializer(why: String) -> BuildError {
        BuildError {
            why: BuildWhy::Initializer(why),
        }
    }

    pub(crate) fn start(why: String) -> BuildError {
        BuildError {
            why: BuildWhy::Start(why),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.why {
            BuildWhy::NoProcesses => f.write_str("a pool needs at least one process"),
            BuildWhy::ZeroMaxTasks => f.write_str("maxtasksperchild must be at least 1"),
            BuildWhy::ZeroPrefetch => f.write_str("prefetch must be at least 1"),
            BuildWhy::Initializer(why) => {
                write!(f, "the initializer's arguments cannot be sent: {why}")
            }
            BuildWhy::Start(why) => write!(f, "the workers cannot be started: {why}"),
        }
    }
}

impl fmt::Debug for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildError({self})")
    }
}

impl std::error::Error for BuildError {}
