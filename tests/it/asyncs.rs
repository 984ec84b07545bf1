//! The `async` feature across real processes, under tokio's current-thread
//! and multi-thread runtimes and under `futures::executor`: awaited pool
//! results and `imap` streams, awaited children, async queue and pipe ends,
//! and the cancel safety of `get_async` / `recv_async`.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_core::Stream;
use mproc::pool::PoolError;
use mproc::queue::{GetError, RecvError};
use mproc::sync::Event;
use mproc::{Pipe, Pool, Process, Queue, StartMethod};
use mproc_tests::LeakCheck;

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn boom(_: u64) -> u64 {
    panic!("boom")
}

/// Puts `0..n` on `q`, then closes it.
fn produce(q: Queue<u64>, n: u64) {
    for i in 0..n {
        q.put(i).unwrap();
    }
    q.close();
}

/// Takes `n` items from `q` and sends their sum back.
fn consume(q: Queue<u64>, n: u64, back: mproc::Connection<u64>) {
    let sum = (0..n).map(|_| q.get().unwrap()).sum();
    back.send(sum).unwrap();
}

/// Sends each of `items` once `go` is set.
fn send_after(tx: mproc::Connection<String>, go: Event, items: Vec<String>) {
    go.wait();
    for s in items {
        tx.send(s).unwrap();
    }
}

/// Puts one item each time `go` is set (clearing it first).
fn put_on_signal(q: Queue<u64>, go: Event, n: u64) {
    for i in 0..n {
        go.wait();
        go.clear();
        q.put(i).unwrap();
    }
}

/// The next item of a stream.
async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// The async scenario every executor runs.
async fn scenario(method: StartMethod) {
    let pool = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .unwrap();
    // An awaited apply_async, and a task's error.
    assert_eq!(pool.apply_async(add, (40, 2)).unwrap().await, Ok(42));
    let err = pool.apply_async(boom, 1).unwrap().await;
    assert!(matches!(err, Err(PoolError::Task(_))), "{err:?}");
    assert_eq!(
        pool.map_async(square, 0..10).unwrap().await.unwrap(),
        (0..10).map(square).collect::<Vec<_>>()
    );
    // imap as a stream, ordered, in chunks of 7.
    let mut stream = pool.imap(square, 0..100).chunksize(7).unwrap();
    let mut got = Vec::new();
    while let Some(r) = next(&mut stream).await {
        got.push(r.unwrap());
    }
    assert_eq!(got, (0..100).map(square).collect::<Vec<_>>());
    let mut unordered = pool.imap_unordered(square, 0..50);
    let mut got = Vec::new();
    while let Some(r) = next(&mut unordered).await {
        got.push(r.unwrap());
    }
    got.sort();
    assert_eq!(got, (0..50).map(square).collect::<Vec<_>>());
    pool.close();
    pool.join().unwrap();

    // An awaited spawn and an awaited Process.
    let h = mproc::process::Builder::new()
        .start_method(method)
        .spawn(add, (2, 3))
        .unwrap();
    assert_eq!(h.await.unwrap(), 5);
    let q: Queue<u64> = Queue::new().unwrap();
    let mut p = Process::new(produce, (q.clone(), 300)).start_method(method);
    p.start().unwrap();
    // Items from a child, awaited as they come, until it closes the queue.
    let mut sum = 0;
    let end = loop {
        match q.get_async().await {
            Ok(x) => sum += x,
            Err(e) => break e,
        }
    };
    assert_eq!((sum, end), ((0..300).sum(), GetError::Closed));
    p.join_async().await.unwrap();
    assert_eq!(p.exitcode(), Some(0));

    // put_async into a bounded queue that a child drains.
    let q: Queue<u64> = Queue::bounded(2).unwrap();
    let (back_rx, back_tx) = Pipe::<u64>::simplex().unwrap();
    let mut c = Process::new(consume, (q.clone(), 200, back_tx.clone())).start_method(method);
    c.start().unwrap();
    drop(back_tx);
    for i in 0..200 {
        q.put_async(i).await.unwrap();
    }
    assert_eq!(back_rx.recv_async().await, Ok((0..200).sum()));
    c.join_async().await.unwrap();
    // The child is gone and its end with it.
    assert_eq!(back_rx.recv_async().await, Err(RecvError::Disconnected));
}

fn settle(leaks: LeakCheck) {
    // A watcher lets go of its object within a slice of its last waiter.
    assert!(mproc::shm::waker::wait_released(Duration::from_secs(5)));
    leaks.assert_clean();
}

