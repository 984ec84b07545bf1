//! `Queue<T>` and `JoinableQueue<T>` on a Redis stream: the local queues'
//! API for processes on many machines.
//!
//! Items are postcard-encoded entries of one stream (`NAMESPACE:q:NAME`),
//! read through a consumer group; each handle is a consumer of its own.
//!
//! - A plain [`Queue`]'s `get` acknowledges (XACK + XDEL) in the same call
//!   that reads: an item is gone from the queue once a `get` returned it.
//!   A getter killed between the read and the acknowledgement leaves the
//!   item pending, and another getter takes it after the lease.
//! - A [`JoinableQueue`]'s item stays in the stream, pending on its getter,
//!   until that getter's `task_done`; `join` waits until the stream is
//!   empty. While a handle holds items, a thread of the handle renews their
//!   leases (fenced: an item another getter took over is not taken back),
//!   so a long task is not handed to a second getter; a getter that dies
//!   stops renewing, and its items are delivered again after the lease
//!   ([`Options::lease`]).
//!
//! Delivery is therefore at least once: an item is seen twice only when
//! its getter died (or was cut off from Redis for longer than the lease)
//! before it was done with it.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redis::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::conn::Conn;
use crate::error::Error;
use crate::options::{ms, random_u64, Options};
use crate::scripts::Scripts;
use crate::wire;

/// How long one blocking wait lasts before it looks again.
const SLICE: Duration = Duration::from_millis(100);

/// How long a connection may take to answer (besides a BLOCK).
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The group of a queue's getters.
const GETTERS: &str = "getters";

/// Why an item was not put; the item comes back.
pub enum PutError<T> {
    /// The queue stayed full until the timeout.
    Full(T),
    /// The queue was closed.
    Closed(T),
    /// The item could not be encoded, or Redis failed.
    Failed(T, Error),
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t) | PutError::Closed(t) | PutError::Failed(t, _) => t,
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Failed(_, e) => write!(f, "Failed(.., {e:?})"),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("the queue is full"),
            PutError::Closed(_) => f.write_str("the queue is closed"),
            PutError::Failed(_, e) => write!(f, "cannot put: {e}"),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}

/// Why nothing was got.
#[derive(Debug)]
#[non_exhaustive]
pub enum GetError {
    /// Nothing came within the timeout (or at once, for `try_get`).
    Timeout,
    /// The queue is closed and empty.
    Closed,
    /// An item could not be decoded as `T` (it is removed from the queue).
    Corrupt(String),
    /// Redis failed.
    Redis(Error),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Timeout => f.write_str("nothing came in time"),
            GetError::Closed => f.write_str("the queue is closed and empty"),
            GetError::Corrupt(why) => write!(f, "an item could not be read: {why}"),
            GetError::Redis(e) => write!(f, "cannot get: {e}"),
        }
    }
}

