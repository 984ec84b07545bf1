//! What Linux does its own way: pidfds, `close_range`, pipes made
//! close-on-exec by `pipe2`, a thread's stack bounds.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use nix::fcntl::OFlag;

/// A pidfd for process `pid` (close-on-exec, as pidfd_open always makes
/// them). For a child of ours that has not been reaped, the pidfd names
/// exactly that process, whatever later reuses its pid.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: (1) pidfd_open takes a pid and flags, returns a new descriptor
    // and touches no memory of ours (neither nix nor libc wraps it); (2) a
    // non-negative result is that new descriptor, owned by nothing else yet.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        match i32::try_from(fd) {
            Ok(fd) if fd >= 0 => Ok(OwnedFd::from_raw_fd(fd)),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

/// A pipe, both ends close-on-exec from the call that makes them.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// `fcntl`'s F_SETSIG (the generic Linux value, on every architecture mproc
/// builds for), which the libc crate does not name.
const F_SETSIG: libc::c_int = 10;

/// Makes the kernel SIGKILL this process the moment the last write end of
/// the pipe whose read end is `fd` closes — as it does when the process
/// holding it dies, in the middle of its exit, like a parent-death signal.
///
/// The read end is reopened through `/proc/self/fd` to get an open file
/// description of its own (async-I/O ownership belongs to the description,
/// which other holders of `fd` share), marked `O_ASYNC`, owned by this
/// process, with SIGKILL as its signal. The returned descriptor must stay
/// open. `Err` where `/proc` is not mounted: the caller watches with a
/// thread instead.
pub(crate) fn kill_on_hangup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, open, FcntlArg};
    use nix::sys::stat::Mode;
    use std::os::fd::{AsFd, AsRawFd};
    // Non-blocking: opening a pipe for reading waits for a writer otherwise.
    let own = open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let raw = own.as_raw_fd();
    // SAFETY: F_SETOWN and F_SETSIG take an int and only change the
    // description's async-I/O owner and signal. (nix has no wrapper.)
    let ok = unsafe {
        libc::fcntl(raw, libc::F_SETOWN, libc::getpid()) == 0
            && libc::fcntl(raw, F_SETSIG, libc::SIGKILL) == 0
    };
    if !ok {
        return Err(io::Error::last_os_error());
    }
    let flags = OFlag::from_bits_retain(fcntl(own.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(own.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_ASYNC))?;
    Ok(own)
}

/// Marks every descriptor from `first` up close-on-exec with one call;
/// `false` where the kernel is too old (before 5.11).
pub(crate) fn close_range_cloexec(first: u32) -> bool {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors; it is async-signal-safe. (nix has no wrapper.)
    unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) == 0 }
}

/// The main thread's stack guard: where a stack overflow faults, as Rust's
/// runtime reckons it — just below the lowest address the stack may grow
/// to (its top minus `RLIMIT_STACK`; the kernel keeps its own guard gap
/// there). `near_top` is an address in a frame close to the top of the
/// stack (the constructor's): the true top lies above it by the arguments,
/// environment and a few frames, so the region reaches that much (1 MiB at
/// most) higher. Reading the exact bounds (`pthread_getattr_np`) parses
/// `/proc/self/maps`: too slow for every child's start. `None` for an
/// unlimited stack.
pub(crate) fn main_stack_guard(near_top: usize) -> Option<(usize, usize)> {
    use nix::sys::resource::{getrlimit, Resource};
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096);
    let (limit, _) = getrlimit(Resource::RLIMIT_STACK).ok()?;
    if limit == nix::sys::resource::RLIM_INFINITY {
        return None;
    }
    let top = near_top.checked_next_multiple_of(page)?;
    let floor = top.checked_sub(usize::try_from(limit).ok()?)?;
    Some((floor.saturating_sub(page), floor + (1 << 20)))
}
