//! Why a call in another process could not be made.

use std::fmt;

use crate::build::BuildId;

/// Why a function named in one process could not be called in another.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The function was named by another build of the program: its offset
    /// means nothing here.
    OtherBuild {
        /// The sender's build.
        sent: BuildId,
        /// Ours.
        here: BuildId,
    },
    /// The function was named with other argument or result types than the
    /// receiver expects.
    WrongType,
    /// No task of this name is registered here.
    UnknownTask(String),
    /// A task of this name is registered with other argument or result
    /// types.
    TaskTypes(String),
    /// Arguments or a result could not be serialized or deserialized.
    Codec(String),
    /// The function panicked, with this message.
    Panicked(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::OtherBuild { sent, here } => write!(
                f,
                "the call comes from another build of the program ({sent}; this process runs {here})"
            ),
            CallError::WrongType => {
                f.write_str("the function was sent with other argument or result types")
            }
            CallError::UnknownTask(name) => write!(f, "no task named {name:?} is registered"),
            CallError::TaskTypes(name) => write!(
                f,
                "task {name:?} is registered with other argument or result types"
            ),
            CallError::Codec(e) => write!(f, "cannot encode or decode the call: {e}"),
            CallError::Panicked(msg) => write!(f, "the function panicked: {msg}"),
        }
    }
}

impl std::error::Error for CallError {}
