//! `cargo xtask test`: nextest; the kill-point suites (the `failpoints`
//! feature); the sync, queue and kill-point suites again on the portable
//! wait layer; the ring's loom models (in release: they are slow
//! unoptimised); doctests; then every example once.
//!
//! The Redis suites (`redis::…`) start a private `redis-server` per test.
//! Without one installed they are skipped with a line saying so — except
//! under `CI=true`, where a missing server fails the run before anything
//! else (`.ci/run` installs it).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// How long one example may run before it counts as hung.
const EXAMPLE_BOUND: Duration = Duration::from_secs(120);

pub(crate) fn run(nextest_args: &[String]) -> Result<()> {
    ensure_nextest()?;
    ensure_redis_server()?;
    cmd::run(
        cmd::cargo()
            .args(["nextest", "run", "--workspace"])
            .args(nextest_args),
    )?;
    // A child killed at every named step of every cross-process protocol.
    cmd::run(
        cmd::cargo()
            .args(["nextest", "run", "--package", "mproc-tests"])
            .args(["--features", "failpoints"])
            .args(["-E", "test(/^killpoint/)"])
            .args(nextest_args),
    )?;
    // The cross-process sync, queue and kill-point suites again, on the
    // portable (sleep-poll) wait layer that macOS before 14.4 uses.
    cmd::run(
        cmd::cargo()
            .args(["nextest", "run", "--package", "mproc-tests"])
            .args(["--features", "portable-wait,failpoints"])
            .args(["-E", "test(/^(sync|queue|killpoint)/)"])
            .args(nextest_args),
    )?;
    // The ring's loom models (ignored in debug builds).
    cmd::run(cmd::cargo().args([
        "test",
        "--release",
        "--package",
        "mproc-queue",
        "--lib",
        "ring_model",
    ]))?;
    cmd::run(cmd::cargo().args(["test", "--doc", "--workspace"]))?;
    run_examples()
}

pub(crate) fn ensure_nextest() -> Result<()> {
    let ok = cmd::cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("cargo-nextest is missing: install it with `cargo install cargo-nextest --locked`");
    }
    Ok(())
}

/// Whether this run is CI's (`CI=true`).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The Redis suites need `redis-server`: under CI its absence fails the
/// run; elsewhere it is said once, and the suites skip themselves.
pub(crate) fn ensure_redis_server() -> Result<()> {
    let found = std::env::var_os("REDIS_SERVER").is_some()
        || Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        || ["/usr/bin/redis-server", "/usr/sbin/redis-server"]
            .iter()
            .any(|p| std::path::Path::new(p).is_file());
    match (found, in_ci()) {
        (true, _) => Ok(()),
        (false, true) => bail!(
            "redis-server is not installed and CI=true: the Redis suites must run in CI \
             (`apt-get install -y redis-server`; .ci/run installs it)"
        ),
        (false, false) => {
            eprintln!(
                "NOTE: redis-server is not installed: the Redis suites (redis::…) will be \
                 SKIPPED (apt-get install redis-server to run them)"
            );
            Ok(())
        }
    }
}

/// Every example target of the workspace, as (package, name).
fn examples() -> Result<Vec<(String, String)>> {
    let meta = cmd::output(cmd::cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let meta: serde_json::Value = serde_json::from_str(&meta)?;
    let mut out = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        for target in pkg["targets"].as_array().into_iter().flatten() {
            let is_example = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "example"));
            if is_example {
                out.push((
                    pkg["name"].as_str().unwrap_or_default().to_owned(),
                    target["name"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    Ok(out)
}

fn run_examples() -> Result<()> {
    let examples = examples()?;
    // Examples behind a feature (redis_map) are built with it.
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "--workspace",
        "--examples",
        "--features",
        "mproc/redis",
    ]))?;
    let dir = target_dir()?.join("release").join("examples");
    for (pkg, name) in &examples {
        let exe = dir.join(name);
        eprintln!("$ {} (example {name} of {pkg})", exe.display());
        let mut child = Command::new(&exe)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start example {name}"))?;
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed() > EXAMPLE_BOUND {
                // Our own child, by its pid.
                let _ = child.kill();
                let _ = child.wait();
                bail!("example {name} ran past {EXAMPLE_BOUND:?} and was killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            bail!("example {name} failed: {status}");
        }
        eprintln!("  ok in {:.2?}", start.elapsed());
    }
    eprintln!("{} examples passed", examples.len());
    Ok(())
}

pub(crate) fn target_dir() -> Result<PathBuf> {
    let meta = cmd::output(cmd::cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let meta: serde_json::Value = serde_json::from_str(&meta)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}
