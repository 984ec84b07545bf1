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
use crate::itemlog::{self, ItemLog};

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
    /// A run: its items are separate tasks, each reported on its own
    /// ([`Msg::Item`]); the items before `skip` ran in an earlier delivery,
    /// and their results hold `fd_base` descriptors.
    pub(crate) run: Option<RunFrom>,
}

/// Where a run starts again (see [`WireJob::run`]).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct RunFrom {
    pub(crate) skip: u32,
    pub(crate) fd_base: u32,
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
    /// Several jobs, in sequence order, each run (or skipped) as if it had
    /// come alone: one message for a batch that the parent sent together.
    #[serde(borrow)]
    Batch(Vec<WireJob<'a>>),
}

/// Each worker's gate: two shared words per slot. The first is
/// `started << 3 | done << 2 | stop << 1 | revoked`; the second, in a run
/// (a job whose items are separate tasks), is 1 + the index of the item
/// the worker started last (0: none yet).
///
/// A worker starting a run sets the item word to the run's first task
/// before it claims the run, and to each task before it starts it; it
/// reports each task's result before it starts the next. So after it dies, the items of its run before the
/// started one were reported, the started one — unless its result came —
/// failed with `WorkerDied`, and the rest never ran.
///
/// `started` is the sequence number of the job the worker runs or ran
/// last, and `done` says it has finished it: after a worker dies, the
/// parent fails the job it was running (`WorkerDied`) and sends the later
/// ones again. `revoked` is how the parent takes back the jobs a worker
/// holds but has not started, to give them to an idle worker; `stop` is
/// how it stops the job running now (past its timeout, or cancelled) before
/// it kills the worker. Both sides change the word only by atomic
/// read-modify-write, so each decision is made on the word's one history:
///
/// - the worker starts job `s` by swapping the word for `s << 3`; finding
///   `revoked` set, it skips the job (its owner is the parent now); finding
///   `stop` set, it starts nothing more and exits;
/// - it sets `done` when the job has finished, before it sends the result;
/// - the parent revokes by setting `revoked` on a word without `stop` or
///   `revoked`, holding the worker's pipe, and then sends [`Wire::Resume`];
///   every job after `started` that it had sent goes back to its backlog;
///   the worker clears `revoked` when it reads `Resume`: jobs sent after it
///   were never revoked;
/// - the parent stops job `s` by setting `stop` on a word whose `started`
///   is `s` without `done`: so a kill never lands on a job that finished,
///   nor on the next one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Gates(RawArray<u64>);

const REVOKED: u64 = 1;
const STOP: u64 = 2;
const DONE: u64 = 4;
const SHIFT: u32 = 3;

/// What the worker may do with a job it read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Run it.
    Run,
    /// The parent took it back: skip it.
    Skip,
    /// The parent is stopping this worker: start nothing more.
    Stop,
}

impl Gates {
    pub(crate) fn new(workers: usize) -> std::io::Result<Gates> {
        RawArray::new(workers * 2).map(Gates)
    }

    fn at(&self, index: usize) -> Option<&AtomicU64> {
        let seg = self.0.segment();
        (index < self.0.len()).then_some(())?;
        seg.atomic_u64(self.0.offset() + index * 8)
    }

    fn word(&self, slot: usize) -> Option<&AtomicU64> {
        self.at(slot.checked_mul(2)?)
    }

    fn item_word(&self, slot: usize) -> Option<&AtomicU64> {
        self.at(slot.checked_mul(2)?.checked_add(1)?)
    }

    /// A new worker in `slot` has started nothing.
    pub(crate) fn reset(&self, slot: usize) {
        for w in [self.word(slot), self.item_word(slot)]
            .into_iter()
            .flatten()
        {
            w.store(0, Ordering::Release);
        }
    }

    /// The worker in `slot` starts item `index` of its run.
    pub(crate) fn start_item(&self, slot: usize, index: usize) {
        if let Some(w) = self.item_word(slot) {
            w.store(index as u64 + 1, Ordering::Release);
        }
    }

    /// The item of its run the worker in `slot` started last, if any.
    pub(crate) fn started_item(&self, slot: usize) -> Option<usize> {
        let w = self.item_word(slot)?.load(Ordering::Acquire);
        w.checked_sub(1).and_then(|i| usize::try_from(i).ok())
    }

    /// The sequence number of the job the worker in `slot` runs or ran last.
    pub(crate) fn started(&self, slot: usize) -> u64 {
        self.word(slot)
            .map_or(0, |w| w.load(Ordering::Acquire) >> SHIFT)
    }

