//! What macOS does its own way: no pipe2, its own calls for a thread's
//! stack bounds and a process's thread count.

use std::io;
use std::os::fd::OwnedFd;

/// A pipe, both ends close-on-exec. macOS has no `pipe2`: the flag is set
/// right after the call, and a fork by another thread in between can copy
/// the ends into a child that then execs (spawned mproc children are safe:
/// they close every descriptor they were not given).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let (r, w) = nix::unistd::pipe()?;
    for fd in [&r, &w] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    Ok((r, w))
}

/// The main thread's stack guard: the page below its stack (as Rust's
/// runtime reckons it; `near_top` is not needed here).
pub(crate) fn main_stack_guard(_near_top: usize) -> Option<(usize, usize)> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(16384);
    // SAFETY: both calls take the calling thread's handle and return plain
    // values. (nix has no wrappers.)
    let (top, size) = unsafe {
        let me = libc::pthread_self();
        (
            libc::pthread_get_stackaddr_np(me) as usize,
            libc::pthread_get_stacksize_np(me),
        )
    };
    let low = top.saturating_sub(size);
    Some((low.saturating_sub(page), low))
}

/// How many threads this process runs.
#[cfg(feature = "tracing")]
pub(crate) fn thread_count() -> Option<usize> {
    // SAFETY: a zeroed proc_taskinfo is a valid buffer of the size given.
    let mut info: libc::proc_taskinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
    // SAFETY: PROC_PIDTASKINFO fills at most `size` bytes of `info`.
    let n = unsafe {
        libc::proc_pidinfo(
            libc::getpid(),
            libc::PROC_PIDTASKINFO,
            0,
            (&mut info as *mut libc::proc_taskinfo).cast(),
            size,
        )
    };
    (n == size).then_some(info.pti_threadnum as usize)
}
