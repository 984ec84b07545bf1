//! mproc: what Python's `multiprocessing` gives Python programs, for Rust —
//! and it keeps working when a process dies.
//!
//! This crate re-exports the mproc crates as modules and their front-door
//! types at its root; it adds no logic of its own. Depend on a single crate
//! (say `mproc-shm`) when that is all you need.
//!
//! # Example
//!
//! A child process puts into a queue that the parent reads; the child is
//! started by the forkserver on Linux (spawn on macOS), and the queue
//! arrives in it working, as an argument:
//!
//! ```no_run
//! use mproc::{Process, Queue};
//!
//! fn produce(q: Queue<String>, n: u32) {
//!     for i in 0..n {
//!         q.put(format!("item {i}")).expect("open");
//!     }
//!     q.close();
//! }
//!
//! let q = Queue::new()?;
//! let mut p = Process::new(produce, (q.clone(), 3)).name("producer");
//! p.start()?;
//! let got: Vec<String> = q.iter().collect::<Result<_, _>>()?;
//! p.join()?;
//! assert_eq!((got.len(), p.exitcode()), (3, Some(0)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Processes
//!
//! - [`spawn`]`(f, args).join()` — a function's value from a child
//!   (`std::thread::spawn` for processes); [`JoinHandle`].
//! - [`Process`] — Python's `Process`: a `fn` of up to eight arguments or a
//!   struct [`Target`] in a child; `start`, `join`, `join_timeout`,
//!   `terminate`, `kill`, exit codes, daemons, `detach`.
//! - [`StartMethod`] — forkserver (the Linux default), spawn (the macOS
//!   default), fork; [`process::set_start_method`].
//! - [`current_process`], [`process::parent_process`],
//!   [`process::active_children`], [`process::cpu_count`].
//! - [`call`] — [`RemoteFn`](call::RemoteFn), how a function is named for
//!   another process of the same build, and named [tasks](call::Task) for
//!   other machines.
//!
//! # Pools
//!
//! - [`Pool`] — `apply`, `apply_async` (an [`AsyncResult`]), `map`,
//!   `map_with`, `starmap`, `imap` / `imap_unordered` (an
//!   [`Imap`](pool::Imap), exact-sized), callbacks, progress hooks; a worker
//!   that dies fails only its own task. [`pool::Builder`] for an
//!   initializer, `maxtasksperchild`, a start method or another
//!   [`Backend`](pool::Backend).
//!
//! # Shared objects in a server process
//!
//! - [`Manager`] — Python's `multiprocessing.Manager()`: a server process
//!   owning shared dicts, lists and values of any serde type, whose proxies
//!   ([`manager::Dict`], [`manager::List`], [`manager::SharedValue`])
//!   travel to other processes; atomic `update` by a registered function;
//!   over a unix socket, or TCP with an authkey. Its death is
//!   `ServerGone`, never a hang.
//!
//! # Across machines
//!
//! - `redis` (feature `redis`) — the same `Pool` and a `JoinableQueue`
//!   across machines, on Redis Streams: workers on any machine, leases,
//!   fencing, dead letters, exactly-once results.
//!
//! # Queues and pipes
//!
//! - [`Queue`], [`SimpleQueue`], [`JoinableQueue`] — multi-producer,
//!   multi-consumer, iterable until closed.
//! - [`Pipe`] / [`Connection`] — two ends; a gone peer is `Disconnected`.
//! - [`queue::wait`] — block until any of several ends is ready.
//!
//! # Synchronization
//!
//! - Crash-robust [`Lock`] (a dead holder's lock is handed on with
//!   `OwnerDied`), [`RLock`], [`Semaphore`], [`BoundedSemaphore`],
//!   [`Condition`], [`Event`], [`Barrier`].
//! - [`Value`] / [`Array`] — shared data under a lock.
//!
//! # Shared memory and files
//!
//! - [`Segment`] — shared memory (memfd / shm / a file); [`Buf`] — frozen
//!   bytes handed to other processes without a copy;
//!   [`RawValue`] / [`RawArray`] without a lock; named [`SharedMemory`].
//! - [`FileDoc`] — a document in a file, updated under a lock and replaced
//!   atomically.
//! - [`shm::transfer`] — how handles and descriptors reach other processes
//!   ([`SharedFd`](shm::transfer::SharedFd) for a socket or a file).
//!
//! # Optional features
//!
//! - `async` — `AsyncResult: IntoFuture`, `Imap: Stream`, `JoinHandle:
//!   IntoFuture`, `Process::join_async`, `Queue::get_async` / `put_async`,
//!   `Connection::recv_async`, under any executor.
//! - `tokio` — with `async`, a child's exit awaited on its pidfd in
//!   tokio's reactor (Linux).
//! - `progress` — indicatif bars for `map` and `imap`, counted in items.
//! - `tracing` — spans and events for processes, pool tasks and workers,
//!   queue close and locks whose holder died.
//! - `redis`, `redis-tls` — `mproc::redis`, and `rediss://` URLs for it.
//!
//! # Modules
//!
//! [`shm`], [`call`], [`sync`], [`process`], [`queue`], [`pool`] (and
//! `redis` with its feature): one per crate, each usable alone.

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

#[doc(inline)]
pub use mproc_shm as shm;

#[doc(inline)]
pub use mproc_call as call;

#[doc(inline)]
pub use mproc_manager as manager;
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
pub use mproc_manager::Manager;
#[doc(no_inline)]
pub use mproc_pool::{AsyncResult, Pool};
#[doc(no_inline)]
pub use mproc_process::{current_process, spawn, JoinHandle, Process, StartMethod, Target};
#[doc(no_inline)]
pub use mproc_queue::{Connection, JoinableQueue, Pipe, Queue, SimpleQueue};
#[doc(no_inline)]
pub use mproc_shm::{Buf, BufMut, FileDoc, RawArray, RawValue, Segment, SharedMemory};
#[doc(no_inline)]
pub use mproc_sync::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, Value,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
