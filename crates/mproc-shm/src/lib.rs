//! File-backed IPC for mproc: memory and documents that several processes share.
//!
//! - [`Segment`] — shared memory mapped `MAP_SHARED` by every process holding
//!   a handle: anonymous (memfd on Linux, an unlinked shm object on macOS) or
//!   backed by a file you name. Fixed size, reserved at creation.
//! - [`Buf`] / [`BufMut`] — zero-copy buffers: filled once, frozen (sealed:
//!   no process can change them after), then handed to other processes —
//!   as a pool task's argument or result, a child's argument — as a
//!   descriptor, never copied.
//! - [`transfer`] — how handles reach other processes: serialize them with
//!   [`transfer::encode`], carry the descriptors by inheritance
//!   ([`transfer::spawn_inheriting`]) or `SCM_RIGHTS` ([`transfer::send`]).
//! - [`RawValue`] / [`RawArray`] — plain-old-data in shared memory, without a
//!   lock (Python's `RawValue` / `RawArray`).
//! - [`SharedMemory`] — named blocks that unrelated processes open by name
//!   (Python's `multiprocessing.shared_memory`).
//! - [`ProcessIdent`] — a process named by pid *and* start time, so that a
//!   reused pid is never taken for a dead process; the liveness probe that
//!   every crate of mproc uses.
//! - [`fault`] — named kill points for tests (the `failpoints` feature).
//! - `waker` — with the `async` feature: one watcher thread per watched
//!   object turns cross-process wake-ups into std `Waker` calls, for the
//!   async ends of queues, pipes and processes.
//! - [`FileDoc`] — a document in a file, read under a shared lock and replaced
//!   atomically under an exclusive one; a writer killed mid-update leaves the
//!   old document or the new one, never a torn one.
//!
//! # Examples
//!
//! A segment handed to a child process keeps pointing at the same memory:
//!
//! ```no_run
//! use mproc_shm::{transfer, RawValue};
//! use std::process::Command;
//!
//! let counter = RawValue::new(0u64)?;
//! let msg = transfer::encode(&counter)?;
//! // The child rebuilds the table from MPROC_INHERITED_FDS and decodes the
//! // bytes (passed here as an argument) with `transfer::decode`.
//! let mut child = transfer::spawn_inheriting(
//!     Command::new("./child").arg(hex(&msg.bytes)),
//!     &msg.fds,
//! )?;
//! child.wait()?;
//! println!("the child counted to {}", counter.get());
//! # fn hex(b: &[u8]) -> String { b.iter().map(|x| format!("{x:02x}")).collect() }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Platform support
//!
//! Linux and macOS. On Linux anonymous segments are memfds and file-backed
//! ones are reserved with `fallocate`. On macOS anonymous segments are shm
//! objects unlinked right after creation, files are reserved with
//! `F_PREALLOCATE`, and shm sizes are rounded up to whole pages.

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod sys;

mod buf;
mod doc;
pub mod fault;
pub mod handoff;
mod ident;
mod named;
mod segment;
pub mod transfer;
mod value;
#[cfg(feature = "async")]
pub mod waker;

pub use buf::{Buf, BufMut, CastError};
pub use doc::{DocError, FileDoc, Format, Json, Postcard};
pub use ident::ProcessIdent;
pub use named::{SharedMemory, SharedMemoryOptions, MAX_NAME_LEN};
pub use segment::{RangeError, Segment};
pub use value::{IndexError, RawArray, RawValue};

/// Re-exported so that `RawValue<T>` users can derive [`bytemuck::Pod`] for
/// their own structs.
pub use bytemuck;
