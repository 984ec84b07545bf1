//! The tutorials' printer: three processes each print "start", pause a random
//! moment, then print "end". Without a lock their lines interleave; with one,
//! each start is followed by its own end.
//!
//! ```text
//! cargo run --example printer
//! ```

#[path = "common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Result;
use mproc::Lock;

fn main() -> Result<()> {
    if let Some(args) = common::child_role() {
        return printer(&args);
    }
    let lock = Lock::new()?;
    for mode in ["without", "with"] {
        println!("-- three printers {mode} the lock --");
        let kids = (0..3)
            .map(|_| common::spawn_with("print", &lock, &[mode], Stdio::inherit()))
            .collect::<Result<Vec<_>>>()?;
        common::reap(kids)?;
    }
    Ok(())
}

fn printer(args: &[String]) -> Result<()> {
    let lock: Lock = common::handles(&args[1])?;
    let _guard = match args.get(2).map(String::as_str) {
        Some("with") => Some(lock.lock()?),
        _ => None,
    };
    let me = std::process::id();
    println!("  {me}: start");
    std::thread::sleep(Duration::from_millis(5 + common::jitter(20)));
    println!("  {me}: end");
    Ok(())
}
