//! Who this process is, and which children it started.
//!
//! Every started child is recorded here until it is reaped. A child is
//! reaped by `join`, by `is_alive` or a dropped handle once it has ended,
//! by [`active_children`], by the next `start`, in the background once
//! [detached](crate::Process::detach), and at exit by the exit rules:
//! non-daemon children are joined; daemon children get SIGTERM, then SIGKILL
//! after [`DAEMON_EXIT_GRACE`] if they are still there, and are reaped
//! (CPython's rules, with a bound). Reaping is always of our own children
//! (by pidfd or pid), never `waitpid(-1)`.
//!
//! The registry lives in a [`PerProcess`]: a forked child starts with an
//! empty one of its own and never touches its parent's locks.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mproc_shm::ProcessIdent;
use nix::sys::signal::Signal;

use crate::child::Child;
use crate::state::lock;
use crate::state::PerProcess;
use crate::sys;

/// How long the exit rules give a daemon child between SIGTERM and SIGKILL.
///
/// CPython terminates daemon children at exit and then joins them without a
/// bound, so a daemon that ignores SIGTERM hangs its parent's exit. Here a
/// parent's exit waits at most this long for its daemons (plus the time
/// SIGKILL takes).
pub const DAEMON_EXIT_GRACE: Duration = Duration::from_secs(1);

/// What is known about a process: its name, pid, whether it is a daemon,
/// and — to tell it apart from a later process with the same pid — its
/// start time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The name given at creation (default `Process-N`), or `MainProcess`.
    pub name: String,
    /// The OS process id.
    pub pid: u32,
    /// Whether the process is a daemon.
    pub daemon: bool,
    /// Pid and start time; `None` when the process had already ended when
    /// this was taken.
    ident: Option<ProcessIdent>,
}

impl ProcessInfo {
    /// Whether the process is still running (not ended, not a zombie). A
    /// later process that reuses the pid is not this one: the start time
    /// tells them apart. From a child, `parent_process().is_alive()` tells
    /// whether the parent is still there (CPython's scenario of a grandchild
    /// that watches its parent die).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(mproc_process::current_process().is_alive());
    /// ```
    pub fn is_alive(&self) -> bool {
        self.ident.is_some_and(|i| !i.has_ended())
    }
}

/// Who this process is, when mproc started it.
struct Me {
    name: String,
    daemon: bool,
    parent: ProcessInfo,
}

/// Detached children, and whether the reaper thread runs.
#[derive(Default)]
struct Reaper {
    list: Vec<Arc<Child>>,
    running: bool,
}

struct Registry {
    me: Mutex<Option<Me>>,
    children: Mutex<Vec<Arc<Child>>>,
    reaper: Mutex<Reaper>,
}

static REGISTRY: PerProcess<Registry> = PerProcess::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn registry() -> &'static Registry {
    REGISTRY.get(fresh_registry)
}

fn fresh_registry() -> Registry {
    Registry {
        me: Mutex::new(None),
        children: Mutex::new(Vec::new()),
        reaper: Mutex::new(Reaper::default()),
    }
}

/// The next default name, `Process-N`.
pub(crate) fn next_name() -> String {
    format!("Process-{}", COUNTER.fetch_add(1, Ordering::Relaxed) + 1)
}

/// Records a started child.
pub(crate) fn add(child: Arc<Child>) {
    lock(&registry().children).push(child);
}

/// Forgets a child that has been reaped.
pub(crate) fn forget(child: &Arc<Child>) {
    lock(&registry().children).retain(|c| !Arc::ptr_eq(c, child));
}

/// Forgets children that have been reaped; reaps those that ended.
pub(crate) fn cleanup() {
    lock(&registry().children).retain(|child| child.ended().is_none());
}

/// The children's part of the exit rules: daemon children get SIGTERM,
/// then SIGKILL after [`DAEMON_EXIT_GRACE`], and are reaped; the others are
/// joined.
pub(crate) fn settle_children() {
    let list = std::mem::take(&mut *lock(&registry().children));
    let daemons: Vec<&Arc<Child>> = list
        .iter()
        .filter(|c| c.daemon && c.ended().is_none())
        .collect();
    if !daemons.is_empty() {
        for d in &daemons {
            let _ = sys::signal(d.pid, Signal::SIGTERM, d.group);
        }
        let deadline = Instant::now() + DAEMON_EXIT_GRACE;
        for d in &daemons {
            if d.wait(true, Some(deadline)).is_none() {
                let _ = sys::signal(d.pid, Signal::SIGKILL, d.group);
            }
        }
    }
    for child in &list {
        child.wait(true, None);
        // What it wrote reaches our stdout before we go.
        child.output_done();
    }
}

