//! `RLock`: a re-entrant lock, held by one thread of one process at a time.
//!
//! # Layout (seven 32-bit words)
//!
//! Words 0–5 are a [`Lock`](crate::Lock)'s (kind `"RLCK"`), word 6 is the
//! recursion count, touched only by the holder. Re-entry checks that the
//! state names our pid and start-time tag and the owner record our thread
//! and start-time hash; only the holder writes the record, so the check
//! cannot be fooled by a stale value, nor by a new process that reuses a
//! dead holder's pid (and whose main thread therefore has the dead one's
//! tid): that process probes the holder as dead like anyone else. The crash story is the `Lock`'s: a dead holder's
//! lock goes to the next locker with [`OwnerDied`](crate::OwnerDied), count reset
//! to 1.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::block::{block_serde, Block, KIND_RLOCK};
use crate::lock::{
    acquired, locked, timed, tried, AcquireError, Acquired, LockResult, LockTimeoutResult, Miss,
    NotOwner, Raw, TryLockResult,
};
#[cfg(doc)]
use crate::owner_died::{LockTimeoutError, OwnerDied, TryLockError};
use crate::{sys, wait};

/// A re-entrant lock (Python's `multiprocessing.RLock`).
///
/// # Examples
///
/// ```
/// use mproc_sync::RLock;
///
/// let lock = RLock::new()?;
/// let outer = lock.lock()?;
/// let inner = lock.lock()?; // same thread: no deadlock
/// assert_eq!(lock.count(), 2);
/// drop(inner);
/// drop(outer);
/// assert_eq!(lock.count(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    block: Block,
}

block_serde!(RLock, KIND_RLOCK, |b: &Block| b.len() == RLock::WORDS);

const COUNT: usize = 6;

impl RLock {
    const WORDS: usize = 7;

    /// A new, unlocked re-entrant lock.
    ///
    /// # Errors
    ///
    /// The OS error when the segment cannot be created.
    pub fn new() -> io::Result<RLock> {
        Ok(RLock::from_block(Block::new(KIND_RLOCK, RLock::WORDS)?))
    }

    fn from_block(block: Block) -> RLock {
        RLock { block }
    }

    fn raw(&self) -> Raw<'_> {
        Raw::at(&self.block, 1)
    }

    fn take(&self, blocking: bool, timeout: Option<Duration>) -> Result<bool, Miss> {
        let me = sys::me();
        let raw = self.raw();
        if raw.held_by(me) {
            self.block.word(COUNT).fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let r = raw.acquire(me, blocking, timeout.and_then(wait::deadline));
        if r.is_ok() {
            self.block.word(COUNT).store(1, Ordering::Relaxed);
        }
        r
    }

    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock, or takes it again if this thread holds it.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (holding the guard) after a holder died.
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        locked(self.take(true, None), || self.guard())
    }

    /// Like [`lock`](RLock::lock) without waiting.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when another thread or process holds it;
    /// [`TryLockError::OwnerDied`] after a holder died.
    pub fn try_lock(&self) -> TryLockResult<RLockGuard<'_>> {
        tried(self.take(false, None), || self.guard())
    }

    /// Like [`lock`](RLock::lock), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`LockTimeoutError::Timeout`]; [`LockTimeoutError::OwnerDied`] after
    /// a holder died.
    pub fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<RLockGuard<'_>> {
        timed(self.take(true, Some(timeout)), || self.guard())
    }

    /// Python's `acquire()`, without a guard.
    pub fn acquire(&self) -> Acquired {
        match self.take(true, None) {
            Ok(true) => Acquired::OwnerDied,
            _ => Acquired::Clean,
        }
    }

    /// Python's `acquire(timeout=…)`.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Acquired, AcquireError> {
        acquired(self.take(!timeout.is_zero(), Some(timeout)))
    }

    /// Python's `release()`: drops one level; the last one unlocks.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] when the calling thread does not hold the lock.
    pub fn release(&self) -> Result<(), NotOwner> {
        if !self.raw().held_by(sys::me()) {
            return Err(NotOwner);
        }
        self.release_one();
        Ok(())
    }

    fn release_one(&self) {
        if self.block.word(COUNT).fetch_sub(1, Ordering::Relaxed) == 1 {
            self.raw().release();
        }
    }

    /// How many times the holder has taken the lock (0 when free).
    pub fn count(&self) -> u32 {
        if self.raw().holder().is_some() {
            self.block.word(COUNT).load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Whether the calling thread holds the lock.
    pub fn is_owned(&self) -> bool {
        self.raw().held_by(sys::me())
    }

    /// Releases every level (for [`Condition`](crate::Condition)), returning
    /// the count to restore.
    pub(crate) fn release_all(&self) -> u32 {
        let n = self.block.word(COUNT).swap(0, Ordering::Relaxed);
        self.raw().release();
        n
    }

    /// Re-takes the lock with a saved count; `true` when flagged inconsistent.
    pub(crate) fn restore(&self, count: u32) -> bool {
        let bad = self.raw().acquire(sys::me(), true, None).unwrap_or(false);
        self.block.word(COUNT).store(count, Ordering::Relaxed);
        bad
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("holder_pid", &self.raw().holder())
            .field("count", &self.count())
            .finish()
    }
}

/// One level of an [`RLock`]; dropping it releases that level.
#[must_use = "the level is released as soon as the guard drops"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RLockGuard<'a> {
    /// Declares the protected data repaired after an owner died.
    pub fn mark_consistent(&self) {
        self.lock.raw().bad.store(0, Ordering::Relaxed);
    }

    /// The lock this guard holds a level of.
    pub fn lock(&self) -> &'a RLock {
        self.lock
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        self.lock.release_one();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLockGuard")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_process_with_our_pid_does_not_pass_for_us() {
        let lock = RLock::new().unwrap();
        crate::lock::tests::forge_dead_incarnation(lock.raw(), true);
        lock.block.word(COUNT).store(1, Ordering::Relaxed);
        assert!(!lock.is_owned());
        assert_eq!(lock.release(), Err(NotOwner));
        let r = lock.try_lock();
        match &r {
            Err(crate::TryLockError::OwnerDied(d)) => assert_eq!(d.get_ref().lock().count(), 1),
            other => panic!("expected OwnerDied, got {other:?}"),
        }
        drop(r);
    }

    #[test]
    fn other_threads_wait_for_the_last_level() {
        let lock = RLock::new().unwrap();
        let a = lock.lock().unwrap();
        let b = lock.lock().unwrap();
        let l2 = lock.clone();
        assert!(std::thread::spawn(move || matches!(
            l2.try_lock(),
            Err(crate::TryLockError::WouldBlock)
        ))
        .join()
        .unwrap());
        let l3 = lock.clone();
        assert!(std::thread::spawn(move || l3.release() == Err(NotOwner))
            .join()
            .unwrap());
        drop(b);
        assert_eq!(lock.count(), 1);
        drop(a);
        let l4 = lock.clone();
        assert!(std::thread::spawn(move || l4.try_lock().is_ok())
            .join()
            .unwrap());
    }
}
