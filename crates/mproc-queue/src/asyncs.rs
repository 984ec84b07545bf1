//! The async ends (the `async` feature): [`Queue::get_async`],
//! [`Queue::put_async`], [`Connection::recv_async`] and their futures.
//!
//! Runtime-agnostic: the futures use std `Waker`s only and work under any
//! executor (tokio, smol, `futures::executor`). Each poll makes the
//! non-blocking attempt (`try_get`, `try_put`, a receive that does not
//! wait) on the task's own thread; when it finds nothing, the ring's
//! watcher thread — one per ring and direction in this process, shared by
//! every waiting future, started only then — sleeps on the ring's wake-up
//! word and wakes the task (see `mproc_shm::waker` for the design and its
//! costs).
//!
//! # Cancel safety
//!
//! [`Get`] and [`Recv`] are cancel-safe: an item is taken only inside a
//! `poll` that returns it, so dropping the future — in a `select!`, on a
//! timeout — never loses an item; the next get receives it. [`Put`] is
//! cancel-safe as tokio's `Sender::send` is: dropped before it completes,
//! the item was not put (and is dropped with the future).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use mproc_shm::waker::{wake_when, Key, ReadyFn, Registration};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::error::{EncodeError, GetError, PutError, RecvError, TryGetError};
use crate::pipe::Connection;
use crate::queue::Queue;
use crate::ring::{PutFail, Ring, Wait};

/// Which condition of a ring a watcher waits for.
const DATA: u32 = 0;
const ROOM: u32 = 1;

fn key(ring: &Ring, condition: u32) -> Key {
    Key {
        object: ring.segment().as_ptr() as usize,
        condition,
    }
}

/// The future of [`Queue::get_async`]: the oldest item, or why there is
/// none. Cancel-safe (see the [crate docs](crate#async)).
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Get<'a, T> {
    queue: &'a Queue<T>,
    registration: Option<Registration>,
}

impl<T: Serialize + DeserializeOwned> Future for Get<'_, T> {
    type Output = Result<T, GetError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.queue.try_get() {
            Ok(item) => Poll::Ready(Ok(item)),
            Err(TryGetError::Closed) => Poll::Ready(Err(GetError::Closed)),
            Err(TryGetError::Bad(e)) => Poll::Ready(Err(GetError::Bad(e))),
            Err(TryGetError::Empty) => {
                let ring = this.queue.ring().clone();
                let k = key(&ring, DATA);
                let ready: ReadyFn = Arc::new(move |d| ring.poll(Wait::timeout(d), None));
                wake_when(&mut this.registration, k, cx.waker(), ready);
                Poll::Pending
            }
        }
    }
}

/// The future of [`Queue::put_async`]. Dropped before it completes, the
/// item was not put.
#[must_use = "futures do nothing unless awaited"]
pub struct Put<'a, T> {
    queue: &'a Queue<T>,
    item: Option<T>,
    /// The item's bytes, encoded at the first poll.
    bytes: Option<Vec<u8>>,
    /// The handoff ticket of an item with handles, until it is put.
    ticket: Option<mproc_shm::handoff::Ticket>,
    registration: Option<Registration>,
}

impl<T> std::fmt::Debug for Put<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Put")
            .field("queue", self.queue)
            .field("done", &self.item.is_none())
            .finish()
    }
}

impl<T> Unpin for Put<'_, T> {}

impl<T> Drop for Put<'_, T> {
    fn drop(&mut self) {
        // Dropped (or failed) before the item was put: its handles are not
        // for anyone.
        if let Some(t) = self.ticket.take() {
            mproc_shm::handoff::cancel(&t);
        }
    }
}

