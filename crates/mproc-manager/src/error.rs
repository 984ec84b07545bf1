//! The error of every manager operation.

use std::fmt;
use std::io;
use std::time::Duration;

/// Why a manager operation failed.
///
/// The server's death is [`ServerGone`](ManagerError::ServerGone), reported
/// by every call in flight and every later one — never a hang.
#[derive(Debug)]
#[non_exhaustive]
pub enum ManagerError {
    /// The server has ended (killed, shut down, or the connection to it
    /// broke); the shared objects are gone with it.
    ServerGone,
    /// No answer within the client's call timeout (the server is alive but
    /// busy or stopped, or a remote host is unreachable).
    Timeout(Duration),
    /// Starting the server, connecting to it, or a socket operation failed.
    Io(io::Error),
    /// The TCP authkey challenge failed (a wrong key on either side).
    Auth(String),
    /// A key, value or argument that does not serialize, or bytes from the
    /// server that do not decode as the proxy's types.
    Codec(String),
    /// A value or request larger than the protocol carries (256 MiB).
    TooLarge(usize),
    /// The object does not exist on this server.
    NoSuchObject(u64),
    /// A named object exists with another kind or other types.
    WrongType(String),
    /// A list index past the end.
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The list's length at the time.
        len: u64,
    },
    /// `update` named a task the server's registry does not hold.
    UnknownTask(String),
    /// `update` named a task whose types are not the proxy's.
    TaskTypes(String),
    /// The update task panicked (its message); the entry is unchanged.
    TaskFailed(String),
    /// The peer broke the protocol (a frame that does not decode, too long
    /// a frame, an answer that does not fit the question).
    Protocol(String),
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerError::ServerGone => f.write_str("the manager's server has ended"),
            ManagerError::Timeout(after) => {
                write!(f, "no answer from the manager within {after:?}")
            }
            ManagerError::Io(e) => write!(f, "manager i/o: {e}"),
            ManagerError::Auth(why) => write!(f, "manager authentication failed: {why}"),
            ManagerError::Codec(why) => write!(f, "manager codec: {why}"),
            ManagerError::TooLarge(n) => {
                write!(
                    f,
                    "a manager message of {n} bytes is over the 256 MiB limit"
                )
            }
            ManagerError::NoSuchObject(id) => write!(f, "no shared object {id} on this manager"),
            ManagerError::WrongType(why) => write!(f, "wrong type: {why}"),
            ManagerError::IndexOutOfRange { index, len } => {
                write!(f, "index {index} out of range for a list of length {len}")
            }
            ManagerError::UnknownTask(name) => {
                write!(f, "the manager has no task registered as {name:?}")
            }
            ManagerError::TaskTypes(name) => {
                write!(f, "task {name} takes other types than this call's")
            }
            ManagerError::TaskFailed(msg) => write!(f, "the update task failed: {msg}"),
            ManagerError::Protocol(why) => write!(f, "manager protocol: {why}"),
        }
    }
}

impl std::error::Error for ManagerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ManagerError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ManagerError {
    fn from(e: io::Error) -> ManagerError {
        ManagerError::Io(e)
    }
}
