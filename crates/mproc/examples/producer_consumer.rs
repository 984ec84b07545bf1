//! Three producers and two consumers on one queue, ended by sentinels.
//!
//! ```text
//! cargo run --example producer_consumer
//! ```
//!
//! The tutorials' lesson about sentinels: a consumer stops at the first
//! `None` it takes, so the `None`s must go in only once every producer is
//! done — one per consumer, put by the parent after joining the producers.
//! A producer that puts its own `None` when it finishes can stop a consumer
//! while the other producers are still putting, and their items then wait for
//! a consumer that never comes. The queue is FIFO per producer, so every item
//! a producer put before it was joined is ahead of the parent's sentinels.

use mproc::{Process, Queue};

/// The work queue: `Some((producer, n))`, or `None`, the sentinel.
type Work = Queue<Option<(u32, u32)>>;

/// A producer's items: `(producer, n)`.
fn produce(q: Work, id: u32) {
    for n in 0..5 {
        q.put(Some((id, n))).expect("put");
    }
}

/// Takes items until a sentinel and reports how many it took.
fn consume(q: Work, report: Queue<(u32, usize)>, id: u32) {
    let mut taken = 0;
    while let Ok(Some((_producer, _n))) = q.get() {
        taken += 1;
    }
    report.put((id, taken)).expect("report");
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("Three producers put 5 items each; two consumers take them until a sentinel.");
    let q: Work = Queue::new()?;
    let report: Queue<(u32, usize)> = Queue::new()?;
    let mut consumers: Vec<Process> = (0..2)
        .map(|id| Process::new(consume, (q.clone(), report.clone(), id)))
        .collect();
    let mut producers: Vec<Process> = (0..3)
        .map(|id| Process::new(produce, (q.clone(), id)))
        .collect();
    for p in consumers.iter_mut().chain(&mut producers) {
        p.start()?;
    }
    // Only now, with every item in the queue, one sentinel per consumer.
    for p in &producers {
        p.join()?;
    }
    for _ in &consumers {
        q.put(None)?;
    }
    for p in &consumers {
        p.join()?;
    }
    let mut total = 0;
    for _ in &consumers {
        let (id, taken) = report.get()?;
        println!("  consumer {id} took {taken} items");
        total += taken;
    }
    println!(
        "  {total} of 15 items consumed; the queue is empty: {}\n",
        q.is_empty()
    );
    if total != 15 || !q.is_empty() {
        return Err("items were lost or left behind".into());
    }
    Ok(())
}
