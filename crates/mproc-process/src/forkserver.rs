//! The forkserver: a single-threaded helper, started on first use, that
//! forks children on request and reports how they ended.
//!
//! # Protocol
//!
//! The helper is this binary re-executed with `MPROC_BOOT=forkserver`; it
//! is reachable only through a socketpair it inherited — no file-system
//! name — so no other process can ask it to fork. A request is a
//! [`transfer`] message: the same boot bytes a spawned child decodes, with
//! the handles' descriptors attached by `SCM_RIGHTS`. The server forks, and
//! the child runs the target exactly as a spawned child would. The server
//! answers each request with `Started(pid)` (or `Failed`) and, when a child
//! ends, sends `Ended(pid, status)`: it is the children's parent, so it
//! reaps them (`waitpid(-1)` is right there: every child of the server is
//! one of ours), woken by SIGCHLD through a self-pipe.
//!
//! # Crash story
//!
//! The server dies with its client (`PR_SET_PDEATHSIG`, and end-of-stream
//! on the socket); daemon children die with the server. If the server
//! itself dies, the client's reader sees end-of-stream, children whose end
//! was not reported are treated as killed once they are gone, and the next
//! start launches a new server.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mproc_shm::transfer::{self, FdTable, Message};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::boot;
use crate::sys::{self, Ended};

#[derive(Serialize, Deserialize)]
enum Reply {
    Started(u32),
    Failed(String),
    Ended(u32, bool, i32),
}

#[derive(Default)]
struct State {
    replies: VecDeque<Result<u32, String>>,
    ended: HashMap<u32, Ended>,
    alive: bool,
}

/// The client's end of a running forkserver.
pub(crate) struct Server {
    pid: u32,
    owner: u32,
    sock: UnixStream,
    requests: Mutex<()>,
    state: Mutex<State>,
    changed: Condvar,
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
}

static SERVER: Mutex<Option<Arc<Server>>> = Mutex::new(None);

/// The running forkserver of this process, started (again) if needed.
pub(crate) fn get() -> io::Result<Arc<Server>> {
    let mut slot = SERVER.lock();
    if let Some(s) = &*slot {
        if s.owner == std::process::id() && s.state.lock().alive {
            return Ok(s.clone());
        }
    }
    let server = Server::start()?;
    *slot = Some(server.clone());
    Ok(server)
}

/// The pid of this process's forkserver, if one runs.
pub fn forkserver_pid() -> Option<u32> {
    let slot = SERVER.lock();
    slot.as_ref()
        .filter(|s| s.owner == std::process::id())
        .map(|s| s.pid)
}

/// Stops this process's forkserver, if one runs, and reaps it; the next
/// [`Forkserver`](crate::StartMethod::Forkserver) start launches a new one.
/// Runs at exit too. Children already started keep running.
pub fn stop_forkserver() {
    let server = {
        let mut slot = SERVER.lock();
        if slot.as_ref().is_some_and(|s| s.owner != std::process::id()) {
            // A forked child's copy of its parent's server: not ours to stop,
            // and forgetting it leaves the parent's state untouched.
            std::mem::forget(slot.take());
        }
        slot.take()
    };
    if let Some(s) = server {
        let _ = s.sock.shutdown(std::net::Shutdown::Both);
        if let Some(reader) = s.reader.lock().take() {
            let _ = reader.join();
        }
        let _ = sys::reap(s.pid, true);
    }
}

impl Server {
    fn start() -> io::Result<Arc<Server>> {
        let (ours, theirs) = UnixStream::pair()?;
        let reader_sock = ours.try_clone()?;
        let me = std::process::id();
        let exe = std::env::current_exe()?;
        let (pid_tx, pid_rx) = std::sync::mpsc::channel::<io::Result<u32>>();
        let (server_tx, server_rx) = std::sync::mpsc::channel::<std::sync::Weak<Server>>();
        // The server is started from its reader thread, which lives as long
        // as the server does: Linux sends the parent-death signal when the
        // *thread* that forked ends, so a server started from a short-lived
        // thread would die with it.
        let handle = std::thread::Builder::new()
            .name("mproc-forkserver".into())
            .spawn(move || {
                let spawned = launch(exe, theirs, me);
                let ok = spawned.is_ok();
                let _ = pid_tx.send(spawned);
                if let (true, Ok(weak)) = (ok, server_rx.recv()) {
                    read_replies(&reader_sock, &weak);
                }
            })?;
        let pid = match pid_rx.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(e)) => {
                let _ = handle.join();
                return Err(e);
            }
            Err(_) => {
                let _ = handle.join();
                return Err(io::Error::other("the forkserver's launcher thread died"));
            }
        };
        let server = Arc::new(Server {
            pid,
            owner: me,
            sock: ours,
            requests: Mutex::new(()),
            state: Mutex::new(State {
                alive: true,
                ..State::default()
            }),
            changed: Condvar::new(),
            reader: Mutex::new(Some(handle)),
        });
        let _ = server_tx.send(Arc::downgrade(&server));
        Ok(server)
    }

    /// Whether the server is still known to run.
    pub(crate) fn is_alive(&self) -> bool {
        self.state.lock().alive
    }

    /// Files one reply; `false` once the server is gone.
    fn record(&self, reply: io::Result<Reply>) -> bool {
        let mut st = self.state.lock();
        let alive = match reply {
            Ok(Reply::Started(pid)) => {
                st.replies.push_back(Ok(pid));
                true
            }
            Ok(Reply::Failed(why)) => {
                st.replies.push_back(Err(why));
                true
            }
            Ok(Reply::Ended(pid, signaled, n)) => {
                st.ended.insert(
                    pid,
                    if signaled {
                        Ended::Signaled(n)
                    } else {
                        Ended::Exited(n)
                    },
                );
                true
            }
            Err(_) => {
                st.alive = false;
                st.replies.push_back(Err("the forkserver died".into()));
                false
            }
        };
        self.changed.notify_all();
        alive
    }

    /// Asks the server to start a child from `msg`; returns its pid.
    pub(crate) fn fork(&self, msg: &Message) -> io::Result<u32> {
        let _one_at_a_time = self.requests.lock();
        transfer::send(&self.sock, msg)?;
        let mut st = self.state.lock();
        loop {
            if let Some(r) = st.replies.pop_front() {
                return r.map_err(io::Error::other);
            }
            self.changed.wait(&mut st);
        }
    }

    /// Waits until the server has reported child `pid`'s end (or has died,
    /// or `deadline` passed), without taking the report. `false` when the
    /// server is dead: the caller must watch the child itself.
    pub(crate) fn await_end(&self, pid: u32, deadline: Option<Instant>) -> bool {
        let mut st = self.state.lock();
        while st.alive && !st.ended.contains_key(&pid) {
            match deadline {
                None => self.changed.wait(&mut st),
                Some(d) => {
                    if self.changed.wait_until(&mut st, d).timed_out() {
                        break;
                    }
                }
            }
        }
        st.alive
    }

    /// How child `pid` ended, if the server has reported it (the report is
    /// taken). [`await_end`](Server::await_end) does the waiting.
    pub(crate) fn take_end(&self, pid: u32) -> Option<Ended> {
        let mut st = self.state.lock();
        if let Some(e) = st.ended.remove(&pid) {
            return Some(e);
        }
        if st.alive {
            return None;
        }
        // The server died before reporting: once the child is gone too,
        // call it killed.
        drop(st);
        (!sys::exists(pid)).then_some(Ended::Signaled(libc::SIGKILL))
    }
}

