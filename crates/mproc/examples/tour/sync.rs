//! Chapter 2 — mproc-sync: locks that survive their holders.

use std::time::{Duration, Instant};

use crate::common::{self, Result};
use mproc::sync::{Barrier, Event, LockTimeoutError};
use mproc::{Lock, Process, Value};

/// A printer: "start", a random pause, "end" — under the lock or not.
fn print(lock: Lock, with: bool) -> Result<()> {
    let _guard = if with { Some(lock.lock()?) } else { None };
    let me = std::process::id();
    println!("  {me}: start");
    std::thread::sleep(Duration::from_millis(5 + common::jitter(20)));
    println!("  {me}: end");
    Ok(())
}

/// Adds 10,000 to the shared value, one locked update at a time.
fn add(total: Value<u64>) {
    for _ in 0..10_000 {
        total.update(|t| *t += 1);
    }
}

/// Takes the lock, says so, and holds it until it is killed.
fn hold(lock: Lock, held: Event) -> Result<()> {
    let _guard = lock.lock()?;
    held.set();
    loop {
        std::thread::park();
    }
}

/// Waits at the barrier; what the wait said.
fn meet(barrier: Barrier) -> String {
    format!("{:?}", barrier.wait_timeout(Duration::from_secs(5)))
}

/// Starts `n` children running `f(args)` and joins them.
fn run_all<F, M>(n: usize, f: F, args: F::Args) -> Result<()>
where
    F: mproc::call::Callable<M>,
    M: 'static,
    F::Args: serde::Serialize + serde::de::DeserializeOwned + Clone,
    F::Output: mproc::process::Outcome,
{
    let mut kids = Vec::new();
    for _ in 0..n {
        let mut p = Process::new(f, args.clone());
        p.start()?;
        kids.push(p);
    }
    for p in &kids {
        p.join()?;
    }
    Ok(())
}

pub(crate) fn chapter() -> Result<()> {
    println!("== Chapter 2: process-shared synchronization (mproc::sync) ==\n");

    println!("Three printers share one terminal. Without a lock:");
    let lock = Lock::new()?;
    run_all(3, print, (lock.clone(), false))?;
    println!("With the lock, each start is followed by its own end:");
    run_all(3, print, (lock.clone(), true))?;

    println!("\nFour processes add 10,000 each to one Value under its lock:");
    let total = Value::new(0u64)?;
    run_all(4, add, total.clone())?;
    println!("  total = {} (exactly 4 x 10,000)\n", total.get());

    println!("A process takes the lock and is killed with SIGKILL while holding it.");
    let held = Event::new()?;
    let mut holder = Process::new(hold, (lock.clone(), held.clone()));
    holder.start()?;
    held.wait();
    holder.kill()?;
    let start = Instant::now();
    match lock.lock_timeout(Duration::from_secs(5)) {
        Err(LockTimeoutError::OwnerDied(died)) => {
            let guard = died.into_inner();
            println!(
                "  the next locker got it after {:.1?}, told the owner died;",
                start.elapsed()
            );
            println!("  it repairs the data and marks the lock consistent.");
            guard.mark_consistent();
        }
        Ok(_) => println!("  the lock was free (unexpected)"),
        Err(e) => return Err(e.to_string().into()),
    }
    holder.join()?;

    println!("\nTwo processes meet at a Barrier of three; one is killed while waiting:");
    let barrier = Barrier::new(3)?;
    let victim = mproc::spawn(meet, barrier.clone());
    let other = mproc::spawn(meet, barrier.clone());
    while barrier.n_waiting() < 2 {
        std::thread::yield_now();
    }
    victim.kill()?;
    // The survivor notices the death within a probe interval.
    println!("  the surviving party's wait: {}", other.join()?);
    println!(
        "  the parent's own wait: {:?}",
        barrier.wait_timeout(Duration::from_secs(5))
    );
    // Killed: it has no value to give.
    let _ = victim.join();
    println!();
    Ok(())
}
