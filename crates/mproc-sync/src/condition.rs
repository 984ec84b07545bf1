//! `Condition`: wait for a change announced under a lock.
//!
//! # Layout (four 32-bit words, next to the lock's own block)
//!
//! Word 0 is the kind `"COND"`, word 1 a sequence number (sleepers sleep on
//! it), words 2–3 one `u64` of counts: *enlisted* waiters (low 32 bits) and
//! wake-ups *granted* to them and not yet taken (high 32 bits), with
//! `granted ≤ enlisted` always.
//!
//! # Protocol
//!
//! A waiter, *holding the lock*, enlists (enlisted += 1), releases the lock,
//! and then loops: read the sequence, try to take a grant (one
//! compare-exchange: enlisted −= 1, granted −= 1, when granted > 0), else
//! sleep while the sequence is unchanged. `notify(n)` must hold the lock:
//! it grants `k = min(n, enlisted − granted)` wake-ups in one
//! compare-exchange, bumps the sequence and wakes `k` sleepers. Since
//! enlisting and notifying both happen under the lock, a notify sees every
//! waiter that enlisted before it, and since the grant comes before the
//! sequence bump and a waiter reads the sequence before it looks for a
//! grant, no wake-up is lost. Each grant is taken exactly once, so
//! `notify(n)` ends at most `n` waits — however many waiters spin or wake
//! up spuriously — and exactly `min(n, waiting)` of them when nobody times
//! out. A waiter whose timeout passes leaves with one compare-exchange: it
//! takes a grant if one is there (and reports a notification), else it only
//! un-enlists; so a grant is never left for a waiter that is gone.
//!
//! Grants are counted, not addressed: a waiter that enlisted after a
//! `notify` (and re-took the lock in between) may take a grant before an
//! older waiter does. Wake-ups may be spurious, as in CPython: loop on your
//! predicate, or use [`Condition::wait_while`].
//!
//! # Crash story
//!
//! A waiter killed while asleep holds nothing (the lock was released) and
//! stays enlisted: a later `notify` may grant it a wake-up that a later
//! waiter then takes at once (a spurious wake-up, which callers tolerate).
//! A notifier killed after granting and before its wake call (kill point
//! `condition.notified`) costs the sleepers at most one
//! [`SLICE`](crate::wait::SLICE): they look for grants whenever a slice
//! ends. A process killed while holding the lock is the lock's story: the
//! next locker, including a waiter re-taking it, learns
//! [`WaitError::OwnerDied`].

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mproc_shm::fault;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::block::{Block, WireBlock, KIND_CONDITION};
use crate::lock::{Lock, LockGuard, NotOwner};
use crate::rlock::{RLock, RLockGuard};
use crate::sys;
use crate::wait::{self, WaitResult};
use crate::word::{Wide, Word};

const SEQ: usize = 1;
const COUNTS: usize = 2;
const WORDS: usize = 4;

const ENLISTED: u64 = 1;
const GRANTED: u64 = 1 << 32;

fn enlisted(c: u64) -> u64 {
    c & 0xffff_ffff
}

fn granted(c: u64) -> u64 {
    c >> 32
}

/// The condition's words: a `Block` in shared memory, or a loom model's.
pub(crate) struct Machine<'a, W: Word = AtomicU32> {
    pub(crate) seq: &'a W,
    pub(crate) counts: &'a W::Wide,
}

impl<W: Word> Machine<'_, W> {
    /// Changes the counts with `f` (`None`: leave them) in a CAS loop;
    /// returns the counts it saw last.
    fn update(&self, mut f: impl FnMut(u64) -> Option<u64>) -> (u64, bool) {
        let mut cur = self.counts.load(Ordering::SeqCst);
        loop {
            let Some(next) = f(cur) else {
                return (cur, false);
            };
            match self
                .counts
                .compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return (cur, true),
                Err(now) => cur = now,
            }
        }
    }

    /// Enlists the caller, who holds the lock.
    pub(crate) fn enlist(&self) {
        self.update(|c| Some(c.wrapping_add(ENLISTED)));
    }

    /// Takes a granted wake-up, if one is there.
    fn take_grant(&self) -> bool {
        self.update(|c| (granted(c) > 0 && enlisted(c) > 0).then(|| c - GRANTED - ENLISTED))
            .1
    }

    /// Leaves after a timeout: takes a grant if one is there (`true`), else
    /// only un-enlists.
    fn leave(&self) -> bool {
        let (seen, _) = self.update(|c| {
            if granted(c) > 0 && enlisted(c) > 0 {
                Some(c - GRANTED - ENLISTED)
            } else if enlisted(c) > 0 {
                Some(c - ENLISTED)
            } else {
                None // corrupt counts: nothing of ours to undo
            }
        });
        granted(seen) > 0 && enlisted(seen) > 0
    }

    /// After enlisting and releasing the lock: waits for a grant until
    /// `deadline`; `true` when notified.
    pub(crate) fn await_grant(&self, deadline: Option<Instant>) -> bool {
        loop {
            let seq = self.seq.load(Ordering::SeqCst);
            if self.take_grant() {
                return true;
            }
            if self.seq.wait(seq, deadline) == WaitResult::TimedOut {
                return self.leave();
            }
        }
    }

    /// Grants up to `n` wake-ups to enlisted waiters (caller holds the
    /// lock); returns how many.
    pub(crate) fn notify(&self, n: u32) -> u64 {
        let mut k = 0;
        self.update(|c| {
            k = enlisted(c).saturating_sub(granted(c)).min(u64::from(n));
            (k > 0).then(|| c.wrapping_add(k * GRANTED))
        });
        if k > 0 {
            fault::point("condition.notified");
            // Only notifiers, under the lock, change the sequence.
            let seq = self.seq.load(Ordering::SeqCst);
            self.seq.store(seq.wrapping_add(1), Ordering::SeqCst);
            self.seq.wake(u32::try_from(k).unwrap_or(u32::MAX));
        }
        k
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Lock {}
    impl Sealed for crate::RLock {}
}

