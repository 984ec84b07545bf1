//! loom models of the lock, barrier and condition state machines: the
//! production `Raw` lock, barrier `Machine` and condition `Machine`, run
//! over model-checked words.
//!
//! Two kinds of word:
//! - **blocking**: `sleep` really blocks (a loom mutex and condvar per word,
//!   which is a futex's contract), so a lost wake-up shows up as a loom
//!   deadlock;
//! - **probing**: `sleep` yields and reports a timed-out slice, so the
//!   dead-holder probe runs; the model decides who is dead, and which
//!   incarnation (start time) of a pid lives now.
//!
//! Run with `cargo test -p mproc-sync --release model` (they also run,
//! bounded, in the normal suite).

use std::sync::atomic::Ordering;
use std::time::Instant;

use loom::sync::atomic::{AtomicU32, AtomicU64};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use mproc_shm::ProcessIdent;

use crate::barrier::{BrokenBarrier, Machine, Words, COUNT, PARTIES, SLOTS};
use crate::condition::Machine as Cond;
use crate::lock::Raw;
use crate::sys::{holder_id, owner_record, Me};
use crate::wait::WaitResult;
use crate::word::{Wide, Word};

struct World {
    /// The start time of the live process with each pid; 0: none.
    live: Vec<AtomicU64>,
    probing: bool,
}

struct MWide(AtomicU64);

impl Wide for MWide {
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }

    fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order)
    }

    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        self.0.compare_exchange(current, new, success, failure)
    }
}

struct MWord {
    v: AtomicU32,
    park: (Mutex<()>, Condvar),
    world: Arc<World>,
}

impl Word for MWord {
    type Wide = MWide;
    fn load(&self, order: Ordering) -> u32 {
        self.v.load(order)
    }

    fn store(&self, value: u32, order: Ordering) {
        self.v.store(value, order)
    }

    fn swap(&self, value: u32, order: Ordering) -> u32 {
        self.v.swap(value, order)
    }

    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        self.v.compare_exchange(current, new, success, failure)
    }

    fn spin(&self, _expected: u32) -> bool {
        false
    }

    fn sleep(&self, expected: u32, _deadline: Option<Instant>) -> WaitResult {
        if self.world.probing {
            thread::yield_now();
            return if self.v.load(Ordering::SeqCst) == expected {
                WaitResult::TimedOut
            } else {
                WaitResult::Woken
            };
        }
        let guard = self.park.0.lock().unwrap();
        if self.v.load(Ordering::SeqCst) == expected {
            drop(self.park.1.wait(guard).unwrap());
        }
        WaitResult::Woken
    }

    fn wake(&self, _n: u32) {
        let _guard = self.park.0.lock().unwrap();
        self.park.1.notify_all();
    }

    fn start_of(&self, pid: u32) -> Option<u64> {
        let start = self.world.live.get(pid as usize)?.load(Ordering::SeqCst);
        (start != 0).then_some(start)
    }
}

/// Words, and one wide word per pair of them (index `i / 2`).
struct Store {
    words: Vec<MWord>,
    wides: Vec<MWide>,
}

/// Every process of the model starts at this time, unless reborn.
const FIRST_START: u64 = 1000;

impl Store {
    fn new(n: usize, pids: usize, probing: bool) -> Arc<Store> {
        let world = Arc::new(World {
            live: (0..=pids).map(|_| AtomicU64::new(FIRST_START)).collect(),
            probing,
        });
        Arc::new(Store {
            words: (0..n)
                .map(|_| MWord {
                    v: AtomicU32::new(0),
                    park: (Mutex::new(()), Condvar::new()),
                    world: world.clone(),
                })
                .collect(),
            wides: (0..n.div_ceil(2))
                .map(|_| MWide(AtomicU64::new(0)))
                .collect(),
        })
    }

