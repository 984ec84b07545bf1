//! `Client`: a connection (or several) to a manager's server.

use std::fmt;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mproc_shm::ProcessIdent;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth;
use mproc_queue::{Connection, Pipe, RecvError};
use mproc_shm::transfer;

use crate::error::ManagerError;
use crate::proxy::{Dict, List, SharedValue};
use crate::wire::{self, CallPatience, Kind, Refusal, Request, Response};

/// How long one read waits before the client looks at the server's
/// liveness and its call deadline again.
const SLICE: Duration = Duration::from_millis(100);
/// How long connecting and the TCP challenge may take.
const CONNECT: Duration = Duration::from_secs(10);

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Address {
    /// A unix socket: a path, or `@name` for a Linux abstract socket.
    Unix(String),
    /// A TCP address, `host:port`.
    Tcp(String),
}

/// What a client is, as it travels to another process.
#[derive(Clone, Serialize, Deserialize)]
struct Target {
    address: Address,
    /// The TCP authkey.
    #[serde(with = "serde_bytes")]
    authkey: Vec<u8>,
    /// The server's identity, when it runs on this machine: a read that
    /// waits notices its death even without an end of file.
    server: u64,
    /// The call timeout in µs, 0 for none.
    timeout_us: u64,
}

/// A connection to a manager's server: makes and opens its shared objects.
///
/// A [`Manager`](crate::Manager) has one ([`Manager::client`](crate::Manager::client));
/// [`Client::connect_tcp`] reaches a manager that listens on TCP from any
/// machine. Cloning is cheap; clones share their connections. Each call
/// takes an idle connection (or opens one), so threads call in parallel.
///
/// A client is also a handle: put it (or any proxy) in a child's arguments
/// and it works there, on connections of its own. Note that a TCP client
/// carries its authkey with it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// The process that opened the idle connections: a forked child never
    /// uses its parent's.
    pid: u32,
    idle: Mutex<Vec<Conn>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.target.address)
            .finish_non_exhaustive()
    }
}

impl Serialize for Client {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.target.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Client {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Client, D::Error> {
        Target::deserialize(d).map(Client::from_target)
    }
}

/// One connection: a pair of shared-memory rings to a server of this
/// machine, or a TCP stream.
struct Conn {
    link: Link,
    wbuf: Vec<u8>,
}

enum Link {
    /// Requests and answers as whole messages on an mproc `Pipe` (a round
    /// trip costs about a microsecond; the server's death is noticed by the
    /// pipe's lifelines).
    Ring { pipe: Connection<()>, rbuf: Vec<u8> },
    /// Length-prefixed frames on a socket.
    Socket {
        stream: TcpStream,
        reader: wire::Reader,
    },
}

/// A failure to connect: a server that is not there any more is gone.
fn not_there(e: io::Error) -> ManagerError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => ManagerError::ServerGone,
        _ => wire::gone(e),
    }
}

