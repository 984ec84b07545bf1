//! Where a spawned child or the forkserver begins: a constructor that runs
//! before `main`.
//!
//! The parent re-executes the current binary with `MPROC_BOOT` set and the
//! descriptors of the transfer inherited. The constructor — in
//! `.init_array` on Linux, `__mod_init_func` on macOS — runs in every
//! process of the binary, sees the variable only in ours, and then never
//! returns to the program's `main`:
//!
//! - `MPROC_BOOT=1`: a spawned child. The last inherited descriptor is a
//!   [payload](crate::payload) with the boot message; the child boots from
//!   it ([`boot::run_boot`]) and ends by the exit rules
//!   ([`exit::finish`]).
//! - `MPROC_BOOT=forkserver`: the forkserver ([`forkserver::serve`]),
//!   whose loop returns only in a child it forked; that child boots from
//!   the request the same way, behind its gate.
//!
//! Any binary works, `cargo test` and nextest harnesses included, with no
//! `init()` call.

use mproc_shm::transfer::{self, FdTable};

use crate::boot::{self, BOOT_ENV, BOOT_FAILED};
use crate::{exit, forkserver, payload};

#[cfg_attr(target_os = "linux", link_section = ".init_array")]
#[cfg_attr(target_os = "macos", link_section = "__DATA,__mod_init_func")]
#[used]
static ENTRY: extern "C" fn() = entry;

extern "C" fn entry() {
    let Some(role) = std::env::var_os(BOOT_ENV) else {
        return;
    };
    boot::like_main();
    #[cfg(feature = "failpoints")]
    boot::die_at_named_points();
    let code = match child(role == "forkserver") {
        Ok(code) => code,
        Err(e) => {
            crate::report::fatal(&format!("child bootstrap failed: {e}"));
            BOOT_FAILED
        }
    };
    exit::finish(code)
}

/// Boots a spawned child, or serves as the forkserver and boots each child
/// it forks.
fn child(forkserver: bool) -> Result<i32, Box<dyn std::error::Error>> {
    // SAFETY: the parent named exactly the descriptors it handed over, and
    // nothing in this fresh process owns them yet.
    let table = unsafe { FdTable::from_env()? };
    // Before main, single-threaded: clearing the variables is sound, and our
    // own non-mproc children must not inherit them.
    std::env::remove_var(BOOT_ENV);
    std::env::remove_var(transfer::INHERIT_ENV);
    if forkserver {
        // Every child checks the build id of the function it is sent: read
        // it once here, so that each forked child inherits it instead of
        // walking its program headers again.
        let _ = mproc_call::BuildId::current();
        let (gate, request) = forkserver::serve(table);
        return boot::run_boot(&request.bytes, request.fds, Some(gate));
    }
    let mut fds = table.into_vec();
    let bytes = payload::open(fds.pop().ok_or("no boot payload")?)?;
    let mut table = FdTable::new();
    for fd in fds {
        table.push(fd);
    }
    boot::run_boot(&bytes, table, None)
}
