//! 200 small tasks: a process per task, then a Pool of 5. Starting a
//! process costs far more than the task, so the pool, which starts five
//! once and feeds them, wins by a wide margin.
//!
//! ```text
//! cargo run --release --example pool_vs_process
//! ```

use std::time::Instant;

use mproc::{Pool, Process, Value};

/// A small task: the sum of squares below `n`.
fn sum_squares(n: u64) -> u64 {
    (0..n).map(|i| i * i).sum()
}

/// The same task as a process target, reporting through a shared value.
fn sum_squares_into(n: u64, out: Value<u64>) {
    out.set(sum_squares(n));
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("200 tasks, each the sum of squares below 10,000.");
    let start = Instant::now();
    let outs: Vec<Value<u64>> = (0..200).map(|_| Value::new(0)).collect::<Result<_, _>>()?;
    let mut kids: Vec<Process> = outs
        .iter()
        .map(|out| Process::new(sum_squares_into, (10_000, out.clone())))
        .collect();
    for p in &mut kids {
        p.start()?;
    }
    for p in &kids {
        p.join()?;
    }
    let by_process: u64 = outs.iter().map(Value::get).sum();
    let t_process = start.elapsed();
    println!("  a process per task: {t_process:.2?}");

    let start = Instant::now();
    let pool = Pool::new(5)?;
    let by_pool: u64 = pool.map(sum_squares, vec![10_000; 200])?.into_iter().sum();
    pool.close();
    pool.join()?;
    let t_pool = start.elapsed();
    println!("  a Pool of 5 (started and joined inside the timing): {t_pool:.2?}");
    if by_process != by_pool {
        return Err(format!("the answers differ: {by_process} and {by_pool}").into());
    }
    println!(
        "  same answer ({by_pool}); the pool took {:.1}× less time\n",
        t_process.as_secs_f64() / t_pool.as_secs_f64()
    );
    Ok(())
}
