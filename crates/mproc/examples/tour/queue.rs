//! Chapter 4 — mproc-queue: the tutorials' producer–consumer scenarios. Each
//! is also an example of its own.

#[path = "../joinable_queue.rs"]
mod joinable_queue;
#[path = "../producer_consumer.rs"]
mod producer_consumer;

use crate::common::Result;

pub(crate) fn chapter() -> Result<()> {
    println!("== Chapter 4: queues (mproc::queue) ==\n");
    producer_consumer::main()?;
    joinable_queue::main()
}
