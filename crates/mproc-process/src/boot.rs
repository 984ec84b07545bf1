//! The child side: the bootstrap that runs before `main` in a spawned child,
//! the code a forked child runs, and the exit rules every process follows.
//!
//! # How a spawned child finds its target
//!
//! The parent re-executes the current binary with `MPROC_BOOT=1` and the
//! descriptors of the transfer inherited (the last one is a segment holding
//! the encoded boot message). A constructor in `.init_array` (Linux) or
//! `__mod_init_func` (macOS) runs before `main`, sees the variable, decodes a
//! [`Header`] — which names the monomorphized trampoline for the target's
//! types by its offset from [`anchor`] — and lets the trampoline decode the
//! body and run it. The process then exits; `main` never runs. Offsets from
//! a symbol of the same binary survive ASLR and re-exec, so any binary works,
//! test harnesses included, with no `init()` call.

use std::any::Any;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use mproc_shm::transfer::{self, FdTable};
use mproc_shm::Segment;
use serde::{Deserialize, Serialize};

use crate::registry;
use crate::report::Report;
use crate::sys;

/// The variable that marks a spawned child.
pub(crate) const BOOT_ENV: &str = "MPROC_BOOT";

/// What a child needs to know before it can run its target.
#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    /// Offset of the trampoline from `anchor`.
    pub(crate) trampoline: u64,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// Whether the child leads a process group of its own.
    pub(crate) group: bool,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
    pub(crate) report: Report,
}

/// A trampoline decodes the body from the message and runs the target,
/// returning its exit code.
pub(crate) type Trampoline = fn(&[u8], FdTable) -> i32;

/// The base every function offset is taken from.
#[inline(never)]
pub(crate) fn anchor() -> usize {
    anchor as fn() -> usize as usize
}

/// The offset of a function pointer from [`anchor`].
pub(crate) fn offset_of(addr: usize) -> u64 {
    addr.wrapping_sub(anchor()) as u64
}

/// The address at `offset` from [`anchor`] in this process.
pub(crate) fn address_at(offset: u64) -> usize {
    anchor().wrapping_add(offset as usize)
}

/// A function's address as an offset that names the same function in
/// every process running this binary, whatever its start method: how a pool
/// sends a task's `fn` to a worker that is already running.
///
/// ```
/// use mproc_process::FnOffset;
///
/// fn double(x: u32) -> u32 { x * 2 }
///
/// let off = FnOffset::of(double as fn(u32) -> u32 as usize);
/// // In another process of the same binary (here: this one):
/// let f = off.address();
/// assert_eq!(f, double as fn(u32) -> u32 as usize);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FnOffset(u64);

impl FnOffset {
    /// The offset of the function at `addr` (`f as usize`).
    pub fn of(addr: usize) -> FnOffset {
        FnOffset(offset_of(addr))
    }

    /// The function's address in this process. Turning it back into a `fn`
    /// is `unsafe`: the caller must know the offset came from
    /// [`FnOffset::of`] on a function of exactly that type, in this binary.
    pub fn address(self) -> usize {
        address_at(self.0)
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs a target, turning a panic into exit code 1 and a report.
pub(crate) fn run_guarded(report: &Report, f: impl FnOnce() -> i32) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(payload) => {
            report.write(&panic_text(&*payload));
            1
        }
    }
}

/// Ends a child: its own children follow the exit rules, output is flushed,
/// and the process exits without the parent's atexit handlers (which a
/// forked child inherited and must not run).
pub(crate) fn finish(code: i32) -> ! {
    registry::exit_rules();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    sys::exit_now(code)
}

#[cfg_attr(target_os = "linux", link_section = ".init_array")]
#[cfg_attr(target_os = "macos", link_section = "__DATA,__mod_init_func")]
#[used]
static BOOTSTRAP: extern "C" fn() = bootstrap;

extern "C" fn bootstrap() {
    let Some(role) = std::env::var_os(BOOT_ENV) else {
        return;
    };
    let code = match spawned_child(role == "forkserver") {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mproc: child bootstrap failed: {e}");
            70
        }
    };
    finish(code)
}

fn spawned_child(forkserver: bool) -> Result<i32, Box<dyn std::error::Error>> {
    // SAFETY: the parent named exactly the descriptors it handed over, and
    // nothing in this fresh process owns them yet.
    let table = unsafe { FdTable::from_env()? };
    // Before main, single-threaded: clearing the variables is sound, and our
    // own non-mproc children must not inherit them.
    std::env::remove_var(BOOT_ENV);
    std::env::remove_var(transfer::INHERIT_ENV);
    if forkserver {
        crate::forkserver::serve(table)
    }
    let mut fds = table.into_vec();
    let payload = Segment::from_fd(fds.pop().ok_or("no boot payload")?)?;
    let len = payload
        .atomic_u64(0)
        .ok_or("short payload")?
        .load(Ordering::Acquire) as usize;
    let mut bytes = vec![0u8; len.min(payload.len().saturating_sub(8))];
    payload.read(8, &mut bytes)?;
    let mut table = FdTable::new();
    for fd in fds {
        table.push(fd);
    }
    run_boot(&bytes, table, sys::parent_pid())
}

/// Runs a child from its boot bytes: the header, then the target through
/// its trampoline. `parent` is the process that started this one (the
/// forkserver, for its children), whose death a daemon follows.
pub(crate) fn run_boot(
    bytes: &[u8],
    table: FdTable,
    parent: u32,
) -> Result<i32, Box<dyn std::error::Error>> {
    let (header, used, table) = transfer::decode_prefix::<Header>(bytes, table)?;
    if header.group {
        // Spawned children did this before exec already; forkserver
        // children do it here, before any code of theirs runs.
        sys::new_process_group()?;
    }
    if header.daemon {
        sys::lifeline(parent)?;
    }
    registry::become_child(
        &header.name,
        header.daemon,
        header.parent_pid,
        &header.parent_name,
    );
    let address = address_at(header.trampoline);
    // SAFETY: the offset was taken from a `Trampoline` in the parent, which
    // runs this same binary (re-executed, or forked from a re-executed
    // forkserver), so anchor + offset is that function here.
    let trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(address) };
    let body = &bytes[used..];
    Ok(run_guarded(&header.report, || trampoline(body, table)))
}
