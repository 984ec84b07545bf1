//! Helpers shared by mproc's cross-process suites and their child fixtures.
//!
//! - [`LeakCheck`] snapshots what a test could leak (child processes, open
//!   descriptors, names in `/dev/shm`) and asserts none is left at the end.
//! - [`TempDir`] is a uniquely named directory removed on drop.
//! - [`hex`] / [`unhex`] carry transfer bytes on a command line.
//! - [`redis::RedisServer`] is a private redis-server for one test.

pub mod redis;

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout};
use std::sync::atomic::{AtomicU32, Ordering};

/// A unique, short name for something created on the system: prefix, pid and
/// a counter, at most 30 bytes (macOS's limit for shm names).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    assert!(name.len() <= 30, "name too long: {name}");
    name
}

/// A directory under the system temp dir, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory.
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the entries now in the directory, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.path)
            .expect("read temp dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses [`hex`] output.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// In a child fixture: the handles its parent passed with
/// `mproc::shm::transfer::spawn_inheriting`, the transfer bytes given as
/// `hex` (descriptors named in `MPROC_INHERITED_FDS`).
///
/// # Panics
///
/// On malformed input: fixtures are test code, and a panic fails the test.
pub fn inherited<T: serde::de::DeserializeOwned>(hex: &str) -> T {
    use mproc::shm::transfer;
    // SAFETY: fixtures call this once at start-up, when the listed
    // descriptors are exactly the ones the parent handed over and nothing in
    // this process owns them yet.
    let fds = unsafe { transfer::FdTable::from_env() }.expect("inherited fds");
    let bytes = unhex(hex).expect("hex payload");
    transfer::decode(transfer::Message { bytes, fds }).expect("decode inherited handles")
}

/// In a child fixture: prints one line to stdout and flushes it at once,
/// so the parent reading it line by line sees it now.
pub fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Reads a child's stdout line by line.
#[derive(Debug)]
pub struct Lines {
    inner: BufReader<ChildStdout>,
}

impl Lines {
    /// Takes the piped stdout of `child`.
    pub fn of(child: &mut Child) -> Lines {
        Lines {
            inner: BufReader::new(child.stdout.take().expect("child stdout must be piped")),
        }
    }

    /// The next line without its newline, or `None` at end of stream.
    pub fn next_line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.inner.read_line(&mut s) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(s.trim_end_matches('\n').to_owned()),
        }
    }
}

/// What a test could leave behind, taken before it starts.
///
/// `assert_clean` fails when the test process has a child left (running or
/// zombie), holds more descriptors than at the start (checked only when each
/// test has a process to itself, as under nextest), or when `/dev/shm` holds
/// a new name made by this process.
#[derive(Debug)]
pub struct LeakCheck {
    fds: Option<BTreeSet<String>>,
    shm: BTreeSet<String>,
}

impl LeakCheck {
    /// Snapshots the current state.
    pub fn start() -> LeakCheck {
        // A process that starts children keeps one descriptor for as long as
        // it lives: the arena of the children's panic reports. Make it
        // before the snapshot, so that it does not count as a leak.
        let mut warm = mproc::Process::new(noop, ()).start_method(mproc::StartMethod::Fork);
        warm.start().expect("start a warm-up child");
        warm.join().expect("join the warm-up child");
        LeakCheck {
            fds: process_per_test().then(open_fds),
            shm: shm_names(),
        }
    }

    /// Asserts that nothing was leaked since [`start`](LeakCheck::start).
    #[track_caller]
    pub fn assert_clean(self) {
        // The forkserver lives as long as this process; stop it (it is
        // reaped, its socket closed) so that what is left is a leak.
        mproc::process::stop_forkserver();
        // So does the server that hands out the handles of items put in
        // queues.
        mproc::shm::handoff::stop_server();
        let kids = children_of(std::process::id());
        assert!(
            kids.is_empty(),
            "children left behind (pid, state): {kids:?}"
        );
        if let Some(before) = self.fds {
            let after = open_fds();
            let leaked: Vec<_> = after.difference(&before).collect();
            assert!(leaked.is_empty(), "descriptors leaked: {leaked:?}");
        }
        // Other tests run at the same time in other processes: only names
        // that carry this process's pid are ours (`unique_name` puts it in
        // decimal, `SharedMemory::create_unique` in hex).
        let pid = std::process::id();
        let (dec, hex) = (format!("-{pid}-"), format!("mp-{pid:x}."));
        let new: Vec<_> = shm_names()
            .difference(&self.shm)
            .filter(|n| n.contains(&dec) || n.starts_with(&hex))
            .cloned()
            .collect();
        assert!(new.is_empty(), "names left in /dev/shm: {new:?}");
    }
}

fn noop(_: ()) {}

fn process_per_test() -> bool {
    std::env::var_os("NEXTEST_RUN_ID").is_some()
}

fn open_fds() -> BTreeSet<String> {
    let dir = if Path::new("/proc/self/fd").exists() {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    let mut set = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let target = std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            set.insert(format!("{} -> {target}", e.file_name().to_string_lossy()));
        }
    }
    // The handle read_dir itself opened points into /proc; it is not ours.
    set.retain(|s| !s.contains("/proc/"));
    set
}

