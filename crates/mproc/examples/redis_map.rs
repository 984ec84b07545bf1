//! The pool across machines, on one machine: a private redis-server, two
//! worker hosts (processes of this very binary, as they would run on two
//! machines), and a client that maps over them with the local pool's API.
//!
//! ```text
//! cargo run --example redis_map --features redis
//! ```
//!
//! It needs `redis-server` (Debian: `apt-get install redis-server`); without
//! one it says so and does nothing. On real machines, every machine runs the
//! same build: `Worker::connect("redis://…")?.tasks(tasks).processes(n).run()`
//! on the workers, `RedisBackend::connect("redis://…")?.tasks(tasks()).pool()`
//! where the work is submitted (see the guide, `mproc::redis::guide`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mproc::redis::{current_worker, task, RedisBackend, Registry, Worker};
use mproc::Process;

fn square(x: u64) -> u64 {
    x * x
}

/// Which worker ran the task.
fn who(_: ()) -> String {
    current_worker().unwrap_or("?").to_owned()
}

/// The tasks other machines may run: the same function on both sides.
fn tasks() -> Registry {
    Registry::new().with(task!(square)).with(task!(who))
}

/// A worker host: what `main` runs on each worker machine.
fn worker(args: (String, String)) {
    let (url, id) = args;
    let r = Worker::connect(&url).and_then(|w| w.tasks(tasks).processes(2).id(id).run());
    if let Err(e) = r {
        eprintln!("worker: {e}");
        std::process::exit(1);
    }
}

/// A redis-server of our own, on a unix socket in a temporary directory,
/// without persistence; stopped by its pid.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Server {
    fn start() -> Result<Option<Server>, Box<dyn std::error::Error>> {
        let exe = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file());
        let Some(exe) = exe else {
            return Ok(None);
        };
        let dir = std::env::temp_dir().join(format!("redis-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("redis.sock");
        let child = Command::new(exe)
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()?;
        let server = Server { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Some(server))
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(server) = Server::start()? else {
        println!(
            "redis_map: redis-server is not installed, so there is nothing to show \
             (Debian/Ubuntu: apt-get install redis-server)."
        );
        return Ok(());
    };
    let url = server.url();
    println!("A private redis-server at {url}.");

    let mut hosts = Vec::new();
    for id in ["machine-1", "machine-2"] {
        let mut p = Process::new(worker, (url.clone(), id.to_string())).name(id);
        p.start()?;
        hosts.push(p);
    }
    println!("Two worker hosts of this binary, two processes each.");

    let pool = RedisBackend::connect(&url)?
        .tasks(tasks())
        .parallelism(4)
        .pool()?;
    let start = Instant::now();
    let squares = pool.map(square, 0..10_000)?;
    assert_eq!(squares, (0..10_000).map(square).collect::<Vec<_>>());
    println!(
        "map(square, 0..10000) in {:.2?}: the same list as a local pool's.",
        start.elapsed()
    );
    let mut ran: Vec<String> = pool
        .imap_unordered(who, vec![(); 40])
        .collect::<Result<_, _>>()?;
    ran.sort();
    ran.dedup();
    println!("Forty tasks ran on {ran:?}.");
    pool.close();
    pool.join()?;

    // SIGTERM: each host finishes what it holds and leaves.
    for p in hosts {
        p.terminate()?;
        p.join()?;
    }
    drop(server);
    println!("Workers stopped, redis-server stopped, nothing left behind.");
    Ok(())
}
