//! Processes do not share memory: a global changed in a child is unchanged
//! in the parent. A forked child starts with a copy of the parent's memory; a
//! spawned one starts afresh, from the program's initial values.
//!
//! ```text
//! cargo run --example isolation
//! ```

use std::sync::atomic::{AtomicI32, Ordering};

use mproc::{Process, StartMethod};

static X: AtomicI32 = AtomicI32::new(1);

fn change_x(_: ()) {
    let before = X.swap(100, Ordering::Relaxed);
    println!(
        "  in the child: x was {before}, now x = {}",
        X.load(Ordering::Relaxed)
    );
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("The parent sets the global x = 10; each child sets it to 100.");
    X.store(10, Ordering::Relaxed);
    for method in [
        StartMethod::Fork,
        StartMethod::Forkserver,
        StartMethod::Spawn,
    ] {
        println!("{method:?}:");
        let mut p = Process::new(change_x, ()).start_method(method);
        p.start()?;
        p.join()?;
        println!("  in the parent: x = {}", X.load(Ordering::Relaxed));
    }
    println!();
    Ok(())
}
