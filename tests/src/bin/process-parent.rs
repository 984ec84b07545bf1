//! A parent process for the mproc-process tests: it starts a daemon child
//! and a non-daemon child, prints their pids, then waits to be killed
//! (`start-and-wait`) or returns from main at once (`start-and-return`).

use std::io::Write;

use mproc::process::StartMethod;
use mproc::sync::Event;
use mproc::{Process, Value};

fn idle(ev: Event) {
    // Never set: the daemon idles until it is terminated or killed.
    ev.wait();
}

fn work(args: (Event, Value<u64>)) {
    let (go, done) = args;
    go.wait();
    done.update(|d| *d += 1);
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
    let never = Event::new().unwrap();
    let mut daemon = Process::new(idle, never).daemon(true).start_method(method);
    let mut worker = Process::new(work, (go, done)).start_method(method);
    daemon.start().unwrap();
    worker.start().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", daemon.pid().unwrap()).unwrap();
    writeln!(out, "{}", worker.pid().unwrap()).unwrap();
    out.flush().unwrap();
    drop(out);
    match args[0].as_str() {
        "start-and-wait" => {
            // Block until killed.
            let forever = Event::new().unwrap();
            forever.wait();
        }
        _ => {
            println!("main returned");
            std::io::stdout().flush().unwrap();
        }
    }
}
