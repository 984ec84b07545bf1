//! `Pipe` and `Connection`: two ends, each process-shareable, over one ring
//! per direction.
//!
//! # How an end knows its peer is gone
//!
//! Each end owns the write side of an OS pipe that nobody ever writes to —
//! its *lifeline* — and the read side of its peer's lifeline. Every handle
//! of an end, in every process, holds a descriptor of its lifeline; when the
//! last one closes, because the handles were dropped or their processes
//! died, the kernel reports hang-up on the read side. A `recv` (or a `send`
//! waiting for room) checks for that before it sleeps and every 10 ms while
//! it sleeps, so it returns [`RecvError::Disconnected`] instead of hanging.
//! Everything sent before the peer went is still delivered first.
//!
//! As with OS pipes, a process holding a copy of the peer end keeps it
//! alive: drop the end you handed to a child (CPython's advice too). A child
//! started with `StartMethod::Fork` inherits every descriptor of its parent,
//! lifelines included; the forkserver and spawn methods pass only a child's
//! arguments.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mproc_shm::transfer::{de_error, ser_error, FdRef};
use mproc_shm::Segment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, with_buf};
use crate::error::{EncodeError, RecvError, RecvTimeoutError, SendError};
use crate::ring::{self, GetFail, Kind, PutFail, Ring, Wait};
use crate::sys;

/// The ring of each direction of a pipe: 256 KiB.
pub const PIPE_CAPACITY: usize = 256 << 10;

/// Makes pipes: Python's `multiprocessing.Pipe`.
///
/// # Examples
///
/// ```
/// use mproc_queue::{Pipe, RecvError};
///
/// let (a, b) = Pipe::<String>::duplex()?;
/// a.send("ping".to_string())?;
/// assert_eq!(b.recv()?, "ping");
/// b.send("pong".to_string())?;
/// assert_eq!(a.recv()?, "pong");
/// drop(b);
/// assert_eq!(a.recv(), Err(RecvError::Disconnected));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Pipe<T>(PhantomData<fn(T) -> T>);

impl<T: Serialize + DeserializeOwned> Pipe<T> {
    /// Two ends that both send and receive.
    ///
    /// # Errors
    ///
    /// The OS error when a segment or a lifeline cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = mproc_queue::Pipe::<u32>::duplex()?;
    /// a.send(1)?;
    /// b.send(2)?;
    /// assert_eq!((b.recv()?, a.recv()?), (1, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn duplex() -> io::Result<(Connection<T>, Connection<T>)> {
        let (ab, ba) = (new_ring::<T>()?, new_ring::<T>()?);
        let (a, b) = lifelines()?;
        Ok((
            Connection::from_parts(Some(ba.clone()), Some(ab.clone()), a),
            Connection::from_parts(Some(ab), Some(ba), b),
        ))
    }

    /// `(receiver, sender)`: the first end only receives, the second only
    /// sends (CPython's `Pipe(duplex=False)`).
    ///
    /// # Errors
    ///
    /// The OS error when the segment or a lifeline cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// use mproc_queue::{Pipe, SendError};
    ///
    /// let (rx, tx) = Pipe::<u32>::simplex()?;
    /// tx.send(5)?;
    /// assert_eq!(rx.recv()?, 5);
    /// assert!(matches!(rx.send(6), Err(SendError::NotWritable(6))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn simplex() -> io::Result<(Connection<T>, Connection<T>)> {
        let ring = new_ring::<T>()?;
        let (r, s) = lifelines()?;
        Ok((
            Connection::from_parts(Some(ring.clone()), None, r),
            Connection::from_parts(None, Some(ring), s),
        ))
    }
}

fn new_ring<T>() -> io::Result<Ring> {
    Ring::new(Kind::Pipe, ring::fingerprint::<T>(), PIPE_CAPACITY, 0)
}

/// One end's lifeline (write side) and its peer's (read side).
#[derive(Debug)]
struct Lifelines {
    mine: OwnedFd,
    peer: OwnedFd,
    /// The peer was seen gone (it never comes back).
    gone: AtomicBool,
    /// When the peer was last seen alive, in ns since [`epoch`] (0: never).
    alive_at: AtomicU64,
}

/// How long a send trusts the last sight of a live peer instead of asking
/// the kernel again (one poll(2) costs about as much as a whole send).
const TRUST_ALIVE: Duration = Duration::from_millis(1);

