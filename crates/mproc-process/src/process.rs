//! `Process`: a function or a struct target run in a child process.

use std::fmt;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mproc_call::Callable;
use mproc_shm::transfer::{self, SharedFd};
use mproc_shm::{fault, ProcessIdent};
use nix::sys::signal::Signal;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::boot::{self, Header, Inherit};
use crate::child::{Child, End, Watch};
use crate::error::ProcessError;
use crate::method::{get_start_method, warn_if_threaded, StartMethod};
use crate::registry::{self, ProcessInfo};
use crate::report::{Report, ReportSlot};
use crate::state::lock;
use crate::target::{FnTarget, Launch, Outcome, StructTarget, Target};
use crate::{exit, lifeline, output, payload, sys};

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
    /// Forward the child's output (`None`: the process-wide default).
    forward: Option<bool>,
    target: Mutex<Option<Box<dyn Launch>>>,
    child: Option<Arc<Child>>,
}

impl Process {
    /// A process that will run `f` with `args`; not started yet.
    ///
    /// `f` is a `fn` item (or a closure that captures nothing) of up to
    /// eight arguments, given as one value: the argument itself for one,
    /// a tuple for several — `Process::new(add, (2, 3))` runs `add(2, 3)`.
    /// It returns `()` or a `Result` (see [`exitcode`](Process::exitcode));
    /// to get a value back, use [`spawn`](crate::spawn).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let mut p = mproc_process::Process::new(greet, "bob".to_string());
    /// p.start()?;
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new<F, M>(f: F, args: F::Args) -> Process
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Outcome,
        M: 'static,
    {
        Process::with_launch(Box::new(FnTarget {
            f,
            args,
            _m: PhantomData,
        }))
    }

    /// A process that will run `target.run()`; not started yet.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use mproc_process::{Process, Target};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Count {
    ///     to: u32,
    /// }
    ///
    /// impl Target for Count {
    ///     fn run(self) {
    ///         (0..self.to).for_each(|i| println!("{i}"));
    ///     }
    /// }
    ///
    /// let mut p = Process::from_target(Count { to: 3 });
    /// p.start()?;
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_target<T: Target>(target: T) -> Process {
        Process::with_launch(Box::new(StructTarget(target)))
    }

    pub(crate) fn with_launch(launch: Box<dyn Launch>) -> Process {
        Process {
            name: registry::next_name(),
            daemon: false,
            method: None,
            group: false,
            forward: None,
            target: Mutex::new(Some(launch)),
            child: None,
        }
    }

    /// Forwards the child's stdout and stderr lines (and, with the
    /// `tracing` feature, its `tracing` events) to this process, tagged
    /// `[name]`: see [`output`](crate::output). Overrides
    /// [`set_forward_output`](crate::set_forward_output) for this process.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let mut p = mproc_process::Process::new(greet, "bob".into())
    ///     .name("greeter")
    ///     .forward_output(true);
    /// p.start()?;
    /// p.join()?; // "[greeter] hello bob" is printed by now
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn forward_output(mut self, on: bool) -> Process {
        self.forward = Some(on);
        self
    }

