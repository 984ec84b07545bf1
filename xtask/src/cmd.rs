//! Running tools: print the command, run it, fail on a non-zero exit.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

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

/// Runs `cmd` with inherited stdio and fails unless it exits 0. A failing
/// nextest run ends with the failing tests' names and the command that
/// reruns exactly them.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    eprintln!("$ {shown}");
    if shown.contains(" nextest run") {
        return run_nextest(cmd, &shown);
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("`{shown}` failed: {status}");
    }
    Ok(())
}

/// Runs nextest with its stderr passed through line by line, noting the
/// tests it reports failed.
fn run_nextest(cmd: &mut Command, shown: &str) -> Result<()> {
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let mut failed: Vec<String> = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line.context("cannot read nextest's output")?;
            eprintln!("{line}");
            if let Some(name) = failed_test(&line) {
                if !failed.contains(&name) {
                    failed.push(name);
                }
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {shown}"))?;
    if status.success() {
        return Ok(());
    }
    if failed.is_empty() {
        bail!("`{shown}` failed ({status}) before any test failed: see its output above");
    }
    let list: String = failed.iter().map(|t| format!("\n  {t}")).collect();
    bail!(
        "`{shown}` failed ({status}). Failing tests:{list}\nRerun exactly them with:\n  {}",
        rerun(cmd, &failed)
    )
}

/// The test a nextest status line reports failed (`FAIL`, `TIMEOUT`, a
/// signal…), as `binary test::name`.
fn failed_test(line: &str) -> Option<String> {
    let line = line.trim_start();
    let (word, rest) = line.split_once(' ')?;
    let failing =
        matches!(word, "FAIL" | "TIMEOUT" | "LEAK-FAIL" | "ABORT") || word.starts_with("SIG");
    if !failing {
        return None;
    }
    let rest = rest.trim_start().strip_prefix('[')?;
    let (_, rest) = rest.split_once(']')?;
    let mut rest = rest.trim_start();
    // Newer nextest numbers the tests: "(3/7)".
    if rest.starts_with('(') {
        rest = rest.split_once(')')?.1.trim_start();
    }
    let (binary, test) = rest.split_once(' ')?;
    Some(format!("{binary} {}", test.trim()))
}

/// The same nextest command with its test filter replaced by the failing
/// tests' names.
fn rerun(cmd: &Command, failed: &[String]) -> String {
    let mut out = vec![cmd.get_program().to_string_lossy().into_owned()];
    let mut args = cmd.get_args().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = args.next() {
        if a == "-E" || a == "--filterset" || a == "--filter-expr" {
            args.next();
            continue;
        }
        out.push(a);
    }
    let filter: Vec<String> = failed
        .iter()
        .map(|t| format!("test(={})", t.rsplit(' ').next().unwrap_or(t)))
        .collect();
    out.push("-E".into());
    out.push(format!("'{}'", filter.join(" | ")));
    out.join(" ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_lines_name_their_tests_and_the_rerun_keeps_the_rest() {
        let lines = [
            "        FAIL [   0.253s] (3/7) mproc-tests::it progress::counts_items",
            "     TIMEOUT [  60.001s] mproc-tests::it pool::hangs",
            "     SIGSEGV [   0.010s] (1/2) mproc-queue ring::tests::crash",
            "        PASS [   0.100s] (2/3) mproc-tests::it progress::ok",
            "     Summary [   0.607s] 3 tests run: 3 passed, 116 skipped",
        ];
        let got: Vec<_> = lines.iter().filter_map(|l| failed_test(l)).collect();
        assert_eq!(
            got,
            [
                "mproc-tests::it progress::counts_items",
                "mproc-tests::it pool::hangs",
                "mproc-queue ring::tests::crash",
            ]
        );
        let mut cmd = Command::new("cargo");
        cmd.args([
            "nextest",
            "run",
            "-p",
            "mproc-tests",
            "-E",
            "test(/^pool/)",
            "--profile",
            "ci",
        ]);
        assert_eq!(
            rerun(&cmd, &got[..2]),
            "cargo nextest run -p mproc-tests --profile ci -E \
             'test(=progress::counts_items) | test(=pool::hangs)'"
        );
    }
}
