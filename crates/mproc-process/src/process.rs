//! `Process`: a function or a struct target run in a child process.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mproc_shm::transfer::{self, FdTable, TransferError};
use mproc_shm::{fault, ProcessIdent, Segment};
use nix::sys::signal::Signal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::boot::{self, Header, Inherit, Trampoline};
use crate::child::{lock, Child, End, Watch};
use crate::registry::{self, ProcessInfo};
use crate::report::{Report, ReportSlot};
use crate::{lifeline, sys};

/// How a child process is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StartMethod {
    /// Re-execute the current binary; the child starts fresh and receives
    /// its target and handles by transfer. Safe in any program.
    Spawn,
    /// `fork()` without `exec`: fastest, and the child inherits the whole
    /// parent. Safe only in single-threaded programs: a lock held by another
    /// thread at the fork (stdout's, say) stays held for ever in the child.
    Fork,
    /// Ask a single-threaded helper, started on first use, to fork the
    /// child: fork's speed with spawn's safety. The default on Linux.
    Forkserver,
}

/// The process-wide default: 0 until chosen, else a method's code. An
/// atomic rather than a `OnceLock`, so that a forked child never waits on an
/// initialization another thread of its parent had begun.
static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

impl StartMethod {
    fn code(self) -> u8 {
        match self {
            StartMethod::Spawn => 1,
            StartMethod::Fork => 2,
            StartMethod::Forkserver => 3,
        }
    }

    fn from_code(code: u8) -> Option<StartMethod> {
        match code {
            1 => Some(StartMethod::Spawn),
            2 => Some(StartMethod::Fork),
            3 => Some(StartMethod::Forkserver),
            _ => None,
        }
    }

    fn platform_default() -> StartMethod {
        if cfg!(target_os = "linux") {
            StartMethod::Forkserver
        } else {
            StartMethod::Spawn
        }
    }
}

/// Fork in a multi-threaded parent is allowed (test harnesses are
/// multi-threaded), with a one-time warning through `tracing` when that
/// feature is on: CPython 3.12's DeprecationWarning.
fn warn_if_threaded() {
    #[cfg(feature = "tracing")]
    {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if WARNED.load(Ordering::Relaxed) {
            return;
        }
        let threads = sys::thread_count().unwrap_or(1);
        if threads > 1 && !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                threads,
                "StartMethod::Fork in a multi-threaded process: a lock held by another \
                 thread at the fork stays held in the child (use Forkserver or Spawn)"
            );
        }
    }
}

/// Sets the process-wide default start method, once.
///
/// # Errors
///
/// Returns the method already in force when one was set before (or when a
/// process was already started with the default).
pub fn set_start_method(method: StartMethod) -> Result<(), StartMethod> {
    match DEFAULT_METHOD.compare_exchange(0, method.code(), Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(()),
        Err(now) => Err(StartMethod::from_code(now).unwrap_or(method)),
    }
}

/// The default start method: [`StartMethod::Forkserver`] on Linux and
/// [`StartMethod::Spawn`] on macOS (as Python 3.14), unless
/// [`set_start_method`] chose another.
pub fn get_start_method() -> StartMethod {
    let _ = set_start_method(StartMethod::platform_default());
    StartMethod::from_code(DEFAULT_METHOD.load(Ordering::Acquire))
        .unwrap_or_else(StartMethod::platform_default)
}

/// What a target's return value means for the exit code.
pub trait Outcome {
    /// The exit code: 0 for success.
    fn exit_code(self) -> i32;
}

impl Outcome for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl<T, E: fmt::Debug> Outcome for Result<T, E> {
    /// `Ok` is 0; `Err` prints the error to stderr (like `main`) and is 1.
    fn exit_code(self) -> i32 {
        match self {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("Error: {e:?}");
                1
            }
        }
    }
}

/// A struct target: the Rust form of subclassing Python's `Process` and
/// overriding `run`. Its fields travel to the child by serde.
///
/// # Examples
///
/// ```no_run
/// use mproc_process::{Process, Target};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Greeter { name: String }
///
/// impl Target for Greeter {
///     fn run(self) { println!("hello {}", self.name); }
/// }
///
/// let mut p = Process::from_target(Greeter { name: "bob".into() });
/// p.start()?;
/// p.join()?;
/// # Ok::<(), mproc_process::ProcessError>(())
/// ```
pub trait Target: Serialize + DeserializeOwned + Send + 'static {
    /// The work the child does.
    fn run(self);
}

