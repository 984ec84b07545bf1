//! The worker side: what travels to a worker, and the loop it runs.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use std::os::fd::OwnedFd;
use std::sync::Arc;

use mproc_process::FnOffset;
use mproc_queue::{Connection, Queue};
use mproc_shm::transfer::{self, FdTable, Message, SharedFd};
use mproc_shm::{fault, RawArray};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Runs a chunk: decodes `Vec<A>` from `args` (with the descriptors of the
/// handles inside, if any), calls the task on each item, and encodes a
/// [`ChunkOut`] (a panic's message as an item's `Err`) into `out`.
/// `Err` when the chunk as a whole cannot be decoded or encoded.
pub(crate) type Trampoline =
    fn(FnOffset, &[u8], Option<FdTable>, &mut Vec<u8>) -> Result<(), String>;

/// Runs an initializer: decodes `A` (with the descriptors of the handles
/// inside) and calls it. A panic ends the worker.
pub(crate) type InitTrampoline = fn(FnOffset, &[u8], FdTable) -> Result<(), String>;

/// A task's function and the trampoline for its types.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub(crate) trampoline: FnOffset,
    pub(crate) f: FnOffset,
}

impl Call {
    pub(crate) fn new<A, R>(f: fn(A) -> R) -> Call
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        Call {
            trampoline: FnOffset::of(run_chunk::<A, R> as Trampoline as usize),
            f: FnOffset::of(f as usize),
        }
    }

    pub(crate) fn star<A, B, R>(f: fn(A, B) -> R) -> Call
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        Call {
            trampoline: FnOffset::of(run_star_chunk::<A, B, R> as Trampoline as usize),
            f: FnOffset::of(f as usize),
        }
    }
}

thread_local! {
    /// Set while a task runs: its panics are reported to the parent, not
    /// printed here (CPython's workers print nothing either).
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    IN_TASK.with(|t| t.set(true));
    let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_text(&*p));
    IN_TASK.with(|t| t.set(false));
    r
}

/// A chunk's outcome as a worker encodes it: every item's result when all
/// succeeded (the common case, one tag for the chunk), or each item's.
#[derive(Serialize)]
enum ChunkOutRef<'a, R> {
    All(&'a [R]),
    Each(&'a [Result<R, String>]),
}

/// [`ChunkOutRef`] as the parent decodes it.
#[derive(Deserialize)]
pub(crate) enum ChunkOut<R> {
    All(Vec<R>),
    Each(Vec<Result<R, String>>),
}

/// Runs the task over the items, then encodes the outcome into `out`.
fn run_items<T, R: Serialize>(
    items: Vec<T>,
    mut f: impl FnMut(T) -> R,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut all: Vec<R> = Vec::with_capacity(items.len());
    let mut each: Option<Vec<Result<R, String>>> = None;
    for item in items {
        let r = guarded(|| f(item));
        match (&mut each, r) {
            (Some(each), r) => each.push(r),
            (None, Ok(v)) => all.push(v),
            (None, Err(e)) => {
                let mut v: Vec<Result<R, String>> = all.drain(..).map(Ok).collect();
                v.push(Err(e));
                each = Some(v);
            }
        }
    }
    let outcome = match &each {
        None => ChunkOutRef::All(&all),
        Some(each) => ChunkOutRef::Each(each),
    };
    out.clear();
    *out = postcard::to_extend(&outcome, std::mem::take(out))
        .map_err(|e| format!("cannot encode the task's results: {e}"))?;
    Ok(())
}

/// Decodes a chunk's arguments; handles inside get their descriptors.
fn decode_args<T: DeserializeOwned>(args: &[u8], fds: Option<FdTable>) -> Result<T, String> {
    let why = |e: &dyn std::fmt::Display| format!("cannot decode the task's arguments: {e}");
    match fds {
        None => postcard::from_bytes(args).map_err(|e| why(&e)),
        Some(fds) => transfer::decode(Message {
            bytes: args.to_vec(),
            fds,
        })
        .map_err(|e| why(&e)),
    }
}

fn run_chunk<A: DeserializeOwned, R: Serialize>(
    f: FnOffset,
    args: &[u8],
    fds: Option<FdTable>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let items: Vec<A> = decode_args(args, fds)?;
    // SAFETY: `f` is the offset of a `fn(A) -> R` taken by the parent, which
    // runs this same binary, and this trampoline was chosen for exactly A and
    // R (see `Call::new`).
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(f.address()) };
    run_items(items, f, out)
}

fn run_star_chunk<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    f: FnOffset,
    args: &[u8],
    fds: Option<FdTable>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let items: Vec<(A, B)> = decode_args(args, fds)?;
    // SAFETY: as in `run_chunk`, for a `fn(A, B) -> R` (see `Call::star`).
    let f = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(f.address()) };
    run_items(items, |(a, b)| f(a, b), out)
}

pub(crate) fn run_init<A: DeserializeOwned>(
    f: FnOffset,
    args: &[u8],
    fds: FdTable,
) -> Result<(), String> {
    let a: A = transfer::decode(Message {
        bytes: args.to_vec(),
        fds,
    })
    .map_err(|e| format!("cannot decode the initializer's arguments: {e}"))?;
    // SAFETY: `f` is the offset of a `fn(A)` taken by the parent from this
    // same binary; this trampoline was chosen for exactly A.
    let f = unsafe { std::mem::transmute::<usize, fn(A)>(f.address()) };
    f(a);
    Ok(())
}

