//! mproc's [`Pool`](mproc_pool::Pool) and [`JoinableQueue`] across
//! machines, on Redis Streams.
//!
//! - [`RedisBackend`] — the client: a pool [`Backend`](mproc_pool::Backend)
//!   whose tasks go to a Redis stream. `apply`, `apply_async` with
//!   callbacks, `map`, `starmap`, `imap`, `imap_unordered`, chunking,
//!   `close` / `join` / `terminate` and `AsyncResult` work as on the local
//!   pool: code written for one runs on the other by changing the
//!   constructor (and registering its functions).
//! - [`Worker`] — runs in your own binary on any machine:
//!   `Worker::connect(url)?.tasks(tasks).processes(n).run()` supervises `n`
//!   local worker processes (the local pool: initializer and
//!   `maxtasksperchild` as there), beats, renews the leases of what it
//!   holds, reclaims the tasks of workers that died, and stops gracefully
//!   on SIGTERM.
//! - [`Queue`] and [`JoinableQueue`] — `put` / `get` (with timeouts),
//!   `task_done`, `join`, `close`, for processes on many machines.
//! - [`Options`] — namespace, lease, heartbeat, delivery limit, result TTL,
//!   how long to keep trying to reach Redis.
//! - [`task!`], [`Registry`] — the functions other machines may run, by
//!   name (re-exported from `mproc-call`).
//!
//! The [guide] ("Running across machines") says how to deploy, what is
//! promised, what each failure does and what survives a Redis restart.
//!
//! # Examples
//!
//! ```no_run
//! use mproc_redis::{task, RedisBackend, Registry, Worker};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! /// The tasks other machines may run: the same list on both sides.
//! fn tasks() -> Registry {
//!     Registry::new().with(task!(square))
//! }
//!
//! let url = "redis://127.0.0.1/";
//! if std::env::args().any(|a| a == "--worker") {
//!     return Ok(Worker::connect(url)?.tasks(tasks).processes(4).run()?);
//! }
//! let pool = RedisBackend::connect(url)?.tasks(tasks()).pool()?;
//! assert_eq!(pool.map(square, 0..10)?, (0..10).map(square).collect::<Vec<_>>());
//! let r = pool.apply_async(square, 7)?;
//! assert_eq!(r.get()?, 49);
//! pool.close();
//! pool.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Promises
//!
//! **At-least-once execution, exactly-once results.** A task runs at least
//! once and may run more than once (its worker died, was stopped or was cut
//! off after it started: it runs again elsewhere); its caller gets exactly
//! one result, because each completion is fenced by ownership and the task
//! id is the idempotency key of the result. Tasks with side effects outside
//! their result must tolerate a second run.
//!
//! **Only registered functions run.** A task travels as a registered name,
//! a fingerprint of its argument and result types, and postcard arguments;
//! no code and no pointer crosses the network. A worker of another build
//! runs it only if its registry has the same fingerprint; otherwise the
//! caller gets [`TaskError::VersionSkew`](mproc_pool::TaskError::VersionSkew).
//!
//! **Never hang on a dead peer** (DESIGN decision 9): a dead or stopped worker's
//! tasks run elsewhere within about three heartbeats; a task that kills
//! every worker is dead-lettered after its delivery limit and its caller
//! gets [`TaskError::Lost`](mproc_pool::TaskError::Lost) with the count; a
//! Redis that stays away breaks the pool instead of leaving it waiting.
//!
//! **Untrusted bytes.** Everything read from Redis is parsed as untrusted
//! input: a malformed entry or reply is an error that names it (logged,
//! counted, dead-lettered), never a panic or a hang.
//!
//! # Platform support
//!
//! redis-server 6.2 or newer (streams, XAUTOCLAIM), standalone; not Redis
//! Cluster (the scripts touch keys of several slots). AUTH and ACL users in
//! the URL; TLS (`rediss://`) with the `tls` feature — untested by this
//! crate's suite (see the guide). Workers run where mproc's pool runs
//! (Linux, macOS).

#![warn(missing_docs)]

mod sys;

mod client;
mod conn;
mod error;
pub mod guide;
mod options;
mod queue;
mod scripts;
mod wire;
mod worker;

pub use client::{registry_fingerprint, ClientStats, RedisBackend};
pub use error::Error;
#[doc(no_inline)]
pub use mproc_call::{task, Registry, Task};
pub use options::Options;
pub use queue::{GetError, JoinableQueue, PutError, Queue};
pub use worker::{current_worker, Worker, WorkerHandle, WorkerStats};

/// How many records the dead-letter stream keeps (approximately).
pub(crate) const DEAD_LETTERS: u64 = 10_000;

/// Checks that the server is 6.2 or newer.
pub(crate) fn check_server(con: &mut redis::Connection) -> Result<(), Error> {
    let info: String = redis::cmd("INFO").arg("server").query(con)?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("0");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 2) {
        return Err(Error::Server(format!(
            "redis {version} is too old: mproc-redis needs 6.2 or newer"
        )));
    }
    Ok(())
}
