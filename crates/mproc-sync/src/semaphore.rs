//! `Semaphore` and `BoundedSemaphore`: a counter of permits in shared memory.
//!
//! # Layout (four 32-bit words)
//!
//! | word | meaning |
//! |---|---|
//! | 0 | kind `"SEMA"` |
//! | 1 | value: permits available |
//! | 2 | sleepers: how many acquirers may be asleep on word 1 |
//! | 3 | bound: the most permits `release` may make (`u32::MAX` = unbounded) |
//!
//! `acquire` decrements the value with a compare-exchange (`Acquire`) when it
//! is positive; otherwise it counts itself in word 2 and sleeps on word 1
//! while it reads 0. `release` increments with a compare-exchange that
//! refuses to pass the bound (`Release`) and wakes one sleeper when word 2
//! says there may be one. Implemented in user space, so `value()` works on
//! macOS too (unlike CPython's).
//!
//! # Crash story
//!
//! A semaphore has no owner: a process that dies holding a permit keeps it
//! for ever, exactly as with POSIX and CPython semaphores. A process killed
//! while asleep leaves word 2 one too high, which costs later releases a
//! spare wake call and nothing else. A process killed in `release` after
//! the value went up and before its wake call (kill point
//! `semaphore.released`) costs a sleeper at most one
//! [`SLICE`](crate::wait::SLICE): sleepers re-check the value when their
//! slice ends.

use std::fmt;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mproc_shm::fault;

use crate::block::{block_serde, Block, KIND_SEMAPHORE};
use crate::wait::{self, WaitResult};

const VALUE: usize = 1;
const SLEEPERS: usize = 2;
const BOUND: usize = 3;

/// A counting semaphore shared between processes.
///
/// The start value is a `u32`, so a negative start does not compile:
///
/// ```compile_fail
/// let s = mproc_sync::Semaphore::new(-1);
/// ```
///
/// # Examples
///
/// ```
/// use mproc_sync::Semaphore;
///
/// let slots = Semaphore::new(2)?;
/// slots.acquire();
/// slots.acquire();
/// assert!(!slots.try_acquire());
/// slots.release()?;
/// assert_eq!(slots.value(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    block: Block,
}

block_serde!(Semaphore, KIND_SEMAPHORE, |b: &Block| b.len() == 4);

impl Semaphore {
    /// A semaphore holding `value` permits, without an upper bound.
    ///
    /// # Errors
    ///
    /// The OS error when the segment cannot be created.
    pub fn new(value: u32) -> io::Result<Semaphore> {
        Semaphore::with_bound(value, u32::MAX)
    }

    fn with_bound(value: u32, bound: u32) -> io::Result<Semaphore> {
        let block = Block::new(KIND_SEMAPHORE, 4)?;
        block.word(VALUE).store(value, Ordering::Relaxed);
        block.word(BOUND).store(bound, Ordering::Release);
        Ok(Semaphore { block })
    }

    fn from_block(block: Block) -> Semaphore {
        Semaphore { block }
    }

    fn try_take(&self) -> bool {
        let v = self.block.word(VALUE);
        let mut cur = v.load(Ordering::Relaxed);
        while cur > 0 {
            match v.compare_exchange_weak(cur, cur - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    fn take(&self, deadline: Option<Instant>) -> bool {
        if self.try_take() {
            return true;
        }
        let v = self.block.word(VALUE);
        if wait::spin(v, 0) && self.try_take() {
            return true;
        }
        let sleepers = self.block.word(SLEEPERS);
        loop {
            let r = wait::sleep_counted(v, sleepers, 0, deadline);
            if self.try_take() {
                return true;
            }
            if r == WaitResult::TimedOut {
                return false;
            }
        }
    }

    /// Takes a permit, waiting for one if there is none.
    pub fn acquire(&self) {
        self.take(None);
    }

    /// Takes a permit if one is free; `false` otherwise.
    pub fn try_acquire(&self) -> bool {
        self.try_take()
    }

    /// Takes a permit, waiting at most `timeout`; `false` on timeout.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.take(wait::deadline(timeout))
    }

    /// Returns a permit and wakes one waiter.
    ///
    /// # Errors
    ///
    /// [`OverRelease`] when a [`BoundedSemaphore`] is already at its bound
    /// (or a plain semaphore at `u32::MAX`); the value is unchanged.
    pub fn release(&self) -> Result<(), OverRelease> {
        let v = self.block.word(VALUE);
        let bound = self.block.word(BOUND).load(Ordering::Relaxed);
        let mut cur = v.load(Ordering::Relaxed);
        loop {
            if cur >= bound {
                return Err(OverRelease { bound });
            }
            match v.compare_exchange_weak(cur, cur + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        fault::point("semaphore.released");
        if self.block.word(SLEEPERS).load(Ordering::SeqCst) > 0 {
            wait::wake_one(v);
        }
        Ok(())
    }

    /// The permits available now (a snapshot).
    pub fn value(&self) -> u32 {
        self.block.word(VALUE).load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .finish()
    }
}

/// A semaphore that refuses to be released above its start value
/// (Python's `BoundedSemaphore`).
///
/// # Examples
///
/// ```
/// use mproc_sync::BoundedSemaphore;
///
/// let s = BoundedSemaphore::new(1)?;
/// assert!(s.release().is_err()); // already at its bound
/// s.acquire();
/// assert!(s.release().is_ok());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BoundedSemaphore {
    sem: Semaphore,
}

impl BoundedSemaphore {
    /// A semaphore holding `value` permits, never more.
    ///
    /// # Errors
    ///
    /// The OS error when the segment cannot be created.
    pub fn new(value: u32) -> io::Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            sem: Semaphore::with_bound(value, value)?,
        })
    }

    /// See [`Semaphore::acquire`].
    pub fn acquire(&self) {
        self.sem.acquire()
    }

    /// See [`Semaphore::try_acquire`].
    pub fn try_acquire(&self) -> bool {
        self.sem.try_acquire()
    }

    /// See [`Semaphore::acquire_timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.sem.acquire_timeout(timeout)
    }

    /// Returns a permit.
    ///
    /// # Errors
    ///
    /// [`OverRelease`] when every permit is already back.
    pub fn release(&self) -> Result<(), OverRelease> {
        self.sem.release()
    }

    /// See [`Semaphore::value`].
    pub fn value(&self) -> u32 {
        self.sem.value()
    }
}

/// A release would have raised a semaphore above its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverRelease {
    /// The bound.
    pub bound: u32,
}

impl fmt::Display for OverRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "semaphore released too many times (bound {})",
            self.bound
        )
    }
}

impl std::error::Error for OverRelease {}
