//! mproc-sync benches; Python counterparts in `python/sync.py`.
//!
//! Two-process scenarios re-execute this binary in a child role (chosen by
//! `MPROC_BENCH_ROLE`), hand it the primitives with `mproc::shm::transfer`,
//! and time only the measured part: both sides are ready, then go.

use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use mproc::shm::{transfer, Segment};
use mproc::sync::{wait, Barrier, Event, Lock, RLock, Value};

const ROLE: &str = "MPROC_BENCH_ROLE";
const ARG: &str = "MPROC_BENCH_ARG";

/// A bare futex lock on a shared word (the three-state mutex): the floor
/// that `Lock` is measured against.
fn bare_lock(word: &AtomicU32) {
    if word
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        while word.swap(2, Ordering::Acquire) != 0 {
            wait::wait(word, 2, None);
        }
    }
}

fn bare_unlock(word: &AtomicU32) {
    if word.swap(0, Ordering::Release) == 2 {
        wait::wake_one(word);
    }
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync");
    let lock = Lock::new().unwrap();
    g.bench_function("lock_uncontended", |b| {
        b.iter(|| drop(black_box(lock.lock())))
    });
    let rlock = RLock::new().unwrap();
    g.bench_function("rlock_uncontended", |b| {
        b.iter(|| drop(black_box(rlock.lock())))
    });
    let seg = Segment::anonymous(64).unwrap();
    let word = seg.atomic_u32(0).unwrap();
    g.bench_function("bare_futex_lock", |b| {
        b.iter(|| {
            bare_lock(black_box(word));
            bare_unlock(word);
        })
    });
    g.finish();
}

/// Starts this binary as `role` with `handles`, waits until it is ready.
fn child<T: serde::Serialize>(role: &str, handles: &T, ready: &Event) -> std::process::Child {
    let msg = transfer::encode(handles).unwrap();
    let hex: String = msg.bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, role).env(ARG, hex);
    let kid = transfer::spawn_inheriting(&mut cmd, &msg.fds).unwrap();
    assert!(
        ready.wait_timeout(Duration::from_secs(30)),
        "bench child never became ready"
    );
    kid
}

fn reap(mut kid: std::process::Child) {
    assert!(kid.wait().unwrap().success(), "bench child failed");
}

fn two_processes(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync");
    g.bench_function("value_increment_2proc", |b| {
        b.iter_custom(|iters| {
            let v = Value::new(0u64).unwrap();
            let (ready, go) = (Event::new().unwrap(), Event::new().unwrap());
            let kid = child(
                "increment",
                &(v.clone(), ready.clone(), go.clone(), iters),
                &ready,
            );
            let start = Instant::now();
            go.set();
            for _ in 0..iters {
                v.update(|x| *x += 1);
            }
            // The child's share is done when the total is complete.
            while v.get() < 2 * iters {
                std::hint::spin_loop();
            }
            let t = start.elapsed();
            reap(kid);
            t
        })
    });
    g.bench_function("event_ping_pong_2proc", |b| {
        b.iter_custom(|iters| {
            let (ready, ping, pong) = (
                Event::new().unwrap(),
                Event::new().unwrap(),
                Event::new().unwrap(),
            );
            let kid = child(
                "pong",
                &(ready.clone(), ping.clone(), pong.clone(), iters),
                &ready,
            );
            let start = Instant::now();
            for _ in 0..iters {
                ping.set();
                pong.wait();
                pong.clear();
            }
            let t = start.elapsed();
            reap(kid);
            t
        })
    });
    g.bench_function("barrier_round_2proc", |b| {
        b.iter_custom(|iters| {
            let (ready, barrier) = (Event::new().unwrap(), Barrier::new(2).unwrap());
            let kid = child("barrier", &(ready.clone(), barrier.clone(), iters), &ready);
            let start = Instant::now();
            for _ in 0..iters {
                barrier.wait().unwrap();
            }
            let t = start.elapsed();
            reap(kid);
            t
        })
    });
    g.finish();
}

fn run_child(role: &str) {
    let hex = std::env::var(ARG).unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let spec = std::env::var(transfer::INHERIT_ENV).unwrap();
    // SAFETY: the parent handed exactly these descriptors; read once at start.
    let fds = unsafe { transfer::FdTable::from_inherit_spec(&spec) }.unwrap();
    let msg = transfer::Message { bytes, fds };
    match role {
        "increment" => {
            let (v, ready, go, n): (Value<u64>, Event, Event, u64) = transfer::decode(msg).unwrap();
            ready.set();
            go.wait();
            for _ in 0..n {
                v.update(|x| *x += 1);
            }
        }
        "pong" => {
            let (ready, ping, pong, n): (Event, Event, Event, u64) = transfer::decode(msg).unwrap();
            ready.set();
            for _ in 0..n {
                ping.wait();
                ping.clear();
                pong.set();
            }
        }
        "barrier" => {
            let (ready, barrier, n): (Event, Barrier, u64) = transfer::decode(msg).unwrap();
            ready.set();
            for _ in 0..n {
                barrier.wait().unwrap();
            }
        }
        other => panic!("unknown bench role {other}"),
    }
}

criterion_group!(benches, uncontended, two_processes);

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        run_child(&role);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
