//! What a child runs: a function with its arguments, or a [`Target`]
//! struct, sent to the child as a [`RemoteFn`] and checked there.
//!
//! A target reaches its child in one of two ways. A forked child has it in
//! memory and calls it ([`Launch::run_here`]). A spawned or forkserver child
//! gets the boot message ([`Launch::encode`]): a [`Header`] that names the
//! target's *runner* — a function generic over the target's types, named
//! by a [`RemoteFn`] — and a body the runner decodes. The child checks the
//! runner's build id before anything runs, and the runner checks the user's
//! function (itself a `RemoteFn` in the body) the same way: no address
//! from another process becomes code unchecked.

use std::fmt;
use std::marker::PhantomData;

use mproc_call::{Callable, RemoteFn};
use mproc_shm::transfer::{self, Message, TransferError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::boot::{BootInput, Header, Runner, BOOT_FAILED};

/// What a [`Process`](crate::Process) target's return value means for the
/// exit code. To get a value back from a child, use
/// [`spawn`](crate::spawn) instead.
///
/// A `Process` target that returns a value does not compile (the message
/// points to `spawn`):
///
/// ```compile_fail
/// fn square(x: u64) -> u64 { x * x }
/// let p = mproc_process::Process::new(square, 7);
/// ```
#[diagnostic::on_unimplemented(
    message = "a `Process` target cannot return `{Self}`",
    label = "this function returns `{Self}`",
    note = "a `Process` target returns `()` or a `Result` (which set its exit code); \
            to get a value back from a child, use `spawn(f, args)` and `join()`"
)]
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
pub(crate) trait Launch: Send {
    /// Runs it in this (forked) process; the exit code.
    fn run_here(self: Box<Self>) -> i32;
    /// The boot message: `header`, the runner, then the body.
    fn encode(self: Box<Self>, header: Header) -> Result<Message, TransferError>;
}

/// The header, the runner, then the body the runner decodes (a spawned
/// child decodes the first two as a prefix, `(Header, Runner)`).
#[derive(Serialize)]
struct Boot<'a, B: Serialize> {
    header: Header,
    runner: Runner,
    body: &'a B,
}

/// The boot message for a runner and its body.
pub(crate) fn boot_message<B: Serialize>(
    header: Header,
    runner: Runner,
    body: &B,
) -> Result<Message, TransferError> {
    transfer::encode(&Boot {
        header,
        runner,
        body,
    })
}

/// Decodes a runner's body; a body that does not decode is reported and
/// ends the child with [`BOOT_FAILED`].
pub(crate) fn decode_body<B: DeserializeOwned>(input: BootInput, what: &str) -> Result<B, i32> {
    transfer::decode(Message {
        bytes: input.body,
        fds: input.fds,
    })
    .map_err(|e| {
        crate::report::fatal(&format!("cannot decode the child's {what}: {e}"));
        BOOT_FAILED
    })
}

/// A function and its arguments.
pub(crate) struct FnTarget<F: Callable<M>, M> {
    pub(crate) f: F,
    pub(crate) args: F::Args,
    pub(crate) _m: PhantomData<fn() -> M>,
}

/// The runner of a [`FnTarget`] with arguments `A` and result `R`.
fn run_fn<A, R>(input: BootInput) -> i32
where
    A: DeserializeOwned + 'static,
    R: Outcome + 'static,
{
    let (f, args) = match decode_body::<(RemoteFn<A, R>, A)>(input, "function and arguments") {
        Ok(v) => v,
        Err(code) => return code,
    };
    match resolve_or_refuse(&f) {
        Ok(f) => f(args).exit_code(),
        Err(code) => code,
    }
}

/// Resolves the function a child was sent; one from another build (or of
/// other types) is reported and ends the child with [`BOOT_FAILED`].
pub(crate) fn resolve_or_refuse<A, R>(f: &RemoteFn<A, R>) -> Result<fn(A) -> R, i32>
where
    A: 'static,
    R: 'static,
{
    f.resolve().map_err(|e| {
        crate::report::fatal(&format!("refused to run the child's function: {e}"));
        BOOT_FAILED
    })
}

impl<F, M> Launch for FnTarget<F, M>
where
    F: Callable<M>,
    F::Args: Serialize + DeserializeOwned,
    F::Output: Outcome,
    M: 'static,
{
    fn run_here(self: Box<Self>) -> i32 {
        self.f.call(self.args).exit_code()
    }

    fn encode(self: Box<Self>, header: Header) -> Result<Message, TransferError> {
        let f: RemoteFn<F::Args, F::Output> = RemoteFn::new(self.f);
        boot_message(
            header,
            RemoteFn::new(run_fn::<F::Args, F::Output>),
            &(f, &self.args),
        )
    }
}

/// A [`Target`] struct.
pub(crate) struct StructTarget<T>(pub(crate) T);

/// The runner of a [`StructTarget`] of type `T`.
fn run_struct<T: Target>(input: BootInput) -> i32 {
    match decode_body::<T>(input, "target") {
        Ok(t) => {
            t.run();
            0
        }
        Err(code) => code,
    }
}

impl<T: Target> Launch for StructTarget<T> {
    fn run_here(self: Box<Self>) -> i32 {
        self.0.run();
        0
    }

    fn encode(self: Box<Self>, header: Header) -> Result<Message, TransferError> {
        boot_message(header, RemoteFn::new(run_struct::<T>), &self.0)
    }
}