/// A target that can run in a forked child or be encoded for a spawned one.
trait Launch: Send {
    fn run_here(self: Box<Self>) -> i32;
    fn encode(self: Box<Self>, header: Header) -> Result<transfer::Message, TransferError>;
}

struct FnTarget<A, R> {
    f: fn(A) -> R,
    args: A,
}

/// Header first, then the body the trampoline decodes.
#[derive(Serialize)]
struct Boot<'a, B: Serialize> {
    header: Header,
    body: &'a B,
}

fn fn_trampoline<A: DeserializeOwned, R: Outcome>(bytes: &[u8], fds: FdTable) -> i32 {
    let (f, args): (u64, A) = match transfer::decode(transfer::Message {
        bytes: bytes.to_vec(),
        fds,
    }) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("mproc: cannot decode the child's arguments: {e}");
            return 70;
        }
    };
    // SAFETY: `f` is the offset of a `fn(A) -> R` taken in the parent, which
    // runs this same binary; this trampoline was chosen for exactly A and R.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(boot::address_at(f)) };
    f(args).exit_code()
}

impl<A, R> Launch for FnTarget<A, R>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Outcome + 'static,
{
    fn run_here(self: Box<Self>) -> i32 {
        (self.f)(self.args).exit_code()
    }

    fn encode(self: Box<Self>, mut header: Header) -> Result<transfer::Message, TransferError> {
        header.trampoline = boot::offset_of(fn_trampoline::<A, R> as Trampoline as usize);
        let f = boot::offset_of(self.f as usize);
        transfer::encode(&Boot {
            header,
            body: &(f, self.args),
        })
    }
}

struct StructTarget<T>(T);

fn struct_trampoline<T: Target>(bytes: &[u8], fds: FdTable) -> i32 {
    match transfer::decode::<T>(transfer::Message {
        bytes: bytes.to_vec(),
        fds,
    }) {
        Ok(t) => {
            t.run();
            0
        }
        Err(e) => {
            eprintln!("mproc: cannot decode the child's target: {e}");
            70
        }
    }
}

impl<T: Target> Launch for StructTarget<T> {
    fn run_here(self: Box<Self>) -> i32 {
        self.0.run();
        0
    }

    fn encode(self: Box<Self>, mut header: Header) -> Result<transfer::Message, TransferError> {
        header.trampoline = boot::offset_of(struct_trampoline::<T> as Trampoline as usize);
        transfer::encode(&Boot {
            header,
            body: &self.0,
        })
    }
}

/// Why a process operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessError {
    /// `join` (or a similar call) before `start`.
    NotStarted,
    /// `start` on a process that was already started (CPython: "cannot
    /// start a process twice").
    AlreadyStarted,
    /// `set_daemon` after `start` (CPython: "process has already started").
    DaemonAfterStart,
    /// A daemon process may not start children.
    DaemonCannotStart,
    /// The target or its arguments could not be encoded for the child.
    Encode(TransferError),
    /// The OS refused (fork, exec, wait).
    Io(io::Error),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::NotStarted => f.write_str("the process has not been started"),
            ProcessError::AlreadyStarted => f.write_str("a process can only be started once"),
            ProcessError::DaemonAfterStart => {
                f.write_str("the daemon flag cannot change once the process has started")
            }
            ProcessError::DaemonCannotStart => {
                f.write_str("a daemon process is not allowed to start children")
            }
            ProcessError::Encode(e) => write!(f, "cannot send the target to the child: {e}"),
            ProcessError::Io(e) => write!(f, "process operation failed: {e}"),
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Encode(e) => Some(e),
            ProcessError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ProcessError {
    fn from(e: io::Error) -> ProcessError {
        ProcessError::Io(e)
    }
}