fn shm_names() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The children of `pid` with their state letter (`Z` for a zombie), read
/// from `/proc`. Empty where `/proc` does not exist.
pub fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may contain spaces.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut fields = rest.split(' ');
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == pid {
            out.push((child, state));
        }
    }
    out
}

/// The state letter of a `/proc/…/stat` line (`R`, `S`, `T`, `Z`, …): the
/// field after the command name, which is in parentheses and may contain
/// spaces.
fn state_letter(stat: &str) -> Option<char> {
    let i = stat.rfind(')')?;
    stat[i + 1..].trim_start().chars().next()
}

/// Whether process `pid` exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        if Path::new("/proc/self").exists() {
            return false; // no such process
        }
        // No /proc (macOS): existence is all we can tell.
        // SAFETY: signal 0 checks existence only.
        return unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    };
    !matches!(state_letter(&stat), Some('Z') | Some('X'))
}

/// SIGSTOPs process `pid` (one the test started) and returns once every
/// thread of it has stopped (Linux: each thread's state in `/proc` is `T`;
/// elsewhere once the signal is sent). `kill` returns as soon as the signal
/// is queued, and one thread takes it: on a busy machine the others keep
/// running until that thread is scheduled and stops them all — a stopped
/// Redis worker's host thread completed a task after `kill` had returned.
///
/// # Panics
///
/// When `kill` fails, or the process has not stopped within 20 s.
pub fn stop_process(pid: u32) {
    // SAFETY: kill takes a pid and a signal number; it touches no memory.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    assert_eq!(r, 0, "SIGSTOP {pid}: {}", io::Error::last_os_error());
    let task_dir = format!("/proc/{pid}/task");
    if !Path::new(&task_dir).exists() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let states: Vec<char> = std::fs::read_dir(&task_dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                    .filter_map(|stat| state_letter(&stat))
                    .collect()
            })
            .unwrap_or_default();
        if !states.is_empty() && states.iter().all(|&c| c == 'T' || c == 't') {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} did not stop within 20 s: thread states {states:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Sends `signal` to our own child `child` (by its pid).
pub fn signal(child: &Child, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: kill takes a pid and a signal number; it touches no memory.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A blocking call running on a thread of its own, so that a test can act
/// (kill a process, say) while the call blocks, and then see when it
/// returned.
#[derive(Debug)]
pub struct Blocked<R> {
    handle: std::thread::JoinHandle<(R, std::time::Instant)>,
    tid: std::sync::Arc<AtomicU32>,
}

/// Runs `op` on a new thread; see [`Blocked`].
pub fn blocked<R: Send + 'static>(op: impl FnOnce() -> R + Send + 'static) -> Blocked<R> {
    let tid = std::sync::Arc::new(AtomicU32::new(0));
    let t = tid.clone();
    let handle = std::thread::spawn(move || {
        t.store(thread_id(), Ordering::SeqCst);
        let r = op();
        (r, std::time::Instant::now())
    });
    Blocked { handle, tid }
}

#[cfg(target_os = "linux")]
fn thread_id() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    (unsafe { libc::gettid() }) as u32
}

#[cfg(not(target_os = "linux"))]
fn thread_id() -> u32 {
    0
}

impl<R> Blocked<R> {
    /// Returns once the call sleeps in the kernel (Linux: the thread's state
    /// in `/proc` is `S`), so that what the test does next happens while it
    /// sleeps. Elsewhere it returns at once.
    ///
    /// # Panics
    ///
    /// When the thread is not seen asleep within 20 s.
    pub fn asleep(&self) {
        if !cfg!(target_os = "linux") {
            return;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let tid = self.tid.load(Ordering::SeqCst);
            if tid != 0 {
                let stat = std::fs::read_to_string(format!(
                    "/proc/{}/task/{tid}/stat",
                    std::process::id()
                ))
                .unwrap_or_default();
                if state_letter(&stat) == Some('S') {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the blocking call never slept"
            );
            std::thread::yield_now();
        }
    }

    /// The call's result and the instant it returned.
    ///
    /// # Panics
    ///
    /// When the call panicked.
    pub fn finish(self) -> (R, std::time::Instant) {
        self.handle.join().expect("the blocking call panicked")
    }
}

/// Runs `target` in a child that must SIGKILL itself at a kill point
/// (configured by the target); returns the instant it was reaped, just after
/// its death.
///
/// # Panics
///
/// When the child cannot be started or did not die by SIGKILL.
pub fn dies<F, M>(target: F, args: F::Args) -> std::time::Instant
where
    F: mproc::call::Callable<M, Output = ()>,
    F::Args: serde::Serialize + serde::de::DeserializeOwned,
    M: 'static,
{
    let mut p = mproc::Process::new(target, args);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(
        p.exitcode(),
        Some(-9),
        "the child never reached its kill point"
    );
    std::time::Instant::now()
}

/// Runs `f` on a thread and fails the test if it has not returned within
/// `limit` (the thread is left behind; the test fails anyway).
///
/// # Panics
///
/// When `f` has not returned by then.
pub fn returns_within<T: Send + 'static>(
    what: &str,
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}