/// Starts the server process with its end of the socket.
fn launch(exe: std::path::PathBuf, theirs: UnixStream, me: u32) -> io::Result<u32> {
    let mut fds = FdTable::new();
    fds.push(OwnedFd::from(theirs));
    let mut cmd = Command::new(exe);
    cmd.env(boot::BOOT_ENV, "forkserver");
    // SAFETY: between fork and exec: prctl and getppid only.
    unsafe {
        cmd.pre_exec(move || sys::die_with_parent(me));
    }
    transfer::spawn_inheriting(&mut cmd, &fds).map(|c| c.id())
}

/// The reader thread: files replies until the server goes away. It holds
/// the server weakly, so the server's last handle closes the socket.
fn read_replies(sock: &UnixStream, server: &std::sync::Weak<Server>) {
    loop {
        let reply = transfer::recv(sock)
            .and_then(|m| transfer::decode::<Reply>(m).map_err(io::Error::from));
        let Some(server) = server.upgrade() else {
            return;
        };
        if !server.record(reply) {
            return;
        }
    }
}

static CHLD_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = CHLD_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write is async-signal-safe; a full pipe simply drops it.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// The server's main loop; runs in the re-executed helper and never returns.
pub(crate) fn serve(mut fds: FdTable) -> ! {
    let Some(sock) = fds.iter().next().and_then(|f| f.try_clone_to_owned().ok()) else {
        sys::exit_now(70)
    };
    drop(std::mem::take(&mut fds));
    let sock = UnixStream::from(sock);
    let me = std::process::id();
    let (wake_r, wake_w) = match sys::pipe() {
        Ok(p) => p,
        Err(_) => sys::exit_now(70),
    };
    CHLD_PIPE.store(wake_w.as_raw_fd(), Ordering::Relaxed);
    sys::on_signal(libc::SIGCHLD, on_sigchld);
    loop {
        match sys::poll2(sock.as_fd(), wake_r.as_fd()) {
            Ok((request, exited)) => {
                if exited {
                    sys::drain(wake_r.as_fd());
                    while let Some((pid, ended)) = sys::reap_any() {
                        let (sig, n) = match ended {
                            Ended::Exited(c) => (false, c),
                            Ended::Signaled(s) => (true, s),
                        };
                        if send(&sock, &Reply::Ended(pid, sig, n)).is_err() {
                            sys::exit_now(0);
                        }
                    }
                }
                if request {
                    let msg = match transfer::recv(&sock) {
                        Ok(m) => m,
                        // The client is gone: so are we.
                        Err(_) => sys::exit_now(0),
                    };
                    // SAFETY: the server is single-threaded.
                    match unsafe { sys::fork() } {
                        Ok(0) => {
                            sys::on_signal_default(libc::SIGCHLD);
                            drop(sock);
                            drop(wake_r);
                            drop(wake_w);
                            let code =
                                boot::run_boot(&msg.bytes, msg.fds, me).unwrap_or_else(|e| {
                                    eprintln!("mproc: forkserver child failed to boot: {e}");
                                    70
                                });
                            boot::finish(code)
                        }
                        Ok(pid) => {
                            drop(msg);
                            if send(&sock, &Reply::Started(pid)).is_err() {
                                sys::exit_now(0);
                            }
                        }
                        Err(e) => {
                            if send(&sock, &Reply::Failed(e.to_string())).is_err() {
                                sys::exit_now(0);
                            }
                        }
                    }
                }
            }
            Err(_) => sys::exit_now(70),
        }
    }
}

fn send(sock: &UnixStream, reply: &Reply) -> io::Result<()> {
    transfer::send(sock, &transfer::encode(reply).map_err(io::Error::from)?)
}