/// The locks a [`Condition`] can use: [`Lock`] and [`RLock`].
pub trait ConditionLock: sealed::Sealed + Clone {
    /// The lock's guard type.
    type Guard<'a>
    where
        Self: 'a;

    #[doc(hidden)]
    fn held_by_caller(&self) -> bool;
    #[doc(hidden)]
    fn unlock_for_wait(&self) -> u32;
    #[doc(hidden)]
    fn relock_after_wait(&self, saved: u32) -> bool;
}

impl ConditionLock for Lock {
    type Guard<'a> = LockGuard<'a>;

    fn held_by_caller(&self) -> bool {
        self.raw().held_by(sys::me())
    }

    fn unlock_for_wait(&self) -> u32 {
        self.raw().release();
        1
    }

    fn relock_after_wait(&self, _saved: u32) -> bool {
        self.raw().acquire(sys::me(), true, None).unwrap_or(false)
    }
}

impl ConditionLock for RLock {
    type Guard<'a> = RLockGuard<'a>;

    fn held_by_caller(&self) -> bool {
        self.is_owned()
    }

    fn unlock_for_wait(&self) -> u32 {
        self.release_all()
    }

    fn relock_after_wait(&self, saved: u32) -> bool {
        self.restore(saved)
    }
}

/// Python's `multiprocessing.Condition`, over a [`Lock`] (the default) or
/// an [`RLock`].
///
/// # Examples
///
/// ```
/// use mproc_sync::Condition;
///
/// let cond = Condition::new()?;
/// let guard = cond.get_lock().lock()?;
/// cond.notify_all()?;               // holding the lock: fine
/// drop(guard);
/// assert!(cond.notify(1).is_err()); // not holding it: NotOwner
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Condition<L: ConditionLock = Lock> {
    lock: L,
    block: Block,
}

impl Condition<Lock> {
    /// A condition with a new [`Lock`] of its own.
    ///
    /// # Errors
    ///
    /// The OS error when a segment cannot be created.
    pub fn new() -> io::Result<Condition<Lock>> {
        Condition::with_lock(Lock::new()?)
    }
}

/// Why a wait returned an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError {
    /// The calling thread did not hold the condition's lock.
    NotOwner,
    /// The lock was re-taken after a holder died with it: the guard is valid,
    /// but the data may be inconsistent (see [`LockGuard::mark_consistent`]).
    OwnerDied,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::NotOwner => "the calling thread does not hold the condition's lock",
            WaitError::OwnerDied => {
                "a holder of the condition's lock died; the data may be inconsistent"
            }
        })
    }
}

impl std::error::Error for WaitError {}

impl<L: ConditionLock> Condition<L> {
    /// A condition over an existing lock.
    ///
    /// # Errors
    ///
    /// The OS error when the segment cannot be created.
    pub fn with_lock(lock: L) -> io::Result<Condition<L>> {
        Ok(Condition {
            lock,
            block: Block::new(KIND_CONDITION, WORDS)?,
        })
    }

    /// The condition's lock.
    pub fn get_lock(&self) -> &L {
        &self.lock
    }

    fn machine(&self) -> Machine<'_> {
        Machine {
            seq: self.block.word(SEQ),
            counts: self.block.wide(COUNTS),
        }
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool, WaitError> {
        if !self.lock.held_by_caller() {
            return Err(WaitError::NotOwner);
        }
        let machine = self.machine();
        machine.enlist();
        let saved = self.lock.unlock_for_wait();
        let notified = machine.await_grant(deadline);
        if self.lock.relock_after_wait(saved) {
            return Err(WaitError::OwnerDied);
        }
        Ok(notified)
    }

