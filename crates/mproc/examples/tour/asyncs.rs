//! Chapter 7 — async: the same pool, children and queues, awaited (the
//! `async` feature). Also an example of its own
//! (`cargo run --example async_pool`).

#[path = "../async_pool.rs"]
mod async_pool;

use crate::common::Result;

pub(crate) fn chapter() -> Result<()> {
    println!("== Chapter 7: async (features async, tokio) ==\n");
    async_pool::main()?;
    println!();
    Ok(())
}
