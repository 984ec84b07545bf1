//! Every system call of this crate, each wrapped once and returning
//! `io::Result` (or, where failure is not possible, nothing).
//!
//! nix wraps every call it has (fork, waitpid, waitid, kill, setpgid,
//! sigaction, poll, pipe2, read, write, getrlimit); raw libc is used
//! only where nix has no wrapper (`pidfd_open`, `close_range`, `sigaltstack`,
//! a thread's stack bounds, `atexit`, `_exit`) or where a call must take
//! descriptor numbers that may not be open (the close-on-exec sweep between
//! fork and exec). Descriptors are close-on-exec from the call that makes
//! them. The platform files hold what differs; the rest of the crate is safe
//! Rust.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{kill_on_hangup, pidfd_open, pipe};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub(crate) use macos::pipe;

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

/// A pid as nix takes it; pids above `i32::MAX` do not exist.
fn pid(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .map(Pid::from_raw)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// An end, or `None` for stopped, continued and still running.
fn ended(status: WaitStatus) -> Option<Ended> {
    match status {
        WaitStatus::Exited(_, code) => Some(Ended::Exited(code)),
        WaitStatus::Signaled(_, sig, _) => Some(Ended::Signaled(sig as i32)),
        _ => None,
    }
}

/// Reaps our child `child` if it has ended, without blocking. Never
/// `waitpid(-1)`: other children are not ours to reap.
pub(crate) fn try_reap(child: u32) -> io::Result<Option<Ended>> {
    let child = pid(child)?;
    loop {
        match nix::sys::wait::waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => return Ok(ended(status)),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits for our child `child` to end and reaps it.
pub(crate) fn reap(child: u32) -> io::Result<Ended> {
    let child = pid(child)?;
    loop {
        match nix::sys::wait::waitpid(child, None) {
            Ok(status) => {
                if let Some(e) = ended(status) {
                    return Ok(e);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reaps any ended child (the forkserver's own, where every child is ours).
pub(crate) fn reap_any() -> Option<(u32, Ended)> {
    loop {
        match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => {
                let who = status.pid()?;
                if let Some(e) = ended(status) {
                    return Some((who.as_raw() as u32, e));
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Waits until `fd` is readable or hung up, at most `timeout` (`None`: no
/// limit); whether it is. `EINTR` is a spurious `false`.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let timeout = match timeout {
        // Round up, so that a sub-millisecond remainder still waits.
        Some(t) => PollTimeout::try_from(t.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX),
        None => PollTimeout::NONE,
    };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits until `a` or `b` is readable (or hung up); says which.
pub(crate) fn poll2(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<(bool, bool)> {
    let mut fds = [
        PollFd::new(a, PollFlags::POLLIN),
        PollFd::new(b, PollFlags::POLLIN),
    ];
    loop {
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            // Flags nix does not know count as readiness.
            Ok(_) => return Ok((fds[0].any().unwrap_or(true), fds[1].any().unwrap_or(true))),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `sig` to our child `child` (or, with `group`, to its process
/// group).
///
/// A child asked to lead its own group may not have made the group yet (a
/// forked child does it first thing); then it has started nothing either,
/// and signalling the child alone reaches everything.
pub(crate) fn signal(child: u32, sig: Signal, group: bool) -> io::Result<()> {
    let child = pid(child)?;
    if group {
        match nix::sys::signal::killpg(child, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(nix::sys::signal::kill(child, sig)?)
}

/// SIGKILLs the calling process.
pub(crate) fn kill_self() -> ! {
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGKILL);
    // Not reached: SIGKILL cannot be caught.
    exit_now(137)
}

/// `fork()`: `Some(pid)` in the parent, `None` in the child.
///
/// # Safety
///
/// In the child of a multi-threaded parent only async-signal-safe work is
/// guaranteed; the caller documents and accepts that (CPython's rule).
pub(crate) unsafe fn fork() -> io::Result<Option<u32>> {
    // SAFETY: the caller accepts fork's rules for the child.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child.as_raw() as u32)),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// Ends this process at once, without atexit handlers or flushing.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state. (nix has no
    // wrapper.)
    unsafe { libc::_exit(code) }
}

/// This process's pid, without a system call after the first: cached, and
/// set anew in the child of every `fork` (a fork handler).
pub(crate) fn my_pid() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    static HANDLER: std::sync::Once = std::sync::Once::new();
    extern "C" fn renew() {
        // `getpid` and an atomic store: async-signal-safe, as a fork
        // handler must be. Done here rather than at the child's first use,
        // whose code would be one more page the child faults in (a fault
        // costs a forked child about 2.5 µs here).
        PID.store(nix::unistd::getpid().as_raw() as u32, Ordering::Relaxed);
    }
    let cached = PID.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    HANDLER.call_once(|| {
        // SAFETY: registers a child-side fork handler that only calls
        // getpid and stores to an atomic. (nix has no wrapper.)
        unsafe { libc::pthread_atfork(None, None, Some(renew)) };
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// Puts the calling process in a new process group of its own.
pub(crate) fn new_process_group() -> io::Result<()> {
    Ok(nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?)
}

/// Ignores `sig` (SIGPIPE, as Rust's runtime does before `main`; SIGINT in
/// pool workers).
pub(crate) fn ignore(sig: Signal) {
    // SAFETY: SIG_IGN installs no handler, so no handler can break a rule.
    let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigIgn) };
}

/// Restores the default action for `sig`.
pub(crate) fn default_action(sig: Signal) {
    // SAFETY: SIG_DFL installs no handler.
    let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
}

/// Installs `handler` for `sig`, restarting interrupted calls.
///
/// # Safety
///
/// `handler` must only do async-signal-safe work.
pub(crate) unsafe fn on_signal(sig: Signal, handler: extern "C" fn(libc::c_int)) {
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the caller promises the handler is async-signal-safe.
    let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
}

/// Makes a descriptor non-blocking.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Reads one byte: `true` for a byte, `false` at end of file.
pub(crate) fn read_byte(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(fd, &mut b) {
            Ok(n) => return Ok(n == 1),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes one byte.
pub(crate) fn write_byte(fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        match nix::unistd::write(fd, &[1]) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads a non-blocking descriptor until it is empty.
pub(crate) fn drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(fd, &mut buf), Ok(n) if n > 0) {}
}

/// Closes descriptor `fd` of this process, which a forked child inherited
/// inside its parent's state: the state is never dropped here, so the
/// number is closed exactly once.
pub(crate) fn close_inherited(fd: BorrowedFd<'static>) {
    // SAFETY: `fd` belongs to state this process never drops (a parent's
    // copy, leaked), so nothing else closes or uses the number after this.
    let _ = unsafe { libc::close(fd.as_raw_fd()) };
}

/// In a forked child that will never return to the frame holding `fd` (it
/// ends with `_exit`): closes that descriptor number, which the parent's
/// copy of the frame would otherwise keep open in the child.
pub(crate) fn close_in_forked_child(fd: &std::os::fd::OwnedFd) {
    // SAFETY: the forked child never drops or uses `fd` again (the frame
    // that owns it never resumes in this process), so the number is
    // closed exactly once here.
    let _ = unsafe { libc::close(fd.as_raw_fd()) };
}

/// In a forked child: closes descriptor number `fd`, which belongs to a
/// thread of the parent that does not exist here (its owner is never
/// dropped in this process).
pub(crate) fn close_raw_in_forked_child(fd: RawFd) {
    // SAFETY: the number belongs to state of the parent that this process
    // never drops or uses; it is closed exactly once, here.
    let _ = unsafe { libc::close(fd) };
}

/// The highest descriptor number plus one that a child could inherit, for
/// the close-on-exec sweep's fallback: the soft `RLIMIT_NOFILE`, capped.
pub(crate) fn fd_limit() -> RawFd {
    use nix::sys::resource::{getrlimit, Resource};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    RawFd::try_from(soft.min(1 << 16)).unwrap_or(1 << 16)
}

/// Between fork and exec: marks every descriptor from 3 up close-on-exec,
/// so that exec closes every descriptor but stdio and the ones a later hook
/// clears the flag on (the handles passed to the child). Only
/// async-signal-safe calls: `close_range` (Linux 5.11+), else `fcntl` on
/// each number below `limit`.
pub(crate) fn cloexec_from_3(limit: RawFd) {
    #[cfg(target_os = "linux")]
    if linux::close_range_cloexec(3) {
        return;
    }
    for fd in 3..limit {
        // SAFETY: F_SETFD with FD_CLOEXEC only changes a flag; a number that
        // is not open fails with EBADF, which is fine. These are raw numbers
        // (most not open), so nix's `fcntl`, which takes a `BorrowedFd`,
        // does not fit.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Registers `f` to run at normal process exit.
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: atexit stores a plain function pointer. (nix has no wrapper.)
    unsafe { libc::atexit(f) };
}

/// How many threads this process runs, when the platform tells.
#[cfg(feature = "tracing")]
pub(crate) fn thread_count() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        // Linux counts a process's threads into the link count of its task
        // directory (2 + one per thread): one `statx`, where reading the
        // directory takes four calls and a 32 KiB buffer from the heap.
        match std::fs::metadata("/proc/self/task") {
            Ok(m) if m.nlink() > 2 => usize::try_from(m.nlink() - 2).ok(),
            // A procfs that does not count (none known): read the entries.
            _ => std::fs::read_dir("/proc/self/task").ok().map(|d| d.count()),
        }
    }
    #[cfg(target_os = "macos")]
    {
        macos::thread_count()
    }
}

// --- The stack-overflow report of a child booted before `main` -------------

/// The guard region of the thread the report covers: `[lo, hi)`.
static GUARD_LO: AtomicUsize = AtomicUsize::new(0);
static GUARD_HI: AtomicUsize = AtomicUsize::new(0);
/// The name the reports give (set once, before the target runs; reading a
/// set `OnceLock` is one atomic load, fine in a signal handler).
static NAME: OnceLock<String> = OnceLock::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Sets the name that stack-overflow and panic reports give the thread
/// that runs the target (once per process).
pub(crate) fn set_report_name(name: &str) {
    let _ = NAME.set(name.to_owned());
}

/// Reports a stack overflow of the main thread the way Rust's runtime does
/// for `main` (which a child booted before `main` never ran): a
/// SIGSEGV/SIGBUS handler on an alternate stack tells a fault in the guard
/// region below the stack — print "has overflowed its stack" and abort —
/// from any other fault, which gets the default action. Call it on the main
/// thread, from a frame near the top of its stack.
pub(crate) fn report_stack_overflow() -> io::Result<()> {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    let here = 0u8;
    let near_top = std::hint::black_box(&here) as *const u8 as usize;
    #[cfg(target_os = "linux")]
    let guard = linux::main_stack_guard(near_top);
    #[cfg(target_os = "macos")]
    let guard = macos::main_stack_guard(near_top);
    let Some((lo, hi)) = guard else {
        return Ok(());
    };
    GUARD_LO.store(lo, Ordering::Release);
    GUARD_HI.store(hi, Ordering::Release);
    // An alternate stack, leaked: it serves for the life of the thread.
    // Uninitialized memory is fine for a stack (and costs no page faults).
    let mut alt = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(ALT_STACK_LEN));
    let ss = libc::stack_t {
        ss_sp: alt.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: alt.capacity(),
    };
    // SAFETY: `ss` describes memory that stays valid for ever (never freed)
    // and is used by nothing else. (nix has no sigaltstack.)
    if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let action = SigAction::new(
        SigHandler::SigAction(on_fault),
        SaFlags::SA_SIGINFO | SaFlags::SA_ONSTACK,
        SigSet::empty(),
    );
    for sig in [Signal::SIGSEGV, Signal::SIGBUS] {
        // SAFETY: `on_fault` only makes async-signal-safe calls (write,
        // sigaction, abort) and reads atomics.
        unsafe { nix::sys::signal::sigaction(sig, &action) }?;
    }
    Ok(())
}

/// The alternate signal stack's size: room for the handler and a margin.
const ALT_STACK_LEN: usize = 64 << 10;

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let addr = fault_address(info);
    let (lo, hi) = (
        GUARD_LO.load(Ordering::Acquire),
        GUARD_HI.load(Ordering::Acquire),
    );
    if lo <= addr && addr < hi {
        let name = report_name();
        let err = std::io::stderr();
        for part in [
            b"\nthread '".as_slice(),
            name,
            b"' has overflowed its stack\nfatal runtime error: stack overflow, aborting\n",
        ] {
            let _ = nix::unistd::write(&err, part);
        }
        std::process::abort();
    }
    // Not an overflow: the default action, when the faulting instruction
    // runs again on return.
    if let Ok(sig) = Signal::try_from(sig) {
        default_action(sig);
    }
}

/// The faulting address in a SIGSEGV/SIGBUS handler.
fn fault_address(info: *mut libc::siginfo_t) -> usize {
    if info.is_null() {
        return 0;
    }
    // SAFETY: for an SA_SIGINFO handler of SIGSEGV/SIGBUS the kernel passes
    // a valid siginfo whose address field is set.
    unsafe { (*info).si_addr() as usize }
}

/// The name set by [`set_report_name`], or `main`.
pub(crate) fn report_name() -> &'static [u8] {
    NAME.get().map_or(b"main".as_slice(), |n| n.as_bytes())
}

/// Waits until one of `fds` is readable or hung up, at most `timeout`.
pub(crate) fn wait_any_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<()> {
    wait_io(fds, None, timeout)
}

/// A connected pair of stream sockets, both close-on-exec from the call
/// that makes them (on macOS, a call after: as for `pipe`).
pub(crate) fn stream_pair() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    #[cfg(target_os = "linux")]
    let flags = SockFlag::SOCK_CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    let flags = SockFlag::empty();
    let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, flags)?;
    #[cfg(not(target_os = "linux"))]
    for fd in [&a, &b] {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        // A write to a closed peer is EPIPE, never SIGPIPE (nix has no
        // wrapper for SO_NOSIGPIPE).
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&on`,
        // which lives across the call; `fd` is an open socket of ours.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((a, b))
}

/// Reads what `fd` has within `timeout`: `Ok(None)` when nothing came
/// (`Some(0)` is end of file).
pub(crate) fn read_some(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Duration,
) -> io::Result<Option<usize>> {
    if !wait_readable(fd, Some(timeout))? {
        return Ok(None);
    }
    read_now(fd, buf)
}

/// One read that does not wait (on a non-blocking descriptor, or one that
/// `poll` said is readable): `Ok(None)` when there is nothing yet.
pub(crate) fn read_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match nix::unistd::read(fd, buf) {
        Ok(n) => Ok(Some(n)),
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One send on a socket that never waits and never raises SIGPIPE:
/// `Ok(None)` when the socket is full.
pub(crate) fn write_now(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<Option<usize>> {
    use nix::sys::socket::{send, MsgFlags};
    #[cfg(target_os = "linux")]
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    #[cfg(not(target_os = "linux"))]
    let flags = MsgFlags::MSG_DONTWAIT;
    match send(fd.as_raw_fd(), buf, flags) {
        Ok(n) => Ok(Some(n)),
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes all of `buf` to `fd` (a blocking descriptor).
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Makes descriptors 1 and 2 copies of `out` and `err`.
pub(crate) fn redirect_stdio(out: BorrowedFd<'_>, err: BorrowedFd<'_>) -> io::Result<()> {
    nix::unistd::dup2_stdout(out)?;
    nix::unistd::dup2_stderr(err)?;
    Ok(())
}

/// Points descriptors 1 and 2 at `/dev/null` (closing what they were).
pub(crate) fn stdio_to_null() -> io::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    redirect_stdio(null.as_fd(), null.as_fd())
}

/// Waits until one of `reads` is readable (or hung up) or `write` is
/// writable, at most `timeout`.
pub(crate) fn wait_io(
    reads: &[BorrowedFd<'_>],
    write: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> io::Result<()> {
    let mut polled: Vec<PollFd<'_>> = reads
        .iter()
        .map(|&fd| PollFd::new(fd, PollFlags::POLLIN))
        .chain(write.map(|fd| PollFd::new(fd, PollFlags::POLLOUT)))
        .collect();
    let timeout =
        PollTimeout::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX);
    match nix::poll::poll(&mut polled, timeout) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(all(test, feature = "tracing"))]
mod tests {
    use std::sync::{Arc, Barrier};

    #[test]
    fn thread_count_counts_the_threads_running_now() {
        // Three threads, held until they have been counted.
        let started = Arc::new(Barrier::new(4));
        let counted = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (started, counted) = (started.clone(), counted.clone());
                std::thread::spawn(move || {
                    started.wait();
                    counted.wait();
                })
            })
            .collect();
        started.wait();
        let n = super::thread_count();
        counted.wait();
        for t in threads {
            t.join().unwrap();
        }
        // Those three and this one, at least (the test harness may run
        // more).
        let n = n.expect("the platform tells how many threads run");
        assert!(n >= 4, "counted {n} threads while 4 ran");
    }
}
