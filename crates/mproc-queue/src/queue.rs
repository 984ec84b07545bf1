//! `Queue`, `SimpleQueue` and `JoinableQueue`.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Duration;

use mproc_sync::wait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, with_buf};
use crate::error::{EncodeError, GetError, GetTimeoutError, PutError, TryGetError, TryPutError};
use crate::ring::{self, GetFail, Kind, PutFail, Ring, Wait};
use mproc_shm::handoff;

/// The data area of a queue made by [`Queue::new`]: 2 MiB.
pub const DEFAULT_CAPACITY: usize = 2 << 20;

/// A multi-producer, multi-consumer FIFO queue between processes: Python's
/// `multiprocessing.Queue`.
///
/// Items are serialized with postcard, in the caller, straight into a ring
/// in shared memory: there is no feeder thread, so a process that puts and
/// exits at once loses nothing, and an item that cannot be serialized is an
/// error of `put` itself (both differ from CPython, on purpose). `put`
/// blocks while the ring has no room (and, for [`bounded`](Queue::bounded)
/// queues, while `maxsize` items wait). An item larger than the ring streams
/// through it in pieces.
///
/// A handle is `Clone` and serde: clone it for threads, pass it as a
/// `Process` argument (mproc-process) for children.
/// Items are FIFO per producer; producers take turns whole items at a time.
///
/// # Examples
///
/// ```
/// use mproc_queue::{Queue, TryGetError};
///
/// let q: Queue<String> = Queue::new()?;
/// q.put("hello".to_string())?;
/// q.put("world".to_string())?;
/// assert_eq!(q.len(), 2);
/// assert_eq!(q.get()?, "hello");
/// q.close();
/// assert_eq!(q.get()?, "world"); // a closed queue drains, then reports Closed
/// assert_eq!(q.try_get(), Err(TryGetError::Closed));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    ring: Ring,
    _items: PhantomData<fn(T) -> T>,
}

/// What a queue has seen go wrong, counted across every process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages given up on: a producer died or timed out in the middle of a
    /// large item, a consumer died in the middle of reading one, or a
    /// corrupt frame was discarded.
    pub abandoned: u64,
    /// Bytes in the ring now, chunk headers included (a large item being
    /// put shows here before it counts in `len`).
    pub bytes_queued: usize,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            ring: self.ring.clone(),
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Queue").field(&self.ring).finish()
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ring.segment().serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        attach::<T, D>(d, Kind::Queue).map(Queue::from_ring)
    }
}

fn attach<'de, T, D: serde::Deserializer<'de>>(d: D, kind: Kind) -> Result<Ring, D::Error> {
    let seg = mproc_shm::Segment::deserialize(d)?;
    Ring::attach(seg, kind, ring::fingerprint::<T>()).map_err(mproc_shm::transfer::de_error)
}

impl<T> Queue<T> {
    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    fn from_ring(ring: Ring) -> Queue<T> {
        Queue {
            ring,
            _items: PhantomData,
        }
    }