/// A process-wide origin for [`Lifelines::alive_at`].
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn lifelines() -> io::Result<(Arc<Lifelines>, Arc<Lifelines>)> {
    let (a_r, a_w) = sys::cloexec_pipe()?;
    let (b_r, b_w) = sys::cloexec_pipe()?;
    Ok((
        Arc::new(Lifelines::new(a_w, b_r)),
        Arc::new(Lifelines::new(b_w, a_r)),
    ))
}

impl Lifelines {
    fn new(mine: OwnedFd, peer: OwnedFd) -> Lifelines {
        Lifelines {
            mine,
            peer,
            gone: AtomicBool::new(false),
            alive_at: AtomicU64::new(0),
        }
    }

    /// [`peer_gone`](Lifelines::peer_gone), trusting a sight of the peer
    /// alive less than [`TRUST_ALIVE`] ago. A send in that window to a peer
    /// that just went away succeeds and the message is lost, as a write to a
    /// socket whose reader just closed would be.
    fn peer_gone_lately(&self) -> bool {
        if self.gone.load(Ordering::Relaxed) {
            return true;
        }
        let now = epoch().elapsed().as_nanos() as u64;
        let seen = self.alive_at.load(Ordering::Relaxed);
        if seen != 0 && now.saturating_sub(seen) < TRUST_ALIVE.as_nanos() as u64 {
            return false;
        }
        let gone = self.peer_gone();
        if !gone {
            self.alive_at.store(now.max(1), Ordering::Relaxed);
        }
        gone
    }

    /// Whether every handle of the peer end is gone.
    fn peer_gone(&self) -> bool {
        if self.gone.load(Ordering::Relaxed) {
            return true;
        }
        let gone = sys::hung_up(self.peer.as_fd());
        if gone {
            self.gone.store(true, Ordering::Relaxed);
        }
        gone
    }
}

/// One end of a [`Pipe`]: `send` / `recv` typed items, or raw bytes.
///
/// A `Connection` is `Clone` (threads) and serde (pass it to a child as a
/// process argument). Several users of one end take turns whole messages at
/// a time. Messages of any size pass; one larger than the ring streams
/// through it.
pub struct Connection<T> {
    rx: Option<Ring>,
    tx: Option<Ring>,
    life: Arc<Lifelines>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Connection<T> {
    fn clone(&self) -> Self {
        Connection::from_parts(self.rx.clone(), self.tx.clone(), self.life.clone())
    }
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("receives", &self.rx.is_some())
            .field("sends", &self.tx.is_some())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    rx: Option<Segment>,
    tx: Option<Segment>,
    mine: FdRef,
    peer: FdRef,
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            rx: self.rx.as_ref().map(|r| r.segment().clone()),
            tx: self.tx.as_ref().map(|r| r.segment().clone()),
            mine: FdRef::export(self.life.mine.as_fd()).map_err(ser_error::<S::Error>)?,
            peer: FdRef::export(self.life.peer.as_fd()).map_err(ser_error::<S::Error>)?,
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let ring = |seg: Option<Segment>| {
            seg.map(|s| Ring::attach(s, Kind::Pipe, ring::fingerprint::<T>()))
                .transpose()
                .map_err(de_error::<D::Error>)
        };
        let (rx, tx) = (ring(w.rx)?, ring(w.tx)?);
        let life = Lifelines::new(
            w.mine.import().map_err(de_error::<D::Error>)?,
            w.peer.import().map_err(de_error::<D::Error>)?,
        );
        Ok(Connection::from_parts(rx, tx, Arc::new(life)))
    }
}

impl<T> Connection<T> {
    fn from_parts(rx: Option<Ring>, tx: Option<Ring>, life: Arc<Lifelines>) -> Connection<T> {
        Connection {
            rx,
            tx,
            life,
            _items: PhantomData,
        }
    }

