//! Every system call of this crate, wrapped once.

use std::io;
use std::time::{Duration, Instant};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// How a child ended, as `waitpid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    /// CPython's exitcode: the exit status, or minus the signal number.
    pub(crate) fn code(self) -> i32 {
        match self {
            Ended::Exited(c) => c,
            Ended::Signaled(s) => -s,
        }
    }
}

fn decode(status: libc::c_int) -> Option<Ended> {
    if libc::WIFEXITED(status) {
        Some(Ended::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(Ended::Signaled(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// Reaps our child `pid`: blocking, or `None` at once if it still runs.
pub(crate) fn reap(pid: u32, block: bool) -> io::Result<Option<Ended>> {
    let p = pid as libc::pid_t;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one of our own children; `status` is a valid out
        // pointer. Never -1: other children are not ours to reap.
        let r = unsafe { libc::waitpid(p, &mut status, if block { 0 } else { libc::WNOHANG }) };
        match r {
            0 => return Ok(None),
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            _ => match decode(status) {
                Some(ended) => return Ok(Some(ended)),
                // Stopped or continued: not an end.
                None if block => continue,
                None => return Ok(None),
            },
        }
    }
}

/// Waits until our child `pid` has ended (or `deadline` passes) without
/// reaping it, so the caller holds no lock while it waits and another thread
/// can still signal the child. Linux waits on a pidfd; elsewhere, or without
/// pidfds, it naps for `nap` (the caller grows it) and returns. Spurious
/// returns are fine: the caller reaps without blocking and asks again.
pub(crate) fn await_exit(pid: u32, deadline: Option<Instant>, nap: Duration) {
    #[cfg(target_os = "linux")]
    if linux_await_pidfd(pid, deadline) {
        return;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pid;
    let nap = match deadline {
        Some(d) => nap.min(d.saturating_duration_since(Instant::now())),
        None => nap,
    };
    std::thread::sleep(nap);
}

/// Polls a pidfd of `pid` until it is readable (the process has ended) or
/// `deadline`; `false` when pidfds are unavailable.
#[cfg(target_os = "linux")]
fn linux_await_pidfd(pid: u32, deadline: Option<Instant>) -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags, and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        // ESRCH: already reaped by another thread; anything else: no pidfds.
        return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let ms = match deadline {
        // Round up, so a sub-millisecond remainder still sleeps.
        Some(d) => i32::try_from(
            d.saturating_duration_since(Instant::now())
                .as_micros()
                .div_ceil(1000),
        )
        .unwrap_or(i32::MAX),
        None => -1,
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call. EINTR is a spurious return.
    unsafe { libc::poll(&mut pfd, 1, ms) };
    true
}

/// Sends `sig` to our child `pid` (or, with `group`, to its process group).
///
/// A child asked to lead its own group may not have made the group yet (a
/// forked child does it first thing); then it has started nothing either,
/// and signalling the child alone reaches everything.
pub(crate) fn signal(pid: u32, sig: i32, group: bool) -> io::Result<()> {
    let p = pid as libc::pid_t;
    if group {
        // SAFETY: kill takes a pid and a signal number; it touches no memory.
        match cvt(unsafe { libc::kill(-p, sig) }) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            other => return other.map(drop),
        }
    }
    // SAFETY: as above.
    cvt(unsafe { libc::kill(p, sig) }).map(drop)
}

/// `fork()`.
///
/// # Safety
///
/// In the child, only async-signal-safe work is guaranteed if other threads
/// existed; the caller documents and accepts that (CPython's rule).
pub(crate) unsafe fn fork() -> io::Result<u32> {
    // SAFETY: the caller accepts fork's rules for the child.
    cvt(unsafe { libc::fork() }).map(|p| p as u32)
}

/// Ends this process at once, without running atexit handlers.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// The parent's pid.
pub(crate) fn parent_pid() -> u32 {
    // SAFETY: getppid cannot fail.
    (unsafe { libc::getppid() }) as u32
}

/// Puts the calling process in a new process group of its own.
pub(crate) fn new_process_group() -> io::Result<()> {
    // SAFETY: setpgid(0, 0) only changes the caller's group.
    cvt(unsafe { libc::setpgid(0, 0) }).map(drop)
}

/// Asks the kernel to SIGKILL this process when its parent dies (Linux),
/// then closes the race with a parent that died first.
pub(crate) fn die_with_parent(parent: u32) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number.
        cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) })?;
    }
    if parent_pid() != parent {
        exit_now(1);
    }
    Ok(())
}

