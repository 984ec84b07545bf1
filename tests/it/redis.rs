//! mproc-redis across real processes. Each test starts a private
//! redis-server (a unix socket in a temporary directory, persistence off
//! unless the test is about it) and stops it by its pid; worker hosts are
//! separate processes of this test binary, each with its own worker id;
//! the client pool runs in the test process. Every child is reaped and
//! every temporary directory removed.
//!
//! No sleep stands in for synchronization: a test waits for a condition
//! (a file a task wrote, a key in Redis, a counter) with a deadline.
//! Heartbeats are short (250 ms: a worker is judged dead 750 ms after its
//! last beat) and leases either long — so that only the heartbeat path can
//! explain a quick recovery — or a few heartbeats when the lease is what is
//! tested. None of them is tight enough for a loaded machine to break a
//! test: a late beat costs at most an extra delivery, never a result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mproc::pool::{AsyncResult, Pool, PoolError, TaskError};
use mproc::redis::{
    task, GetError, JoinableQueue, Options, PutError, Queue, RedisBackend, Registry, Worker,
};
use mproc::Process;
use mproc_tests::redis::{CutProxy, RedisServer, Resp, ServerOptions};
use mproc_tests::{LeakCheck, TempDir};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------
// Tasks

pub(super) fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn boom(x: u64) -> u64 {
    assert_ne!(x, 3, "three");
    x
}

fn slow_square(x: u64) -> u64 {
    // Work, not synchronization: the map must still be running when Redis
    // restarts.
    std::thread::sleep(Duration::from_millis(5));
    x * x
}

/// Writes `DIR/run.TAG.WORKER.PID`, waits until `DIR/go` exists, and
/// returns the tag and the worker that ran it.
fn hold(dir: String, tag: u64) -> (u64, String) {
    let worker = mproc::redis::current_worker().unwrap_or("?").to_owned();
    let dir = PathBuf::from(dir);
    let mark = dir.join(format!("run.{tag}.{worker}.{}", std::process::id()));
    std::fs::write(&mark, b"").expect("mark the run");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !dir.join("go").exists() {
        assert!(Instant::now() < deadline, "never told to go");
        std::thread::sleep(Duration::from_millis(2));
    }
    (tag, worker)
}

/// Kills its own process: a task no worker survives.
fn poison(_: u64) -> u64 {
    // SAFETY: kill takes a pid and a signal; it touches no memory.
    unsafe { libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL) };
    unreachable!("a process killed itself")
}

/// The worker running the task and its process.
fn whoami(_: ()) -> (String, u32) {
    (
        mproc::redis::current_worker().unwrap_or("?").to_owned(),
        std::process::id(),
    )
}

static TAG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn set_tag(tag: u64) {
    TAG.store(tag, std::sync::atomic::Ordering::SeqCst);
}

fn read_tag(_: ()) -> u64 {
    TAG.load(std::sync::atomic::Ordering::SeqCst)
}

fn length(v: Vec<u8>) -> usize {
    v.len()
}

fn cube(x: u64) -> u64 {
    x * x * x
}

fn tasks() -> Registry {
    Registry::new()
        .with(task!(square))
        .with(task!(add))
        .with(task!(boom))
        .with(task!(slow_square))
        .with(task!(hold))
        .with(task!(poison))
        .with(task!(whoami))
        .with(task!(read_tag))
        .with(task!(length))
}

/// The registry of "another build" of the program: other names.
fn other_tasks() -> Registry {
    Registry::new().with(task!("v2::square", square))
}

// ---------------------------------------------------------------------------
// Worker hosts: separate processes of this binary

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(super) struct Cfg {
    url: String,
    ns: String,
    id: String,
    processes: usize,
    heartbeat_ms: u64,
    lease_ms: u64,
    max_deliveries: u32,
    result_ttl_ms: u64,
    grace_ms: u64,
    maxtasks: Option<u64>,
    init_tag: Option<u64>,
    other_build: bool,
    other_registry: bool,
    reconnect_ms: u64,
}

impl Cfg {
    pub(super) fn new(url: &str, ns: &str) -> Cfg {
        Cfg {
            url: url.into(),
            ns: ns.into(),
            id: String::new(),
            processes: 1,
            heartbeat_ms: 250,
            lease_ms: 600_000,
            max_deliveries: 5,
            result_ttl_ms: 600_000,
            grace_ms: 30_000,
            maxtasks: None,
            init_tag: None,
            other_build: false,
            other_registry: false,
            reconnect_ms: 60_000,
        }
    }

    fn options(&self) -> Options {
        Options::default()
            .namespace(self.ns.as_str())
            .heartbeat(Duration::from_millis(self.heartbeat_ms))
            .lease(Duration::from_millis(self.lease_ms))
            .max_deliveries(self.max_deliveries)
            .result_ttl(Duration::from_millis(self.result_ttl_ms))
            .reconnect_for(Duration::from_millis(self.reconnect_ms))
    }

    fn host(&self, id: &str, processes: usize) -> Cfg {
        Cfg {
            id: id.into(),
            processes,
            ..self.clone()
        }
    }

    /// A client pool of this configuration.
    pub(super) fn pool(&self) -> (Pool, RedisBackend) {
        self.pool_with(2)
    }

