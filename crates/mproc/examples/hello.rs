//! Hello from a child process, two ways: a function target, and a struct
//! target (the Rust form of subclassing Python's `Process` and overriding
//! `run`).
//!
//! ```text
//! cargo run --example hello
//! ```

use mproc::{current_process, Process, Target};
use serde::{Deserialize, Serialize};

/// A function target: any non-capturing `fn` whose argument is serde.
fn greet(name: String) {
    let me = current_process();
    println!("  hello {name}, from {} (pid {})", me.name, me.pid);
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
    println!("Two ways to start a process.");
    let mut p = Process::new(greet, "bob".to_string()).name("greeter");
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
    Ok(())
}