/// Makes a forked child's registry ahead, in the parent (see
/// `PerProcess::ready_for_fork`).
pub(crate) fn ready_for_fork() {
    REGISTRY.ready_for_fork(fresh_registry);
}

/// Who a child is: made before a fork by the parent, so that the forked
/// child allocates nothing on its way in.
pub(crate) struct ChildMe(Me);

impl ChildMe {
    pub(crate) fn new(name: &str, daemon: bool, parent: ProcessInfo) -> ChildMe {
        ChildMe(Me {
            name: name.to_owned(),
            daemon,
            parent,
        })
    }
}

/// Called in a new child before its target runs: who it is and who its
/// parent is. (A forked child's registry is already a fresh one.)
pub(crate) fn become_child(me: ChildMe) {
    *lock(&registry().me) = Some(me.0);
}

/// Information about a parent: `ident` is its packed identity.
pub(crate) fn parent_info(name: String, pid: u32, ident: u64) -> ProcessInfo {
    ProcessInfo {
        name,
        pid,
        daemon: false,
        ident: ProcessIdent::from_bits(ident),
    }
}

/// This process: its name (`MainProcess` unless mproc started it), pid and
/// daemon flag.
///
/// # Examples
///
/// ```
/// let me = mproc_process::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    let ident = Some(ProcessIdent::current());
    let pid = crate::sys::my_pid();
    match &*lock(&registry().me) {
        Some(me) => ProcessInfo {
            name: me.name.clone(),
            pid,
            daemon: me.daemon,
            ident,
        },
        None => ProcessInfo {
            name: "MainProcess".to_owned(),
            pid,
            daemon: false,
            ident,
        },
    }
}

/// The process that started this one with mproc, or `None` in a main
/// process. [`ProcessInfo::is_alive`] tells whether it still runs.
pub fn parent_process() -> Option<ProcessInfo> {
    lock(&registry().me).as_ref().map(|me| me.parent.clone())
}

/// The children started by this process that are still running. Finished
/// ones are reaped on the way, as in CPython.
pub fn active_children() -> Vec<ProcessInfo> {
    cleanup();
    let list: Vec<Arc<Child>> = lock(&registry().children).clone();
    list.iter()
        .map(|child| ProcessInfo {
            name: child.name.clone(),
            pid: child.pid,
            daemon: child.daemon,
            ident: child.ident(),
        })
        .collect()
}

/// The number of CPUs this process may use (`available_parallelism`), at
/// least 1.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Hands a child whose handle is gone to the reaper: a thread, running
/// while there are detached children, that reaps each as it ends.
pub(crate) fn detach(child: Arc<Child>) {
    let reg = registry();
    let mut r = lock(&reg.reaper);
    r.list.push(child);
    if r.running {
        return;
    }
    let started = std::thread::Builder::new()
        .name("mproc-reaper".into())
        .stack_size(64 << 10)
        .spawn(move || reap_detached(reg));
    // Without a thread the children are still reaped: by the next start,
    // `active_children`, and the exit rules.
    r.running = started.is_ok();
}

/// The reaper thread: waits for any detached child to end (on their pidfds
/// where there are some, else in slices), reaps and forgets it; ends when
/// none is left.
fn reap_detached(reg: &'static Registry) {
    loop {
        let waiting: Vec<Arc<Child>> = {
            let mut r = lock(&reg.reaper);
            r.list.retain(|c| {
                let done = c.ended().is_some();
                if done {
                    lock(&reg.children).retain(|x| !Arc::ptr_eq(x, c));
                }
                !done
            });
            if r.list.is_empty() {
                r.running = false;
                return;
            }
            r.list.clone()
        };
        // Our own children's pidfds (Linux); elsewhere, and for forkserver
        // children, the slice's timeout.
        let pidfds: Vec<std::os::fd::OwnedFd> = waiting.iter().filter_map(|c| c.pidfd()).collect();
        let fds: Vec<std::os::fd::BorrowedFd<'_>> =
            pidfds.iter().map(std::os::fd::AsFd::as_fd).collect();
        let _ = sys::wait_any_readable(&fds, crate::child::SLICE);
    }
}
