//! Every system call of this crate, each wrapped once and returning `io::Result`.
//!
//! The platform files hold what differs (how an anonymous segment is made, how
//! space is reserved); this file holds the POSIX calls both platforms share.
//! Everything outside `sys` is safe Rust.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{anonymous, is_frozen, preallocate, process_state, seal_frozen, sealable};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub(crate) use macos::{anonymous, is_frozen, preallocate, process_state, seal_frozen, sealable};

/// The largest number of descriptors one `SCM_RIGHTS` message may carry
/// (Linux's `SCM_MAX_FD`; macOS accepts at least as many).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// What the kernel says of a pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProcState {
    /// A process has the pid and has not ended; `start` is its start time
    /// (0 when it could not be read).
    Running { start: u64 },
    /// No process has the pid, or the one that has it is a zombie.
    Gone,
}

/// The start time of the running process `pid`, if any.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    match process_state(pid) {
        ProcState::Running { start } => Some(start),
        ProcState::Gone => None,
    }
}

/// Whether a process has pid `pid` (zombies included), by `kill(pid, 0)`:
/// the fallback where the process table cannot be read.
fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e != nix::errno::Errno::ESRCH,
    }
}

/// Registers `handler` to run in the child after every `fork`.
pub(crate) fn at_fork_in_child(handler: extern "C" fn()) {
    // SAFETY: registers a child-side fork handler; callers pass handlers
    // that only do async-signal-safe work (atomic stores).
    unsafe { libc::pthread_atfork(None, None, Some(handler)) };
}

/// SIGKILLs the calling process (kill points in tests).
#[cfg(feature = "failpoints")]
pub(crate) fn kill_self() {
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
}

/// A short random-ish suffix for temporary kernel object names, unique per
/// process and call.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}.{:x}.{:x}", std::process::id(), n, t & 0xfffff)
}

/// `shm_open(name, O_RDWR | O_CREAT | O_EXCL)` followed by sizing.
pub(crate) fn shm_create(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = nix::sys::mman::shm_open(
        name,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::S_IRUSR | Mode::S_IWUSR,
    )?;
    if let Err(e) = preallocate(fd.as_fd(), len, true) {
        let _ = shm_unlink(name);
        return Err(e);
    }
    Ok(fd)
}

/// `shm_open(name, O_RDWR)` of an existing object.
pub(crate) fn shm_open(name: &str) -> io::Result<OwnedFd> {
    Ok(nix::sys::mman::shm_open(
        name,
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// `shm_unlink(name)`.
pub(crate) fn shm_unlink(name: &str) -> io::Result<()> {
    Ok(nix::sys::mman::shm_unlink(name)?)
}

/// The size in bytes of the object behind `fd`.
pub(crate) fn file_len(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd)?.st_size as u64)
}

/// Sets or clears `FD_CLOEXEC` on `fd`.
///
/// Only `fcntl` is called, so this is async-signal-safe and may run between
/// `fork` and `exec` (in a `pre_exec` hook).
pub(crate) fn set_cloexec(fd: RawFd, cloexec: bool) -> io::Result<()> {
    // SAFETY: F_GETFD takes no argument and only reads the descriptor flags;
    // an invalid fd is reported as EBADF.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let new = if cloexec {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    if new != flags {
        // SAFETY: F_SETFD takes an int argument, which we pass.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, new) })?;
    }
    Ok(())
}

