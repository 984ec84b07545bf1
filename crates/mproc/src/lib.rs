//! mproc: what Python's `multiprocessing` gives Python programs, for Rust —
//! and it keeps working when a process dies.
//!
//! This crate re-exports the mproc crates as modules and their front-door
//! types at its root; it adds no logic of its own. Depend on a single crate
//! (say `mproc-shm`) when that is all you need.
//!
//! # Modules
//!
//! - [`shm`] — file-backed IPC: shared [`Segment`]s, handle
//!   [`transfer`](shm::transfer), [`RawValue`] / [`RawArray`], named
//!   [`SharedMemory`], and [`FileDoc`], the locked, atomically replaced
//!   document.
//! - [`process`] — [`spawn`]`(f, args).join()` for a function's value from
//!   a child (`std::thread::spawn` for processes), and [`Process`]: a `fn`
//!   of up to eight arguments or a struct target in a child, started by
//!   spawn, forkserver or fork; join, terminate, exit codes, daemons,
//!   reaping.
//! - [`call`] — [`RemoteFn`](call::RemoteFn), the checked name of a
//!   function another process of the same build can call, and named
//!   [tasks](call::Task) for other machines.
//! - [`sync`] — process-shared, crash-robust [`Lock`], [`RLock`],
//!   [`Semaphore`], [`BoundedSemaphore`], [`Condition`], [`Event`],
//!   [`Barrier`], and the locked [`Value`] / [`Array`].
//! - [`queue`] — [`Queue`], [`SimpleQueue`], [`JoinableQueue`] and
//!   [`Pipe`] / [`Connection`] over crash-safe shared-memory rings.
//! - [`pool`] — [`Pool`]: apply, apply_async with callbacks, map, imap,
//!   starmap; a worker that dies fails only its own task.
//! - `redis` (feature `redis`) — the same `Pool` and a `JoinableQueue`
//!   across machines, on Redis Streams: workers on any machine, leases,
//!   fencing, dead letters, exactly-once results.
//!
//! # Example
//!
//! ```
//! use mproc::{FileDoc, RawArray};
//!
//! let squares = RawArray::<u64>::new(4)?;
//! for i in 0..4 {
//!     squares.set(i, (i * i) as u64)?;
//! }
//! assert_eq!(squares.to_vec(), [0, 1, 4, 9]);
//! # let _ = std::marker::PhantomData::<FileDoc<()>>;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

#[doc(inline)]
pub use mproc_shm as shm;

#[doc(inline)]
pub use mproc_call as call;

#[doc(inline)]
pub use mproc_pool as pool;
#[doc(inline)]
pub use mproc_process as process;
#[doc(inline)]
pub use mproc_queue as queue;
#[cfg(feature = "redis")]
#[doc(inline)]
pub use mproc_redis as redis;
#[doc(inline)]
pub use mproc_sync as sync;

#[doc(no_inline)]
pub use mproc_pool::{AsyncResult, Pool};
#[doc(no_inline)]
pub use mproc_process::{current_process, spawn, JoinHandle, Process, StartMethod, Target};
#[doc(no_inline)]
pub use mproc_queue::{Connection, JoinableQueue, Pipe, Queue, SimpleQueue};
#[doc(no_inline)]
pub use mproc_shm::{FileDoc, RawArray, RawValue, Segment, SharedMemory};
#[doc(no_inline)]
pub use mproc_sync::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, Value,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