    /// Sends raw bytes (the peer reads them with
    /// [`recv_bytes`](Connection::recv_bytes)).
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] when the peer is gone (noticed within a millisecond of its going),
    /// [`SendError::NotWritable`] on a receive-only end; the bytes are given
    /// back.
    ///
    /// # Examples
    ///
    /// ```
    /// let (rx, tx) = mproc_queue::Pipe::<()>::simplex()?;
    /// tx.send_bytes(b"raw")?;
    /// assert_eq!(rx.recv_bytes()?, b"raw");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), SendError<Vec<u8>>> {
        self.send_raw(bytes).map_err(|e| e.map(|()| bytes.to_vec()))
    }

    fn send_raw(&self, bytes: &[u8]) -> Result<(), SendFail> {
        let Some(tx) = &self.tx else {
            return Err(SendFail::NotWritable(()));
        };
        // Sending to an end nobody holds any more is an error, as writing
        // to a pipe without readers is (checked at most once a millisecond).
        if self.life.peer_gone_lately() {
            return Err(SendFail::Disconnected(()));
        }
        let mut gone = || self.life.peer_gone();
        match tx.put(bytes, Wait::FOREVER, Some(&mut gone)) {
            Ok(()) => Ok(()),
            Err(PutFail::Corrupt) => Err(SendFail::Corrupt(())),
            Err(PutFail::Gone | PutFail::Closed | PutFail::Full) => Err(SendFail::Disconnected(())),
        }
    }

    /// Receives the next message as raw bytes.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once the peer is gone and everything it
    /// sent has been read; [`RecvError::NotReadable`] on a send-only end.
    ///
    /// # Examples
    ///
    /// ```
    /// let (rx, tx) = mproc_queue::Pipe::<()>::simplex()?;
    /// tx.send_bytes(&[1, 2, 3])?;
    /// assert_eq!(rx.recv_bytes()?, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        let mut buf = Vec::new();
        self.recv_bytes_into(&mut buf)?;
        Ok(buf)
    }

    /// Receives the next message into `buf` (replacing its contents, reusing
    /// its allocation) and returns its length.
    ///
    /// # Errors
    ///
    /// As [`recv_bytes`](Connection::recv_bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// let (rx, tx) = mproc_queue::Pipe::<()>::simplex()?;
    /// tx.send_bytes(b"abc")?;
    /// let mut buf = Vec::with_capacity(64);
    /// assert_eq!(rx.recv_bytes_into(&mut buf)?, 3);
    /// assert_eq!(buf, b"abc");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        self.recv_raw(buf, Wait::FOREVER).map_err(recv_error)?;
        Ok(buf.len())
    }

    fn recv_raw(&self, buf: &mut Vec<u8>, how: Wait) -> Result<(), GetFail> {
        let Some(rx) = &self.rx else {
            return Err(GetFail::Closed);
        };
        let mut gone = || self.life.peer_gone();
        rx.get(buf, how, Some(&mut gone))
    }

    /// Whether a `recv` would return at once — a message is waiting, or the
    /// peer is gone — waiting at most `timeout` for it (`Duration::ZERO`:
    /// just look).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (rx, tx) = mproc_queue::Pipe::<u8>::simplex()?;
    /// assert!(!rx.poll(Duration::ZERO));
    /// tx.send(1)?;
    /// assert!(rx.poll(Duration::from_secs(1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll(&self, timeout: Duration) -> bool {
        let Some(rx) = &self.rx else {
            return false;
        };
        let mut gone = || self.life.peer_gone();
        rx.poll(Wait::timeout(timeout), Some(&mut gone)) || self.life.peer_gone()
    }

    /// Drops this handle of the end. The peer sees `Disconnected` once every
    /// handle of this end, in every process, is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use mproc_queue::{Pipe, RecvError};
    ///
    /// let (rx, tx) = Pipe::<u8>::simplex()?;
    /// tx.send(1)?;
    /// tx.close();
    /// assert_eq!(rx.recv(), Ok(1)); // what was sent is still read
    /// assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) {}
}

/// `SendError` before the value is known.
enum SendFail {
    Disconnected(()),
    NotWritable(()),
    Corrupt(()),
}

impl SendFail {
    fn map<T>(self, value: impl FnOnce(()) -> T) -> SendError<T> {
        match self {
            SendFail::Disconnected(u) => SendError::Disconnected(value(u)),
            SendFail::NotWritable(u) => SendError::NotWritable(value(u)),
            SendFail::Corrupt(u) => SendError::Corrupt(value(u)),
        }
    }
}