    /// The parent has taken jobs back from the worker in `slot`, which has
    /// not yet read the `Resume` that follows them.
    pub(crate) fn revoked(&self, slot: usize) -> bool {
        self.word(slot)
            .is_some_and(|w| w.load(Ordering::Acquire) & REVOKED != 0)
    }

    /// The worker starts job `seq`, unless the parent took it back or is
    /// stopping the worker.
    pub(crate) fn claim(&self, slot: usize, seq: u64) -> Claim {
        let Some(w) = self.word(slot) else {
            return Claim::Stop;
        };
        let mut g = w.load(Ordering::Acquire);
        loop {
            if g & STOP != 0 {
                return Claim::Stop;
            }
            if g & REVOKED != 0 {
                return Claim::Skip;
            }
            match w.compare_exchange_weak(g, seq << SHIFT, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Claim::Run,
                Err(now) => g = now,
            }
        }
    }

    /// The worker has finished the job it started (before it sends the
    /// result).
    pub(crate) fn finish(&self, slot: usize) {
        if let Some(w) = self.word(slot) {
            w.fetch_or(DONE, Ordering::AcqRel);
        }
    }

    /// The worker read [`Wire::Resume`]: the jobs after it are its own.
    pub(crate) fn resume(&self, slot: usize) {
        if let Some(w) = self.word(slot) {
            w.fetch_and(!REVOKED, Ordering::AcqRel);
        }
    }

    /// The parent takes back every job the worker in `slot` has not
    /// started: `Some(started)` — the jobs after it are the parent's — or
    /// `None` when the worker started a job meanwhile, has not yet read the
    /// last `Resume`, or is being stopped (try again later, or not at all).
    pub(crate) fn revoke(&self, slot: usize) -> Option<u64> {
        let w = self.word(slot)?;
        let g = w.load(Ordering::Acquire);
        if g & (REVOKED | STOP) != 0 {
            return None;
        }
        w.compare_exchange(g, g | REVOKED, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|g| g >> SHIFT)
    }

    /// The parent stops job `seq` of the worker in `slot`: `true` if the
    /// worker runs it now (it has started and not finished it); from then
    /// on the worker starts nothing more, and the parent kills it.
    pub(crate) fn stop(&self, slot: usize, seq: u64) -> bool {
        let Some(w) = self.word(slot) else {
            return false;
        };
        let mut g = w.load(Ordering::Acquire);
        loop {
            if g >> SHIFT != seq || g & (DONE | STOP) != 0 {
                return false;
            }
            match w.compare_exchange_weak(g, g | STOP, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => g = now,
            }
        }
    }

    /// Whether the worker in `slot` runs job `seq` now.
    pub(crate) fn running(&self, slot: usize, seq: u64) -> bool {
        self.word(slot).is_some_and(|w| {
            let g = w.load(Ordering::Acquire);
            g >> SHIFT == seq && g & DONE == 0
        })
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
        /// Descriptors of handles in `out`, sent before on the worker's
        /// socket.
        fds: u32,
    },
    /// The worker has ended (sent by its watcher thread in the parent).
    Exited { slot: u32, gen: u64 },
    /// One item of a run: its result encoded on its own, or why it failed.
    /// The run's `Done` follows its last item.
    Item {
        slot: u32,
        gen: u64,
        seq: u64,
        index: u32,
        out: Result<serde_bytes::ByteBuf, ItemFailure>,
        /// Descriptors of handles in `out`, sent before on the worker's
        /// socket.
        fds: u32,
    },
}

/// Why one item of a run failed in the worker.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum ItemFailure {
    Panicked(String),
    Refused(String),
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
    /// Where it writes the results of a run's tasks.
    pub(crate) items: ItemLog,
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
    // Spinning for the next job must not keep a core from the parent's
    // threads that will send it.
    mproc_sync::wait::yield_while_spinning(true);
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
    let cx = Worker {
        slot,
        gen,
        items: a.items,
        fd_socket: Arc::new(std::os::unix::net::UnixStream::from(
            a.fd_socket.into_owned(),
        )),
        results: a.results,
        gates: a.gates,
        maxtasks: a.maxtasks,
        max_memory: a.max_memory,
    };
    let mut buf = Vec::new();
    let mut done = 0u64;
    // Until the parent sends the empty job that means "finish", or is gone.
    while a.jobs.recv_bytes_into(&mut buf).is_ok() && !buf.is_empty() {
        fault::point("pool.job-received");
        let jobs = match postcard::from_bytes::<Wire<'_>>(&buf) {
            Ok(Wire::Job(job)) => vec![job],
            Ok(Wire::Batch(jobs)) => jobs,
            Ok(Wire::Resume) => {
                cx.gates.resume(slot as usize);
                continue;
            }
            Err(_) => {
                fatal("a job could not be read");
                mproc_process::exit(BAD_JOB);
            }
        };
        for job in jobs {
            if !run_job(&cx, job, &mut done) {
                return;
            }
        }
    }
}

