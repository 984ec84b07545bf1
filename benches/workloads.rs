//! Real workloads on a generated corpus of uneven files (about 100 MB; 4 MB
//! in a smoke run): SHA-256 of every file with `Pool::map`, and word
//! frequencies with `imap_unordered` (chunks of 16) and a reduce in the
//! parent, and with `map_reduce` (merged in the workers first) — each
//! beside rayon on the same cores, and Python's Pool (`python/workloads.py`)
//! on the same files.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mproc::Pool;
use mproc_benches::corpus;
use mproc_benches::Scratch;
use rayon::prelude::*;

fn workloads(c: &mut Criterion) {
    // A smoke run (no `--bench`) runs each bench once: a small corpus.
    let full = std::env::args().any(|a| a == "--bench");
    let dir = Scratch::new("corpus").unwrap();
    let bytes = if full {
        corpus::FULL_BYTES
    } else {
        corpus::SMOKE_BYTES
    };
    let paths: Vec<String> = corpus::write(dir.path(), bytes)
        .unwrap()
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let cores = mproc::process::cpu_count();
    let pool = Pool::new(cores).unwrap();
    // Rayon on as many threads as the pool has workers.
    let threads = rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .build()
        .unwrap();
    // Both sides must agree before anything is timed.
    let ours = pool.map(corpus::sha256_file, paths.clone()).unwrap();
    let theirs: Vec<[u8; 32]> =
        threads.install(|| paths.par_iter().cloned().map(corpus::sha256_file).collect());
    assert_eq!(ours, theirs);

    let mut g = c.benchmark_group("workload");
    g.sample_size(10);
    g.bench_function("sha256_pool_map", |b| {
        b.iter(|| pool.map(corpus::sha256_file, paths.clone()).unwrap())
    });
    g.bench_function("sha256_rayon", |b| {
        b.iter(|| {
            threads.install(|| {
                paths
                    .par_iter()
                    .cloned()
                    .map(corpus::sha256_file)
                    .collect::<Vec<_>>()
            })
        })
    });
    let words = |counts: HashMap<String, u64>| counts.values().sum::<u64>();
    g.bench_function("words_pool_imap_unordered", |b| {
        b.iter(|| {
            let total = pool
                .imap_unordered(corpus::count_words, paths.clone())
                .chunksize(16)
                .unwrap()
                .map(Result::unwrap)
                .fold(HashMap::new(), corpus::merge);
            black_box(words(total))
        })
    });
    // The same with the reduce done in the workers first: one value per
    // chunk comes back.
    g.bench_function("words_pool_map_reduce", |b| {
        b.iter(|| {
            let total = pool
                .map_reduce(corpus::count_words, corpus::merge, paths.clone())
                .unwrap()
                .unwrap_or_default();
            black_box(words(total))
        })
    });
    g.bench_function("words_rayon", |b| {
        b.iter(|| {
            let total = threads.install(|| {
                paths
                    .par_iter()
                    .cloned()
                    .map(corpus::count_words)
                    .reduce(HashMap::new, corpus::merge)
            });
            black_box(words(total))
        })
    });
    g.finish();
    pool.close();
    pool.join().unwrap();
}

criterion_group!(benches, workloads);
criterion_main!(benches);
