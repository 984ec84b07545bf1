//! The server process: the shared objects and the loop that serves them.
//!
//! One thread accepts on each listener and one thread serves each
//! connection, so a slow or silent client holds only its own thread. A
//! local client sends, as the first thing on the unix socket, its end of a
//! pair of mproc rings (a `Pipe`); its requests and the answers then travel
//! as one message each on the rings, and the socket is closed. A TCP client
//! speaks length-prefixed frames on its socket after the authkey challenge. The
//! objects sit in a table behind a read-write lock; each object has its own
//! mutex, held for the whole of one request — an `update` runs its task
//! under it, which is what makes the read-modify-write atomic.
//!
//! Kill points (with the `failpoints` feature): `manager.request-read`
//! (a request read, nothing done), `manager.applied` (done, not answered).
//! A client whose server dies at either gets
//! [`ServerGone`](crate::ManagerError::ServerGone); what was applied before
//! the death is gone with the server's memory.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use mproc_call::{CallError, Registry, RemoteFn};
use mproc_queue::Connection;
use mproc_shm::fault;
use mproc_shm::transfer::{self, SharedFd};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::auth;
use crate::wire::{self, Forever, Kind, Refusal, Request, Response};

/// How long a TCP peer may take over the authkey challenge.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// What the server process is started with: its listeners (opened by the
/// manager, so their addresses are known before the server runs) and the
/// function that builds its task registry.
#[derive(Serialize, Deserialize)]
pub(crate) struct ServerConfig {
    pub(crate) unix: SharedFd,
    pub(crate) tcp: Option<(SharedFd, ByteBuf)>,
    pub(crate) tasks: Option<RemoteFn<(), Registry>>,
}

/// The server's main: serves until a `Shutdown` request (or a kill).
pub(crate) fn serve(config: ServerConfig) -> Result<(), String> {
    let registry = match config.tasks {
        Some(f) => f
            .call(())
            .map_err(|e| format!("the manager's registry: {e}"))?,
        None => Registry::new(),
    };
    let state = Arc::new(State {
        registry,
        table: RwLock::new(Table::default()),
    });
    if let Some((fd, key)) = config.tcp {
        let listener = TcpListener::from(fd.into_owned());
        let state = Arc::clone(&state);
        std::thread::Builder::new()
            .name("manager-tcp".into())
            .spawn(move || accept_tcp(&listener, &state, &key))
            .map_err(|e| e.to_string())?;
    }
    let listener = UnixListener::from(config.unix.into_owned());
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Out of descriptors, say: let the process breathe instead of
            // spinning on accept.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        // Only this user's processes, as a 0700 directory would allow.
        if !matches!(mproc_shm::transfer::peer_is_us(&stream), Ok(true)) {
            continue;
        }
        let state = Arc::clone(&state);
        let _ = std::thread::Builder::new()
            .name("manager-conn".into())
            .spawn(move || serve_ring(stream, &state));
    }
    Ok(())
}

fn accept_tcp(listener: &TcpListener, state: &Arc<State>, key: &[u8]) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        // A client whose host vanishes is found out by the kernel's
        // keepalive probes rather than held for ever.
        let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::KeepAlive, &true);
        let state = Arc::clone(state);
        let key = key.to_vec();
        let _ = std::thread::Builder::new()
            .name("manager-tcp-conn".into())
            .spawn(move || {
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(HANDSHAKE));
                let _ = stream.set_write_timeout(Some(HANDSHAKE));
                if auth::serve(&mut stream, &key).is_err() {
                    return;
                }
                let _ = stream.set_read_timeout(None);
                let _ = stream.set_write_timeout(None);
                serve_connection(stream, &state);
            });
    }
}

/// A local client sends its end of a pair of rings on the socket; requests
/// and answers then go over the rings, one message each.
fn serve_ring(stream: UnixStream, state: &State) {
    let _ = stream.set_read_timeout(Some(HANDSHAKE));
    let Ok(hello) = transfer::recv(&stream) else {
        return;
    };
    drop(stream);
    let Ok(pipe) = transfer::decode::<Connection<()>>(hello) else {
        return;
    };
    let mut rbuf = Vec::new();
    let mut wbuf = Vec::new();
    // Disconnected once the client's end is gone (its process ended).
    while pipe.recv_bytes_into(&mut rbuf).is_ok() {
        fault::point("manager.request-read");
        let (answer, last) = answer(state, &rbuf);
        fault::point("manager.applied");
        if !reply(&mut wbuf, &answer) || pipe.send_bytes(&wbuf[4..]).is_err() {
            return;
        }
        wire::trim(&mut rbuf);
        wire::trim(&mut wbuf);
        if finish(&answer, last) {
            return;
        }
    }
}

