//! Who this process is, and which children it started.
//!
//! Every started child is recorded here until it is reaped. A child is
//! reaped by `join`, by `is_alive` or a dropped handle once it has ended,
//! by [`active_children`], by the next `start`, and at exit by the exit
//! rules: non-daemon children are joined, daemon children are terminated
//! and reaped (CPython's rules). Reaping is always by our own pid, never
//! `waitpid(-1)`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Once};

use parking_lot::Mutex;

use crate::sys::{self, Ended};

/// What is known about a process: its name, pid, and whether it is a daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The name given at creation (default `Process-N`), or `MainProcess`.
    pub name: String,
    /// The OS process id.
    pub pid: u32,
    /// Whether the process is a daemon.
    pub daemon: bool,
}

struct Me {
    name: String,
    daemon: bool,
    parent: Option<ProcessInfo>,
    /// Forked children inherit the parent's registry; they clear it, and
    /// this pid tells stale state from ours.
    pid: u32,
}

static ME: Mutex<Option<Me>> = Mutex::new(None);

/// One started child, shared by its handle and the registry.
pub(crate) struct Child {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) group: bool,
    pub(crate) report: crate::report::ReportSlot,
    pub(crate) ended: Mutex<Option<Ended>>,
    /// The forkserver that is this child's parent, if one is.
    pub(crate) via: Option<Arc<crate::forkserver::Server>>,
}

impl Child {
    /// Reaps the child if it has ended (or, with `block`, when it ends).
    pub(crate) fn poll(&self, block: bool) -> Option<Ended> {
        self.poll_until(block, None)
    }

    /// Reaps the child if it ends before `deadline` (with `block`).
    ///
    /// The lock on `ended` is held only to reap, never while waiting, so a
    /// thread blocked in `join` does not stop another from signalling the
    /// child (a pool's watcher joins while the pool may kill).
    pub(crate) fn poll_until(
        &self,
        block: bool,
        deadline: Option<std::time::Instant>,
    ) -> Option<Ended> {
        let mut nap = std::time::Duration::from_micros(50);
        loop {
            {
                let mut ended = self.ended.lock();
                if ended.is_none() {
                    *ended = match &self.via {
                        Some(server) => server.take_end(self.pid),
                        None => sys::reap(self.pid, false).ok().flatten(),
                    };
                }
                if ended.is_some() || !block {
                    return *ended;
                }
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return None;
            }
            match &self.via {
                // A dead server's children are watched by their pid.
                Some(server) if server.await_end(self.pid, deadline) => {}
                Some(_) => std::thread::sleep(nap),
                None => sys::await_exit(self.pid, deadline, nap),
            }
            nap = (nap * 2).min(std::time::Duration::from_millis(5));
        }
    }
}

struct Children {
    owner: u32,
    list: Vec<Arc<Child>>,
}

static CHILDREN: Mutex<Children> = Mutex::new(Children {
    owner: 0,
    list: Vec::new(),
});
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The next default name, `Process-N`.
pub(crate) fn next_name() -> String {
    format!("Process-{}", COUNTER.fetch_add(1, Ordering::Relaxed) + 1)
}

/// Records a started child and makes sure the exit rules run at exit.
pub(crate) fn add(child: Arc<Child>) {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| sys::at_exit(run_exit_rules));
    let mut c = CHILDREN.lock();
    let me = std::process::id();
    if c.owner != me {
        c.owner = me;
        c.list.clear();
    }
    c.list.push(child);
}

/// Forgets a child that has been reaped.
pub(crate) fn forget(pid: u32) {
    let mut c = CHILDREN.lock();
    c.list.retain(|child| child.pid != pid);
}

/// Forgets children that have been reaped; reaps those that ended.
pub(crate) fn cleanup() {
    let mut c = CHILDREN.lock();
    if c.owner != std::process::id() {
        return;
    }
    c.list.retain(|child| child.poll(false).is_none());
}

extern "C" fn run_exit_rules() {
    exit_rules();
}

/// CPython's exit rules: terminate and reap daemon children, join the others.
pub(crate) fn exit_rules() {
    let list = {
        let mut c = CHILDREN.lock();
        if c.owner != std::process::id() {
            return;
        }
        std::mem::take(&mut c.list)
    };
    for child in list.iter().filter(|c| c.daemon) {
        if child.poll(false).is_none() {
            let _ = sys::signal(child.pid, libc::SIGTERM, child.group);
        }
    }
    for child in &list {
        child.poll(true);
    }
    crate::forkserver::stop_forkserver();
}

/// Called in a new child: who it is and who its parent was; forgets the
/// parent's children (a forked copy).
pub(crate) fn become_child(name: &str, daemon: bool, parent_pid: u32, parent_name: &str) {
    // A forked child's copies of the parent's records are forgotten, not
    // dropped: dropping would write to (and so copy) the pages they share
    // with the parent, for nothing.
    {
        let mut c = CHILDREN.lock();
        c.owner = std::process::id();
        std::mem::forget(std::mem::take(&mut c.list));
    }
    let old = ME.lock().replace(Me {
        name: name.to_owned(),
        daemon,
        parent: Some(ProcessInfo {
            name: parent_name.to_owned(),
            pid: parent_pid,
            daemon: false,
        }),
        pid: std::process::id(),
    });
    std::mem::forget(old);
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
    let pid = std::process::id();
    match &*ME.lock() {
        Some(me) if me.pid == pid => ProcessInfo {
            name: me.name.clone(),
            pid,
            daemon: me.daemon,
        },
        _ => ProcessInfo {
            name: "MainProcess".to_owned(),
            pid,
            daemon: false,
        },
    }
}

/// The process that started this one with mproc, or `None` in a main
/// process.
pub fn parent_process() -> Option<ProcessInfo> {
    match &*ME.lock() {
        Some(me) if me.pid == std::process::id() => me.parent.clone(),
        _ => None,
    }
}

/// The children started by this process that are still running. Finished
/// ones are reaped on the way, as in CPython.
pub fn active_children() -> Vec<ProcessInfo> {
    cleanup();
    let c = CHILDREN.lock();
    c.list
        .iter()
        .map(|child| ProcessInfo {
            name: child.name.clone(),
            pid: child.pid,
            daemon: child.daemon,
        })
        .collect()
}

/// The number of CPUs this process may use (`available_parallelism`), at
/// least 1.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
