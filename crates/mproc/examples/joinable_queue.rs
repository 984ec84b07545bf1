//! A JoinableQueue with daemon consumers: the parent puts the work, waits in
//! `q.join()` until every item is marked done, and leaves. The consumers
//! never see a sentinel; they are daemons, so the parent's exit terminates
//! them (CPython's recipe, which needs no sentinel bookkeeping at all).
//!
//! ```text
//! cargo run --example joinable_queue
//! ```

use mproc::{JoinableQueue, Process, Queue};

/// Squares numbers for ever, marking each one done after its result is out.
fn square(work: JoinableQueue<u64>, results: Queue<u64>) {
    while let Ok(n) = work.get() {
        results.put(n * n).expect("put result");
        work.task_done().expect("one task_done per get");
    }
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("Two daemon consumers square 1..=20; the parent waits in join().");
    let work: JoinableQueue<u64> = JoinableQueue::new()?;
    let results: Queue<u64> = Queue::new()?;
    let mut consumers: Vec<Process> = (0..2)
        .map(|_| Process::new(square, (work.clone(), results.clone())).daemon(true))
        .collect();
    for p in &mut consumers {
        p.start()?;
    }
    for n in 1..=20 {
        work.put(n)?;
    }
    work.join();
    // Every task is done, so every result is in: no waiting, no sentinel.
    let mut sum = 0;
    while let Ok(r) = results.try_get() {
        sum += r;
    }
    println!(
        "  join() returned with {} unfinished; sum of squares = {sum} (expected {})",
        work.unfinished(),
        (1..=20u64).map(|n| n * n).sum::<u64>()
    );
    if sum != (1..=20u64).map(|n| n * n).sum::<u64>() {
        return Err("join() returned before every result was in".into());
    }
    // Daemons: terminated here rather than at exit, so the tour goes on.
    for p in &mut consumers {
        p.terminate()?;
        p.join()?;
    }
    println!(
        "  the daemon consumers were terminated: exit codes {:?}\n",
        consumers.iter().map(Process::exitcode).collect::<Vec<_>>()
    );
    Ok(())
}
