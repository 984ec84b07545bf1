//! `Lock`: a process-shared mutex that a dead holder never deadlocks.
//!
//! # Layout (six 32-bit words, 8-byte aligned)
//!
//! | word | name | meaning |
//! |---|---|---|
//! | 0 | kind | `"LOCK"` tag, checked when a handle arrives |
//! | 1 | state | 0 = free; else the holder id (bits 0–29) and `WAITERS` (bit 30) |
//! | 2 | inconsistent | 1 after a holder died, until `mark_consistent` |
//! | 3 | — | unused (aligns the owner record) |
//! | 4–5 | owner | the holding thread's owner record (a `u64`); 0 when free |
//!
//! The holder is named twice, each time with part of its process's start
//! time, so that a reused pid is never taken for it:
//!
//! - the *holder id* in the state word: the pid (bits 0–21) and an 8-bit
//!   tag of the start time (bits 22–29), so the one compare-exchange that
//!   takes the lock already says which incarnation of the pid took it;
//! - the *owner record*: the thread id (bits 22–63) and a 22-bit hash of
//!   the start time (bits 0–21), written by the holder right after the
//!   compare-exchange.
//!
//! Together 30 bits of the start time tell incarnations apart, and the
//! fast path writes one word more than a plain futex lock, as wave 1 did.
//!
//! # States and orderings
//!
//! Acquire is one compare-exchange `0 → holder id` (`Acquire`), after which
//! the holder writes its owner record; release clears the record and swaps
//! the state to 0 (`Release`), followed by a futex wake only when `WAITERS`
//! was set. The record is therefore 0, the current holder's, or — until a
//! prober takes the lock over — a dead holder's: never a previous holder's
//! (a prober reads the state with `Acquire`, which the releasing swap and
//! the compare-exchanges after it make see the clearing). A contended locker spins briefly
//! (adaptive), then sets `WAITERS` and sleeps on the state word; a woken
//! locker takes the lock as `id | WAITERS`, since other sleepers may remain
//! (the classic three-state futex mutex, with the holder id standing in for
//! "locked").
//!
//! # Crash story
//!
//! **Identity is not a pid.** Sleepers wake every [`PROBE_INTERVAL`] and
//! probe the holder; a non-blocking `try_lock` probes at once, and a timed
//! lock probes once more before it reports `Timeout` (however short the
//! timeout). The probe asks the kernel for the live process that has the
//! holder's pid now (a zombie counts as dead) and compares its start time
//! with the 8-bit tag of the state word and, once the holder has written
//! it, the 22-bit hash of the owner record. So a new process that was
//! handed a dead holder's pid — or a thread of it, whose tid may equal the
//! dead one's — is never taken for the holder: it probes the lock as dead
//! and takes it with `OwnerDied` like anyone else. A probe errs only on the
//! side of "alive" (an unreadable start time counts as alive), so a live
//! holder is never robbed; a stopped (SIGSTOP) holder exists and is never
//! robbed either.
//!
//! On a dead holder, the prober clears the dead holder's owner record
//! (compare-exchange, so it never erases a newer one) and swaps the state
//! from the dead id to its own (`AcqRel`, so exactly one prober wins, and
//! the next prober sees the cleared record), sets the
//! *inconsistent* word and returns [`OwnerDied`] with the guard.
//! Every later locker gets `OwnerDied` too, until someone calls
//! [`LockGuard::mark_consistent`]. Detection takes at most one probe
//! interval after the death, on every platform.
//!
//! Not the kernel's robust list: glibc owns each thread's `set_robust_list`
//! head, so registering our own would break glibc's robust mutexes, and a
//! pthread robust mutex cannot offer "flagged until marked consistent",
//! monotonic timeouts and one tested implementation on Linux and macOS.
//! Processes in different pid namespaces cannot share a lock.
//!
//! # Kill points
//!
//! `lock.taken` (state word ours, owner record not yet written),
//! `lock.before-release`, `lock.before-wake` (state released, sleepers not
//! yet woken). See [`mproc_shm::fault`].

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mproc_shm::fault;

use crate::block::{block_serde, Block, KIND_LOCK};
use crate::owner_died::{LockTimeoutError, OwnerDied, TryLockError};
use crate::sys::{self, Me, HASH_MASK, HID_MASK, PID_BITS, PID_MASK};
use crate::wait::{self, WaitResult};
use crate::word::{Wide, Word};

/// How often sleepers check whether the holder is still alive.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);

const WAITERS: u32 = 1 << 30;

