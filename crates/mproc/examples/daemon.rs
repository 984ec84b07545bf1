//! Daemon children and the exit rules. When a process ends normally, its
//! non-daemon children are joined and its daemon children terminated; and a
//! daemon may not start children of its own.
//!
//! ```text
//! cargo run --example daemon
//! ```

use std::time::Duration;

use mproc::process::ProcessError;
use mproc::{Process, Value};

/// A daemon that would run for ever, and tries to start a child.
fn ticker(tried: Value<i32>) {
    let mut p = Process::new(nothing, ());
    let refused = matches!(p.start(), Err(ProcessError::DaemonCannotStart));
    tried.set(if refused { 1 } else { -1 });
    loop {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nothing(_: ()) {}

fn worker(done: Value<i32>) {
    std::thread::sleep(Duration::from_millis(300));
    done.set(1);
}

/// Starts a daemon and a worker, then returns without joining either.
fn parent(shared: (Value<i32>, Value<i32>, Value<u32>)) {
    let (tried, done, daemon_pid) = shared;
    let mut d = Process::new(ticker, tried.clone())
        .daemon(true)
        .name("ticker");
    let mut w = Process::new(worker, done).name("worker");
    if d.start().is_ok() && w.start().is_ok() {
        daemon_pid.set(d.pid().unwrap_or(0));
        // Let the daemon try its start() before the exit rules end it.
        while tried.get() == 0 {
            std::thread::yield_now();
        }
    }
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("A parent starts a daemon 'ticker' and a 'worker', then returns.");
    let (tried, done, daemon_pid) = (Value::new(0)?, Value::new(0)?, Value::new(0u32)?);
    let mut p = Process::new(parent, (tried.clone(), done.clone(), daemon_pid.clone()));
    p.start()?;
    p.join()?;
    // SAFETY: signal 0 only asks whether the pid exists.
    let gone = unsafe { libc::kill(daemon_pid.get() as libc::pid_t, 0) } == -1;
    println!("  the parent ended with {:?};", p.exitcode());
    println!("  the worker finished first: {}", done.get() == 1);
    println!(
        "  the daemon (pid {}) was terminated: {gone}",
        daemon_pid.get()
    );
    println!(
        "  the daemon's own start() was refused: {}\n",
        tried.get() == 1
    );
    Ok(())
}
