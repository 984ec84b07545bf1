//! Waking async tasks from blocking waits: the bridge between the
//! cross-process wait layer and std [`Waker`]s (the `async` feature).
//!
//! # Why a thread, and how few
//!
//! A wake-up from another process arrives as a futex wake (Linux), an
//! `os_sync_wake_by_address` (macOS) or a child's exit. Only a thread asleep
//! on that very word receives it: an executor's reactor (epoll, kqueue)
//! cannot watch a futex word in shared memory. So an async wait on a queue
//! or a pipe needs one thread blocked in the object's own wait, which then
//! wakes the task's `Waker`.
//!
//! This module keeps that to **one watcher thread per watched object** (a
//! ring's data side, a ring's space side, a child), shared by every future
//! waiting on it in this process, never a thread per future:
//!
//! - The thread is started by the first future that finds the object not
//!   ready and registers its waker ([`wake_when`]). A program that never
//!   awaits never starts one; without the `async` feature this module does
//!   not exist, so the blocking API pays nothing.
//! - It sleeps in the object's own wait, in slices of at most
//!   [`SLICE`] (a wait that misses its wake-up costs at most a slice), and
//!   when the object is ready it wakes every registered waker and forgets
//!   them. A woken future polls again; if another took the item first it
//!   registers again.
//! - With no waiter left it stays [`LINGER`] for the next one (a consumer
//!   that awaits in a loop keeps one thread), then ends. It holds its
//!   object (a clone of the handle) only while a waiter is registered.
//!
//! # Cancel safety
//!
//! A watcher never takes anything: it only tells a task to look again. The
//! item is taken by the future's own `poll`, on the task's thread, so a
//! future dropped at any point loses nothing. Dropping a future drops its
//! [`Registration`], which takes its waker off the list.
//!
//! If the OS refuses to start a watcher thread, the waker is woken at once
//! instead: the task then polls again and again (busy, but correct) until
//! the object is ready.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Waker;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The longest a watcher sleeps in the object's wait before it looks again.
pub const SLICE: Duration = Duration::from_millis(100);

/// How long a watcher with no waiter waits for the next one before it ends.
pub const LINGER: Duration = Duration::from_secs(1);

/// Says whether the watched object is ready, waiting at most the given time
/// for it; `false` when it is not ready by then.
pub type ReadyFn = Arc<dyn Fn(Duration) -> bool + Send + Sync>;

/// What a watcher watches: an address (a mapping's, a child's pid) and which
/// of its conditions (data, space, exit…).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Names the object within this process (an address, a pid).
    pub object: usize,
    /// Which of its conditions.
    pub condition: u32,
}

#[derive(Default)]
struct Entry {
    state: Mutex<EntryState>,
    /// Signalled when a waiter registers.
    registered: Condvar,
}

#[derive(Default)]
struct EntryState {
    wakers: Vec<(u64, Waker)>,
    /// How to wait for the object; held only while a waiter is registered.
    ready: Option<ReadyFn>,
    /// A watcher thread runs for this entry.
    watching: bool,
    /// The watcher is in the object's wait, holding a clone of the object.
    holding: bool,
}

fn watches() -> &'static Mutex<HashMap<Key, Arc<Entry>>> {
    static WATCHES: OnceLock<Mutex<HashMap<Key, Arc<Entry>>>> = OnceLock::new();
    WATCHES.get_or_init(Default::default)
}

/// A future's place on a watcher's list; taken off when dropped.
#[derive(Debug)]
#[must_use = "dropping a registration takes the waker off the list"]
pub struct Registration {
    key: Key,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let entry = watches().lock().get(&self.key).cloned();
        if let Some(entry) = entry {
            entry.state.lock().wakers.retain(|(id, _)| *id != self.id);
        }
    }
}

/// Has `waker` woken once `ready` says the object `key` is ready, by the
/// object's watcher thread (started now if it is not running). Replaces the
/// registration in `slot`, if any.
///
/// Call it after the non-blocking attempt found the object not ready; the
/// watcher looks again before it sleeps, so a change in between is not
/// missed.
pub fn wake_when(slot: &mut Option<Registration>, key: Key, waker: &Waker, ready: ReadyFn) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // The same object again keeps its id; another object's place is given
    // up first (before this one's locks are taken).
    let id = match slot.take() {
        Some(old) if old.key == key => {
            let id = old.id;
            std::mem::forget(old);
            id
        }
        other => {
            drop(other);
            NEXT.fetch_add(1, Ordering::Relaxed)
        }
    };
    let mut map = watches().lock();
    let entry = map.entry(key).or_default().clone();
    let mut st = entry.state.lock();
    st.wakers.retain(|(i, _)| *i != id);
    st.wakers.push((id, waker.clone()));
    st.ready = Some(ready);
    *slot = Some(Registration { key, id });
    if st.watching {
        entry.registered.notify_one();
        return;
    }
    let watched = entry.clone();
    let started = std::thread::Builder::new()
        .name("mproc-async-watch".into())
        .stack_size(64 << 10)
        .spawn(move || watch(key, watched));
    match started {
        Ok(_) => st.watching = true,
        Err(_) => {
            drop(st);
            drop(map);
            waker.wake_by_ref();
        }
    }
}