    /// A client pool that sizes `map`'s chunks for `parallelism` workers.
    fn pool_with(&self, parallelism: usize) -> (Pool, RedisBackend) {
        let backend = RedisBackend::with_options(&self.url, self.options())
            .expect("connect the client")
            .tasks(tasks())
            .parallelism(parallelism);
        let pool = Pool::builder()
            .backend(backend.clone())
            .build()
            .expect("build the pool");
        (pool, backend)
    }
}

fn host_main(cfg: Cfg) {
    let mut w = match Worker::connect(&cfg.url) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("worker {}: {e}", cfg.id);
            std::process::exit(3);
        }
    };
    w = w
        .options(cfg.options())
        .processes(cfg.processes)
        .id(cfg.id.as_str())
        .grace(Duration::from_millis(cfg.grace_ms));
    w = if cfg.other_registry {
        w.tasks(other_tasks)
    } else {
        w.tasks(tasks)
    };
    if cfg.other_build {
        w = w.pretend_build(mproc_call::BuildId::from_bytes([7; 16]));
    }
    if let Some(n) = cfg.maxtasks {
        w = w.maxtasksperchild(n);
    }
    if let Some(tag) = cfg.init_tag {
        w = w.initializer(set_tag, tag);
    }
    if let Err(e) = w.run() {
        eprintln!("worker {}: {e}", cfg.id);
        std::process::exit(3);
    }
}

/// A worker host process; dropping it (a failed test) continues, kills
/// and reaps it.
struct Host {
    p: Process,
}

impl Host {
    fn start(cfg: Cfg) -> Host {
        let name = format!("host-{}", cfg.id);
        let mut p = Process::new(host_main, cfg).name(name);
        p.start().expect("start a worker host");
        Host { p }
    }

    fn pid(&self) -> libc::pid_t {
        self.p.pid().expect("a started host has a pid") as libc::pid_t
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill takes a pid and a signal; the pid is our own child's,
        // not yet reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill({sig})");
    }

    /// SIGTERM, then waits: the exit code.
    fn stop(self) -> Option<i32> {
        self.p.terminate().expect("SIGTERM a host");
        self.p.join().expect("join a host");
        self.p.exitcode()
    }

