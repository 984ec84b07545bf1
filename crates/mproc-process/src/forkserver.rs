//! The forkserver: a single-threaded helper, started on first use, that
//! forks children on request and reports how they ended.
//!
//! # Protocol
//!
//! The helper is this binary re-executed with `MPROC_BOOT=forkserver`; it
//! is reachable only through a socketpair it inherited — no file-system
//! name — so no other process can ask it to fork. A request is a
//! [`transfer`] message: the same boot bytes a spawned child decodes, with
//! the handles' descriptors attached by `SCM_RIGHTS`. For each request the
//! server
//!
//! 1. reads it (kill point `forkserver.request-read`);
//! 2. forks; the child waits on a *gate* pipe before it does anything;
//! 3. answers `Started(pid)` (points `forkserver.forked` before,
//!    `forkserver.started-sent` after);
//! 4. opens the gate: the child runs the target exactly as a spawned child
//!    would.
//!
//! When a child ends, the server (its parent) reaps it — `waitpid(-1)` is
//! right there: every child of the server is one of ours — woken by SIGCHLD
//! through a self-pipe, and sends `Ended(pid, status)`.
//!
//! The client's reader thread files each `Started` with a fresh exit-status
//! slot and each `Ended` into its slot, removing the entry: nothing is ever
//! left behind. The pid is an exact key here, incarnation included: the
//! server reports a child's end before it can reap it, so before any later
//! child can get its pid, and the reader files the replies in order — the
//! entry for a pid lives exactly from its child's `Started` to that child's
//! `Ended`. (The old table kept statuses nobody had taken yet, so a later
//! child with a reused pid could be handed one.)
//!
//! # Crash story
//!
//! The gate makes a start happen at most once. If the server dies before
//! the client has `Started`, the child (if it was forked at all) sees the
//! gate's end of file and exits without running anything, so the client
//! may safely ask a new server; if it dies after, the client has the child's
//! identity and watches it until it is gone (its status is lost with the
//! server and reads as killed, -9).
//!
//! The server dies with its client: when the client process is gone, its
//! end of the socket closes and the server exits — after finishing the
//! request in hand, so a child whose `Started` was sent always gets through
//! its gate. (No parent-death signal, which could kill the server between
//! `Started` and the gate.) Only the client holds its end: spawned children
//! exec without it, and a forked child of the client closes its copy first
//! thing. Whenever the reader stops — the server died, or the client stopped
//! it — the reader SIGKILLs the server (a no-op if it is already gone) and
//! reaps it: no zombie is left, and the next start launches a new server.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use mproc_shm::fault;
use mproc_shm::transfer::{self, FdTable, Message};
use mproc_shm::ProcessIdent;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::boot::{self, Inherit, Surroundings};
use crate::child::{End, SLICE};
use crate::state::lock;
use crate::state::PerProcess;
use crate::sys::{self, Ended};

#[derive(Serialize, Deserialize)]
enum Reply {
    /// A child was forked: its pid.
    Started(u32),
    Failed(String),
    /// A child ended: its pid, whether a signal ended it, and the exit code
    /// or signal number.
    Ended(u32, bool, i32),
}

/// The answer to one request: the child's pid and exit-status slot, or why
/// it could not be forked.
type ForkReply = Result<(u32, Arc<End>), String>;

#[derive(Default)]
struct State {
    /// The replies to requests `base`, `base + 1`, …, in request order;
    /// `None` once taken by its caller.
    replies: VecDeque<Option<ForkReply>>,
    /// The request number of `replies`' front.
    base: u64,
    /// Requests sent (each caller's request number is the count before it).
    sent: u64,
    /// Requests answered.
    answered: u64,
    /// Exit-status slots of the children still running, by pid (see the
    /// module docs: exact here).
    running: HashMap<u32, Arc<End>>,
    alive: bool,
    /// Callers waiting for a reply (so that a reply wakes only when needed).
    waiting: usize,
}

