//! What can go wrong starting or managing a process.

use std::fmt;
use std::io;

use mproc_shm::transfer::TransferError;

/// Why a process operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessError {
    /// `join` (or a similar call) before `start`.
    NotStarted,
    /// `start` on a process that was already started (CPython: "cannot
    /// start a process twice").
    AlreadyStarted,
    /// `set_daemon` after `start` (CPython: "process has already started").
    DaemonAfterStart,
    /// A daemon process may not start children.
    DaemonCannotStart,
    /// The target or its arguments could not be encoded for the child.
    Encode(TransferError),
    /// The OS refused (fork, exec, wait).
    Io(io::Error),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::NotStarted => f.write_str("the process has not been started"),
            ProcessError::AlreadyStarted => f.write_str("a process can only be started once"),
            ProcessError::DaemonAfterStart => {
                f.write_str("the daemon flag cannot change once the process has started")
            }
            ProcessError::DaemonCannotStart => {
                f.write_str("a daemon process is not allowed to start children")
            }
            ProcessError::Encode(e) => write!(f, "cannot send the target to the child: {e}"),
            ProcessError::Io(e) => write!(f, "process operation failed: {e}"),
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Encode(e) => Some(e),
            ProcessError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ProcessError {
    fn from(e: io::Error) -> ProcessError {
        ProcessError::Io(e)
    }
}