/// The answer to one request, and whether it is the connection's last.
fn answer(state: &State, body: &[u8]) -> (Response, bool) {
    match wire::decode::<Request<'_>>(body) {
        Ok(Request::Shutdown) => (Response::Done, true),
        Ok(req) => (state.handle(req), false),
        Err(e) => (Response::Refused(Refusal::Protocol(e.to_string())), true),
    }
}

/// Frames `answer` into `wbuf` (an answer over the limit becomes a
/// refusal); `false` if even that cannot be framed.
fn reply(wbuf: &mut Vec<u8>, answer: &Response) -> bool {
    if wire::frame(wbuf, answer).is_ok() {
        return true;
    }
    let too_big = Response::Refused(Refusal::Protocol(
        "the answer is over the 256 MiB limit".into(),
    ));
    wire::frame(wbuf, &too_big).is_ok()
}

/// After the last answer of a connection: a shutdown ends the process.
fn finish(answer: &Response, last: bool) -> bool {
    if last && matches!(answer, Response::Done) {
        // Shutdown: the objects end with the process.
        std::process::exit(0);
    }
    last
}

/// Answers one connection's requests in order until it closes or breaks
/// the protocol.
fn serve_connection(mut stream: impl Read + Write, state: &State) {
    let mut reader = wire::Reader::default();
    let mut wbuf = Vec::new();
    loop {
        let Ok(body) = reader.next(&mut stream, &Forever) else {
            return;
        };
        fault::point("manager.request-read");
        let (answer, last) = answer(state, body);
        fault::point("manager.applied");
        if !reply(&mut wbuf, &answer) || wire::send(&mut stream, &wbuf, &Forever).is_err() {
            return;
        }
        wire::trim(&mut wbuf);
        if finish(&answer, last) {
            return;
        }
    }
}

/// The data of one object: keys and values as the client's postcard bytes.
enum Data {
    Dict(HashMap<Vec<u8>, Vec<u8>>),
    List(Vec<Vec<u8>>),
    Value(Vec<u8>),
}

struct Object {
    kind: Kind,
    types: u64,
    data: Mutex<Data>,
}

#[derive(Default)]
struct Table {
    objects: HashMap<u64, Arc<Object>>,
    names: HashMap<String, u64>,
    last: u64,
}

struct State {
    registry: Registry,
    table: RwLock<Table>,
}

fn refused(r: Refusal) -> Response {
    Response::Refused(r)
}

fn out_of_range(index: u64, len: usize) -> Response {
    refused(Refusal::IndexOutOfRange {
        index,
        len: len as u64,
    })
}

/// A list index that exists.
fn at(index: u64, len: usize) -> Option<usize> {
    usize::try_from(index).ok().filter(|&i| i < len)
}

impl State {
    fn handle(&self, req: Request<'_>) -> Response {
        if let Request::Create {
            kind,
            name,
            types,
            init,
        } = req
        {
            return self.create(kind, name, types, init);
        }
        let id = req.obj();
        let Some(object) = self.table.read().objects.get(&id).cloned() else {
            return refused(Refusal::NoSuchObject(id));
        };
        let mut data = object.data.lock();
        match &mut *data {
            Data::Dict(map) => self.dict(map, req),
            Data::List(items) => self.list(items, req),
            Data::Value(bytes) => self.value(bytes, req),
        }
    }

    fn create(&self, kind: Kind, name: Option<&str>, types: u64, init: Option<&[u8]>) -> Response {
        let mut table = self.table.write();
        if let Some(name) = name {
            if let Some(&id) = table.names.get(name) {
                let o = &table.objects[&id];
                if o.kind != kind || o.types != types {
                    return refused(Refusal::WrongType(format!(
                        "{name:?} is a {:?} of other types",
                        o.kind
                    )));
                }
                return Response::Created(id);
            }
        }
        let data = match (kind, init) {
            (Kind::Dict, _) => Data::Dict(HashMap::new()),
            (Kind::List, _) => Data::List(Vec::new()),
            (Kind::Value, Some(v)) => Data::Value(v.to_vec()),
            (Kind::Value, None) => {
                return refused(Refusal::Protocol("a value needs a first value".into()))
            }
        };
        table.last += 1;
        let id = table.last;
        table.objects.insert(
            id,
            Arc::new(Object {
                kind,
                types,
                data: Mutex::new(data),
            }),
        );
        if let Some(name) = name {
            table.names.insert(name.to_owned(), id);
        }
        Response::Created(id)
    }

