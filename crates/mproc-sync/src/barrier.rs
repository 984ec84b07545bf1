//! `Barrier`: `parties` processes meet, then all go on.
//!
//! # Layout (`12 + 2 × parties` 32-bit words)
//!
//! | word | meaning |
//! |---|---|
//! | 0 | kind `"BARR"` |
//! | 1 | parties |
//! | 2 | arrived in the current generation |
//! | 3 | generation (waiters sleep on this word) |
//! | 4 | broken (0 or 1) |
//! | 5 | `ended`: generation + 1 of the last generation ended by a break or reset |
//! | 6 | unused |
//! | 7–11 | an internal lock (a [`Lock`](crate::Lock)'s state, inconsistent, unused, owner record) |
//! | 12.. | the identity (pid and start time, a `u64`) of each party that has arrived in this generation |
//!
//! Arrival and every change of words 2–5 happen under the internal lock. The
//! last party to arrive resets the count and bumps the generation
//! (`Release`), then wakes everyone; a waiter returns when the generation
//! differs from the one it arrived in — with its arrival index, or with
//! [`BrokenBarrier`] when word 5 says that generation was ended by a break.
//!
//! # Crash story
//!
//! A broken barrier stays broken until [`Barrier::reset`]. It breaks when a
//! waiter times out, when [`Barrier::abort`] is called, and when a party dies
//! inside `wait`: sleepers wake every [`PROBE_INTERVAL`](crate::PROBE_INTERVAL)
//! and check that the parties recorded in words 12.. are alive — by pid
//! *and* start time, so a party's pid reused by a new process does not keep
//! a dead party "alive". A party killed while holding the internal lock
//! leaves the barrier's words possibly half-changed, so the next party to
//! take that lock breaks the barrier. A party killed after it ended a
//! generation and before its wake call (kill point `barrier.released`)
//! costs the others at most one probe interval. Nobody hangs.
//!
//! The internal lock's own kill points are the `Lock`'s; the barrier adds
//! `barrier.arrived` (recorded, lock still held) and `barrier.released`.

use std::fmt;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mproc_shm::{fault, ProcessIdent};

use crate::block::{block_serde, Block, KIND_BARRIER};
use crate::lock::{Raw, PROBE_INTERVAL};
use crate::sys::{self, Me};
use crate::wait::{self, WaitResult};
use crate::word::{Wide, Word};

pub(crate) const PARTIES: usize = 1;
pub(crate) const COUNT: usize = 2;
const GENERATION: usize = 3;
const BROKEN: usize = 4;
const ENDED: usize = 5;
const LOCK: usize = 7;
pub(crate) const SLOTS: usize = 12;

/// The most parties a barrier may have.
pub const MAX_PARTIES: u32 = 1 << 20;

/// Python's `multiprocessing.Barrier`, without the `action` callable.
///
/// # Examples
///
/// ```
/// use mproc_sync::Barrier;
///
/// let b = Barrier::new(1)?;
/// assert_eq!(b.wait(), Ok(0)); // a single party passes at once
/// assert!(Barrier::new(0).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    block: Block,
}

block_serde!(Barrier, KIND_BARRIER, |b: &Block| {
    let parties = b.word(PARTIES).load(Ordering::Acquire) as usize;
    (1..=MAX_PARTIES as usize).contains(&parties) && b.len() == SLOTS + 2 * parties
});

/// The barrier was broken (a timeout, an abort, a reset, or a party that
/// died) while or before this party waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokenBarrier;

impl fmt::Display for BrokenBarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the barrier is broken")
    }
}

impl std::error::Error for BrokenBarrier {}

/// The words a barrier machine runs on: a `Block` in shared memory, or a
/// loom model's words.
pub(crate) trait Words {
    type W: Word;
    fn w(&self, i: usize) -> &Self::W;
    /// Words `i` and `i + 1` as one 64-bit word (`i` even).
    fn wide(&self, i: usize) -> &<Self::W as Word>::Wide;
    fn len(&self) -> usize;
}

impl Words for Block {
    type W = std::sync::atomic::AtomicU32;

    fn w(&self, i: usize) -> &Self::W {
        self.word(i)
    }

    fn wide(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        Block::wide(self, i)
    }

