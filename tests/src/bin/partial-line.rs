//! Prints half a line, then starts and joins two children with the start
//! method named by its first argument — one that prints nothing, one that
//! prints half a line of its own — and ends the line. The parent's half
//! line must come out once, before the child's.

use mproc::process::StartMethod;
use mproc::Process;

fn quiet(_: ()) {}

fn half(_: ()) {
    print!("child; ");
}

fn main() {
    let method = match std::env::args().nth(1).as_deref() {
        Some("fork") => StartMethod::Fork,
        Some("forkserver") => StartMethod::Forkserver,
        Some("spawn") => StartMethod::Spawn,
        other => panic!("unknown start method {other:?}"),
    };
    print!("parent; ");
    let mut children = [
        Process::new(quiet, ()).start_method(method),
        Process::new(half, ()).start_method(method),
    ];
    for child in &mut children {
        child.start().unwrap();
        child.join().unwrap();
        assert_eq!(child.exitcode(), Some(0));
    }
    println!("end");
}
