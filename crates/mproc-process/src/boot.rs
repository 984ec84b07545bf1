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
//!
//! # Like an ordinary `main`
//!
//! Rust's runtime prepares a process before `main`, and a child booted from
//! the constructor never gets there; the bootstrap does the same instead:
//! SIGPIPE is ignored (a write to a closed pipe is an `EPIPE` error, not a
//! death), a stack overflow of the target's thread is reported ("has
//! overflowed its stack", then abort) rather than a bare SIGSEGV, and a
//! panic on that thread is printed under the process's name, as `main`'s
//! are under `main`. Forkserver children inherit all of it from the server,
//! and start in the working directory and with the environment their parent
//! had at `start()`.

use std::any::Any;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use mproc_shm::transfer::{self, FdTable, SharedFd};
use mproc_shm::Segment;
use nix::sys::signal::Signal;
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
    /// The parent's packed [`ProcessIdent`](mproc_shm::ProcessIdent).
    pub(crate) parent_ident: u64,
    pub(crate) parent_name: String,
    pub(crate) report: Report,
    /// A daemon's copy of its parent's lifeline (see `lifeline`).
    pub(crate) lifeline: Option<SharedFd>,
    /// What a forkserver child takes from its parent at `start()`.
    pub(crate) inherit: Option<Inherit>,
}

/// The working directory and environment of the parent at `start()`, for a
/// forkserver child (which would otherwise have the server's, from when the
/// server was launched). Each is sent only when it differs from what the
/// server was launched with, and applied as a difference: most starts cost
/// nothing.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Inherit {
    cwd: Option<Vec<u8>>,
    env: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// This process's working directory and environment, as a forkserver was
/// launched with them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Surroundings {
    cwd: Option<std::path::PathBuf>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Surroundings {
    /// This process's, now.
    pub(crate) fn now() -> Surroundings {
        Surroundings {
            cwd: std::env::current_dir().ok(),
            env: std::env::vars_os().collect(),
        }
    }
}

impl Inherit {
    /// What a server launched `with` must change for a child to start with
    /// this process's working directory and environment of now.
    pub(crate) fn since(with: &Surroundings) -> Inherit {
        use std::os::unix::ffi::OsStrExt;
        let now = Surroundings::now();
        Inherit {
            cwd: now
                .cwd
                .filter(|c| Some(c) != with.cwd.as_ref())
                .map(|c| c.as_os_str().as_bytes().to_vec()),
            env: (now.env != with.env).then(|| {
                now.env
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect()
            }),
        }
    }

    /// Makes them this process's. Only in a forkserver child, which is
    /// single-threaded here.
    fn apply(self) -> std::io::Result<()> {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        if let Some(cwd) = &self.cwd {
            std::env::set_current_dir(OsStr::from_bytes(cwd))?;
        }
        let Some(env) = self.env else {
            return Ok(());
        };
        let wanted: std::collections::HashMap<&[u8], &[u8]> = env
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        for (k, _) in std::env::vars_os() {
            if !wanted.contains_key(k.as_bytes()) {
                std::env::remove_var(k);
            }
        }
        for (k, v) in wanted {
            // Names the platform cannot hold (empty, or with '=') are
            // skipped, as the parent could not have set them either.
            let settable =
                !k.is_empty() && !k.contains(&b'=') && !k.contains(&0) && !v.contains(&0);
            let (k, v) = (OsStr::from_bytes(k), OsStr::from_bytes(v));
            if settable && std::env::var_os(k).as_deref() != Some(v) {
                std::env::set_var(k, v);
            }
        }
        Ok(())
    }
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

/// Exit code of a child that could not boot (bad message, no descriptors).
pub(crate) const BOOT_FAILED: i32 = 70;

#[cfg_attr(target_os = "linux", link_section = ".init_array")]
#[cfg_attr(target_os = "macos", link_section = "__DATA,__mod_init_func")]
#[used]
static BOOTSTRAP: extern "C" fn() = bootstrap;

extern "C" fn bootstrap() {
    let Some(role) = std::env::var_os(BOOT_ENV) else {
        return;
    };
    like_main();
    #[cfg(feature = "failpoints")]
    die_at_named_points();
    let code = match spawned_child(role == "forkserver") {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mproc: child bootstrap failed: {e}");
            BOOT_FAILED
        }
    };
    finish(code)
}

