//! The exit rules every process started by mproc (and every process that
//! started one) follows, and [`exit`].
//!
//! At exit a process settles its children — non-daemon children are
//! joined, daemon children terminated (see [`registry`](crate::registry))
//! — and stops its forkserver. A main process runs the rules from an
//! `atexit` handler, registered with its first child; a child runs them
//! itself when its target returns ([`finish`]), since it never returns to a
//! `main`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{forkserver, registry, sys};

/// Makes sure the rules run when this process exits through `exit` (a
/// return from `main` included).
pub(crate) fn ensure_at_exit() {
    static AT_EXIT: AtomicBool = AtomicBool::new(false);
    if !AT_EXIT.swap(true, Ordering::AcqRel) {
        sys::at_exit(run_rules);
    }
}

extern "C" fn run_rules() {
    rules();
}

/// The exit rules: children settled, then the forkserver stopped.
pub(crate) fn rules() {
    registry::settle_children();
    forkserver::stop_forkserver();
}

/// How a child ends once its target is done: the rules, up to
/// `handoff::EXIT_GRACE` for takers of the items with handles it put in
/// queues, stdio flushed, and `_exit` — nothing of the parent's `atexit` handlers or statics (a forked
/// child has copies of them) runs.
pub(crate) fn finish(code: i32) -> ! {
    rules();
    // Items with handles this child put in queues are fetched from it:
    // give their takers a moment.
    mproc_shm::handoff::wait_taken(mproc_shm::handoff::EXIT_GRACE);
    // (Stderr is unbuffered: nothing to flush.)
    let _ = std::io::stdout().flush();
    crate::output::finish_in_child();
    sys::exit_now(code)
}

/// Ends the current process with `code`, following the exit rules first
/// (its own non-daemon children are joined, daemon children terminated).
/// In a child, [`Process::exitcode`](crate::Process::exitcode) then reads
/// `code`.
pub fn exit(code: i32) -> ! {
    if registry::parent_process().is_some() {
        finish(code)
    }
    rules();
    std::process::exit(code)
}
