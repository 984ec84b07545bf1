//! The shared-memory ring under every queue and pipe.
//!
#![doc = include_str!("ring.md")]

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mproc_shm::Segment;
use mproc_sync::wait::{self, WaitResult};
use mproc_sync::{Lock, LockError, LockGuard};

use crate::error::BadMessage;
use crate::frame::{self, Assembler, Chunk, Step, FIRST, HEADER, LAST};

const MAGIC: u32 = u32::from_le_bytes(*b"MPQR");
const VERSION: u32 = 1;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_FINGERPRINT: usize = 8;
const OFF_CAPACITY: usize = 16;
const OFF_MAXSIZE: usize = 24;
const OFF_KIND: usize = 32;
const OFF_CLOSED: usize = 36;
const OFF_ABANDONED: usize = 40;
const OFF_PUT_LOCK: usize = 64;
const OFF_TAIL: usize = 128;
const OFF_CACHED_HEAD: usize = 136;
const OFF_WRITER: usize = 144;
const OFF_GET_LOCK: usize = 192;
const OFF_HEAD: usize = 256;
const OFF_CACHED_TAIL: usize = 264;
const OFF_DATA_SEQ: usize = 320;
const OFF_DATA_SLEEPERS: usize = 324;
const OFF_SPACE_SEQ: usize = 384;
const OFF_SPACE_SLEEPERS: usize = 388;
const OFF_DONE: usize = 448;
const OFF_JOIN_SEQ: usize = 452;
const OFF_JOIN_SLEEPERS: usize = 456;
const DATA: usize = 4096;

/// The smallest and largest data areas.
pub(crate) const MIN_CAPACITY: usize = 64;
pub(crate) const MAX_CAPACITY: usize = 64 << 20;

const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// How often a consumer waiting for the rest of a message checks its writer.
const PROBE: Duration = Duration::from_millis(10);

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
struct Mark {
    pos: u64,
    count: u64,
}

impl Mark {
    fn unpack(w: u64) -> Mark {
        Mark {
            pos: w >> COUNT_BITS,
            count: w & COUNT_MASK,
        }
    }

    fn pack(self) -> u64 {
        ((self.pos & POS_MASK) << COUNT_BITS) | (self.count & COUNT_MASK)
    }

    fn advance(self, units: u64, messages: u64) -> Mark {
        Mark {
            pos: (self.pos + units) & POS_MASK,
            count: (self.count + messages) & COUNT_MASK,
        }
    }
}

/// A stable 64-bit fingerprint of a type's name (FNV-1a).
pub(crate) fn fingerprint<T: ?Sized>() -> u64 {
    std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// How long an operation may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all.
    No,
    /// Until the deadline (`None`: for ever).
    Until(Option<Instant>),
}

impl Wait {
    pub(crate) fn timeout(d: Duration) -> Wait {
        Wait::Until(wait::deadline(d))
    }

    pub(crate) const FOREVER: Wait = Wait::Until(None);
}

/// Why a put did not happen.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PutFail {
    Full,
    Closed,
    /// The probe said the other side is gone.
    Gone,
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

/// A ring handle: the segment and its two locks.
#[derive(Clone)]
pub(crate) struct Ring {
    seg: Segment,
    put_lock: Lock,
    get_lock: Lock,
    cap: usize,
    max_chunk: usize,
    maxsize: u64,
}

impl std::fmt::Debug for Ring {
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

impl Ring {
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
        let put_lock = Lock::new_in(seg.clone(), OFF_PUT_LOCK)?;
        let get_lock = Lock::new_in(seg.clone(), OFF_GET_LOCK)?;
        let u64_at = |off| seg.atomic_u64(off).expect("header fits");
        let u32_at = |off| seg.atomic_u32(off).expect("header fits");
        u32_at(OFF_VERSION).store(VERSION, Ordering::Relaxed);
        u64_at(OFF_FINGERPRINT).store(fingerprint, Ordering::Relaxed);
        u64_at(OFF_CAPACITY).store(cap as u64, Ordering::Relaxed);
        u64_at(OFF_MAXSIZE).store(maxsize, Ordering::Relaxed);
        u32_at(OFF_KIND).store(kind as u32, Ordering::Relaxed);
        u32_at(OFF_MAGIC).store(MAGIC, Ordering::Release);
        Ok(Ring::from_parts(seg, put_lock, get_lock, cap, maxsize))
    }

