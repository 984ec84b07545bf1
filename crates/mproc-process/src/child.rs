//! A started child as its parent sees it, and how its end is learned.
//!
//! # Exit-status bookkeeping
//!
//! Every child has one [`End`] slot; its exit status is written there
//! exactly once and read by everyone who asks afterwards (`join`, `is_alive`,
//! `exitcode`, the registry's cleanup, the exit rules, a pool's watcher). No
//! report ever sits in a side table that one caller could take while another
//! is about to wait for it. How the status gets into the slot depends on
//! who the child's parent is:
//!
//! - **Our own child (fork, spawn).** Whoever holds the slot's lock and finds
//!   it empty reaps the child by pid (`waitpid(pid, WNOHANG)`): exact,
//!   because the pid is reaped only under the lock and only while the slot
//!   is empty, so it is still our unreaped child and cannot name another
//!   process. A waiter that must sleep opens a pidfd under the lock (exact
//!   for the same reason) and sleeps on it outside the lock: it is readable
//!   once that child has ended, and for ever after, so no wake-up is lost
//!   whoever reaps. Without pidfds it naps. (No pidfd is kept between waits:
//!   every descriptor a parent holds is copied into each child it forks.)
//! - **A forkserver's child.** The server is the parent and reaps it; its
//!   report (keyed by pid, which is exact there: see `forkserver`) is filed
//!   into the slot by the client's reader thread,
//!   which wakes the waiters. If the server dies first, the slot is marked
//!   orphaned, the child's [`ProcessIdent`] (pid and start time) is read at
//!   once, and waiters watch it until it is gone; its status died with the
//!   server and reads as killed (-9). (Until then the pid is the server's to
//!   reap: a child that ended in the instant before the server died, and
//!   whose pid was reused at once, could be mistaken for the new process —
//!   two failures and a wrapped pid space in a few microseconds.)
//!
//! Every wait sleeps in slices of at most [`SLICE`], then looks again.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mproc_shm::ProcessIdent;

use crate::report::ReportSlot;
use crate::state::lock;
use crate::sys::{self, Ended};

/// The longest a wait sleeps before it looks again.
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// How a child whose status was lost ended, as far as anyone can tell.
const LOST: Ended = Ended::Signaled(libc::SIGKILL);

/// A child's exit status, once known.
#[derive(Debug, Default)]
pub(crate) struct End {
    state: Mutex<EndState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct EndState {
    status: Option<Ended>,
    /// The forkserver died before reporting this child.
    orphaned: bool,
    /// Threads waiting on `changed` (a std condvar's notify is a system
    /// call: only when someone waits).
    waiters: usize,
    /// An orphan's identity, read when the forkserver died (`None`: it had
    /// ended by then).
    ident: Option<ProcessIdent>,
}

impl End {
    /// An empty slot.
    pub(crate) fn new() -> Arc<End> {
        Arc::new(End::default())
    }

    /// Files the status (the first one wins) and wakes the waiters.
    pub(crate) fn fill(&self, status: Ended) {
        let mut st = lock(&self.state);
        st.status.get_or_insert(status);
        let wake = st.waiters > 0;
        // Notified after the unlock, so that a woken waiter does not find
        // the lock still held.
        drop(st);
        if wake {
            self.changed.notify_all();
        }
    }

    /// The report will never come: the forkserver died; `ident` is the
    /// child's identity read just after (`None`: it had ended).
    pub(crate) fn orphan(&self, ident: Option<ProcessIdent>) {
        let mut st = lock(&self.state);
        st.orphaned = true;
        st.ident = ident;
        let wake = st.waiters > 0;
        drop(st);
        if wake {
            self.changed.notify_all();
        }
    }
}

/// How the parent learns that the child ended.
#[derive(Debug)]
pub(crate) enum Watch {
    /// Our own child (fork, spawn): reaped by pid under the slot's lock.
    Own,
    /// A forkserver's child: the server's reports fill the slot.
    Server,
}

/// One started child, shared by its handle and the registry.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) group: bool,
    pub(crate) report: ReportSlot,
    pub(crate) end: Arc<End>,
    pub(crate) watch: Watch,
}