/// A job on a worker's pipe. Both sides borrow the arguments: the parent
/// from the bytes it keeps for a resend, the worker from its read buffer.
#[derive(Serialize, Deserialize)]
pub(crate) struct Job<'a> {
    pub(crate) seq: u64,
    /// Descriptors that follow on the worker's socket (handles in `args`).
    pub(crate) fds: u32,
    pub(crate) trampoline: FnOffset,
    pub(crate) f: FnOffset,
    #[serde(with = "serde_bytes", borrow)]
    pub(crate) args: &'a [u8],
}

/// A worker's job pipe, sent and read as bytes (each a [`Job`], which
/// borrows and so cannot be the pipe's own item type).
pub(crate) type JobPipe = Connection<Jobs>;

/// Names the job pipe's contents, for its type fingerprint.
#[derive(Serialize, Deserialize)]
pub(crate) struct Jobs;

/// What workers (and the parent's own watchers) tell the result thread.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Msg {
    /// The worker's initializer is done; it takes jobs.
    Ready { slot: u32, gen: u64 },
    /// A job's outcome: an encoded [`ChunkOut`], or why the whole chunk
    /// failed.
    Done {
        slot: u32,
        gen: u64,
        seq: u64,
        out: Result<serde_bytes::ByteBuf, String>,
    },
    /// The worker has ended (sent by its watcher thread in the parent).
    Exited { slot: u32, gen: u64 },
}

/// The initializer as the parent keeps it: its arguments encoded like a
/// task's, with the descriptors of the handles inside.
#[derive(Clone, Debug)]
pub(crate) struct Init {
    pub(crate) trampoline: FnOffset,
    pub(crate) f: FnOffset,
    pub(crate) args: Arc<Vec<u8>>,
    pub(crate) fds: Arc<Vec<OwnedFd>>,
}

impl Init {
    /// What one worker gets: the bytes, and copies of the descriptors,
    /// which travel with the worker's arguments.
    pub(crate) fn for_worker(&self) -> std::io::Result<InitArgs> {
        Ok(InitArgs {
            trampoline: self.trampoline,
            f: self.f,
            args: serde_bytes::ByteBuf::from(self.args.to_vec()),
            fds: self
                .fds
                .iter()
                .map(|fd| fd.try_clone().map(SharedFd::new))
                .collect::<std::io::Result<_>>()?,
        })
    }
}

/// The initializer as a worker receives it.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct InitArgs {
    trampoline: FnOffset,
    f: FnOffset,
    args: serde_bytes::ByteBuf,
    fds: Vec<SharedFd>,
}

/// Everything a worker needs.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) slot: u32,
    pub(crate) gen: u64,
    pub(crate) jobs: JobPipe,
    /// Carries the descriptors of handles in a job's arguments.
    pub(crate) fd_socket: SharedFd,
    pub(crate) results: Queue<Msg>,
    /// `started[slot]`: the sequence number of the job this worker runs or
    /// ran last; the parent reads it after the worker dies.
    pub(crate) started: RawArray<u64>,
    /// Jobs before it retires (0: no limit).
    pub(crate) maxtasks: u64,
    pub(crate) init: Option<InitArgs>,
}

/// Exit code of a worker whose job pipe carried something unreadable.
const BAD_JOB: i32 = 70;

/// A worker's life: initializer, then jobs until the pipe closes or it has
/// done `maxtasks`.
pub(crate) fn worker_main(a: WorkerArgs) {
    // Ctrl-C goes to the whole process group; the parent decides what
    // happens to its workers.
    crate::sys::ignore_sigint();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_TASK.with(Cell::get) {
            default_hook(info);
        }
    }));
    if let Some(init) = a.init {
        // SAFETY: the parent took this offset from `run_init::<A>` as an
        // `InitTrampoline` in this same binary.
        let t = unsafe { std::mem::transmute::<usize, InitTrampoline>(init.trampoline.address()) };
        let mut fds = FdTable::new();
        for fd in init.fds {
            fds.push(fd.into_owned());
        }
        if let Err(why) = t(init.f, &init.args, fds) {
            eprintln!("mproc-pool: {why}");
            mproc_process::exit(BAD_JOB);
        }
    }
    let (slot, gen) = (a.slot, a.gen);
    if a.results.put(Msg::Ready { slot, gen }).is_err() {
        return;
    }
    let fd_socket = std::os::unix::net::UnixStream::from(a.fd_socket.into_owned());
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut done = 0u64;
    // Until the parent sends the empty job that means "finish", or is gone.
    while a.jobs.recv_bytes_into(&mut buf).is_ok() && !buf.is_empty() {
        fault::point("pool.job-received");
        let Ok(job) = postcard::from_bytes::<Job<'_>>(&buf) else {
            eprintln!("mproc-pool: a job could not be read");
            mproc_process::exit(BAD_JOB);
        };
        let fds = if job.fds == 0 {
            None
        } else {
            match transfer::recv(&fd_socket) {
                Ok(m) => Some(m.fds),
                Err(e) => {
                    eprintln!("mproc-pool: a job's descriptors did not arrive: {e}");
                    mproc_process::exit(BAD_JOB);
                }
            }
        };
        let _ = a.started.set(slot as usize, job.seq);
        fault::point("pool.job-recorded");
        // SAFETY: the parent took this offset from a `Trampoline` of this
        // same binary (`Call::new` or `Call::star`).
        let t = unsafe { std::mem::transmute::<usize, Trampoline>(job.trampoline.address()) };
        let outcome = t(job.f, job.args, fds, &mut out)
            .map(|()| serde_bytes::ByteBuf::from(std::mem::take(&mut out)));
        let msg = Msg::Done {
            slot,
            gen,
            seq: job.seq,
            out: outcome,
        };
        if a.results.put(msg).is_err() {
            return;
        }
        fault::point("pool.result-sent");
        done += 1;
        if a.maxtasks != 0 && done >= a.maxtasks {
            return;
        }
    }
}
