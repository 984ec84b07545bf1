//! Chapter 3 — mproc-process: the tutorials' process scenarios. Each is
//! also an example of its own (`cargo run --example hello`, …).

#[path = "../daemon.rs"]
mod daemon;
#[path = "../echo_server.rs"]
mod echo_server;
#[path = "../hello.rs"]
mod hello;
#[path = "../isolation.rs"]
mod isolation;
#[path = "../join_timing.rs"]
mod join_timing;
#[path = "../zombie_orphan.rs"]
mod zombie_orphan;

use crate::common::Result;

pub(crate) fn chapter() -> Result<()> {
    println!("== Chapter 3: processes (mproc::process) ==\n");
    hello::main()?;
    isolation::main()?;
    join_timing::main()?;
    daemon::main()?;
    zombie_orphan::main()?;
    echo_server::main()
}