    /// Runs a registered update task on `args` (the entry's bytes then the
    /// caller's arguments, as postcard lays out a tuple).
    fn run_task(&self, task: &str, types: u64, args: &[u8]) -> Result<Vec<u8>, Response> {
        self.registry.call(task, types, args).map_err(|e| match e {
            CallError::UnknownTask(name) => refused(Refusal::UnknownTask(name)),
            CallError::TaskTypes(name) => refused(Refusal::TaskTypes(name)),
            other => refused(Refusal::TaskFailed(other.to_string())),
        })
    }

    fn dict(&self, map: &mut HashMap<Vec<u8>, Vec<u8>>, req: Request<'_>) -> Response {
        match req {
            Request::Get { key, .. } => Response::Bytes(map.get(key).cloned()),
            Request::Insert { key, value, .. } => {
                Response::Bytes(map.insert(key.to_vec(), value.to_vec()))
            }
            Request::Remove { key, .. } => Response::Bytes(map.remove(key)),
            Request::Contains { key, .. } => Response::Bool(map.contains_key(key)),
            Request::Len { .. } => Response::Len(map.len() as u64),
            Request::Clear { .. } => {
                map.clear();
                Response::Done
            }
            Request::Snapshot { .. } => Response::Many(
                map.iter()
                    .flat_map(|(k, v)| [ByteBuf::from(k.clone()), ByteBuf::from(v.clone())])
                    .collect(),
            ),
            Request::Update {
                key,
                task,
                types,
                args,
                ..
            } => {
                // `fn(Option<V>, A) -> Option<V>`: postcard writes an Option
                // as a 0 or 1 byte before the value.
                let mut input = Vec::with_capacity(1 + args.len() + 16);
                match map.get(key) {
                    Some(v) => {
                        input.push(1);
                        input.extend_from_slice(v);
                    }
                    None => input.push(0),
                }
                input.extend_from_slice(args);
                let out = match self.run_task(task, types, &input) {
                    Ok(out) => out,
                    Err(refusal) => return refusal,
                };
                match out.split_first() {
                    Some((0, [])) => {
                        map.remove(key);
                        Response::Bytes(None)
                    }
                    Some((1, new)) => {
                        map.insert(key.to_vec(), new.to_vec());
                        Response::Bytes(Some(new.to_vec()))
                    }
                    _ => refused(Refusal::Protocol(
                        "an update task's result is not an Option".into(),
                    )),
                }
            }
            other => refused(Refusal::Protocol(format!(
                "a {} request for a dict",
                other.name()
            ))),
        }
    }

    fn list(&self, items: &mut Vec<Vec<u8>>, req: Request<'_>) -> Response {
        let len = items.len();
        match req {
            Request::Push { value, .. } => {
                items.push(value.to_vec());
                Response::Len(items.len() as u64)
            }
            Request::Pop { .. } => Response::Bytes(items.pop()),
            Request::GetAt { index, .. } => {
                Response::Bytes(at(index, len).map(|i| items[i].clone()))
            }
            Request::SetAt { index, value, .. } => match at(index, len) {
                Some(i) => Response::Bytes(Some(std::mem::replace(&mut items[i], value.to_vec()))),
                None => out_of_range(index, len),
            },
            Request::InsertAt { index, value, .. } => {
                match usize::try_from(index).ok().filter(|&i| i <= len) {
                    Some(i) => {
                        items.insert(i, value.to_vec());
                        Response::Len(items.len() as u64)
                    }
                    None => out_of_range(index, len),
                }
            }
            Request::RemoveAt { index, .. } => match at(index, len) {
                Some(i) => Response::Bytes(Some(items.remove(i))),
                None => out_of_range(index, len),
            },
            Request::Len { .. } => Response::Len(len as u64),
            Request::Clear { .. } => {
                items.clear();
                Response::Done
            }
            Request::Snapshot { .. } => {
                Response::Many(items.iter().cloned().map(ByteBuf::from).collect())
            }
            Request::Update {
                index,
                task,
                types,
                args,
                ..
            } => {
                let Some(i) = at(index, len) else {
                    return out_of_range(index, len);
                };
                let mut input = items[i].clone();
                input.extend_from_slice(args);
                match self.run_task(task, types, &input) {
                    Ok(new) => {
                        items[i].clone_from(&new);
                        Response::Bytes(Some(new))
                    }
                    Err(refusal) => refusal,
                }
            }
            other => refused(Refusal::Protocol(format!(
                "a {} request for a list",
                other.name()
            ))),
        }
    }

