//! mproc's developer tasks, reached as `cargo xtask …`.
//!
//! - `cargo xtask test [-- ARGS]` — nextest over the workspace (ARGS passed
//!   through), doctests, then every example once under a time bound.
//! - `cargo xtask ci [STAGE…]` — exactly what CI runs: fmt, clippy, docs
//!   (`gate`), `test`, a smoke run of every bench (`bench-smoke`), and a
//!   type-check for macOS (`macos`); all stages when none is named.
//! - `cargo xtask bench [--quick] [-- CRITERION ARGS]` — criterion benches and
//!   their Python `multiprocessing` counterparts side by side, as one table.
//! - `cargo xtask stress [--minutes N]` — the cross-process sync, queue and
//!   kill-point suites and the exactly-once checker, repeatedly, on both wait
//!   layers, while a CPU hog keeps every core busy (20 minutes by default).

mod bench;
mod ci;
mod cmd;
mod peers;
mod stress;
mod test;
#[cfg(test)]
mod tidy;

use std::process::ExitCode;

use anyhow::{bail, Result};

/// Failures end in one plain paragraph — what failed and how to rerun it —
/// never in a backtrace of xtask itself.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    match task {
        "test" => test::run(passthrough(rest)?),
        "ci" => ci::run(rest),
        "bench" => bench::run(rest),
        "stress" => stress::run(rest),
        // One process of stress's CPU hog (not for direct use).
        "hog" => stress::spin(),
        "help" | "-h" | "--help" => {
            println!(
                "usage: cargo xtask <test [-- ARGS] | ci [STAGE…] | bench [--quick] [--strict] [--compare OLD.json] [-- CRITERION ARGS] | stress [--minutes N]>"
            );
            Ok(())
        }
        other => bail!("unknown task {other:?}; try `cargo xtask help`"),
    }
}

/// Everything after a leading `--`, or the arguments as they are.
fn passthrough(args: &[String]) -> Result<&[String]> {
    match args.split_first() {
        Some((first, rest)) if first == "--" => Ok(rest),
        Some((first, _)) if first.starts_with('-') => bail!("put tool arguments after `--`"),
        _ => Ok(args),
    }
}