/// What Rust's runtime does before `main` (and a child booted before `main`
/// would otherwise miss): SIGPIPE ignored, a stack-overflow report, and
/// panics of this thread printed under the process's name.
fn like_main() {
    sys::ignore(Signal::SIGPIPE);
    let _ = sys::report_stack_overflow();
    let _ = BOOT_THREAD.set(std::thread::current().id());
    let others = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if BOOT_THREAD.get() == Some(&std::thread::current().id()) {
            print_panic(info);
        } else {
            others(info);
        }
    }));
}

/// The thread that booted the child and runs its target.
static BOOT_THREAD: OnceLock<std::thread::ThreadId> = OnceLock::new();

/// The panic message of Rust's default hook, with the process's name where
/// `main`'s thread would say `main`.
fn print_panic(info: &std::panic::PanicHookInfo<'_>) {
    static NOTED: AtomicBool = AtomicBool::new(false);
    let name = String::from_utf8_lossy(sys::report_name()).into_owned();
    let at = info
        .location()
        .map_or_else(|| "<unknown>".to_owned(), ToString::to_string);
    let payload = info.payload();
    let msg = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("Box<dyn Any>");
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nthread '{name}' ({}) panicked at {at}:\n{msg}",
        std::process::id()
    );
    let trace = std::backtrace::Backtrace::capture();
    match trace.status() {
        std::backtrace::BacktraceStatus::Captured => {
            let _ = writeln!(err, "stack backtrace:\n{trace}");
        }
        std::backtrace::BacktraceStatus::Disabled if !NOTED.swap(true, Ordering::Relaxed) => {
            let _ = writeln!(
                err,
                "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"
            );
        }
        _ => {}
    }
}

/// With the `failpoints` feature: the kill points named in `MPROC_DIE_AT`
/// (comma-separated) SIGKILL this process, so that tests can stop a
/// spawned child or the forkserver mid-protocol.
#[cfg(feature = "failpoints")]
fn die_at_named_points() {
    if let Some(names) = std::env::var_os(DIE_AT_ENV) {
        std::env::remove_var(DIE_AT_ENV);
        for name in names.to_string_lossy().split(',').filter(|n| !n.is_empty()) {
            let _ = mproc_shm::fault::die_at(name);
        }
    }
}

/// The variable [`die_at_named_points`] reads.
#[cfg(feature = "failpoints")]
pub const DIE_AT_ENV: &str = "MPROC_DIE_AT";

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
    drop(payload);
    let mut table = FdTable::new();
    for fd in fds {
        table.push(fd);
    }
    run_boot(&bytes, table, None)
}

/// Runs a child from its boot bytes: the header, then the target through
/// its trampoline. A forkserver child passes its `gate`: everything up to
/// the target is done while the server sends `Started` (so the child seldom
/// has to sleep at the gate), and the target runs only once the gate opens;
/// at its end of file (the server died first) the child exits without
/// running anything.
pub(crate) fn run_boot(
    bytes: &[u8],
    table: FdTable,
    gate: Option<std::os::fd::OwnedFd>,
) -> Result<i32, Box<dyn std::error::Error>> {
    let (header, used, table) = transfer::decode_prefix::<Header>(bytes, table)?;
    if let Some(inherit) = header.inherit {
        inherit.apply()?;
    }
    if header.group {
        // Spawned children did this before exec already; forkserver
        // children do it here, before any code of theirs runs.
        sys::new_process_group()?;
    }
    if let Some(lifeline) = header.lifeline {
        crate::lifeline::watch_owned(lifeline.into_owned())?;
    }
    sys::set_report_name(&header.name);
    registry::become_child(
        &header.name,
        header.daemon,
        registry::parent_info(header.parent_name, header.parent_pid, header.parent_ident),
    );
    let address = address_at(header.trampoline);
    // SAFETY: the offset was taken from a `Trampoline` in the parent, which
    // runs this same binary (re-executed, or forked from a re-executed
    // forkserver), so anchor + offset is that function here.
    let trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(address) };
    let body = &bytes[used..];
    if let Some(gate) = gate {
        if !matches!(sys::read_byte(std::os::fd::AsFd::as_fd(&gate)), Ok(true)) {
            sys::exit_now(BOOT_FAILED);
        }
    }
    Ok(run_guarded(&header.report, || trampoline(body, table)))
}