    /// Items in the queue (CPython's `qsize`): whole items, across every
    /// process. Exact at the moment it is read.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::new()?;
    /// q.put(1u8)?;
    /// q.put(2u8)?;
    /// assert_eq!(q.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.ring.len() as usize
    }

    /// Whether the queue holds no item.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::<u8>::new()?;
    /// assert!(q.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ring.len() == 0
    }

    /// Whether a bounded queue holds `maxsize` items (never for a queue
    /// without an item limit; its ring may still be out of room).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::bounded(1)?;
    /// q.put(1u8)?;
    /// assert!(q.is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.ring.maxsize().is_some_and(|m| self.ring.len() >= m)
    }

    /// The item limit of a [`bounded`](Queue::bounded) queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::<u8>::bounded(8)?;
    /// assert_eq!(q.maxsize(), Some(8));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        self.ring.maxsize().map(|m| m as usize)
    }

    /// The size of the ring's data area, in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::<u8>::with_capacity_bytes(1000)?;
    /// assert_eq!(q.capacity_bytes(), 1024); // a power of two
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity_bytes(&self) -> usize {
        self.ring.capacity()
    }

    /// Closes the queue for every process: later puts fail with `Closed`;
    /// gets drain what is left, then fail with `Closed` instead of blocking.
    /// Blocked puts and gets wake up. Calling it again does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use mproc_queue::{PutError, Queue};
    ///
    /// let q = Queue::new()?;
    /// q.put(1u8)?;
    /// q.close();
    /// assert!(matches!(q.put(2), Err(PutError::Closed(2))));
    /// assert_eq!(q.get()?, 1); // what was in it drains
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.ring.close();
    }

    /// Whether the queue was closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::<u8>::new()?;
    /// q.close();
    /// assert!(q.is_closed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }

    /// What went wrong so far.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::<u8>::new()?;
    /// assert_eq!(q.stats().abandoned, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        Stats {
            abandoned: self.ring.abandoned(),
            bytes_queued: self.ring.bytes_queued(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue with no item limit and a [`DEFAULT_CAPACITY`] ring.
    ///
    /// # Errors
    ///
    /// The OS error when the shared segment cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// let q: mproc_queue::Queue<String> = mproc_queue::Queue::new()?;
    /// q.put("hi".into())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> io::Result<Queue<T>> {
        Queue::with_capacity_bytes(DEFAULT_CAPACITY)
    }

    /// A queue that holds at most `maxsize` items: `put` blocks while it is
    /// full.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for `maxsize` 0 or above 2^24 - 1; the OS error when
    /// the segment cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// use mproc_queue::{Queue, TryPutError};
    ///
    /// let q = Queue::bounded(1)?;
    /// q.put(1u8)?;
    /// assert!(matches!(q.try_put(2), Err(TryPutError::Full(2))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bounded(maxsize: usize) -> io::Result<Queue<T>> {
        if maxsize == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a bounded queue needs a maxsize of at least 1",
            ));
        }
        Queue::with_limits(DEFAULT_CAPACITY, maxsize as u64, Kind::Queue)
    }

    /// A queue with no item limit whose ring has `bytes` of data area
    /// (rounded up to a power of two, at least 64 B, at most 64 MiB). Items
    /// larger than the ring still pass, in pieces.
    ///
    /// # Errors
    ///
    /// `InvalidInput` above 64 MiB; the OS error when the segment cannot be
    /// made.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::with_capacity_bytes(4096)?;
    /// q.put(vec![0u8; 1000])?;
    /// assert_eq!((q.capacity_bytes(), q.get()?.len()), (4096, 1000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_capacity_bytes(bytes: usize) -> io::Result<Queue<T>> {
        Queue::with_limits(bytes, 0, Kind::Queue)
    }

    fn with_limits(bytes: usize, maxsize: u64, kind: Kind) -> io::Result<Queue<T>> {
        Ring::new(kind, ring::fingerprint::<T>(), bytes, maxsize).map(Queue::from_ring)
    }

    fn put_with(&self, item: T, how: Wait) -> Result<(), (T, Result<PutFail, String>)> {
        with_buf(|buf| {
            let ticket = match codec::encode(&item, buf) {
                Ok(ticket) => ticket,
                Err(e) => return Err((item, Err(e))),
            };
            self.ring.put(buf, how, None).map_err(|f| {
                // Not put: its handles are not for anyone.
                if let Some(t) = ticket {
                    handoff::cancel(&t);
                }
                (item, Ok(f))
            })
        })
    }

    /// Puts an item, waiting for room as long as it takes.
    ///
    /// # Errors
    ///
    /// [`PutError::Closed`] when the queue is (or gets) closed;
    /// [`PutError::Encode`] when the item cannot be serialized. Either way the
    /// item is given back.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::new()?;
    /// q.put((1u32, "one".to_string()))?;
    /// assert_eq!(q.get()?, (1, "one".to_string()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, Wait::FOREVER)
            .map_err(|(value, e)| match e {
                Ok(PutFail::Corrupt) => PutError::Corrupt(value),
                Ok(_) => PutError::Closed(value),
                Err(message) => PutError::Encode(EncodeError { value, message }),
            })
    }

    /// Puts an item if there is room now.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`] when there is no room (an item larger than the
    /// free space never fits here: use `put`), `Closed`, `Encode`.
    ///
    /// # Examples
    ///
    /// ```
    /// use mproc_queue::{Queue, TryPutError};
    ///
    /// let q = Queue::bounded(1)?;
    /// q.try_put(1u8)?;
    /// assert!(matches!(q.try_put(2), Err(TryPutError::Full(2))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_put(&self, item: T) -> Result<(), TryPutError<T>> {
        self.put_with(item, Wait::No).map_err(try_put_error)
    }

    /// Puts an item, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`] after the timeout, `Closed`, `Encode`. An item
    /// larger than the ring that timed out half-way is abandoned (counted
    /// in [`stats`](Queue::stats)), never delivered in part.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use mproc_queue::{Queue, TryPutError};
    ///
    /// let q = Queue::bounded(1)?;
    /// q.put(1u8)?;
    /// let r = q.put_timeout(2, Duration::from_millis(10));
    /// assert!(matches!(r, Err(TryPutError::Full(2))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), TryPutError<T>> {
        self.put_with(item, Wait::timeout(timeout))
            .map_err(try_put_error)
    }

    fn get_with(&self, how: Wait) -> Result<T, GetFail> {
        with_buf(|buf| {
            self.ring.get(buf, how, None)?;
            codec::decode(buf).map_err(|e| {
                // Nobody will be handed this item to mark done.
                self.ring.count_done(1);
                GetFail::Bad(e)
            })
        })
    }

    /// Takes the oldest item, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`] when the queue is closed and empty;
    /// [`GetError::Bad`] for a message that cannot be read (the queue goes on).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::new()?;
    /// q.put(7u64)?;
    /// assert_eq!(q.get()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T, GetError> {
        self.get_with(Wait::FOREVER).map_err(|f| match f {
            GetFail::Bad(e) => GetError::Bad(e),
            GetFail::Closed | GetFail::Gone | GetFail::Empty => GetError::Closed,
        })
    }

    /// Takes the oldest item if there is one now.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`], [`TryGetError::Closed`] (closed and empty),
    /// [`TryGetError::Bad`].
    ///
    /// # Examples
    ///
    /// ```
    /// use mproc_queue::{Queue, TryGetError};
    ///
    /// let q = Queue::<u8>::new()?;
    /// assert_eq!(q.try_get(), Err(TryGetError::Empty));
    /// q.close();
    /// assert_eq!(q.try_get(), Err(TryGetError::Closed));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.get_with(Wait::No).map_err(|f| match f {
            GetFail::Empty => TryGetError::Empty,
            GetFail::Closed | GetFail::Gone => TryGetError::Closed,
            GetFail::Bad(e) => TryGetError::Bad(e),
        })
    }

    /// Takes the oldest item, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`GetTimeoutError::Timeout`] after about `timeout`,
    /// [`GetTimeoutError::Closed`], [`GetTimeoutError::Bad`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use mproc_queue::{GetTimeoutError, Queue};
    ///
    /// let q = Queue::<u8>::new()?;
    /// assert_eq!(q.get_timeout(Duration::from_millis(10)), Err(GetTimeoutError::Timeout));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_with(Wait::timeout(timeout)).map_err(|f| match f {
            GetFail::Empty => GetTimeoutError::Timeout,
            GetFail::Closed | GetFail::Gone => GetTimeoutError::Closed,
            GetFail::Bad(e) => GetTimeoutError::Bad(e),
        })
    }
}

