//! `cargo xtask stress [--minutes N]`: the cross-process sync, queue,
//! process, pool, Redis and kill-point suites and the exactly-once checker, over
//! and over, on both
//! wait layers (futex and portable), while a CPU hog keeps every core busy
//! (two spinning processes per core). Races show up under load: wave 1 lost
//! a message on a loaded machine that no idle run ever lost.
//!
//! Everything is built before the hog starts and the clock runs; the hog's
//! processes are our own children, stopped by pid when the run ends (or
//! fails). The run fails on any failed suite or any item lost, duplicated,
//! corrupt, reordered or hung.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cmd, test};

/// A wait layer and the cargo features that select it.
struct Layer {
    name: &'static str,
    /// Features of mproc-tests for the suites (kill points on).
    suite_features: &'static str,
    /// Features of mproc-tests for the checker.
    checker_features: &'static str,
}

const LAYERS: [Layer; 2] = [
    Layer {
        name: "futex",
        suite_features: "failpoints",
        checker_features: "",
    },
    Layer {
        name: "portable",
        suite_features: "failpoints,portable-wait",
        checker_features: "portable-wait",
    },
];

/// The suites that run under load: every cross-process suite (the Redis
/// suites skip themselves where no redis-server is installed).
const FILTER: &str = "test(/^(sync|queue|process|pool|killpoint|redis)/)";

pub(crate) fn run(args: &[String]) -> Result<()> {
    let minutes = match args {
        [] => 20.0,
        [flag, n] if flag == "--minutes" => n
            .parse::<f64>()
            .with_context(|| format!("--minutes takes a number, not {n:?}"))?,
        _ => bail!("usage: cargo xtask stress [--minutes N]"),
    };
    test::ensure_nextest()?;
    let checkers = build(&LAYERS)?;

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hog = Hog::start(2 * cores)?;
    eprintln!(
        "stress: {minutes} minutes, {} hog processes on {cores} cores",
        hog.kids.len()
    );
    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut suites = (0u32, 0u32); // runs, failures
    let mut totals = Totals::default();
    'outer: loop {
        for (layer, checker) in LAYERS.iter().zip(&checkers) {
            if Instant::now() >= deadline {
                break 'outer;
            }
            suites.0 += 1;
            if suite(layer).is_err() {
                suites.1 += 1;
                eprintln!("stress: the {} suites FAILED", layer.name);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let seconds = left.as_secs().clamp(1, 15);
            match checker_round(checker, seconds) {
                Ok(t) => totals.add(&t),
                Err(e) => {
                    eprintln!("stress: the {} checker FAILED: {e:#}", layer.name);
                    totals.failed_runs += 1;
                }
            }
        }
    }
    drop(hog);
    let summary = format!(
        "stress: {minutes} minutes under load; suites: {} runs, {} failed; exactly-once: {} rounds, {} items: {} lost, {} duplicated, {} corrupt, {} reordered, {} hung",
        suites.0,
        suites.1,
        totals.rounds,
        totals.items,
        totals.lost,
        totals.duplicated,
        totals.corrupt,
        totals.reordered,
        totals.hung
    );
    println!("{summary}");
    if suites.1 > 0 || totals.bad() > 0 || totals.failed_runs > 0 {
        bail!("stress found failures");
    }
    Ok(())
}

/// Builds the suites and the checker of each layer; returns the checkers'
/// paths (one binary per layer, copied aside since both build to one name).
fn build(layers: &[Layer]) -> Result<Vec<PathBuf>> {
    let dir = test::target_dir()?.join("stress");
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for layer in layers {
        cmd::run(
            cmd::cargo()
                .args([
                    "nextest",
                    "run",
                    "--release",
                    "--no-run",
                    "-p",
                    "mproc-tests",
                ])
                .args(["--features", layer.suite_features]),
        )?;
        let mut build = cmd::cargo();
        build.args([
            "build",
            "--release",
            "-p",
            "mproc-tests",
            "--bin",
            "exactly-once",
        ]);
        if !layer.checker_features.is_empty() {
            build.args(["--features", layer.checker_features]);
        }
        cmd::run(&mut build)?;
        let built = test::target_dir()?.join("release").join("exactly-once");
        let kept = dir.join(format!("exactly-once-{}", layer.name));
        std::fs::copy(&built, &kept).with_context(|| format!("cannot copy {}", built.display()))?;
        out.push(kept);
    }
    Ok(out)
}

fn suite(layer: &Layer) -> Result<()> {
    cmd::run(
        cmd::cargo()
            .args([
                "nextest",
                "run",
                "--release",
                "--profile",
                "ci",
                "-p",
                "mproc-tests",
            ])
            .args(["--features", layer.suite_features])
            .args(["-E", FILTER]),
    )
}

#[derive(Default)]
struct Totals {
    rounds: u64,
    items: u64,
    lost: u64,
    duplicated: u64,
    corrupt: u64,
    reordered: u64,
    hung: u64,
    failed_runs: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.rounds += o.rounds;
        self.items += o.items;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.corrupt += o.corrupt;
        self.reordered += o.reordered;
        self.hung += o.hung;
        self.failed_runs += o.failed_runs;
    }

    fn bad(&self) -> u64 {
        self.lost + self.duplicated + self.corrupt + self.reordered + self.hung
    }
}

/// Runs the checker for about `seconds` and reads its tally line:
/// `exactly-once: R rounds, M items: L lost, D duplicated, C corrupt, O
/// reordered, H hung`.
fn checker_round(checker: &PathBuf, seconds: u64) -> Result<Totals> {
    let out = Command::new(checker)
        .args(["--seconds", &seconds.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {}", checker.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("exactly-once:"))
        .context("the checker printed no tally")?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let [rounds, items, lost, duplicated, corrupt, reordered, hung] = numbers[..] else {
        bail!("cannot read the checker's tally: {line}");
    };
    let t = Totals {
        rounds,
        items,
        lost,
        duplicated,
        corrupt,
        reordered,
        hung,
        failed_runs: u64::from(
            !out.status.success() && lost + duplicated + corrupt + reordered + hung == 0,
        ),
    };
    Ok(t)
}

/// Busy processes, our own children, stopped and reaped on drop.
struct Hog {
    kids: Vec<Child>,
}

impl Hog {
    fn start(n: usize) -> Result<Hog> {
        let me = std::env::current_exe()?;
        let mut hog = Hog { kids: Vec::new() };
        for _ in 0..n {
            hog.kids.push(
                Command::new(&me)
                    .arg("hog")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .context("cannot start a hog process")?,
            );
        }
        Ok(hog)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        for k in &mut self.kids {
            // Our own child, by its pid.
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

/// The body of one hog process: spin until killed.
pub(crate) fn spin() -> ! {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}
