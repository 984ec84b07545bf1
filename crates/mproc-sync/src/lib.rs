//! Process-shared synchronization for mproc, robust against processes that die.
//!
//! - [`Lock`] — a mutex; a holder that dies hands the lock on with
//!   [`OwnerDied`] (carrying the guard) instead of deadlocking everyone;
//!   `try_lock` and `lock_timeout` have errors of their own
//!   ([`TryLockError`], [`LockTimeoutError`]), and all three go through `?`
//!   into `Box<dyn Error>` or `io::Error`.
//! - [`RLock`] — the re-entrant form.
//! - [`Semaphore`] / [`BoundedSemaphore`] — counters of permits, `value()`
//!   included (also on macOS).
//! - [`Condition`] — wait for a change announced under a `Lock` or `RLock`.
//! - [`Event`] — a flag to wait for.
//! - [`Barrier`] — `parties` processes meet; a timeout, an abort or a dead
//!   party breaks it for everyone with [`BrokenBarrier`].
//! - [`Value`] / [`Array`] — plain-old-data with a lock of its own.
//! - [`wait`] — the cross-process wait/wake layer they all use (futex,
//!   `os_sync_wait_on_address`, or a bounded sleep-poll).
//!
//! Three rules hold for every primitive (each is written out next to its
//! code): **no wait sleeps for ever** — a sleep lasts at most
//! [`wait::SLICE`] (100 ms), then the waiter re-checks its condition and,
//! where there is one, its peer's liveness; **identity is not a pid** — a
//! lock holder, a barrier party, a ring writer is named by pid *and* start
//! time ([`ProcessIdent`](mproc_shm::ProcessIdent)), so a reused pid is
//! never taken for a dead holder; **shared numbers are untrusted** — a handle
//! decoded from another process is checked (kind, alignment, bounds, exact
//! layout) against its segment before it is used.
//!
//! Every primitive lives in shared memory (an `mproc-shm`
//! [`Segment`](mproc_shm::Segment)), is `Send + Sync`, and serializes through
//! [`mproc_shm::transfer`], so handing one to a child process gives the
//! child the same primitive. Nothing here uses `std::sync` or `parking_lot`
//! in shared memory: their waiters park in per-process tables that other
//! processes cannot reach.
//!
//! # Examples
//!
//! ```
//! use mproc_sync::{Lock, Value};
//!
//! let total = Value::new(0u64)?;
//! total.update(|t| *t += 5);
//!
//! let lock = Lock::new()?;
//! match lock.lock() {
//!     Ok(_guard) => { /* critical section */ }
//!     Err(died) => died.into_inner().mark_consistent(),
//! }
//! assert_eq!(total.get(), 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Platform support
//!
//! Linux waits on futexes (shared, not private). macOS 14.4+ uses
//! `os_sync_wait_on_address` with the shared flag; older macOS falls back to
//! a bounded sleep-poll (50 µs growing to 2 ms), which the `portable-wait`
//! feature forces everywhere so that it is tested on Linux. A dead lock
//! holder or barrier party is noticed within [`PROBE_INTERVAL`] on every
//! platform.

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod sys;

mod barrier;
mod block;
mod condition;
mod event;
mod lock;
mod owner_died;
mod rlock;
mod semaphore;
mod value;
mod word;

#[cfg(test)]
mod model;
pub mod wait;

pub use barrier::{Barrier, BrokenBarrier, MAX_PARTIES};
pub use condition::{Condition, ConditionLock, WaitError};
pub use event::Event;
pub use lock::{
    AcquireError, Acquired, Lock, LockGuard, LockResult, LockTimeoutResult, NotOwner,
    TryLockResult, PROBE_INTERVAL,
};
pub use owner_died::{LockFailure, LockTimeoutError, OwnerDied, TryLockError};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, OverRelease, Semaphore};
pub use value::{Array, ArrayGuard, Value, ValueGuard};
