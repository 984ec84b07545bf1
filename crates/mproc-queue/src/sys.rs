//! Every system call of this crate, each wrapped once: the pipes that carry
//! a `Connection`'s lifelines, and the poll that tells a peer is gone.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// An OS pipe `(read, write)`, both ends close-on-exec.
///
/// On Linux the flag is set by the call that creates them (`pipe2`), so a
/// process started by another thread at the same moment never inherits
/// them. macOS has no `pipe2`: the flag is set right after, and the window
/// in between is closed for mproc's own children by their start-up, which
/// keeps only the descriptors they were handed.
pub(crate) fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    #[cfg(target_os = "linux")]
    {
        Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let (r, w) = nix::unistd::pipe()?;
        for fd in [&r, &w] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        Ok((r, w))
    }
}

/// Whether the write side of the pipe whose read side is `fd` is closed in
/// every process (hang-up, or readable: nobody ever writes to a lifeline).
/// Does not wait.
pub(crate) fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0].revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
        }),
        _ => false,
    }
}