/// What the client's caller and reader share.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The client's end of a running forkserver.
pub(crate) struct Server {
    pid: u32,
    sock: UnixStream,
    /// The working directory and environment it was launched with.
    launched_with: Surroundings,
    requests: Mutex<()>,
    shared: Arc<Shared>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

/// Why a start through the server failed.
pub(crate) enum StartError {
    /// The server is gone and never said `Started`: nothing ran, and a new
    /// server may be asked.
    ServerGone(io::Error),
    /// The server could not fork.
    Failed(io::Error),
}

static SERVER: PerProcess<Mutex<Option<Arc<Server>>>> = PerProcess::new();

/// The client's socket descriptor of the running server (-1: none), for a
/// forked child to close. Cleared before the descriptor is closed, so a
/// child never closes a number that has been reused.
static SOCK_FD: AtomicI32 = AtomicI32::new(-1);

/// In a child made by `fork`, first thing: close the copy of the parent's
/// forkserver socket, which would keep the parent's server alive after the
/// parent is gone.
pub(crate) fn forked_child() {
    // Read first: a write to a static costs the child a copy of its page,
    // and a parent without a server has nothing to clear. (The child has
    // one thread here, so nothing else writes between.)
    if SOCK_FD.load(Ordering::Acquire) < 0 {
        return;
    }
    let fd = SOCK_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        // SAFETY: the number is the parent's server socket, open in this copy
        // of the parent (it is cleared before the parent closes it); the
        // parent's state that owns it is never dropped here.
        sys::close_inherited(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
    }
}

fn slot() -> &'static Mutex<Option<Arc<Server>>> {
    SERVER.get(|| Mutex::new(None))
}

/// The running forkserver of this process, started (again) if needed.
pub(crate) fn get() -> io::Result<Arc<Server>> {
    let mut slot = lock(slot());
    if let Some(s) = &*slot {
        if s.is_alive() {
            return Ok(s.clone());
        }
    }
    if let Some(dead) = slot.take() {
        dead.join_reader();
    }
    let server = Server::start()?;
    *slot = Some(server.clone());
    Ok(server)
}

/// The pid of this process's forkserver, if one runs.
pub fn forkserver_pid() -> Option<u32> {
    let slot = lock(SERVER.existing()?);
    slot.as_ref().filter(|s| s.is_alive()).map(|s| s.pid)
}

/// Stops this process's forkserver, if one runs, and reaps it; the next
/// [`Forkserver`](crate::StartMethod::Forkserver) start launches a new one.
/// Runs at exit too. Children already started keep running, but their exit
/// status is lost with the server: they read as killed (-9) when they end.
pub fn stop_forkserver() {
    let Some(slot) = SERVER.existing() else {
        return;
    };
    let server = lock(slot).take();
    if let Some(s) = server {
        s.forget_fd();
        // The reader (and the server) see the end of the connection.
        let _ = s.sock.shutdown(std::net::Shutdown::Both);
        s.join_reader();
    }
}

