//! Chapter 5 — mproc-pool: the tutorials' pool scenarios. Each is also an
//! example of its own.

#[path = "../pool_apply.rs"]
mod pool_apply;
#[path = "../pool_vs_process.rs"]
mod pool_vs_process;

use crate::common::Result;

pub(crate) fn chapter() -> Result<()> {
    println!("== Chapter 5: the process pool (mproc::pool) ==\n");
    pool_vs_process::main()?;
    pool_apply::main()
}
