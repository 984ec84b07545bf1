//! Hello from a child process, three ways: a function target, a struct
//! target (the Rust form of subclassing Python's `Process` and overriding
//! `run`), and `spawn`, which hands the function's value back like
//! `std::thread::spawn`; then a child whose output is forwarded, tagged
//! with its name.
//!
//! ```text
//! cargo run --example hello
//! ```

use mproc::{current_process, Process, Target};
use serde::{Deserialize, Serialize};

/// A function target: any non-capturing `fn` of up to eight serde
/// arguments.
fn greet(name: String, times: u32) {
    let me = current_process();
    for i in 1..=times {
        println!("  {i}: hello {name}, from {} (pid {})", me.name, me.pid);
    }
}

/// A function whose value comes back to the parent.
fn shout(name: String, excitement: usize) -> String {
    format!("HELLO {}{}", name.to_uppercase(), "!".repeat(excitement))
}

/// A struct target: its fields are the arguments, `run` is the body.
#[derive(Serialize, Deserialize)]
struct Greeter {
    name: String,
    times: u32,
}

impl Target for Greeter {
    fn run(self) {
        let me = current_process();
        for i in 1..=self.times {
            println!(
                "  {i}: hello {}, from {} (pid {})",
                self.name, me.name, me.pid
            );
        }
    }
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("Three ways to start a process.");
    let mut p = Process::new(greet, ("bob".to_string(), 2)).name("greeter");
    p.start()?;
    p.join()?;
    println!("  the function target exited with {:?}\n", p.exitcode());

    let mut p = Process::from_target(Greeter {
        name: "alice".into(),
        times: 2,
    });
    p.start()?;
    p.join()?;
    println!(
        "  the struct target, named {} by default, exited with {:?}\n",
        p.get_name(),
        p.exitcode()
    );

    let loud = mproc::spawn(shout, ("carol".to_string(), 3)).join()?;
    println!("  spawn(shout, ..).join() returned {loud:?}\n");

    // Its output forwarded: each line tagged with the child's name, all of
    // it printed by the time `join` returns.
    let mut p = Process::new(greet, ("dave".to_string(), 2))
        .name("forwarded")
        .forward_output(true);
    p.start()?;
    p.join()?;
    println!("  ^ a child's stdout, forwarded line by line\n");
    Ok(())
}
