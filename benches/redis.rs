//! mproc-redis benches: a private redis-server on a loopback TCP port, two
//! workers (two worker hosts of this binary, one process each, prefetch
//! 64), and a client pool in this process. Python peers (Celery, RQ, Ray) in
//! `python/redis_peers.py`; the raw Redis floor — XADD, XREADGROUP and
//! XACK from Rust, no protocol — here.
//!
//! Without `redis-server` the benches say so and measure nothing (xtask's
//! table then says so too).

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use mproc::redis::{task, Options, RedisBackend, Registry, Worker};
use mproc::Process;

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn tasks() -> Registry {
    Registry::new().with(task!(square))
}

/// How many tasks the throughput rows move per iteration.
const N: u64 = 10_000;

/// A redis-server on 127.0.0.1, persistence off, stopped by its pid.
struct Server {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Server {
    fn start() -> Option<Server> {
        let exe = [
            "/usr/bin/redis-server",
            "/usr/sbin/redis-server",
            "/usr/local/bin/redis-server",
        ]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| std::env::var_os("REDIS_SERVER").map(Into::into))?;
        let dir = std::env::temp_dir().join(format!("mproc-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        // A free port: bound, read, released (nothing else on this machine
        // is racing for it during a bench).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(exe)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let server = Server { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn host(args: (String, String)) {
    let (url, id) = args;
    // Tuned for trivial tasks, as a Celery user tunes its prefetch
    // multiplier (the peer runs with the same prefetch): 64 tasks held per
    // worker, the round trip to Redis hidden behind them.
    let r =
        Worker::connect(&url).and_then(|w| w.tasks(tasks).processes(1).prefetch(64).id(id).run());
    if let Err(e) = r {
        eprintln!("bench worker: {e}");
        std::process::exit(1);
    }
}

fn pool_rows(c: &mut Criterion, server: &Server) {
    let url = server.url();
    let mut hosts: Vec<Process> = ["w1", "w2"]
        .into_iter()
        .map(|id| {
            let mut p = Process::new(host, (url.clone(), id.to_string()));
            p.start().expect("start a bench worker");
            p
        })
        .collect();
    let pool = RedisBackend::with_options(&url, Options::default())
        .expect("connect")
        .tasks(tasks())
        .parallelism(2)
        .pool()
        .expect("pool");
    // Both workers up and serving before anything is timed.
    let _ = pool.map_chunked(square, 0..1000, 1).expect("warm up");

    let mut g = c.benchmark_group("redis");
    g.bench_function("apply_round_trip", |b| {
        b.iter(|| pool.apply(square, black_box(7)).unwrap())
    });
    g.sample_size(10);
    g.bench_function("apply_async_10k_gather", |b| {
        b.iter(|| {
            let pending: Vec<_> = (0..N)
                .map(|i| pool.apply_async(square, i).unwrap())
                .collect();
            pending
                .into_iter()
                .map(|r| r.get().unwrap())
                .fold(0u64, u64::wrapping_add)
        })
    });
    g.bench_function("map_10k_default", |b| {
        b.iter(|| pool.map(square, 0..N).unwrap())
    });
    g.finish();
    pool.close();
    pool.join().expect("join the pool");
    for p in &mut hosts {
        let _ = p.terminate();
        let _ = p.join();
    }
}

/// The floor: N entries XADDed (pipelined), read by two consumers of a
/// group (XREADGROUP, COUNT 512) and acknowledged (XACK, one per batch);
/// done when every entry is acknowledged. No Lua, no result stream, no
/// process hop: what any protocol on Streams pays at least.
fn raw_floor(c: &mut Criterion, server: &Server) {
    let client = redis::Client::open(server.url()).expect("client");
    let mut con = client.get_connection().expect("connection");
    let mut g = c.benchmark_group("redis");
    g.sample_size(10);
    let mut round = 0u64;
    g.bench_function("raw_floor_10k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let stream = format!("floor:{round}");
                let _: () = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg("g")
                    .arg("0")
                    .arg("MKSTREAM")
                    .query(&mut con)
                    .expect("group");
                let start = Instant::now();
                let acked = Arc::new(AtomicU64::new(0));
                let consumers: Vec<_> = (0..2)
                    .map(|i| {
                        let (client, stream, acked) =
                            (client.clone(), stream.clone(), acked.clone());
                        std::thread::spawn(move || consume(&client, &stream, i, &acked))
                    })
                    .collect();
                for chunk in (0..N).collect::<Vec<_>>().chunks(512) {
                    let mut pipe = redis::pipe();
                    for i in chunk {
                        pipe.cmd("XADD")
                            .arg(&stream)
                            .arg("*")
                            .arg("v")
                            .arg(*i)
                            .ignore();
                    }
                    let _: () = pipe.query(&mut con).expect("xadd");
                }
                for t in consumers {
                    t.join().expect("a floor consumer");
                }
                total += start.elapsed();
                assert_eq!(acked.load(Ordering::SeqCst), N);
                let _: () = redis::cmd("DEL").arg(&stream).query(&mut con).expect("del");
            }
            total
        })
    });
    g.finish();
}

/// One consumer of the floor: reads and acknowledges until the group has
/// acknowledged N entries in all.
fn consume(client: &redis::Client, stream: &str, me: u32, acked: &AtomicU64) {
    let mut con = client.get_connection().expect("connection");
    while acked.load(Ordering::SeqCst) < N {
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg(format!("c{me}"))
            .arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(5)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query(&mut con)
            .expect("xreadgroup");
        let ids = entry_ids(&reply);
        if !ids.is_empty() {
            let n: u64 = redis::cmd("XACK")
                .arg(stream)
                .arg("g")
                .arg(&ids)
                .query(&mut con)
                .expect("xack");
            acked.fetch_add(n, Ordering::SeqCst);
        }
    }
}

/// The ids of an XREADGROUP reply's entries.
fn entry_ids(v: &redis::Value) -> Vec<String> {
    use redis::Value::{Array, BulkString};
    let mut out = Vec::new();
    let Array(streams) = v else {
        return out;
    };
    for s in streams {
        let Array(parts) = s else { continue };
        let Some(Array(entries)) = parts.get(1) else {
            continue;
        };
        for e in entries {
            if let Array(e) = e {
                if let Some(BulkString(id)) = e.first() {
                    out.push(String::from_utf8_lossy(id).into_owned());
                }
            }
        }
    }
    out
}

fn benches(c: &mut Criterion) {
    let Some(server) = Server::start() else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "redis-server is not installed and CI=true"
        );
        eprintln!("SKIPPED redis benches: redis-server is not installed");
        return;
    };
    pool_rows(c, &server);
    raw_floor(c, &server);
}

criterion_group!(redis_benches, benches);
criterion_main!(redis_benches);
