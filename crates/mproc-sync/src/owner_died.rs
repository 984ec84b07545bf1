//! The errors of taking a lock, shaped like std's: `lock` can only report a
//! dead previous holder ([`OwnerDied`], std's `PoisonError`), `try_lock`
//! adds [`TryLockError::WouldBlock`], `lock_timeout` adds
//! [`LockTimeoutError::Timeout`].
//!
//! [`OwnerDied`] carries the guard: the lock *is* yours. Because a guard
//! borrows its lock, these types cannot be `'static`, and so — unlike their
//! guard-less `'static` forms — do not implement [`std::error::Error`]
//! themselves (std's `PoisonError<MutexGuard<'_, T>>` cannot go through `?`
//! into `Box<dyn Error>` for the same reason). Instead each converts with
//! `?` into `Box<dyn Error>` (also `+ Send + Sync`) and into
//! [`io::Error`]: the guard is dropped on the way, which releases the lock
//! (it stays flagged until someone repairs the data and marks it
//! consistent).

use std::error::Error;
use std::fmt;
use std::io;

/// A previous holder died with the lock: you hold it now, but the data it
/// protects may be half-updated. Repair it and call the guard's
/// `mark_consistent`, or drop the guard to leave it flagged for the next
/// holder.
///
/// # Examples
///
/// ```
/// use mproc_sync::Lock;
///
/// let lock = Lock::new()?;
/// let guard = match lock.lock() {
///     Ok(guard) => guard,
///     Err(died) => {
///         let guard = died.into_inner();
///         // …repair the shared data…
///         guard.mark_consistent();
///         guard
///     }
/// };
/// drop(guard);
///
/// // Or let `?` hand it to the caller as an error.
/// fn critical(lock: &Lock) -> Result<(), Box<dyn std::error::Error>> {
///     let _guard = lock.lock()?;
///     Ok(())
/// }
/// critical(&lock)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct OwnerDied<G> {
    guard: G,
}

impl<G> OwnerDied<G> {
    pub(crate) fn new(guard: G) -> OwnerDied<G> {
        OwnerDied { guard }
    }

    /// The guard: the lock is held.
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// The guard, borrowed.
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// The guard, borrowed mutably.
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

const OWNER_DIED: &str = "a previous holder died with the lock; the data may be inconsistent";

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerDied(..)")
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(OWNER_DIED)
    }
}

/// Why [`try_lock`](crate::Lock::try_lock) returned no clean guard.
pub enum TryLockError<G> {
    /// A live thread or process holds the lock.
    WouldBlock,
    /// The lock is yours, after a holder died with it.
    OwnerDied(OwnerDied<G>),
}

/// Why [`lock_timeout`](crate::Lock::lock_timeout) returned no clean guard.
pub enum LockTimeoutError<G> {
    /// The timeout passed with the lock still held.
    Timeout,
    /// The lock is yours, after a holder died with it.
    OwnerDied(OwnerDied<G>),
}

impl<G> TryLockError<G> {
    /// The guard of an `OwnerDied`.
    pub fn into_guard(self) -> Option<G> {
        match self {
            TryLockError::OwnerDied(d) => Some(d.into_inner()),
            TryLockError::WouldBlock => None,
        }
    }
}

impl<G> LockTimeoutError<G> {
    /// The guard of an `OwnerDied`.
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockTimeoutError::OwnerDied(d) => Some(d.into_inner()),
            LockTimeoutError::Timeout => None,
        }
    }
}

impl<G> From<OwnerDied<G>> for TryLockError<G> {
    fn from(d: OwnerDied<G>) -> Self {
        TryLockError::OwnerDied(d)
    }
}

impl<G> From<OwnerDied<G>> for LockTimeoutError<G> {
    fn from(d: OwnerDied<G>) -> Self {
        LockTimeoutError::OwnerDied(d)
    }
}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.write_str("WouldBlock"),
            TryLockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
        }
    }
}

impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => {
                f.write_str("the lock is held by another thread or process")
            }
            TryLockError::OwnerDied(d) => fmt::Display::fmt(d, f),
        }
    }
}

impl<G> fmt::Debug for LockTimeoutError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockTimeoutError::Timeout => f.write_str("Timeout"),
            LockTimeoutError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
        }
    }
}

impl<G> fmt::Display for LockTimeoutError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockTimeoutError::Timeout => f.write_str("timed out waiting for the lock"),
            LockTimeoutError::OwnerDied(d) => fmt::Display::fmt(d, f),
        }
    }
}

/// The `'static` form of the lock errors, which the guard-carrying ones
/// become when `?` turns them into `Box<dyn Error>` or `io::Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockFailure {
    /// A previous holder died with the lock (the guard was dropped on the
    /// way: the lock is released, still flagged).
    OwnerDied,
    /// Another thread or process holds the lock.
    WouldBlock,
    /// The timeout passed.
    Timeout,
}

impl fmt::Display for LockFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockFailure::OwnerDied => OWNER_DIED,
            LockFailure::WouldBlock => "the lock is held by another thread or process",
            LockFailure::Timeout => "timed out waiting for the lock",
        })
    }
}

impl Error for LockFailure {}

impl From<LockFailure> for io::Error {
    fn from(f: LockFailure) -> io::Error {
        let kind = match f {
            LockFailure::OwnerDied => io::ErrorKind::Other,
            LockFailure::WouldBlock => io::ErrorKind::WouldBlock,
            LockFailure::Timeout => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, f)
    }
}

macro_rules! into_static {
    ($ty:ident, $f:expr) => {
        impl<G> From<$ty<G>> for LockFailure {
            fn from(e: $ty<G>) -> LockFailure {
                let f: fn(&$ty<G>) -> LockFailure = $f;
                f(&e)
            }
        }

        impl<G> From<$ty<G>> for Box<dyn Error + Send + Sync> {
            fn from(e: $ty<G>) -> Self {
                Box::new(LockFailure::from(e))
            }
        }

        impl<G> From<$ty<G>> for Box<dyn Error> {
            fn from(e: $ty<G>) -> Self {
                Box::new(LockFailure::from(e))
            }
        }

        impl<G> From<$ty<G>> for io::Error {
            fn from(e: $ty<G>) -> io::Error {
                LockFailure::from(e).into()
            }
        }
    };
}

into_static!(OwnerDied, |_| LockFailure::OwnerDied);
into_static!(TryLockError, |e| match e {
    TryLockError::WouldBlock => LockFailure::WouldBlock,
    TryLockError::OwnerDied(_) => LockFailure::OwnerDied,
});
into_static!(LockTimeoutError, |e| match e {
    LockTimeoutError::Timeout => LockFailure::Timeout,
    LockTimeoutError::OwnerDied(_) => LockFailure::OwnerDied,
});