    /// The lock in words 0-1 and wide word 2 (words 4-5).
    fn raw(&self) -> Raw<'_, MWord> {
        Raw {
            state: &self.words[0],
            bad: &self.words[1],
            owner: &self.wides[2],
        }
    }

    fn world(&self) -> &World {
        &self.words[0].world
    }

    fn kill(&self, pid: u32) {
        self.world().live[pid as usize].store(0, Ordering::SeqCst);
    }

    /// A new process gets `pid`, with another start time.
    fn reuse(&self, pid: u32, start: u64) {
        self.world().live[pid as usize].store(start, Ordering::SeqCst);
    }
}

impl Words for Store {
    type W = MWord;

    fn w(&self, i: usize) -> &MWord {
        &self.words[i]
    }

    fn wide(&self, i: usize) -> &MWide {
        &self.wides[i / 2]
    }

    fn len(&self) -> usize {
        self.words.len()
    }
}

/// Process `pid` (first incarnation), main thread.
fn me(pid: u32) -> Me {
    incarnation(pid, FIRST_START)
}

/// Process `pid` started at `start`, main thread (tid = pid, as on Linux).
fn incarnation(pid: u32, start: u64) -> Me {
    Me {
        hid: holder_id(pid, start),
        owner: owner_record(u64::from(pid), start),
        ident: ProcessIdent::from_parts(pid, start).to_bits(),
    }
}

fn bounded() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

