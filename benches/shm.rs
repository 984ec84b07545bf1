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

/// The worker's side of a hand-off: it gets the buffer and returns it.
fn echo_buf(b: mproc::Buf) -> mproc::Buf {
    b
}

/// The same with the bytes copied each way (what a `Vec<u8>` argument and
/// result cost before `Buf`).
fn echo_bytes(b: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    b
}

/// A frozen buffer of `len` bytes with every page written.
fn filled(len: usize) -> mproc::Buf {
    let mut b = mproc::BufMut::zeroed(len).unwrap();
    for page in b.chunks_mut(4096) {
        page[0] = 1;
    }
    b.freeze().unwrap()
}

/// A buffer to a pool worker and back: as a `Buf` (its descriptor travels)
/// and as bytes (copied through the job pipe and the result queue).
fn buffers(c: &mut Criterion) {
    let mut g = c.benchmark_group("buf");
    g.sample_size(10);
    let pool = mproc::Pool::new(1).unwrap();
    let small = filled(64 << 20);
    g.bench_function("pool_roundtrip_64MiB", |b| {
        b.iter(|| pool.apply(echo_buf, small.clone()).unwrap())
    });
    let bytes = serde_bytes::ByteBuf::from(small.to_vec());
    g.bench_function("pool_roundtrip_64MiB_copied", |b| {
        b.iter(|| pool.apply(echo_bytes, bytes.clone()).unwrap())
    });
    drop(bytes);
    drop(small);
    // A smoke run (no `--bench`) runs each bench once: a smaller buffer.
    let full = std::env::args().any(|a| a == "--bench");
    let big = filled(if full { 1 << 30 } else { 64 << 20 });
    g.bench_function("pool_roundtrip_1GiB", |b| {
        b.iter(|| pool.apply(echo_buf, big.clone()).unwrap())
    });
    drop(big);
    pool.close();
    pool.join().unwrap();
    g.finish();
}

criterion_group!(benches, segments, documents, buffers);
criterion_main!(benches);
