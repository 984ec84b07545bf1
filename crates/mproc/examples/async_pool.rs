//! mproc under tokio (the `async` feature): awaited pool results, an `imap`
//! stream, an awaited child, and a queue read with `get_async` while other
//! tasks run on the same thread.
//!
//! ```text
//! cargo run --example async_pool
//! ```

use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use mproc::{Pool, Process, Queue};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50));
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// A producer in its own process: puts 0..n, then closes the queue.
fn produce(q: Queue<u64>, n: u64) {
    for i in 0..n {
        q.put(i).expect("queue open");
    }
    q.close();
}

/// The next item of a stream (what `StreamExt::next` does).
async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

async fn run() -> Result<()> {
    let pool = Pool::new(4)?;

    // Four tasks awaited together: about 50 ms, not 200.
    let start = std::time::Instant::now();
    let pending: Vec<_> = (1..=4)
        .map(|x| pool.apply_async(slow_square, x))
        .collect::<std::result::Result<_, _>>()?;
    let mut got = Vec::new();
    for r in pending {
        got.push(r.await?);
    }
    println!(
        "  4 awaited apply_async: {got:?} in {:.0?}",
        start.elapsed()
    );

    // imap as a stream, in chunks of 8, while the runtime stays free.
    let mut stream = pool.imap(slow_square, 0..32).chunksize(8)?;
    let mut total = 0;
    while let Some(r) = next(&mut stream).await {
        total += r?;
    }
    println!("  imap stream of 32 squares: sum {total}");
    drop(stream);
    pool.close();
    pool.join()?;

    // A function's value from a child, awaited.
    println!(
        "  spawn(add, (2, 3)).await = {}",
        mproc::spawn(add, (2, 3)).await?
    );

    // A producer process, and this task reading its queue without blocking
    // the runtime's thread: a ticker task keeps running meanwhile.
    let q: Queue<u64> = Queue::bounded(16)?;
    let mut producer = Process::new(produce, (q.clone(), 1_000));
    producer.start()?;
    let ticker = tokio::spawn(async {
        let mut ticks = 0u32;
        for _ in 0..3 {
            tokio::task::yield_now().await;
            ticks += 1;
        }
        ticks
    });
    let mut sum = 0;
    while let Ok(x) = q.get_async().await {
        sum += x;
    }
    producer.join_async().await?;
    println!(
        "  get_async over 1,000 items from a child: sum {sum}; the ticker ran {} times",
        ticker.await?
    );
    Ok(())
}

pub(crate) fn main() -> Result<()> {
    println!("mproc with tokio (current-thread runtime):");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