impl Client {
    fn from_target(target: Target) -> Client {
        Client {
            inner: Arc::new(Inner {
                target,
                pid: std::process::id(),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A client of a server of this machine listening at `path`.
    pub(crate) fn local(path: String, server: Option<ProcessIdent>) -> Client {
        Client::from_target(Target {
            address: Address::Unix(path),
            authkey: Vec::new(),
            server: server.map_or(0, ProcessIdent::to_bits),
            timeout_us: 0,
        })
    }

    /// Connects to a manager that listens on TCP (see
    /// [`Builder::tcp`](crate::Builder::tcp)), proving that both sides hold
    /// `authkey`.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Io`] when the address does not resolve or refuses,
    /// [`ManagerError::Auth`] when the keys differ.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use mproc_manager::Client;
    ///
    /// let client = Client::connect_tcp("10.0.0.5:5000", b"our secret")?;
    /// let hits = client.named_dict::<String, u64>("hits")?;
    /// println!("{:?}", hits.get("index.html")?);
    /// # Ok::<(), mproc_manager::ManagerError>(())
    /// ```
    pub fn connect_tcp(
        addr: impl ToSocketAddrs,
        authkey: impl AsRef<[u8]>,
    ) -> Result<Client, ManagerError> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to connect to"))?;
        let client = Client::from_target(Target {
            address: Address::Tcp(addr.to_string()),
            authkey: authkey.as_ref().to_vec(),
            server: 0,
            timeout_us: 0,
        });
        // Connect now, so that a wrong address or key shows here.
        let conn = client.connect().map_err(|e| match e {
            ManagerError::ServerGone => ManagerError::Io(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "nothing listens at that address",
            )),
            other => other,
        })?;
        client.inner.idle.lock().push(conn);
        Ok(client)
    }

    /// This client with a bound on every call: past it a call fails with
    /// [`ManagerError::Timeout`] (and its connection is dropped). Without
    /// one, a call waits for as long as the server lives — which is what
    /// you want for slow `update` tasks, and what a client on another
    /// machine should not rely on.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        let mut target = self.inner.target.clone();
        target.timeout_us = u64::try_from(timeout.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        Client::from_target(target)
    }

    fn connect(&self) -> Result<Conn, ManagerError> {
        let target = &self.inner.target;
        let stream = match &target.address {
            Address::Unix(path) => {
                // A pair of rings for this connection: the server's end
                // crosses on the socket (its descriptors by SCM_RIGHTS),
                // which is then done with.
                let s = mproc_shm::transfer::connect_private(path).map_err(not_there)?;
                let (ours, theirs) = Pipe::<()>::duplex()?;
                let hello =
                    transfer::encode(&theirs).map_err(|e| ManagerError::Codec(e.to_string()))?;
                transfer::send(&s, &hello).map_err(wire::gone)?;
                return Ok(Conn {
                    link: Link::Ring {
                        pipe: ours,
                        rbuf: Vec::new(),
                    },
                    wbuf: Vec::new(),
                });
            }
            Address::Tcp(addr) => {
                let addr = addr
                    .parse()
                    .map_err(|e| ManagerError::Protocol(format!("address {addr:?}: {e}")))?;
                let mut s = TcpStream::connect_timeout(&addr, CONNECT).map_err(not_there)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(CONNECT))?;
                s.set_write_timeout(Some(CONNECT))?;
                auth::answer(&mut s, &target.authkey)?;
                s.set_write_timeout(Some(SLICE))?;
                s.set_read_timeout(Some(SLICE))?;
                let _ =
                    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::KeepAlive, &true);
                s
            }
        };
        Ok(Conn {
            link: Link::Socket {
                stream,
                reader: wire::Reader::default(),
            },
            wbuf: Vec::new(),
        })
    }

    /// Sends `req` and returns the answer; a refusal becomes its error.
    pub(crate) fn call(&self, req: &Request<'_>) -> Result<Response, ManagerError> {
        let ours = ProcessIdent::current().pid() == self.inner.pid;
        let idle = if ours {
            self.inner.idle.lock().pop()
        } else {
            None
        };
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        wire::frame(&mut conn.wbuf, req)?;
        let target = &self.inner.target;
        let patience = CallPatience {
            deadline: (target.timeout_us > 0).then(|| {
                let after = Duration::from_micros(target.timeout_us);
                (Instant::now() + after, after)
            }),
            server: ProcessIdent::from_bits(target.server),
        };
        // On an error the connection is dropped: its state is unknown.
        let answer = match &mut conn.link {
            Link::Socket { stream, reader } => {
                wire::send(stream, &conn.wbuf, &patience)?;
                wire::decode::<Response>(reader.next(stream, &patience)?)?
            }
            Link::Ring { pipe, rbuf } => {
                // The ring keeps message boundaries: no length prefix.
                pipe.send_bytes(&conn.wbuf[4..])
                    .map_err(|_| ManagerError::ServerGone)?;
                if let Some((at, after)) = patience.deadline {
                    // Bounded: wait for the answer, at most until the deadline.
                    let left = at.saturating_duration_since(Instant::now());
                    if !pipe.poll(left) {
                        return Err(ManagerError::Timeout(after));
                    }
                }
                pipe.recv_bytes_into(rbuf).map_err(|e| match e {
                    RecvError::Disconnected => ManagerError::ServerGone,
                    other => ManagerError::Protocol(other.to_string()),
                })?;
                let answer = wire::decode::<Response>(rbuf)?;
                wire::trim(rbuf);
                answer
            }
        };
        wire::trim(&mut conn.wbuf);
        // The server closes a connection after a protocol error: never
        // reuse one that saw it.
        if ours && !matches!(answer, Response::Refused(Refusal::Protocol(_))) {
            self.inner.idle.lock().push(conn);
        }
        match answer {
            Response::Refused(r) => Err(match r {
                Refusal::NoSuchObject(id) => ManagerError::NoSuchObject(id),
                Refusal::WrongType(why) => ManagerError::WrongType(why),
                Refusal::IndexOutOfRange { index, len } => {
                    ManagerError::IndexOutOfRange { index, len }
                }
                Refusal::UnknownTask(name) => ManagerError::UnknownTask(name),
                Refusal::TaskTypes(name) => ManagerError::TaskTypes(name),
                Refusal::TaskFailed(msg) => ManagerError::TaskFailed(msg),
                Refusal::Protocol(why) => ManagerError::Protocol(why),
            }),
            answer => Ok(answer),
        }
    }

