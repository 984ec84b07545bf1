//! Queues and pipes for mproc, over shared-memory rings.
//!
//! - [`Queue`] — Python's `multiprocessing.Queue`: multi-producer,
//!   multi-consumer, FIFO per producer; `put` / `try_put` / `put_timeout`,
//!   `get` / `try_get` / `get_timeout`, `len`, `is_empty`, `is_full`,
//!   `close`.
//! - [`SimpleQueue`] — the minimal form.
//! - [`JoinableQueue`] — a queue plus `task_done` and `join`.
//! - [`Pipe`] — two [`Connection`]s (`duplex`) or a receiver and a sender
//!   (`simplex`): `send` / `recv` / `recv_timeout` / `poll`, raw
//!   `send_bytes` / `recv_bytes` / `recv_bytes_into`; a peer that is gone
//!   gives `Disconnected`, never a hang.
//! - [`wait`] — block until any of several queues or pipe ends is ready
//!   (CPython's `multiprocessing.connection.wait`).
//!
//! Queues and receiving pipe ends are iterable (`for item in &queue`) until
//! closed or disconnected; a message that cannot be read is an `Err` item,
//! never the end. Items are postcard: see
//! [what postcard cannot carry](#serialization).
//!
//! Items are any `Serialize + DeserializeOwned` type, encoded with postcard.
//! Each queue or pipe direction is one ring in an anonymous shared segment;
//! its handles are `Clone` and serde, and arrive working in a child passed
//! them as `Process` arguments (mproc-process), under
//! every start method. Attaching a ring as the wrong item type, or a queue as
//! a pipe, is a clear error.
//!
//! # Async
//!
//! With the `async` feature, `Queue::get_async`, `Queue::put_async` and
//! `Connection::recv_async` wait without blocking the task's thread, under
//! any executor (std `Waker`s only). Each poll makes the non-blocking
//! attempt on the task's own thread; when it finds nothing, one watcher
//! thread per waited-on ring and direction in this process — shared by
//! every waiting future, started only then, gone a second after its last
//! waiter — sleeps on the ring's wake-up word and wakes the tasks. (A
//! futex word in shared memory is not something epoll or kqueue can
//! watch, so some thread must sleep on it; the sync API never starts one.)
//!
//! **Cancel safety.** `get_async` and `recv_async` are cancel-safe: an item
//! is taken only inside a `poll` that returns it, so a future dropped at
//! any point — in a `select!`, on a timeout — loses nothing, and the next
//! get receives the item. A `put_async` dropped before it completes has not
//! put its item (it is dropped with the future). An item larger than the
//! whole ring is put blocking, as it must stream through in pieces.
//!
//! # Divergences from CPython
//!
//! - `put` serializes in the caller and writes into shared memory with
//!   backpressure. There is no feeder thread: a child that puts and exits
//!   loses nothing and exits at once, and an item that cannot be serialized
//!   is an error of that `put`.
//! - A process killed mid-put never exposes a partial item, and a consumer
//!   killed while blocked leaves the queue usable; see the ring's crash
//!   story below and [`Stats::abandoned`].
//! - Queues carry data, not mproc handles: pass handles as process
//!   arguments.
//!
//! # Examples
//!
//! ```
//! use mproc_queue::{JoinableQueue, Queue};
//!
//! let q: Queue<(u32, String)> = Queue::bounded(64)?;
//! q.put((1, "one".into()))?;
//! assert_eq!(q.get()?, (1, "one".into()));
//!
//! let jobs = JoinableQueue::new()?;
//! for n in 0..3u64 {
//!     jobs.put(n)?;
//! }
//! while let Ok(n) = jobs.try_get() {
//!     let _ = n * n; // the work
//!     jobs.task_done()?;
//! }
//! jobs.join();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Serialization
//!
//! Items are encoded with postcard, which is compact because it is not
//! self-describing. Types that deserialize with `deserialize_any`
//! (`serde_json::Value`, `#[serde(untagged)]` enums, `#[serde(flatten)]`)
//! cannot be read back, and fields skipped only sometimes
//! (`skip_serializing_if`) shift everything after them. Encode such a value
//! first (`serde_json::to_string`) or drop the conditional skip. Errors name
//! the type and say this; in debug builds `put` and `send` check that every
//! value of up to 1 MiB encoded reads back as itself and refuse one that
//! does not, at the sender.
//!
//! # The ring
//!
//! Layout, protocol, orderings and crash story (the same text documents the
//! ring's module in the source):
//!
#![doc = include_str!("ring.md")]
//!
//! # Platform support
//!
//! Linux and macOS: the rings sleep on mproc-sync's wait layer (futex,
//! `os_sync_wait_on_address`, or its portable fallback).

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "async")]
mod asyncs;
mod codec;
mod error;
pub mod frame;
mod mem;
mod pipe;
mod queue;
mod ring;
#[cfg(test)]
mod ring_model;
mod select;
mod sys;

pub use error::{
    BadMessage, EncodeError, GetError, GetTimeoutError, PutError, RecvError, RecvTimeoutError,
    SendError, TryGetError, TryPutError,
};
pub use frame::FrameError;
pub use pipe::{Connection, Incoming, Pipe, PIPE_CAPACITY};
pub use queue::{
    IntoIter, Iter, JoinableQueue, Queue, SimpleQueue, Stats, TaskDoneError, TryIter,
    DEFAULT_CAPACITY,
};
pub use select::{wait, Waitable};

#[cfg(feature = "async")]
pub use asyncs::{Get, Put, Recv};
