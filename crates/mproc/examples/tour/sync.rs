//! Chapter 2 — mproc-sync: locks that survive their holders.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{self, Result};
use mproc::sync::{Barrier, LockTimeoutError};
use mproc::{Lock, Value};

pub(crate) fn chapter() -> Result<()> {
    println!("== Chapter 2: process-shared synchronization (mproc::sync) ==\n");

    println!("Three printers share one terminal. Without a lock:");
    let lock = Lock::new()?;
    let run = |mode: &str| -> Result<()> {
        let kids = (0..3)
            .map(|_| common::spawn_with("sync-print", &lock, &[mode], Stdio::inherit()))
            .collect::<Result<Vec<_>>>()?;
        common::reap(kids)
    };
    run("without")?;
    println!("With the lock, each start is followed by its own end:");
    run("with")?;

    println!("\nFour processes add 10,000 each to one Value under its lock:");
    let total = Value::new(0u64)?;
    let kids = (0..4)
        .map(|_| common::spawn_with("sync-add", &total, &[], Stdio::null()))
        .collect::<Result<Vec<_>>>()?;
    common::reap(kids)?;
    println!("  total = {} (exactly 4 x 10,000)\n", total.get());

    println!("A process takes the lock and is killed with SIGKILL while holding it.");
    let mut holder = common::spawn_with("sync-hold", &lock, &[], Stdio::piped())?;
    let mut out = BufReader::new(holder.stdout.take().ok_or("no stdout")?);
    out.read_line(&mut String::new())?;
    holder.kill()?; // our own child, by its pid
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
    holder.wait()?;

    println!("\nTwo processes meet at a Barrier; one is killed while waiting:");
    let barrier = Barrier::new(3)?;
    let mut victim = common::spawn_with("sync-barrier", &barrier, &[], Stdio::null())?;
    let mut other = common::spawn_with("sync-barrier", &barrier, &[], Stdio::piped())?;
    while barrier.n_waiting() < 2 {
        std::thread::yield_now();
    }
    victim.kill()?;
    // The survivor notices the death within a probe interval.
    let mut said = String::new();
    BufReader::new(other.stdout.take().ok_or("no stdout")?).read_line(&mut said)?;
    print!("{said}");
    println!(
        "  the parent's own wait: {:?}",
        barrier.wait_timeout(Duration::from_secs(5))
    );
    victim.wait()?;
    common::reap(vec![other])?;
    println!();
    Ok(())
}

pub(crate) fn child(args: &[String]) -> Result<()> {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "sync-print" => {
            let lock: Lock = common::handles(arg(1))?;
            let _guard = if arg(2) == "with" {
                Some(lock.lock()?)
            } else {
                None
            };
            let me = std::process::id();
            println!("  {me}: start");
            std::thread::sleep(Duration::from_millis(5 + common::jitter(20)));
            println!("  {me}: end");
        }
        "sync-add" => {
            let total: Value<u64> = common::handles(arg(1))?;
            for _ in 0..10_000 {
                total.update(|t| *t += 1);
            }
        }
        "sync-hold" => {
            let lock: Lock = common::handles(arg(1))?;
            let _guard = lock.lock()?;
            println!("locked");
            // Hold until killed.
            std::io::stdin().lock().read_line(&mut String::new())?;
        }
        "sync-barrier" => {
            let barrier: Barrier = common::handles(arg(1))?;
            println!(
                "  the surviving party's wait: {:?}",
                barrier.wait_timeout(Duration::from_secs(5))
            );
        }
        other => return Err(format!("unknown child role {other:?}").into()),
    }
    Ok(())
}
