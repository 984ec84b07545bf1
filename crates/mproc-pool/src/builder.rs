//! `Builder`: how a pool is made.

use std::sync::Arc;
use std::time::Duration;

use mproc_call::{Callable, RemoteFn};
use mproc_process::StartMethod;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::Backend;
use crate::error::BuildError;
use crate::local::{Config, LocalBackend};
use crate::worker::Init;
use crate::Pool;

/// Options for a [`Pool`]: `Pool::builder().processes(4).build()`.
///
/// The options other than [`backend`](Builder::backend) are those of the
/// local backend (worker processes on this machine), CPython's.
///
/// # Examples
///
/// ```no_run
/// use mproc_pool::Pool;
///
/// fn init(tag: String) {
///     println!("worker ready: {tag}");
/// }
///
/// let pool = Pool::builder()
///     .processes(4)
///     .initializer(init, "v1".to_string())
///     .maxtasksperchild(100)
///     .build()?;
/// # drop(pool);
/// # Ok::<(), mproc_pool::BuildError>(())
/// ```
#[derive(Default)]
#[must_use]
pub struct Builder {
    processes: Option<usize>,
    maxtasks: Option<u64>,
    prefetch: Option<usize>,
    run_length: Option<usize>,
    task_timeout: Option<Duration>,
    max_memory: Option<u64>,
    method: Option<StartMethod>,
    forward_output: Option<bool>,
    init: Option<Result<Init, String>>,
    backend: Option<Arc<dyn Backend>>,
}

impl Builder {
    /// Worker processes (default: [`cpu_count`](mproc_process::cpu_count)).
    /// Many more than cores is fine (`Pool::new(200)` on 2 cores works).
    pub fn processes(mut self, n: usize) -> Builder {
        self.processes = Some(n);
        self
    }

    /// `f(args)` runs once in each worker before it takes tasks. `args`
    /// travel like a task's arguments: they may carry mproc handles (a
    /// `Value`, a `Lock`, a `Queue`…), CPython's usual `initargs`.
    pub fn initializer<F, M>(mut self, f: F, args: F::Args) -> Builder
    where
        F: Callable<M, Output = ()>,
        F::Args: Serialize + DeserializeOwned,
    {
        self.init = Some(Init::new(RemoteFn::new(f), args));
        self
    }

    /// A worker retires after this many tasks (chunks) and is replaced
    /// (default: never). [`build`](Builder::build) refuses 0, as CPython
    /// raises `ValueError`.
    pub fn maxtasksperchild(mut self, n: u64) -> Builder {
        self.maxtasks = Some(n);
        self
    }