impl<T: Serialize + DeserializeOwned> Future for Put<'_, T> {
    type Output = Result<(), PutError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(item) = this.item.take() else {
            // Polled after it completed: nothing left to put.
            return Poll::Ready(Ok(()));
        };
        if this.bytes.is_none() {
            let mut buf = Vec::new();
            match codec::encode(&item, &mut buf) {
                Ok(ticket) => this.ticket = ticket,
                Err(message) => {
                    return Poll::Ready(Err(PutError::Encode(EncodeError {
                        value: item,
                        message,
                    })))
                }
            }
            this.bytes = Some(buf);
        }
        let bytes = this.bytes.as_deref().unwrap_or_default();
        let ring = this.queue.ring();
        match ring.put(bytes, Wait::No, None) {
            Ok(()) => {
                // Put: its handles now belong to whoever takes it.
                this.ticket = None;
                Poll::Ready(Ok(()))
            }
            Err(PutFail::Corrupt) => Poll::Ready(Err(PutError::Corrupt(item))),
            Err(PutFail::Closed | PutFail::Gone) => Poll::Ready(Err(PutError::Closed(item))),
            Err(PutFail::Full) => {
                let need = ring.footprint(bytes.len());
                if need > ring.capacity() {
                    // Larger than the whole ring: it can only stream through
                    // in pieces as the consumers read, which a put without
                    // waiting cannot do. Put it here, blocking this task's
                    // thread while it streams (documented on put_async).
                    return Poll::Ready(this.queue.put(item));
                }
                this.item = Some(item);
                let waiting = ring.clone();
                let k = key(&waiting, ROOM);
                let ready: ReadyFn = Arc::new(move |d| waiting.poll_room(need, Wait::timeout(d)));
                wake_when(&mut this.registration, k, cx.waker(), ready);
                Poll::Pending
            }
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Takes the oldest item, as [`get`](Queue::get), without blocking the
    /// task's thread (the `async` feature).
    ///
    /// Cancel-safe: dropping the future before it is ready loses no item.
    /// While it waits, a watcher thread shared by every waiter on this
    /// queue sleeps on the queue's wake-up word (see the
    /// [crate docs](crate#async)).
    ///
    /// # Errors
    ///
    /// As [`get`](Queue::get): [`GetError::Closed`] once the queue is closed
    /// and empty, [`GetError::Bad`] for a message that cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_executor::block_on(async {
    /// let q = mproc_queue::Queue::new()?;
    /// q.put(7u32)?;
    /// assert_eq!(q.get_async().await?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn get_async(&self) -> Get<'_, T> {
        Get {
            queue: self,
            registration: None,
        }
    }

    /// Puts an item, as [`put`](Queue::put), waiting for room without
    /// blocking the task's thread (the `async` feature).
    ///
    /// An item larger than the whole ring (it streams through in pieces as
    /// consumers read) is put blocking, on the task's thread.
    ///
    /// # Errors
    ///
    /// As [`put`](Queue::put): [`PutError::Closed`], [`PutError::Encode`],
    /// [`PutError::Corrupt`], with the item given back.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_executor::block_on(async {
    /// let q = mproc_queue::Queue::bounded(1)?;
    /// q.put_async("a".to_string()).await?;
    /// assert_eq!(q.get()?, "a");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn put_async(&self, item: T) -> Put<'_, T> {
        Put {
            queue: self,
            item: Some(item),
            bytes: None,
            ticket: None,
            registration: None,
        }
    }
}

/// The future of [`Connection::recv_async`]: the next message, or why
/// there is none. Cancel-safe (see the [crate docs](crate#async)).
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Recv<'a, T> {
    conn: &'a Connection<T>,
    registration: Option<Registration>,
}

impl<T: Serialize + DeserializeOwned> Future for Recv<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.conn.try_recv_now() {
            Some(r) => Poll::Ready(r),
            None => {
                let Some((ring, ready)) = this.conn.readiness() else {
                    return Poll::Ready(Err(RecvError::NotReadable));
                };
                wake_when(&mut this.registration, key(&ring, DATA), cx.waker(), ready);
                Poll::Pending
            }
        }
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Receives the next item, as [`recv`](Connection::recv), without
    /// blocking the task's thread (the `async` feature).
    ///
    /// Cancel-safe: dropping the future before it is ready loses no
    /// message.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv): [`RecvError::Disconnected`] once the
    /// peer is gone and everything it sent is read,
    /// [`RecvError::NotReadable`] on a send-only end, [`RecvError::Bad`].
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_executor::block_on(async {
    /// let (rx, tx) = mproc_queue::Pipe::<String>::simplex()?;
    /// tx.send("ping".into())?;
    /// assert_eq!(rx.recv_async().await?, "ping");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn recv_async(&self) -> Recv<'_, T> {
        Recv {
            conn: self,
            registration: None,
        }
    }
}