/// A child process running a function or a [`Target`] (Python's
/// `multiprocessing.Process`).
///
/// # Examples
///
/// ```no_run
/// use mproc_process::Process;
///
/// fn greet(name: String) { println!("hello {name}"); }
///
/// let mut p = Process::new(greet, "bob".to_string()).name("worker-1");
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), mproc_process::ProcessError>(())
/// ```
///
/// Targets are plain `fn` items: a closure that captures does not compile.
///
/// ```compile_fail
/// let greeting = String::from("hi");
/// let p = mproc_process::Process::new(move |n: u32| println!("{greeting} {n}"), 1);
/// ```
pub struct Process {
    name: String,
    daemon: bool,
    method: Option<StartMethod>,
    group: bool,
    target: Mutex<Option<Box<dyn Launch>>>,
    child: Option<Arc<Child>>,
}

impl Process {
    /// A process that will run `f(args)`; not started yet.
    pub fn new<A, R>(f: fn(A) -> R, args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Outcome + 'static,
    {
        Process::with_launch(Box::new(FnTarget { f, args }))
    }

    /// A process that will run `target.run()`; not started yet.
    pub fn from_target<T: Target>(target: T) -> Process {
        Process::with_launch(Box::new(StructTarget(target)))
    }

    fn with_launch(launch: Box<dyn Launch>) -> Process {
        Process {
            name: registry::next_name(),
            daemon: false,
            method: None,
            group: false,
            target: Mutex::new(Some(launch)),
            child: None,
        }
    }

    /// Sets the name (default `Process-N`).
    pub fn name(mut self, name: impl Into<String>) -> Process {
        self.name = name.into();
        self
    }

    /// Makes the process a daemon: terminated when its parent exits normally
    /// (SIGTERM, then SIGKILL after
    /// [`DAEMON_EXIT_GRACE`](crate::DAEMON_EXIT_GRACE)), killed when its
    /// parent process dies — whichever thread started it — and not allowed to
    /// start children.
    pub fn daemon(mut self, daemon: bool) -> Process {
        self.daemon = daemon;
        self
    }

    /// Chooses the start method for this process (default:
    /// [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Process {
        self.method = Some(method);
        self
    }

    /// Starts the child in a process group of its own, so that
    /// [`terminate`](Process::terminate) and [`kill`](Process::kill) reach
    /// everything it starts too.
    pub fn process_group(mut self, own_group: bool) -> Process {
        self.group = own_group;
        self
    }

    /// Sets the daemon flag before start.
    ///
    /// # Errors
    ///
    /// [`ProcessError::DaemonAfterStart`] after `start`.
    pub fn set_daemon(&mut self, daemon: bool) -> Result<(), ProcessError> {
        if self.child.is_some() {
            return Err(ProcessError::DaemonAfterStart);
        }
        self.daemon = daemon;
        Ok(())
    }