    /// Sets the name (default `Process-N`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let p = mproc_process::Process::new(greet, "bob".into()).name("greeter");
    /// assert_eq!(p.get_name(), "greeter");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Process {
        self.name = name.into();
        self
    }

    /// Makes the process a daemon: terminated when its parent exits normally
    /// (SIGTERM, then SIGKILL after
    /// [`DAEMON_EXIT_GRACE`](crate::DAEMON_EXIT_GRACE)), killed when its
    /// parent process dies — whichever thread started it — and not allowed to
    /// start children.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let p = mproc_process::Process::new(greet, "bob".into()).daemon(true);
    /// assert!(p.is_daemon());
    /// ```
    pub fn daemon(mut self, daemon: bool) -> Process {
        self.daemon = daemon;
        self
    }

    /// Chooses the start method for this process (default:
    /// [`get_start_method`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use mproc_process::{Process, StartMethod};
    ///
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let mut p = Process::new(greet, "bob".into()).start_method(StartMethod::Spawn);
    /// p.start()?;
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Process {
        self.method = Some(method);
        self
    }

    /// Starts the child in a process group of its own, so that
    /// [`terminate`](Process::terminate) and [`kill`](Process::kill) reach
    /// everything it starts too.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let mut p = mproc_process::Process::new(greet, "bob".into()).process_group(true);
    /// p.start()?;
    /// p.terminate()?; // the child and everything it started
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn process_group(mut self, own_group: bool) -> Process {
        self.group = own_group;
        self
    }

    /// Sets the daemon flag before start.
    ///
    /// # Errors
    ///
    /// [`ProcessError::DaemonAfterStart`] after `start`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let mut p = mproc_process::Process::new(greet, "bob".into());
    /// p.set_daemon(true)?;
    /// p.start()?;
    /// assert!(p.set_daemon(false).is_err()); // too late once started
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_daemon(&mut self, daemon: bool) -> Result<(), ProcessError> {
        if self.child.is_some() {
            return Err(ProcessError::DaemonAfterStart);
        }
        self.daemon = daemon;
        Ok(())
    }

    /// The name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let p = mproc_process::Process::new(greet, "bob".into());
    /// assert!(p.get_name().starts_with("Process-"));
    /// ```
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// Whether the process is (to be) a daemon.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let p = mproc_process::Process::new(greet, "bob".into());
    /// assert!(!p.is_daemon());
    /// ```
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// The pid, once started.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let mut p = mproc_process::Process::new(greet, "bob".into());
    /// assert_eq!(p.pid(), None);
    /// p.start()?;
    /// assert!(p.pid().is_some());
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let mut p = mproc_process::Process::new(greet, "bob".into());
    /// p.start()?;
    /// assert!(p.start().is_err()); // once only
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        #[cfg(feature = "tracing")]
        let _span = tracing::info_span!(
            target: "mproc::process",
            "start",
            name = %self.name,
            daemon = self.daemon
        )
        .entered();
        registry::cleanup();
        lifeline::ensure()?;
        let report = ReportSlot::new()?;
        let method = self.method.unwrap_or_else(get_start_method);
        let output = if self.forward.unwrap_or_else(output::forward_by_default) {
            Some(output::pair()?)
        } else {
            None
        };
        let (ours, theirs) = output.unzip();
        // What this process printed without a newline comes out before
        // anything the child prints, and never again from the child
        // (CPython flushes its standard streams before a start too). The
        // fork method flushes under the lock it holds across the fork.
        if method != StartMethod::Fork {
            let _ = io::stdout().flush();
        }
        let (pid, end, watch) = match method {
            StartMethod::Fork => {
                warn_if_threaded();
                let pid = self.fork(launch, report.report(), &parent, ours.as_ref(), theirs)?;
                (pid, End::new(), Watch::Own)
            }
            StartMethod::Spawn => {
                let pid = self.spawn(launch, report.report(), &parent, theirs)?;
                (pid, End::new(), Watch::Own)
            }
            StartMethod::Forkserver => {
                let (pid, end) = self.via_forkserver(launch, report.report(), &parent, theirs)?;
                (pid, end, Watch::Server)
            }
        };
        // The child has its end (and ours was closed in it): read what it
        // sends until it ends.
        // If no thread can be made for it, the child runs on without
        // forwarding (its lines are dropped) rather than escape the
        // registry.
        let output = ours.and_then(|ours| output::read_from(ours, self.name.clone(), pid).ok());
        let child = Arc::new(Child {
            pid,
            name: self.name.clone(),
            daemon: self.daemon,
            group: self.group,
            report,
            end,
            watch,
            method,
            output: Mutex::new(output),
            #[cfg(feature = "tracing")]
            told: std::sync::atomic::AtomicBool::new(false),
        });
        #[cfg(feature = "tracing")]
        tracing::info!(
            target: "mproc::process",
            pid,
            name = %self.name,
            method = ?method,
            daemon = self.daemon,
            "process started"
        );
        exit::ensure_at_exit();
        registry::add(child.clone());
        self.child = Some(child);
        Ok(())
    }

    fn fork(
        &self,
        launch: Box<dyn Launch>,
        report: &Report,
        parent: &ProcessInfo,
        ours: Option<&OwnedFd>,
        theirs: Option<OwnedFd>,
    ) -> Result<u32, ProcessError> {
        let parent = registry::parent_info(
            parent.name.clone(),
            parent.pid,
            ProcessIdent::current().to_bits(),
        );
        // Everything the child keeps is made here, before the fork: an
        // allocation in the child costs copy-on-write faults.
        let me = registry::ChildMe::new(&self.name, self.daemon, parent);
        registry::ready_for_fork();
        // The locks of stdout and stderr are held across the fork, so that
        // the child's copies are free: another thread of this process may
        // be in the middle of a print, and the child would wait for ever
        // to print (or flush at its end). Stdout's buffer is emptied first:
        // a forked child flushes its copy when it ends, and what this
        // process printed without a newline must come out once. (Always in
        // this order, stdout then stderr, as the standard library never
        // holds stderr's lock while it takes stdout's.)
        let mut stdout = io::stdout().lock();
        let _ = stdout.flush();
        let stdio = (stdout, io::stderr().lock());
        // SAFETY: the child runs the target as CPython's fork method does;
        // the rules for multi-threaded parents are documented on
        // StartMethod::Fork. The child touches none of the parent's library
        // locks: its state is per process (see `state`).
        let forked = unsafe { sys::fork() };
        drop(stdio);
        match forked? {
            None => {
                crate::forkserver::forked_child();
                if lifeline::forked_child(self.daemon).is_err() {
                    sys::exit_now(boot::BOOT_FAILED);
                }
                if self.group {
                    let _ = sys::new_process_group();
                }
                registry::become_child(me);
                if let Some(ours) = ours {
                    // The parent's end, copied by fork: closed here once.
                    sys::close_in_forked_child(ours);
                }
                // If the parent forwards its own output, its forwarder is
                // its own, not ours.
                output::forked_child();
                if let Some(theirs) = theirs {
                    if output::start_in_child(theirs).is_err() {
                        sys::exit_now(boot::BOOT_FAILED);
                    }
                }
                let code = boot::run_guarded(report, || launch.run_here());
                exit::finish(code)
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
        output: Option<OwnedFd>,
    ) -> io::Result<Header> {
        Ok(Header {
            name: self.name.clone(),
            daemon: self.daemon,
            group: self.group,
            parent_pid: parent.pid,
            parent_ident: ProcessIdent::current().to_bits(),
            parent_name: parent.name.clone(),
            report: report.clone(),
            lifeline: self.daemon.then(lifeline::for_daemon).transpose()?,
            inherit,
            output: output.map(SharedFd::new),
        })
    }

    fn spawn(
        &self,
        launch: Box<dyn Launch>,
        report: &Report,
        parent: &ProcessInfo,
        output: Option<OwnedFd>,
    ) -> Result<u32, ProcessError> {
        let msg = launch
            .encode(self.header(report, parent, None, output)?)
            .map_err(ProcessError::Encode)?;
        // The boot bytes travel in a segment of their own, the last
        // descriptor of the table, so their size has no limit.
        let mut fds = msg.fds;
        fds.push(payload::seal(&msg.bytes)?);
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
        output: Option<OwnedFd>,
    ) -> Result<(u32, Arc<End>), ProcessError> {
        let mut server = crate::forkserver::get()?;
        // Relative to this server's launch; a replacement, launched later,
        // gets the whole difference again, which is still right.
        let inherit = server.inherit();
        let msg = launch
            .encode(self.header(report, parent, Some(inherit), output)?)
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

    /// The started child, if any.
    #[cfg(feature = "async")]
    pub(crate) fn child(&self) -> Option<&Arc<Child>> {
        self.child.as_ref()
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
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let mut p = mproc_process::Process::new(greet, "bob".into());
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self) -> Result<(), ProcessError> {
        self.started()?;
        self.poll(true, None);
        self.output_done();
        Ok(())
    }

    /// Once the child has ended: waits until its forwarded output has been
    /// handed on (the reader stops at the end of the child's stream, or
    /// within 100 ms of the child's end).
    fn output_done(&self) {
        if let Some(c) = &self.child {
            if c.ended().is_some() {
                c.output_done();
            }
        }
    }

    /// Waits at most `timeout`; on timeout it returns `Ok` with the child
    /// still running (and [`exitcode`](Process::exitcode) still `None`).
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`] before `start`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// fn nap(ms: u64) {
    ///     std::thread::sleep(Duration::from_millis(ms));
    /// }
    ///
    /// let mut p = mproc_process::Process::new(nap, 500);
    /// p.start()?;
    /// p.join_timeout(Duration::from_millis(10))?;
    /// assert_eq!(p.exitcode(), None); // still running
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), ProcessError> {
        self.started()?;
        // No deadline when the timeout is too far to represent.
        self.poll(true, Instant::now().checked_add(timeout));
        self.output_done();
        Ok(())
    }

    /// Whether the child has been started and has not ended (reaping it if
    /// it has).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn greet(name: String) {
    ///     println!("hello {name}");
    /// }
    ///
    /// let mut p = mproc_process::Process::new(greet, "bob".into());
    /// p.start()?;
    /// p.join()?;
    /// assert!(!p.is_alive());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        self.child.is_some() && self.poll(false, None).is_none()
    }

    /// The exit code: `None` before the end; 0 after a normal return; 1
    /// after a panic or an `Err`; `n` after [`exit`]`(n)`; `-N` after
    /// signal N.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn fail(code: i32) {
    ///     mproc_process::exit(code)
    /// }
    ///
    /// let mut p = mproc_process::Process::new(fail, 3);
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exitcode(&self) -> Option<i32> {
        self.poll(false, None).map(|e| e.code())
    }

    /// The message of the panic that ended the child, if one did.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn boom(n: u32) {
    ///     panic!("no {n}")
    /// }
    ///
    /// let mut p = mproc_process::Process::new(boom, 7);
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.panic_message().as_deref(), Some("no 7"));
    /// assert_eq!(p.exitcode(), Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn forever(_: ()) {
    ///     loop {
    ///         std::thread::park();
    ///     }
    /// }
    ///
    /// let mut p = mproc_process::Process::new(forever, ());
    /// p.start()?;
    /// p.terminate()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(-15)); // SIGTERM
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.send(Signal::SIGTERM)
    }

    /// Sends SIGKILL (to the whole group with
    /// [`process_group`](Process::process_group)). Join to reap it.
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`]; the OS error from `kill`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn forever(_: ()) {
    ///     loop {
    ///         std::thread::park();
    ///     }
    /// }
    ///
    /// let mut p = mproc_process::Process::new(forever, ());
    /// p.start()?;
    /// p.kill()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(-9)); // SIGKILL
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
