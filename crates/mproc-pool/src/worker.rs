//! The worker side of the local backend: what travels to a worker, and the
//! loop it runs.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// What the parent puts on a worker's job pipe (an empty message, not one
/// of these, means "finish").
#[derive(Serialize, Deserialize)]
pub(crate) enum Wire<'a> {
    /// A job to run, unless the parent has taken it back.
    #[serde(borrow)]
    Job(WireJob<'a>),
    /// The parent took back every job before this message that the worker
    /// had not started ([`Gates::revoke`]); the jobs after it stand.
    Resume,
}

/// Each worker's gate: one shared word per slot, `started << 1 | revoked`.
///
/// `started` is the sequence number of the job the worker runs or ran
/// last: after a worker dies, the parent fails the jobs up to it
/// (`WorkerDied`) and sends the later ones again. `revoked` is how the
/// parent takes back the jobs a worker holds but has not started, to give
/// them to an idle worker. Both sides change the word only by
/// compare-and-swap, so a job is either started by its worker or taken
/// back by the parent, never both:
///
/// - the worker starts job `s` by swapping `started << 1` for `s << 1`;
///   finding the bit set, it skips the job (its owner is the parent now);
/// - the parent revokes by swapping `started << 1` for `started << 1 | 1`,
///   holding the worker's pipe, and then sends [`Wire::Resume`]; every job
///   after `started` that it had sent goes back to its backlog;
/// - the worker clears the bit when it reads `Resume`: jobs sent after it
///   were never revoked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Gates(RawArray<u64>);

impl Gates {
    pub(crate) fn new(workers: usize) -> std::io::Result<Gates> {
        RawArray::new(workers).map(Gates)
    }

    fn word(&self, slot: usize) -> Option<&AtomicU64> {
        let seg = self.0.segment();
        (slot < self.0.len()).then_some(())?;
        seg.atomic_u64(self.0.offset() + slot * 8)
    }

    /// A new worker in `slot` has started nothing.
    pub(crate) fn reset(&self, slot: usize) {
        if let Some(w) = self.word(slot) {
            w.store(0, Ordering::Release);
        }
    }

    /// The sequence number of the job the worker in `slot` runs or ran last.
    pub(crate) fn started(&self, slot: usize) -> u64 {
        self.word(slot)
            .map_or(0, |w| w.load(Ordering::Acquire) >> 1)
    }

    /// The parent has taken jobs back from the worker in `slot`, which has
    /// not yet read the `Resume` that follows them.
    pub(crate) fn revoked(&self, slot: usize) -> bool {
        self.word(slot)
            .is_some_and(|w| w.load(Ordering::Acquire) & 1 == 1)
    }

    /// The worker starts job `seq`: `false` when the parent has taken it
    /// back.
    pub(crate) fn claim(&self, slot: usize, seq: u64) -> bool {
        let Some(w) = self.word(slot) else {
            return false;
        };
        let mut g = w.load(Ordering::Acquire);
        loop {
            if g & 1 == 1 {
                return false;
            }
            match w.compare_exchange_weak(g, seq << 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => g = now,
            }
        }
    }

    /// The worker read [`Wire::Resume`]: the jobs after it are its own.
    pub(crate) fn resume(&self, slot: usize) {
        if let Some(w) = self.word(slot) {
            w.fetch_and(!1, Ordering::AcqRel);
        }
    }

    /// The parent takes back every job the worker in `slot` has not
    /// started: `Some(started)` — the jobs after it are the parent's — or
    /// `None` when the worker started a job meanwhile or has not yet read
    /// the last `Resume` (try again later).
    pub(crate) fn revoke(&self, slot: usize) -> Option<u64> {
        let w = self.word(slot)?;
        let g = w.load(Ordering::Acquire);
        if g & 1 == 1 {
            return None;
        }
        w.compare_exchange(g, g | 1, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|g| g >> 1)
    }
}

/// A worker's job pipe, sent and read as bytes (each a [`Wire`], which
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
    /// The workers' gates: which job this one runs or ran last (the parent
    /// reads it after the worker dies), and the jobs the parent took back.
    pub(crate) gates: Gates,
    /// Jobs before it retires (0: no limit).
    pub(crate) maxtasks: u64,
    /// Resident bytes past which it retires after a job (0: no limit).
    pub(crate) max_memory: u64,
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
        let job = match postcard::from_bytes::<Wire<'_>>(&buf) {
            Ok(Wire::Job(job)) => job,
            Ok(Wire::Resume) => {
                a.gates.resume(slot as usize);
                continue;
            }
            Err(_) => {
                fatal("a job could not be read");
                mproc_process::exit(BAD_JOB);
            }
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
        if !a.gates.claim(slot as usize, job.seq) {
            // Taken back for another worker (its descriptors, read above,
            // close here).
            fault::point("pool.job-skipped");
            continue;
        }
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
        if a.max_memory != 0 && crate::sys::resident_bytes().is_some_and(|b| b > a.max_memory) {
            // Retire: the parent sends the jobs queued behind to others.
            fault::point("pool.memory-retire");
            return;
        }
    }
}
