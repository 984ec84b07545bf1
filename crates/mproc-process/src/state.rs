//! Process-local state that a forked child never shares with its parent.
//!
//! A child made by `fork` starts with a copy of its parent's memory, locks
//! included. A lock that another thread of the parent held at the moment of
//! the fork (a pool's watcher forgetting a reaped worker, a thread listing
//! children, the forkserver's reader) stays held for ever in the child, whose
//! copy of that thread does not exist. So the library's process-local state
//! — the registry of children, the report arena, the lifeline, the
//! forkserver slot — lives behind a [`PerProcess`]: a pointer to a value
//! tagged with the pid of the process that made it. A process that finds a
//! value made by another pid (its parent's copy) makes a fresh one — or takes
//! the fresh one its parent made ahead, unused and unlocked, just before the
//! fork ([`PerProcess::ready_for_fork`]) — and never touches the old one, its
//! locks included: it is leaked, never dropped, so nothing of the parent's
//! is closed or freed twice.
//!
//! The fresh values use `std::sync` locks rather than `parking_lot`'s:
//! parking_lot parks contended threads in one global table whose own locks a
//! fork can also catch held; a std lock keeps its state in its own word.

use std::sync::atomic::{AtomicPtr, Ordering};

/// This process's pid, cached (a forked child forgets the cache).
fn pid() -> u32 {
    crate::sys::my_pid()
}

/// A value of type `T` per process (see the [module docs](self)).
pub(crate) struct PerProcess<T> {
    ptr: AtomicPtr<Owned<T>>,
    /// A fresh value made ahead by a parent about to fork (see
    /// [`PerProcess::ready_for_fork`]), for the child to take.
    spare: AtomicPtr<Owned<T>>,
}

struct Owned<T> {
    pid: u32,
    value: T,
}

impl<T> PerProcess<T> {
    /// No value yet.
    pub(crate) const fn new() -> PerProcess<T> {
        PerProcess {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            spare: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

impl<T: Send + Sync> PerProcess<T> {
    /// This process's value, made by `init` on first use.
    pub(crate) fn get(&'static self, init: impl Fn() -> T) -> &'static T {
        match self.try_get(|| Ok::<T, std::convert::Infallible>(init())) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// This process's value, made by `init` on first use; `init`'s error
    /// when it fails (the next call tries again).
    pub(crate) fn try_get<E>(
        &'static self,
        init: impl Fn() -> Result<T, E>,
    ) -> Result<&'static T, E> {
        let me = pid();
        loop {
            let cur = self.ptr.load(Ordering::Acquire);
            if let Some(owned) = Self::deref(cur).filter(|o| o.pid == me) {
                return Ok(&owned.value);
            }
            let fresh = match Self::take_spare(&self.spare, me) {
                Some(spare) => spare,
                None => Box::into_raw(Box::new(Owned {
                    pid: me,
                    value: init()?,
                })),
            };
            match self
                .ptr
                .compare_exchange(cur, fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                // The old value (another process's copy) is leaked.
                Ok(_) => {
                    if let Some(owned) = Self::deref(fresh) {
                        return Ok(&owned.value);
                    }
                }
                Err(_) => {
                    // SAFETY: `fresh` came from Box::into_raw above and was
                    // never published: this thread owns it alone.
                    drop(unsafe { Box::from_raw(fresh) });
                }
            }
        }
    }

    /// Makes a fresh value ahead, for a child about to be forked: its
    /// first use takes it instead of allocating. Every allocation in a
    /// forked child writes to heap pages it shares with its parent, and the
    /// first one that misses the thread cache sorts the free chunks it
    /// inherited, one copy-on-write fault per page touched (about 7 for an
    /// empty target, a tenth of a fork start + join). The parent keeps the
    /// value for its next fork; each child takes its own copy of it.
    pub(crate) fn ready_for_fork(&'static self, init: impl Fn() -> T) {
        if !self.spare.load(Ordering::Acquire).is_null() {
            return;
        }
        let fresh = Box::into_raw(Box::new(Owned {
            pid: 0,
            value: init(),
        }));
        if self
            .spare
            .compare_exchange(
                std::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: `fresh` came from Box::into_raw above and was never
            // published: this thread owns it alone.
            drop(unsafe { Box::from_raw(fresh) });
        }
    }

    /// The spare value, now `me`'s, if there is one.
    fn take_spare(spare: &AtomicPtr<Owned<T>>, me: u32) -> Option<*mut Owned<T>> {
        let taken = spare.swap(std::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: a non-null spare came from Box::into_raw in
        // `ready_for_fork` and was never published as a value; the swap
        // made this thread its only holder.
        let owned = unsafe { taken.as_mut() }?;
        owned.pid = me;
        Some(taken)
    }

    /// This process's value, if it has made one.
    pub(crate) fn existing(&'static self) -> Option<&'static T> {
        let me = pid();
        Self::deref(self.ptr.load(Ordering::Acquire))
            .filter(|o| o.pid == me)
            .map(|o| &o.value)
    }

    /// The value a parent made, as a forked child inherited it (before the
    /// child makes its own); `None` if there is none or it is this process's.
    pub(crate) fn inherited(&'static self) -> Option<&'static T> {
        let me = pid();
        Self::deref(self.ptr.load(Ordering::Acquire))
            .filter(|o| o.pid != me)
            .map(|o| &o.value)
    }

    fn deref(ptr: *mut Owned<T>) -> Option<&'static Owned<T>> {
        // SAFETY: a non-null pointer in `ptr` came from Box::into_raw and was
        // published with release ordering; published values are never freed
        // (a replaced one is leaked), so the reference is valid for ever.
        unsafe { ptr.as_ref() }
    }
}

/// Locks a std mutex; a panic elsewhere cannot leave these values broken.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    /// A forked child takes the value its parent made ahead (not a new one,
    /// not the parent's), and the parent keeps its own value and the spare.
    #[test]
    fn a_forked_child_takes_the_value_made_ahead() {
        static V: PerProcess<AtomicU32> = PerProcess::new();
        V.get(|| AtomicU32::new(1)).store(2, SeqCst);
        V.ready_for_fork(|| AtomicU32::new(7));
        // SAFETY: the child only reads atomics and a cached pid, then
        // `_exit`s; the parent reaps its own child by pid.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let v = V.get(|| AtomicU32::new(0));
            let ok = v.load(SeqCst) == 7 && V.existing().is_some() && V.inherited().is_none();
            // SAFETY: ends the forked child at once, running nothing of the
            // parent's.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(V.get(|| AtomicU32::new(0)).load(SeqCst), 2);
        assert!(
            !V.spare.load(SeqCst).is_null(),
            "the parent keeps the spare"
        );
    }
}
