//! A parent process for the mproc-process tests: it starts a daemon child
//! and a non-daemon child, prints their pids, then
//!
//! - `start-and-wait`: waits to be killed;
//! - `start-and-return`: returns from main at once;
//! - `thread-start-and-wait`: starts both from a thread that then ends,
//!   says so, and waits to be killed;
//! - `stubborn-daemon-and-return`: its daemon ignores SIGTERM; main
//!   returns once the daemon is ready;
//! - `die-while-starting POINT DAEMON` (with the `failpoints` feature):
//!   SIGKILLs itself at kill point POINT while it starts one child (a daemon
//!   if DAEMON is `1`), which waits for `go`, then counts in `done`.

use std::io::Write;

use mproc::process::StartMethod;
use mproc::sync::Event;
use mproc::{Process, Value};

fn idle(ev: Event) {
    // Never set: the daemon idles until it is terminated or killed.
    ev.wait();
}

fn stubborn(args: (Event, Event)) {
    let (ready, never) = args;
    // SAFETY: SIG_IGN installs no handler.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    ready.set();
    never.wait();
}

fn work(args: (Event, Value<u64>)) {
    let (go, done) = args;
    go.wait();
    done.update(|d| *d += 1);
}

fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let method = match args[1].as_str() {
        "fork" => StartMethod::Fork,
        "forkserver" => StartMethod::Forkserver,
        "spawn" => StartMethod::Spawn,
        other => panic!("unknown start method {other:?}"),
    };
    let (go, done): (Event, Value<u64>) = mproc_tests::inherited(&args[2]);
    let role = args[0].as_str();
    if role == "die-while-starting" {
        die_while_starting(method, &args[3], args[4] == "1", go, done);
    }
    let never = Event::new().unwrap();
    let mut daemon = if role == "stubborn-daemon-and-return" {
        let ready = Event::new().unwrap();
        let mut d = Process::new(stubborn, (ready.clone(), never))
            .daemon(true)
            .start_method(method);
        d.start().unwrap();
        ready.wait();
        d
    } else {
        Process::new(idle, never).daemon(true).start_method(method)
    };
    let mut worker = Process::new(work, (go, done)).start_method(method);
    if role == "thread-start-and-wait" {
        (daemon, worker) = std::thread::spawn(move || {
            daemon.start().unwrap();
            worker.start().unwrap();
            (daemon, worker)
        })
        .join()
        .unwrap();
    } else if role != "stubborn-daemon-and-return" {
        daemon.start().unwrap();
        worker.start().unwrap();
    } else {
        worker.start().unwrap();
    }
    say(daemon.pid().unwrap());
    say(worker.pid().unwrap());
    if role == "thread-start-and-wait" {
        say("thread ended");
    }
    match role {
        "start-and-wait" | "thread-start-and-wait" => {
            // Block until killed.
            let forever = Event::new().unwrap();
            forever.wait();
        }
        _ => say("main returned"),
    }
}

#[cfg(feature = "failpoints")]
fn die_while_starting(
    method: StartMethod,
    point: &str,
    daemon: bool,
    go: Event,
    done: Value<u64>,
) -> ! {
    mproc::shm::fault::die_at(point).unwrap();
    let mut p = Process::new(work, (go, done))
        .daemon(daemon)
        .start_method(method);
    let _ = p.start();
    // Not reached when the point is on the way.
    say("started");
    std::process::exit(3);
}

#[cfg(not(feature = "failpoints"))]
fn die_while_starting(_: StartMethod, _: &str, _: bool, _: Event, _: Value<u64>) -> ! {
    panic!("die-while-starting needs the failpoints feature");
}
