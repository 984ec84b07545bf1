//! The seam between the pool's scheduler and the workers that run its jobs.
//!
//! A [`Pool`](crate::Pool) is two parts. The *scheduler* — the same for
//! every pool — takes calls (`apply`, `map`, `imap`, …), cuts them into
//! chunks, makes a [`Job`] of each, files each job's outcome, runs the
//! callbacks, fills [`AsyncResult`](crate::AsyncResult)s, keeps the `imap`
//! window, and knows the pool's phases (running, closed, terminated,
//! broken). A *backend* runs jobs: it starts workers, hands each job to one,
//! and reports what became of it. [`Pool::new`](crate::Pool::new) uses local
//! worker processes; `mproc-redis` runs jobs on workers on other machines;
//! the test suite has one that runs jobs on threads.
//!
//! # Writing a backend
//!
//! Implement [`Backend`] and build a pool with
//! [`Builder::backend`](crate::Builder::backend).
//!
//! 1. [`calls`](Backend::calls) says what your workers can run:
//!    [`Calls::SameBuild`] — they run this very binary, so a job names its
//!    code with a [`RemoteFn`] and its input may carry mproc handles; or
//!    [`Calls::Named`] — they run a build of the same program elsewhere, so
//!    a job names a task registered in the [`Registry`] you return, and its
//!    items are plain postcard.
//! 2. [`start`](Backend::start) gets the [`Events`] sink; from then on,
//!    every job you were given is reported exactly once, as
//!    [`Event::Done`] with the chunk's encoded results (what the runner
//!    returned, or what [`ChunkResults`](crate::ChunkResults) builds), or
//!    [`Event::Failed`] with the [`TaskError`] that ended it (its worker
//!    died, it was lost). Report [`Event::Broken`] when you can run nothing
//!    more; the scheduler then fails every pending call.
//! 3. [`submit`](Backend::submit) must not wait for a worker: it is called
//!    from callbacks too, on the thread that is reporting an event.
//! 4. [`close`](Backend::close), [`terminate`](Backend::terminate) and
//!    [`join`](Backend::join) follow the pool's: after `close` the
//!    scheduler submits nothing more and waits for the reports; `terminate`
//!    stops the workers (unreported jobs need not be reported); `join`
//!    reaps what you started and stops your threads, and must return even
//!    when the backend failed.
//!
//! Events may come from any of the backend's threads, one at a time or
//! concurrently; [`Events::event`] runs the call's callbacks before it
//! returns.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use mproc_call::{Registry, RemoteFn};
use mproc_shm::transfer::{FdTable, Message};

use crate::error::TaskError;

/// Names a job within one pool.
pub type JobId = u64;

