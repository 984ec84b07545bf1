//! The one call this crate makes to the OS itself: a read that never
//! waits. (Its private unix socket — abstract on Linux, in a 0700
//! directory on macOS, serving only this user — comes from
//! `mproc_shm::transfer::listen_private`.)

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// One read that never blocks: `Ok(None)` when nothing is there yet.
pub(crate) fn read_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    use nix::sys::socket::{recv, MsgFlags};
    match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
        Ok(n) => Ok(Some(n)),
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
