//! `Manager`: starts the server process and owns it.

use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mproc_call::{Callable, Registry, RemoteFn};
use mproc_process::{Process, StartMethod};
use mproc_shm::transfer::{self, SharedFd};
use mproc_shm::ProcessIdent;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;

use crate::client::Client;
use crate::error::ManagerError;
use crate::proxy::{Dict, List, SharedValue};
use crate::server::{serve, ServerConfig};

/// How long a dropped manager waits for its server to end after asking it
/// to, before it kills it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A fresh socket name for this process's next server.
fn fresh_name() -> std::io::Result<String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let salt = crate::auth::random::<4>()?;
    Ok(format!(
        "mproc-mgr-{}-{}-{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        u32::from_le_bytes(salt)
    ))
}

/// How to start a [`Manager`].
#[derive(Debug, Default)]
pub struct Builder {
    method: Option<StartMethod>,
    tcp: Option<(Vec<SocketAddr>, Vec<u8>)>,
    tasks: Option<RemoteFn<(), Registry>>,
    io_error: Option<std::io::Error>,
}

impl Builder {
    /// How the server process starts (the default start method otherwise).
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// Also listen on TCP at `addr` (port 0 picks a free one; see
    /// [`Manager::tcp_address`]), for clients on other machines
    /// ([`Client::connect_tcp`]). Every TCP connection must prove it holds
    /// `authkey`, and the server proves it too (HMAC-SHA256 challenges
    /// both ways, as CPython's `multiprocessing.connection` does). The
    /// traffic itself is not encrypted: keep it on a network you trust, or
    /// tunnel it.
    pub fn tcp(mut self, addr: impl ToSocketAddrs, authkey: impl AsRef<[u8]>) -> Builder {
        match addr.to_socket_addrs() {
            Ok(addrs) => self.tcp = Some((addrs.collect(), authkey.as_ref().to_vec())),
            Err(e) => self.io_error = Some(e),
        }
        self
    }

    /// The functions `update` may run in the server: `tasks` is called
    /// there, once, when it starts (a `fn` item or a closure that captures
    /// nothing, so that it crosses to the server like any mproc target).
    pub fn tasks<F, M>(mut self, tasks: F) -> Builder
    where
        F: Callable<M, Args = (), Output = Registry>,
    {
        self.tasks = Some(RemoteFn::new(tasks));
        self
    }

    /// Starts the server process and returns its owner.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Io`] when a socket cannot be opened (a TCP address
    /// in use, …) or the process cannot start.
    pub fn start(self) -> Result<Manager, ManagerError> {
        if let Some(e) = self.io_error {
            return Err(e.into());
        }
        let (listener, path, dir) = transfer::listen_private(&fresh_name()?)?;
        let mut tcp_address = None;
        let tcp = match self.tcp {
            Some((addrs, key)) => {
                let l = TcpListener::bind(&addrs[..])?;
                tcp_address = Some(l.local_addr()?);
                Some((SharedFd::new(l), ByteBuf::from(key)))
            }
            None => None,
        };
        let config = ServerConfig {
            unix: SharedFd::new(listener),
            tcp,
            tasks: self.tasks,
        };
        // A daemon: it dies with this process, however this one ends.
        let mut process = Process::new(serve, config)
            .name("mproc-manager")
            .daemon(true);
        if let Some(method) = self.method {
            process = process.start_method(method);
        }
        if let Err(e) = process.start() {
            if let Some(dir) = &dir {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(ManagerError::Io(std::io::Error::other(e.to_string())));
        }
        let server = process.pid().and_then(ProcessIdent::of);
        Ok(Manager {
            client: Client::local(path, server),
            process: Some(process),
            dir,
            tcp_address,
        })
    }
}

/// A server process that owns shared dicts, lists and values, and their
/// proxies: Python's `multiprocessing.Manager()`.
///
/// [`Manager::new`] starts the server (a daemon child of this process: it
/// ends with it); [`dict`](Manager::dict), [`list`](Manager::list) and
/// [`value`](Manager::value) make objects there and return proxies —
/// handles that any process given one (as an argument of `spawn`, a
/// `Process` or a pool task) uses to reach the same object. Dropping the
/// manager (or [`shutdown`](Manager::shutdown)) ends the server and its
/// objects; a proxy used after that fails with
/// [`ManagerError::ServerGone`], as does every call when the server is
/// killed — never a hang.
///
/// The server listens on a unix socket that only this user can reach (an
/// abstract socket on Linux: nothing on disk), where each local connection
/// hands over a pair of shared-memory rings that its calls then use; and,
/// with [`Builder::tcp`], on TCP for other machines behind an authkey.
///
/// Objects live as long as the server: there is no reference counting
/// across processes (a killed process could never give its references
/// back), so make long-lived servers' objects named and reuse them.
///
/// # Examples
///
/// ```no_run
/// use mproc_manager::Manager;
///
/// fn worker(id: u32, results: mproc_manager::Dict<u32, String>) {
///     results.insert(id, format!("done by {}", std::process::id())).unwrap();
/// }
///
/// let m = Manager::new()?;
/// let results = m.dict::<u32, String>()?;
/// let children: Vec<_> = (0..4)
///     .map(|id| mproc_process::spawn(worker, (id, results.clone())))
///     .collect();
/// for c in children {
///     c.join().unwrap();
/// }
/// assert_eq!(results.len()?, 4);
/// # Ok::<(), mproc_manager::ManagerError>(())
/// ```
pub struct Manager {
    client: Client,
    process: Option<Process>,
    dir: Option<PathBuf>,
    tcp_address: Option<SocketAddr>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("pid", &self.pid())
            .field("tcp_address", &self.tcp_address)
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Starts a server with the defaults (unix socket only, no update
    /// tasks).
    ///
    /// # Errors
    ///
    /// As for [`Builder::start`].
    pub fn new() -> Result<Manager, ManagerError> {
        Builder::default().start()
    }

    /// A builder: start method, TCP, update tasks.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The client of this manager's server (cheap to clone; a handle).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The server's pid.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Where the server listens on TCP, if it does.
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp_address
    }

    /// A new, empty shared dict: [`Client::dict`].
    ///
    /// # Errors
    ///
    /// As for [`Client::dict`].
    pub fn dict<K, V>(&self) -> Result<Dict<K, V>, ManagerError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.client.dict()
    }

    /// A new, empty shared list: [`Client::list`].
    ///
    /// # Errors
    ///
    /// As for [`Client::list`].
    pub fn list<T>(&self) -> Result<List<T>, ManagerError>
    where
        T: Serialize + DeserializeOwned,
    {
        self.client.list()
    }

    /// A new shared value: [`Client::value`].
    ///
    /// # Errors
    ///
    /// As for [`Client::value`].
    pub fn value<T>(&self, init: &T) -> Result<SharedValue<T>, ManagerError>
    where
        T: Serialize + DeserializeOwned,
    {
        self.client.value(init)
    }

    /// Ends the server (its objects with it) and reaps it.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ServerGone`] when it had already ended; it is reaped
    /// all the same.
    pub fn shutdown(mut self) -> Result<(), ManagerError> {
        self.end()
    }

    fn end(&mut self) -> Result<(), ManagerError> {
        let Some(process) = self.process.take() else {
            return Ok(());
        };
        let asked = self.client.with_timeout(SHUTDOWN_GRACE).shutdown_server();
        let _ = process.join_timeout(SHUTDOWN_GRACE);
        if process.is_alive() {
            let _ = process.kill();
            let _ = process.join();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        asked
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.end();
    }
}