/// A map keyed by job id. Ids are the pool's own sequence numbers, never
/// chosen by another process, so a multiplication hashes them well enough:
/// SipHash was about 8% of the result thread's time in `imap`.
pub(crate) type IdMap<V> =
    std::collections::HashMap<JobId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`]: Fibonacci hashing of the id (hashbrown takes
/// the bucket from the low bits, which a multiplication by an odd number
/// spreads over sequential ids, and a tag from the top bits, which it
/// mixes).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The input of a job for a [`Calls::SameBuild`] backend: the function (a
/// [`RemoteFn`]) and the chunk's arguments, encoded with
/// [`mproc_shm::transfer`], and the descriptors of any handles inside.
#[derive(Debug)]
pub struct LocalInput {
    /// The encoded bytes.
    pub bytes: Vec<u8>,
    /// Descriptors of the handles in `bytes`, in table order.
    pub fds: Vec<OwnedFd>,
}

impl LocalInput {
    /// A message for one delivery: the bytes, and copies of the descriptors
    /// (the input stays whole for a job sent again).
    ///
    /// # Errors
    ///
    /// The OS error when a descriptor cannot be duplicated.
    pub fn message(&self) -> io::Result<Message> {
        let mut fds = FdTable::new();
        for fd in &self.fds {
            fds.push(fd.try_clone()?);
        }
        Ok(Message {
            bytes: self.bytes.clone(),
            fds,
        })
    }
}

/// Runs a chunk in a worker of the same build: decodes the function and the
/// arguments from the message, calls the function on each, and returns the
/// chunk's encoded results ([`ChunkResults`](crate::ChunkResults)'s
/// format) with the descriptors of any handles in them (a
/// [`Buf`](mproc_shm::Buf) result); `Err` when the chunk as a whole cannot
/// be decoded or encoded.
pub type Runner = RemoteFn<Message, Result<Message, String>>;

/// What a job runs.
#[derive(Debug, Clone)]
pub enum Work {
    /// For workers of this build ([`Calls::SameBuild`]): call
    /// `runner.call(input.message()?)`.
    SameBuild {
        /// The chunk runner, generated for the task's types.
        runner: Runner,
        /// Its input.
        input: Arc<LocalInput>,
    },
    /// For workers elsewhere ([`Calls::Named`]): run the registered task on
    /// each item (each a postcard encoding of the task's arguments).
    Named {
        /// The task's registered name.
        task: &'static str,
        /// The fingerprint of its argument and result types.
        types: u64,
        /// The items, each encoded on its own.
        items: Arc<Vec<Vec<u8>>>,
    },
}

/// One chunk of a call, to run on one worker.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job's name in this pool (the scheduler's).
    pub id: JobId,
    /// What it runs.
    pub work: Work,
    /// How many items it has.
    pub items: usize,
    /// How long it may run once started (`None`: the backend's default, if
    /// it has one). A backend that cannot stop a running job ignores it.
    pub timeout: Option<std::time::Duration>,
    /// Its items are separate tasks (a *run*: `imap` at chunk size 1 sends
    /// several items as one job when [`Backend::run_length`] says so). A
    /// backend that can reports each item on its own, so that a worker's
    /// death fails only the item it was running; any other runs it as a
    /// chunk.
    pub run: bool,
}

/// What became of a job, or of the backend.
#[derive(Debug)]
pub enum Event {
    /// The job ran: its chunk's encoded results (each item's value, or the
    /// message of its panic).
    Done {
        /// The job.
        job: JobId,
        /// The encoded results.
        output: Vec<u8>,
    },
    /// The job ran, and its results hold handles (a [`Buf`](mproc_shm::Buf),
    /// a `Value`…): the encoded results with their descriptors, which the
    /// backend brought from the worker ([`Calls::SameBuild`] backends only).
    DoneWithHandles {
        /// The job.
        job: JobId,
        /// The encoded results and the descriptors they refer to.
        output: Message,
    },
    /// The job as a whole failed.
    Failed {
        /// The job.
        job: JobId,
        /// Why.
        error: TaskError,
    },
    /// The backend can run nothing more; every pending call fails with this.
    Broken(String),
}

/// Where a backend reports [`Event`]s: the pool's scheduler.
pub trait Events: Send + Sync {
    /// Files one event, running the call's callbacks before it returns.
    fn event(&self, event: Event);
}

/// What a backend's workers can run.
#[derive(Debug, Clone)]
pub enum Calls {
    /// Workers run this very build: jobs are [`Work::SameBuild`].
    SameBuild,
    /// Workers run a build of this program elsewhere and run only the
    /// tasks of this registry: jobs are [`Work::Named`].
    Named(Registry),
}

/// Runs a pool's jobs on workers (see the [module docs](self) for how to
/// write one).
pub trait Backend: Send + Sync + 'static {
    /// What the workers can run.
    fn calls(&self) -> Calls;

    /// How many jobs run at once (the default chunk size is computed from
    /// it, as CPython's is from the worker count).
    fn parallelism(&self) -> usize;

    /// Starts the workers; from now on every job's fate goes to `events`.
    ///
    /// # Errors
    ///
    /// Why the workers could not be started (the pool is not built).
    fn start(&self, events: Arc<dyn Events>) -> Result<(), String>;

    /// Takes a job; it will be reported exactly once ([`Event::Done`] or
    /// [`Event::Failed`]) unless the backend is terminated or broken. Must
    /// not wait for a worker.
    fn submit(&self, job: Job);

    /// Takes several jobs at once, in order, as [`submit`](Backend::submit)
    /// takes each (the default does just that). A backend may send them to
    /// a worker together: `imap`'s chunks come this way.
    fn submit_many(&self, jobs: Vec<Job>) {
        for job in jobs {
            self.submit(job);
        }
    }

    /// How many items of a call at chunk size 1 to send together as one
    /// run ([`Job::run`]) now; 1 (the default) sends each item as a job of
    /// its own. A backend that keeps every item a separate task — it is
    /// failed alone when its worker dies — may say more when tasks are so
    /// short that a job per item would cost more than the tasks.
    fn run_length(&self) -> usize {
        1
    }

    /// No more jobs will come; workers leave once the submitted ones are
    /// reported.
    fn close(&self);

    /// Stops now: workers are stopped; unreported jobs need not be reported.
    fn terminate(&self);

    /// After `close` (with every job reported) or `terminate`: lets the
    /// workers go, reaps what was started, stops the backend's threads.
    /// Returns even when the backend has failed.
    fn join(&self);

    /// Cancels a job it was given: `true` if it will never be reported
    /// (dropped before it started, or — with `running` — stopped while it
    /// ran), `false` if it has started (or finished) and will be reported.
    /// The default cancels nothing.
    fn cancel(&self, job: JobId, running: bool) -> bool {
        let _ = (job, running);
        false
    }

    /// The pids of local worker processes, if the workers are local.
    fn worker_pids(&self) -> Vec<u32> {
        Vec::new()
    }
}