    /// Asks the server to end (the manager's shutdown).
    pub(crate) fn shutdown_server(&self) -> Result<(), ManagerError> {
        match self.call(&Request::Shutdown)? {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    fn create(
        &self,
        kind: Kind,
        name: Option<&str>,
        types: u64,
        init: Option<&[u8]>,
    ) -> Result<u64, ManagerError> {
        match self.call(&Request::Create {
            kind,
            name,
            types,
            init,
        })? {
            Response::Created(id) => Ok(id),
            other => Err(unexpected(&other)),
        }
    }

    /// A new, empty shared dict (CPython's `manager.dict()`).
    ///
    /// # Errors
    ///
    /// [`ManagerError::ServerGone`] and the other errors of a call.
    pub fn dict<K, V>(&self) -> Result<Dict<K, V>, ManagerError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let id = self.create(Kind::Dict, None, Dict::<K, V>::types(), None)?;
        Ok(Dict::new(self.clone(), id))
    }

    /// The dict named `name` on this server, created empty if there is
    /// none: how processes that share no handle find the same object.
    ///
    /// # Errors
    ///
    /// [`ManagerError::WrongType`] when `name` is another kind of object or
    /// a dict of other types; the errors of a call.
    pub fn named_dict<K, V>(&self, name: &str) -> Result<Dict<K, V>, ManagerError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let id = self.create(Kind::Dict, Some(name), Dict::<K, V>::types(), None)?;
        Ok(Dict::new(self.clone(), id))
    }

    /// A new, empty shared list (CPython's `manager.list()`).
    ///
    /// # Errors
    ///
    /// The errors of a call.
    pub fn list<T>(&self) -> Result<List<T>, ManagerError>
    where
        T: Serialize + DeserializeOwned,
    {
        let id = self.create(Kind::List, None, List::<T>::types(), None)?;
        Ok(List::new(self.clone(), id))
    }

    /// The list named `name`, created empty if there is none.
    ///
    /// # Errors
    ///
    /// [`ManagerError::WrongType`] as for [`named_dict`](Client::named_dict).
    pub fn named_list<T>(&self, name: &str) -> Result<List<T>, ManagerError>
    where
        T: Serialize + DeserializeOwned,
    {
        let id = self.create(Kind::List, Some(name), List::<T>::types(), None)?;
        Ok(List::new(self.clone(), id))
    }

    /// A new shared value holding `init` (CPython's `manager.Value`, for
    /// any serde type).
    ///
    /// # Errors
    ///
    /// [`ManagerError::Codec`] when `init` does not serialize; the errors
    /// of a call.
    pub fn value<T>(&self, init: &T) -> Result<SharedValue<T>, ManagerError>
    where
        T: Serialize + DeserializeOwned,
    {
        let bytes = crate::proxy::encode(init)?;
        let id = self.create(Kind::Value, None, SharedValue::<T>::types(), Some(&bytes))?;
        Ok(SharedValue::new(self.clone(), id))
    }

    /// The value named `name`, created holding `init` if there is none
    /// (an existing one keeps its value).
    ///
    /// # Errors
    ///
    /// [`ManagerError::WrongType`] as for [`named_dict`](Client::named_dict).
    pub fn named_value<T>(&self, name: &str, init: &T) -> Result<SharedValue<T>, ManagerError>
    where
        T: Serialize + DeserializeOwned,
    {
        let bytes = crate::proxy::encode(init)?;
        let id = self.create(
            Kind::Value,
            Some(name),
            SharedValue::<T>::types(),
            Some(&bytes),
        )?;
        Ok(SharedValue::new(self.clone(), id))
    }
}

/// An answer that does not fit the question.
pub(crate) fn unexpected(answer: &Response) -> ManagerError {
    ManagerError::Protocol(format!("an unexpected answer: {}", answer.name()))
}
