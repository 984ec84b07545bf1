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
    /// Tasks awaiting a forkserver's child, woken when its report (or the
    /// server's death) is filed.
    #[cfg(feature = "async")]
    wakers: Vec<std::task::Waker>,
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
        #[cfg(feature = "async")]
        let tasks = std::mem::take(&mut st.wakers);
        // Notified after the unlock, so that a woken waiter does not find
        // the lock still held.
        drop(st);
        if wake {
            self.changed.notify_all();
        }
        #[cfg(feature = "async")]
        tasks.into_iter().for_each(std::task::Waker::wake);
    }

    /// The report will never come: the forkserver died; `ident` is the
    /// child's identity read just after (`None`: it had ended).
    pub(crate) fn orphan(&self, ident: Option<ProcessIdent>) {
        let mut st = lock(&self.state);
        st.orphaned = true;
        st.ident = ident;
        let wake = st.waiters > 0;
        #[cfg(feature = "async")]
        let tasks = std::mem::take(&mut st.wakers);
        drop(st);
        if wake {
            self.changed.notify_all();
        }
        #[cfg(feature = "async")]
        tasks.into_iter().for_each(std::task::Waker::wake);
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
    /// How it was started (for the exit event).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) method: crate::StartMethod,
    /// The reader of its forwarded output, until it has been waited for.
    pub(crate) output: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Its end was told to `tracing` (once, by whoever saw it first).
    #[cfg(feature = "tracing")]
    pub(crate) told: std::sync::atomic::AtomicBool,
}

impl Child {
    /// Waits for the reader of its forwarded output, if any (once the
    /// child has ended, the reader stops within a slice).
    pub(crate) fn output_done(&self) {
        let reader = lock(&self.output).take();
        if let Some(reader) = reader {
            let _ = reader.join();
        }
    }

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
        let ended = self.wait_inner(block, deadline);
        #[cfg(feature = "tracing")]
        if let Some(status) = ended {
            if !self.told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::info!(
                    target: "mproc::process",
                    pid = self.pid,
                    name = %self.name,
                    method = ?self.method,
                    exit_code = status.code(),
                    "process exited"
                );
            }
        }
        ended
    }

    fn wait_inner(&self, block: bool, deadline: Option<Instant>) -> Option<Ended> {
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

/// What an awaiting future keeps between polls.
#[cfg(feature = "async")]
#[derive(Debug, Default)]
pub(crate) struct AsyncWait {
    registration: Option<mproc_shm::waker::Registration>,
    /// Our own child's pidfd, in the current tokio runtime's reactor.
    #[cfg(all(feature = "tokio", target_os = "linux"))]
    pidfd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

/// Which condition of a child a watcher thread waits for.
#[cfg(feature = "async")]
const EXIT: u32 = 0x6578_6974;

#[cfg(feature = "async")]
impl Child {
    /// The status once the child has ended, else arranges for the task to
    /// be woken when it does:
    ///
    /// - a forkserver's child: the client's reader thread, which files the
    ///   server's report, wakes the task (no thread of ours waits);
    /// - our own child under a tokio runtime (the `tokio` feature, Linux):
    ///   its pidfd in the runtime's reactor (`AsyncFd`);
    /// - otherwise (our own child without tokio, macOS, a forkserver's
    ///   orphan): a watcher thread per child sleeps in the blocking wait
    ///   (`mproc_shm::waker`).
    pub(crate) fn poll_ended(
        self: &Arc<Self>,
        cx: &mut std::task::Context<'_>,
        wait: &mut AsyncWait,
    ) -> std::task::Poll<Ended> {
        use std::task::Poll;
        if let Some(status) = self.ended() {
            return Poll::Ready(status);
        }
        if let Watch::Server = self.watch {
            let mut st = lock(&self.end.state);
            if let Some(status) = st.status {
                return Poll::Ready(status);
            }
            if !st.orphaned {
                if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    st.wakers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
        #[cfg(all(feature = "tokio", target_os = "linux"))]
        if let Some(poll) = self.poll_pidfd(cx, wait) {
            return poll;
        }
        let child = self.clone();
        let key = mproc_shm::waker::Key {
            object: self.pid as usize,
            condition: EXIT,
        };
        mproc_shm::waker::wake_when(
            &mut wait.registration,
            key,
            cx.waker(),
            Arc::new(move |d| child.wait(true, Instant::now().checked_add(d)).is_some()),
        );
        Poll::Pending
    }

    /// Waits on our own child's pidfd in the current tokio runtime; `None`
    /// when that does not apply (no runtime, a forkserver's child, no
    /// pidfd): the caller falls back to a watcher thread.
    #[cfg(all(feature = "tokio", target_os = "linux"))]
    fn poll_pidfd(
        &self,
        cx: &mut std::task::Context<'_>,
        wait: &mut AsyncWait,
    ) -> Option<std::task::Poll<Ended>> {
        use std::task::Poll;
        use tokio::io::unix::AsyncFd;
        use tokio::io::Interest;
        // A runtime built without its IO driver makes tokio panic at
        // registration; that is caught once, and from then on this process
        // uses watcher threads.
        static NO_REACTOR: std::sync::atomic::AtomicBool =
            std::sync::atomic::AtomicBool::new(false);
        if wait.pidfd.is_none() {
            if NO_REACTOR.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            tokio::runtime::Handle::try_current().ok()?;
            let fd = self.pidfd()?;
            let registered = std::panic::catch_unwind(move || {
                // SAFETY: an `OwnedFd` is an open descriptor that stays
                // open, and is the same descriptor, for as long as it is
                // owned — here by the `AsyncFd`, until it is dropped.
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            });
            match registered {
                Ok(r) => wait.pidfd = Some(r.ok()?),
                Err(_) => {
                    NO_REACTOR.store(true, std::sync::atomic::Ordering::Relaxed);
                    return None;
                }
            }
        }
        let fd = wait.pidfd.as_ref()?;
        loop {
            match fd.poll_read_ready(cx) {
                Poll::Pending => return Some(Poll::Pending),
                Poll::Ready(Err(_)) => {
                    wait.pidfd = None;
                    return None;
                }
                Poll::Ready(Ok(mut ready)) => {
                    // Readable: the child has exited; reap it.
                    if let Some(status) = self.ended() {
                        return Some(Poll::Ready(status));
                    }
                    ready.clear_ready();
                }
            }
        }
    }
}
