//! The shared-memory ring under every queue and pipe.
//!
#![doc = include_str!("ring.md")]

use std::io;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::time::{Duration, Instant};

use mproc_shm::{fault, Segment};
use mproc_sync::wait::WaitResult;
use mproc_sync::Lock;

use crate::error::BadMessage;
use crate::frame::{self, Assembler, Chunk, FrameError, Step, FIRST, HEADER, LAST};
pub(crate) use crate::mem::Wait;
use crate::mem::{Mem, SegMem, Side};

const MAGIC: u32 = u32::from_le_bytes(*b"MPQR");
const VERSION: u32 = 2;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_FINGERPRINT: usize = 8;
const OFF_CAPACITY: usize = 16;
const OFF_MAXSIZE: usize = 24;
const OFF_KIND: usize = 32;
const OFF_CLOSED: usize = 36;
const OFF_ABANDONED: usize = 40;
const OFF_PUT_LOCK: usize = 64;
pub(crate) const OFF_TAIL: usize = 128;
const OFF_CACHED_HEAD: usize = 136;
const OFF_WRITER: usize = 144;
const OFF_STREAM: usize = 152;
const OFF_GET_LOCK: usize = 192;
pub(crate) const OFF_HEAD: usize = 256;
const OFF_CACHED_TAIL: usize = 264;
const OFF_DATA_SEQ: usize = 320;
const OFF_DATA_SLEEPERS: usize = 324;
const OFF_SPACE_SEQ: usize = 384;
const OFF_SPACE_SLEEPERS: usize = 388;
const OFF_PUT_BASE: usize = 448;
const OFF_DONE: usize = 456;
const OFF_JOIN_SEQ: usize = 464;
const OFF_JOIN_SLEEPERS: usize = 468;
/// Where the data area starts.
pub(crate) const DATA: usize = 4096;

/// The smallest and largest data areas.
pub(crate) const MIN_CAPACITY: usize = 64;
pub(crate) const MAX_CAPACITY: usize = 64 << 20;

const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// How often a waiter with a probe (a pipe's peer, a message's writer) asks
/// it whether to give up.
const PROBE: Duration = Duration::from_millis(10);
/// A reader past its deadline in the middle of a message keeps reading while
/// chunks keep coming at least this often…
const STALL: Duration = Duration::from_millis(10);
/// …but for at most this long past its deadline.
const OVERSHOOT: Duration = Duration::from_secs(1);

// The stream word: the position of the first chunk of the message being
// streamed (bits 3..43) and its state (bits 0..3; 0 before any stream).
const STREAMING: u64 = 1;
const ABORTED: u64 = 2;
const DONE: u64 = 3;
const GAVE_UP: u64 = 4;

fn stream_word(pos: u64, state: u64) -> u64 {
    ((pos & POS_MASK) << 3) | state
}

fn stream_parts(w: u64) -> (u64, u64) {
    ((w >> 3) & POS_MASK, w & 7)
}

/// What a ring carries, checked when a handle is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Queue = 1,
    Joinable = 2,
    Pipe = 3,
}

impl Kind {
    fn name(v: u32) -> &'static str {
        match v {
            1 => "a Queue",
            2 => "a JoinableQueue",
            3 => "a Pipe",
            _ => "something unknown",
        }
    }
}

/// A position and a message count, packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) pos: u64,
    pub(crate) count: u64,
}

impl Mark {
    pub(crate) fn unpack(w: u64) -> Mark {
        Mark {
            pos: w >> COUNT_BITS,
            count: w & COUNT_MASK,
        }
    }

    pub(crate) fn pack(self) -> u64 {
        ((self.pos & POS_MASK) << COUNT_BITS) | (self.count & COUNT_MASK)
    }

    fn advance(self, units: u64, messages: u64) -> Mark {
        Mark {
            pos: (self.pos + units) & POS_MASK,
            count: (self.count + messages) & COUNT_MASK,
        }
    }
}

/// What lies between a head and a tail, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Unread {
    bytes: usize,
    messages: u64,
}

/// A stable 64-bit fingerprint of a type's name (FNV-1a).
pub(crate) fn fingerprint<T: ?Sized>() -> u64 {
    std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// Why a put did not happen.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PutFail {
    Full,
    Closed,
    /// The probe said the other side is gone.
    Gone,
    /// The ring's shared positions are impossible.
    Corrupt,
}