    /// Each worker holds at most `n` jobs (chunks) at once: the one it runs
    /// and `n - 1` queued behind it; the rest wait in the pool until a
    /// worker has room. Jobs queued behind a job that turns out long are
    /// taken back for a worker that has gone idle, either way.
    ///
    /// By default the depth adapts: 1 while jobs are long (idle workers
    /// pull, like CPython's shared task queue), deeper as jobs get shorter,
    /// just enough to hide the hand-off of a result and the next job (up to
    /// 64); and nothing more queues behind a job that has run much longer
    /// than the mean. A fixed depth skips that guess — a depth of 1 for
    /// work whose lengths vary wildly, a larger one for many tiny jobs.
    /// [`build`](Builder::build) refuses 0.
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::builder().processes(4).prefetch(1).build()?;
    /// assert_eq!(pool.map(square, 0..4)?, [0, 1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefetch(mut self, n: usize) -> Builder {
        self.prefetch = Some(n);
        self
    }

    /// How many tasks of an `imap` (or `imap_unordered`) at chunk size 1 a
    /// worker is sent at once, as one *run*. Each stays a task of its own:
    /// its result is its own, and a worker that dies fails only the task it
    /// was running — those it had finished stand, those after it go to
    /// another worker. Only the hand-off is shared: the run's results reach
    /// the iterator together, when its last task is done.
    ///
    /// By default the length adapts: 1 (a job per task, as CPython) until
    /// the pool has seen how long tasks take, then enough tasks to keep a
    /// worker busy for about 100 µs, at most 64 — so tasks of a
    /// millisecond or more always go one by one. A run is sent once it is
    /// full, or once the input has been slow to give items for a
    /// millisecond; an input that waits for the results of earlier items
    /// (a feedback loop) wants 1, which turns runs off. Without
    /// effect with [`task_timeout`](Builder::task_timeout) (a timeout is
    /// per task) or [`maxtasksperchild`](Builder::maxtasksperchild).
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::builder().processes(2).run_length(1).build()?;
    /// let n = pool.imap(square, 0..1_000).count();
    /// assert_eq!(n, 1_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_length(mut self, tasks: usize) -> Builder {
        self.run_length = Some(tasks.max(1));
        self
    }

    /// How long any task may run once its worker starts it (default: no
    /// limit). A task past it has its worker killed and replaced, and
    /// resolves [`TaskError::TimedOut`](crate::TaskError::TimedOut); the
    /// other tasks go on. For a `map`, the limit is per chunk.
    /// [`Pool::apply_async_timeout`](crate::Pool::apply_async_timeout) sets
    /// one task's own.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::builder()
    ///     .task_timeout(Duration::from_secs(10))
    ///     .build()?;
    /// assert_eq!(pool.apply(square, 3)?, 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn task_timeout(mut self, timeout: Duration) -> Builder {
        self.task_timeout = Some(timeout);
        self
    }

    /// A worker whose resident memory is above `bytes` after a task retires
    /// and is replaced, as after [`maxtasksperchild`](Builder::maxtasksperchild)
    /// (loky's and joblib's answer to workers that grow): the task's result
    /// stands, the jobs it held go to the others. Resident memory is read
    /// from `/proc/self/statm` on Linux and is the peak (`ru_maxrss`)
    /// elsewhere.
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::builder().max_memory_per_child(512 << 20).build()?;
    /// assert_eq!(pool.apply(square, 3)?, 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_memory_per_child(mut self, bytes: u64) -> Builder {
        self.max_memory = Some(bytes);
        self
    }

    /// How workers are started (default: the process-wide start method).
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// Forwards the workers' stdout and stderr lines (and, with the
    /// `tracing` feature, their `tracing` events) to this process, tagged
    /// with each worker's name (`[PoolWorker-1.0] …`); see
    /// [`mproc_process::output`]. Default: the process-wide setting
    /// ([`set_forward_output`](mproc_process::set_forward_output)).
    pub fn forward_output(mut self, on: bool) -> Builder {
        self.forward_output = Some(on);
        self
    }

    /// Runs the pool's jobs on `backend` instead of local worker processes
    /// (see [`Backend`]); the other options do not apply.
    pub fn backend(mut self, backend: impl Backend) -> Builder {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// A [`BuildError`]: 0 processes, a `maxtasksperchild` of 0, initializer
    /// arguments that cannot be sent, workers that cannot be started.
    pub fn build(self) -> Result<Pool, BuildError> {
        let backend = match self.backend {
            Some(b) => b,
            None => {
                let processes = self.processes.unwrap_or_else(mproc_process::cpu_count);
                if processes == 0 {
                    return Err(BuildError::no_processes());
                }
                if self.maxtasks == Some(0) {
                    return Err(BuildError::zero_max_tasks());
                }
                if self.prefetch == Some(0) {
                    return Err(BuildError::zero_prefetch());
                }
                let init = self.init.transpose().map_err(BuildError::initializer)?;
                let local = LocalBackend::new(Config {
                    processes,
                    maxtasks: self.maxtasks.unwrap_or(0),
                    prefetch: self.prefetch,
                    run_length: self.run_length,
                    task_timeout: self.task_timeout,
                    max_memory: self.max_memory.unwrap_or(0),
                    method: self.method,
                    forward_output: self.forward_output,
                    init,
                })
                .map_err(|e| BuildError::start(format!("cannot set the pool up: {e}")))?;
                Arc::new(local)
            }
        };
        Pool::with_backend(backend).map_err(BuildError::start)
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("processes", &self.processes)
            .field("maxtasksperchild", &self.maxtasks)
            .field("start_method", &self.method)
            .field("initializer", &self.init.is_some())
            .field("backend", &self.backend.is_some())
            .finish()
    }
}
