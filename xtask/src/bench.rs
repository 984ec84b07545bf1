//! `cargo xtask bench`: our criterion benches and the same scenarios in
//! Python's `multiprocessing`, run side by side, printed as one table and
//! written to `target/mproc-bench/` as Markdown and an SVG chart.
//!
//! Every scenario is measured as time per operation; the reference is the
//! same scenario in Python (or, for floors such as a bare futex lock, another
//! Rust bench). The ratio is the reference's time over ours, so "12×" means
//! mproc is twelve times faster. Targets are ratios (the machines are noisy;
//! ratios travel).
//!
//! The report says where it was measured (cores, CPU, kernel, commit,
//! Python) and gives each row's spread (the fastest, median and slowest of
//! criterion's samples). It is written as Markdown, SVG and JSON
//! (`target/mproc-bench/report.json`). A scenario whose bench is missing
//! fails the run; with `--strict`, so does a missed target.
//! `--compare OLD.json` prints each row's ratio beside an earlier run's —
//! how two commits are compared:
//!
//! ```text
//! git switch --detach OLD && cargo xtask bench && cp target/mproc-bench/report.json /tmp/old.json
//! git switch -   && cargo xtask bench --compare /tmp/old.json
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cmd, test};

/// The measurement a row is compared with.
#[derive(Clone, Copy)]
enum Reference {
    /// A scenario of a script under `benches/python/`: (script, key).
    Python(&'static str, &'static str),
    /// Another of our criterion benches (a Rust floor, such as a bare futex).
    Rust(&'static str),
    /// A peer of the Redis pool, measured by `benches/python/redis_peers.py`
    /// in a venv where xtask installs it from PyPI: the key it prints.
    Peer(&'static str),
    /// A fixed budget in nanoseconds (an issue's "ready in ≤ 0.5 s"): the
    /// ratio is the budget over our time, so ≥ 1 meets it.
    Budget(f64),
}

/// One row of the table.
struct Scenario {
    /// The criterion benchmark id: `group/function`.
    id: &'static str,
    /// What the row measures.
    title: &'static str,
    /// What the row compares against.
    reference: Reference,
    /// How many items one operation moves (for items/s display); 0 shows
    /// time per operation instead.
    items: u64,
    /// The DESIGN.md target for Python's time over ours, if there is one.
    target: Option<f64>,
    /// The target is per core: multiplied by this machine's core count
    /// (a speed-up "≥ 0.9 × cores").
    per_core: bool,
}

/// The rows, in the order they print. Each crate's issue adds its own.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "shm/anonymous_segment_create_map_drop",
        title: "anonymous segment 4 KiB: create + map + drop",
        reference: Reference::Python("shm.py", "shared_memory_create_close_unlink"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "shm/named_create_map_unlink",
        title: "named SharedMemory 4 KiB: create + map + unlink",
        reference: Reference::Python("shm.py", "shared_memory_create_close_unlink"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "shm/raw_value_increment",
        title: "RawValue<i64> read + write (Value lock=False)",
        reference: Reference::Python("shm.py", "raw_value_increment"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "shm/file_doc_update",
        title: "FileDoc JSON update (flock, tmp, fsync, rename)",
        reference: Reference::Python("shm.py", "json_file_update"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "buf/pool_roundtrip_64MiB",
        title: "64 MiB Buf to a pool worker and back vs the same bytes copied (≥ 100×)",
        reference: Reference::Rust("buf/pool_roundtrip_64MiB_copied"),
        items: 0,
        target: Some(100.0),
        per_core: false,
    },
    Scenario {
        id: "buf/pool_roundtrip_64MiB_copied",
        title: "64 MiB of bytes copied to a pool worker and back, vs Python's",
        reference: Reference::Python("shm.py", "bytes_roundtrip_64MiB"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "buf/pool_roundtrip_1GiB",
        title: "1 GiB Buf to a pool worker and back vs Python's shared_memory hand-off by name",
        reference: Reference::Python("shm.py", "shared_memory_handoff_1GiB"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "manager/dict_insert",
        title: "Manager dict insert (a round trip to the server), vs Python's Manager().dict()",
        reference: Reference::Python("manager.py", "dict_insert"),
        items: 0,
        target: Some(10.0),
        per_core: false,
    },
    Scenario {
        id: "manager/dict_get",
        title: "Manager dict get, vs Python's Manager().dict()",
        reference: Reference::Python("manager.py", "dict_get"),
        items: 0,
        target: Some(10.0),
        per_core: false,
    },
    Scenario {
        id: "manager/dict_update",
        title: "Manager dict update by a registered task (atomic), vs Python's get + set",
        reference: Reference::Python("manager.py", "dict_get_then_set"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "sync/lock_uncontended",
        title: "Lock acquire + release, uncontended",
        reference: Reference::Python("sync.py", "lock_uncontended"),
        items: 0,
        target: Some(2.5),
        per_core: false,
    },
    Scenario {
        id: "sync/lock_uncontended",
        title: "Lock vs a bare futex lock in shared memory (≤ 1.5× its time)",
        reference: Reference::Rust("sync/bare_futex_lock"),
        items: 0,
        target: Some(1.0 / 1.5),
        per_core: false,
    },
    Scenario {
        id: "sync/rlock_uncontended",
        title: "RLock acquire + release, uncontended",
        reference: Reference::Python("sync.py", "rlock_uncontended"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "sync/value_increment_2proc",
        title: "2 processes incrementing a Value under its Lock",
        reference: Reference::Python("sync.py", "value_increment_2proc"),
        items: 2,
        target: Some(8.0),
        per_core: false,
    },
    Scenario {
        id: "sync/event_ping_pong_2proc",
        title: "Event set/wait ping-pong round trip, 2 processes",
        reference: Reference::Python("sync.py", "event_ping_pong_2proc"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "sync/barrier_round_2proc",
        title: "Barrier round, 2 processes",
        reference: Reference::Python("sync.py", "barrier_round_2proc"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "process/start_join_fork",
        title: "Process start + join, fork",
        reference: Reference::Python("process.py", "start_join_fork"),
        items: 0,
        target: Some(10.0),
        per_core: false,
    },
    Scenario {
        id: "process/start_join_fork",
        title: "Process start + join, fork, vs bare fork + _exit + waitpid (the floor)",
        reference: Reference::Rust("process/raw_fork_exit_wait"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "process/start_join_spawn",
        title: "Process start + join, spawn",
        reference: Reference::Python("process.py", "start_join_spawn"),
        items: 0,
        target: Some(10.0),
        per_core: false,
    },
    Scenario {
        id: "process/start_join_forkserver",
        title: "Process start + join, forkserver",
        reference: Reference::Python("process.py", "start_join_forkserver"),
        items: 0,
        target: Some(10.0),
        per_core: false,
    },
    Scenario {
        id: "process/start_join_forkserver",
        title: "Process start + join, default method (forkserver) vs Python fork",
        reference: Reference::Python("process.py", "start_join_fork"),
        items: 0,
        target: Some(5.0),
        per_core: false,
    },
    Scenario {
        id: "process/start_join_100_fork",
        title: "100 children started, then joined, fork",
        reference: Reference::Python("process.py", "start_join_100_fork"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "queue/1to1_8B",
        title: "Queue 1→1, 8-byte items",
        reference: Reference::Python("queues.py", "queue_1to1_8B"),
        items: 1,
        target: Some(30.0),
        per_core: false,
    },
    Scenario {
        id: "queue/1to1_1KiB",
        title: "Queue 1→1, 1 KiB items",
        reference: Reference::Python("queues.py", "queue_1to1_1KiB"),
        items: 1,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "queue/1to1_64KiB",
        title: "Queue 1→1, 64 KiB items",
        reference: Reference::Python("queues.py", "queue_1to1_64KiB"),
        items: 1,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "queue/2to2_1KiB",
        title: "Queue 2→2, 1 KiB items",
        reference: Reference::Python("queues.py", "queue_2to2_1KiB"),
        items: 1,
        target: Some(20.0),
        per_core: false,
    },
    Scenario {
        id: "queue/joinable_put_task_done_join",
        title: "JoinableQueue put + task_done + join cycle",
        reference: Reference::Python("queues.py", "joinable_put_task_done_join"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "pipe/round_trip",
        title: "Pipe round trip",
        reference: Reference::Python("queues.py", "pipe_round_trip"),
        items: 0,
        target: Some(4.0),
        per_core: false,
    },
    Scenario {
        id: "pipe/oneway_1KiB",
        title: "Pipe one-way, 1 KiB messages",
        reference: Reference::Python("queues.py", "pipe_oneway_1KiB"),
        items: 1,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "pipe/oneway_1MiB",
        title: "Pipe one-way, 1 MiB messages",
        reference: Reference::Python("queues.py", "pipe_oneway_1MiB"),
        items: 1,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "queue/1to1_8B",
        title: "Queue 1→1, 8-byte items, vs ipc-channel",
        reference: Reference::Rust("ipc_channel/1to1_8B"),
        items: 1,
        target: Some(5.0),
        per_core: false,
    },
    Scenario {
        id: "pipe/round_trip",
        title: "Pipe round trip vs ipc-channel",
        reference: Reference::Rust("ipc_channel/round_trip"),
        items: 0,
        target: Some(4.0),
        per_core: false,
    },
    Scenario {
        id: "pool/apply_async_get",
        title: "Pool apply_async + get round trip",
        reference: Reference::Python("pool.py", "apply_async_get"),
        items: 0,
        target: Some(20.0),
        per_core: false,
    },
    Scenario {
        id: "pool/apply_async_await",
        title: "Pool apply_async awaited (futures executor) vs Python's apply_async + get",
        reference: Reference::Python("pool.py", "apply_async_get"),
        items: 0,
        target: Some(20.0),
        per_core: false,
    },
    Scenario {
        id: "pool/apply_async_await",
        title: "Pool apply_async awaited vs blocking get (ours; the cost of async)",
        reference: Reference::Rust("pool/apply_async_get"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "pool/map_1e6_default",
        title: "Pool(2).map(x*x) over 1e6 items, default chunks",
        reference: Reference::Python("pool.py", "map_1e6_default"),
        items: 1000000,
        target: Some(5.0),
        per_core: false,
    },
    Scenario {
        id: "pool/imap_100k_chunk1",
        title: "Pool(2).imap(x*x) over 1e5 items, chunksize 1",
        reference: Reference::Python("pool.py", "imap_100k_chunk1"),
        items: 100000,
        target: Some(50.0),
        per_core: false,
    },
    Scenario {
        id: "pool/imap_100k_chunk1",
        title:
            "Pool(2).imap, chunksize 1, vs map with auto chunks (ours; ≥ 0.1 = at most 10× slower)",
        reference: Reference::Rust("pool/map_100k_default"),
        items: 100000,
        target: Some(0.1),
        per_core: false,
    },
    Scenario {
        id: "pool/uneven_map_chunk1",
        title: "Pool(2).map, chunksize 1, 50 tasks of uneven length (mean 2 ms): makespan",
        reference: Reference::Python("pool.py", "uneven_map_chunk1"),
        items: 0,
        target: Some(1.0),
        per_core: false,
    },
    Scenario {
        id: "pool/uneven_map_chunk1",
        title: "the same makespan vs the ideal (total work / 2 workers)",
        reference: Reference::Rust("pool/uneven_ideal"),
        items: 0,
        target: Some(0.9),
        per_core: false,
    },
    Scenario {
        id: "pool/start_500_ready",
        title: "Pool(500): built and every worker has run a task, vs Python's Pool(500)",
        reference: Reference::Python("pool.py", "start_500_ready"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "pool/start_500_ready",
        title: "Pool(500) ready within 0.5 s",
        reference: Reference::Budget(0.5e9),
        items: 0,
        target: Some(1.0),
        per_core: false,
    },
    Scenario {
        id: "workload/sha256_pool_map",
        title: "SHA-256 of 100 MB in uneven files, Pool.map on all cores, vs Python's Pool.map",
        reference: Reference::Python("workloads.py", "sha256_pool_map"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "workload/sha256_pool_map",
        title: "the same vs rayon's par_iter on as many threads (≤ 1.05× its time)",
        reference: Reference::Rust("workload/sha256_rayon"),
        items: 0,
        target: Some(1.0 / 1.05),
        per_core: false,
    },
    Scenario {
        id: "workload/words_pool_imap_unordered",
        title: "word frequencies of the same files, imap_unordered(chunksize 16) + reduce, vs Python",
        reference: Reference::Python("workloads.py", "words_pool_imap_unordered"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "workload/words_pool_imap_unordered",
        title: "the same vs rayon's par_iter + reduce (≤ 1.1× its time)",
        reference: Reference::Rust("workload/words_rayon"),
        items: 0,
        target: Some(1.0 / 1.1),
        per_core: false,
    },
    Scenario {
        id: "workload/words_pool_map_reduce",
        title: "word frequencies, Pool::map_reduce (merged in the workers first), vs Python's Pool.map of groups + reduce",
        reference: Reference::Python("workloads.py", "words_pool_map_reduce"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "workload/words_pool_map_reduce",
        title: "the same vs rayon's par_iter + reduce (≤ 1.1× its time)",
        reference: Reference::Rust("workload/words_rayon"),
        items: 0,
        target: Some(1.0 / 1.1),
        per_core: false,
    },
    Scenario {
        id: "pool/cpu_map_all_cores",
        title: "CPU-bound map on all cores vs serial (speed-up)",
        reference: Reference::Rust("pool/cpu_serial"),
        items: 0,
        target: Some(0.9),
        per_core: true,
    },
    Scenario {
        id: "redis/apply_round_trip",
        title: "Redis pool: apply round trip, 2 workers on loopback, vs Celery 5 (Redis broker + backend)",
        reference: Reference::Peer("celery_apply"),
        items: 0,
        target: Some(5.0),
        per_core: false,
    },
    Scenario {
        id: "redis/apply_round_trip",
        title: "Redis pool: apply round trip vs RQ (2 workers)",
        reference: Reference::Peer("rq_apply"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "redis/apply_round_trip",
        title: "Redis pool: apply round trip vs a Ray remote function (2 CPUs)",
        reference: Reference::Peer("ray_remote_apply"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "redis/apply_round_trip",
        title: "Redis pool: apply round trip vs Ray's Pool(2).apply",
        reference: Reference::Peer("ray_pool_apply"),
        items: 0,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "redis/apply_async_10k_gather",
        title: "Redis pool: 10,000 trivial tasks submitted then gathered vs Celery 5 (a group; prefetch 64 both)",
        reference: Reference::Peer("celery_10k"),
        items: 10_000,
        target: Some(10.0),
        per_core: false,
    },
    Scenario {
        id: "redis/apply_async_10k_gather",
        title: "Redis pool: 10,000 tasks vs Ray remote functions",
        reference: Reference::Peer("ray_remote_10k"),
        items: 10_000,
        target: Some(2.0),
        per_core: false,
    },
    Scenario {
        id: "redis/apply_async_10k_gather",
        title: "Redis pool: 10,000 tasks vs RQ",
        reference: Reference::Peer("rq_10k"),
        items: 10_000,
        target: None,
        per_core: false,
    },
    Scenario {
        id: "redis/apply_async_10k_gather",
        title: "Redis pool: 10,000 tasks vs the raw Redis floor (XADD + XREADGROUP + XACK, ≤ 3× its time)",
        reference: Reference::Rust("redis/raw_floor_10k"),
        items: 10_000,
        target: Some(1.0 / 3.0),
        per_core: false,
    },
    Scenario {
        id: "redis/map_10k_default",
        title: "Redis pool: map of 10,000 items, default chunks, vs Ray's Pool(2).map",
        reference: Reference::Peer("ray_pool_map_10k"),
        items: 10_000,
        target: None,
        per_core: false,
    },
];

pub(crate) fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let strict = args.iter().any(|a| a == "--strict");
    let compare = args
        .iter()
        .position(|a| a == "--compare")
        .map(|i| {
            args.get(i + 1)
                .context("--compare takes the path of an earlier report.json")
        })
        .transpose()?;
    let criterion_args: Vec<String> = match args.iter().position(|a| a == "--") {
        Some(i) => args[i + 1..].to_vec(),
        None if quick => ["--warm-up-time", "0.5", "--measurement-time", "1"]
            .map(String::from)
            .to_vec(),
        None => Vec::new(),
    };
    let target = test::target_dir()?;
    let criterion_dir = target.join("criterion");
    // Stale estimates from an earlier run must not pass for this one.
    let _ = std::fs::remove_dir_all(&criterion_dir);
    cmd::run(
        cmd::cargo()
            .args(["bench", "--package", "mproc-benches", "--"])
            .args(&criterion_args),
    )?;

    let python = run_python(quick);
    let peers = crate::peers::run(quick);
    let redis_missing = !crate::peers::redis_server_installed();
    let mut missing = Vec::new();
    let mut rows: Vec<Row<'_>> = Vec::new();
    for s in SCENARIOS {
        let ours = Spread::of(&criterion_dir, s.id);
        let mut note = None;
        let needs_redis = s.id.starts_with("redis/");
        if ours.is_none() && needs_redis && redis_missing {
            note = Some("redis-server is not installed".to_string());
        } else if ours.is_none() {
            missing.push(s.id.to_string());
        }
        let reference = match s.reference {
            Reference::Python(script, key) => match &python {
                Ok((p, _)) => {
                    let v = p.get(&format!("{script}:{key}")).copied();
                    if v.is_none() {
                        missing.push(format!("{script}:{key}"));
                    }
                    v
                }
                Err(_) => None,
            },
            Reference::Rust(id) => {
                let v = Spread::of(&criterion_dir, id).map(|sp| sp.median);
                if v.is_none() && !(needs_redis && redis_missing) {
                    missing.push(id.to_string());
                }
                v
            }
            Reference::Budget(ns) => Some(ns),
            // A peer that could not be installed or run says why instead.
            Reference::Peer(key) => match &peers {
                Ok(p) => {
                    let v = p.value(key);
                    if v.is_none() {
                        note = Some(p.why_not(key));
                    }
                    v
                }
                Err(why) => {
                    note = Some(why.clone());
                    None
                }
            },
        };
        rows.push(Row {
            s,
            ours,
            reference,
            note,
        });
    }

    let machine = Machine::read(python.as_ref().ok().map(|(_, v)| v.as_str()));
    if let Err(why) = &python {
        println!("python: {why}; showing mproc's numbers alone");
    }
    let mut table = machine.markdown();
    table.push_str(&markdown(&rows));
    // Not criterion measurements: one run each, its line added to the
    // table. Memory, and the fastest that per-file words could be here.
    let lines: Vec<(&str, Option<String>)> = ["imap_memory", "buf_memory", "words_bound"]
        .into_iter()
        .map(|bin| (bin, line_run(bin, &mut table).ok()))
        .collect();
    println!("\n{table}");
    let out = target.join("mproc-bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("report.md"), &table)?;
    std::fs::write(out.join("ratios.svg"), svg(&rows))?;
    let json = report_json(&machine, &rows, &lines);
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!(
        "written: {}, {} and {}",
        out.join("report.md").display(),
        out.join("ratios.svg").display(),
        out.join("report.json").display()
    );
    if let Some(old) = compare {
        print_comparison(old, &json)?;
    }
    if !missing.is_empty() {
        bail!(
            "scenarios without a measurement (a bench id or Python key that no longer \
             matches): {}",
            missing.join(", ")
        );
    }
    let missed: Vec<&str> = rows
        .iter()
        .filter(|r| r.met() == "NO")
        .map(|r| r.s.title)
        .collect();
    if strict && !missed.is_empty() {
        bail!("--strict: targets missed: {}", missed.join("; "));
    }
    Ok(())
}

/// Where a report was measured.
struct Machine {
    cores: usize,
    cpu: String,
    kernel: String,
    commit: String,
    python: String,
}

impl Machine {
    fn read(python: Option<&str>) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .or_else(|| {
                cmd::output(Command::new("sysctl").args(["-n", "machdep.cpu.brand_string"]))
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = cmd::output(Command::new("uname").arg("-sr"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let commit = cmd::output(Command::new("git").args(["rev-parse", "--short=12", "HEAD"]))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let dirty = cmd::output(Command::new("git").args(["status", "--porcelain"]))
            .is_ok_and(|s| !s.trim().is_empty());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            commit: if dirty {
                format!("{commit}+changes")
            } else {
                commit
            },
            python: python.unwrap_or("not run").to_string(),
        }
    }

    fn markdown(&self) -> String {
        format!(
            "Measured on {} cores ({}), {}; commit {}; {}. Times are criterion's median; \
             the spread column gives the fastest and slowest sample.\n\n",
            self.cores, self.cpu, self.kernel, self.commit, self.python
        )
    }
}

/// Time per operation, ns: the fastest, median and slowest of criterion's
/// samples (each sample's total time over its iterations).
#[derive(Clone, Copy)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(dir: &Path, id: &str) -> Option<Spread> {
        let median = criterion_median_ns(dir, id)?;
        let path = dir.join(id).join("new").join("sample.json");
        let sample: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        let per: Vec<f64> = sample["iters"]
            .as_array()?
            .iter()
            .zip(sample["times"].as_array()?)
            .filter_map(|(i, t)| Some(t.as_f64()? / i.as_f64()?))
            .collect();
        Some(Spread {
            min: per
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
                .min(median),
            median,
            max: per.iter().copied().fold(0.0, f64::max).max(median),
        })
    }
}

fn report_json(
    machine: &Machine,
    rows: &[Row<'_>],
    lines: &[(&str, Option<String>)],
) -> serde_json::Value {
    let mut json = serde_json::json!({
        "machine": {
            "cores": machine.cores,
            "cpu": machine.cpu,
            "kernel": machine.kernel,
            "commit": machine.commit,
            "python": machine.python,
        },
        "rows": rows.iter().map(|r| serde_json::json!({
            "id": r.s.id,
            "title": r.s.title,
            "items": r.s.items,
            "ns": r.ours.map(|s| serde_json::json!({"min": s.min, "median": s.median, "max": s.max})),
            "reference_ns": r.reference,
            "ratio": r.ratio(),
            "target": r.target(),
            "met": r.met(),
            "note": r.note,
        })).collect::<Vec<_>>(),
    });
    // Each one-run binary's line, under its name.
    for (bin, line) in lines {
        json[*bin] = serde_json::json!(line.as_deref().map(str::trim));
    }
    json
}

/// Prints each row's ratio now beside the same row of an earlier report.
fn print_comparison(old_path: &str, new: &serde_json::Value) -> Result<()> {
    let old: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(old_path).with_context(|| format!("cannot read {old_path}"))?,
    )
    .with_context(|| format!("{old_path} is not a report.json"))?;
    let by_title = |v: &serde_json::Value| -> BTreeMap<String, (Option<f64>, Option<f64>)> {
        v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["title"].as_str().unwrap_or_default().to_string(),
                    (r["ratio"].as_f64(), r["ns"]["median"].as_f64()),
                )
            })
            .collect()
    };
    let (before, after) = (by_title(&old), by_title(new));
    println!(
        "\ncompared with {old_path} (commit {}):\n",
        old["machine"]["commit"].as_str().unwrap_or("?")
    );
    println!("| scenario | ratio before | ratio now | time now / before |\n|---|---|---|---|");
    for (title, (ratio, ns)) in &after {
        let (old_ratio, old_ns) = before.get(title).copied().unwrap_or((None, None));
        let change = match (ns, old_ns) {
            (Some(n), Some(o)) if o > 0.0 => format!("{:.2}", n / o),
            _ => "—".into(),
        };
        println!(
            "| {title} | {} | {} | {change} |",
            old_ratio.map_or("—".into(), show_ratio),
            ratio.map_or("—".into(), show_ratio)
        );
    }
    Ok(())
}

struct Row<'a> {
    s: &'a Scenario,
    ours: Option<Spread>,
    reference: Option<f64>,
    /// Why a measurement is missing (a peer that did not install).
    note: Option<String>,
}

impl Row<'_> {
    fn ratio(&self) -> Option<f64> {
        Some(self.reference? / self.ours?.median)
    }

    /// The target ratio on this machine.
    fn target(&self) -> Option<f64> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.s
            .target
            .map(|t| if self.s.per_core { t * cores as f64 } else { t })
    }

    fn met(&self) -> &'static str {
        match (self.target(), self.ratio()) {
            (Some(t), Some(r)) if r >= t => "yes",
            (Some(_), Some(_)) => "NO",
            (Some(_), None) => "?",
            (None, _) => "—",
        }
    }
}

/// Runs one of the benches' one-run binaries (memory, the words bound)
/// once and adds the line it prints to `table`; that line, or why it failed
/// (printed too).
fn line_run(bin: &str, table: &mut String) -> Result<String> {
    let line = cmd::output(cmd::cargo().args([
        "run",
        "--quiet",
        "--release",
        "--package",
        "mproc-benches",
        "--bin",
        bin,
    ]));
    match &line {
        Ok(line) => {
            let _ = write!(table, "\n{}\n", line.trim());
        }
        Err(e) => println!("{bin} run failed: {e}"),
    }
    line
}

/// The median time per iteration that criterion estimated, in nanoseconds.
fn criterion_median_ns(dir: &Path, id: &str) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Runs each Python script once; keys are `script:scenario`, values ns/op;
/// and the interpreter's version.
fn run_python(quick: bool) -> Result<(BTreeMap<String, f64>, String)> {
    let version = Command::new("python3")
        .arg("--version")
        .output()
        .context("python3 not found")?;
    if !version.status.success() {
        anyhow::bail!("python3 does not run");
    }
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let mut scripts: Vec<&str> = SCENARIOS
        .iter()
        .filter_map(|s| match s.reference {
            Reference::Python(script, _) => Some(script),
            Reference::Rust(_) | Reference::Peer(_) | Reference::Budget(_) => None,
        })
        .collect();
    scripts.dedup();
    let mut out = BTreeMap::new();
    for script in scripts {
        let path = cmd::root().join("benches").join("python").join(script);
        let mut c = Command::new("python3");
        c.arg(&path);
        if quick {
            c.arg("--quick");
        }
        eprintln!(
            "$ python3 {}{}",
            path.display(),
            if quick { " --quick" } else { "" }
        );
        let stdout = cmd::output(&mut c)?;
        let results: BTreeMap<String, f64> = serde_json::from_str(&stdout)
            .with_context(|| format!("{script} printed no JSON object"))?;
        for (k, v) in results {
            out.insert(format!("{script}:{k}"), v);
        }
    }
    Ok((out, version))
}

/// A ratio with enough digits to read a small one (0.007×, not 0.0×).
fn show_ratio(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.1}×")
    } else {
        format!("{x:.3}×")
    }
}

fn show(ns: Option<f64>, items: u64) -> String {
    let Some(ns) = ns else { return "—".into() };
    if items > 0 {
        let per_s = items as f64 * 1e9 / ns;
        return if per_s >= 1e6 {
            format!("{:.2}M/s", per_s / 1e6)
        } else if per_s >= 1e3 {
            format!("{:.1}k/s", per_s / 1e3)
        } else {
            format!("{per_s:.1}/s")
        };
    }
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn markdown(rows: &[Row<'_>]) -> String {
    let mut t = String::from(
        "| scenario | mproc | spread (fastest – slowest) | reference | ratio | target | met? |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let spread = r.ours.map_or("—".into(), |sp| {
            format!(
                "{} – {}",
                show(Some(sp.min), r.s.items),
                show(Some(sp.max), r.s.items)
            )
        });
        let reference = match (&r.reference, &r.note) {
            (None, Some(note)) => format!("n/a: {}", note.replace('|', "/")),
            _ => show(r.reference, r.s.items),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {spread} | {} | {} | {} | {} |",
            r.s.title,
            show(r.ours.map(|sp| sp.median), r.s.items),
            reference,
            r.ratio().map_or("—".into(), show_ratio),
            r.target().map_or("—".into(), |x| format!("≥ {x:.2}×")),
            r.met()
        );
    }
    t
}

/// Horizontal bars of each ratio on a log scale, with the 1× line and each
/// target marked.
fn svg(rows: &[Row<'_>]) -> String {
    let (label_w, bar_w, row_h) = (420.0, 460.0, 26.0);
    let height = 40.0 + row_h * rows.len() as f64;
    let max = rows
        .iter()
        .filter_map(|r| r.ratio().into_iter().chain(r.target()).reduce(f64::max))
        .fold(10.0f64, f64::max);
    let scale = |x: f64| bar_w * (x.max(0.1).log10() + 1.0) / (max.log10() + 1.0);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">
<text x="4" y="16" font-weight="bold">mproc vs Python multiprocessing: Python's time / ours (log scale)</text>
"#,
        w = label_w + bar_w + 80.0
    );
    let one = label_w + scale(1.0);
    for (i, r) in rows.iter().enumerate() {
        let y = 30.0 + row_h * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="4" y="{}">{}</text>"#,
            y + 15.0,
            escape(r.s.title)
        );
        if let Some(ratio) = r.ratio() {
            let color = match r.met() {
                "NO" => "#d9534f",
                _ => "#4a90d9",
            };
            let _ = writeln!(
                s,
                r#"<rect x="{label_w}" y="{}" width="{:.1}" height="18" fill="{color}"/><text x="{:.1}" y="{}">{ratio:.1}×</text>"#,
                y + 2.0,
                scale(ratio),
                label_w + scale(ratio) + 4.0,
                y + 15.0
            );
        }
        if let Some(t) = r.target() {
            let x = label_w + scale(t);
            let _ = writeln!(
                s,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="black" stroke-width="2"/>"#,
                y,
                y + 22.0
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<line x1="{one:.1}" x2="{one:.1}" y1="26" y2="{height}" stroke="#888" stroke-dasharray="3,3"/></svg>"##
    );
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