/// Why a get returned no message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GetFail {
    Empty,
    Closed,
    /// The probe said the other side is gone (and nothing is left).
    Gone,
    Bad(BadMessage),
}

/// Asks whether the other side is gone (a pipe's peer); `None` for queues.
pub(crate) type Probe<'a> = Option<&'a mut dyn FnMut() -> bool>;

enum Waited {
    Ready,
    TimedOut,
    GaveUp,
}

/// How a wait for the rest of a message ended.
enum Rest {
    /// More chunks are there.
    More,
    /// Its writer died or gave up, and nothing more of it will come.
    Over,
    /// Our deadline passed with the writer stalled: the writer will send
    /// the message again from its start.
    GaveBack,
}

/// A ring handle: its memory (a segment and two locks, in production) and
/// the limits read from its header.
#[derive(Clone)]
pub(crate) struct Ring<M: Mem = SegMem> {
    mem: M,
    cap: usize,
    max_chunk: usize,
    maxsize: u64,
    joinable: bool,
}

impl<M: Mem> std::fmt::Debug for Ring<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.cap)
            .field("maxsize", &self.maxsize)
            .field("len", &self.len())
            .finish()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Ring<SegMem> {
    /// A new ring of at least `capacity` bytes (rounded up to a power of
    /// two), holding at most `maxsize` messages (0: no limit).
    pub(crate) fn new(
        kind: Kind,
        fingerprint: u64,
        capacity: usize,
        maxsize: u64,
    ) -> io::Result<Ring> {
        if capacity > MAX_CAPACITY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring capacity {capacity} is above the limit of {MAX_CAPACITY} bytes"),
            ));
        }
        if maxsize > COUNT_MASK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("maxsize {maxsize} is above the limit of {COUNT_MASK}"),
            ));
        }
        let cap = capacity.max(MIN_CAPACITY).next_power_of_two();
        let seg = Segment::anonymous(DATA + cap)?;
        let mem = SegMem {
            put_lock: Lock::new_in(seg.clone(), OFF_PUT_LOCK)?,
            get_lock: Lock::new_in(seg.clone(), OFF_GET_LOCK)?,
            seg,
        };
        mem.store32(OFF_VERSION, VERSION, Relaxed);
        mem.store64(OFF_FINGERPRINT, fingerprint, Relaxed);
        mem.store64(OFF_CAPACITY, cap as u64, Relaxed);
        mem.store64(OFF_MAXSIZE, maxsize, Relaxed);
        mem.store32(OFF_KIND, kind as u32, Relaxed);
        mem.store32(OFF_MAGIC, MAGIC, SeqCst);
        Ok(Ring::from_mem(mem, cap, maxsize, kind))
    }

    /// The ring in `seg`, checked to be a `kind` of items with `fingerprint`
    /// and to have a capacity that fits the segment.
    pub(crate) fn attach(seg: Segment, kind: Kind, fingerprint: u64) -> io::Result<Ring> {
        if seg.len() < DATA + MIN_CAPACITY {
            return Err(invalid("segment is too small to be a queue".into()));
        }
        let u64_at = |off| seg.atomic_u64(off).map_or(0, |w| w.load(Relaxed));
        let u32_at = |off| seg.atomic_u32(off).map_or(0, |w| w.load(Acquire));
        if u32_at(OFF_MAGIC) != MAGIC {
            return Err(invalid("segment does not hold an mproc queue".into()));
        }
        let version = u32_at(OFF_VERSION);
        if version != VERSION {
            return Err(invalid(format!(
                "queue layout version {version}, this build reads {VERSION}"
            )));
        }
        let found = u32_at(OFF_KIND);
        if found != kind as u32 {
            return Err(invalid(format!(
                "segment holds {} where {} was expected",
                Kind::name(found),
                Kind::name(kind as u32)
            )));
        }
        if u64_at(OFF_FINGERPRINT) != fingerprint {
            return Err(invalid(
                "queue carries another item type than the one it was attached as".into(),
            ));
        }
        let cap = usize::try_from(u64_at(OFF_CAPACITY)).unwrap_or(0);
        if !cap.is_power_of_two()
            || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap)
            || DATA + cap > seg.len()
        {
            return Err(invalid(format!(
                "queue header claims an impossible capacity {cap}"
            )));
        }
        let maxsize = u64_at(OFF_MAXSIZE);
        let mem = SegMem {
            put_lock: Lock::attach_in(seg.clone(), OFF_PUT_LOCK)?,
            get_lock: Lock::attach_in(seg.clone(), OFF_GET_LOCK)?,
            seg,
        };
        Ok(Ring::from_mem(mem, cap, maxsize.min(COUNT_MASK), kind))
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.mem.seg
    }
}