    fn value(&self, bytes: &mut Vec<u8>, req: Request<'_>) -> Response {
        match req {
            Request::Get { .. } => Response::Bytes(Some(bytes.clone())),
            Request::Set { value, .. } => {
                Response::Bytes(Some(std::mem::replace(bytes, value.to_vec())))
            }
            Request::Len { .. } => Response::Len(1),
            Request::Snapshot { .. } => Response::Many(vec![ByteBuf::from(bytes.clone())]),
            Request::Update {
                task, types, args, ..
            } => {
                let mut input = bytes.clone();
                input.extend_from_slice(args);
                match self.run_task(task, types, &input) {
                    Ok(new) => {
                        bytes.clone_from(&new);
                        Response::Bytes(Some(new))
                    }
                    Err(refusal) => refusal,
                }
            }
            other => refused(Refusal::Protocol(format!(
                "a {} request for a value",
                other.name()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn state() -> State {
        State {
            registry: Registry::new(),
            table: RwLock::new(Table::default()),
        }
    }

    /// Serves `bytes` on a fresh connection; what the server answered
    /// before it closed the connection.
    fn answers_to(bytes: &[u8]) -> Vec<u8> {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || serve_connection(theirs, &state()));
        ours.write_all(bytes).unwrap();
        ours.shutdown(std::net::Shutdown::Write).unwrap();
        // The server may close with our bytes unread: a reset after its
        // answer.
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = ours.read(&mut chunk) {
            out.extend_from_slice(&chunk[..n]);
        }
        server.join().unwrap();
        out
    }

    fn answer(out: &[u8]) -> Response {
        let len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(out.len(), 4 + len, "one answer");
        wire::decode(&out[4..]).unwrap()
    }

    #[test]
    fn a_frame_over_the_limit_closes_the_connection_unanswered() {
        let huge = (wire::MAX_FRAME as u32 + 1).to_le_bytes();
        assert!(answers_to(&huge).is_empty());
        assert!(answers_to(&u32::MAX.to_le_bytes()).is_empty());
    }

    #[test]
    fn a_frame_that_does_not_decode_is_refused_and_the_connection_closed() {
        let mut bytes = 3u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0xee, 0xff, 0x01]);
        // A second, valid request after it is never served.
        let mut next = Vec::new();
        wire::frame(&mut next, &Request::Len { obj: 1 }).unwrap();
        bytes.extend_from_slice(&next);
        match answer(&answers_to(&bytes)) {
            Response::Refused(Refusal::Protocol(why)) => assert!(why.contains("decode"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_on_unknown_or_mismatched_objects_are_refused() {
        let s = state();
        assert!(matches!(
            s.handle(Request::Len { obj: 9 }),
            Response::Refused(Refusal::NoSuchObject(9))
        ));
        let Response::Created(id) = s.handle(Request::Create {
            kind: Kind::List,
            name: Some("l"),
            types: 1,
            init: None,
        }) else {
            panic!("not created")
        };
        assert!(matches!(
            s.handle(Request::Get { obj: id, key: b"k" }),
            Response::Refused(Refusal::Protocol(_))
        ));
        assert!(matches!(
            s.handle(Request::Create {
                kind: Kind::List,
                name: Some("l"),
                types: 2,
                init: None
            }),
            Response::Refused(Refusal::WrongType(_))
        ));
        assert!(matches!(
            s.handle(Request::Create {
                kind: Kind::Value,
                name: None,
                types: 1,
                init: None
            }),
            Response::Refused(Refusal::Protocol(_))
        ));
        assert!(matches!(
            s.handle(Request::Update {
                obj: id,
                key: b"",
                index: 0,
                task: "t",
                types: 0,
                args: b""
            }),
            Response::Refused(Refusal::IndexOutOfRange { index: 0, len: 0 })
        ));
    }
}
