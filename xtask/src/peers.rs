//! The Redis pool's peers for `cargo xtask bench`: Celery 5 (Redis broker
//! and result backend), RQ and Ray, installed from PyPI into a venv under
//! `target/mproc-bench/venv` in the same run (kept for the next), and
//! measured by `benches/python/redis_peers.py` against a private
//! redis-server on a loopback port, stopped by its pid.
//!
//! A peer that cannot be installed or run is not a failure: its rows say
//! why instead of a number.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cmd, test};

/// What the peers script measured, and why the missing ones are missing.
pub(crate) struct Peers {
    values: BTreeMap<String, f64>,
    unavailable: BTreeMap<String, String>,
}

impl Peers {
    pub(crate) fn value(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }

    /// Why the peer measured under `key` has no number.
    pub(crate) fn why_not(&self, key: &str) -> String {
        let peer = key.split('_').next().unwrap_or(key);
        self.unavailable
            .get(peer)
            .map(|why| format!("{peer}: {why}"))
            .unwrap_or_else(|| format!("{peer}: no measurement"))
    }
}

/// The pip requirement of each peer.
const PEERS: [(&str, &str); 3] = [
    ("celery", "celery[redis]>=5,<6"),
    ("rq", "rq>=1.15"),
    ("ray", "ray>=2.9"),
];

pub(crate) fn redis_server_installed() -> bool {
    redis_server().is_some()
}

fn redis_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REDIS_SERVER") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin"].map(PathBuf::from))
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

/// Installs what it can, runs the peers; `Err` when none can run at all.
pub(crate) fn run(quick: bool) -> Result<Peers, String> {
    let exe = redis_server().ok_or("redis-server is not installed")?;
    let out = test::target_dir()
        .map_err(|e| e.to_string())?
        .join("mproc-bench");
    let venv = out.join("venv");
    let python = venv.join("bin").join("python");
    let mut unavailable = BTreeMap::new();
    if !python.is_file() {
        let base = ["python3.11", "python3"]
            .into_iter()
            .find(|p| {
                Command::new(p)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .ok_or("no python3 to make a venv with")?;
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        eprintln!("$ {base} -m venv {}", venv.display());
        let made = Command::new(base)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map_err(|e| format!("cannot make a venv: {e}"))?;
        if !made.success() {
            return Err(format!("`{base} -m venv` failed: {made}"));
        }
    }
    for (peer, requirement) in PEERS {
        if let Err(why) = install(&python, peer, requirement) {
            eprintln!("bench: {peer} is unavailable: {why}");
            unavailable.insert(peer.to_string(), why);
        }
    }
    let server = Server::start(&exe, &out)?;
    let script = cmd::root()
        .join("benches")
        .join("python")
        .join("redis_peers.py");
    let mut c = Command::new(&python);
    c.arg(&script).env("REDIS_URL", server.url());
    if quick {
        c.arg("--quick");
    }
    for (peer, _) in PEERS {
        if !unavailable.contains_key(peer) {
            c.arg(peer);
        }
    }
    eprintln!(
        "$ {} {}{}",
        python.display(),
        script.display(),
        if quick { " --quick" } else { "" }
    );
    let printed = cmd::output(&mut c).map_err(|e| format!("the peers script failed: {e:#}"))?;
    drop(server);
    let json: serde_json::Value = serde_json::from_str(printed.trim())
        .map_err(|e| format!("the peers script printed no JSON object: {e}"))?;
    let mut values = BTreeMap::new();
    for (k, v) in json.as_object().into_iter().flatten() {
        if let Some(v) = v.as_f64() {
            values.insert(k.clone(), v);
        }
    }
    for (peer, why) in json["_unavailable"].as_object().into_iter().flatten() {
        unavailable.insert(peer.clone(), why.as_str().unwrap_or("failed").to_owned());
    }
    for (peer, _) in PEERS {
        if let Some(why) = unavailable.get(peer) {
            eprintln!("bench: {peer}: {why}");
        }
    }
    Ok(Peers {
        values,
        unavailable,
    })
}

/// `pip install` of one peer into the venv, unless it imports already.
fn install(python: &Path, peer: &str, requirement: &str) -> Result<(), String> {
    let present = Command::new(python)
        .args(["-c", &format!("import {peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("$ {} -m pip install {requirement}", python.display());
    let out = Command::new(python)
        .args(["-m", "pip", "install", "--quiet", requirement])
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!("pip install {requirement} failed: {}", last.trim()))
}

/// A redis-server on a free loopback port, persistence off; stopped by its
/// pid when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start(exe: &Path, out: &Path) -> Result<Server, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = out.join(format!("redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let server = Server { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
