//! How a child boots: the boot message's [`Header`], the [`Runner`] that
//! decodes and runs its target, and the preparation every child gets.
//!
//! A boot message is a `Header`, a `Runner` and a body. The runner is a
//! [`RemoteFn`] generic over the target's types; it is resolved — its
//! build id checked — before anything else happens, so a message from
//! another build is refused, never jumped into. The child then takes its
//! place (working directory and environment for a forkserver child,
//! process group, lifeline, name) and lets the runner decode the body and
//! run it. Spawned and forkserver children get here from
//! [`entry`](crate::entry); a forked child has its target in memory and
//! runs it straight from `Process::start`.
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

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use mproc_call::{panic_message, RemoteFn};
use mproc_shm::transfer::{self, FdTable, SharedFd};
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
    /// The child's end of its output stream, when it forwards its output.
    pub(crate) output: Option<SharedFd>,
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

/// What a target's runner gets: the body of the boot message (after the
/// header) and the descriptors of the handles in it.
pub(crate) struct BootInput {
    pub(crate) body: Vec<u8>,
    pub(crate) fds: FdTable,
}

/// Runs a target in the child: decodes it from the input, runs it, and
/// returns the exit code. Named by a [`RemoteFn`], whose build id the child
/// checks before anything runs.
pub(crate) type Runner = RemoteFn<BootInput, i32>;

/// Runs a target, turning a panic into exit code 1 and a report.
pub(crate) fn run_guarded(report: &Report, f: impl FnOnce() -> i32) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(payload) => {
            report.write(&panic_message(&*payload));
            1
        }
    }
}

/// Exit code of a child that could not boot (bad message, no descriptors).
pub(crate) const BOOT_FAILED: i32 = 70;

/// What Rust's runtime does before `main` (and a child booted before `main`
/// would otherwise miss): SIGPIPE ignored, a stack-overflow report, and
/// panics of this thread printed under the process's name.
pub(crate) fn like_main() {
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
pub(crate) fn die_at_named_points() {
    if let Some(names) = std::env::var_os(DIE_AT_ENV) {
        std::env::remove_var(DIE_AT_ENV);
        for name in names.to_string_lossy().split(',').filter(|n| !n.is_empty()) {
            let _ = mproc_shm::fault::die_at(name);
        }
    }
}

/// The variable `die_at_named_points` reads.
#[cfg(feature = "failpoints")]
pub const DIE_AT_ENV: &str = "MPROC_DIE_AT";

/// Runs a child from its boot bytes: the header, then the target through
/// its runner. A forkserver child passes its `gate`: everything up to
/// the target is done while the server sends `Started` (so the child seldom
/// has to sleep at the gate), and the target runs only once the gate opens;
/// at its end of file (the server died first) the child exits without
/// running anything.
pub(crate) fn run_boot(
    bytes: &[u8],
    table: FdTable,
    gate: Option<std::os::fd::OwnedFd>,
) -> Result<i32, Box<dyn std::error::Error>> {
    let ((header, runner), used, table) =
        transfer::decode_prefix::<(Header, Runner)>(bytes, table)?;
    // Checked before anything else happens: a message from another build
    // names other code by this offset, and is refused.
    let runner = runner.resolve()?;
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
    if let Some(output) = header.output {
        crate::output::start_in_child(output.into_owned())?;
    }
    registry::become_child(registry::ChildMe::new(
        &header.name,
        header.daemon,
        registry::parent_info(header.parent_name, header.parent_pid, header.parent_ident),
    ));
    let input = BootInput {
        body: bytes[used..].to_vec(),
        fds: table,
    };
    if let Some(gate) = gate {
        if !matches!(sys::read_byte(std::os::fd::AsFd::as_fd(&gate)), Ok(true)) {
            sys::exit_now(BOOT_FAILED);
        }
    }
    Ok(run_guarded(&header.report, || runner(input)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use mproc_call::BuildId;

    use super::*;
    use crate::report::ReportSlot;
    use crate::target::boot_message;

    static RAN: AtomicBool = AtomicBool::new(false);

    fn mark(_: BootInput) -> i32 {
        RAN.store(true, Ordering::SeqCst);
        0
    }

    fn header(report: &Report) -> Header {
        Header {
            name: "forged".into(),
            daemon: false,
            group: false,
            parent_pid: 1,
            parent_ident: 0,
            parent_name: "nobody".into(),
            report: report.clone(),
            lifeline: None,
            output: None,
            inherit: None,
        }
    }

    #[test]
    fn a_boot_message_from_another_build_is_refused_before_anything_runs() {
        let slot = ReportSlot::new().unwrap();
        let forged = RemoteFn::new(mark).with_build_id(BuildId::from_bytes([7; 16]));
        let msg = boot_message(header(slot.report()), forged, &()).unwrap();
        let err = run_boot(&msg.bytes, msg.fds, None).unwrap_err();
        assert!(err.to_string().contains("another build"), "{err}");
        assert!(!RAN.load(Ordering::SeqCst));
        // Nothing of the child's state was set up either.
        assert_eq!(crate::current_process().name, "MainProcess");
    }

    #[test]
    fn a_truncated_boot_message_is_an_error() {
        let slot = ReportSlot::new().unwrap();
        let msg = boot_message(header(slot.report()), RemoteFn::new(mark), &()).unwrap();
        for cut in [0, 1, msg.bytes.len() / 2] {
            assert!(run_boot(&msg.bytes[..cut], FdTable::new(), None).is_err());
        }
        assert!(!RAN.load(Ordering::SeqCst));
    }
}