fn recv_error(f: GetFail) -> RecvError {
    match f {
        GetFail::Bad(e) => RecvError::Bad(e),
        GetFail::Closed => RecvError::NotReadable,
        GetFail::Gone | GetFail::Empty => RecvError::Disconnected,
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends an item, waiting for room while the peer lives.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] when the peer is gone (noticed within a millisecond of its going),
    /// [`SendError::NotWritable`] on a receive-only end,
    /// [`SendError::Encode`] when the item cannot be serialized; the item is
    /// given back.
    ///
    /// # Examples
    ///
    /// ```
    /// let (rx, tx) = mproc_queue::Pipe::<Vec<String>>::simplex()?;
    /// tx.send(vec!["a".into(), "b".into()])?;
    /// assert_eq!(rx.recv()?.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        with_buf(|buf| {
            let ticket = match codec::encode(&item, buf) {
                Ok(ticket) => ticket,
                Err(message) => {
                    return Err(SendError::Encode(EncodeError {
                        value: item,
                        message,
                    }))
                }
            };
            self.send_raw(buf).map_err(|e| {
                if let Some(t) = ticket {
                    mproc_shm::handoff::cancel(&t);
                }
                e.map(|()| item)
            })
        })
    }

    /// Receives the next item.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once the peer is gone and everything it
    /// sent has been read; [`RecvError::NotReadable`] on a send-only end;
    /// [`RecvError::Bad`] for a message that cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = mproc_queue::Pipe::<(u8, bool)>::duplex()?;
    /// a.send((1, true))?;
    /// assert_eq!(b.recv()?, (1, true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv(&self) -> Result<T, RecvError> {
        with_buf(|buf| {
            self.recv_raw(buf, Wait::FOREVER).map_err(recv_error)?;
            codec::decode(buf).map_err(RecvError::Bad)
        })
    }

    /// Receives the next item, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] after about `timeout`, and the errors of
    /// [`recv`](Connection::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use mproc_queue::{Pipe, RecvTimeoutError};
    ///
    /// let (rx, _tx) = Pipe::<u8>::simplex()?;
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(10)), Err(RecvTimeoutError::Timeout));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        with_buf(|buf| {
            self.recv_raw(buf, Wait::timeout(timeout))
                .map_err(|f| match f {
                    GetFail::Empty => RecvTimeoutError::Timeout,
                    GetFail::Gone => RecvTimeoutError::Disconnected,
                    GetFail::Closed => RecvTimeoutError::NotReadable,
                    GetFail::Bad(e) => RecvTimeoutError::Bad(e),
                })?;
            codec::decode(buf).map_err(RecvTimeoutError::Bad)
        })
    }
}

#[cfg(feature = "async")]
impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// A receive that does not wait: `None` when nothing is there yet and
    /// the peer lives.
    pub(crate) fn try_recv_now(&self) -> Option<Result<T, RecvError>> {
        with_buf(|buf| match self.recv_raw(buf, Wait::No) {
            Ok(()) => Some(codec::decode(buf).map_err(RecvError::Bad)),
            Err(GetFail::Empty) => None,
            Err(f) => Some(Err(recv_error(f))),
        })
    }

    /// The receiving ring and how to wait until a receive would not block
    /// (a message, or the peer gone); `None` on a send-only end.
    pub(crate) fn readiness(&self) -> Option<(Ring, mproc_shm::waker::ReadyFn)> {
        let rx = self.rx.clone()?;
        let ring = rx.clone();
        let life = self.life.clone();
        Some((
            rx,
            Arc::new(move |d| {
                let mut gone = || life.peer_gone();
                ring.poll(Wait::timeout(d), Some(&mut gone)) || life.peer_gone()
            }),
        ))
    }
}

/// The messages of a receiving end, each as it comes, until the peer is
/// gone and everything it sent is read ([`Connection::iter`], `for x in
/// &conn`). A message that cannot be read is an `Err` item, and iteration
/// goes on after it.
#[derive(Debug)]
pub struct Incoming<'a, T> {
    conn: &'a Connection<T>,
}

impl<T: Serialize + DeserializeOwned> Iterator for Incoming<'_, T> {
    type Item = Result<T, crate::BadMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.conn.recv() {
            Ok(x) => Some(Ok(x)),
            Err(RecvError::Bad(e)) => Some(Err(e)),
            Err(RecvError::Disconnected | RecvError::NotReadable) => None,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Every message, each as it comes, until the peer is gone and drained
    /// (see [`Incoming`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let (rx, tx) = mproc_queue::Pipe::<u8>::simplex()?;
    /// tx.send(1)?;
    /// tx.send(2)?;
    /// drop(tx);
    /// let got: Vec<u8> = rx.iter().collect::<Result<_, _>>()?;
    /// assert_eq!(got, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Incoming<'_, T> {
        Incoming { conn: self }
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a Connection<T> {
    type Item = Result<T, crate::BadMessage>;
    type IntoIter = Incoming<'a, T>;

    fn into_iter(self) -> Incoming<'a, T> {
        self.iter()
    }
}

impl<T> crate::select::Waitable for Connection<T> {
    fn ready(&self) -> bool {
        match &self.rx {
            Some(rx) => rx.poll(Wait::No, None) || self.life.peer_gone(),
            None => false,
        }
    }
}
