//! `Options`: the protocol's timings and limits, shared by clients, workers
//! and queues, and the names of the keys they use.

use std::time::Duration;

/// The protocol's timings and limits. Clients and workers of one
/// namespace should agree on them (the lease above all: a worker renews
/// its leases well within it, a janitor reclaims after it).
///
/// ```
/// use std::time::Duration;
/// use mproc_redis::Options;
///
/// let opts = Options::default()
///     .namespace("jobs")
///     .lease(Duration::from_secs(60))
///     .max_deliveries(3);
/// assert_eq!(opts.get_namespace(), "jobs");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Options {
    pub(crate) namespace: String,
    pub(crate) lease: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) result_ttl: Duration,
    pub(crate) blob_threshold: usize,
    pub(crate) reconnect_for: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            namespace: "mproc".into(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(1),
            max_deliveries: 5,
            result_ttl: Duration::from_secs(600),
            blob_threshold: 256 << 10,
            reconnect_for: Duration::from_secs(60),
        }
    }
}

impl Options {
    /// The prefix of every key (default `mproc`): pools and workers of one
    /// namespace share one task stream.
    pub fn namespace(mut self, ns: impl Into<String>) -> Options {
        self.namespace = ns.into();
        self
    }

    /// How long a delivered task stays with its worker without a renewal
    /// (default 30 s). A worker renews every lease it holds at each
    /// heartbeat; a janitor reclaims a task whose lease ran out.
    pub fn lease(mut self, d: Duration) -> Options {
        self.lease = d.max(Duration::from_millis(10));
        self
    }

    /// How often workers and clients beat (default 1 s). A worker's
    /// heartbeat key lives three beats; once it has expired, the worker's
    /// tasks are reclaimed at once, without waiting for their leases.
    pub fn heartbeat(mut self, d: Duration) -> Options {
        self.heartbeat = d.max(Duration::from_millis(5));
        self
    }

    /// How many times a task is delivered before it is dead-lettered and
    /// its caller gets [`TaskError::Lost`](mproc_pool::TaskError::Lost)
    /// (default 5; at least 1).
    pub fn max_deliveries(mut self, n: u32) -> Options {
        self.max_deliveries = n.max(1);
        self
    }

    /// How long results, done-markers and large arguments live in Redis
    /// (default 10 min): a client that dies leaves its results behind for
    /// this long, then they expire.
    pub fn result_ttl(mut self, d: Duration) -> Options {
        self.result_ttl = d.max(Duration::from_millis(10));
        self
    }

    /// Arguments larger than this many bytes travel as a key of their own
    /// with a TTL instead of inside the stream entry (default 256 KiB).
    pub fn blob_threshold(mut self, bytes: usize) -> Options {
        self.blob_threshold = bytes;
        self
    }

    /// How long a client or worker keeps trying to reach a Redis that went
    /// away before it gives up (default 60 s): a pool then fails its
    /// pending calls with `Broken`, a worker's `run` returns the error.
    pub fn reconnect_for(mut self, d: Duration) -> Options {
        self.reconnect_for = d;
        self
    }

    /// The namespace.
    pub fn get_namespace(&self) -> &str {
        &self.namespace
    }

    /// The lease.
    pub fn get_lease(&self) -> Duration {
        self.lease
    }

    /// The heartbeat interval.
    pub fn get_heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// The delivery limit.
    pub fn get_max_deliveries(&self) -> u32 {
        self.max_deliveries
    }

    /// The result TTL.
    pub fn get_result_ttl(&self) -> Duration {
        self.result_ttl
    }

    pub(crate) fn keys(&self) -> Keys {
        Keys {
            ns: self.namespace.clone(),
        }
    }

    /// Checks that the timings make sense together.
    pub(crate) fn check(&self) -> Result<(), crate::Error> {
        if self.lease < self.heartbeat * 2 {
            return Err(crate::Error::Options(format!(
                "the lease ({:?}) must be at least two heartbeats ({:?} each): leases are renewed \
                 at each heartbeat",
                self.lease, self.heartbeat
            )));
        }
        if self.namespace.is_empty() || self.namespace.contains(['{', '}', '*', '?', '[', ']']) {
            return Err(crate::Error::Options(format!(
                "the namespace {:?} must be non-empty, without glob or hash-tag characters",
                self.namespace
            )));
        }
        Ok(())
    }

    /// How long a heartbeat key lives: three beats.
    pub(crate) fn heartbeat_ttl(&self) -> Duration {
        self.heartbeat * 3
    }
}

/// Milliseconds, at least 1, as Redis takes them.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The consumer group of the task stream.
pub(crate) const GROUP: &str = "workers";

/// The consumer that holds tasks handed back by their worker: it never
/// beats, so the next janitor pass reclaims them at once.
pub(crate) const RELEASED: &str = "~released";

/// The names of a namespace's keys.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub(crate) ns: String,
}

impl Keys {
    /// The task stream.
    pub(crate) fn tasks(&self) -> String {
        format!("{}:tasks", self.ns)
    }
    /// The dead-letter stream.
    pub(crate) fn dead(&self) -> String {
        format!("{}:dead", self.ns)
    }
    /// Counters: fenced completions refused, tasks dead-lettered.
    pub(crate) fn stats(&self) -> String {
        format!("{}:stats", self.ns)
    }
    /// A worker's heartbeat.
    pub(crate) fn worker(&self, id: &str) -> String {
        format!("{}:w:{id}", self.ns)
    }
    /// A client's result stream.
    pub(crate) fn results(&self, client: &str) -> String {
        format!("{}:r:{client}", self.ns)
    }
    /// Whether `reply` names a client's result stream of this namespace
    /// (read from a task entry: untrusted).
    pub(crate) fn is_results(&self, reply: &str) -> bool {
        reply
            .strip_prefix(&self.ns)
            .and_then(|r| r.strip_prefix(":r:"))
            .is_some_and(|id| !id.is_empty() && id.len() <= 64 && !id.contains(':'))
    }
    /// The done-markers of the results sent to `reply`: one field per job.
    pub(crate) fn done(reply: &str) -> String {
        format!("{reply}:done")
    }
    /// The marker of a client's batch of submissions, set in the same
    /// transaction as its entries.
    pub(crate) fn batch(&self, client: &str, n: u64) -> String {
        format!("{}:b:{client}:{n}", self.ns)
    }
    /// A task's large arguments.
    pub(crate) fn blob(&self, task: &str) -> String {
        format!("{}:blob:{task}", self.ns)
    }
    /// Why a task's last delivery failed.
    pub(crate) fn why(&self, task: &str) -> String {
        format!("{}:why:{task}", self.ns)
    }
    /// A queue's stream.
    pub(crate) fn queue(&self, name: &str) -> String {
        format!("{}:q:{name}", self.ns)
    }
}

/// A random 64-bit value (std's per-process random hash keys, mixed with
/// the time and a counter): names for clients and workers.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}
