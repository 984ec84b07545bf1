//! Child-process plumbing shared by the examples: children are this same
//! program started again with `child ROLE …`, handed mproc handles through
//! `mproc::shm::transfer` (descriptors inherited, bytes as hex in argv).
//! `mproc-process` will make this a one-liner; until then it is spelled out.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use mproc::shm::transfer;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// If this process was started as a child, its role and arguments.
pub(crate) fn child_role() -> Option<Vec<String>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    (args.first().map(String::as_str) == Some("child")).then(|| args[1..].to_vec())
}

/// A command that starts this program as `child ARGS…`.
pub(crate) fn child_command(args: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("child").args(args);
    Ok(cmd)
}

/// Starts `child ROLE HEX ARGS…` with `handles` inherited; stdout as `stdout`.
pub(crate) fn spawn_with<T: Serialize>(
    role: &str,
    handles: &T,
    args: &[&str],
    stdout: Stdio,
) -> Result<Child> {
    let msg = transfer::encode(handles)?;
    let hex: String = msg.bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = child_command(&[role, &hex])?;
    cmd.args(args).stdout(stdout).stdin(Stdio::piped());
    Ok(transfer::spawn_inheriting(&mut cmd, &msg.fds)?)
}

/// In a child: the handles its parent passed (`hex` is the role's first
/// argument).
pub(crate) fn handles<T: DeserializeOwned>(hex: &str) -> Result<T> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or("malformed handle bytes")?;
    // SAFETY: the parent handed us exactly these descriptors, and we read the
    // list once, before anything else in this process could own them.
    let fds = unsafe { transfer::FdTable::from_env()? };
    Ok(transfer::decode(transfer::Message { bytes, fds })?)
}

/// Waits for every child and fails if one did not succeed.
pub(crate) fn reap(kids: Vec<Child>) -> Result<()> {
    for mut k in kids {
        let status = k.wait()?;
        if !status.success() {
            return Err(format!("a child failed: {status}").into());
        }
    }
    Ok(())
}

/// A pseudo-random number from the clock and pid (the examples need no
/// more than a different pause per process).
pub(crate) fn jitter(max: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (t ^ (u64::from(std::process::id()) * 0x9e37_79b9)) % max.max(1)
}