/// Makes sure this process dies when `parent` does, beyond what
/// [`die_with_parent`] could do between fork and exec: on macOS, which has no
/// parent-death signal, a thread watches the parent with kqueue and ends the
/// process when it exits. On Linux the kernel already does it.
pub(crate) fn lifeline(parent: u32) -> io::Result<()> {
    die_with_parent(parent)?;
    #[cfg(target_os = "macos")]
    {
        // SAFETY: kqueue takes no arguments and returns a new descriptor.
        let kq = owned(cvt(unsafe { libc::kqueue() })?);
        // SAFETY: a zeroed kevent is a valid value to fill in.
        let mut ev: libc::kevent = unsafe { std::mem::zeroed() };
        ev.ident = parent as usize;
        ev.filter = libc::EVFILT_PROC;
        ev.flags = libc::EV_ADD | libc::EV_ONESHOT;
        ev.fflags = libc::NOTE_EXIT;
        let kq_raw = std::os::fd::AsRawFd::as_raw_fd(&kq);
        // SAFETY: one change in, no events out; `ev` outlives the call.
        let r = unsafe { libc::kevent(kq_raw, &ev, 1, std::ptr::null_mut(), 0, std::ptr::null()) };
        if r < 0 || parent_pid() != parent {
            // ESRCH: the parent is already gone.
            exit_now(1);
        }
        std::thread::Builder::new()
            .name("mproc-lifeline".into())
            .spawn(move || {
                let kq = kq;
                let kq_raw = std::os::fd::AsRawFd::as_raw_fd(&kq);
                loop {
                    // SAFETY: a zeroed kevent is a valid buffer for one event.
                    let mut out: libc::kevent = unsafe { std::mem::zeroed() };
                    // SAFETY: no changes in, room for one event out.
                    let n = unsafe {
                        libc::kevent(kq_raw, std::ptr::null(), 0, &mut out, 1, std::ptr::null())
                    };
                    if n > 0 || parent_pid() != parent {
                        // SAFETY: SIGKILL to ourselves, as PDEATHSIG would.
                        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                    }
                }
            })?;
    }
    Ok(())
}

/// How many threads this process runs, when the platform tells.
#[cfg(feature = "tracing")]
pub(crate) fn thread_count() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
    }
    #[cfg(target_os = "macos")]
    {
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
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        None
    }
}

/// Registers `f` to run at normal process exit.
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: atexit stores a plain function pointer.
    unsafe { libc::atexit(f) };
}

/// A pipe, both ends close-on-exec, the write end non-blocking.
pub(crate) fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
    let (r, w) = (owned(fds[0]), owned(fds[1]));
    for fd in fds {
        // SAFETY: plain fcntl flag changes on descriptors we own.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
        }
    }
    Ok((r, w))
}

/// Installs `handler` for `sig` (restarting interrupted calls).
pub(crate) fn on_signal(sig: i32, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction with a plain handler and an empty mask is
    // valid; the handler only does async-signal-safe work.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Restores the default action for `sig`.
pub(crate) fn on_signal_default(sig: i32) {
    // SAFETY: SIG_DFL is always a valid disposition.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// Waits until `a` or `b` is readable (or hung up); says which.
pub(crate) fn poll2(
    a: std::os::fd::BorrowedFd<'_>,
    b: std::os::fd::BorrowedFd<'_>,
) -> io::Result<(bool, bool)> {
    use std::os::fd::AsRawFd;
    let mut fds = [
        libc::pollfd {
            fd: a.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two valid pollfds for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n >= 0 {
            return Ok((fds[0].revents != 0, fds[1].revents != 0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads a non-blocking descriptor until it is empty.
pub(crate) fn drain(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 64];
    // SAFETY: reads into a local buffer of the given size.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Reaps any ended child (the forkserver's own; never called elsewhere).
pub(crate) fn reap_any() -> Option<(u32, Ended)> {
    loop {
        let mut status = 0;
        // SAFETY: in the forkserver every child is ours to reap.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            return None;
        }
        if let Some(e) = decode(status) {
            return Some((r as u32, e));
        }
    }
}

/// Whether a process exists (a zombie counts).
pub(crate) fn exists(pid: u32) -> bool {
    // SAFETY: signal 0 checks existence only.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Wraps a descriptor that `pipe` just created.
fn owned(fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: callers pass a descriptor pipe() just created, owned by nobody.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}
