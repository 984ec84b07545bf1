//! Every system call of this crate, wrapped once (nix).

use nix::sys::signal::{SigHandler, Signal};

/// Ignores SIGINT in a worker: Ctrl-C goes to the whole process group, and
/// the parent decides what happens to its workers.
pub(crate) fn ignore_sigint() {
    // SAFETY: SIG_IGN installs no handler, so no handler can break a rule.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGINT, SigHandler::SigIgn) };
}
