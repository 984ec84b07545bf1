//! macOS: anonymous segments are POSIX shm objects unlinked at once; files
//! reserve space with `F_PREALLOCATE`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// A new anonymous shared object of `len` bytes.
///
/// macOS has no memfd: we create a uniquely named shm object and unlink the
/// name straight away, so only descriptors keep it alive and a SIGKILL leaves
/// nothing behind. The name lives for a few microseconds.
pub(crate) fn anonymous(len: usize) -> io::Result<OwnedFd> {
    for _ in 0..16 {
        let name = format!("/mp.{}", super::unique_suffix());
        // macOS limits shm names to 31 bytes (PSHMNAMLEN).
        let name: String = name.chars().take(30).collect();
        match super::shm_create(&name, len) {
            Ok(fd) => {
                super::shm_unlink(&name)?;
                return Ok(fd);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not find a free shm name",
    ))
}

/// Sizes the object behind `fd` to `len` bytes.
///
/// For regular files the blocks are reserved first with `F_PREALLOCATE`, so a
/// full disk is an error here. shm objects accept only one `ftruncate`, which
/// the kernel backs with memory.
pub(crate) fn preallocate(fd: BorrowedFd<'_>, len: usize, is_shm: bool) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment length too large"))?;
    if len == 0 {
        return Ok(());
    }
    if !is_shm {
        let mut store = libc::fstore_t {
            fst_flags: libc::F_ALLOCATEALL,
            fst_posmode: libc::F_PEOFPOSMODE,
            fst_offset: 0,
            fst_length: len,
            fst_bytesalloc: 0,
        };
        // SAFETY: F_PREALLOCATE takes a pointer to an fstore_t, which lives
        // on our stack for the call.
        let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_PREALLOCATE, &mut store) };
        if ret == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSPC) {
                return Err(e);
            }
        }
    }
    nix::unistd::ftruncate(fd, len)?;
    Ok(())
}

/// The state of `pid` from `proc_pidinfo`: gone (no such process, or a
/// zombie) or running, with its start time in µs since the epoch.
pub(crate) fn process_state(pid: u32) -> super::ProcState {
    use super::ProcState;
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return ProcState::Gone;
    };
    // SAFETY: an all-zero proc_bsdinfo is a valid buffer for the kernel.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    // SAFETY: `info` is a writable buffer of `size` bytes for the call.
    let n = unsafe {
        libc::proc_pidinfo(
            p,
            libc::PROC_PIDTBSDINFO,
            0,
            (&mut info as *mut libc::proc_bsdinfo).cast(),
            size,
        )
    };
    if n != size {
        // No such process, or not ours to inspect: fall back to existence.
        return if super::pid_exists(pid) {
            ProcState::Running { start: 0 }
        } else {
            ProcState::Gone
        };
    }
    if info.pbi_status == libc::SZOMB as u32 {
        return ProcState::Gone;
    }
    let start = info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec;
    ProcState::Running { start }
}

/// A new unlinked shm object of `len` bytes (for a
/// [`BufMut`](crate::BufMut)). macOS has no seals.
pub(crate) fn sealable(len: usize) -> io::Result<OwnedFd> {
    anonymous(len)
}

/// macOS has no seals: a frozen buffer is protected only by every handle
/// mapping it read-only.
pub(crate) fn seal_frozen(_fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(())
}

/// macOS has no seals to check.
pub(crate) fn is_frozen(_fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(true)
}
