//! A private redis-server per test: on a unix socket in a temporary
//! directory, persistence off unless asked for, stopped by its pid.
//!
//! When no `redis-server` is installed the suites are skipped with a line
//! saying so — except under `CI=true`, where a missing server fails the
//! test: CI never skips the Redis suites silently.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;

/// How long a server may take to answer PING after it was started (an AOF
/// to load on a loaded machine included).
const READY_BOUND: Duration = Duration::from_secs(30);

/// The redis-server to run: `$REDIS_SERVER`, else the first `redis-server`
/// on `PATH` or in the usual places.
pub fn redis_server_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REDIS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/bin",
                "/usr/sbin",
                "/usr/local/bin",
                "/opt/homebrew/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

/// Whether this run is CI's (`CI=true`, as CI services set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// How a test's server is run.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerOptions {
    /// Append-only file on, fsynced at every write (`appendfsync always`):
    /// what survives a restart is every write the server acknowledged.
    pub aof: bool,
}

/// A redis-server of this test alone.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    exe: PathBuf,
    opts: ServerOptions,
    socket: PathBuf,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server without persistence, or `None` (after printing why)
    /// when none is installed outside CI.
    ///
    /// # Panics
    ///
    /// Under `CI=true` when no server is installed, and when a server cannot
    /// be started or does not answer within 30 s.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(ServerOptions::default())
    }

    /// [`start`](RedisServer::start) with `opts`.
    ///
    /// # Panics
    ///
    /// As [`start`](RedisServer::start).
    pub fn start_with(opts: ServerOptions) -> Option<RedisServer> {
        let Some(exe) = redis_server_path() else {
            assert!(
                !in_ci(),
                "redis-server is not installed and CI=true: the Redis suites must run in CI \
                 (.ci/run installs it with apt-get install -y redis-server)"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        };
        let dir = TempDir::new("rds");
        let socket = dir.path().join("redis.sock");
        let mut server = RedisServer {
            child: None,
            exe,
            opts,
            socket,
            dir,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&self.socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        if self.opts.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches no memory of
            // the parent; the server dies with the test process if the test
            // is killed, instead of lingering.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server answers PING with PONG (not LOADING).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_BOUND;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(self.dir.path().join("redis.log"))
                        .unwrap_or_default();
                    panic!("redis-server exited at start ({status}):\n{log}");
                }
            }
            if self
                .command(&["PING"])
                .is_some_and(|r| r == Resp::Simple("PONG".into()))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within {READY_BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one command and returns its reply, or `None` when the server
    /// cannot be reached: the tests' own look at the server, not through
    /// the crate under test.
    pub fn command(&self, args: &[&str]) -> Option<Resp> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some((reply, _)) = Resp::parse(&buf) {
                return Some(reply);
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// An integer reply of `args` (0 when there is none).
    pub fn int(&self, args: &[&str]) -> i64 {
        match self.command(args) {
            Some(Resp::Int(n)) => n,
            Some(Resp::Bulk(Some(b))) => String::from_utf8_lossy(&b).parse().unwrap_or(0),
            _ => 0,
        }
    }

    /// The keys whose names match `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.command(&["KEYS", pattern]) {
            Some(Resp::Array(items)) => items
                .into_iter()
                .filter_map(|k| match k {
                    Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A field of `INFO section` (`used_memory`, say).
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let Some(Resp::Bulk(Some(b))) = self.command(&["INFO", section]) else {
            return None;
        };
        let text = String::from_utf8_lossy(&b).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }

    /// The URL of the server for the crate under test.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// The server's unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the server (SIGKILL, by its pid) and starts it again on the same
    /// socket and directory: with `aof`, it comes back with every write it
    /// acknowledged.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A reply, as far as the tests read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`.
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n` (`None`: nil).
    Bulk(Option<Vec<u8>>),
    /// `*n` (a nil array is empty).
    Array(Vec<Resp>),
}

impl Resp {
    /// One reply from the front of `buf` and the bytes it took, or `None`
    /// when `buf` holds no whole reply yet.
    fn parse(buf: &[u8]) -> Option<(Resp, usize)> {
        let end = buf.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&buf[1..end]).ok()?;
        let next = end + 2;
        match buf.first()? {
            b'+' => Some((Resp::Simple(line.to_owned()), next)),
            b'-' => Some((Resp::Error(line.to_owned()), next)),
            b':' => Some((Resp::Int(line.parse().ok()?), next)),
            b'$' => {
                let n: i64 = line.parse().ok()?;
                if n < 0 {
                    return Some((Resp::Bulk(None), next));
                }
                let n = usize::try_from(n).ok()?;
                let body = buf.get(next..next + n)?;
                buf.get(next + n..next + n + 2)?;
                Some((Resp::Bulk(Some(body.to_vec())), next + n + 2))
            }
            b'*' => {
                let n: i64 = line.parse().ok()?;
                let mut at = next;
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    let (item, used) = Resp::parse(&buf[at..])?;
                    items.push(item);
                    at += used;
                }
                Some((Resp::Array(items), at))
            }
            _ => None,
        }
    }
}

/// A TCP proxy on 127.0.0.1 in front of a server's unix socket, which a
/// test can cut: every connection through it is dropped, and new ones are
/// closed as soon as they are accepted, until it is restored.
#[derive(Debug)]
pub struct CutProxy {
    port: u16,
    shared: std::sync::Arc<ProxyShared>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct ProxyShared {
    cut: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    /// Both ends of every connection made, to shut them down on a cut.
    live: std::sync::Mutex<Vec<(std::net::TcpStream, UnixStream)>>,
}

impl CutProxy {
    /// A proxy to the unix socket at `upstream`.
    ///
    /// # Panics
    ///
    /// When it cannot listen.
    pub fn start(upstream: &Path) -> CutProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let shared = std::sync::Arc::new(ProxyShared::default());
        let (sh, upstream) = (shared.clone(), upstream.to_path_buf());
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(down) = conn else { continue };
                if sh.cut.load(Ordering::SeqCst) {
                    let _ = down.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(up) = UnixStream::connect(&upstream) else {
                    continue;
                };
                let (Ok(d2), Ok(u2)) = (down.try_clone(), up.try_clone()) else {
                    continue;
                };
                if let (Ok(d3), Ok(u3)) = (down.try_clone(), up.try_clone()) {
                    sh.live.lock().expect("proxy table").push((d3, u3));
                }
                std::thread::spawn(move || pump(down, up));
                std::thread::spawn(move || pump(u2, d2));
            }
        });
        CutProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The URL to reach the server through the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.shared.cut.store(true, Ordering::SeqCst);
        for (d, u) in self.shared.live.lock().expect("proxy table").drain(..) {
            let _ = d.shutdown(std::net::Shutdown::Both);
            let _ = u.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared
            .cut
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the acceptor so that it sees the stop flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Copies bytes one way until either side ends.
fn pump(mut from: impl Read, mut to: impl Write + Shutdown) {
    let mut buf = [0u8; 16 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    to.shut();
}

/// Either kind of stream, shut down both ways.
trait Shutdown {
    fn shut(&self);
}

impl Shutdown for std::net::TcpStream {
    fn shut(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Shutdown for UnixStream {
    fn shut(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}