    fn from_parts(seg: Segment, put_lock: Lock, get_lock: Lock, cap: usize, maxsize: u64) -> Ring {
        Ring {
            seg,
            put_lock,
            get_lock,
            cap,
            max_chunk: (cap / 2 - HEADER).min(frame::MAX_CHUNK),
            maxsize,
        }
    }

    /// The ring in `seg`, checked to be a `kind` of items with `fingerprint`.
    pub(crate) fn attach(seg: Segment, kind: Kind, fingerprint: u64) -> io::Result<Ring> {
        if seg.len() < DATA + MIN_CAPACITY {
            return Err(invalid("segment is too small to be a queue".into()));
        }
        let u64_at = |off| seg.atomic_u64(off).expect("header fits");
        let u32_at = |off| seg.atomic_u32(off).expect("header fits");
        if u32_at(OFF_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(invalid("segment does not hold an mproc queue".into()));
        }
        let version = u32_at(OFF_VERSION).load(Ordering::Relaxed);
        if version != VERSION {
            return Err(invalid(format!(
                "queue layout version {version}, this build reads {VERSION}"
            )));
        }
        let found = u32_at(OFF_KIND).load(Ordering::Relaxed);
        if found != kind as u32 {
            return Err(invalid(format!(
                "segment holds {} where {} was expected",
                Kind::name(found),
                Kind::name(kind as u32)
            )));
        }
        if u64_at(OFF_FINGERPRINT).load(Ordering::Relaxed) != fingerprint {
            return Err(invalid(
                "queue carries another item type than the one it was attached as".into(),
            ));
        }
        let cap = u64_at(OFF_CAPACITY).load(Ordering::Relaxed) as usize;
        if !cap.is_power_of_two()
            || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap)
            || DATA + cap > seg.len()
        {
            return Err(invalid(format!(
                "queue header claims an impossible capacity {cap}"
            )));
        }
        let maxsize = u64_at(OFF_MAXSIZE).load(Ordering::Relaxed);
        let put_lock = Lock::attach_in(seg.clone(), OFF_PUT_LOCK)?;
        let get_lock = Lock::attach_in(seg.clone(), OFF_GET_LOCK)?;
        Ok(Ring::from_parts(
            seg,
            put_lock,
            get_lock,
            cap,
            maxsize.min(COUNT_MASK),
        ))
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    pub(crate) fn maxsize(&self) -> Option<u64> {
        (self.maxsize > 0).then_some(self.maxsize)
    }

    #[inline]
    fn u32(&self, off: usize) -> &AtomicU32 {
        self.seg
            .atomic_u32(off)
            .expect("the header is inside the segment")
    }

    #[inline]
    fn u64(&self, off: usize) -> &AtomicU64 {
        self.seg
            .atomic_u64(off)
            .expect("the header is inside the segment")
    }

    fn tail(&self) -> Mark {
        Mark::unpack(self.u64(OFF_TAIL).load(Ordering::SeqCst))
    }

    fn head(&self) -> Mark {
        Mark::unpack(self.u64(OFF_HEAD).load(Ordering::SeqCst))
    }

    /// Bytes published and not yet consumed.
    fn used(tail: Mark, head: Mark) -> usize {
        (((tail.pos.wrapping_sub(head.pos)) & POS_MASK) * 8) as usize
    }

    /// Messages in the ring (whole ones: a message counts once its last
    /// chunk is published, until its last chunk is consumed).
    pub(crate) fn len(&self) -> u64 {
        let head = self.head();
        let tail = self.tail();
        tail.count.wrapping_sub(head.count) & COUNT_MASK
    }

    /// Bytes published and not yet consumed, headers included.
    pub(crate) fn bytes_queued(&self) -> usize {
        let head = self.head();
        Ring::used(self.tail(), head)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.u32(OFF_CLOSED).load(Ordering::SeqCst) != 0
    }

    /// Closes the ring for everyone and wakes every sleeper. Idempotent.
    pub(crate) fn close(&self) {
        if self.u32(OFF_CLOSED).swap(1, Ordering::SeqCst) == 0 {
            for seq in [OFF_DATA_SEQ, OFF_SPACE_SEQ, OFF_JOIN_SEQ] {
                self.u32(seq).fetch_add(1, Ordering::SeqCst);
                wait::wake_all(self.u32(seq));
            }
        }
    }

