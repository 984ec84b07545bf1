//! Kill points of the sync primitives: a child process SIGKILLs itself at a
//! named step of a lock, an event, a semaphore, a condition or a barrier,
//! and the test checks that every survivor's blocking call returns within a
//! second of the death, with the answer the crash story promises.
//! `cargo xtask test` runs this module on both wait layers.

use std::time::{Duration, Instant};

use mproc::shm::fault;
use mproc::sync::{
    Barrier, BrokenBarrier, Condition, Event, Lock, LockTimeoutError, RLock, Semaphore, WaitError,
};
use mproc::Process;
use mproc_tests::{blocked, dies, LeakCheck};

const BOUND: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(20);

fn within_bound(returned: Instant, death: Instant, what: &str) {
    let late = returned.saturating_duration_since(death);
    assert!(late <= BOUND, "{what} returned {late:?} after the death");
}

fn lock_and_die((point, lock): (String, Lock)) {
    fault::die_at(&point).unwrap();
    std::mem::forget(lock.lock());
}

fn rlock_and_die((point, rlock): (String, RLock)) {
    fault::die_at(&point).unwrap();
    std::mem::forget(rlock.lock());
}

/// Takes the lock, says so on `taken`, waits for `go`, releases, and dies at
/// `point` on the way.
fn hold_then_release_and_die((point, lock, taken, go): (String, Lock, Event, Event)) {
    fault::die_at(&point).unwrap();
    let guard = lock.lock().unwrap();
    taken.set();
    go.wait_timeout(LONG);
    drop(guard);
}

fn set_and_die((point, ev): (String, Event)) {
    fault::die_at(&point).unwrap();
    ev.set();
}

fn release_and_die((point, sem): (String, Semaphore)) {
    fault::die_at(&point).unwrap();
    sem.release().unwrap();
}

fn notify_and_die((point, cond): (String, Condition)) {
    fault::die_at(&point).unwrap();
    let _g = cond.get_lock().lock().unwrap();
    cond.notify(1).unwrap();
}

fn arrive_and_die((point, b): (String, Barrier)) {
    fault::die_at(&point).unwrap();
    let _ = b.wait();
}

#[test]
fn killpoint_lock_holder_dead_right_after_taking_it() {
    let leaks = LeakCheck::start();
    {
        let (lock, rlock) = (Lock::new().unwrap(), RLock::new().unwrap());
        // Dead between its compare-exchange and writing its owner record.
        let death = dies(lock_and_die, ("lock.taken".into(), lock.clone()));
        let locker = {
            let lock = lock.clone();
            blocked(move || lock.lock().is_err())
        };
        let (owner_died, at) = locker.finish();
        assert!(owner_died);
        within_bound(at, death, "lock()");
        dies(rlock_and_die, ("lock.taken".into(), rlock.clone()));
        assert!(matches!(
            rlock.lock_timeout(Duration::from_millis(1)),
            Err(LockTimeoutError::OwnerDied(_))
        ));
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_lock_holder_dead_while_others_wait() {
    let leaks = LeakCheck::start();
    {
        for (point, expect_owner_died) in
            [("lock.before-release", true), ("lock.before-wake", false)]
        {
            let lock = Lock::new().unwrap();
            let (taken, go) = (Event::new().unwrap(), Event::new().unwrap());
            let mut child = Process::new(
                hold_then_release_and_die,
                (point.to_string(), lock.clone(), taken.clone(), go.clone()),
            );
            child.start().unwrap();
            assert!(taken.wait_timeout(LONG));
            let locker = {
                let lock = lock.clone();
                blocked(move || match lock.lock() {
                    Ok(_) => "ok",
                    Err(_died) => "owner-died",
                })
            };
            locker.asleep();
            go.set();
            child.join().unwrap();
            assert_eq!(child.exitcode(), Some(-9), "{point} never reached");
            let death = Instant::now();
            let (got, at) = locker.finish();
            // Killed before releasing: the lock is handed on flagged. Killed
            // after releasing but before waking: a clean lock, found when the
            // sleeper's slice ends.
            assert_eq!(
                got,
                if expect_owner_died {
                    "owner-died"
                } else {
                    "ok"
                },
                "{point}"
            );
            within_bound(at, death, point);
        }
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_event_setter_dead_before_waking() {
    let leaks = LeakCheck::start();
    {
        let ev = Event::new().unwrap();
        let waiter = {
            let ev = ev.clone();
            blocked(move || ev.wait_timeout(LONG))
        };
        waiter.asleep();
        let death = dies(set_and_die, ("event.set".into(), ev.clone()));
        let (set, at) = waiter.finish();
        assert!(set);
        within_bound(at, death, "Event::wait");
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_semaphore_releaser_dead_before_waking() {
    let leaks = LeakCheck::start();
    {
        let sem = Semaphore::new(0).unwrap();
        let waiter = {
            let sem = sem.clone();
            blocked(move || sem.acquire_timeout(LONG))
        };
        waiter.asleep();
        let death = dies(release_and_die, ("semaphore.released".into(), sem.clone()));
        let (got, at) = waiter.finish();
        assert!(got, "the released permit was not taken");
        within_bound(at, death, "Semaphore::acquire");
        assert_eq!(sem.value(), 0);
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_notifier_dead_before_waking() {
    let leaks = LeakCheck::start();
    {
        let cond = Condition::new().unwrap();
        let waiter = {
            let cond = cond.clone();
            blocked(move || {
                let mut g = cond.get_lock().lock().unwrap();
                let r = cond.wait_timeout(&mut g, LONG);
                if let Err(WaitError::OwnerDied) = r {
                    g.mark_consistent();
                }
                r
            })
        };
        waiter.asleep();
        // The notifier grants the wake-up and dies holding the lock: the
        // waiter takes the grant when its slice ends and re-takes the lock
        // from the dead holder.
        let death = dies(notify_and_die, ("condition.notified".into(), cond.clone()));
        let (r, at) = waiter.finish();
        assert_eq!(r, Err(WaitError::OwnerDied));
        within_bound(at, death, "Condition::wait");
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_barrier_party_dead_after_arriving() {
    let leaks = LeakCheck::start();
    {
        let b = Barrier::new(3).unwrap();
        let waiter = {
            let b = b.clone();
            blocked(move || b.wait_timeout(LONG))
        };
        waiter.asleep();
        // Dead holding the barrier's internal lock, its arrival recorded.
        let death = dies(arrive_and_die, ("barrier.arrived".into(), b.clone()));
        let (r, at) = waiter.finish();
        assert_eq!(r, Err(BrokenBarrier));
        within_bound(at, death, "Barrier::wait");
        assert!(b.is_broken());
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_barrier_last_party_dead_before_waking() {
    let leaks = LeakCheck::start();
    {
        let b = Barrier::new(2).unwrap();
        let waiter = {
            let b = b.clone();
            blocked(move || b.wait_timeout(LONG))
        };
        waiter.asleep();
        // The last party ends the generation and dies before its wake call:
        // the waiter sees the new generation when its slice ends.
        let death = dies(arrive_and_die, ("barrier.released".into(), b.clone()));
        let (r, at) = waiter.finish();
        assert_eq!(r, Ok(0));
        within_bound(at, death, "Barrier::wait");
    }
    leaks.assert_clean();
}
