//! Every system call of this crate, wrapped once (nix).

use nix::sys::signal::{SigHandler, Signal};

/// Ignores SIGINT in a worker: Ctrl-C goes to the whole process group, and
/// the parent decides what happens to its workers.
pub(crate) fn ignore_sigint() {
    // SAFETY: SIG_IGN installs no handler, so no handler can break a rule.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGINT, SigHandler::SigIgn) };
}

/// This process's resident memory in bytes: the current figure from
/// `/proc/self/statm` on Linux, the peak (`ru_maxrss`) elsewhere; `None`
/// if it cannot be read.
pub(crate) fn resident_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()?;
        pages.checked_mul(u64::try_from(page).ok()?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let usage =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
        // Bytes on macOS (kilobytes on the other BSDs).
        u64::try_from(usage.max_rss()).ok()
    }
}