impl std::error::Error for GetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GetError::Redis(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for GetError {
    fn from(e: redis::RedisError) -> GetError {
        GetError::Redis(Error::Redis(e))
    }
}

/// The part of a queue handle that talks to Redis.
struct Raw {
    client: redis::Client,
    conn: Mutex<Conn>,
    scripts: Scripts,
    stream: String,
    closed: String,
    wake: String,
    consumer: String,
    maxsize: usize,
    lease: Duration,
    /// Where the next search for abandoned items starts.
    cursor: Mutex<String>,
}

enum PutFail {
    Full,
    Closed,
    Redis(Error),
}

impl Raw {
    fn open(url: &str, name: &str, maxsize: usize, opts: &Options) -> Result<Raw, Error> {
        opts.check()?;
        if name.is_empty() || name.contains(['{', '}', '*', '?', '[', ']']) {
            return Err(Error::Options(format!("{name:?} cannot name a queue")));
        }
        let client = redis::Client::open(url)?;
        let mut c = client.get_connection_with_timeout(IO_TIMEOUT)?;
        crate::check_server(&mut c)?;
        let stream = opts.keys().queue(name);
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(GETTERS)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut c);
        match r {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(e.into()),
            _ => {}
        }
        Ok(Raw {
            conn: Mutex::new(Conn::new(client.clone(), SLICE + IO_TIMEOUT)),
            client,
            scripts: Scripts::new(),
            closed: format!("{stream}:closed"),
            wake: format!("{stream}:wake"),
            stream,
            consumer: format!("{}:{:016x}", std::process::id(), random_u64()),
            maxsize,
            lease: opts.lease,
            cursor: Mutex::new("0-0".into()),
        })
    }

    fn run<R>(
        &self,
        op: impl Fn(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> redis::RedisResult<R> {
        self.conn.lock().run(&self.scripts, op)
    }

    fn put(&self, bytes: &[u8], timeout: Duration) -> Result<(), PutFail> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let r: i64 = self
                .run(|c| {
                    self.scripts
                        .queue_put
                        .key(&self.stream)
                        .key(&self.closed)
                        .arg(self.maxsize)
                        .arg(bytes)
                        .invoke(c)
                })
                .map_err(|e| PutFail::Redis(e.into()))?;
            match r {
                1 => return Ok(()),
                -1 => return Err(PutFail::Closed),
                _ => {}
            }
            let left = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Err(PutFail::Full);
            }
            // Full: look again soon (getters make room).
            std::thread::sleep(left.min(SLICE / 5));
        }
    }

    /// The next item's entry id and bytes.
    fn get(&self, timeout: Duration) -> Result<(String, Vec<u8>), GetError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // An item whose getter died before it was done with it.
            let cursor = self.cursor.lock().clone();
            let abandoned: Value = self.run(|c| {
                self.scripts
                    .queue_reclaim
                    .key(&self.stream)
                    .arg(GETTERS)
                    .arg(&self.consumer)
                    .arg(ms(self.lease))
                    .arg(&cursor)
                    .invoke(c)
            })?;
            if let Some([next, e]) = wire::array(&abandoned) {
                if let Some(next) = wire::text(next) {
                    *self.cursor.lock() = next;
                }
                if let Ok(e) = wire::entry(e) {
                    return item(e);
                }
            }
            let left = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()));
            let block = u64::try_from(left.min(SLICE).as_millis())
                .unwrap_or(1)
                .max(1);
            let reply: Value = self.run(|c| {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GETTERS)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(block)
                    .arg("STREAMS")
                    .arg(&self.stream)
                    .arg(">")
                    .query(c)
            })?;
            let entries = wire::read_reply(&reply).map_err(GetError::Corrupt)?;
            if let Some(e) = entries.into_iter().next() {
                return item(e);
            }
            let closed: bool = self.run(|c| redis::cmd("EXISTS").arg(&self.closed).query(c))?;
            if closed {
                return Err(GetError::Closed);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(GetError::Timeout);
            }
        }
    }

    /// XACK + XDEL of an item (and a wake-up for `join` when the queue is
    /// then empty).
    fn ack(&self, id: &str) -> redis::RedisResult<()> {
        self.run(|c| {
            self.scripts
                .queue_ack
                .key(&self.stream)
                .key(&self.wake)
                .arg(GETTERS)
                .arg(id)
                .invoke::<i64>(c)
        })
        .map(|_| ())
    }

    fn len(&self) -> Result<usize, Error> {
        Ok(self.run(|c| redis::cmd("XLEN").arg(&self.stream).query(c))?)
    }

    fn join(&self, timeout: Duration) -> Result<bool, Error> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if self.len()? == 0 {
                return Ok(true);
            }
            let left = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(false);
            }
            // Woken by the acknowledgement that empties the queue, or a
            // slice later (another joiner may have taken the token).
            let secs = left.min(SLICE).as_secs_f64().max(0.01);
            let _: Value = self.run(|c| redis::cmd("BLPOP").arg(&self.wake).arg(secs).query(c))?;
        }
    }

    fn close(&self) -> Result<(), Error> {
        Ok(self.run(|c| redis::cmd("SET").arg(&self.closed).arg(1).query(c))?)
    }

    fn is_closed(&self) -> Result<bool, Error> {
        Ok(self.run(|c| redis::cmd("EXISTS").arg(&self.closed).query(c))?)
    }

    fn delete(&self) -> Result<(), Error> {
        Ok(self.run(|c| {
            redis::cmd("DEL")
                .arg(&self.stream)
                .arg(&self.closed)
                .arg(&self.wake)
                .query(c)
        })?)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.run(|c| {
            self.scripts
                .leave
                .key(&self.stream)
                .arg(GETTERS)
                .arg(&self.consumer)
                .invoke::<i64>(c)
        });
    }
}

fn item(e: wire::Entry) -> Result<(String, Vec<u8>), GetError> {
    match e.get("v") {
        Some(v) => Ok((e.id.clone(), v.to_vec())),
        None => Err(GetError::Corrupt(format!(
            "queue entry {} has no value",
            e.id
        ))),
    }
}

