//! Linux: anonymous segments are memfds; space is reserved with `fallocate`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// A new anonymous shared file of `len` bytes, every page reserved.
///
/// The memfd has no name in any file system, so nothing is left behind
/// whatever happens to the processes that hold it, and it is sealed against
/// resizing once sized.
pub(crate) fn anonymous(len: usize) -> io::Result<OwnedFd> {
    // Reserving memfd pages allocates real memory: a request larger than the
    // machine could ever hold would run the OOM killer before failing.
    if len as u128 > memory_limit()? {
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "segment larger than the machine's memory and swap",
        ));
    }
    let fd = memfd_create("mproc", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    preallocate(std::os::fd::AsFd::as_fd(&fd), len, true)?;
    // Sealed at its size: no process holding the descriptor can shrink it
    // under the others' mappings (which would SIGBUS them) or grow it.
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(fd)
}

/// Sizes the file behind `fd` to `len` bytes and reserves its blocks, so that
/// running out of space is an error now (ENOSPC) and never a SIGBUS later.
///
/// File systems without `fallocate` support fall back to `ftruncate`.
pub(crate) fn preallocate(fd: BorrowedFd<'_>, len: usize, _is_shm: bool) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment length too large"))?;
    if len == 0 {
        return Ok(());
    }
    loop {
        // SAFETY: fallocate with mode 0 on an open descriptor; it neither
        // reads nor writes our memory.
        let ret = unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len) };
        if ret == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => {
                nix::unistd::ftruncate(fd, len)?;
                return Ok(());
            }
            _ => return Err(e),
        }
    }
}

/// The state of `pid` from `/proc/<pid>/stat`: gone (no such process, or
/// a zombie) or running, with its start time in clock ticks since boot.
pub(crate) fn process_state(pid: u32) -> super::ProcState {
    use super::ProcState;
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ProcState::Gone,
        // No readable process table (hidepid, no /proc): existence is all
        // we can tell.
        Err(_) if super::pid_exists(pid) => return ProcState::Running { start: 0 },
        Err(_) => return ProcState::Gone,
    };
    // The command name, in parentheses, may hold spaces and parentheses:
    // the fields start after the last ')'. Field 3 is the state, field 22
    // the start time.
    let Some(fields) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return ProcState::Running { start: 0 };
    };
    let mut fields = fields.split_ascii_whitespace();
    match fields.next() {
        Some("Z") | Some("X") | Some("x") => return ProcState::Gone,
        _ => {}
    }
    let start = fields.nth(18).and_then(|f| f.parse().ok()).unwrap_or(0);
    ProcState::Running { start }
}

/// Physical memory plus swap, in bytes.
fn memory_limit() -> io::Result<u128> {
    // SAFETY: an all-zero sysinfo is a valid value for the kernel to fill.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: sysinfo writes into the struct we pass and reads nothing.
    if unsafe { libc::sysinfo(&mut info) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let unit = u128::from(info.mem_unit.max(1));
    Ok((u128::from(info.totalram) + u128::from(info.totalswap)) * unit)
}

/// A new memfd of `len` reserved bytes that can still be sealed (for a
/// [`BufMut`](crate::BufMut)); not yet sealed at all.
pub(crate) fn sealable(len: usize) -> io::Result<OwnedFd> {
    if len as u128 > memory_limit()? {
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "buffer larger than the machine's memory and swap",
        ));
    }
    let fd = memfd_create(
        "mproc-buf",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    preallocate(std::os::fd::AsFd::as_fd(&fd), len, true)?;
    Ok(fd)
}

/// Seals a buffer's memfd for good: no process can write, shrink or grow
/// it, nor lift the seals. Fails (`EBUSY`) while a writable shared mapping
/// of it exists.
pub(crate) fn seal_frozen(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl(
        fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(())
}

/// Whether a descriptor received as a frozen buffer is sealed against
/// writing, shrinking and growing (anyone could send any descriptor).
pub(crate) fn is_frozen(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let seals = fcntl(fd, FcntlArg::F_GET_SEALS)?;
    let need = (SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW).bits();
    Ok(seals & need == need)
}
