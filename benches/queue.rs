//! mproc-queue benches; Python counterparts in `python/queues.py`.
//!
//! Throughput scenarios start their processes first, let them meet at an
//! Event, and time from "go" until every consumer has its last item. Each
//! criterion iteration is one item (or one round trip).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use mproc::queue::Connection;
use mproc::sync::Event;
use mproc::{JoinableQueue, Pipe, Process, Queue};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;

/// A byte payload, as Python's `bytes`: `serde_bytes` makes it one copy
/// (a plain `Vec<u8>` goes through serde byte by byte).
fn bytes(n: usize) -> ByteBuf {
    ByteBuf::from(vec![7u8; n])
}

/// Items: `None` is the end of a producer's stream.
type Item<T> = Option<T>;

fn producer<T: Serialize + DeserializeOwned + Clone>(args: (Event, Queue<Item<T>>, T, u64)) {
    let (go, q, item, n) = args;
    go.wait();
    for _ in 0..n {
        q.put(Some(item.clone())).unwrap();
    }
    q.put(None).unwrap();
}

fn consumer<T: Serialize + DeserializeOwned>(args: (Event, Queue<Item<T>>, Queue<()>)) {
    let (go, q, done) = args;
    go.wait();
    while let Ok(Some(_)) = q.get() {}
    done.put(()).unwrap();
}

/// Moves `total` items from `p` producers to `c` consumers (p == c).
fn mpmc<T: Serialize + DeserializeOwned + Clone + Send + 'static>(
    pc: usize,
    item: T,
    total: u64,
) -> Duration {
    let q: Queue<Item<T>> = Queue::new().unwrap();
    let done: Queue<()> = Queue::new().unwrap();
    let go = Event::new().unwrap();
    let per = total / pc as u64;
    let mut kids: Vec<Process> = (0..pc)
        .map(|_| Process::new(producer::<T>, (go.clone(), q.clone(), item.clone(), per)))
        .chain((0..pc).map(|_| Process::new(consumer::<T>, (go.clone(), q.clone(), done.clone()))))
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    let start = Instant::now();
    go.set();
    for _ in 0..pc {
        done.get().unwrap();
    }
    let elapsed = start.elapsed();
    for k in &kids {
        k.join().unwrap();
    }
    elapsed
}

fn queues(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.sample_size(10);
    g.bench_function("1to1_8B", |b| {
        b.iter_custom(|iters| mpmc(1, 0x1234_5678_9abc_def0u64, iters))
    });
    g.bench_function("1to1_1KiB", |b| {
        b.iter_custom(|iters| mpmc(1, bytes(1024), iters))
    });
    g.bench_function("1to1_64KiB", |b| {
        b.iter_custom(|iters| mpmc(1, bytes(64 << 10), iters))
    });
    g.bench_function("2to2_1KiB", |b| {
        b.iter_custom(|iters| mpmc(2, bytes(1024), iters.max(2)))
    });

    let jq: JoinableQueue<u64> = JoinableQueue::new().unwrap();
    let mut worker = Process::new(task_doer, jq.clone()).daemon(true);
    worker.start().unwrap();
    g.bench_function("joinable_put_task_done_join", |b| {
        b.iter(|| {
            jq.put(1).unwrap();
            jq.join();
        })
    });
    worker.terminate().unwrap();
    worker.join().unwrap();
    g.finish();
}

fn task_doer(jq: JoinableQueue<u64>) {
    while jq.get().is_ok() {
        jq.task_done().unwrap();
    }
}

fn echo(conn: Connection<u64>) {
    while let Ok(n) = conn.recv() {
        if conn.send(n).is_err() {
            break;
        }
    }
}

/// Sends `n` messages of `size` bytes each time it is asked.
fn sender(args: (Connection<u64>, usize)) {
    let (conn, size) = args;
    let payload = vec![3u8; size];
    while let Ok(n) = conn.recv() {
        for _ in 0..n {
            if conn.send_bytes(&payload).is_err() {
                return;
            }
        }
    }
}

fn pipes(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe");
    g.sample_size(20);
    let (ours, theirs) = Pipe::<u64>::duplex().unwrap();
    let mut p = Process::new(echo, theirs);
    p.start().unwrap();
    g.bench_function("round_trip", |b| {
        b.iter(|| {
            ours.send(1).unwrap();
            ours.recv().unwrap()
        })
    });
    drop(ours);
    p.join().unwrap();

    for (name, size) in [("oneway_1KiB", 1024), ("oneway_1MiB", 1 << 20)] {
        let (ours, theirs) = Pipe::<u64>::duplex().unwrap();
        let mut p = Process::new(sender, (theirs, size));
        p.start().unwrap();
        let mut buf = Vec::new();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                ours.send(iters).unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    ours.recv_bytes_into(&mut buf).unwrap();
                }
                start.elapsed()
            })
        });
        drop(ours);
        p.join().unwrap();
    }
    g.finish();
}

/// ipc-channel's producer: connects to the parent's one-shot server, says
/// hello, waits for "go", then sends `n` items and an end marker.
fn ipc_producer(args: (String, Event, u64)) {
    let (name, go, n) = args;
    let tx = IpcSender::<Option<u64>>::connect(name).unwrap();
    tx.send(None).unwrap();
    go.wait();
    for i in 0..n {
        tx.send(Some(0x1234_5678_9abc_def0 ^ i)).unwrap();
    }
    tx.send(None).unwrap();
}

/// The parent's half of one ipc-channel 1→1 run: the same shape as [`mpmc`].
fn ipc_one_to_one(n: u64) -> Duration {
    let (server, name) = IpcOneShotServer::<Option<u64>>::new().unwrap();
    let go = Event::new().unwrap();
    let mut p = Process::new(ipc_producer, (name, go.clone(), n));
    p.start().unwrap();
    let (rx, _hello) = server.accept().unwrap();
    let start = Instant::now();
    go.set();
    while rx.recv().unwrap().is_some() {}
    let elapsed = start.elapsed();
    p.join().unwrap();
    elapsed
}

/// Requests in, replies out: the channels travel to the parent through the
/// one-shot server (they cannot ride in a postcard-encoded argument).
type IpcEnds = (IpcSender<u64>, IpcReceiver<u64>);

fn ipc_echo(name: String) {
    let (req_tx, req_rx) = ipc::channel::<u64>().unwrap();
    let (rep_tx, rep_rx) = ipc::channel::<u64>().unwrap();
    IpcSender::<IpcEnds>::connect(name)
        .unwrap()
        .send((req_tx, rep_rx))
        .unwrap();
    while let Ok(n) = req_rx.recv() {
        if rep_tx.send(n).is_err() {
            break;
        }
    }
}

/// The same scenarios over ipc-channel (Servo's IPC, unix sockets with
/// bincode), the crate most Rust programs reach for between processes.
fn ipc_channel(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipc_channel");
    g.sample_size(10);
    g.bench_function("1to1_8B", |b| b.iter_custom(ipc_one_to_one));

    let (server, name) = IpcOneShotServer::<IpcEnds>::new().unwrap();
    let mut p = Process::new(ipc_echo, name);
    p.start().unwrap();
    let (_, (req, rep)) = server.accept().unwrap();
    g.bench_function("round_trip", |b| {
        b.iter(|| {
            req.send(1).unwrap();
            rep.recv().unwrap()
        })
    });
    drop(req);
    p.join().unwrap();
    g.finish();
}

criterion_group!(benches, queues, pipes, ipc_channel);
criterion_main!(benches);
