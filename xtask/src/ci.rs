//! `cargo xtask ci [STAGE…]`: exactly what CI runs, in order, stopping at the
//! first failure.

use std::process::Stdio;

use anyhow::{bail, Result};

use crate::{cmd, stress, test};

/// The target of the macOS type-check.
const MACOS: &str = "aarch64-apple-darwin";

/// The stages, in the order `cargo xtask ci` runs them. CI's jobs each run
/// one stage (`cargo xtask ci gate`, …), so local and CI runs are the same.
const STAGES: &[&str] = &["gate", "test", "bench-smoke", "macos", "stress"];

/// How long CI keeps the suites running under load.
const STRESS_MINUTES: &str = "2";

pub(crate) fn run(args: &[String]) -> Result<()> {
    let chosen: Vec<&str> = if args.is_empty() {
        STAGES.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for stage in &chosen {
        match *stage {
            "gate" => gate()?,
            "test" => test::run(&["--profile".into(), "ci".into()])?,
            // Smoke: criterion runs each bench once when not given `--bench`.
            "bench-smoke" => cmd::run(cmd::cargo().args(["test", "--workspace", "--benches"]))?,
            "macos" => macos_check()?,
            "stress" => stress::run(&["--minutes".into(), STRESS_MINUTES.into()])?,
            other => bail!("unknown ci stage {other:?}; stages: {}", STAGES.join(", ")),
        }
    }
    eprintln!("xtask ci: {} passed", chosen.join(", "));
    Ok(())
}

/// The library crates, checked on their own (no feature unified in from the
/// test and example packages), so that the build without optional
/// features stays clean too.
const LIBS: &[&str] = &[
    "mproc",
    "mproc-shm",
    "mproc-call",
    "mproc-sync",
    "mproc-process",
    "mproc-queue",
    "mproc-pool",
    "mproc-redis",
    "mproc-manager",
];

/// The optional parts users turn on, each checked alone on the façade.
const FEATURES: &[&str] = &["async", "tokio", "progress", "tracing"];

fn gate() -> Result<()> {
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
    // Everything on: every optional part, the kill points, both wait layers.
    cmd::run(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The libraries with no feature, then with each one alone.
    let mut libs = cmd::cargo();
    libs.arg("clippy");
    for lib in LIBS {
        libs.args(["--package", lib]);
    }
    cmd::run(libs.args(["--lib", "--", "-D", "warnings"]))?;
    for feature in FEATURES {
        cmd::run(cmd::cargo().args([
            "clippy",
            "--package",
            "mproc",
            "--lib",
            "--features",
            feature,
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // What docs.rs builds (all features), with every warning an error:
    // broken intra-doc links included.
    cmd::run(
        cmd::cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
}

fn macos_check() -> Result<()> {
    if let Err(reason) = ensure_target(MACOS) {
        println!("SKIPPED macOS check: {reason}");
        return Ok(());
    }
    // The test package turns every optional part on, so this checks them
    // too (tokio's pidfd path is Linux-only and compiles out). Warnings are
    // errors here as in the gate: a macOS user builds these lines.
    cmd::run(
        cmd::cargo()
            .args(["check", "--workspace", "--all-targets", "--target", MACOS])
            .env("RUSTFLAGS", "-D warnings"),
    )
}

/// Makes sure the standard library for `target` is installed.
fn ensure_target(target: &str) -> Result<(), String> {
    let installed = std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup is not available ({e})"))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        return Ok(());
    }
    eprintln!("$ rustup target add {target}");
    let status = std::process::Command::new("rustup")
        .args(["target", "add", target])
        .stdout(Stdio::inherit())
        .status()
        .map_err(|e| format!("cannot run rustup ({e})"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`rustup target add {target}` failed: {status}"))
    }
}
