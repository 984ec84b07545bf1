//! mproc's `tracing` events (the `tracing` feature) printed by
//! tracing-subscriber: processes started and exited, pool workers and tasks.
//!
//! ```text
//! cargo run --example traced
//! ```

use mproc::{Pool, Process};
use tracing_subscriber::fmt;

fn work(n: u64) -> u64 {
    n * 2
}

fn greet(name: String) {
    println!("hello {name}");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every level from DEBUG up, to stderr: the pool's task events are
    // DEBUG, process and worker events INFO.
    fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_target(true)
        .init();

    let mut p = Process::new(greet, "bob".to_string()).name("greeter");
    p.start()?;
    p.join()?;

    let pool = Pool::new(2)?;
    let v = pool.map(work, 0..4)?;
    println!("{v:?}");
    pool.close();
    pool.join()?;
    Ok(())
}
