//! Running tools: print the command, run it, fail on a non-zero exit.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The workspace root (the parent of this crate's directory).
pub(crate) fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// `cargo` as the one that runs us, at the workspace root.
pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs `cmd` with inherited stdio and fails unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        let shown = show(cmd);
        if shown.contains(" nextest run ") {
            bail!(
                "`{shown}` failed ({status}). The failing tests are listed in nextest's summary \
                 above; rerun one alone with that command and the test's name appended."
            );
        }
        bail!("`{shown}` failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, failing unless it exits 0.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}\n{}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
