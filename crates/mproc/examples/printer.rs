//! The tutorials' printer: three processes each print "start", pause a random
//! moment, then print "end". Without a lock their lines interleave; with one,
//! each start is followed by its own end.
//!
//! ```text
//! cargo run --example printer
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::Result;
use mproc::{Lock, Process};

/// A printer: the lock is handed to the child as an argument, like any
/// value; `with` says whether to take it.
fn printer(lock: Lock, with: bool) -> Result<()> {
    let _guard = if with { Some(lock.lock()?) } else { None };
    let me = std::process::id();
    println!("  {me}: start");
    std::thread::sleep(Duration::from_millis(5 + common::jitter(20)));
    println!("  {me}: end");
    Ok(())
}

fn main() -> Result<()> {
    let lock = Lock::new()?;
    for with in [false, true] {
        println!(
            "-- three printers {} the lock --",
            if with { "with" } else { "without" }
        );
        let mut printers = Vec::new();
        for _ in 0..3 {
            let mut p = Process::new(printer, (lock.clone(), with));
            p.start()?;
            printers.push(p);
        }
        for p in &printers {
            p.join()?;
        }
    }
    Ok(())
}
