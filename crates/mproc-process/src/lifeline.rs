//! The lifeline: how a daemon child dies with its parent *process*.
//!
//! Linux's parent-death signal follows the *thread* that started a child: a
//! daemon started from a short-lived thread would be killed when that thread
//! ends. So daemons watch a pipe instead. Each process that starts children
//! makes one pipe (at its first start) and keeps both ends, close-on-exec,
//! for as long as it lives; nobody ever writes to it. When the parent
//! process is gone — however it ended — the last write end closes and the
//! read end reports end of file. A daemon child gets a copy of the read end
//! and dies at that moment: on Linux the kernel SIGKILLs it right as the
//! write end closes, in the middle of the parent's exit (the pipe is opened
//! again for asynchronous I/O with SIGKILL as its signal — the parent-death
//! signal's timing, bound to the process); elsewhere, or without `/proc`, a
//! thread waits on the pipe and SIGKILLs its process. If the parent is
//! already gone when the child starts watching, the end of file is already
//! there and the child dies before its target runs.
//!
//! Only the parent may hold a write end. Spawned children and the
//! forkserver exec with close-on-exec descriptors (and close every
//! descriptor they were not given), forkserver children fork from the
//! server, and a forked child closes its inherited copy first thing.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use mproc_shm::transfer::SharedFd;

use crate::state::PerProcess;
use crate::sys;

struct Lifeline {
    read: OwnedFd,
    write: OwnedFd,
}

static LIFELINE: PerProcess<Lifeline> = PerProcess::new();

fn lifeline() -> io::Result<&'static Lifeline> {
    LIFELINE.try_get(|| {
        let (read, write) = sys::pipe()?;
        Ok(Lifeline { read, write })
    })
}

/// Makes this process's lifeline if it has none yet (every start does, so
/// that the descriptors exist from the first child on).
pub(crate) fn ensure() -> io::Result<()> {
    lifeline().map(drop)
}

/// A copy of the read end for a daemon child.
pub(crate) fn for_daemon() -> io::Result<SharedFd> {
    Ok(SharedFd::new(lifeline()?.read.try_clone()?))
}

/// In a child made by `fork`, first thing: close the parent's write end (or
/// the parent's daemons would never see it close), and watch the read end if
/// this child is a daemon (else close it too).
pub(crate) fn forked_child(daemon: bool) -> io::Result<()> {
    let Some(inherited) = LIFELINE.inherited() else {
        return Ok(());
    };
    sys::close_inherited(inherited.write.as_fd());
    if daemon {
        watch(inherited.read.as_fd())
    } else {
        sys::close_inherited(inherited.read.as_fd());
        Ok(())
    }
}

/// In a daemon child, before its target runs: if the parent process is
/// already gone, die now; else start a thread that SIGKILLs this process once
/// it is (`fd` reports end of file).
pub(crate) fn watch(fd: BorrowedFd<'static>) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    let armed = sys::kill_on_hangup(fd).map(|own| {
        // Open for the life of the process.
        std::mem::forget(own);
    });
    #[cfg(not(target_os = "linux"))]
    let armed: io::Result<()> = Err(io::ErrorKind::Unsupported.into());
    // A parent that died before the kernel was asked to tell us.
    if sys::wait_readable(fd, Some(std::time::Duration::ZERO))? {
        sys::kill_self();
    }
    if armed.is_ok() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("mproc-lifeline".into())
        .stack_size(64 << 10)
        .spawn(move || loop {
            match sys::wait_readable(fd, None) {
                Ok(true) | Err(_) => sys::kill_self(),
                Ok(false) => {}
            }
        })?;
    Ok(())
}

/// [`watch`] for a descriptor the child received (kept open for ever).
pub(crate) fn watch_owned(fd: OwnedFd) -> io::Result<()> {
    let fd: &'static OwnedFd = Box::leak(Box::new(fd));
    watch(fd.as_fd())
}