#[test]
fn model_lock_excludes_and_never_loses_a_wakeup() {
    bounded().check(|| {
        // Words 0-1 and 4-5: the lock; word 3: how many are inside.
        let store = Store::new(6, 2, false);
        let workers: Vec<_> = (1..=2)
            .map(|pid| {
                let store = store.clone();
                thread::spawn(move || {
                    for _ in 0..2 {
                        let bad = store.raw().acquire(me(pid), true, None).unwrap();
                        assert!(!bad);
                        assert_eq!(
                            store.words[3].v.fetch_add(1, Ordering::SeqCst),
                            0,
                            "two holders at once"
                        );
                        store.words[3].v.fetch_sub(1, Ordering::SeqCst);
                        store.raw().release();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(store.words[0].v.load(Ordering::SeqCst), 0, "lock left held");
    });
}

#[test]
fn model_dead_holder_is_taken_over_with_owner_died() {
    bounded().check(|| {
        let store = Store::new(6, 2, true);
        // Process 1 takes the lock, then dies at some moment while 2 waits.
        assert_eq!(store.raw().acquire(me(1), true, None), Ok(false));
        let s2 = store.clone();
        let waiter = thread::spawn(move || {
            let bad = s2.raw().acquire(me(2), true, None).unwrap();
            s2.raw().release();
            bad
        });
        store.kill(1);
        assert!(
            waiter.join().unwrap(),
            "the waiter must learn that the owner died"
        );
        // Still flagged for the next locker until marked consistent.
        assert_eq!(store.raw().acquire(me(2), false, None), Ok(true));
    });
}

#[test]
fn model_live_holder_is_never_robbed() {
    bounded().check(|| {
        let store = Store::new(6, 2, true);
        assert_eq!(store.raw().acquire(me(1), true, None), Ok(false));
        let s2 = store.clone();
        let prober = thread::spawn(move || s2.raw().acquire(me(2), false, None));
        assert!(prober.join().unwrap().is_err(), "a live holder was robbed");
        store.raw().release();
    });
}

fn barrier(parties: u32, pids: usize, probing: bool) -> Arc<Store> {
    let store = Store::new(SLOTS + 2 * parties as usize, pids, probing);
    store.words[PARTIES].v.store(parties, Ordering::SeqCst);
    store
}

#[test]
fn model_barrier_gives_distinct_indices_and_wakes_everyone() {
    bounded().check(|| {
        let store = barrier(2, 2, false);
        let parties: Vec<_> = (1..=2)
            .map(|pid| {
                let store = store.clone();
                thread::spawn(move || Machine { s: &*store }.wait_until(me(pid), None))
            })
            .collect();
        let mut idx: Vec<usize> = parties
            .into_iter()
            .map(|p| p.join().unwrap().unwrap())
            .collect();
        idx.sort();
        assert_eq!(idx, [0, 1]);
    });
}

#[test]
fn model_barrier_party_that_died_breaks_it() {
    bounded().check(|| {
        let store = barrier(3, 3, true);
        // Party 1 has arrived (what an arrival leaves: its pid in slot 0 and
        // a count of 1) and is still alive.
        store.wides[SLOTS / 2]
            .0
            .store(me(1).ident, Ordering::SeqCst);
        store.words[COUNT].v.store(1, Ordering::SeqCst);
        let s2 = store.clone();
        let second = thread::spawn(move || Machine { s: &*s2 }.wait_until(me(2), None));
        // Party 1 dies at some moment while party 2 waits.
        store.kill(1);
        assert_eq!(second.join().unwrap(), Err(BrokenBarrier));
        // Broken for everyone after, until reset.
        assert_eq!(
            Machine { s: &*store }.wait_until(me(3), None),
            Err(BrokenBarrier)
        );
    });
}

#[test]
fn model_a_reused_pid_is_not_the_dead_holder() {
    bounded().check(|| {
        let store = Store::new(6, 2, true);
        // Process 1 takes the lock, leaks the guard and dies; a new process
        // gets pid 1 (its main thread has the dead one's tid too).
        assert_eq!(store.raw().acquire(me(1), true, None), Ok(false));
        store.kill(1);
        store.reuse(1, FIRST_START + 7);
        let newcomer = incarnation(1, FIRST_START + 7);
        assert!(
            !store.raw().held_by(newcomer),
            "the newcomer passes for the holder"
        );
        let s2 = store.clone();
        let other = thread::spawn(move || s2.raw().acquire(me(2), false, None));
        let mine = store.raw().acquire(newcomer, false, None);
        // Exactly one of the two takes the lock over, with OwnerDied.
        match (mine, other.join().unwrap()) {
            (Ok(true), Err(_)) | (Err(_), Ok(true)) => {}
            other => panic!("expected one OwnerDied take-over, got {other:?}"),
        }
    });
}

#[test]
fn model_condition_notify_one_ends_exactly_one_wait() {
    bounded().check(|| {
        // Words 0-1: seq and its spare; wide word 1 (words 2-3): counts.
        let store = Store::new(4, 3, true);
        let cond = |s: &Store| -> bool {
            Cond {
                seq: &s.words[0],
                counts: &s.wides[1],
            }
            .await_grant(None)
        };
        // Two waiters enlisted under the (modelled) lock, then released it.
        for _ in 0..2 {
            Cond {
                seq: &store.words[0],
                counts: &store.wides[1],
            }
            .enlist();
        }
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = store.clone();
                thread::spawn(move || cond(&s))
            })
            .collect();
        let granted = Cond {
            seq: &store.words[0],
            counts: &store.wides[1],
        }
        .notify(1);
        let woke = waiters
            .into_iter()
            .map(|w| w.join().unwrap())
            .filter(|&notified| notified)
            .count() as u64;
        // A probing sleep "times out" at once, so a waiter may leave before
        // the notify (and is then not granted); a grant is taken by exactly
        // one waiter, whether it sleeps or leaves.
        assert!(granted <= 1);
        assert_eq!(
            woke, granted,
            "notify(1) granted {granted}, ended {woke} waits"
        );
        assert_eq!(store.wides[1].0.load(Ordering::SeqCst), 0, "counts left");
    });
}

#[test]
fn model_condition_notify_all_loses_no_wakeup() {
    bounded().check(|| {
        let store = Store::new(4, 3, false);
        for _ in 0..2 {
            Cond {
                seq: &store.words[0],
                counts: &store.wides[1],
            }
            .enlist();
        }
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = store.clone();
                thread::spawn(move || {
                    Cond {
                        seq: &s.words[0],
                        counts: &s.wides[1],
                    }
                    .await_grant(None)
                })
            })
            .collect();
        Cond {
            seq: &store.words[0],
            counts: &store.wides[1],
        }
        .notify(u32::MAX);
        for w in waiters {
            assert!(w.join().unwrap(), "a blocked waiter was not released");
        }
    });
}