    fn len(&self) -> usize {
        Block::len(self)
    }
}

/// The internal lock, held; released on drop.
struct Inner<'a, W: Word> {
    raw: Raw<'a, W>,
}

impl<W: Word> Drop for Inner<'_, W> {
    fn drop(&mut self) {
        self.raw.release();
    }
}

/// The barrier's state machine over its words.
pub(crate) struct Machine<'a, S: Words> {
    pub(crate) s: &'a S,
}

impl<S: Words> Machine<'_, S> {
    fn w(&self, i: usize) -> &S::W {
        self.s.w(i)
    }

    fn parties_checked(&self) -> usize {
        // A parties word changed since the handle was checked must not
        // index past the block.
        (self.w(PARTIES).load(Ordering::Acquire) as usize).min((self.s.len() - SLOTS) / 2)
    }

    fn slot(&self, i: usize) -> &<S::W as Word>::Wide {
        self.s.wide(SLOTS + 2 * i)
    }

    /// Takes the internal lock; a holder that died with it breaks the barrier.
    fn inner(&self, me: Me) -> Inner<'_, S::W> {
        let raw = Raw {
            state: self.w(LOCK),
            bad: self.w(LOCK + 1),
            owner: self.s.wide(LOCK + 3),
        };
        let died = raw.acquire(me, true, None).unwrap_or(false);
        if died {
            raw.bad.store(0, Ordering::Relaxed);
            self.end_generation(true);
        }
        Inner { raw }
    }

    /// Ends the current generation (under the internal lock); `broken`
    /// marks it as ended by a break rather than by everyone arriving.
    fn end_generation(&self, broken: bool) {
        let gen = self.w(GENERATION).load(Ordering::Relaxed);
        if broken {
            self.w(BROKEN).store(1, Ordering::Relaxed);
            self.w(ENDED).store(gen.wrapping_add(1), Ordering::Relaxed);
        }
        self.w(COUNT).store(0, Ordering::Relaxed);
        self.w(GENERATION)
            .store(gen.wrapping_add(1), Ordering::Release);
        fault::point("barrier.released");
        self.w(GENERATION).wake(u32::MAX);
    }

    pub(crate) fn wait_until(
        &self,
        me: Me,
        deadline: Option<Instant>,
    ) -> Result<usize, BrokenBarrier> {
        let (gen, index) = {
            let _inner = self.inner(me);
            if self.w(BROKEN).load(Ordering::Relaxed) != 0 {
                return Err(BrokenBarrier);
            }
            let parties = self.parties_checked();
            let gen = self.w(GENERATION).load(Ordering::Relaxed);
            let index = self.w(COUNT).load(Ordering::Relaxed) as usize;
            if index >= parties {
                // Only a corrupted count gets here.
                self.end_generation(true);
                return Err(BrokenBarrier);
            }
            self.slot(index).store(me.ident, Ordering::Relaxed);
            fault::point("barrier.arrived");
            if index + 1 == parties {
                self.end_generation(false);
                return Ok(index);
            }
            self.w(COUNT).store(index as u32 + 1, Ordering::Relaxed);
            (gen, index)
        };
        loop {
            let slice = Instant::now() + PROBE_INTERVAL;
            let until = deadline.map_or(slice, |d| d.min(slice));
            let r = self.w(GENERATION).wait(gen, Some(until));
            if self.w(GENERATION).load(Ordering::Acquire) != gen {
                return if self.w(ENDED).load(Ordering::Relaxed) == gen.wrapping_add(1) {
                    Err(BrokenBarrier)
                } else {
                    Ok(index)
                };
            }
            if r == WaitResult::TimedOut {
                let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
                let _inner = self.inner(me);
                if self.w(GENERATION).load(Ordering::Relaxed) != gen {
                    continue;
                }
                let arrived =
                    (self.w(COUNT).load(Ordering::Relaxed) as usize).min(self.parties_checked());
                let someone_died = (0..arrived).any(|i| {
                    let party = self.slot(i).load(Ordering::Relaxed);
                    party != me.ident && self.party_ended(party)
                });
                if timed_out || someone_died {
                    self.end_generation(true);
                    return Err(BrokenBarrier);
                }
            }
        }
    }

    /// Whether the party recorded as `bits` (a `ProcessIdent`) has ended.
    fn party_ended(&self, bits: u64) -> bool {
        let Some(party) = ProcessIdent::from_bits(bits) else {
            return false; // not recorded (a torn write cannot happen: lock)
        };
        match self.w(GENERATION).start_of(party.pid()) {
            None => true,
            Some(now) => party.start() != 0 && now != 0 && now != party.start(),
        }
    }

    pub(crate) fn abort(&self, me: Me) {
        let _inner = self.inner(me);
        self.end_generation(true);
    }

    pub(crate) fn reset(&self, me: Me) {
        let _inner = self.inner(me);
        if self.w(COUNT).load(Ordering::Relaxed) > 0 {
            self.end_generation(true);
        }
        self.w(BROKEN).store(0, Ordering::Relaxed);
    }
}

