//! [`spawn`]: run a function in a child process and get its value back —
//! `std::thread::spawn` for processes.
//!
//! # How the value comes back
//!
//! Before the child starts, the parent makes a socket pair and hands the
//! child one end. When the function returns, the child encodes the value
//! (its handles' descriptors attached) and sends it in one message: inline
//! when it is small, else in a segment whose descriptor is sent — so the
//! send never waits for the parent, which reads only once the child has
//! ended. The parent joins the child, then reads without blocking: a value
//! is there or it is not (the child panicked, exited or was killed first),
//! and nothing waits on a child that is gone.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use mproc_call::{Callable, RemoteFn};
use mproc_shm::fault;
use mproc_shm::transfer::{self, FdTable, Message, SharedFd, TransferError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::boot::{BootInput, Header};
use crate::error::ProcessError;
use crate::method::StartMethod;
use crate::payload;
use crate::process::Process;
use crate::target::{boot_message, decode_body, resolve_or_refuse, Launch};

/// Runs `f` with `args` in a new child process, like
/// [`std::thread::spawn`]; [`JoinHandle::join`] returns its value.
///
/// `f` is a `fn` item (or a closure that captures nothing) of up to eight
/// arguments, given as one value: the argument itself for one, a tuple for
/// several. Arguments and the result travel by serde and may carry mproc
/// handles (queues, locks, segments…). The child is started by the default
/// [start method](crate::get_start_method); [`Builder`] chooses another, a
/// name, or a daemon.
///
/// If the child cannot be started, [`join`](JoinHandle::join) says why
/// ([`JoinError::Start`]); [`Builder::spawn`] reports it at once instead.
///
/// # Examples
///
/// ```no_run
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// let sum = mproc_process::spawn(add, (2, 3)).join()?;
/// assert_eq!(sum, 5);
/// # Ok::<(), mproc_process::JoinError>(())
/// ```
///
/// A panic in the child is an error of `join`, with its message:
///
/// ```no_run
/// use mproc_process::JoinError;
///
/// fn fail(n: u32) -> u32 {
///     panic!("no {n}")
/// }
///
/// match mproc_process::spawn(fail, 7).join() {
///     Err(JoinError::Panicked { message }) => assert_eq!(message, "no 7"),
///     other => panic!("{other:?}"),
/// }
/// ```
///
/// Only code crosses to the child, never data captured by a closure:
///
/// ```compile_fail
/// let n = 3u64;
/// let h = mproc_process::spawn(move |x: u64| x + n, 1);
/// ```
pub fn spawn<F, M>(f: F, args: F::Args) -> JoinHandle<F::Output>
where
    F: Callable<M>,
    F::Args: Serialize + DeserializeOwned,
    F::Output: Serialize + DeserializeOwned + Send,
    M: 'static,
{
    Builder::new()
        .spawn(f, args)
        .unwrap_or_else(JoinHandle::failed)
}

/// Options for a child started by [`Builder::spawn`]: its name, whether it
/// is a daemon, its start method (`std::thread::Builder` for processes).
///
/// # Examples
///
/// ```no_run
/// use mproc_process::{Builder, StartMethod};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let h = Builder::new()
///     .name("squarer")
///     .start_method(StartMethod::Spawn)
///     .spawn(square, 12)?;
/// assert_eq!(h.join()?, 144);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    forward: Option<bool>,
}

impl Builder {
    /// The defaults: `Process-N`, not a daemon, the default start method.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the child (default `Process-N`).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Makes the child a daemon (see [`Process::daemon`]).
    pub fn daemon(mut self, daemon: bool) -> Builder {
        self.daemon = daemon;
        self
    }

    /// Chooses the start method (default:
    /// [`get_start_method`](crate::get_start_method)).
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// Forwards the child's output to this process (see
    /// [`Process::forward_output`]).
    pub fn forward_output(mut self, on: bool) -> Builder {
        self.forward = Some(on);
        self
    }

    /// Starts the child running `f` with `args`.
    ///
    /// # Errors
    ///
    /// As [`Process::start`]: [`ProcessError::DaemonCannotStart`] inside a
    /// daemon, [`ProcessError::Encode`] when the arguments cannot be
    /// serialized, [`ProcessError::Io`] when the OS refuses.
    pub fn spawn<F, M>(self, f: F, args: F::Args) -> Result<JoinHandle<F::Output>, ProcessError>
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned + Send,
        M: 'static,
    {
        let (ours, theirs) = UnixStream::pair()?;
        // Read once the child has ended: never wait on it.
        ours.set_nonblocking(true)?;
        let mut process = Process::with_launch(Box::new(SpawnTarget {
            f,
            args,
            results: OwnedFd::from(theirs),
            _m: PhantomData,
        }))
        .daemon(self.daemon);
        if let Some(name) = self.name {
            process = process.name(name);
        }
        if let Some(method) = self.method {
            process = process.start_method(method);
        }
        if let Some(on) = self.forward {
            process = process.forward_output(on);
        }
        process.start()?;
        Ok(JoinHandle {
            process: Some(process),
            results: Some(ours),
            start_error: None,
            _r: PhantomData,
        })
    }
}

