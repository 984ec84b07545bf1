//! mproc-sync benches; Python counterparts in `python/sync.py`.
//!
//! Two-process scenarios start the other side with `mproc::Process` and
//! time only the measured part: both sides are ready, then go.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use mproc::shm::Segment;
use mproc::sync::{wait, Barrier, Event, Lock, RLock, Value};
use mproc::Process;

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

/// Starts `f(args)` in a child and waits until it says it is ready.
fn child<F, M>(f: F, args: F::Args, ready: &Event) -> Process
where
    F: mproc::call::Callable<M, Output = ()>,
    F::Args: serde::Serialize + serde::de::DeserializeOwned,
    M: 'static,
{
    let mut p = Process::new(f, args);
    p.start().unwrap();
    assert!(
        ready.wait_timeout(Duration::from_secs(30)),
        "bench child never became ready"
    );
    p
}

fn reap(p: Process) {
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0), "bench child failed");
}

fn increment((v, ready, go, n): (Value<u64>, Event, Event, u64)) {
    ready.set();
    go.wait();
    for _ in 0..n {
        v.update(|x| *x += 1);
    }
}

fn pong_party((ready, ping, pong, n): (Event, Event, Event, u64)) {
    ready.set();
    for _ in 0..n {
        ping.wait();
        ping.clear();
        pong.set();
    }
}

fn barrier_party((ready, barrier, n): (Event, Barrier, u64)) {
    ready.set();
    for _ in 0..n {
        barrier.wait().unwrap();
    }
}

fn two_processes(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync");
    g.bench_function("value_increment_2proc", |b| {
        b.iter_custom(|iters| {
            let v = Value::new(0u64).unwrap();
            let (ready, go) = (Event::new().unwrap(), Event::new().unwrap());
            let kid = child(
                increment,
                (v.clone(), ready.clone(), go.clone(), iters),
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
                pong_party,
                (ready.clone(), ping.clone(), pong.clone(), iters),
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
            let kid = child(
                barrier_party,
                (ready.clone(), barrier.clone(), iters),
                &ready,
            );
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

criterion_group!(benches, uncontended, two_processes);
criterion_main!(benches);