fn try_put_error<T>((value, e): (T, Result<PutFail, String>)) -> TryPutError<T> {
    match e {
        Ok(PutFail::Full) => TryPutError::Full(value),
        Ok(PutFail::Corrupt) => TryPutError::Corrupt(value),
        Ok(_) => TryPutError::Closed(value),
        Err(message) => TryPutError::Encode(EncodeError { value, message }),
    }
}

/// The minimal queue: Python's `multiprocessing.SimpleQueue` — `put`,
/// `get`, `is_empty`, `close`, no item limit.
///
/// # Examples
///
/// ```
/// let q = mproc_queue::SimpleQueue::new()?;
/// q.put(7u32)?;
/// assert!(!q.is_empty());
/// assert_eq!(q.get()?, 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SimpleQueue<T>(Queue<T>);

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue(self.0.clone())
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimpleQueue").field(&self.0.ring).finish()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Queue::deserialize(d).map(SimpleQueue)
    }
}

impl<T> SimpleQueue<T> {
    pub(crate) fn inner(&self) -> &Queue<T> {
        &self.0
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A queue with no item limit and a [`DEFAULT_CAPACITY`] ring.
    ///
    /// # Errors
    ///
    /// The OS error when the shared segment cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::SimpleQueue::<u8>::new()?;
    /// assert!(q.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> io::Result<SimpleQueue<T>> {
        Queue::new().map(SimpleQueue)
    }

    /// As [`Queue::put`].
    ///
    /// # Errors
    ///
    /// As [`Queue::put`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::SimpleQueue::new()?;
    /// q.put("x".to_string())?;
    /// assert_eq!(q.get()?, "x");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.0.put(item)
    }

    /// As [`Queue::get`].
    ///
    /// # Errors
    ///
    /// As [`Queue::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::SimpleQueue::new()?;
    /// q.put(3u8)?;
    /// assert_eq!(q.get()?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T, GetError> {
        self.0.get()
    }

    /// Whether the queue holds no item.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::SimpleQueue::new()?;
    /// q.put(1u8)?;
    /// assert!(!q.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As [`Queue::close`].
    ///
    /// # Examples
    ///
    /// ```
    /// use mproc_queue::{GetError, SimpleQueue};
    ///
    /// let q = SimpleQueue::<u8>::new()?;
    /// q.close();
    /// assert_eq!(q.get(), Err(GetError::Closed));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.0.close();
    }
}