/// A child started by [`spawn`]; [`join`](JoinHandle::join) waits for it
/// and returns its function's value.
///
/// Dropping the handle detaches the child, as dropping a thread's handle
/// does: it runs on, is reaped as soon as it ends, and its value is
/// dropped. (At exit the parent still waits for it, as for every
/// non-daemon child.)
pub struct JoinHandle<R> {
    process: Option<Process>,
    results: Option<UnixStream>,
    start_error: Option<ProcessError>,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> JoinHandle<R> {
    fn failed(e: ProcessError) -> JoinHandle<R> {
        JoinHandle {
            process: None,
            results: None,
            start_error: Some(e),
            _r: PhantomData,
        }
    }

    /// Waits for the child to end and returns its function's value.
    ///
    /// A value the child sent stands even if the child was killed after
    /// sending it.
    ///
    /// # Errors
    ///
    /// [`JoinError::Panicked`] when the function panicked (with the
    /// message); [`JoinError::Exited`] when the child exited without a
    /// value (it called [`exit`](crate::exit), or could not run the
    /// function); [`JoinError::Signaled`] when a signal ended it first;
    /// [`JoinError::Result`] when the value could not cross;
    /// [`JoinError::Start`] when the child never started.
    pub fn join(mut self) -> Result<R, JoinError> {
        if let Some(e) = self.start_error.take() {
            return Err(JoinError::Start(e));
        }
        let (Some(process), Some(results)) = (self.process.take(), self.results.take()) else {
            return Err(JoinError::Start(ProcessError::NotStarted));
        };
        process.join().map_err(JoinError::Start)?;
        match take_result(&results) {
            Some(result) => result.map_err(JoinError::Result),
            None => Err(match process.exitcode() {
                Some(n) if n < 0 => JoinError::Signaled { signal: -n },
                code => match process.panic_message() {
                    Some(message) => JoinError::Panicked { message },
                    None => JoinError::Exited {
                        code: code.unwrap_or(-1),
                    },
                },
            }),
        }
    }
}

impl<R> JoinHandle<R> {
    /// The child's process, once started.
    #[cfg(feature = "async")]
    pub(crate) fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    /// Whether the child has ended (a child that never started has).
    pub fn is_finished(&self) -> bool {
        self.process.as_ref().is_none_or(|p| !p.is_alive())
    }

    /// Waits at most `timeout` for the child to end; whether it has (then
    /// [`join`](JoinHandle::join) returns at once).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        match &self.process {
            Some(p) => {
                let _ = p.join_timeout(timeout);
                !p.is_alive()
            }
            None => true,
        }
    }

    /// The child's pid (`None` if it never started).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// The child's name.
    pub fn name(&self) -> Option<&str> {
        self.process.as_ref().map(Process::get_name)
    }

    /// Sends the child SIGTERM; [`join`](JoinHandle::join) then reports
    /// [`JoinError::Signaled`] (unless it had sent its value).
    ///
    /// # Errors
    ///
    /// The OS error from `kill`.
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.process.as_ref().map_or(Ok(()), Process::terminate)
    }

    /// Sends the child SIGKILL, as [`terminate`](JoinHandle::terminate).
    ///
    /// # Errors
    ///
    /// The OS error from `kill`.
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.process.as_ref().map_or(Ok(()), Process::kill)
    }
}

impl<R> Drop for JoinHandle<R> {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            p.detach();
        }
    }
}

impl<R> fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("process", &self.process)
            .field("start_error", &self.start_error)
            .finish()
    }
}

/// Why [`JoinHandle::join`] has no value: `std::thread`'s join error, with
/// what a process adds (an exit code, a signal).
#[derive(Debug)]
#[non_exhaustive]
pub enum JoinError {
    /// The function panicked.
    Panicked {
        /// The panic's message.
        message: String,
    },
    /// The child exited before its function returned: it called
    /// [`exit`](crate::exit), or could not run the function (its arguments
    /// did not decode, or it was sent from another build: code 70).
    Exited {
        /// The exit code.
        code: i32,
    },
    /// A signal ended the child before it sent its value.
    Signaled {
        /// The signal's number (9 for SIGKILL).
        signal: i32,
    },
    /// The value could not cross: it failed to encode in the child or to
    /// decode here.
    Result(String),
    /// The child never started.
    Start(ProcessError),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked { message } => write!(f, "the child panicked: {message}"),
            JoinError::Exited { code } => {
                write!(f, "the child exited with code {code} before returning")
            }
            JoinError::Signaled { signal } => {
                write!(f, "the child was ended by signal {signal} before returning")
            }
            JoinError::Result(e) => write!(f, "the child's result could not be received: {e}"),
            JoinError::Start(e) => write!(f, "the child could not be started: {e}"),
        }
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JoinError::Start(e) => Some(e),
            _ => None,
        }
    }
}