impl Child {
    /// The child's identity now: read while it is still our unreaped child
    /// (so its pid cannot have been reused), or as the forkserver sent it.
    /// `None` once it has ended.
    pub(crate) fn ident(&self) -> Option<ProcessIdent> {
        if self.ended().is_some() {
            return None;
        }
        // Under the lock with no status, our own child is unreaped: its pid
        // is still its own.
        let st = lock(&self.end.state);
        if st.status.is_some() {
            return None;
        }
        if st.orphaned {
            return st.ident;
        }
        ProcessIdent::of(self.pid)
    }

    /// The status, if the child has ended (reaping it if it just did).
    pub(crate) fn ended(&self) -> Option<Ended> {
        self.wait(false, None)
    }

    /// Waits until the child has ended (`block`) or `deadline` passes;
    /// without `block`, looks once. The status, once known.
    pub(crate) fn wait(&self, block: bool, deadline: Option<Instant>) -> Option<Ended> {
        let mut nap = Duration::from_micros(50);
        let mut st = lock(&self.end.state);
        loop {
            if let Some(status) = st.status {
                return Some(status);
            }
            if let Some(status) = self.look(&st) {
                st.status = Some(status);
                let wake = st.waiters > 0;
                drop(st);
                if wake {
                    self.end.changed.notify_all();
                }
                return Some(status);
            }
            if !block {
                return None;
            }
            let slice = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(SLICE),
                    _ => return None,
                },
                None => SLICE,
            };
            match &self.watch {
                Watch::Server if !st.orphaned => {
                    st.waiters += 1;
                    st = self
                        .end
                        .changed
                        .wait_timeout(st, slice)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    st.waiters -= 1;
                }
                Watch::Own => {
                    // Opened under the lock: the child is unreaped, so the
                    // pidfd is its own. Slept on outside it, so another
                    // thread may reap, signal or ask meanwhile.
                    let pidfd = self.pidfd_locked(&st);
                    drop(st);
                    match &pidfd {
                        Some(fd) => {
                            let _ = sys::wait_readable(std::os::fd::AsFd::as_fd(fd), Some(slice));
                        }
                        None => {
                            std::thread::sleep(nap.min(slice));
                            nap = (nap * 2).min(Duration::from_millis(5));
                        }
                    }
                    drop(pidfd);
                    st = lock(&self.end.state);
                }
                Watch::Server => {
                    drop(st);
                    std::thread::sleep(nap.min(slice));
                    nap = (nap * 2).min(Duration::from_millis(5));
                    st = lock(&self.end.state);
                }
            }
        }
    }

    /// A pidfd of our own child, opened while the caller holds the slot's
    /// lock and the slot is empty (so the child is unreaped and the pidfd
    /// names it); `None` for a forkserver's child or without pidfds.
    fn pidfd_locked(&self, st: &EndState) -> Option<std::os::fd::OwnedFd> {
        if st.status.is_some() || !matches!(self.watch, Watch::Own) {
            return None;
        }
        #[cfg(target_os = "linux")]
        return sys::pidfd_open(self.pid).ok();
        #[cfg(not(target_os = "linux"))]
        return None;
    }

    /// For the reaper: a pidfd to sleep on while the child runs (see
    /// [`pidfd_locked`](Child::pidfd_locked)).
    pub(crate) fn pidfd(&self) -> Option<std::os::fd::OwnedFd> {
        self.pidfd_locked(&lock(&self.end.state))
    }

    /// Reaps or probes once, under the slot's lock; the status if the child
    /// has ended.
    fn look(&self, st: &EndState) -> Option<Ended> {
        let reaped = match &self.watch {
            Watch::Own => sys::try_reap(self.pid),
            Watch::Server => {
                let gone = st.orphaned && st.ident.is_none_or(|i| i.has_ended());
                return gone.then_some(LOST);
            }
        };
        // ECHILD: someone reaped it behind our back (`waitpid(-1)` elsewhere
        // in the program); its status is lost.
        reaped.unwrap_or(Some(LOST))
    }
}