/// A [`Queue`] whose consumers say when each item is handled: Python's
/// `multiprocessing.JoinableQueue`. [`join`](JoinableQueue::join) returns
/// once every item ever put has been marked [`task_done`](JoinableQueue::task_done).
///
/// It dereferences to [`Queue`] for `put`, `get` and the rest. The count of
/// unfinished items is derived from the ring's own message count, so it
/// stays exact when a producer dies mid-put (at most 2^24 - 1 unfinished
/// items at once).
///
/// # Examples
///
/// ```
/// use mproc_queue::JoinableQueue;
/// use std::time::Duration;
///
/// let q = JoinableQueue::new()?;
/// q.put(1u8)?;
/// q.put(2u8)?;
/// assert_eq!(q.get()?, 1);
/// q.task_done()?;
/// assert!(!q.join_timeout(Duration::from_millis(10)), "one item is not done");
/// assert_eq!(q.get()?, 2);
/// q.task_done()?;
/// q.join();
/// assert!(q.task_done().is_err(), "more task_done calls than items");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinableQueue<T>(Queue<T>);

/// [`task_done`](JoinableQueue::task_done) was called more times than
/// there were items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called more times than there were items")
    }
}

impl std::error::Error for TaskDoneError {}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue(self.0.clone())
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.0.ring).finish()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.0
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        attach::<T, D>(d, Kind::Joinable).map(|r| JoinableQueue(Queue::from_ring(r)))
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A joinable queue with no item limit.
    ///
    /// # Errors
    ///
    /// The OS error when the shared segment cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// let jobs = mproc_queue::JoinableQueue::new()?;
    /// jobs.put(1u32)?;
    /// let _job = jobs.get()?;
    /// jobs.task_done()?;
    /// jobs.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> io::Result<JoinableQueue<T>> {
        Queue::with_limits(DEFAULT_CAPACITY, 0, Kind::Joinable).map(JoinableQueue)
    }

    /// A joinable queue that holds at most `maxsize` items.
    ///
    /// # Errors
    ///
    /// As [`Queue::bounded`].
    ///
    /// # Examples
    ///
    /// ```
    /// let jobs = mproc_queue::JoinableQueue::<u32>::bounded(16)?;
    /// assert_eq!(jobs.maxsize(), Some(16));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bounded(maxsize: usize) -> io::Result<JoinableQueue<T>> {
        if maxsize == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a bounded queue needs a maxsize of at least 1",
            ));
        }
        Queue::with_limits(DEFAULT_CAPACITY, maxsize as u64, Kind::Joinable).map(JoinableQueue)
    }
}

impl<T> JoinableQueue<T> {
    /// Marks one item taken with `get` as handled.
    ///
    /// # Errors
    ///
    /// [`TaskDoneError`] when every item put is already marked done; the
    /// count is left as it was.
    ///
    /// # Examples
    ///
    /// ```
    /// let jobs = mproc_queue::JoinableQueue::new()?;
    /// jobs.put(1u8)?;
    /// jobs.get()?;
    /// jobs.task_done()?;
    /// assert!(jobs.task_done().is_err()); // more task_done than items
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        if self.0.ring.task_done() {
            Ok(())
        } else {
            Err(TaskDoneError)
        }
    }

    /// Items put and not yet marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// let jobs = mproc_queue::JoinableQueue::new()?;
    /// jobs.put(1u8)?;
    /// jobs.get()?;
    /// assert_eq!(jobs.unfinished(), 1); // taken, not yet done
    /// jobs.task_done()?;
    /// assert_eq!(jobs.unfinished(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unfinished(&self) -> usize {
        self.0.ring.unfinished() as usize
    }

    /// Blocks until every item put has been marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// let jobs = mproc_queue::JoinableQueue::<u8>::new()?;
    /// jobs.join(); // nothing unfinished: returns at once
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self) {
        self.0.ring.join(None);
    }

    /// [`join`](JoinableQueue::join) for at most `timeout`; `true` when every
    /// item is done.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let jobs = mproc_queue::JoinableQueue::new()?;
    /// jobs.put(1u8)?;
    /// assert!(!jobs.join_timeout(Duration::from_millis(10)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.0.ring.join(wait::deadline(timeout))
    }
}