/// A result's bytes, its handles' descriptors sent first on the socket
/// (the parent reads them when it reads the result): the bytes and how
/// many descriptors went.
fn carry(
    socket: &std::os::unix::net::UnixStream,
    m: Message,
) -> Result<(serde_bytes::ByteBuf, u32), String> {
    let n = m.fds.len() as u32;
    if n > 0 {
        let fds = Message {
            bytes: Vec::new(),
            fds: m.fds,
        };
        transfer::send(socket, &fds)
            .map_err(|e| format!("cannot send the results' handles: {e}"))?;
    }
    Ok((serde_bytes::ByteBuf::from(m.bytes), n))
}

/// What a running worker keeps of its [`WorkerArgs`].
struct Worker {
    slot: u32,
    gen: u64,
    items: ItemLog,
    fd_socket: Arc<std::os::unix::net::UnixStream>,
    results: Queue<Msg>,
    gates: Gates,
    maxtasks: u64,
    max_memory: u64,
}

/// The worker's side of a run: reports each item as it ends.
struct Reporter {
    slot: u32,
    gen: u64,
    seq: u64,
    from: RunFrom,
    items: ItemLog,
    results: Queue<Msg>,
    gates: Gates,
    fd_socket: Arc<std::os::unix::net::UnixStream>,
    /// A report could not be sent: the parent is gone.
    failed: bool,
}

impl crate::chunk::RunSink for Reporter {
    fn skip(&self) -> usize {
        self.from.skip as usize
    }

    fn fd_base(&self) -> u32 {
        self.from.fd_base
    }

    fn start(&mut self, index: usize) {
        self.gates.start_item(self.slot as usize, index);
        fault::point("pool.item-started");
    }

    fn done(&mut self, index: usize, outcome: Result<Message, crate::TaskError>) -> Option<u32> {
        // Into the item log if it fits (no handles, room now); otherwise
        // as a message, which the parent takes only after reading the log.
        let logged = match &outcome {
            Ok(m) if m.fds.is_empty() => {
                self.items
                    .append(self.seq, index as u32, itemlog::OK, &m.bytes)
            }
            Ok(_) => false,
            Err(crate::TaskError::Panicked { message }) => self.items.append(
                self.seq,
                index as u32,
                itemlog::PANICKED,
                message.as_bytes(),
            ),
            Err(other) => self.items.append(
                self.seq,
                index as u32,
                itemlog::REFUSED,
                other.to_string().as_bytes(),
            ),
        };
        if logged {
            fault::point("pool.item-sent");
            return Some(0);
        }
        let (out, fds) = match outcome {
            Ok(m) => match carry(&self.fd_socket, m) {
                Ok((bytes, n)) => (Ok(bytes), n),
                Err(why) => (Err(ItemFailure::Refused(why)), 0),
            },
            Err(crate::TaskError::Panicked { message }) => (Err(ItemFailure::Panicked(message)), 0),
            Err(other) => (Err(ItemFailure::Refused(other.to_string())), 0),
        };
        let msg = Msg::Item {
            slot: self.slot,
            gen: self.gen,
            seq: self.seq,
            index: index as u32,
            out,
            fds,
        };
        if self.results.put(msg).is_err() {
            self.failed = true;
            return None;
        }
        fault::point("pool.item-sent");
        Some(fds)
    }

    fn stopped(&self) -> bool {
        self.failed
    }
}

