//! `Mem`: what the ring protocol needs from the memory it runs on.
//!
//! In production that is a [`Segment`] with the ring's two robust locks in
//! its header ([`SegMem`]); the loom model (`ring_model.rs`) puts
//! model-checked atomics, cells and mutexes behind the same trait, so the
//! very protocol code that runs across processes is explored under every
//! interleaving.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mproc_shm::{ProcessIdent, Segment};
use mproc_sync::wait::{self, WaitResult};
use mproc_sync::{Lock, LockGuard, LockTimeoutError, TryLockError};

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

    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::No => Some(Instant::now()),
            Wait::Until(d) => d,
        }
    }
}

/// Which side's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Producers take turns under the put lock.
    Put,
    /// Consumers take turns under the get lock.
    Get,
}

/// The memory of one ring: header words at fixed offsets, the data area,
/// sleeping and waking on header words, and the two side locks.
pub(crate) trait Mem {
    /// A held side lock; released on drop.
    type Guard<'a>
    where
        Self: 'a;

    fn load32(&self, off: usize, order: Ordering) -> u32;
    fn store32(&self, off: usize, value: u32, order: Ordering);
    fn add32(&self, off: usize, value: u32, order: Ordering) -> u32;
    fn sub32(&self, off: usize, value: u32, order: Ordering) -> u32;
    fn load64(&self, off: usize, order: Ordering) -> u64;
    fn store64(&self, off: usize, value: u64, order: Ordering);
    fn add64(&self, off: usize, value: u64, order: Ordering) -> u64;
    fn cas64(&self, off: usize, current: u64, new: u64) -> Result<u64, u64>;

    /// Copies bytes out of the ring's memory at `off`.
    fn read(&self, off: usize, buf: &mut [u8]);
    /// Copies bytes into the ring's memory at `off`.
    fn write(&self, off: usize, bytes: &[u8]);

    /// Spins briefly until `ready()`; whether it holds.
    fn spin_until(&self, ready: &mut dyn FnMut() -> bool) -> bool;
    /// Sleeps while the word at `off` is `expected`, until a wake, the end
    /// of a slice or `deadline` (spurious returns allowed).
    fn park(&self, off: usize, expected: u32, deadline: Option<Instant>) -> WaitResult;
    /// Wakes every sleeper on the word at `off`.
    fn wake_all(&self, off: usize);

    /// Takes a side's lock, waiting as `how` says; `None` when it could not.
    /// A dead holder's lock is taken over (only whole chunks are ever
    /// published, so there is nothing to repair).
    fn lock(&self, side: Side, how: Wait) -> Option<Self::Guard<'_>>;

    /// The calling process's identity bits (a `ProcessIdent`).
    fn me(&self) -> u64;
    /// Whether the process with identity bits `ident` has ended.
    fn has_ended(&self, ident: u64) -> bool;
}

/// A ring in a shared segment, with its put and get locks.
#[derive(Clone)]
pub(crate) struct SegMem {
    pub(crate) seg: Segment,
    pub(crate) put_lock: Lock,
    pub(crate) get_lock: Lock,
}

impl SegMem {
    #[inline]
    fn u32(&self, off: usize) -> &AtomicU32 {
        self.seg
            .atomic_u32(off)
            .expect("ring header words are inside the checked segment")
    }

    #[inline]
    fn u64(&self, off: usize) -> &AtomicU64 {
        self.seg
            .atomic_u64(off)
            .expect("ring header words are inside the checked segment")
    }
}

impl Mem for SegMem {
    type Guard<'a> = LockGuard<'a>;

    #[inline]
    fn load32(&self, off: usize, order: Ordering) -> u32 {
        self.u32(off).load(order)
    }

    #[inline]
    fn store32(&self, off: usize, value: u32, order: Ordering) {
        self.u32(off).store(value, order)
    }

    #[inline]
    fn add32(&self, off: usize, value: u32, order: Ordering) -> u32 {
        self.u32(off).fetch_add(value, order)
    }

    #[inline]
    fn sub32(&self, off: usize, value: u32, order: Ordering) -> u32 {
        self.u32(off).fetch_sub(value, order)
    }

    #[inline]
    fn load64(&self, off: usize, order: Ordering) -> u64 {
        self.u64(off).load(order)
    }

    #[inline]
    fn store64(&self, off: usize, value: u64, order: Ordering) {
        self.u64(off).store(value, order)
    }

    #[inline]
    fn add64(&self, off: usize, value: u64, order: Ordering) -> u64 {
        self.u64(off).fetch_add(value, order)
    }

    #[inline]
    fn cas64(&self, off: usize, current: u64, new: u64) -> Result<u64, u64> {
        self.u64(off)
            .compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
    }

    #[inline]
    fn read(&self, off: usize, buf: &mut [u8]) {
        // The ring computes every range inside its data area.
        let _ = self.seg.read(off, buf);
    }

    #[inline]
    fn write(&self, off: usize, bytes: &[u8]) {
        let _ = self.seg.write(off, bytes);
    }

    #[inline]
    fn spin_until(&self, ready: &mut dyn FnMut() -> bool) -> bool {
        wait::spin_until(ready)
    }

    fn park(&self, off: usize, expected: u32, deadline: Option<Instant>) -> WaitResult {
        wait::park(self.u32(off), expected, deadline)
    }

    fn wake_all(&self, off: usize) {
        wait::wake_all(self.u32(off));
    }

    fn lock(&self, side: Side, how: Wait) -> Option<LockGuard<'_>> {
        let lock = match side {
            Side::Put => &self.put_lock,
            Side::Get => &self.get_lock,
        };
        let guard = match how {
            Wait::No => lock.try_lock().map_err(TryLockError::into_guard),
            Wait::Until(None) => lock.lock().map_err(|d| Some(d.into_inner())),
            Wait::Until(Some(d)) => lock
                .lock_timeout(d.saturating_duration_since(Instant::now()))
                .map_err(LockTimeoutError::into_guard),
        };
        match guard {
            Ok(g) => Some(g),
            // A dead holder leaves nothing to repair: only whole chunks are
            // ever published.
            Err(Some(g)) => {
                g.mark_consistent();
                Some(g)
            }
            Err(None) => None,
        }
    }

    #[inline]
    fn me(&self) -> u64 {
        ProcessIdent::current().to_bits()
    }

    fn has_ended(&self, ident: u64) -> bool {
        ProcessIdent::from_bits(ident).is_none_or(ProcessIdent::has_ended)
    }
}