    pub(crate) fn abandoned(&self) -> u64 {
        self.u64(OFF_ABANDONED).load(Ordering::Relaxed)
    }

    fn notify(&self, seq: usize, sleepers: usize) {
        if self.u32(sleepers).load(Ordering::SeqCst) > 0 {
            self.u32(seq).fetch_add(1, Ordering::SeqCst);
            wait::wake_all(self.u32(seq));
        }
    }

    /// Waits until `ready()`: spins, then sleeps on `seq`. With `probe`, wakes
    /// every [`PROBE`] to ask it whether to give up.
    fn wait_for(
        &self,
        seq: usize,
        sleepers: usize,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
        mut probe: Option<&mut dyn FnMut() -> bool>,
    ) -> Waited {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return if ready() {
                Waited::Ready
            } else {
                Waited::TimedOut
            };
        }
        if wait::spin_until(&mut ready) {
            return Waited::Ready;
        }
        if let Some(p) = probe.as_mut() {
            if p() {
                return Waited::GaveUp;
            }
        }
        let (seq, sleepers) = (self.u32(seq), self.u32(sleepers));
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Waited::TimedOut;
            }
            let slice = match (&probe, deadline) {
                (Some(_), Some(d)) => Some(d.min(now + PROBE)),
                (Some(_), None) => Some(now + PROBE),
                (None, d) => d,
            };
            sleepers.fetch_add(1, Ordering::SeqCst);
            let expected = seq.load(Ordering::SeqCst);
            let ok = ready();
            let r = if ok {
                WaitResult::Woken
            } else {
                wait::park(seq, expected, slice)
            };
            sleepers.fetch_sub(1, Ordering::SeqCst);
            if ok || ready() {
                return Waited::Ready;
            }
            if r == WaitResult::TimedOut {
                if let Some(p) = probe.as_mut() {
                    if p() {
                        return Waited::GaveUp;
                    }
                }
            }
        }
    }

    fn lock<'a>(&self, lock: &'a Lock, how: Wait) -> Option<LockGuard<'a>> {
        let r = match how {
            Wait::No => lock.try_lock(),
            Wait::Until(None) => lock.lock(),
            Wait::Until(Some(d)) => lock.lock_timeout(d.saturating_duration_since(Instant::now())),
        };
        match r {
            Ok(g) => Some(g),
            // Only whole chunks are ever published: a dead holder leaves
            // nothing to repair here (see the crash story).
            Err(LockError::OwnerDied(g)) => {
                g.mark_consistent();
                Some(g)
            }
            Err(_) => None,
        }
    }

    fn write_at(&self, pos: u64, bytes: &[u8]) {
        let start = ((pos * 8) as usize) & (self.cap - 1);
        let first = bytes.len().min(self.cap - start);
        let _ = self.seg.write(DATA + start, &bytes[..first]);
        if first < bytes.len() {
            let _ = self.seg.write(DATA, &bytes[first..]);
        }
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) {
        let start = ((pos * 8) as usize) & (self.cap - 1);
        let first = buf.len().min(self.cap - start);
        let _ = self.seg.read(DATA + start, &mut buf[..first]);
        if first < buf.len() {
            let _ = self.seg.read(DATA, &mut buf[first..]);
        }
    }

    /// Puts one message.
    pub(crate) fn put(&self, msg: &[u8], how: Wait, mut gone: Probe<'_>) -> Result<(), PutFail> {
        if self.is_closed() {
            return Err(PutFail::Closed);
        }
        let Some(_guard) = self.lock(&self.put_lock, how) else {
            return Err(PutFail::Full);
        };
        let deadline = match how {
            Wait::No => Some(Instant::now()),
            Wait::Until(d) => d,
        };
        if self.maxsize > 0 {
            let ready = || self.len() < self.maxsize || self.is_closed();
            if let Waited::TimedOut =
                self.wait_for(OFF_SPACE_SEQ, OFF_SPACE_SLEEPERS, deadline, ready, None)
            {
                return Err(PutFail::Full);
            }
        }
        if self.is_closed() {
            return Err(PutFail::Closed);
        }
        if matches!(how, Wait::No) {
            let total: usize = if msg.is_empty() {
                frame::footprint(0)
            } else {
                msg.chunks(self.max_chunk)
                    .map(|c| frame::footprint(c.len()))
                    .sum()
            };
            if total > self.cap - Ring::used(self.tail(), self.head()) {
                return Err(PutFail::Full);
            }
        }
        // Only a message of several chunks can be seen in part: its writer
        // is recorded for consumers to probe. A single chunk is published
        // whole, in one store.
        let writer = self.u32(OFF_WRITER);
        let streamed = msg.len() > self.max_chunk;
        if streamed {
            writer.store(std::process::id(), Ordering::SeqCst);
        }
        let mut tail = self.tail();
        let mut off = 0;
        loop {
            let n = (msg.len() - off).min(self.max_chunk);
            let last = off + n == msg.len();
            let need = frame::footprint(n);
            let room = || self.room(tail) >= need || self.is_closed();
            let probe = gone.as_mut().map(|g| &mut **g as &mut dyn FnMut() -> bool);
            let fail = match self.wait_for(OFF_SPACE_SEQ, OFF_SPACE_SLEEPERS, deadline, room, probe)
            {
                Waited::Ready => None,
                Waited::TimedOut => Some(PutFail::Full),
                Waited::GaveUp => Some(PutFail::Gone),
            };
            if let Some(fail) = fail {
                // Chunks already published are abandoned: the consumer sees
                // `writer` cleared (or the next FIRST) and drops them.
                writer.store(0, Ordering::SeqCst);
                return Err(fail);
            }
            if self.is_closed() {
                writer.store(0, Ordering::SeqCst);
                return Err(PutFail::Closed);
            }
            let flags = if off == 0 { FIRST } else { 0 } | if last { LAST } else { 0 };
            let header = Chunk {
                len: n as u32,
                flags,
            }
            .encode();
            self.write_at(tail.pos, &header);
            self.write_at(tail.pos + 1, &msg[off..off + n]);
            tail = tail.advance((need / 8) as u64, u64::from(last));
            self.u64(OFF_TAIL).store(tail.pack(), Ordering::SeqCst);
            self.notify(OFF_DATA_SEQ, OFF_DATA_SLEEPERS);
            off += n;
            if last {
                break;
            }
        }
        if streamed {
            writer.store(0, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Free bytes for a producer whose tail is `tail`: from its copy of
    /// head, reloaded only when the copy shows too little.
    fn room(&self, tail: Mark) -> usize {
        let cached = self.u64(OFF_CACHED_HEAD);
        let free = self.cap - Ring::used(tail, Mark::unpack(cached.load(Ordering::Relaxed)));
        if free >= frame::footprint(self.max_chunk) {
            return free;
        }
        let head = self.head();
        cached.store(head.pack(), Ordering::Relaxed);
        self.cap - Ring::used(tail, head)
    }

    /// The consumer's view of tail: its copy, reloaded when the copy shows
    /// nothing past `head`.
    fn seen_tail(&self, head: Mark) -> Mark {
        let cached = self.u64(OFF_CACHED_TAIL);
        let t = Mark::unpack(cached.load(Ordering::Relaxed));
        if t.pos != head.pos {
            return t;
        }
        let tail = self.tail();
        cached.store(tail.pack(), Ordering::Relaxed);
        tail
    }

    /// Whether a chunk is published and not consumed.
    fn available(&self) -> bool {
        let head = self.head();
        self.seen_tail(head).pos != head.pos
    }

    /// Waits until a message can be read (or the ring is closed), without
    /// taking it: `Ok(true)` when data is there.
    /// Waits until a message can be read, the ring is closed or the probe
    /// says the other side is gone — whatever makes a `get` not block.
    pub(crate) fn poll(&self, how: Wait, gone: Probe<'_>) -> bool {
        let deadline = match how {
            Wait::No => Some(Instant::now()),
            Wait::Until(d) => d,
        };
        let ready = || self.available() || self.is_closed();
        !matches!(
            self.wait_for(OFF_DATA_SEQ, OFF_DATA_SLEEPERS, deadline, ready, gone),
            Waited::TimedOut
        )
    }

    /// Gets one message into `buf` (cleared first).
    pub(crate) fn get(&self, buf: &mut Vec<u8>, how: Wait, gone: Probe<'_>) -> Result<(), GetFail> {
        let Some(_guard) = self.lock(&self.get_lock, how) else {
            return Err(GetFail::Empty);
        };
        let deadline = match how {
            Wait::No => Some(Instant::now()),
            Wait::Until(d) => d,
        };
        let mut asm = Assembler {
            buf: std::mem::take(buf),
            ..Assembler::default()
        };
        asm.buf.clear();
        let result = self.assemble(&mut asm, deadline, gone);
        if asm.abandoned > 0 {
            self.u64(OFF_ABANDONED)
                .fetch_add(asm.abandoned, Ordering::Relaxed);
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
        let head_word = self.u64(OFF_HEAD);
        loop {
            if !self.available() {
                if asm.mid || asm.skipping {
                    // The rest of a message: wait while its writer lives and
                    // has not given up. (No deadline: the writer's own put
                    // deadline bounds this wait.)
                    let writer = self.u32(OFF_WRITER);
                    let mut gone = || {
                        let w = writer.load(Ordering::SeqCst);
                        !self.available() && (w == 0 || mproc_shm::ProcessIdent::of(w).is_none())
                    };
                    let ready = || self.available() || self.is_closed();
                    match self.wait_for(
                        OFF_DATA_SEQ,
                        OFF_DATA_SLEEPERS,
                        None,
                        ready,
                        Some(&mut gone),
                    ) {
                        Waited::GaveUp => asm.abandon(),
                        _ if !self.available() && self.is_closed() => asm.abandon(),
                        _ => {}
                    }
                    continue;
                }
                if self.is_closed() {
                    return Err(GetFail::Closed);
                }
                let ready = || self.available() || self.is_closed();
                let probe = gone.as_mut().map(|g| &mut **g as &mut dyn FnMut() -> bool);
                match self.wait_for(OFF_DATA_SEQ, OFF_DATA_SLEEPERS, deadline, ready, probe) {
                    Waited::Ready => {}
                    Waited::TimedOut => return Err(GetFail::Empty),
                    // Everything the peer sent before it went is published:
                    // drain it, then report.
                    Waited::GaveUp if self.available() => {}
                    Waited::GaveUp => return Err(GetFail::Gone),
                }
                continue;
            }
            let head = self.head();
            let tail = self.seen_tail(head);
            let mut h = [0u8; HEADER];
            self.read_at(head.pos, &mut h);
            let chunk = match Chunk::decode(h, self.max_chunk, Ring::used(tail, head)) {
                Ok(c) => c,
                Err(e) => {
                    // Nothing inside the published bytes can be trusted:
                    // drop them all, with their message count.
                    head_word.store(tail.pack(), Ordering::SeqCst);
                    asm.abandon();
                    asm.abandoned += 1;
                    self.notify(OFF_SPACE_SEQ, OFF_SPACE_SLEEPERS);
                    return Err(GetFail::Bad(BadMessage::Corrupt(e)));
                }
            };
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
            head_word.store(next.pack(), Ordering::SeqCst);
            self.notify(OFF_SPACE_SEQ, OFF_SPACE_SLEEPERS);
            if step == Step::Message {
                return Ok(());
            }
        }
    }

    // JoinableQueue: tasks done, against the messages ever put (the tail's
    // count), both wrapping at 2^24.

    /// Items put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u64 {
        let done = u64::from(self.u32(OFF_DONE).load(Ordering::SeqCst));
        self.tail().count.wrapping_sub(done) & COUNT_MASK
    }

    /// Marks one task done; `false` when none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let done = self.u32(OFF_DONE);
        let mut cur = done.load(Ordering::SeqCst);
        loop {
            let put = self.tail().count;
            if u64::from(cur) == put {
                return false;
            }
            let next = ((u64::from(cur) + 1) & COUNT_MASK) as u32;
            match done.compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    if u64::from(next) == put {
                        self.notify(OFF_JOIN_SEQ, OFF_JOIN_SLEEPERS);
                    }
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Waits until every item put has been marked done; `false` on timeout.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let ready = || self.unfinished() == 0;
        !matches!(
            self.wait_for(OFF_JOIN_SEQ, OFF_JOIN_SLEEPERS, deadline, ready, None),
            Waited::TimedOut
        )
    }
}