/// Runs one job the worker read (or skips it, when the parent took it
/// back); `false` when the worker must end: the parent is stopping it, is
/// gone, or it has done its `maxtasks` or outgrown `max_memory`.
fn run_job(a: &Worker, job: WireJob<'_>, done: &mut u64) -> bool {
    let (slot, gen, fd_socket) = (a.slot, a.gen, &a.fd_socket);
    let fds = if job.fds == 0 {
        FdTable::new()
    } else {
        match transfer::recv(fd_socket) {
            Ok(m) => m.fds,
            Err(e) => {
                fatal(&format!("a job's descriptors did not arrive: {e}"));
                mproc_process::exit(BAD_JOB);
            }
        }
    };
    if let Some(from) = job.run {
        // Before the claim, the first task to run counts as started: a
        // death anywhere from the claim on (decoding the run's input, say)
        // fails that task, never none — a run that kills every worker
        // before its first task would otherwise go round for ever.
        a.gates.start_item(slot as usize, from.skip as usize);
    }
    match a.gates.claim(slot as usize, job.seq) {
        Claim::Run => {}
        Claim::Skip => {
            // Taken back for another worker (its descriptors, read
            // above, close here).
            fault::point("pool.job-skipped");
            return true;
        }
        // The parent is about to kill this worker.
        Claim::Stop => return false,
    }
    fault::point("pool.job-recorded");
    let input = Message {
        bytes: job.input.to_vec(),
        fds,
    };
    let (out, gone) = match job.run {
        None => (job.runner.call(input), false),
        Some(from) => {
            let reporter = Reporter {
                slot,
                gen,
                seq: job.seq,
                from,
                items: a.items.clone(),
                results: a.results.clone(),
                gates: a.gates.clone(),
                fd_socket: a.fd_socket.clone(),
                failed: false,
            };
            let (out, sink) = crate::chunk::with_run(Box::new(reporter), || job.runner.call(input));
            (out, sink.stopped())
        }
    };
    if gone {
        return false;
    }
    let out = match out {
        Ok(r) => r,
        Err(why) => Err(why.to_string()),
    };
    a.gates.finish(slot as usize);
    // Handles in the results: their descriptors go first, on the
    // socket; the parent reads them when it reads the result.
    let (out, fds) = match out.and_then(|m| carry(fd_socket, m)) {
        Ok((bytes, n)) => (Ok(bytes), n),
        Err(why) => (Err(why), 0),
    };
    let msg = Msg::Done {
        slot,
        gen,
        seq: job.seq,
        out,
        fds,
    };
    if a.results.put(msg).is_err() {
        return false;
    }
    fault::point("pool.result-sent");
    *done += 1;
    if a.maxtasks != 0 && *done >= a.maxtasks {
        return false;
    }
    if a.max_memory != 0 && crate::sys::resident_bytes().is_some_and(|b| b > a.max_memory) {
        // Retire: the parent sends the jobs queued behind to others.
        fault::point("pool.memory-retire");
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{Claim, Gates};

    /// The gate's rules, one step at a time (the word is shared memory; the
    /// two sides are played here by one thread).
    #[test]
    fn a_job_is_run_or_taken_back_or_stopped_never_two_of_these() {
        let g = Gates::new(1).unwrap();
        assert_eq!(g.claim(0, 1), Claim::Run);
        assert!(g.running(0, 1));
        // Jobs 2 and 3 are queued: the parent takes them back.
        assert_eq!(g.revoke(0), Some(1));
        assert!(g.revoked(0));
        assert_eq!(g.revoke(0), None, "not again before the Resume");
        g.finish(0);
        assert_eq!(g.claim(0, 2), Claim::Skip);
        assert_eq!(g.claim(0, 3), Claim::Skip);
        g.resume(0);
        assert!(!g.revoked(0));
        assert_eq!(g.started(0), 1);
        // Job 4, sent after the Resume, is the worker's.
        assert_eq!(g.claim(0, 4), Claim::Run);
        assert!(!g.stop(0, 3), "only the running job can be stopped");
        assert!(g.stop(0, 4));
        assert_eq!(
            g.revoke(0),
            None,
            "nothing is taken back from a stopped worker"
        );
        assert_eq!(g.claim(0, 5), Claim::Stop);
        assert_eq!(g.started(0), 4);
    }

    /// A finished job cannot be stopped: the kill would land on the next.
    #[test]
    fn a_finished_job_is_not_stopped() {
        let g = Gates::new(2).unwrap();
        assert_eq!(g.claim(1, 7), Claim::Run);
        g.finish(1);
        assert!(!g.running(1, 7));
        assert!(!g.stop(1, 7));
        assert_eq!(g.claim(1, 8), Claim::Run);
        assert!(g.stop(1, 8));
        // The other slot is untouched, and a slot past the end is refused.
        assert_eq!(g.started(0), 0);
        assert_eq!(g.claim(2, 1), Claim::Stop);
        assert_eq!(g.revoke(2), None);
    }
}