/// The items of a queue, each as it comes, until the queue is closed and
/// drained ([`Queue::iter`], `for x in &queue`). A message that cannot be
/// read is an `Err` item, and iteration goes on after it (a corrupt message
/// never looks like the end of the queue).
///
/// # Examples
///
/// ```
/// let q = mproc_queue::Queue::new()?;
/// q.put(1u32)?;
/// q.put(2u32)?;
/// q.close();
/// let all: Result<Vec<u32>, _> = q.iter().collect();
/// assert_eq!(all?, [1, 2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Iter<'a, T> {
    q: &'a Queue<T>,
}

impl<T: Serialize + DeserializeOwned> Iterator for Iter<'_, T> {
    type Item = Result<T, crate::BadMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.q.get() {
            Ok(x) => Some(Ok(x)),
            Err(GetError::Bad(e)) => Some(Err(e)),
            Err(GetError::Closed) => None,
        }
    }
}

/// The items waiting in a queue now, without blocking
/// ([`Queue::try_iter`]).
#[derive(Debug)]
pub struct TryIter<'a, T> {
    q: &'a Queue<T>,
}

impl<T: Serialize + DeserializeOwned> Iterator for TryIter<'_, T> {
    type Item = Result<T, crate::BadMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.q.try_get() {
            Ok(x) => Some(Ok(x)),
            Err(TryGetError::Bad(e)) => Some(Err(e)),
            Err(TryGetError::Empty | TryGetError::Closed) => None,
        }
    }
}

/// The items of an owned queue handle ([`Iter`], by value).
#[derive(Debug)]
pub struct IntoIter<T> {
    q: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> Iterator for IntoIter<T> {
    type Item = Result<T, crate::BadMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        Iter { q: &self.q }.next()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Every item, each as it comes, until the queue is closed and drained
    /// (see [`Iter`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::new()?;
    /// for i in 0..3u8 {
    ///     q.put(i)?;
    /// }
    /// q.close();
    /// let all: Vec<u8> = q.iter().collect::<Result<_, _>>()?;
    /// assert_eq!(all, [0, 1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { q: self }
    }

    /// The items waiting now, without blocking.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mproc_queue::Queue::new()?;
    /// q.put(1u8)?;
    /// assert_eq!(q.try_iter().count(), 1); // stops when empty, closed or not
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { q: self }
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a Queue<T> {
    type Item = Result<T, crate::BadMessage>;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T: Serialize + DeserializeOwned> IntoIterator for Queue<T> {
    type Item = Result<T, crate::BadMessage>;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter { q: self }
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a SimpleQueue<T> {
    type Item = Result<T, crate::BadMessage>;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.0.iter()
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a JoinableQueue<T> {
    type Item = Result<T, crate::BadMessage>;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BadMessage;

    #[test]
    fn the_unfinished_count_does_not_wrap_at_2_pow_24() {
        let q: JoinableQueue<u8> = JoinableQueue::new().unwrap();
        // 2^24 - 1 items put and taken, none marked done; then one more.
        q.0.ring.pass_messages((1 << 24) - 1);
        q.put(1).unwrap();
        assert_eq!(q.get().unwrap(), 1);
        assert_eq!(q.unfinished(), 1 << 24);
        assert!(
            !q.join_timeout(Duration::from_millis(1)),
            "join passed with 2^24 tasks unfinished"
        );
        for _ in 0..3 {
            q.task_done().unwrap();
        }
        assert_eq!(q.unfinished(), (1 << 24) - 3);
    }

    #[test]
    fn messages_that_can_never_be_handed_out_count_as_done() {
        let q: JoinableQueue<u64> = JoinableQueue::new().unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        // Flip a bit of the first header: both published messages are
        // dropped as corrupt, and nobody will ever mark them done.
        let seg = q.0.ring.segment().clone();
        let mut b = [0u8; 1];
        seg.read(ring::DATA, &mut b).unwrap();
        seg.write(ring::DATA, &[b[0] ^ 0x10]).unwrap();
        assert!(matches!(
            q.try_get(),
            Err(TryGetError::Bad(BadMessage::Corrupt(_)))
        ));
        assert_eq!(q.unfinished(), 0);
        assert!(
            q.join_timeout(Duration::ZERO),
            "join waits for dropped tasks"
        );
        // Bytes that do not decode as a u64 (an overlong varint).
        q.0.ring.put(&[0xff; 12], Wait::FOREVER, None).unwrap();
        assert!(matches!(q.get(), Err(GetError::Bad(BadMessage::Decode(_)))));
        assert_eq!(q.unfinished(), 0);
        // The queue goes on.
        q.put(3).unwrap();
        assert_eq!(q.get().unwrap(), 3);
        q.task_done().unwrap();
        assert!(q.join_timeout(Duration::ZERO));
    }
}