/// The words of a lock, wherever they live (a `Lock`, an `RLock`, the
/// guard of a barrier, or a loom model's words).
pub(crate) struct Raw<'a, W: Word = AtomicU32> {
    pub(crate) state: &'a W,
    pub(crate) bad: &'a W,
    pub(crate) owner: &'a W::Wide,
}

impl<W: Word> Clone for Raw<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W: Word> Copy for Raw<'_, W> {}

/// Why a raw acquire did not get the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    WouldBlock,
    Timeout,
}

impl<'a> Raw<'a> {
    /// The lock whose state word is word `first` of `block` (the
    /// inconsistent word follows it; the owner record is the `u64` at words
    /// `first + 3`, `first + 4`).
    pub(crate) fn at(block: &'a Block, first: usize) -> Raw<'a> {
        Raw {
            state: block.word(first),
            bad: block.word(first + 1),
            owner: block.wide(first + 3),
        }
    }
}

impl<W: Word> Raw<'_, W> {
    /// Takes the lock; `Ok(true)` when it is flagged inconsistent.
    #[inline]
    pub(crate) fn acquire(
        self,
        me: Me,
        blocking: bool,
        deadline: Option<Instant>,
    ) -> Result<bool, Miss> {
        if self
            .state
            .compare_exchange(0, me.hid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(self.enter(me));
        }
        self.acquire_slow(me, blocking, deadline)
    }

