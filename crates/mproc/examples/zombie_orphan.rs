//! Zombies and orphans.
//!
//! A child that has ended but has not been waited for is a *zombie*: it
//! holds its pid and exit status until its parent reaps it. mproc reaps every
//! child — in `join`, when a finished handle drops, in `active_children`, at
//! the next `start`, in the background once `detach`ed, and at exit — so
//! zombies never pile up.
//!
//! A child whose parent dies is an *orphan*, adopted by init (or the nearest
//! subreaper). If the parent is killed, its non-daemon children live on as
//! orphans and finish their work; its daemon children die with it.
//!
//! ```text
//! cargo run --example zombie_orphan
//! ```

use std::time::{Duration, Instant};

use mproc::sync::Event;
use mproc::{Process, StartMethod, Value};

fn quick(_: ()) {}

/// The process state (`Z` for a zombie), or `None` once it is gone.
fn state(pid: u32) -> Option<String> {
    if cfg!(target_os = "linux") {
        // "pid (comm) S …": the state follows the last ')'.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        return stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .next()
            .map(str::to_owned);
    }
    let out = std::process::Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// Waits until our child `pid` has ended, without reaping it.
fn wait_without_reaping(pid: u32) -> std::io::Result<()> {
    // SAFETY: a zeroed siginfo_t is a valid buffer; WNOWAIT leaves the
    // child waitable, so mproc still reaps it later.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn zombie() -> Result<(), Box<dyn std::error::Error>> {
    println!("A child returns at once; nobody has joined it yet.");
    let mut p = Process::new(quick, ()).start_method(StartMethod::Spawn);
    p.start()?;
    let pid = p.pid().ok_or("no pid")?;
    wait_without_reaping(pid)?;
    println!("  pid {pid} has ended; its state is {:?}", state(pid));
    p.join()?;
    println!("  after join its state is {:?}: reaped\n", state(pid));
    Ok(())
}

/// The orphan: waits for the word, then reports who its parent is now.
fn orphan(shared: (Event, Value<u32>)) {
    let (go, new_parent) = shared;
    go.wait();
    new_parent.set(parent_pid());
}

fn parent_pid() -> u32 {
    // SAFETY: getppid cannot fail.
    (unsafe { libc::getppid() }) as u32
}

fn idle(never: Event) {
    never.wait();
}

/// The middle process: starts an orphan-to-be and a daemon, reports their
/// pids, and waits to be killed.
fn middle(shared: (Event, Value<u32>, Value<u32>, Value<u32>)) {
    let (go, new_parent, orphan_pid, daemon_pid) = shared;
    let never = Event::new().expect("an event");
    let mut o = Process::new(orphan, (go, new_parent)).name("orphan");
    let mut d = Process::new(idle, never.clone()).daemon(true);
    if o.start().is_ok() && d.start().is_ok() {
        orphan_pid.set(o.pid().unwrap_or(0));
        daemon_pid.set(d.pid().unwrap_or(0));
    }
    never.wait();
}

fn alive(pid: u32) -> bool {
    state(pid).is_some_and(|s| !s.starts_with('Z'))
}

fn orphans() -> Result<(), Box<dyn std::error::Error>> {
    println!("A parent with a non-daemon child and a daemon child is killed.");
    let go = Event::new()?;
    let (new_parent, orphan_pid, daemon_pid) = (Value::new(0)?, Value::new(0)?, Value::new(0)?);
    let shared = (
        go.clone(),
        new_parent.clone(),
        orphan_pid.clone(),
        daemon_pid.clone(),
    );
    let mut p = Process::new(middle, shared).name("middle");
    p.start()?;
    while daemon_pid.get() == 0 {
        std::thread::yield_now();
    }
    p.kill()?; // SIGKILL: no exit rules run in the parent
    p.join()?;
    println!("  the parent died with exit code {:?}", p.exitcode());
    let start = Instant::now();
    while alive(daemon_pid.get()) && start.elapsed() < Duration::from_secs(5) {
        std::thread::yield_now();
    }
    println!(
        "  its daemon child (pid {}) died with it: {}",
        daemon_pid.get(),
        !alive(daemon_pid.get())
    );
    println!(
        "  its other child (pid {}) lives on: {}",
        orphan_pid.get(),
        alive(orphan_pid.get())
    );
    go.set();
    while new_parent.get() == 0 {
        std::thread::yield_now();
    }
    println!(
        "  the orphan finished its work; its parent is now pid {} (init or a subreaper)\n",
        new_parent.get()
    );
    Ok(())
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    zombie()?;
    orphans()
}