    /// The name.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// Whether the process is (to be) a daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// The pid, once started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid)
    }

    /// Starts the child.
    ///
    /// # Errors
    ///
    /// [`ProcessError::AlreadyStarted`] on a second call;
    /// [`ProcessError::DaemonCannotStart`] inside a daemon;
    /// [`ProcessError::Encode`] when the arguments cannot be serialized;
    /// [`ProcessError::Io`] when fork or exec fails.
    pub fn start(&mut self) -> Result<(), ProcessError> {
        if self.child.is_some() {
            return Err(ProcessError::AlreadyStarted);
        }
        let parent = registry::current_process();
        if parent.daemon {
            return Err(ProcessError::DaemonCannotStart);
        }
        let launch = lock(&self.target)
            .take()
            .ok_or(ProcessError::AlreadyStarted)?;
        registry::cleanup();
        lifeline::ensure()?;
        let report = ReportSlot::new()?;
        let method = self.method.unwrap_or_else(get_start_method);
        let (pid, end, watch) = match method {
            StartMethod::Fork => {
                warn_if_threaded();
                let pid = self.fork(launch, report.report(), &parent)?;
                (pid, End::new(), Watch::Own)
            }
            StartMethod::Spawn => {
                let pid = self.spawn(launch, report.report(), &parent)?;
                (pid, End::new(), Watch::Own)
            }
            StartMethod::Forkserver => {
                let (pid, end) = self.via_forkserver(launch, report.report(), &parent)?;
                (pid, end, Watch::Server)
            }
        };
        let child = Arc::new(Child {
            pid,
            name: self.name.clone(),
            daemon: self.daemon,
            group: self.group,
            report,
            end,
            watch,
        });
        registry::add(child.clone());
        self.child = Some(child);
        Ok(())
    }

    fn fork(
        &self,
        launch: Box<dyn Launch>,
        report: &Report,
        parent: &ProcessInfo,
    ) -> Result<u32, ProcessError> {
        let parent = registry::parent_info(
            parent.name.clone(),
            parent.pid,
            ProcessIdent::current().to_bits(),
        );
        // SAFETY: the child runs the target as CPython's fork method does;
        // the rules for multi-threaded parents are documented on
        // StartMethod::Fork. The child touches none of the parent's library
        // locks: its state is per process (see `state`).
        match unsafe { sys::fork()? } {
            None => {
                crate::forkserver::forked_child();
                if lifeline::forked_child(self.daemon).is_err() {
                    sys::exit_now(boot::BOOT_FAILED);
                }
                if self.group {
                    let _ = sys::new_process_group();
                }
                registry::become_child(&self.name, self.daemon, parent);
                let code = boot::run_guarded(report, || launch.run_here());
                boot::finish(code)
            }
            Some(pid) => {
                fault::point("process.forked");
                Ok(pid)
            }
        }
    }

    fn header(
        &self,
        report: &Report,
        parent: &ProcessInfo,
        inherit: Option<Inherit>,
    ) -> io::Result<Header> {
        Ok(Header {
            trampoline: 0,
            name: self.name.clone(),
            daemon: self.daemon,
            group: self.group,
            parent_pid: parent.pid,
            parent_ident: ProcessIdent::current().to_bits(),
            parent_name: parent.name.clone(),
            report: report.clone(),
            lifeline: self.daemon.then(lifeline::for_daemon).transpose()?,
            inherit,
        })
    }

    fn spawn(
        &self,
        launch: Box<dyn Launch>,
        report: &Report,
        parent: &ProcessInfo,
    ) -> Result<u32, ProcessError> {
        let msg = launch
            .encode(self.header(report, parent, None)?)
            .map_err(ProcessError::Encode)?;
        // The boot bytes travel in a segment of their own, the last
        // descriptor of the table, so their size has no limit.
        let payload = Segment::anonymous(8 + msg.bytes.len())?;
        payload.write(8, &msg.bytes).map_err(io::Error::from)?;
        if let Some(len) = payload.atomic_u64(0) {
            len.store(msg.bytes.len() as u64, Ordering::Release);
        }
        let mut fds = msg.fds;
        fds.push(payload.as_fd().try_clone_to_owned()?);
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.env(boot::BOOT_ENV, "1");
        let group = self.group;
        let limit = sys::fd_limit();
        // SAFETY: the hook runs between fork and exec and only makes
        // async-signal-safe calls (close_range or fcntl, setpgid). It is
        // registered before `spawn_inheriting`'s hook, which then clears
        // close-on-exec on exactly the passed descriptors: the child gets
        // stdio and those, nothing else.
        unsafe {
            cmd.pre_exec(move || {
                sys::cloexec_from_3(limit);
                if group {
                    sys::new_process_group()?;
                }
                Ok(())
            });
        }
        let child = transfer::spawn_inheriting(&mut cmd, &fds)?;
        fault::point("process.spawned");
        Ok(child.id())
    }

    /// Starts the child through the forkserver; asks a new server once if
    /// this one is gone (the gate guarantees nothing ran).
    fn via_forkserver(
        &self,
        launch: Box<dyn Launch>,
        report: &Report,
        parent: &ProcessInfo,
    ) -> Result<(u32, Arc<End>), ProcessError> {
        let mut server = crate::forkserver::get()?;
        // Relative to this server's launch; a replacement, launched later,
        // gets the whole difference again, which is still right.
        let inherit = server.inherit();
        let msg = launch
            .encode(self.header(report, parent, Some(inherit))?)
            .map_err(ProcessError::Encode)?;
        let mut retried = false;
        loop {
            match server.fork(&msg) {
                Ok(started) => return Ok(started),
                Err(crate::forkserver::StartError::ServerGone(_)) if !retried => {
                    retried = true;
                    server = crate::forkserver::get()?;
                }
                Err(
                    crate::forkserver::StartError::ServerGone(e)
                    | crate::forkserver::StartError::Failed(e),
                ) => return Err(e.into()),
            }
        }
    }

    fn started(&self) -> Result<&Arc<Child>, ProcessError> {
        self.child.as_ref().ok_or(ProcessError::NotStarted)
    }

    /// Polls the child; once it is reaped the registry forgets it.
    fn poll(&self, block: bool, deadline: Option<Instant>) -> Option<sys::Ended> {
        let c = self.child.as_ref()?;
        let ended = c.wait(block, deadline);
        if ended.is_some() {
            registry::forget(c);
        }
        ended
    }

    /// Waits until the child has ended and reaps it. `Ok` whatever its exit
    /// status, as in CPython; see [`exitcode`](Process::exitcode).
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`] before `start`.
    pub fn join(&self) -> Result<(), ProcessError> {
        self.started()?;
        self.poll(true, None);
        Ok(())
    }

    /// Waits at most `timeout`; on timeout it returns `Ok` with the child
    /// still running (and [`exitcode`](Process::exitcode) still `None`).
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`] before `start`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), ProcessError> {
        self.started()?;
        // No deadline when the timeout is too far to represent.
        self.poll(true, Instant::now().checked_add(timeout));
        Ok(())
    }

    /// Whether the child has been started and has not ended (reaping it if
    /// it has).
    pub fn is_alive(&self) -> bool {
        self.child.is_some() && self.poll(false, None).is_none()
    }

    /// The exit code: `None` before the end; 0 after a normal return; 1
    /// after a panic or an `Err`; `n` after [`exit`]`(n)`; `-N` after
    /// signal N.
    pub fn exitcode(&self) -> Option<i32> {
        self.poll(false, None).map(|e| e.code())
    }

    /// The message of the panic that ended the child, if one did.
    pub fn panic_message(&self) -> Option<String> {
        self.poll(false, None)?;
        self.child.as_ref()?.report.read()
    }

    fn send(&self, sig: Signal) -> Result<(), ProcessError> {
        let child = self.started()?;
        // Not once it has ended: its pid may belong to another process by now.
        if self.poll(false, None).is_some() {
            return Ok(());
        }
        match sys::signal(child.pid, sig, child.group) {
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Sends SIGTERM (to the whole group with
    /// [`process_group`](Process::process_group)). Join to reap it.
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`]; the OS error from `kill`.
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.send(Signal::SIGTERM)
    }

    /// Sends SIGKILL (to the whole group with
    /// [`process_group`](Process::process_group)). Join to reap it.
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`]; the OS error from `kill`.
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.send(Signal::SIGKILL)
    }
}