fn encode<T: Serialize>(item: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(item).map_err(|e| Error::Corrupt(format!("cannot encode an item: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GetError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((t, [])) => Ok(t),
        Ok((_, rest)) => Err(GetError::Corrupt(format!(
            "{} bytes left over after an item",
            rest.len()
        ))),
        Err(e) => Err(GetError::Corrupt(format!(
            "not a {}: {e}",
            std::any::type_name::<T>()
        ))),
    }
}

macro_rules! common {
    ($name:ident) => {
        impl<T: Serialize + DeserializeOwned> $name<T> {
            /// Opens (creating if need be) the queue `name` of the Redis at
            /// `url`, with no item limit and the default [`Options`]. Every
            /// handle of the same name and namespace, on any machine, is the
            /// same queue.
            ///
            /// # Errors
            ///
            /// [`Error::Redis`] when Redis cannot be reached;
            /// [`Error::Options`] for a name with glob characters.
            pub fn open(url: &str, name: &str) -> Result<$name<T>, Error> {
                $name::with_options(url, name, 0, &Options::default())
            }

            /// [`open`](Self::open) with at most `maxsize` items (0: no
            /// limit; a full queue makes `put` wait) and `opts` (the
            /// namespace; the lease after which an item whose getter died
            /// is delivered again).
            ///
            /// # Errors
            ///
            /// As [`open`](Self::open).
            pub fn with_options(
                url: &str,
                name: &str,
                maxsize: usize,
                opts: &Options,
            ) -> Result<$name<T>, Error> {
                Ok($name {
                    raw: Arc::new(Raw::open(url, name, maxsize, opts)?),
                    holding: Holding::default(),
                    _t: PhantomData,
                })
            }

            /// Puts `item`, waiting while the queue is full.
            ///
            /// # Errors
            ///
            /// [`PutError::Closed`] after [`close`](Self::close);
            /// [`PutError::Failed`] when the item cannot be encoded or
            /// Redis fails. The item comes back.
            pub fn put(&self, item: T) -> Result<(), PutError<T>> {
                self.put_timeout(item, Duration::MAX)
            }

            /// Puts `item` if there is room now.
            ///
            /// # Errors
            ///
            /// [`PutError::Full`] when there is none; as [`put`](Self::put).
            pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
                self.put_timeout(item, Duration::ZERO)
            }

            /// Puts `item`, waiting at most `timeout` for room.
            ///
            /// # Errors
            ///
            /// [`PutError::Full`] when there was no room in time; as
            /// [`put`](Self::put).
            pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
                let bytes = match encode(&item) {
                    Ok(b) => b,
                    Err(e) => return Err(PutError::Failed(item, e)),
                };
                match self.raw.put(&bytes, timeout) {
                    Ok(()) => Ok(()),
                    Err(PutFail::Full) => Err(PutError::Full(item)),
                    Err(PutFail::Closed) => Err(PutError::Closed(item)),
                    Err(PutFail::Redis(e)) => Err(PutError::Failed(item, e)),
                }
            }

            /// Takes the next item, waiting for one.
            ///
            /// # Errors
            ///
            /// [`GetError::Closed`] once the queue is closed and drained;
            /// [`GetError::Corrupt`], [`GetError::Redis`].
            pub fn get(&self) -> Result<T, GetError> {
                self.get_timeout(Duration::MAX)
            }

            /// Takes the next item if there is one now.
            ///
            /// # Errors
            ///
            /// [`GetError::Timeout`] when there is none; as
            /// [`get`](Self::get).
            pub fn try_get(&self) -> Result<T, GetError> {
                self.get_timeout(Duration::ZERO)
            }

            /// Takes the next item, waiting at most `timeout`.
            ///
            /// # Errors
            ///
            /// [`GetError::Timeout`]; as [`get`](Self::get).
            pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
                let (id, bytes) = self.raw.get(timeout)?;
                match decode::<T>(&bytes) {
                    Ok(t) => {
                        self.got(id)?;
                        Ok(t)
                    }
                    Err(e) => {
                        // An item nobody can read must not come back.
                        let _ = self.raw.ack(&id);
                        Err(e)
                    }
                }
            }

            /// Items in the queue (for a joinable queue: not yet done).
            ///
            /// # Errors
            ///
            /// [`Error::Redis`].
            pub fn len(&self) -> Result<usize, Error> {
                self.raw.len()
            }

            /// Whether [`len`](Self::len) is 0.
            ///
            /// # Errors
            ///
            /// [`Error::Redis`].
            pub fn is_empty(&self) -> Result<bool, Error> {
                Ok(self.raw.len()? == 0)
            }

            /// Closes the queue for every handle: later puts fail with
            /// [`PutError::Closed`]; gets drain what is left, then fail with
            /// [`GetError::Closed`].
            ///
            /// # Errors
            ///
            /// [`Error::Redis`].
            pub fn close(&self) -> Result<(), Error> {
                self.raw.close()
            }

            /// Whether the queue was closed (by any handle).
            ///
            /// # Errors
            ///
            /// [`Error::Redis`].
            pub fn is_closed(&self) -> Result<bool, Error> {
                self.raw.is_closed()
            }

            /// Removes the queue's keys from Redis, its items with them
            /// (a queue otherwise lives as long as Redis keeps it).
            ///
            /// # Errors
            ///
            /// [`Error::Redis`].
            pub fn delete(self) -> Result<(), Error> {
                self.raw.delete()
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("stream", &self.raw.stream)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// A FIFO queue in Redis, shared by every process that opens its name:
/// the local queue's API across machines.
///
/// # Examples
///
/// ```no_run
/// let q = mproc_redis::Queue::<String>::open("redis://127.0.0.1/", "greetings")?;
/// q.put("hello".into())?;
/// assert_eq!(q.get()?, "hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    raw: Arc<Raw>,
    holding: Holding,
    _t: PhantomData<fn(T) -> T>,
}

common!(Queue);

impl<T: Serialize + DeserializeOwned> Queue<T> {
    fn got(&self, id: String) -> Result<(), GetError> {
        let _ = &self.holding;
        self.raw.ack(&id).map_err(GetError::from)
    }
}

/// A [`Queue`] whose items count as unfinished until a `task_done`; `join`
/// waits until every item put is done. While a handle holds items it renews
/// their leases; an item whose getter dies before its `task_done` is
/// delivered again (after the lease) to another getter.
///
/// # Examples
///
/// ```no_run
/// let q = mproc_redis::JoinableQueue::<u32>::open("redis://127.0.0.1/", "work")?;
/// q.put(7)?;
/// let n = q.get()?;    // in a consumer, on any machine
/// q.task_done()?;
/// q.join()?;           // in the producer: every item done
/// # let _ = n;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinableQueue<T> {
    raw: Arc<Raw>,
    holding: Holding,
    _t: PhantomData<fn(T) -> T>,
}

common!(JoinableQueue);

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    fn got(&self, id: String) -> Result<(), GetError> {
        self.holding.push(&self.raw, id);
        Ok(())
    }

    /// Marks the oldest item this handle got and has not marked as done.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when this handle has nothing to mark (more
    /// `task_done`s than `get`s: CPython's `ValueError`); [`Error::Redis`]
    /// (the item stays unfinished).
    pub fn task_done(&self) -> Result<(), Error> {
        let Some(id) = self.holding.oldest() else {
            return Err(Error::Corrupt(
                "task_done() called more times than items were got".into(),
            ));
        };
        self.raw.ack(&id)?;
        self.holding.remove(&id);
        Ok(())
    }

    /// Waits until every item put has been marked done.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`].
    pub fn join(&self) -> Result<(), Error> {
        self.raw.join(Duration::MAX).map(|_| ())
    }

    /// [`join`](Self::join), waiting at most `timeout`: whether every item
    /// was done in time.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.raw.join(timeout)
    }
}