#[test]
fn async_under_tokio_current_thread() {
    let leaks = LeakCheck::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(scenario(StartMethod::Forkserver));
    rt.block_on(scenario(StartMethod::Spawn));
    drop(rt);
    settle(leaks);
}

#[test]
fn async_under_tokio_multi_thread() {
    let leaks = LeakCheck::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Many tasks awaiting one pool at once.
        let pool = Arc::new(Pool::new(2).unwrap());
        let tasks: Vec<_> = (0..40u64)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.apply_async(square, i).unwrap().await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Ok(square(i as u64)));
        }
        pool.close();
        pool.join().unwrap();
    });
    rt.block_on(scenario(StartMethod::Forkserver));
    rt.block_on(scenario(StartMethod::Fork));
    drop(rt);
    settle(leaks);
}

#[test]
fn async_under_futures_executor() {
    let leaks = LeakCheck::start();
    futures_executor::block_on(scenario(StartMethod::Forkserver));
    // Spawned children outside tokio: a watcher thread waits for them.
    futures_executor::block_on(scenario(StartMethod::Spawn));
    settle(leaks);
}

/// A waker that reports each wake on a channel.
struct Signal(mpsc::Sender<()>);

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        let _ = self.0.send(());
    }
}

/// Polls `fut` once with a waker that reports on the returned channel.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> (Poll<F::Output>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let waker = Waker::from(Arc::new(Signal(tx)));
    (Pin::new(fut).poll(&mut Context::from_waker(&waker)), rx)
}

#[test]
fn a_dropped_get_async_loses_no_item() {
    let leaks = LeakCheck::start();
    let q: Queue<u64> = Queue::new().unwrap();
    let go = Event::new().unwrap();
    let mut p = Process::new(put_on_signal, (q.clone(), go.clone(), 50));
    p.start().unwrap();
    for i in 0..50 {
        // A waiting get…
        let mut fut = Box::pin(q.get_async());
        let (first, woken) = poll_once(&mut fut);
        assert!(first.is_pending());
        // …woken by the child's put, and dropped before it is polled again
        // (as a `select!` or a timeout drops it).
        go.set();
        woken.recv().unwrap();
        drop(fut);
        // The item is still there for the next get.
        assert_eq!(q.try_get(), Ok(i));
    }
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    drop((p, q, go));
    settle(leaks);
}

#[test]
fn a_dropped_recv_async_loses_no_message() {
    let leaks = LeakCheck::start();
    let (rx, tx) = Pipe::<String>::simplex().unwrap();
    let go = Event::new().unwrap();
    let words: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let mut p = Process::new(send_after, (tx, go.clone(), words.clone()));
    p.start().unwrap();
    let mut fut = Box::pin(rx.recv_async());
    let (first, woken) = poll_once(&mut fut);
    assert!(first.is_pending());
    go.set();
    woken.recv().unwrap();
    drop(fut);
    let got: Vec<String> = futures_executor::block_on(async {
        let mut got = Vec::new();
        while let Ok(s) = rx.recv_async().await {
            got.push(s);
        }
        got
    });
    assert_eq!(got, words);
    p.join().unwrap();
    drop((p, rx, go));
    settle(leaks);
}

#[test]
fn tokio_select_of_get_async_against_a_ready_branch_loses_nothing() {
    let leaks = LeakCheck::start();
    let q: Queue<u64> = Queue::new().unwrap();
    let mut p = Process::new(produce, (q.clone(), 2_000));
    p.start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let mut got = Vec::new();
        let mut turn = 0u64;
        loop {
            turn += 1;
            // Every other turn a branch that is ready at once wins, and the
            // get_async future is dropped wherever it was.
            tokio::select! {
                biased;
                () = std::future::ready(()), if turn % 2 == 0 => {}
                r = q.get_async() => match r {
                    Ok(x) => got.push(x),
                    Err(GetError::Closed) => break got,
                    Err(e) => panic!("{e}"),
                },
            }
        }
    });
    assert_eq!(got, (0..2_000).collect::<Vec<_>>());
    p.join().unwrap();
    drop((rt, p, q));
    settle(leaks);
}

#[test]
fn an_awaited_result_is_a_future_and_an_imap_a_stream() {
    fn is_future<F: IntoFuture>(_: &F) {}
    fn is_stream<S: Stream>(_: &S) {}
    let leaks = LeakCheck::start();
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(square, 3).unwrap();
    is_future(&r);
    let it = pool.imap(square, 0..3);
    is_stream(&it);
    assert_eq!(Iterator::size_hint(&it), (3, Some(3)));
    drop(it);
    assert_eq!(r.get(), Ok(9));
    pool.close();
    pool.join().unwrap();
    drop(pool);
    settle(leaks);
}
