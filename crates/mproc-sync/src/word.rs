//! `Word`: the swappable shim under the lock and barrier state machines.
//!
//! In production a word is an `AtomicU32` in shared memory that sleeps and
//! wakes through [`wait`](crate::wait) and probes liveness with real
//! processes (pid and start time).
//! The `loom` models (`src/model.rs`) put a model-checked atomic behind the
//! same trait and a death table they control, so the very code that runs
//! across processes is explored under every interleaving.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::sys;
use crate::wait::{self, WaitResult};

/// A 64-bit shared word: a lock's owner record, a condition's counts.
pub(crate) trait Wide {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
}

impl Wide for AtomicU64 {
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }

    #[inline]
    fn store(&self, value: u64, order: Ordering) {
        AtomicU64::store(self, value, order)
    }

    #[inline]
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        AtomicU64::compare_exchange(self, current, new, success, failure)
    }
}

/// A 32-bit shared word with the operations the state machines use.
pub(crate) trait Word {
    /// The 64-bit word that goes with it.
    type Wide: Wide;

    fn load(&self, order: Ordering) -> u32;
    fn store(&self, value: u32, order: Ordering);
    fn swap(&self, value: u32, order: Ordering) -> u32;
    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32>;
    /// Spins briefly while the word is `expected`; `true` when it changed.
    fn spin(&self, expected: u32) -> bool;
    /// Sleeps while the word is `expected`, until woken or `deadline`.
    fn sleep(&self, expected: u32, deadline: Option<Instant>) -> WaitResult;
    /// Wakes up to `n` sleepers.
    fn wake(&self, n: u32);
    /// The start time of the live process with pid `pid` (0: unknown), or
    /// `None` when no live process has it: the liveness probe.
    fn start_of(&self, pid: u32) -> Option<u64>;

    /// Spin, then sleep.
    fn wait(&self, expected: u32, deadline: Option<Instant>) -> WaitResult {
        if self.spin(expected) {
            WaitResult::Woken
        } else {
            self.sleep(expected, deadline)
        }
    }
}

impl Word for AtomicU32 {
    type Wide = AtomicU64;
    #[inline]
    fn load(&self, order: Ordering) -> u32 {
        AtomicU32::load(self, order)
    }

    #[inline]
    fn store(&self, value: u32, order: Ordering) {
        AtomicU32::store(self, value, order)
    }

    #[inline]
    fn swap(&self, value: u32, order: Ordering) -> u32 {
        AtomicU32::swap(self, value, order)
    }

    #[inline]
    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        AtomicU32::compare_exchange(self, current, new, success, failure)
    }

    fn spin(&self, expected: u32) -> bool {
        wait::spin(self, expected)
    }

    fn sleep(&self, expected: u32, deadline: Option<Instant>) -> WaitResult {
        wait::sleep(self, expected, deadline)
    }

    fn wake(&self, n: u32) {
        wait::wake(self, n)
    }

    fn start_of(&self, pid: u32) -> Option<u64> {
        sys::start_of(pid)
    }
}
