//! mproc-pool benches; Python counterparts in `python/pool.py`.
//!
//! Pools of two workers (as the DESIGN's Python figures), except the
//! CPU-bound map, which uses every core and compares with the same work
//! done serially in this process.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mproc::Pool;

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

/// About a millisecond of arithmetic that the optimizer cannot skip.
fn spin(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..400_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn pools(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool");
    let pool = Pool::new(2).unwrap();
    g.bench_function("apply_async_get", |b| {
        b.iter(|| {
            pool.apply_async(square, black_box(7))
                .unwrap()
                .get()
                .unwrap()
        })
    });

    // The same round trip awaited (the `async` feature) on the simplest
    // executor: the pool's result thread wakes the task, nothing polls.
    g.bench_function("apply_async_await", |b| {
        b.iter(|| {
            futures_executor::block_on(async {
                pool.apply_async(square, black_box(7))
                    .unwrap()
                    .await
                    .unwrap()
            })
        })
    });

    g.sample_size(10);
    g.bench_function("map_1e6_default", |b| {
        b.iter(|| pool.map(square, 0..1_000_000u64).unwrap())
    });
    g.bench_function("map_100k_default", |b| {
        b.iter(|| pool.map(square, 0..100_000u64).unwrap())
    });
    g.bench_function("imap_100k_chunk1", |b| {
        b.iter(|| {
            pool.imap(square, 0..100_000u64)
                .map(Result::unwrap)
                .fold(0u64, u64::wrapping_add)
        })
    });
    drop(pool);

    let cores = mproc::process::cpu_count();
    let pool = Pool::new(cores).unwrap();
    let jobs: Vec<u64> = (0..8 * cores as u64).collect();
    g.bench_function("cpu_map_all_cores", |b| {
        b.iter(|| pool.map_chunked(spin, jobs.clone(), 1).unwrap())
    });
    g.bench_function("cpu_serial", |b| {
        b.iter(|| jobs.iter().map(|&j| spin(black_box(j))).collect::<Vec<_>>())
    });
    pool.close();
    pool.join().unwrap();

    // Uneven work: 50 tasks of exponentially distributed length (mean
    // 2 ms, 91 ms in all) on two workers. The makespan is compared with
    // CPython's Pool on the same durations and with the ideal — the total
    // over the workers, here one thread busy for that long.
    let durations = mproc_benches::uneven_durations_us(50, 2000.0);
    let ideal = durations.iter().sum::<u64>() / 2;
    let pool = Pool::new(2).unwrap();
    g.bench_function("uneven_map_chunk1", |b| {
        b.iter(|| {
            pool.map_chunked(mproc_benches::busy_for_us, durations.clone(), 1)
                .unwrap()
        })
    });
    g.bench_function("uneven_ideal", |b| {
        b.iter(|| mproc_benches::busy_for_us(black_box(ideal)))
    });
    drop(pool);

    // Many workers: built, and each has run a task (the start is what is
    // timed; the join is not).
    g.bench_function("start_500_ready", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let t = std::time::Instant::now();
                let pool = Pool::new(500).unwrap();
                let out = pool.map_chunked(square, 0..500u64, 1).unwrap();
                total += t.elapsed();
                black_box(out);
                pool.close();
                pool.join().unwrap();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, pools);
criterion_main!(benches);
