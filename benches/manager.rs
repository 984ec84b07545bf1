//! mproc-manager benches; Python counterparts in `python/manager.py`.
//!
//! The bench process is the client, the manager's server another process:
//! each operation is one round trip, as with CPython's `Manager().dict()`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mproc::manager::{task, Manager, Registry};

fn add(count: Option<u64>, by: u64) -> Option<u64> {
    Some(count.unwrap_or(0) + by)
}

fn tasks() -> Registry {
    Registry::new().with(task!(add))
}

fn dict(c: &mut Criterion) {
    let mut g = c.benchmark_group("manager");
    let m = Manager::builder().tasks(tasks).start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let mut i = 0u64;
    g.bench_function("dict_insert", |b| {
        b.iter(|| {
            i = (i + 1) % 1000;
            black_box(d.insert(i, i).unwrap())
        })
    });
    g.bench_function("dict_get", |b| {
        b.iter(|| {
            i = (i + 1) % 1000;
            black_box(d.get(&i).unwrap())
        })
    });
    let add = task!(add);
    g.bench_function("dict_update", |b| {
        b.iter(|| black_box(d.update(&add, 7, 1u64).unwrap()))
    });
    g.finish();
    drop(d);
    m.shutdown().unwrap();
}

criterion_group!(benches, dict);
criterion_main!(benches);
