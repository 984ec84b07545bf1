//! loom models of the lock and barrier state machines: the production
//! `Raw` lock and barrier `Machine`, run over model-checked words.
//!
//! Two kinds of word:
//! - **blocking**: `sleep` really blocks (a loom mutex and condvar per word,
//!   which is a futex's contract), so a lost wake-up shows up as a loom
//!   deadlock;
//! - **probing**: `sleep` yields and reports a timed-out slice, so the
//!   dead-holder probe runs; the model decides who is dead.
//!
//! Run with `cargo test -p mproc-sync --release model` (they also run,
//! bounded, in the normal suite).

use std::sync::atomic::Ordering;
use std::time::Instant;

use loom::sync::atomic::{AtomicBool, AtomicU32};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use crate::barrier::{BrokenBarrier, Machine, Words, COUNT, PARTIES, SLOTS};
use crate::lock::Raw;
use crate::sys::Me;
use crate::wait::WaitResult;
use crate::word::Word;

struct World {
    dead: Vec<AtomicBool>,
    probing: bool,
}

struct MWord {
    v: AtomicU32,
    park: (Mutex<()>, Condvar),
    world: Arc<World>,
}

impl Word for MWord {
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

    fn is_dead(&self, pid: u32) -> bool {
        self.world
            .dead
            .get(pid as usize)
            .is_none_or(|d| d.load(Ordering::SeqCst))
    }
}

struct Store {
    words: Vec<MWord>,
}

impl Store {
    fn new(n: usize, pids: usize, probing: bool) -> Arc<Store> {
        let world = Arc::new(World {
            dead: (0..=pids).map(|_| AtomicBool::new(false)).collect(),
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
        })
    }

    fn raw(&self) -> Raw<'_, MWord> {
        Raw {
            state: &self.words[0],
            tid: &self.words[1],
            bad: &self.words[2],
        }
    }

    fn kill(&self, pid: u32) {
        self.words[0].world.dead[pid as usize].store(true, Ordering::SeqCst);
    }
}

impl Words for Store {
    type W = MWord;

    fn w(&self, i: usize) -> &MWord {
        &self.words[i]
    }

    fn len(&self) -> usize {
        self.words.len()
    }
}

fn me(pid: u32) -> Me {
    Me { pid, tid: pid * 10 }
}

fn bounded() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

#[test]
fn model_lock_excludes_and_never_loses_a_wakeup() {
    bounded().check(|| {
        // Words 0-2: the lock; word 3: how many are inside.
        let store = Store::new(4, 2, false);
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
        let store = Store::new(3, 2, true);
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
        let store = Store::new(3, 2, true);
        assert_eq!(store.raw().acquire(me(1), true, None), Ok(false));
        let s2 = store.clone();
        let prober = thread::spawn(move || s2.raw().acquire(me(2), false, None));
        assert!(prober.join().unwrap().is_err(), "a live holder was robbed");
        store.raw().release();
    });
}

fn barrier(parties: u32, pids: usize, probing: bool) -> Arc<Store> {
    let store = Store::new(SLOTS + parties as usize, pids, probing);
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
        store.words[SLOTS].v.store(1, Ordering::SeqCst);
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