/// A function to run for its value, with the socket to send it on.
struct SpawnTarget<F: Callable<M>, M> {
    f: F,
    args: F::Args,
    results: OwnedFd,
    _m: PhantomData<fn() -> M>,
}

/// The runner of a [`SpawnTarget`] with arguments `A` and result `R`.
fn run_spawned<A, R>(input: BootInput) -> i32
where
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    let body = decode_body::<(RemoteFn<A, R>, A, SharedFd)>(input, "function and arguments");
    let (f, args, results) = match body {
        Ok(v) => v,
        Err(code) => return code,
    };
    match resolve_or_refuse(&f) {
        Ok(f) => send_result(&UnixStream::from(results.into_owned()), &f(args)),
        Err(code) => code,
    }
}

impl<F, M> Launch for SpawnTarget<F, M>
where
    F: Callable<M>,
    F::Args: Serialize + DeserializeOwned,
    F::Output: Serialize + DeserializeOwned + Send,
    M: 'static,
{
    fn run_here(self: Box<Self>) -> i32 {
        let SpawnTarget {
            f, args, results, ..
        } = *self;
        send_result(&UnixStream::from(results), &f.call(args))
    }

    fn encode(self: Box<Self>, header: Header) -> Result<Message, TransferError> {
        let SpawnTarget {
            f, args, results, ..
        } = *self;
        let f: RemoteFn<F::Args, F::Output> = RemoteFn::new(f);
        boot_message(
            header,
            RemoteFn::new(run_spawned::<F::Args, F::Output>),
            &(f, &args, SharedFd::new(results)),
        )
    }
}

/// The first byte of a result message: what follows.
const INLINE: u8 = 1;
const IN_SEGMENT: u8 = 2;
const FAILED: u8 = 3;

/// Results up to this size travel in the message itself: well under any
/// socket buffer (macOS's default is 8 KiB), so the send never waits.
const INLINE_MAX: usize = 2048;

/// Sends the function's value to the parent; the child's exit code.
///
/// Kill points: `spawn.returned` (the value exists, unsent: the join sees
/// the signal) and `spawn.result-sent` (the value stands).
fn send_result<R: Serialize>(sock: &UnixStream, value: &R) -> i32 {
    fault::point("spawn.returned");
    let sent = match transfer::encode(value) {
        Ok(msg) => {
            let reply = if msg.bytes.len() <= INLINE_MAX {
                let mut bytes = Vec::with_capacity(1 + msg.bytes.len());
                bytes.push(INLINE);
                bytes.extend_from_slice(&msg.bytes);
                Ok(Message {
                    bytes,
                    fds: msg.fds,
                })
            } else {
                payload::seal(&msg.bytes).map(|seg| {
                    let mut fds = msg.fds;
                    fds.push(seg);
                    Message {
                        bytes: vec![IN_SEGMENT],
                        fds,
                    }
                })
            };
            reply.and_then(|reply| transfer::send(sock, &reply))
        }
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    match sent {
        Ok(()) => {
            fault::point("spawn.result-sent");
            0
        }
        Err(e) => {
            // Tell the parent why; if even that fails, the exit code does.
            let mut bytes = vec![FAILED];
            bytes.extend_from_slice(e.to_string().as_bytes());
            let _ = transfer::send(
                sock,
                &Message {
                    bytes,
                    fds: FdTable::new(),
                },
            );
            1
        }
    }
}

/// The value the child sent, if it sent one. Its bytes are untrusted: a
/// malformed message is an error, never a panic.
fn take_result<R: DeserializeOwned>(sock: &UnixStream) -> Option<Result<R, String>> {
    let msg = transfer::recv(sock).ok()?;
    let Some((&kind, rest)) = msg.bytes.split_first() else {
        return Some(Err("an empty result message".to_owned()));
    };
    let decoded = match kind {
        INLINE => transfer::decode::<R>(Message {
            bytes: rest.to_vec(),
            fds: msg.fds,
        })
        .map_err(|e| e.to_string()),
        IN_SEGMENT => {
            let mut fds = msg.fds.into_vec();
            match fds.pop().map(payload::open) {
                Some(Ok(bytes)) => {
                    let mut table = FdTable::new();
                    for fd in fds {
                        table.push(fd);
                    }
                    transfer::decode::<R>(Message { bytes, fds: table }).map_err(|e| e.to_string())
                }
                Some(Err(e)) => Err(e.to_string()),
                None => Err("a result message without its segment".to_owned()),
            }
        }
        FAILED => Err(String::from_utf8_lossy(rest).into_owned()),
        _ => Err(format!("a result message of unknown kind {kind}")),
    };
    Some(decoded)
}