impl<M: Mem> Ring<M> {
    /// A ring over `mem`, whose header is already set up.
    pub(crate) fn from_mem(mem: M, cap: usize, maxsize: u64, kind: Kind) -> Ring<M> {
        Ring {
            mem,
            cap,
            max_chunk: (cap / 2 - HEADER).min(frame::MAX_CHUNK),
            maxsize,
            joinable: kind == Kind::Joinable,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    pub(crate) fn maxsize(&self) -> Option<u64> {
        (self.maxsize > 0).then_some(self.maxsize)
    }

    fn tail(&self) -> Mark {
        Mark::unpack(self.mem.load64(OFF_TAIL, SeqCst))
    }

    fn head(&self) -> Mark {
        Mark::unpack(self.mem.load64(OFF_HEAD, SeqCst))
    }

    /// What lies between `head` and `tail`, or `None` when that is
    /// impossible: more bytes than the ring holds, or more whole messages
    /// than 8-byte units (every chunk takes at least one). Shared numbers
    /// are untrusted: nothing is computed from them before this check.
    fn unread(&self, tail: Mark, head: Mark) -> Option<Unread> {
        let units = tail.pos.wrapping_sub(head.pos) & POS_MASK;
        let messages = tail.count.wrapping_sub(head.count) & COUNT_MASK;
        let bytes = usize::try_from(units.checked_mul(8)?).ok()?;
        (bytes <= self.cap && messages <= units).then_some(Unread { bytes, messages })
    }

    /// A snapshot of what is unread, for callers that hold no lock. Head is
    /// read first: the tail read after it is at least as new, so the pair is
    /// never negative; it over-states only by what arrived in between, and
    /// fails the check only if the ring went a whole lap in between — then
    /// it is read again (a few times), and a ring whose positions stay
    /// impossible reads as empty (the next `get` reports the corruption).
    fn unread_snapshot(&self) -> Unread {
        for _ in 0..16 {
            let head = self.head();
            let tail = self.tail();
            if let Some(u) = self.unread(tail, head) {
                return u;
            }
        }
        Unread {
            bytes: 0,
            messages: 0,
        }
    }

    /// Messages in the ring (whole ones: a message counts once its last
    /// chunk is published, until its last chunk is consumed).
    pub(crate) fn len(&self) -> u64 {
        self.unread_snapshot().messages
    }

    /// Bytes published and not yet consumed, headers included.
    pub(crate) fn bytes_queued(&self) -> usize {
        self.unread_snapshot().bytes
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.mem.load32(OFF_CLOSED, SeqCst) != 0
    }

    /// Closes the ring for everyone and wakes every sleeper. Idempotent.
    pub(crate) fn close(&self) {
        if self.mem.load32(OFF_CLOSED, SeqCst) == 0 && self.mem.add32(OFF_CLOSED, 1, SeqCst) == 0 {
            fault::point("ring.closed");
            #[cfg(feature = "tracing")]
            tracing::debug!(
                target: "mproc::queue",
                pid = std::process::id(),
                messages_left = self.len(),
                "queue closed"
            );
            for seq in [OFF_DATA_SEQ, OFF_SPACE_SEQ, OFF_JOIN_SEQ] {
                self.mem.add32(seq, 1, SeqCst);
                self.mem.wake_all(seq);
            }
        }
    }

    pub(crate) fn abandoned(&self) -> u64 {
        self.mem.load64(OFF_ABANDONED, Relaxed)
    }

    fn notify(&self, seq: usize, sleepers: usize) {
        if self.mem.load32(sleepers, SeqCst) > 0 {
            self.mem.add32(seq, 1, SeqCst);
            self.mem.wake_all(seq);
        }
    }

    /// Waits until `ready()`: spins, then sleeps on `seq` in slices, and
    /// re-checks `ready()` after each. With `probe`, asks it every [`PROBE`]
    /// whether to give up — and once more when the deadline has passed,
    /// however short the wait was. A cheap probe (a pipe's `poll`) is also
    /// asked right after the spin, so that a peer already gone is reported
    /// at once; a costly one (a writer's liveness, read from the kernel's
    /// process table) waits for the first slice, so a stream that merely
    /// pauses between chunks never pays for it.
    fn wait_for(
        &self,
        seq: usize,
        sleepers: usize,
        deadline: Option<Instant>,
        ready: &mut dyn FnMut() -> bool,
        probe: Option<&mut dyn FnMut() -> bool>,
    ) -> Waited {
        self.wait_probing(seq, sleepers, deadline, ready, probe, true)
    }

    fn wait_probing(
        &self,
        seq: usize,
        sleepers: usize,
        deadline: Option<Instant>,
        ready: &mut dyn FnMut() -> bool,
        mut probe: Option<&mut dyn FnMut() -> bool>,
        probe_first: bool,
    ) -> Waited {
        let probe_now =
            |probe: &mut Option<&mut dyn FnMut() -> bool>| probe.as_mut().is_some_and(|p| p());
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return if ready() {
                Waited::Ready
            } else if probe_now(&mut probe) {
                Waited::GaveUp
            } else {
                Waited::TimedOut
            };
        }
        if self.mem.spin_until(ready) {
            return Waited::Ready;
        }
        if probe_first && probe_now(&mut probe) {
            return Waited::GaveUp;
        }
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return if probe_now(&mut probe) {
                    Waited::GaveUp
                } else {
                    Waited::TimedOut
                };
            }
            let slice = match (&probe, deadline) {
                (Some(_), Some(d)) => Some(d.min(now + PROBE)),
                (Some(_), None) => Some(now + PROBE),
                // The wait layer itself never sleeps past a slice.
                (None, d) => d,
            };
            self.mem.add32(sleepers, 1, SeqCst);
            let expected = self.mem.load32(seq, SeqCst);
            let ok = ready();
            let r = if ok {
                WaitResult::Woken
            } else {
                self.mem.park(seq, expected, slice)
            };
            self.mem.sub32(sleepers, 1, SeqCst);
            if ok || ready() {
                return Waited::Ready;
            }
            if r == WaitResult::TimedOut && probe_now(&mut probe) {
                return Waited::GaveUp;
            }
        }
    }

    fn write_at(&self, pos: u64, bytes: &[u8]) {
        let start = ((pos * 8) as usize) & (self.cap - 1);
        let first = bytes.len().min(self.cap - start);
        self.mem.write(DATA + start, &bytes[..first]);
        if first < bytes.len() {
            self.mem.write(DATA, &bytes[first..]);
        }
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) {
        let start = ((pos * 8) as usize) & (self.cap - 1);
        let first = buf.len().min(self.cap - start);
        self.mem.read(DATA + start, &mut buf[..first]);
        if first < buf.len() {
            self.mem.read(DATA, &mut buf[first..]);
        }
    }

    // ---- the producer side (under the put lock) ----

    /// Free bytes for a producer whose tail is `tail` (`None`: the positions
    /// are impossible): from its copy of head — which only put-lock holders
    /// write — reloaded only when the copy shows less than `need`. (Head is
    /// the consumers' busiest word: a producer that reads it only when it
    /// must leaves that cache line with them.)
    fn room(&self, tail: Mark, need: usize) -> Option<usize> {
        let cached = Mark::unpack(self.mem.load64(OFF_CACHED_HEAD, Relaxed));
        if let Some(u) = self.unread(tail, cached) {
            let free = self.cap - u.bytes;
            if free >= need {
                return Some(free);
            }
        }
        let head = self.head();
        let u = self.unread(tail, head)?;
        self.mem.store64(OFF_CACHED_HEAD, head.pack(), Relaxed);
        Some(self.cap - u.bytes)
    }

    /// Waits for room for `need` bytes past `tail`.
    fn await_room(
        &self,
        tail: Mark,
        need: usize,
        deadline: Option<Instant>,
        gone: &mut Probe<'_>,
    ) -> Result<(), PutFail> {
        let mut ready =
            || self.room(tail, need).is_none_or(|free| free >= need) || self.is_closed();
        let probe = gone.as_mut().map(|g| &mut **g as &mut dyn FnMut() -> bool);
        match self.wait_for(
            OFF_SPACE_SEQ,
            OFF_SPACE_SLEEPERS,
            deadline,
            &mut ready,
            probe,
        ) {
            Waited::Ready if self.is_closed() => Err(PutFail::Closed),
            Waited::Ready if self.room(tail, need).is_none() => Err(PutFail::Corrupt),
            Waited::Ready => Ok(()),
            Waited::TimedOut => Err(PutFail::Full),
            Waited::GaveUp => Err(PutFail::Gone),
        }
    }

    /// Writes one chunk at `tail` and publishes it; returns the new tail.
    fn publish(&self, tail: Mark, payload: &[u8], flags: u8) -> Mark {
        let header = Chunk {
            len: payload.len() as u32,
            flags,
        }
        .encode();
        self.write_at(tail.pos, &header);
        self.write_at(tail.pos + 1, payload);
        fault::point("ring.chunk-written");
        let last = flags & LAST != 0;
        let next = tail.advance(
            (frame::footprint(payload.len()) / 8) as u64,
            u64::from(last),
        );
        self.mem.store64(OFF_TAIL, next.pack(), SeqCst);
        fault::point("ring.tail-stored");
        self.notify(OFF_DATA_SEQ, OFF_DATA_SLEEPERS);
        if last && self.joinable {
            // Only put-lock holders write the base; see `total_put`.
            self.mem.store64(OFF_PUT_BASE, self.total_put(), SeqCst);
        }
        next
    }

    /// Puts one message.
    pub(crate) fn put(&self, msg: &[u8], how: Wait, mut gone: Probe<'_>) -> Result<(), PutFail> {
        if self.is_closed() {
            return Err(PutFail::Closed);
        }
        let deadline = how.deadline();
        let Some(_guard) = self.mem.lock(Side::Put, how) else {
            return Err(PutFail::Full);
        };
        if self.maxsize > 0 {
            let mut ready = || self.len() < self.maxsize || self.is_closed();
            if let Waited::TimedOut = self.wait_for(
                OFF_SPACE_SEQ,
                OFF_SPACE_SLEEPERS,
                deadline,
                &mut ready,
                None,
            ) {
                return Err(PutFail::Full);
            }
        }
        if self.is_closed() {
            return Err(PutFail::Closed);
        }
        let mut tail = self.tail();
        if msg.len() <= self.max_chunk {
            // One chunk: published whole, in one store.
            let need = frame::footprint(msg.len());
            let Some(room) = self.room(tail, need) else {
                return Err(PutFail::Corrupt);
            };
            if room < need {
                if matches!(how, Wait::No) {
                    return Err(PutFail::Full);
                }
                self.await_room(tail, need, deadline, &mut gone)?;
            }
            self.publish(tail, msg, FIRST | LAST);
            return Ok(());
        }
        if matches!(how, Wait::No) {
            let total: usize = msg
                .chunks(self.max_chunk)
                .map(|c| frame::footprint(c.len()))
                .sum();
            match self.room(tail, total) {
                None => return Err(PutFail::Corrupt),
                Some(room) if total > room => return Err(PutFail::Full),
                Some(_) => {}
            }
        }
        // Several chunks: consumers may see the message in part, so its
        // writer and its stream state are recorded for them.
        self.mem.store64(OFF_WRITER, self.mem.me(), SeqCst);
        let result = self.stream(msg, &mut tail, deadline, &mut gone);
        if result.is_err() {
            let (p0, _) = stream_parts(self.mem.load64(OFF_STREAM, SeqCst));
            self.mem
                .store64(OFF_STREAM, stream_word(p0, GAVE_UP), SeqCst);
        }
        self.mem.store64(OFF_WRITER, 0, SeqCst);
        result
    }

    /// Streams a message of several chunks from `tail`, starting over
    /// whenever its reader gives it back.
    fn stream(
        &self,
        msg: &[u8],
        tail: &mut Mark,
        deadline: Option<Instant>,
        gone: &mut Probe<'_>,
    ) -> Result<(), PutFail> {
        'attempt: loop {
            let p0 = tail.pos;
            self.mem
                .store64(OFF_STREAM, stream_word(p0, STREAMING), SeqCst);
            let mut off = 0;
            while off < msg.len() {
                let n = (msg.len() - off).min(self.max_chunk);
                let last = off + n == msg.len();
                self.await_room(*tail, frame::footprint(n), deadline, gone)?;
                if last {
                    // Commit: from here on no reader may give it back.
                    if self
                        .mem
                        .cas64(
                            OFF_STREAM,
                            stream_word(p0, STREAMING),
                            stream_word(p0, DONE),
                        )
                        .is_err()
                    {
                        continue 'attempt;
                    }
                } else if self.mem.load64(OFF_STREAM, SeqCst) == stream_word(p0, ABORTED) {
                    continue 'attempt;
                }
                let flags = if off == 0 { FIRST } else { 0 } | if last { LAST } else { 0 };
                *tail = self.publish(*tail, &msg[off..off + n], flags);
                off += n;
            }
            return Ok(());
        }
    }

    // ---- the consumer side (under the get lock) ----

    /// The consumer's view of tail: its copy — which only get-lock holders
    /// write — reloaded when the copy shows nothing past `head`. `Err` when
    /// the real positions are impossible.
    fn consumer_tail(&self, head: Mark) -> Result<Mark, FrameError> {
        let cached = Mark::unpack(self.mem.load64(OFF_CACHED_TAIL, Relaxed));
        if cached.pos != head.pos && self.unread(cached, head).is_some() {
            return Ok(cached);
        }
        let tail = self.tail();
        if self.unread(tail, head).is_none() {
            return Err(FrameError::BadPositions);
        }
        self.mem.store64(OFF_CACHED_TAIL, tail.pack(), Relaxed);
        Ok(tail)
    }

    /// Whether a chunk is published and not consumed (a get-lock holder's
    /// question; impossible positions count as "something to look at").
    fn has_unread(&self) -> bool {
        let head = self.head();
        self.consumer_tail(head).map_or(true, |t| t.pos != head.pos)
    }

    /// Whether a chunk is published and not consumed, for callers without
    /// the get lock: reads the real positions and writes nothing.
    fn has_data(&self) -> bool {
        let head = self.head();
        self.tail().pos != head.pos
    }

    /// The bytes a message of `len` bytes takes in the ring, chunk headers
    /// included.
    #[cfg(feature = "async")]
    pub(crate) fn footprint(&self, len: usize) -> usize {
        if len == 0 {
            return frame::footprint(0);
        }
        let (full, rest) = (len / self.max_chunk, len % self.max_chunk);
        full * frame::footprint(self.max_chunk) + if rest > 0 { frame::footprint(rest) } else { 0 }
    }

    /// Waits until a put of a message taking `need` bytes would find room
    /// (and, in a bounded queue, an item slot) or the ring is closed, without
    /// writing anything: it reads the real positions and caches nothing
    /// (invariant 1: only put-lock holders write the head cache). `false` on
    /// timeout.
    #[cfg(feature = "async")]
    pub(crate) fn poll_room(&self, need: usize, how: Wait) -> bool {
        let mut ready = || {
            if self.is_closed() {
                return true;
            }
            let u = self.unread_snapshot();
            (self.maxsize == 0 || u.messages < self.maxsize) && self.cap - u.bytes >= need
        };
        !matches!(
            self.wait_for(
                OFF_SPACE_SEQ,
                OFF_SPACE_SLEEPERS,
                how.deadline(),
                &mut ready,
                None
            ),
            Waited::TimedOut
        )
    }

    /// Waits until a message can be read, the ring is closed or the probe
    /// says the other side is gone — whatever makes a `get` not block —
    /// without taking anything. `false` on timeout.
    pub(crate) fn poll(&self, how: Wait, gone: Probe<'_>) -> bool {
        let mut ready = || self.has_data() || self.is_closed();
        !matches!(
            self.wait_for(
                OFF_DATA_SEQ,
                OFF_DATA_SLEEPERS,
                how.deadline(),
                &mut ready,
                gone
            ),
            Waited::TimedOut
        )
    }

    /// Gets one message into `buf` (cleared first).
    pub(crate) fn get(&self, buf: &mut Vec<u8>, how: Wait, gone: Probe<'_>) -> Result<(), GetFail> {
        let deadline = how.deadline();
        let Some(_guard) = self.mem.lock(Side::Get, how) else {
            return Err(GetFail::Empty);
        };
        let mut asm = Assembler {
            buf: std::mem::take(buf),
            ..Assembler::default()
        };
        asm.buf.clear();
        let result = self.assemble(&mut asm, deadline, gone);
        if asm.abandoned > 0 {
            self.mem.add64(OFF_ABANDONED, asm.abandoned, Relaxed);
        }
        *buf = asm.buf;
        result
    }

    fn assemble(
        &self,
        asm: &mut Assembler,
        deadline: Option<Instant>,
        mut gone: Probe<'_>,
    ) -> Result<(), GetFail> {
        // Where the message being read started, and when its last chunk came
        // — clocked only when the rest has to be waited for, so a message
        // that is read whole never reads the clock.
        let mut first_at = 0;
        let mut chunk_at: Option<Instant> = None;
        let mut committed = false;
        loop {
            let head = self.head();
            let tail = match self.consumer_tail(head) {
                Ok(t) => t,
                Err(e) => return Err(self.resync(asm, head, e)),
            };
            if tail.pos == head.pos {
                if asm.mid {
                    let since = *chunk_at.get_or_insert_with(Instant::now);
                    match self.await_rest(first_at, deadline, since, &mut committed) {
                        Rest::More => {}
                        Rest::Over => asm.abandon(),
                        Rest::GaveBack => {
                            asm.give_back();
                            return Err(GetFail::Empty);
                        }
                    }
                    continue;
                }
                if self.is_closed() && !self.has_unread() {
                    return Err(GetFail::Closed);
                }
                let mut ready = || self.has_unread() || self.is_closed();
                let probe = gone.as_mut().map(|g| &mut **g as &mut dyn FnMut() -> bool);
                match self.wait_for(OFF_DATA_SEQ, OFF_DATA_SLEEPERS, deadline, &mut ready, probe) {
                    Waited::Ready => {}
                    Waited::TimedOut => return Err(GetFail::Empty),
                    // Everything the peer sent before it went is published:
                    // drain it, then report.
                    Waited::GaveUp if self.has_unread() => {}
                    Waited::GaveUp => return Err(GetFail::Gone),
                }
                continue;
            }
            let Some(unread) = self.unread(tail, head) else {
                return Err(self.resync(asm, head, FrameError::BadPositions));
            };
            let mut h = [0u8; HEADER];
            self.read_at(head.pos, &mut h);
            let chunk = match Chunk::decode(h, self.max_chunk, unread.bytes) {
                Ok(c) => c,
                Err(e) => return Err(self.resync(asm, head, e)),
            };
            if chunk.flags & FIRST != 0 {
                first_at = head.pos;
                committed = false;
            }
            let len = chunk.len as usize;
            let step = asm.accept(chunk, |buf| {
                let at = buf.len();
                buf.resize(at + len, 0);
                self.read_at(head.pos + 1, &mut buf[at..]);
            });
            let next = head.advance(
                (frame::footprint(len) / 8) as u64,
                u64::from(chunk.flags & LAST != 0),
            );
            self.mem.store64(OFF_HEAD, next.pack(), SeqCst);
            fault::point("ring.head-stored");
            self.notify(OFF_SPACE_SEQ, OFF_SPACE_SLEEPERS);
            chunk_at = None;
            if step == Step::Message {
                return Ok(());
            }
        }
    }

    /// Nothing inside the published bytes can be trusted: drops them all
    /// (the whole messages among them count as abandoned, and as done for a
    /// JoinableQueue) and reports the corruption.
    fn resync(&self, asm: &mut Assembler, head: Mark, e: FrameError) -> GetFail {
        let tail = self.tail();
        let dropped = self.unread(tail, head).map_or(0, |u| u.messages);
        self.mem.store64(OFF_HEAD, tail.pack(), SeqCst);
        self.mem.store64(OFF_CACHED_TAIL, tail.pack(), Relaxed);
        asm.abandon();
        asm.abandoned += dropped.max(1);
        self.count_done(dropped);
        self.notify(OFF_SPACE_SEQ, OFF_SPACE_SLEEPERS);
        GetFail::Bad(BadMessage::Corrupt(e))
    }

    /// Waits for the rest of the message that started at `first_at`.
    ///
    /// Without a deadline: while its writer lives and streams. With one:
    /// past the deadline only while chunks keep coming (at most [`OVERSHOOT`]
    /// longer); then the message is given back to its writer, who sends it
    /// again from the start, unless the writer has already committed to its
    /// last chunk (then we wait for that, while the writer lives).
    fn await_rest(
        &self,
        first_at: u64,
        deadline: Option<Instant>,
        chunk_at: Instant,
        committed: &mut bool,
    ) -> Rest {
        let until = match deadline {
            Some(d) if !*committed => Some(d.max(chunk_at + STALL).min(d + OVERSHOOT)),
            _ => None,
        };
        let mut ready = || self.has_unread() || self.is_closed();
        let mut over = || self.stream_over(first_at);
        match self.wait_probing(
            OFF_DATA_SEQ,
            OFF_DATA_SLEEPERS,
            until,
            &mut ready,
            Some(&mut over),
            false,
        ) {
            Waited::Ready if self.has_unread() => Rest::More,
            // Closed: the writer gives up, nothing more comes.
            Waited::Ready => Rest::Over,
            Waited::GaveUp => Rest::Over,
            Waited::TimedOut => {
                let given_back = self
                    .mem
                    .cas64(
                        OFF_STREAM,
                        stream_word(first_at, STREAMING),
                        stream_word(first_at, ABORTED),
                    )
                    .is_ok();
                if given_back {
                    Rest::GaveBack
                } else {
                    // Committed (its last chunk is on its way) or over: the
                    // probe tells which, without a deadline.
                    *committed = true;
                    Rest::More
                }
            }
        }
    }

    /// Whether the rest of the message that started at `first_at` will
    /// never come: its writer gave up or died, or another message is being
    /// streamed. Checked in that order — writer first, then whether more
    /// arrived — so a writer that publishes its last chunk and exits is
    /// never mistaken for one that died half-way.
    fn stream_over(&self, first_at: u64) -> bool {
        // More came: not over (and no need to ask the kernel about the
        // writer). The check that counts is the one after the probe.
        if self.has_unread() {
            return false;
        }
        let (pos, state) = stream_parts(self.mem.load64(OFF_STREAM, SeqCst));
        let writer = self.mem.load64(OFF_WRITER, SeqCst);
        let over = pos != first_at & POS_MASK
            || match state {
                STREAMING | DONE => writer == 0 || self.mem.has_ended(writer),
                _ => true,
            };
        fault::point("ring.writer-probed");
        over && !self.has_unread()
    }

    // ---- JoinableQueue: tasks done, against the messages ever put ----

    /// Messages ever put (whole ones), as a 64-bit count: the base that
    /// put-lock holders store after each message, extended by the tail's
    /// 24-bit count. Exact while fewer than 2^24 messages were published
    /// since the base was stored — at most one is, since producers take
    /// turns and each stores the base after its message (a producer killed
    /// in between leaves one for the next to count).
    fn total_put(&self) -> u64 {
        let base = self.mem.load64(OFF_PUT_BASE, SeqCst);
        let count = self.tail().count;
        base + (count.wrapping_sub(base) & COUNT_MASK)
    }

    /// Items put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u64 {
        let done = self.mem.load64(OFF_DONE, SeqCst);
        self.total_put().saturating_sub(done)
    }

    /// Marks one task done; `false` when none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let mut cur = self.mem.load64(OFF_DONE, SeqCst);
        loop {
            let put = self.total_put();
            if cur >= put {
                return false;
            }
            match self.mem.cas64(OFF_DONE, cur, cur + 1) {
                Ok(_) => {
                    if cur + 1 == put {
                        self.notify(OFF_JOIN_SEQ, OFF_JOIN_SLEEPERS);
                    }
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Counts `n` messages that will never be handed out (dropped as
    /// corrupt, or undecodable) as done, so that `join` does not wait for
    /// them.
    pub(crate) fn count_done(&self, n: u64) {
        if self.joinable && n > 0 {
            self.mem.add64(OFF_DONE, n, SeqCst);
            self.notify(OFF_JOIN_SEQ, OFF_JOIN_SLEEPERS);
        }
    }

    /// Waits until every item put has been marked done; `false` on timeout.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let mut ready = || self.unfinished() == 0;
        !matches!(
            self.wait_for(OFF_JOIN_SEQ, OFF_JOIN_SLEEPERS, deadline, &mut ready, None),
            Waited::TimedOut
        )
    }
}

#[cfg(test)]
impl Ring {
    /// Moves the counts on as `n` messages put and taken would (the ring's
    /// bytes stay as they are), the put base with them: a fast-forward for
    /// tests of counters that wrap.
    pub(crate) fn pass_messages(&self, n: u64) {
        let forward = |m: Mark| Mark {
            pos: m.pos,
            count: (m.count + n) & COUNT_MASK,
        };
        let (tail, head) = (self.tail(), self.head());
        self.mem.store64(OFF_TAIL, forward(tail).pack(), SeqCst);
        self.mem.store64(OFF_HEAD, forward(head).pack(), SeqCst);
        self.mem.add64(OFF_PUT_BASE, n, SeqCst);
    }
}