impl Barrier {
    /// A barrier for `parties` processes (or threads).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `parties` is 0 or above [`MAX_PARTIES`].
    pub fn new(parties: u32) -> io::Result<Barrier> {
        if parties == 0 || parties > MAX_PARTIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a barrier needs between 1 and {MAX_PARTIES} parties, not {parties}"),
            ));
        }
        let block = Block::new(KIND_BARRIER, SLOTS + 2 * parties as usize)?;
        block.word(PARTIES).store(parties, Ordering::Release);
        Ok(Barrier { block })
    }

    fn from_block(block: Block) -> Barrier {
        Barrier { block }
    }

    fn machine(&self) -> Machine<'_, Block> {
        Machine { s: &self.block }
    }

    /// Waits until all parties have called `wait`; returns this party's
    /// arrival index, distinct for each party of a generation, in
    /// `0..parties`.
    ///
    /// # Errors
    ///
    /// [`BrokenBarrier`] when the barrier is or becomes broken.
    pub fn wait(&self) -> Result<usize, BrokenBarrier> {
        self.machine().wait_until(sys::me(), None)
    }

    /// Like [`wait`](Barrier::wait); a timeout breaks the barrier for
    /// everyone, this party included.
    ///
    /// # Errors
    ///
    /// [`BrokenBarrier`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, BrokenBarrier> {
        self.machine()
            .wait_until(sys::me(), wait::deadline(timeout))
    }

    /// Breaks the barrier: current and future waiters get [`BrokenBarrier`]
    /// until [`reset`](Barrier::reset).
    pub fn abort(&self) {
        self.machine().abort(sys::me());
    }

    /// Returns the barrier to its empty state; parties waiting now get
    /// [`BrokenBarrier`].
    pub fn reset(&self) {
        self.machine().reset(sys::me());
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.block.word(PARTIES).load(Ordering::Relaxed)
    }

    /// How many parties are waiting now (a snapshot).
    pub fn n_waiting(&self) -> u32 {
        self.block.word(COUNT).load(Ordering::Relaxed)
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.block.word(BROKEN).load(Ordering::Relaxed) != 0
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_get_distinct_indices_each_generation() {
        let b = Barrier::new(3).unwrap();
        for _ in 0..20 {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let b = b.clone();
                    std::thread::spawn(move || b.wait().unwrap())
                })
                .collect();
            let mut idx: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            idx.sort();
            assert_eq!(idx, [0, 1, 2]);
        }
    }

    #[test]
    fn timeout_breaks_for_everyone_until_reset() {
        let b = Barrier::new(2).unwrap();
        assert_eq!(
            b.wait_timeout(Duration::from_millis(20)),
            Err(BrokenBarrier)
        );
        assert!(b.is_broken());
        assert_eq!(
            b.wait_timeout(Duration::from_millis(20)),
            Err(BrokenBarrier)
        );
        b.reset();
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.wait());
        assert!(b.wait().is_ok());
        assert!(t.join().unwrap().is_ok());
    }

    #[test]
    fn abort_wakes_a_waiter() {
        let b = Barrier::new(2).unwrap();
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.wait());
        while b.n_waiting() == 0 {
            std::thread::yield_now();
        }
        b.abort();
        assert_eq!(t.join().unwrap(), Err(BrokenBarrier));
    }
}