/// A watcher thread's life: wait while someone waits, wake them, linger.
fn watch(key: Key, entry: Arc<Entry>) {
    let mut st = entry.state.lock();
    loop {
        if st.wakers.is_empty() {
            st.ready = None;
            let idle = entry.registered.wait_for(&mut st, LINGER).timed_out();
            if idle && st.wakers.is_empty() {
                // Leave under the registry's lock, so that a registration
                // either finds this thread still watching or finds no entry.
                drop(st);
                let mut map = watches().lock();
                st = entry.state.lock();
                if st.wakers.is_empty() {
                    st.watching = false;
                    st.ready = None;
                    if map.get(&key).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                        map.remove(&key);
                    }
                    return;
                }
            }
            continue;
        }
        let Some(ready) = st.ready.clone() else {
            // Every registration sets it; wake rather than wait for nothing.
            let wakers = std::mem::take(&mut st.wakers);
            drop(st);
            wakers.into_iter().for_each(|(_, w)| w.wake());
            st = entry.state.lock();
            continue;
        };
        st.holding = true;
        drop(st);
        let is_ready = ready(SLICE);
        drop(ready);
        st = entry.state.lock();
        st.holding = false;
        let woken = if is_ready || st.wakers.is_empty() {
            st.ready = None;
            std::mem::take(&mut st.wakers)
        } else {
            Vec::new()
        };
        let let_go = st.ready.is_none();
        drop(st);
        for (_, w) in woken {
            w.wake();
        }
        if let_go {
            // Under the lock `wait_released` looks under, so it cannot miss it.
            let (lock, cv) = released();
            let _guard = lock.lock();
            cv.notify_all();
        }
        st = entry.state.lock();
    }
}

fn released() -> &'static (Mutex<()>, Condvar) {
    static RELEASED: OnceLock<(Mutex<()>, Condvar)> = OnceLock::new();
    RELEASED.get_or_init(Default::default)
}

/// Waits at most `timeout` until no watcher holds a watched object (each
/// lets go within a [`SLICE`] of its last waiter leaving); whether none
/// does. A test that drops a waiting future calls it before it checks
/// that every descriptor it made is closed.
pub fn wait_released(timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let (lock, cv) = released();
    let mut guard = lock.lock();
    loop {
        let holding = watches().lock().values().any(|e| {
            let st = e.state.lock();
            st.holding || st.ready.is_some()
        });
        if !holding {
            return true;
        }
        if cv.wait_until(&mut guard, deadline).timed_out() {
            return false;
        }
    }
}

/// How many watcher threads run now (for tests and diagnostics).
pub fn watchers() -> usize {
    watches()
        .lock()
        .values()
        .filter(|e| e.state.lock().watching)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    struct Flag(std::sync::Mutex<bool>, std::sync::Condvar);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() = true;
            self.1.notify_all();
        }
    }

    #[test]
    fn a_waker_is_woken_once_the_object_is_ready() {
        let flag = Arc::new(Flag(Default::default(), Default::default()));
        let waker = Waker::from(flag.clone());
        let go = Arc::new(AtomicBool::new(false));
        let seen = go.clone();
        let mut slot = None;
        let key = Key {
            object: Arc::as_ptr(&go) as usize,
            condition: 0,
        };
        let ready: ReadyFn = Arc::new(move |d| {
            if !seen.load(Ordering::SeqCst) {
                std::thread::park_timeout(d.min(Duration::from_millis(1)));
            }
            seen.load(Ordering::SeqCst)
        });
        wake_when(&mut slot, key, &waker, ready);
        go.store(true, Ordering::SeqCst);
        let mut woken = flag.0.lock().unwrap();
        while !*woken {
            woken = flag.1.wait(woken).unwrap();
        }
    }

    #[test]
    fn a_dropped_registration_leaves_the_list() {
        let flag = Arc::new(Flag(Default::default(), Default::default()));
        let waker = Waker::from(flag);
        let key = Key {
            object: 7,
            condition: 99,
        };
        let ready: ReadyFn = Arc::new(|d| {
            std::thread::park_timeout(d.min(Duration::from_millis(1)));
            false
        });
        let mut slot = None;
        wake_when(&mut slot, key, &waker, ready);
        let entry = watches().lock().get(&key).cloned().unwrap();
        assert_eq!(entry.state.lock().wakers.len(), 1);
        drop(slot);
        assert!(entry.state.lock().wakers.is_empty());
    }
}