    /// SIGKILL and reap.
    fn kill(self) {
        self.p.kill().expect("SIGKILL a host");
        self.p.join().expect("join a host");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.p.is_alive() {
            self.signal(libc::SIGCONT);
            let _ = self.p.kill();
        }
        let _ = self.p.join();
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Polls `f` until it holds; fails the test after `bound`.
#[track_caller]
pub(super) fn wait_until(what: &str, bound: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(super) const BOUND: Duration = Duration::from_secs(60);

/// `n` calls of `square` that wait in Redis (no worker runs them): the
/// pool, its backend and the pending results, once every entry is added.
pub(super) fn waiting_squares(cfg: &Cfg, n: u64) -> (Pool, RedisBackend, Vec<AsyncResult<u64>>) {
    let (pool, backend) = cfg.pool();
    let pending: Vec<_> = (0..n)
        .map(|i| pool.apply_async(square, i).unwrap())
        .collect();
    wait_until("the entries to be added", BOUND, || {
        backend.stats().submitted == n
    });
    (pool, backend, pending)
}

/// The runs `hold` recorded in `dir`: (tag, worker, pid).
fn runs(dir: &Path) -> Vec<(u64, String, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read the run dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("run.") else {
            continue;
        };
        let parts: Vec<&str> = rest.splitn(2, '.').collect();
        let (Some(tag), Some(rest)) = (parts.first(), parts.get(1)) else {
            continue;
        };
        let Some((worker, pid)) = rest.rsplit_once('.') else {
            continue;
        };
        out.push((
            tag.parse().expect("tag"),
            worker.to_owned(),
            pid.parse().expect("pid"),
        ));
    }
    out.sort();
    out
}

fn go(dir: &Path) {
    std::fs::write(dir.join("go"), b"").expect("say go");
}

fn hget(server: &RedisServer, key: &str, field: &str) -> i64 {
    server.int(&["HGET", key, field])
}

/// Entries of the task stream not yet delivered (the group's lag) and
/// delivered but not settled (pending). Settled entries themselves are
/// trimmed a node at a time, so the stream's length says little.
fn stream_left(server: &RedisServer, ns: &str) -> (i64, i64) {
    let tasks = format!("{ns}:tasks");
    let pending = match server.command(&["XPENDING", &tasks, "workers"]) {
        Some(Resp::Array(a)) => match a.first() {
            Some(Resp::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    };
    let mut lag = 0;
    if let Some(Resp::Array(groups)) = server.command(&["XINFO", "GROUPS", &tasks]) {
        for g in groups {
            let Resp::Array(fields) = g else { continue };
            for kv in fields.chunks(2) {
                if let [Resp::Bulk(Some(k)), v] = kv {
                    if k == b"lag" {
                        lag = match v {
                            Resp::Int(n) => *n,
                            // Redis cannot tell (after deletions): count it
                            // as something left.
                            _ => 1,
                        };
                    }
                }
            }
        }
    }
    (lag, pending)
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn redis_pool_gives_the_local_pools_results() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let cfg = Cfg::new(&server.url(), "same");
        let _a = Host::start(cfg.host("A", 2));
        let _b = Host::start(cfg.host("B", 2));
        let (pool, backend) = cfg.pool();
        let local = Pool::new(2).unwrap();

        assert_eq!(
            pool.map(square, 0..200).unwrap(),
            local.map(square, 0..200).unwrap()
        );
        assert_eq!(
            pool.map_chunked(square, 0..100, 7).unwrap(),
            local.map_chunked(square, 0..100, 7).unwrap()
        );
        let pairs: Vec<(u64, u64)> = (0..60).map(|i| (i, 3 * i)).collect();
        assert_eq!(
            pool.starmap(add, pairs.clone()).unwrap(),
            local.starmap(add, pairs).unwrap()
        );
        let ordered: Vec<u64> = pool.imap(square, 0..80).map(Result::unwrap).collect();
        let local_ordered: Vec<u64> = local.imap(square, 0..80).map(Result::unwrap).collect();
        assert_eq!(ordered, local_ordered);
        let chunked: Vec<u64> = pool
            .imap(square, 0..80)
            .chunksize(9)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(chunked, local_ordered);
        let mut unordered: Vec<u64> = pool
            .imap_unordered(square, 0..80)
            .map(Result::unwrap)
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, local_ordered);

        // Callbacks: the value, the whole list once, the task's error.
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let r = pool
            .apply_async_with(add, (40, 2), move |v| tx.send(*v).unwrap(), |_| {})
            .unwrap();
        assert_eq!(rx.recv_timeout(BOUND).unwrap(), 42);
        assert_eq!(r.get().unwrap(), 42);
        let m = pool
            .map_async_with(
                square,
                0..10,
                move |v| tx2.send(v.iter().sum()).unwrap(),
                |_| {},
            )
            .unwrap();
        assert_eq!(rx.recv_timeout(BOUND).unwrap(), 285);
        assert!(m.wait_timeout(BOUND));
        assert_eq!(m.successful(), Some(true));
        let (etx, erx) = mpsc::channel();
        pool.apply_async_with(boom, 3, |_| {}, move |e| etx.send(e.clone()).unwrap())
            .unwrap();
        match erx.recv_timeout(BOUND).unwrap() {
            PoolError::Task(TaskError::Panicked { message }) => assert!(message.contains("three")),
            other => panic!("expected the task's panic, got {other:?}"),
        }
        assert_eq!(
            pool.map(boom, vec![1, 3, 5]).unwrap_err(),
            local.map(boom, vec![1, 3, 5]).unwrap_err()
        );
        // Only registered functions run.
        assert!(matches!(
            pool.apply(cube, 2),
            Err(PoolError::NotRegistered(name)) if name.ends_with("cube")
        ));

        pool.close();
        pool.join().unwrap();
        assert_eq!(pool.apply(square, 2), Err(PoolError::Closed));
        let stats = backend.stats();
        assert_eq!((stats.duplicates, stats.corrupt, stats.lost), (0, 0, 0));
        assert_eq!(stats.results, stats.submitted);
        drop(local);
        assert_eq!(_a.stop(), Some(0));
        assert_eq!(_b.stop(), Some(0));
        // Stopped workers leave no heartbeat and no consumer behind.
        assert!(server.keys("same:w:*").is_empty());
        assert_eq!(stream_left(&server, "same"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_worker_killed_mid_task_runs_it_again_elsewhere_and_one_result_arrives() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let dir = TempDir::new("rk");
        let d = dir.path().to_string_lossy().into_owned();
        // A ten-minute lease: only the heartbeat path can bring the task
        // back within the test.
        let cfg = Cfg::new(&server.url(), "kill");
        let a = Host::start(cfg.host("A", 1));
        let (pool, backend) = cfg.pool();
        let r = pool.apply_async(hold, (d.clone(), 1)).unwrap();
        wait_until("A to start the task", BOUND, || runs(dir.path()).len() == 1);
        let b = Host::start(cfg.host("B", 1));
        a.kill();
        go(dir.path());
        assert_eq!(r.get().unwrap(), (1, "B".to_string()));
        let ran: Vec<String> = runs(dir.path()).into_iter().map(|(_, w, _)| w).collect();
        assert_eq!(ran, ["A", "B"]);

        // The same for a task process killed under a live host: the host
        // hands the task back with the reason, and it runs again.
        std::fs::remove_file(dir.path().join("go")).unwrap();
        let r = pool.apply_async(hold, (d.clone(), 2)).unwrap();
        wait_until("B to start task 2", BOUND, || {
            runs(dir.path()).iter().any(|(t, _, _)| *t == 2)
        });
        let (_, _, pid) = runs(dir.path())
            .into_iter()
            .find(|(t, _, _)| *t == 2)
            .unwrap();
        // SAFETY: kill takes a pid and a signal; the pid is the task's
        // process, which has written it and is waiting for `go`.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
        wait_until("task 2 to run again", BOUND, || {
            runs(dir.path()).iter().filter(|(t, _, _)| *t == 2).count() == 2
        });
        go(dir.path());
        assert_eq!(r.get().unwrap(), (2, "B".to_string()));

        let stats = backend.stats();
        assert_eq!((stats.results, stats.duplicates), (2, 0));
        pool.close();
        pool.join().unwrap();
        assert_eq!(b.stop(), Some(0));
        assert_eq!(stream_left(&server, "kill"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_worker_stopped_past_its_lease_is_fenced_and_one_result_arrives() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let dir = TempDir::new("rs");
        let d = dir.path().to_string_lossy().into_owned();
        let mut cfg = Cfg::new(&server.url(), "stop");
        cfg.lease_ms = 1_000;
        let a = Host::start(cfg.host("A", 1));
        let (pool, backend) = cfg.pool();
        let r = pool.apply_async(hold, (d, 1)).unwrap();
        wait_until("A to start the task", BOUND, || runs(dir.path()).len() == 1);
        // Every thread of A's host stopped, before A's task can finish.
        mproc_tests::stop_process(a.pid() as u32);
        // A's task process is not stopped: it finishes, and its result
        // waits in the stopped host.
        go(dir.path());
        let b = Host::start(cfg.host("B", 1));
        assert_eq!(r.get().unwrap(), (1, "B".to_string()));
        a.signal(libc::SIGCONT);
        // A completes late: the completion script refuses it.
        wait_until("A's late result to be refused", BOUND, || {
            hget(&server, "stop:stats", "refused") >= 1
        });
        let stats = backend.stats();
        assert_eq!((stats.results, stats.duplicates), (1, 0));
        pool.close();
        pool.join().unwrap();
        assert_eq!(a.stop(), Some(0));
        assert_eq!(b.stop(), Some(0));
        assert_eq!(stream_left(&server, "stop"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_poison_task_is_dead_lettered_with_its_count_and_the_pool_goes_on() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let mut cfg = Cfg::new(&server.url(), "poison");
        cfg.max_deliveries = 3;
        let a = Host::start(cfg.host("A", 1));
        let b = Host::start(cfg.host("B", 1));
        let (pool, _backend) = cfg.pool();
        match pool.apply(poison, 1) {
            Err(PoolError::Task(TaskError::Lost { deliveries, reason })) => {
                assert_eq!(deliveries, 3);
                assert!(reason.contains("died"), "{reason}");
            }
            other => panic!("expected the task dead-lettered, got {other:?}"),
        }
        assert_eq!(server.int(&["XLEN", "poison:dead"]), 1);
        assert_eq!(hget(&server, "poison:stats", "dead"), 1);
        // The pool, and both workers, go on.
        assert_eq!(
            pool.map(square, 0..50).unwrap(),
            (0..50).map(square).collect::<Vec<_>>()
        );
        pool.close();
        pool.join().unwrap();
        assert_eq!(a.stop(), Some(0));
        assert_eq!(b.stop(), Some(0));
        assert_eq!(stream_left(&server, "poison"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn redis_restarted_with_aof_mid_map_loses_and_repeats_no_result() {
    let leaks = LeakCheck::start();
    let Some(mut server) = RedisServer::start_with(ServerOptions { aof: true }) else {
        return;
    };
    {
        let cfg = Cfg::new(&server.url(), "aof");
        let _a = Host::start(cfg.host("A", 2));
        let _b = Host::start(cfg.host("B", 2));
        let n = 400u64;
        // One task per item: many to be caught by the restart.
        let (pool, backend) = cfg.pool_with(n as usize);
        let r = pool.map_async(slow_square, 0..n).unwrap();
        wait_until("a quarter of the map", BOUND, || {
            backend.stats().results >= n / 4
        });
        server.restart();
        let at_restart = backend.stats().results;
        assert!(at_restart < n, "the map ended before the restart");
        let got = r.get().unwrap();
        assert_eq!(got, (0..n).map(square).collect::<Vec<_>>());
        let stats = backend.stats();
        assert_eq!((stats.duplicates, stats.lost), (0, 0));
        assert_eq!(stats.results, n);
        pool.close();
        pool.join().unwrap();
        assert_eq!(_a.stop(), Some(0));
        assert_eq!(_b.stop(), Some(0));
        assert_eq!(stream_left(&server, "aof"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_worker_cut_off_from_redis_is_fenced_and_no_result_is_duplicated() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let dir = TempDir::new("rc");
        let d = dir.path().to_string_lossy().into_owned();
        let proxy = CutProxy::start(server.socket());
        let mut cfg = Cfg::new(&server.url(), "cut");
        cfg.lease_ms = 1_000;
        let mut behind = cfg.host("A", 1);
        behind.url = proxy.url();
        let a = Host::start(behind);
        let (pool, backend) = cfg.pool();
        let r = pool.apply_async(hold, (d, 1)).unwrap();
        wait_until("A to start the task", BOUND, || runs(dir.path()).len() == 1);
        proxy.cut();
        go(dir.path());
        let b = Host::start(cfg.host("B", 1));
        assert_eq!(r.get().unwrap(), (1, "B".to_string()));
        proxy.restore();
        wait_until("A's late result to be refused", BOUND, || {
            hget(&server, "cut:stats", "refused") >= 1
        });
        let stats = backend.stats();
        assert_eq!((stats.results, stats.duplicates), (1, 0));
        // A is back in business.
        assert_eq!(
            pool.map(square, 0..20).unwrap(),
            (0..20).map(square).collect::<Vec<_>>()
        );
        pool.close();
        pool.join().unwrap();
        assert_eq!(a.stop(), Some(0));
        assert_eq!(b.stop(), Some(0));
        assert_eq!(stream_left(&server, "cut"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_delivery_whose_worker_never_saw_it_is_reclaimed_after_its_lease() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let mut cfg = Cfg::new(&server.url(), "lease");
        cfg.lease_ms = 1_000;
        let (pool, _backend) = cfg.pool();
        // A live consumer (its heartbeat never expires) whose read reply
        // was lost: it holds the task without knowing.
        assert!(matches!(
            server.command(&[
                "XGROUP",
                "CREATE",
                "lease:tasks",
                "workers",
                "0",
                "MKSTREAM"
            ]),
            Some(Resp::Simple(_))
        ));
        assert!(matches!(
            server.command(&["SET", "lease:w:ghost", "1"]),
            Some(Resp::Simple(_))
        ));
        let r = pool.apply_async(square, 12).unwrap();
        wait_until("the ghost to take the task", BOUND, || {
            matches!(
                server.command(&[
                    "XREADGROUP", "GROUP", "workers", "ghost", "COUNT", "1", "STREAMS",
                    "lease:tasks", ">"
                ]),
                Some(Resp::Array(a)) if !a.is_empty()
            )
        });
        let a = Host::start(cfg.host("A", 1));
        assert_eq!(r.get_timeout(BOUND).unwrap(), 144);
        pool.close();
        pool.join().unwrap();
        assert_eq!(a.stop(), Some(0));
        assert_eq!(stream_left(&server, "lease"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_delivery_whose_reply_a_live_worker_lost_is_handed_back_within_two_beats() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let dir = TempDir::new("ro");
        let d = dir.path().to_string_lossy().into_owned();
        // A ten-minute lease: only the orphan check explains a recovery.
        let cfg = Cfg::new(&server.url(), "orphan");
        let a = Host::start(cfg.host("A", 1));
        let (pool, _backend) = cfg.pool();
        // Four held tasks fill A (prefetch: four per process), so that A
        // reads nothing more…
        let held: Vec<_> = (0..4)
            .map(|i| pool.apply_async(hold, (d.clone(), i)).unwrap())
            .collect();
        wait_until("A to run the first", BOUND, || runs(dir.path()).len() == 1);
        wait_until("A to hold all four", BOUND, || {
            let (_, pending) = stream_left(&server, "orphan");
            pending == 4
        });
        // …and the test reads the next entry as A: it is pending on A,
        // whose reply "was lost" (A never learns of it).
        let r = pool.apply_async(square, 12).unwrap();
        wait_until("the entry to be read as A", BOUND, || {
            matches!(
                server.command(&[
                    "XREADGROUP", "GROUP", "workers", "A", "COUNT", "1", "STREAMS",
                    "orphan:tasks", ">"
                ]),
                Some(Resp::Array(a)) if !a.is_empty()
            )
        });
        // A hands it back; B, with room, takes it.
        let b = Host::start(cfg.host("B", 1));
        assert_eq!(r.get_timeout(BOUND).unwrap(), 144);
        go(dir.path());
        for h in held {
            assert_eq!(h.get_timeout(BOUND).unwrap().1, "A");
        }
        pool.close();
        pool.join().unwrap();
        assert_eq!(a.stop(), Some(0));
        assert_eq!(b.stop(), Some(0));
        assert_eq!(stream_left(&server, "orphan"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

/// A client in a process of its own: submits held tasks, says its id and
/// waits for ever.
fn doomed_client(args: (Cfg, String, mproc::Queue<String>)) {
    let (cfg, dir, say) = args;
    let (pool, backend) = cfg.pool();
    let pending: Vec<_> = (0..5)
        .map(|i| pool.apply_async(hold, (dir.clone(), i)).unwrap())
        .collect();
    say.put(backend.id().to_owned()).unwrap();
    for p in pending {
        let _ = p.get();
    }
}

#[test]
fn a_client_that_dies_leaves_results_that_expire() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let dir = TempDir::new("rd");
        let d = dir.path().to_string_lossy().into_owned();
        let mut cfg = Cfg::new(&server.url(), "gone");
        cfg.result_ttl_ms = 3_000;
        let a = Host::start(cfg.host("A", 2));
        let say = mproc::Queue::<String>::new().unwrap();
        let mut client = Process::new(doomed_client, (cfg.clone(), d, say.clone()));
        client.start().unwrap();
        let id = say.get().unwrap();
        wait_until("tasks to start", BOUND, || runs(dir.path()).len() == 2);
        client.kill().unwrap();
        client.join().unwrap();
        go(dir.path());
        let results = format!("gone:r:{id}");
        let done = format!("{results}:done");
        // (Read well within their three-second TTL.)
        wait_until("the dead client's results to arrive", BOUND, || {
            server.int(&["XLEN", &results]) == 5
        });
        wait_until("them to expire", BOUND, || {
            server.int(&["EXISTS", &results, &done]) == 0
        });
        assert_eq!(stream_left(&server, "gone"), (0, 0));
        assert_eq!(a.stop(), Some(0));
        assert!(server.keys("gone:r:*").is_empty());
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn ten_thousand_tasks_leave_redis_memory_bounded() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let cfg = Cfg::new(&server.url(), "mem");
        let a = Host::start(cfg.host("A", 2));
        let b = Host::start(cfg.host("B", 2));
        let (pool, backend) = cfg.pool();
        // Warm up: the stream, the group, the consumers.
        assert_eq!(pool.map_chunked(square, 0..100, 1).unwrap().len(), 100);
        let used = |s: &RedisServer| -> i64 {
            s.info_field("memory", "used_memory")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let mem0 = used(&server);
        let pending: Vec<_> = (0..10_000u64)
            .map(|i| pool.apply_async(square, i).unwrap())
            .collect();
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(p.get_timeout(BOUND).unwrap(), square(i as u64));
        }
        assert_eq!(
            pool.map_chunked(square, 0..10_000, 1).unwrap().len(),
            10_000
        );
        let stats = backend.stats();
        assert_eq!((stats.results, stats.duplicates), (20_100, 0));
        // Nothing is left of the 20,000 tasks: no entry pending or
        // undelivered, no done-marker (cleared as results are read), no
        // result, no batch marker; settled entries go with the janitors'
        // next trim (every heartbeat), which leaves a node or two.
        assert_eq!(stream_left(&server, "mem"), (0, 0));
        let tasks_bytes = || server.int(&["MEMORY", "USAGE", "mem:tasks"]);
        wait_until("the task stream to be trimmed", BOUND, || {
            tasks_bytes() < 16 << 10
        });
        let grown = used(&server) - mem0;
        assert!(
            grown < 1 << 20,
            "redis grew by {grown} bytes over 20,000 tasks"
        );
        pool.close();
        pool.join().unwrap();
        // The tasks', results' and client's keys are all gone. (A loaded
        // machine may delay a beat past the heartbeat TTL: a task then runs
        // twice and the late completion is counted in mem:stats, a hash of
        // fixed size — never a second result.)
        let mut left = server.keys("*");
        left.sort();
        left.retain(|k| k != "mem:stats");
        assert_eq!(left, ["mem:tasks", "mem:w:A", "mem:w:B"]);
        assert_eq!(a.stop(), Some(0));
        assert_eq!(b.stop(), Some(0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_worker_of_another_build_is_refused_unless_its_registry_matches() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let mut cfg = Cfg::new(&server.url(), "skew");
        cfg.max_deliveries = 2;
        let mut other = cfg.host("old", 1);
        other.other_build = true;
        other.other_registry = true;
        let old = Host::start(other);
        let (pool, _backend) = cfg.pool();
        match pool.apply(square, 3) {
            Err(PoolError::Task(TaskError::VersionSkew(why))) => {
                assert!(why.contains("version skew"), "{why}");
            }
            other => panic!("expected a version skew, got {other:?}"),
        }
        // Another build with the same registry runs it.
        let mut same = cfg.host("new", 1);
        same.other_build = true;
        let new = Host::start(same);
        assert_eq!(old.stop(), Some(0));
        assert_eq!(pool.apply(whoami, ()).unwrap().0, "new");
        pool.close();
        pool.join().unwrap();
        assert_eq!(new.stop(), Some(0));
        assert_eq!(stream_left(&server, "skew"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn sigterm_lets_running_tasks_finish_or_hands_them_back_without_spending_a_delivery() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let dir = TempDir::new("rt");
        let d = dir.path().to_string_lossy().into_owned();
        let mut cfg = Cfg::new(&server.url(), "term");
        // One delivery only: a hand-back that spent it would dead-letter.
        // (A one-second heartbeat: with one delivery, a beat delayed past
        // the heartbeat TTL on a loaded machine would dead-letter too.)
        cfg.max_deliveries = 1;
        cfg.heartbeat_ms = 1_000;
        let (pool, _backend) = cfg.pool();

        // A long grace: the running task finishes, then the worker leaves.
        let a = Host::start(cfg.host("A", 1));
        let r = pool.apply_async(hold, (d.clone(), 1)).unwrap();
        wait_until("A to start task 1", BOUND, || runs(dir.path()).len() == 1);
        a.signal(libc::SIGTERM);
        go(dir.path());
        assert_eq!(r.get_timeout(BOUND).unwrap(), (1, "A".to_string()));
        assert_eq!(a.stop(), Some(0));

        // No grace: the task goes back at once and runs on B.
        std::fs::remove_file(dir.path().join("go")).unwrap();
        let mut quick = cfg.host("Q", 1);
        quick.grace_ms = 0;
        let q = Host::start(quick);
        let r = pool.apply_async(hold, (d, 2)).unwrap();
        wait_until("Q to start task 2", BOUND, || runs(dir.path()).len() == 2);
        assert_eq!(q.stop(), Some(0));
        let b = Host::start(cfg.host("B", 1));
        go(dir.path());
        assert_eq!(r.get_timeout(BOUND).unwrap(), (2, "B".to_string()));
        pool.close();
        pool.join().unwrap();
        assert_eq!(b.stop(), Some(0));
        assert_eq!(stream_left(&server, "term"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn maxtasksperchild_and_the_initializer_apply_to_a_workers_processes() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let cfg = Cfg::new(&server.url(), "life");
        let mut c = cfg.host("A", 1);
        c.maxtasks = Some(2);
        c.init_tag = Some(77);
        let a = Host::start(c);
        let (pool, _backend) = cfg.pool();
        let mut pids = Vec::new();
        for _ in 0..6 {
            let (worker, pid) = pool.apply(whoami, ()).unwrap();
            assert_eq!(worker, "A");
            pids.push(pid);
            assert_eq!(pool.apply(read_tag, ()).unwrap(), 77);
        }
        // Each process runs two tasks (whoami and read_tag), then retires.
        let mut distinct = pids.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 6, "{pids:?}");
        pool.close();
        pool.join().unwrap();
        assert_eq!(a.stop(), Some(0));
    }
    drop(server);
    leaks.assert_clean();
}

/// A consumer process: takes items until the queue is closed, reports
/// each, marks each done.
fn consumer(args: (String, mproc::Queue<u64>)) {
    let (url, report) = args;
    let q = JoinableQueue::<u64>::open(&url, "jobs").unwrap();
    loop {
        match q.get() {
            Ok(n) => {
                report.put(n).unwrap();
                q.task_done().unwrap();
            }
            Err(GetError::Closed) => return,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_joinable_queue_serves_consumers_in_other_processes_once_each() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let url = server.url();
        let q = JoinableQueue::<u64>::open(&url, "jobs").unwrap();
        let report = mproc::Queue::<u64>::new().unwrap();
        let mut consumers: Vec<Process> = (0..3)
            .map(|_| {
                let mut p = Process::new(consumer, (url.clone(), report.clone()));
                p.start().unwrap();
                p
            })
            .collect();
        for n in 0..300 {
            q.put(n).unwrap();
        }
        assert!(q.join_timeout(BOUND).unwrap());
        let mut seen: Vec<u64> = (0..300).map(|_| report.get().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
        q.close().unwrap();
        assert!(matches!(q.put(1), Err(PutError::Closed(1))));
        for p in &mut consumers {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
        assert!(matches!(q.try_get(), Err(GetError::Closed)));
        q.delete().unwrap();

        // A plain queue: timeouts, a bound, a corrupt item.
        let p = Queue::<String>::with_options(&url, "small", 2, &Options::default()).unwrap();
        assert!(matches!(
            p.get_timeout(Duration::from_millis(50)),
            Err(GetError::Timeout)
        ));
        p.put("a".into()).unwrap();
        p.put("b".into()).unwrap();
        assert!(matches!(
            p.put_timeout("c".into(), Duration::from_millis(50)),
            Err(PutError::Full(c)) if c == "c"
        ));
        assert_eq!(p.get().unwrap(), "a");
        server.command(&["XADD", "mproc:q:small", "*", "v", "\u{ff}\u{ff}\u{ff}"]);
        assert_eq!(p.get().unwrap(), "b");
        assert!(matches!(p.get(), Err(GetError::Corrupt(_))));
        assert_eq!(p.len().unwrap(), 0);
        p.delete().unwrap();
    }
    drop(server);
    leaks.assert_clean();
}

/// A two-second lease, renewed every two thirds of a second.
fn held_opts() -> Options {
    Options::default()
        .heartbeat(Duration::from_millis(100))
        .lease(Duration::from_millis(2_000))
}

/// Takes one item, says so, and never marks it done.
fn hoarder(args: (String, mproc::Queue<u64>)) {
    let (url, report) = args;
    let q = JoinableQueue::<u64>::with_options(&url, "held", 0, &held_opts()).unwrap();
    report.put(q.get().unwrap()).unwrap();
    loop {
        std::thread::park();
    }
}

#[test]
fn a_queue_item_whose_getter_died_is_delivered_again_and_a_live_getter_keeps_its_own() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let url = server.url();
        let q = JoinableQueue::<u64>::with_options(&url, "held", 0, &held_opts()).unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        let report = mproc::Queue::<u64>::new().unwrap();
        let mut h = Process::new(hoarder, (url.clone(), report.clone()));
        h.start().unwrap();
        assert_eq!(report.get().unwrap(), 1);
        // The live hoarder renews its item: for a lease and a half nobody
        // else gets it.
        assert_eq!(q.get().unwrap(), 2);
        assert!(matches!(
            q.get_timeout(Duration::from_millis(3_000)),
            Err(GetError::Timeout)
        ));
        h.kill().unwrap();
        h.join().unwrap();
        assert_eq!(q.get_timeout(BOUND).unwrap(), 1);
        q.task_done().unwrap();
        assert!(!q.join_timeout(Duration::from_millis(20)).unwrap());
        q.task_done().unwrap();
        assert!(q.join_timeout(BOUND).unwrap());
        assert!(q.task_done().is_err());
        q.delete().unwrap();
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn an_acl_user_confined_to_its_namespace_runs_pools_and_workers() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        // The ACL the guide documents.
        let acl = [
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">s3cret",
            "~acl:*",
            "resetchannels",
            "-@all",
            "+@stream",
            "+@hash",
            "+@string",
            "+@list",
            "+@keyspace",
            "+@scripting",
            "+@connection",
            "-@dangerous",
            "+info",
        ];
        assert_eq!(server.command(&acl), Some(Resp::Simple("OK".into())));
        let url = format!("{}?user=app&pass=s3cret", server.url());
        let cfg = Cfg::new(&url, "acl");
        let a = Host::start(cfg.host("A", 1));
        let (pool, _backend) = cfg.pool();
        assert_eq!(
            pool.map(square, 0..30).unwrap(),
            (0..30).map(square).collect::<Vec<_>>()
        );
        pool.close();
        pool.join().unwrap();
        assert_eq!(a.stop(), Some(0));
        // The wrong password is refused at connect.
        let bad = format!("{}?user=app&pass=nope", server.url());
        assert!(RedisBackend::connect(&bad).is_err());
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn garbage_in_redis_is_an_error_never_a_panic_or_a_hang() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let cfg = Cfg::new(&server.url(), "junk");
        let a = Host::start(cfg.host("A", 1));
        let (pool, backend) = cfg.pool();
        assert_eq!(pool.apply(square, 2).unwrap(), 4);
        // Task entries a worker cannot take: missing fields, a result
        // stream that is not one, numbers that are not numbers.
        server.command(&["XADD", "junk:tasks", "*", "id", "x"]);
        server.command(&[
            "XADD",
            "junk:tasks",
            "*",
            "id",
            "c:1",
            "task",
            "t",
            "types",
            "1",
            "build",
            "b",
            "reg",
            "1",
            "index",
            "1",
            "max",
            "3",
            "reply",
            "junk:stats",
            "args",
            "",
        ]);
        server.command(&[
            "XADD",
            "junk:tasks",
            "*",
            "id",
            "c:2",
            "task",
            "t",
            "types",
            "x",
            "build",
            "b",
            "reg",
            "1",
            "index",
            "1",
            "max",
            "3",
            "reply",
            "junk:r:c",
            "args",
            "",
        ]);
        wait_until("the junk to be dead-lettered", BOUND, || {
            server.int(&["XLEN", "junk:dead"]) == 3
        });
        // Results the client cannot read.
        let reply = format!("junk:r:{}", backend.id());
        server.command(&["XADD", &reply, "*", "job", "nope", "k", "ok", "v", ""]);
        server.command(&["XADD", &reply, "*", "job", "999", "k", "??", "v", ""]);
        wait_until("the client to see the junk", BOUND, || {
            backend.stats().corrupt == 2
        });
        // The worker and the client go on.
        let ok: HashMap<u64, u64> = (0..10)
            .map(|i| (i, pool.apply(square, i).unwrap()))
            .collect();
        assert_eq!(ok.len(), 10);
        pool.close();
        pool.join().unwrap();
        assert_eq!(a.stop(), Some(0));
        assert_eq!(stream_left(&server, "junk"), (0, 0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn large_arguments_travel_as_a_blob_that_is_removed_at_completion() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let cfg = Cfg::new(&server.url(), "big");
        let a = Host::start(cfg.host("A", 1));
        let (pool, _backend) = cfg.pool();
        let big = vec![7u8; 300 << 10];
        assert_eq!(pool.apply(length, big).unwrap(), 300 << 10);
        assert!(server.keys("big:blob:*").is_empty());
        pool.close();
        pool.join().unwrap();
        assert_eq!(a.stop(), Some(0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn terminate_fails_what_is_left_and_deletes_the_entries_no_worker_took() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let cfg = Cfg::new(&server.url(), "term2");
        let (pool, _backend, pending) = waiting_squares(&cfg, 5);
        pool.terminate();
        for p in pending {
            assert_eq!(p.get(), Err(PoolError::Terminated));
        }
        pool.join().unwrap();
        assert_eq!(server.int(&["XLEN", "term2:tasks"]), 0);
        assert!(server.keys("term2:r:*").is_empty());
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_redis_restarted_without_persistence_fails_the_tasks_it_lost() {
    let leaks = LeakCheck::start();
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    {
        // No worker: the tasks wait in Redis, which then forgets them.
        let cfg = Cfg::new(&server.url(), "amnesia");
        let (pool, backend, pending) = waiting_squares(&cfg, 3);
        server.restart();
        for p in pending {
            match p.get_timeout(BOUND) {
                Err(PoolError::Task(TaskError::Lost {
                    deliveries: 0,
                    reason,
                })) => {
                    assert!(reason.contains("restarted"), "{reason}");
                }
                other => panic!("expected the task lost, got {other:?}"),
            }
        }
        assert_eq!(backend.stats().lost, 3);
        // The pool goes on with a worker.
        let a = Host::start(cfg.host("A", 1));
        assert_eq!(pool.apply(square, 9).unwrap(), 81);
        pool.close();
        pool.join().unwrap();
        assert_eq!(a.stop(), Some(0));
    }
    drop(server);
    leaks.assert_clean();
}

#[test]
fn a_redis_gone_for_good_breaks_the_pool_and_stops_the_workers() {
    let leaks = LeakCheck::start();
    let Some(server) = RedisServer::start() else {
        return;
    };
    {
        let mut cfg = Cfg::new(&server.url(), "down");
        cfg.reconnect_ms = 1_000;
        let a = Host::start(cfg.host("A", 1));
        let (pool, _backend) = cfg.pool();
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
        drop(server);
        let r = pool.apply_async(square, 4).unwrap();
        assert!(matches!(r.get_timeout(BOUND), Err(PoolError::Broken(_))));
        assert!(matches!(pool.apply(square, 5), Err(PoolError::Broken(_))));
        // The worker gives up too, and says so by its exit code.
        let p = a;
        wait_until("the worker to give up", BOUND, || !p.p.is_alive());
        p.p.join().unwrap();
        assert_eq!(p.p.exitcode(), Some(3));
        drop(pool);
    }
    leaks.assert_clean();
}
