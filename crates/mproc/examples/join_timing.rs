//! Why `join` comes after the loop: five children that each sleep one
//! second take one second when all are started before any is joined, and
//! five seconds when each is joined right after its start.
//!
//! ```text
//! cargo run --example join_timing
//! ```

use std::time::{Duration, Instant};

use mproc::Process;

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("Five children, each sleeping one second.");
    let start = Instant::now();
    let mut kids: Vec<Process> = (0..5).map(|_| Process::new(nap, 1000)).collect();
    for p in &mut kids {
        p.start()?;
    }
    for p in &kids {
        p.join()?;
    }
    println!("  all started, then all joined: {:.2?}", start.elapsed());

    let start = Instant::now();
    for _ in 0..5 {
        let mut p = Process::new(nap, 1000);
        p.start()?;
        p.join()?; // waits here, so the next child starts only now
    }
    println!(
        "  each joined right after its start: {:.2?}\n",
        start.elapsed()
    );
    Ok(())
}
