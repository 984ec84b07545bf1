//! How a child is started: the [`StartMethod`] and the process-wide
//! default.

use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

/// How a child process is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StartMethod {
    /// Re-execute the current binary; the child starts fresh and receives
    /// its target and handles by transfer. Safe in any program.
    Spawn,
    /// `fork()` without `exec`: fastest, and the child inherits the whole
    /// parent. Safe only in single-threaded programs: a lock held by another
    /// thread at the fork stays held for ever in the child. (Not stdout's
    /// or stderr's: the start holds both across the fork, after flushing
    /// stdout, so that the child's copies are free and empty — CPython
    /// flushes before every start too. It takes stdout's, then stderr's: a
    /// thread that prints to stdout while it holds stderr's lock would
    /// deadlock with it.)
    Fork,
    /// Ask a single-threaded helper, started on first use, to fork the
    /// child: fork's speed with spawn's safety. The default on Linux.
    Forkserver,
}

/// The process-wide default: 0 until chosen, else a method's code. An
/// atomic rather than a `OnceLock`, so that a forked child never waits on an
/// initialization another thread of its parent had begun.
static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

impl StartMethod {
    pub(crate) fn code(self) -> u8 {
        match self {
            StartMethod::Spawn => 1,
            StartMethod::Fork => 2,
            StartMethod::Forkserver => 3,
        }
    }

    fn from_code(code: u8) -> Option<StartMethod> {
        match code {
            1 => Some(StartMethod::Spawn),
            2 => Some(StartMethod::Fork),
            3 => Some(StartMethod::Forkserver),
            _ => None,
        }
    }

    fn platform_default() -> StartMethod {
        if cfg!(target_os = "linux") {
            StartMethod::Forkserver
        } else {
            StartMethod::Spawn
        }
    }
}

/// Fork in a multi-threaded parent is allowed (test harnesses are
/// multi-threaded), with a one-time warning through `tracing` when that
/// feature is on: CPython 3.12's DeprecationWarning.
pub(crate) fn warn_if_threaded() {
    #[cfg(feature = "tracing")]
    {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        // Counting threads is a system call: not made when nobody listens.
        if WARNED.load(Ordering::Relaxed) || !tracing::enabled!(tracing::Level::WARN) {
            return;
        }
        let threads = crate::sys::thread_count().unwrap_or(1);
        if threads > 1 && !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                threads,
                "StartMethod::Fork in a multi-threaded process: a lock held by another \
                 thread at the fork stays held in the child (use Forkserver or Spawn)"
            );
        }
    }
}

/// Sets the process-wide default start method, once.
///
/// # Errors
///
/// Returns the method already in force when one was set before (or when a
/// process was already started with the default).
pub fn set_start_method(method: StartMethod) -> Result<(), StartMethod> {
    match DEFAULT_METHOD.compare_exchange(0, method.code(), Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(()),
        Err(now) => Err(StartMethod::from_code(now).unwrap_or(method)),
    }
}

/// The default start method: [`StartMethod::Forkserver`] on Linux and
/// [`StartMethod::Spawn`] on macOS (as Python 3.14), unless
/// [`set_start_method`] chose another.
pub fn get_start_method() -> StartMethod {
    let _ = set_start_method(StartMethod::platform_default());
    StartMethod::from_code(DEFAULT_METHOD.load(Ordering::Acquire))
        .unwrap_or_else(StartMethod::platform_default)
}