    /// Releases the lock, sleeps until notified, and re-takes the lock.
    /// May return spuriously.
    ///
    /// # Errors
    ///
    /// [`WaitError::NotOwner`] when the calling thread does not hold the
    /// lock; [`WaitError::OwnerDied`] (lock re-taken) after a holder died.
    pub fn wait(&self, _guard: &mut L::Guard<'_>) -> Result<(), WaitError> {
        self.wait_until(None).map(drop)
    }

    /// Like [`wait`](Condition::wait) for at most `timeout`; `Ok(true)`
    /// when notified, `Ok(false)` when the timeout passed without a
    /// notification.
    ///
    /// # Errors
    ///
    /// As [`wait`](Condition::wait).
    pub fn wait_timeout(
        &self,
        _guard: &mut L::Guard<'_>,
        timeout: Duration,
    ) -> Result<bool, WaitError> {
        self.wait_until(wait::deadline(timeout))
    }

    /// Waits while `condition()` is true (Python's `wait_for` with the test
    /// inverted, as in `std` and parking_lot).
    ///
    /// # Errors
    ///
    /// As [`wait`](Condition::wait).
    pub fn wait_while(
        &self,
        guard: &mut L::Guard<'_>,
        mut condition: impl FnMut() -> bool,
    ) -> Result<(), WaitError> {
        while condition() {
            self.wait(guard)?;
        }
        Ok(())
    }

    /// Waits while `condition()` is true, for at most `timeout`; `Ok(false)`
    /// when it was still true at the deadline.
    ///
    /// # Errors
    ///
    /// As [`wait`](Condition::wait).
    pub fn wait_while_timeout(
        &self,
        _guard: &mut L::Guard<'_>,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) -> Result<bool, WaitError> {
        let deadline = wait::deadline(timeout);
        while condition() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            self.wait_until(deadline)?;
        }
        Ok(true)
    }

    /// Wakes up to `n` waiters (at most `n` waits end, however many
    /// threads wait). The caller must hold the lock.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] when the calling thread does not hold the lock.
    pub fn notify(&self, n: u32) -> Result<(), NotOwner> {
        if !self.lock.held_by_caller() {
            return Err(NotOwner);
        }
        self.machine().notify(n);
        Ok(())
    }

    /// Wakes every waiter. The caller must hold the lock.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] when the calling thread does not hold the lock.
    pub fn notify_all(&self) -> Result<(), NotOwner> {
        self.notify(u32::MAX)
    }
}

impl<L: ConditionLock + fmt::Debug> fmt::Debug for Condition<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "L: Serialize + DeserializeOwned")]
struct Wire<L> {
    lock: L,
    block: WireBlock,
}

impl<L: ConditionLock + Serialize + DeserializeOwned> Serialize for Condition<L> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            lock: self.lock.clone(),
            block: self.block.to_wire(),
        }
        .serialize(s)
    }
}

impl<'de, L: ConditionLock + Serialize + DeserializeOwned> Deserialize<'de> for Condition<L> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::<L>::deserialize(d)?;
        let block = Block::from_wire(w.block, KIND_CONDITION, |b: &Block| b.len() == WORDS)
            .map_err(mproc_shm::transfer::de_error)?;
        Ok(Condition {
            lock: w.lock,
            block,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_without_the_lock_is_an_error() {
        let cond = Condition::new().unwrap();
        let other = Lock::new().unwrap();
        let mut g = other.lock().unwrap();
        assert_eq!(
            cond.wait_timeout(&mut g, Duration::from_millis(1)),
            Err(WaitError::NotOwner)
        );
    }

    #[test]
    fn rlock_condition_restores_the_count() {
        let cond = Condition::with_lock(RLock::new().unwrap()).unwrap();
        let _a = cond.get_lock().lock().unwrap();
        let mut b = cond.get_lock().lock().unwrap();
        assert_eq!(
            cond.wait_timeout(&mut b, Duration::from_millis(5)),
            Ok(false)
        );
        assert_eq!(cond.get_lock().count(), 2);
    }

    #[test]
    fn notify_wakes_a_waiting_thread() {
        let cond = Condition::new().unwrap();
        let flag = mproc_shm::RawValue::new(0u32).unwrap();
        let (c2, f2) = (cond.clone(), flag.clone());
        let t = std::thread::spawn(move || {
            let mut g = c2.get_lock().lock().unwrap();
            c2.wait_while(&mut g, || f2.get() == 0).unwrap();
        });
        let _g = cond.get_lock().lock().unwrap();
        flag.set(1);
        cond.notify_all().unwrap();
        drop(_g);
        t.join().unwrap();
    }
}