impl Server {
    fn start() -> io::Result<Arc<Server>> {
        let (ours, theirs) = UnixStream::pair()?;
        let launched_with = Surroundings::now();
        let pid = launch(std::env::current_exe()?, theirs)?;
        let server = Arc::new(Server {
            pid,
            sock: ours,
            launched_with,
            requests: Mutex::new(()),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    alive: true,
                    ..State::default()
                }),
                changed: Condvar::new(),
            }),
            reader: Mutex::new(None),
        });
        SOCK_FD.store(server.sock.as_raw_fd(), Ordering::Release);
        let reader = server.clone();
        let handle = std::thread::Builder::new()
            .name("mproc-forkserver".into())
            .spawn(move || read_replies(&reader));
        match handle {
            Ok(h) => *lock(&server.reader) = Some(h),
            Err(e) => {
                server.forget_fd();
                let _ = sys::signal(pid, Signal::SIGKILL, false);
                let _ = sys::reap(pid);
                return Err(e);
            }
        }
        Ok(server)
    }

    /// Clears [`SOCK_FD`] if it names this server's socket.
    fn forget_fd(&self) {
        let fd = self.sock.as_raw_fd();
        let _ = SOCK_FD.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Acquire);
    }

    /// What a child of this server must change to start with this
    /// process's working directory and environment of now.
    pub(crate) fn inherit(&self) -> Inherit {
        Inherit::since(&self.launched_with)
    }

    /// Whether the server is still known to run.
    pub(crate) fn is_alive(&self) -> bool {
        lock(&self.shared.state).alive
    }

    /// Waits for the reader thread, which ends once the server is gone and
    /// reaped.
    fn join_reader(&self) {
        let reader = lock(&self.reader).take();
        if let Some(reader) = reader {
            let _ = reader.join();
        }
    }

    /// Asks the server to start a child from `msg`: its pid and exit-status
    /// slot. Several callers may have requests in flight: the server
    /// answers them in the order they were sent, and each caller takes the
    /// reply with its request's number.
    pub(crate) fn fork(&self, msg: &Message) -> Result<(u32, Arc<End>), StartError> {
        let gone = || StartError::ServerGone(io::Error::other("the forkserver is gone"));
        let ticket = {
            // One request on the socket at a time, numbered in send order —
            // counted before it is sent, so that a reply (or the server's
            // death) that comes at once finds it counted.
            let _sending = lock(&self.requests);
            let ticket = {
                let mut st = lock(&self.shared.state);
                if !st.alive {
                    return Err(gone());
                }
                st.sent += 1;
                st.sent - 1
            };
            if let Err(e) = transfer::send(&self.sock, msg) {
                // A request half sent would shift every later reply onto
                // the wrong caller: nobody sends to this server again. It
                // answers the whole requests before this one, then reads the
                // end and exits; the reader files those answers, then fails
                // what is left in flight (this one too) and reaps it.
                lock(&self.shared.state).alive = false;
                let _ = self.sock.shutdown(std::net::Shutdown::Write);
                return Err(StartError::ServerGone(e));
            }
            fault::point("forkserver.request-sent");
            ticket
        };
        let mut st = lock(&self.shared.state);
        st.waiting += 1;
        loop {
            if st.answered > ticket {
                let at = (ticket - st.base) as usize;
                let r = st.replies.get_mut(at).and_then(Option::take);
                while st.replies.front().is_some_and(Option::is_none) {
                    st.replies.pop_front();
                    st.base += 1;
                }
                st.waiting -= 1;
                let r = r.unwrap_or_else(|| Err("the forkserver's reply went missing".into()));
                return r.map_err(|why| {
                    if st.alive {
                        StartError::Failed(io::Error::other(why))
                    } else {
                        StartError::ServerGone(io::Error::other(why))
                    }
                });
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, SLICE)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Shared {
    /// Files one reply; `false` once the server is gone.
    fn record(&self, reply: io::Result<Reply>) -> bool {
        let mut st = lock(&self.state);
        let mut wake = false;
        let alive = match reply {
            Ok(Reply::Started(pid)) => {
                let end = End::new();
                st.running.insert(pid, end.clone());
                st.replies.push_back(Some(Ok((pid, end))));
                st.answered += 1;
                wake = true;
                true
            }
            Ok(Reply::Failed(why)) => {
                st.replies.push_back(Some(Err(why)));
                st.answered += 1;
                wake = true;
                true
            }
            Ok(Reply::Ended(pid, signaled, n)) => {
                if let Some(end) = st.running.remove(&pid) {
                    end.fill(if signaled {
                        Ended::Signaled(n)
                    } else {
                        Ended::Exited(n)
                    });
                }
                true
            }
            Err(_) => {
                st.alive = false;
                // Orphans from now on: each is watched by its pid and start
                // time, read here, as soon as the server is gone.
                for (pid, end) in st.running.drain() {
                    end.orphan(ProcessIdent::of(pid));
                }
                // Every request in flight fails.
                while st.answered < st.sent {
                    st.replies
                        .push_back(Some(Err("the forkserver died".into())));
                    st.answered += 1;
                }
                wake = true;
                false
            }
        };
        // A std condvar's notify is a system call: only when someone waits,
        // and after the unlock, so that the caller does not find the lock
        // still held.
        let wake = wake && st.waiting > 0;
        drop(st);
        if wake {
            self.changed.notify_all();
        }
        alive
    }
}

/// Starts the server process with its end of the socket and nothing else
/// (every other descriptor is closed at exec).
fn launch(exe: std::path::PathBuf, theirs: UnixStream) -> io::Result<u32> {
    let mut fds = FdTable::new();
    fds.push(OwnedFd::from(theirs));
    let mut cmd = Command::new(exe);
    cmd.env(boot::BOOT_ENV, "forkserver");
    let limit = sys::fd_limit();
    // SAFETY: between fork and exec: close_range or fcntl only
    // (async-signal-safe). Registered before `spawn_inheriting`'s hook, which
    // then clears close-on-exec on the socket alone.
    unsafe {
        cmd.pre_exec(move || {
            sys::cloexec_from_3(limit);
            Ok(())
        });
    }
    transfer::spawn_inheriting(&mut cmd, &fds).map(|c| c.id())
}

/// The reader thread: files replies until the server goes away, then kills
/// (a no-op if it is gone) and reaps it.
fn read_replies(server: &Server) {
    loop {
        let reply = transfer::recv(&server.sock)
            .and_then(|m| transfer::decode::<Reply>(m).map_err(io::Error::from));
        if reply.is_err() {
            server.forget_fd();
            // The server is unreaped, so `pid` is still it.
            let _ = sys::signal(server.pid, Signal::SIGKILL, false);
            let _ = sys::reap(server.pid);
        }
        if !server.shared.record(reply) {
            return;
        }
    }
}

/// The write end of the server's self-pipe (set once; reading a set
/// `OnceLock` is one atomic load, fine in a signal handler).
static CHLD_PIPE: OnceLock<OwnedFd> = OnceLock::new();

extern "C" fn on_sigchld(_: libc::c_int) {
    if let Some(fd) = CHLD_PIPE.get() {
        // A full pipe simply drops the byte; one is enough.
        let _ = sys::write_byte(fd.as_fd());
    }
}

/// The server's main loop, in the re-executed helper. It returns only in a
/// child it forked: that child's gate (see the protocol) and request, to
/// boot from.
pub(crate) fn serve(fds: FdTable) -> (OwnedFd, Message) {
    let Some(sock) = fds.into_vec().into_iter().next() else {
        sys::exit_now(boot::BOOT_FAILED)
    };
    let sock = UnixStream::from(sock);
    // Done here once, not in every child: each page a child touches first
    // costs it a fault.
    let _ = sys::my_pid();
    let Ok((wake_r, wake_w)) = sys::pipe() else {
        sys::exit_now(boot::BOOT_FAILED)
    };
    if sys::set_nonblocking(wake_r.as_fd()).is_err()
        || sys::set_nonblocking(wake_w.as_fd()).is_err()
        || CHLD_PIPE.set(wake_w).is_err()
    {
        sys::exit_now(boot::BOOT_FAILED)
    }
    // SAFETY: the handler only writes one byte to a pipe.
    unsafe { sys::on_signal(Signal::SIGCHLD, on_sigchld) };
    loop {
        let Ok((request, exited)) = sys::poll2(sock.as_fd(), wake_r.as_fd()) else {
            sys::exit_now(boot::BOOT_FAILED)
        };
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
            // The client is gone: so are we.
            let Ok(msg) = transfer::recv(&sock) else {
                sys::exit_now(0)
            };
            fault::point("forkserver.request-read");
            let gate = sys::pipe();
            // SAFETY: the server is single-threaded.
            let forked = gate.and_then(|gate| Ok((unsafe { sys::fork() }?, gate)));
            let reply = match forked {
                Ok((None, (gate_r, gate_w))) => {
                    sys::default_action(Signal::SIGCHLD);
                    drop((sock, wake_r, gate_w));
                    // The self-pipe's write end is the server's; this child
                    // never drops the server's statics, so close its copy
                    // (the handler that wrote to it is gone).
                    if let Some(w) = CHLD_PIPE.get() {
                        sys::close_inherited(w.as_fd());
                    }
                    return (gate_r, msg);
                }
                Ok((Some(pid), (gate_r, gate_w))) => {
                    drop((gate_r, msg));
                    fault::point("forkserver.forked");
                    if send(&sock, &Reply::Started(pid)).is_err() {
                        sys::exit_now(0);
                    }
                    fault::point("forkserver.started-sent");
                    // The client knows the child: let it run.
                    let _ = sys::write_byte(gate_w.as_fd());
                    continue;
                }
                Err(e) => Reply::Failed(e.to_string()),
            };
            if send(&sock, &reply).is_err() {
                sys::exit_now(0);
            }
        }
    }
}

fn send(sock: &UnixStream, reply: &Reply) -> io::Result<()> {
    transfer::send(sock, &transfer::encode(reply).map_err(io::Error::from)?)
}
