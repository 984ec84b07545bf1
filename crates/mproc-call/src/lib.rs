//! One typed way to call a function in another process, for mproc.
//!
//! - [`RemoteFn`] — a function named so that another process of the *same
//!   build* can call it: its code offset, the [`BuildId`] of the binary, and
//!   a fingerprint of its types, checked by [`RemoteFn::resolve`] — the one
//!   place in mproc where an address from another process becomes code.
//!   `Process`, `spawn` and `Pool` send every function this way.
//! - [`ContextFn`] — the same for `fn(&C, A) -> R`: a function of a shared
//!   context and one item (a pool's `map_with`).
//! - [`Callable`] — what can be sent: `fn` items (or closures that capture
//!   nothing) of up to eight arguments, whose arguments travel as one value.
//! - [`catch_panic`] — a panic turned into its message, the same way for
//!   every caller.
//! - [`Task`], [`Registry`], [`task!`] — named tasks for *other machines*:
//!   a stable name and a type fingerprint, never a pointer.
//!
//! Arguments and results of calls to processes of this machine go through
//! [`mproc_shm::transfer`], so they may carry mproc handles (their file
//! descriptors travel with them).
//!
//! # Examples
//!
//! ```
//! use mproc_call::{BuildId, CallError, RemoteFn};
//!
//! fn scale(x: f64, by: f64) -> f64 {
//!     x * by
//! }
//!
//! let f = RemoteFn::new(scale);
//! assert_eq!(f.call((2.0, 1.5))?, 3.0);
//!
//! // A call named by another build is refused, never jumped to.
//! let other = f.with_build_id(BuildId::from_bytes([7; 16]));
//! assert!(matches!(other.call((2.0, 1.5)), Err(CallError::OtherBuild { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Platform support
//!
//! Linux reads the build id from the executable's `.note.gnu.build-id`
//! (through `dl_iterate_phdr`), macOS from its `LC_UUID`; a binary linked
//! without either is identified by a hash of the executable file.

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod sys;

mod build;
mod error;
mod func;
mod panic;
mod remote;
mod task;

pub use build::BuildId;
pub use error::CallError;
pub use func::Callable;
pub use panic::{catch_panic, panic_message};
pub use remote::{ContextFn, RemoteFn};
pub use task::{type_fingerprint, Registry, Task};