impl Process {
    /// Lets the child run on without a handle: it is reaped in the
    /// background as soon as it ends (a server that starts a process per
    /// connection needs no thread of its own to reap them). The exit rules
    /// still apply to it at exit. Nothing happens to a process that was
    /// never started.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use mproc_process::Process;
    ///
    /// fn serve(n: u32) { println!("serving {n}"); }
    ///
    /// for n in 0..3 {
    ///     let mut p = Process::new(serve, n);
    ///     p.start()?;
    ///     p.detach(); // reaped when it ends; no zombie piles up
    /// }
    /// # Ok::<(), mproc_process::ProcessError>(())
    /// ```
    pub fn detach(mut self) {
        if let Some(child) = self.child.take() {
            if child.ended().is_some() {
                registry::forget(&child);
            } else {
                registry::detach(child);
            }
        }
    }
}

impl Drop for Process {
    /// Reaps the child if it has ended; a running child stays recorded and
    /// is reaped later (by `active_children`, the next `start`, or at exit;
    /// [`detach`](Process::detach) reaps it as soon as it ends).
    fn drop(&mut self) {
        self.poll(false, None);
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

/// Ends the current process with `code`, following the exit rules first
/// (its own non-daemon children are joined, daemon children terminated).
/// In a child, [`Process::exitcode`] then reads `code`.
pub fn exit(code: i32) -> ! {
    if registry::parent_process().is_some() {
        boot::finish(code)
    }
    registry::exit_rules();
    std::process::exit(code)
}