    #[cold]
    fn acquire_slow(self, me: Me, blocking: bool, deadline: Option<Instant>) -> Result<bool, Miss> {
        if !blocking {
            return if self.steal_from_dead(me) {
                Ok(self.enter(me))
            } else {
                Err(Miss::WouldBlock)
            };
        }
        // Spin first: the holder may be about to release.
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s != 0 && !self.state.spin(s) {
                break;
            }
            if self
                .state
                .compare_exchange(0, me.hid, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(self.enter(me));
            }
            if self.state.load(Ordering::Relaxed) != 0 {
                break;
            }
        }
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s == 0 {
                if self
                    .state
                    .compare_exchange(0, me.hid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.enter(me));
                }
                continue;
            }
            if s & WAITERS == 0
                && self
                    .state
                    .compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let slice = Instant::now() + PROBE_INTERVAL;
            let until = deadline.map_or(slice, |d| d.min(slice));
            if self.state.sleep(s | WAITERS, Some(until)) == WaitResult::TimedOut {
                // Probe before giving up: a timeout shorter than the probe
                // interval must still notice a dead holder.
                if self.steal_from_dead(me) {
                    return Ok(self.enter(me));
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Miss::Timeout);
                }
            }
        }
    }

    /// Whether the holder named by state word `s` (with owner record
    /// `record`, 0 while the holder has not written it) has ended (see the
    /// crash story): errs only towards "alive".
    fn holder_ended(self, s: u32, record: u64) -> bool {
        let hid = s & HID_MASK;
        let Some(start_now) = self.state.start_of(hid & PID_MASK) else {
            return true; // no live process has the pid
        };
        if start_now == 0 {
            return false; // cannot tell: alive
        }
        sys::start_tag(start_now) != hid >> PID_BITS
            || (record != 0 && sys::start_hash(start_now) != record & HASH_MASK)
    }

    /// Takes the lock over from a dead holder; `true` when we did.
    fn steal_from_dead(self, me: Me) -> bool {
        let s = self.state.load(Ordering::Acquire);
        if s & HID_MASK == 0 {
            return false;
        }
        // The record of the holder in `s`: read between two equal reads of
        // the state, so it is that holder's (or 0), not a later one's.
        let record = self.owner.load(Ordering::Acquire);
        if self.state.load(Ordering::Acquire) != s || !self.holder_ended(s, record) {
            return false;
        }
        // Clear the dead holder's record (a compare-exchange: a newer one
        // stays), so that nobody takes it for ours before we write ours.
        if record != 0 {
            let _ = self
                .owner
                .compare_exchange(record, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
        // WAITERS stays set: others may be asleep on the dead holder.
        if self
            .state
            .compare_exchange(s, me.hid | WAITERS, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.bad.store(1, Ordering::Relaxed);
        true
    }

    #[inline]
    fn enter(self, me: Me) -> bool {
        fault::point("lock.taken");
        self.owner.store(me.owner, Ordering::Relaxed);
        self.bad.load(Ordering::Relaxed) != 0
    }

    #[inline]
    pub(crate) fn release(self) {
        fault::point("lock.before-release");
        self.owner.store(0, Ordering::Relaxed);
        if self.state.swap(0, Ordering::Release) & WAITERS != 0 {
            fault::point("lock.before-wake");
            self.state.wake(1);
        }
    }

    /// Whether the calling thread holds the lock: the state names our pid
    /// with our start-time tag, and the owner record our thread with our
    /// start-time hash (a process that reuses a dead holder's pid — even
    /// its main thread, whose tid is the dead one's — has another start).
    pub(crate) fn held_by(self, me: Me) -> bool {
        self.state.load(Ordering::Relaxed) & HID_MASK == me.hid
            && self.owner.load(Ordering::Relaxed) == me.owner
    }

    pub(crate) fn holder(self) -> Option<u32> {
        let pid = self.state.load(Ordering::Relaxed) & PID_MASK;
        (pid != 0).then_some(pid)
    }
}

/// A mutual-exclusion lock shared by every process that holds a handle.
///
/// Like `multiprocessing.Lock`, but a holder that dies never deadlocks the
/// others: the next locker gets [`OwnerDied`] carrying the guard.
///
/// # Examples
///
/// ```
/// use mproc_sync::Lock;
///
/// let lock = Lock::new()?;
/// {
///     let _guard = lock.lock()?;
///     assert!(lock.try_lock().is_err());
/// }
/// assert!(lock.try_lock().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A guard stays in the thread that took it:
///
/// ```compile_fail
/// let lock = mproc_sync::Lock::new().unwrap();
/// let guard = lock.lock().unwrap();
/// std::thread::spawn(move || drop(guard));
/// ```
#[derive(Clone)]
pub struct Lock {
    block: Block,
}

block_serde!(Lock, KIND_LOCK, |b: &Block| b.len() == Lock::WORDS);

impl Lock {
    pub(crate) const WORDS: usize = 6;

    /// A new, unlocked lock in its own anonymous segment.
    ///
    /// # Errors
    ///
    /// The OS error when the segment cannot be created.
    pub fn new() -> io::Result<Lock> {
        Ok(Lock::from_block(Block::new(KIND_LOCK, Lock::WORDS)?))
    }

    /// A new lock in 24 zeroed bytes at `offset` (8-aligned) of `seg`, for
    /// structures that keep their lock next to their data.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the lock does not fit at `offset`.
    pub fn new_in(seg: mproc_shm::Segment, offset: usize) -> io::Result<Lock> {
        Ok(Lock::from_block(Block::init(
            seg,
            offset,
            KIND_LOCK,
            Lock::WORDS,
        )?))
    }

    /// The lock made by [`new_in`](Lock::new_in) at `offset` of `seg`, seen
    /// from another handle of the same segment (say, after the structure
    /// that holds it was sent to another process).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the lock does not fit at `offset`; `InvalidData`
    /// when no lock was made there.
    pub fn attach_in(seg: mproc_shm::Segment, offset: usize) -> io::Result<Lock> {
        Ok(Lock::from_block(Block::attach(
            seg,
            offset,
            KIND_LOCK,
            Lock::WORDS,
        )?))
    }

    pub(crate) fn from_block(block: Block) -> Lock {
        Lock { block }
    }

    #[inline]
    pub(crate) fn raw(&self) -> Raw<'_> {
        Raw::at(&self.block, 1)
    }

    fn guard(&self) -> LockGuard<'_> {
        LockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Blocks until the lock is ours.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (holding the guard) when a holder died with the lock
    /// and nobody has marked it consistent since.
    #[inline]
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        locked(self.raw().acquire(sys::me(), true, None), || self.guard())
    }

    /// Takes the lock if it is free (or its holder is dead), without waiting.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when a live process holds it;
    /// [`TryLockError::OwnerDied`] as for [`lock`](Lock::lock).
    pub fn try_lock(&self) -> TryLockResult<LockGuard<'_>> {
        tried(self.raw().acquire(sys::me(), false, None), || self.guard())
    }

    /// Like [`lock`](Lock::lock), giving up after `timeout` (a dead holder
    /// is still noticed, however short the timeout).
    ///
    /// # Errors
    ///
    /// [`LockTimeoutError::Timeout`]; [`LockTimeoutError::OwnerDied`] as for
    /// `lock`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<LockGuard<'_>> {
        timed(
            self.raw().acquire(sys::me(), true, wait::deadline(timeout)),
            || self.guard(),
        )
    }

    /// Python's `acquire()`: takes the lock without a guard; release it
    /// with [`release`](Lock::release). Prefer [`lock`](Lock::lock).
    pub fn acquire(&self) -> Acquired {
        match self.raw().acquire(sys::me(), true, None) {
            Ok(true) => Acquired::OwnerDied,
            _ => Acquired::Clean,
        }
    }

    /// Python's `acquire(timeout=…)` (and `block=False` with a zero timeout).
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`] when the lock stayed held.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Acquired, AcquireError> {
        let blocking = !timeout.is_zero();
        acquired(
            self.raw()
                .acquire(sys::me(), blocking, wait::deadline(timeout)),
        )
    }

    /// Python's `release()`.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] when the calling thread does not hold the lock.
    pub fn release(&self) -> Result<(), NotOwner> {
        if !self.raw().held_by(sys::me()) {
            return Err(NotOwner);
        }
        self.raw().release();
        Ok(())
    }

    /// Clears the owner-died flag; only the holder may.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] when the calling thread does not hold the lock.
    pub fn mark_consistent(&self) -> Result<(), NotOwner> {
        if !self.raw().held_by(sys::me()) {
            return Err(NotOwner);
        }
        self.raw().bad.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Whether some process holds the lock now (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.raw().holder().is_some()
    }

    /// The pid of the holding process, if any (a snapshot, for diagnostics).
    pub fn holder_pid(&self) -> Option<u32> {
        self.raw().holder()
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("holder_pid", &self.holder_pid())
            .finish()
    }
}

/// Holds a [`Lock`]; releases it on drop. Not `Send`: the thread that took
/// the lock releases it.
#[must_use = "the lock is released as soon as the guard drops"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared guard only reads the lock's atomics (mark_consistent is
// an atomic store), so sharing `&LockGuard` between threads is harmless.
unsafe impl Sync for LockGuard<'_> {}

impl<'a> LockGuard<'a> {
    /// Declares the protected data repaired after an owner died: later
    /// lockers get the lock without [`OwnerDied`].
    pub fn mark_consistent(&self) {
        self.lock.raw().bad.store(0, Ordering::Relaxed);
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &'a Lock {
        self.lock
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw().release();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// What [`Lock::lock`] (and [`RLock::lock`](crate::RLock::lock)) return.
pub type LockResult<G> = Result<G, OwnerDied<G>>;

/// What [`Lock::try_lock`] and [`RLock::try_lock`](crate::RLock::try_lock)
/// return.
pub type TryLockResult<G> = Result<G, TryLockError<G>>;

/// What [`Lock::lock_timeout`] and
/// [`RLock::lock_timeout`](crate::RLock::lock_timeout) return.
pub type LockTimeoutResult<G> = Result<G, LockTimeoutError<G>>;

/// Turns a raw acquire's outcome into Python-style `acquire`'s answer.
pub(crate) fn acquired(r: Result<bool, Miss>) -> Result<Acquired, AcquireError> {
    match r {
        Ok(true) => Ok(Acquired::OwnerDied),
        Ok(false) => Ok(Acquired::Clean),
        Err(_) => Err(AcquireError::Timeout),
    }
}

/// Tells the `tracing` subscriber (the `tracing` feature) that a lock was
/// taken with its previous holder dead.
#[inline]
fn owner_died_event() {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "mproc::sync",
        pid = std::process::id(),
        "lock taken after its holder died (OwnerDied): repair the data, then mark_consistent"
    );
}

/// A blocking acquire's outcome as a guard or [`OwnerDied`].
pub(crate) fn locked<G>(r: Result<bool, Miss>, guard: impl FnOnce() -> G) -> LockResult<G> {
    // A blocking acquire without a deadline only ever gets the lock.
    debug_assert!(r.is_ok());
    match r {
        Ok(true) => {
            owner_died_event();
            Err(OwnerDied::new(guard()))
        }
        Ok(false) | Err(_) => Ok(guard()),
    }
}

/// A non-blocking acquire's outcome as a guard or a [`TryLockError`].
pub(crate) fn tried<G>(r: Result<bool, Miss>, guard: impl FnOnce() -> G) -> TryLockResult<G> {
    match r {
        Ok(false) => Ok(guard()),
        Ok(true) => {
            owner_died_event();
            Err(TryLockError::OwnerDied(OwnerDied::new(guard())))
        }
        Err(_) => Err(TryLockError::WouldBlock),
    }
}

/// A timed acquire's outcome as a guard or a [`LockTimeoutError`].
pub(crate) fn timed<G>(r: Result<bool, Miss>, guard: impl FnOnce() -> G) -> LockTimeoutResult<G> {
    match r {
        Ok(false) => Ok(guard()),
        Ok(true) => {
            owner_died_event();
            Err(LockTimeoutError::OwnerDied(OwnerDied::new(guard())))
        }
        Err(_) => Err(LockTimeoutError::Timeout),
    }
}

/// How a guard-less [`Lock::acquire`] got the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// Normally.
    Clean,
    /// From (or after) a holder that died: the data may be inconsistent.
    OwnerDied,
}

/// Why a timed guard-less acquire failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcquireError {
    /// The timeout passed.
    Timeout,
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out waiting to acquire")
    }
}

impl std::error::Error for AcquireError {}

/// The calling thread does not hold the lock it tried to release, notify
/// through or mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotOwner;

impl fmt::Display for NotOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the calling thread does not hold the lock")
    }
}

impl std::error::Error for NotOwner {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn release_by_a_non_owner_is_an_error() {
        let lock = Lock::new().unwrap();
        assert_eq!(lock.release(), Err(NotOwner));
        lock.acquire();
        let l2 = lock.clone();
        std::thread::spawn(move || assert_eq!(l2.release(), Err(NotOwner)))
            .join()
            .unwrap();
        assert_eq!(lock.release(), Ok(()));
        assert!(!lock.is_locked());
    }

    #[test]
    fn threads_exclude_each_other() {
        let lock = Lock::new().unwrap();
        let counter = mproc_shm::RawValue::new(0u64).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (lock, counter) = (lock.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _g = lock.lock().unwrap();
                        counter.set(counter.get() + 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.get(), 40_000);
    }

    #[test]
    fn timeout_while_held_by_this_process() {
        let lock = Lock::new().unwrap();
        let _g = lock.lock().unwrap();
        let l2 = lock.clone();
        let r = std::thread::spawn(move || {
            matches!(
                l2.lock_timeout(Duration::from_millis(30)),
                Err(LockTimeoutError::Timeout)
            )
        });
        assert!(r.join().unwrap());
        assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    }

    /// Leaves `raw` as an earlier process with our pid (another start time,
    /// whose tag differs too) leaves it when it dies holding the lock —
    /// with its owner record written, or (`record: false`) killed between
    /// its compare-exchange and writing the record.
    pub(crate) fn forge_dead_incarnation(raw: Raw<'_>, record: bool) {
        let me = sys::me();
        let mine = mproc_shm::ProcessIdent::from_bits(me.ident).unwrap();
        let mut start = mine.start() + 1;
        while sys::start_tag(start) == sys::start_tag(mine.start()) {
            start += 1;
        }
        raw.state
            .store(sys::holder_id(mine.pid(), start), Ordering::Relaxed);
        // Its main thread had our main thread's tid.
        let owner = sys::owner_record(u64::from(mine.pid()), start);
        raw.owner
            .store(if record { owner } else { 0 }, Ordering::Relaxed);
    }

    #[test]
    fn an_earlier_process_with_our_pid_is_a_dead_holder() {
        for record in [true, false] {
            let lock = Lock::new().unwrap();
            forge_dead_incarnation(lock.raw(), record);
            // Same pid, same tid, but not us: not ours to release…
            assert_eq!(lock.release(), Err(NotOwner));
            // …and taken over as from any dead holder.
            let g = match lock.try_lock() {
                Err(TryLockError::OwnerDied(d)) => d.into_inner(),
                other => panic!("record {record}: expected OwnerDied, got {other:?}"),
            };
            drop(g);
            // Still flagged until marked consistent.
            let g = lock.lock().unwrap_err().into_inner();
            g.mark_consistent();
            drop(g);
            assert!(lock.lock().is_ok());
        }
    }

    #[test]
    fn a_timed_lock_shorter_than_the_probe_takes_over() {
        let lock = Lock::new().unwrap();
        forge_dead_incarnation(lock.raw(), true);
        assert!(matches!(
            lock.lock_timeout(Duration::from_micros(10)),
            Err(LockTimeoutError::OwnerDied(_))
        ));
    }

    #[test]
    fn wrong_kind_is_rejected_on_arrival() {
        let ev = crate::Event::new().unwrap();
        let msg = mproc_shm::transfer::encode(&ev).unwrap();
        let err = mproc_shm::transfer::decode::<Lock>(msg).unwrap_err();
        assert!(
            err.to_string()
                .contains("holds an Event where a Lock was expected"),
            "{err}"
        );
    }
}
