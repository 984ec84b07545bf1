//! The worker side of the local backend: what travels to a worker, and the
//! loop it runs.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use mproc_call::RemoteFn;
use mproc_queue::{Connection, Queue};
use mproc_shm::transfer::{self, FdTable, Message, SharedFd};
use mproc_shm::{fault, RawArray};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backend::Runner;

/// Runs an initializer in a worker: decodes `(RemoteFn<A, ()>, A)` (with
/// the descriptors of the handles inside) and calls it. A panic ends the
/// worker.
pub(crate) type InitRunner = RemoteFn<Message, Result<(), String>>;

/// The initializer runner for `f: A -> ()`.
fn run_init<A: DeserializeOwned + Send + 'static>(input: Message) -> Result<(), String> {
    let (f, a): (RemoteFn<A, ()>, A) = transfer::decode(input)
        .map_err(|e| format!("cannot decode the initializer's arguments: {e}"))?;
    f.call(a).map_err(|e| e.to_string())
}

/// A job on a worker's pipe. Both sides borrow the input: the parent from
/// the bytes it keeps for a resend, the worker from its read buffer.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireJob<'a> {
    pub(crate) seq: u64,
    /// Descriptors that follow on the worker's socket (handles in `input`).
    pub(crate) fds: u32,
    pub(crate) runner: Runner,
    #[serde(with = "serde_bytes", borrow)]
    pub(crate) input: &'a [u8],
}

/// A worker's job pipe, sent and read as bytes (each a [`WireJob`], which
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
    /// A job's outcome: the chunk's encoded results, or why the whole chunk
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

/// The initializer as the parent keeps it: its runner, and its input
/// encoded like a task's, with the descriptors of the handles inside.
#[derive(Clone, Debug)]
pub(crate) struct Init {
    runner: InitRunner,
    bytes: Arc<Vec<u8>>,
    fds: Arc<Vec<OwnedFd>>,
}

impl Init {
    /// The initializer `f(args)`.
    pub(crate) fn new<A>(f: RemoteFn<A, ()>, args: A) -> Result<Init, String>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let msg = transfer::encode(&(f, args)).map_err(|e| e.to_string())?;
        Ok(Init {
            runner: RemoteFn::new(run_init::<A>),
            bytes: Arc::new(msg.bytes),
            fds: Arc::new(msg.fds.into_vec()),
        })
    }

    /// What one worker gets: the bytes, and copies of the descriptors,
    /// which travel with the worker's arguments.
    pub(crate) fn for_worker(&self) -> std::io::Result<InitArgs> {
        Ok(InitArgs {
            runner: self.runner,
            bytes: serde_bytes::ByteBuf::from(self.bytes.to_vec()),
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
    runner: InitRunner,
    bytes: serde_bytes::ByteBuf,
    fds: Vec<SharedFd>,
}

/// Everything a worker needs.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) slot: u32,
    pub(crate) gen: u64,
    pub(crate) jobs: JobPipe,
    /// Carries the descriptors of handles in a job's input.
    pub(crate) fd_socket: SharedFd,
    pub(crate) results: Queue<Msg>,
    /// `started[slot]`: the sequence number of the job this worker runs or
    /// ran last; the parent reads it after the worker dies.
    pub(crate) started: RawArray<u64>,
    /// Jobs before it retires (0: no limit).
    pub(crate) maxtasks: u64,
    pub(crate) init: Option<InitArgs>,
}

/// Reports why a worker gives up, just before it exits with [`BAD_JOB`]: on
/// stderr — a worker has no `tracing` subscriber of its own unless forked
/// from a parent that has one — and as an error event with `tracing`. The
/// parent sees the worker die and replaces it (or breaks the pool).
fn fatal(message: &str) {
    eprintln!("mproc-pool: {message}");
    #[cfg(feature = "tracing")]
    tracing::error!(target: "mproc::pool", pid = std::process::id(), "worker gives up: {message}");
}

/// Exit code of a worker whose job pipe carried something unreadable.
const BAD_JOB: i32 = 70;

/// A worker's life: initializer, then jobs until the parent says "finish",
/// is gone, or it has done `maxtasks`.
pub(crate) fn worker_main(a: WorkerArgs) {
    // Ctrl-C goes to the whole process group; the parent decides what
    // happens to its workers.
    crate::sys::ignore_sigint();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !crate::chunk::in_task() {
            default_hook(info);
        }
    }));
    if let Some(init) = a.init {
        let mut fds = FdTable::new();
        for fd in init.fds {
            fds.push(fd.into_owned());
        }
        let input = Message {
            bytes: init.bytes.into_vec(),
            fds,
        };
        match init.runner.call(input) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                fatal(&why);
                mproc_process::exit(BAD_JOB);
            }
            Err(why) => {
                fatal(&format!("the initializer cannot run here: {why}"));
                mproc_process::exit(BAD_JOB);
            }
        }
    }
    let (slot, gen) = (a.slot, a.gen);
    if a.results.put(Msg::Ready { slot, gen }).is_err() {
        return;
    }
    let fd_socket = std::os::unix::net::UnixStream::from(a.fd_socket.into_owned());
    let mut buf = Vec::new();
    let mut done = 0u64;
    // Until the parent sends the empty job that means "finish", or is gone.
    while a.jobs.recv_bytes_into(&mut buf).is_ok() && !buf.is_empty() {
        fault::point("pool.job-received");
        let Ok(job) = postcard::from_bytes::<WireJob<'_>>(&buf) else {
            fatal("a job could not be read");
            mproc_process::exit(BAD_JOB);
        };
        let fds = if job.fds == 0 {
            FdTable::new()
        } else {
            match transfer::recv(&fd_socket) {
                Ok(m) => m.fds,
                Err(e) => {
                    fatal(&format!("a job's descriptors did not arrive: {e}"));
                    mproc_process::exit(BAD_JOB);
                }
            }
        };
        let _ = a.started.set(slot as usize, job.seq);
        fault::point("pool.job-recorded");
        let input = Message {
            bytes: job.input.to_vec(),
            fds,
        };
        let out = match job.runner.call(input) {
            Ok(r) => r.map(serde_bytes::ByteBuf::from),
            Err(why) => Err(why.to_string()),
        };
        let msg = Msg::Done {
            slot,
            gen,
            seq: job.seq,
            out,
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