/// Duplicates `fd` with `FD_CLOEXEC` set on the copy.
pub(crate) fn dup_cloexec(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Takes ownership of a descriptor number that this process was handed.
///
/// # Safety
///
/// `fd` must be an open descriptor that nothing else in this process owns.
pub(crate) unsafe fn own_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only checks that the number is open.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the caller promises that `fd` is open and unowned.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kinds of advisory whole-file lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlockKind {
    Shared,
    Exclusive,
    Unlock,
}

/// `flock(fd, kind)`, blocking, retried on `EINTR`.
///
/// The kernel drops the lock when the last descriptor of the open file
/// description closes, which includes the death of the holder.
pub(crate) fn flock(fd: BorrowedFd<'_>, kind: FlockKind) -> io::Result<()> {
    let op = match kind {
        FlockKind::Shared => libc::LOCK_SH,
        FlockKind::Exclusive => libc::LOCK_EX,
        FlockKind::Unlock => libc::LOCK_UN,
    };
    loop {
        // SAFETY: flock takes a descriptor and an operation; both are valid.
        match cvt(unsafe { libc::flock(fd.as_raw_fd(), op) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(drop),
        }
    }
}

/// `fsync` on a directory, so that a rename inside it is durable.
pub(crate) fn fsync_dir(dir: &std::path::Path) -> io::Result<()> {
    let f = std::fs::File::open(dir)?;
    f.sync_all()
}

/// Sends `data` with `fds` attached as `SCM_RIGHTS` ancillary data.
///
/// The descriptors ride on the first byte of `data`, which must not be empty.
/// Returns how many bytes of `data` were sent (at least one).
pub(crate) fn send_with_fds(
    sock: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if data.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors must ride on at least one byte",
        ));
    }
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(raw.as_slice()) as u32;
    let space = if raw.is_empty() {
        0
    } else {
        cmsg_space(payload)
    };
    // u64 storage keeps the control buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: (1) msg_control points at `space` zeroed, aligned bytes, so
        // CMSG_FIRSTHDR returns a header inside it; (2) CMSG_DATA of that header
        // has room for CMSG_LEN(payload) - header bytes, which is exactly
        // `payload`, the size of `raw`.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload as usize,
            );
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers (`iov`, `control`) for the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, send_flags()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The control-buffer size for `payload` bytes of ancillary data.
fn cmsg_space(payload: u32) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation; it touches no memory.
    (unsafe { libc::CMSG_SPACE(payload) }) as usize
}

#[cfg(target_os = "linux")]
fn send_flags() -> libc::c_int {
    libc::MSG_NOSIGNAL
}

#[cfg(not(target_os = "linux"))]
fn send_flags() -> libc::c_int {
    0
}

/// Receives bytes into `buf` and any `SCM_RIGHTS` descriptors that come
/// with them (each with `FD_CLOEXEC` set).
///
/// Returns the number of bytes read (0 at end of stream) and the descriptors.
/// If the kernel had to drop descriptors (`MSG_CTRUNC`) the ones that did
/// arrive are closed and an error is returned.
pub(crate) fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let payload = (MAX_FDS_PER_MESSAGE * std::mem::size_of::<RawFd>()) as u32;
    let space = cmsg_space(payload);
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points at live, writable buffers for the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, recv_flags()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: (1) recvmsg filled `control` and set msg_controllen, so the
    // CMSG_* walk stays inside it; (2) each SCM_RIGHTS payload is an array of
    // descriptors that the kernel just installed in this process, owned by
    // nobody else, so wrapping each in OwnedFd is sound; (3) reads of the
    // payload use read_unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let header = data as usize - cmsg as usize;
                let count = ((*cmsg).cmsg_len as usize - header) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    for fd in &fds {
        set_cloexec(fd.as_raw_fd(), true)?;
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "descriptors were dropped by the kernel (control data truncated)",
        ));
    }
    Ok((n, fds))
}

#[cfg(target_os = "linux")]
fn recv_flags() -> libc::c_int {
    libc::MSG_CMSG_CLOEXEC
}

#[cfg(not(target_os = "linux"))]
fn recv_flags() -> libc::c_int {
    0
}

/// `N` random bytes from the system.
pub(crate) fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    use std::io::Read;
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

/// A listening unix socket named `name` that only this user can reach: an
/// abstract socket on Linux (`@name`: nothing on disk), a socket file in a
/// fresh 0700 directory under the temporary directory elsewhere. Returns
/// the address to connect to and the directory to remove at the end.
pub(crate) fn listen_private(
    name: &str,
) -> io::Result<(
    std::os::unix::net::UnixListener,
    String,
    Option<std::path::PathBuf>,
)> {
    use std::os::unix::net::UnixListener;
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        Ok((UnixListener::bind_addr(&addr)?, format!("@{name}"), None))
    }
    #[cfg(not(target_os = "linux"))]
    {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("s");
        match UnixListener::bind(&path) {
            Ok(l) => Ok((l, path.to_string_lossy().into_owned(), Some(dir))),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }
}

/// Connects to an address made by [`listen_private`].
pub(crate) fn connect_private(addr: &str) -> io::Result<UnixStream> {
    #[cfg(target_os = "linux")]
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        return UnixStream::connect_addr(&addr);
    }
    UnixStream::connect(addr)
}

/// Whether the peer of `stream` runs as this process's effective user.
pub(crate) fn peer_is_us(stream: &UnixStream) -> io::Result<bool> {
    let me = nix::unistd::geteuid();
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        Ok(getsockopt(stream, PeerCredentials)?.uid() == me.as_raw())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (uid, _) = nix::unistd::getpeereid(stream)?;
        Ok(uid == me)
    }
}

/// Waits until `fd` is readable (or hung up), at most `timeout`; whether
/// it is.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let timeout =
        PollTimeout::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
