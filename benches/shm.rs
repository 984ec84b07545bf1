//! mproc-shm benches; Python counterparts in `python/shm.py`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mproc::shm::{FileDoc, RawValue, Segment, SharedMemory};
use mproc_benches::Scratch;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Office {
    count: i64,
}

fn segments(c: &mut Criterion) {
    let mut g = c.benchmark_group("shm");
    g.bench_function("anonymous_segment_create_map_drop", |b| {
        b.iter(|| drop(black_box(Segment::anonymous(4096).unwrap())))
    });
    let name = format!("mpb-{}", std::process::id());
    g.bench_function("named_create_map_unlink", |b| {
        b.iter(|| drop(black_box(SharedMemory::create(&name, 4096).unwrap())))
    });
    let v = RawValue::new(0i64).unwrap();
    g.bench_function("raw_value_increment", |b| {
        b.iter(|| v.set(black_box(v.get() + 1)))
    });
    g.finish();
}

fn documents(c: &mut Criterion) {
    let dir = Scratch::new("doc").unwrap();
    let doc = FileDoc::create(dir.path().join("office.json"), &Office { count: 0 }).unwrap();
    let mut g = c.benchmark_group("shm");
    g.bench_function("file_doc_update", |b| {
        b.iter(|| doc.update(|o| o.count += 1).unwrap())
    });
    g.finish();
    doc.remove().unwrap();
}

criterion_group!(benches, segments, documents);
criterion_main!(benches);