/// The items a joinable queue's handle got and has not marked done, and the
/// thread that renews their leases while there are any.
#[derive(Default)]
struct Holding {
    shared: Arc<HoldingShared>,
    renewer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct HoldingShared {
    /// Entry ids, oldest first; `None` once the handle is dropped.
    ids: Mutex<Option<VecDeque<String>>>,
    changed: Condvar,
}

impl Holding {
    fn push(&self, raw: &Arc<Raw>, id: String) {
        self.shared
            .ids
            .lock()
            .get_or_insert_with(VecDeque::new)
            .push_back(id);
        let mut renewer = self.renewer.lock();
        if renewer.is_none() {
            let (shared, raw) = (self.shared.clone(), raw.clone());
            *renewer = std::thread::Builder::new()
                .name("mproc-redis-renew".into())
                .spawn(move || renew_loop(&shared, &raw))
                .ok();
        }
    }

    fn oldest(&self) -> Option<String> {
        self.shared.ids.lock().as_ref()?.front().cloned()
    }

    fn remove(&self, id: &str) {
        if let Some(ids) = self.shared.ids.lock().as_mut() {
            ids.retain(|i| i != id);
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        *self.shared.ids.lock() = None;
        self.shared.changed.notify_all();
        if let Some(t) = self.renewer.lock().take() {
            let _ = t.join();
        }
    }
}

/// Renews the leases of the held items every third of a lease, on a
/// connection of its own, until the handle is dropped.
fn renew_loop(shared: &HoldingShared, raw: &Raw) {
    let mut conn = Conn::new(raw.client.clone(), IO_TIMEOUT);
    let every = (raw.lease / 3).max(Duration::from_millis(5));
    loop {
        let ids: Vec<String> = {
            let mut held = shared.ids.lock();
            let _ = shared.changed.wait_for(&mut held, every);
            match held.as_ref() {
                None => return,
                Some(ids) => ids.iter().cloned().collect(),
            }
        };
        if ids.is_empty() {
            continue;
        }
        let _ = conn.run(&raw.scripts, |c| {
            let mut inv = raw.scripts.queue_renew.key(&raw.stream);
            inv.arg(GETTERS).arg(&raw.consumer);
            for id in &ids {
                inv.arg(id);
            }
            inv.invoke::<Value>(c)
        });
    }
}
