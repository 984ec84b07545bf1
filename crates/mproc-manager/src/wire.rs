//! The manager's wire protocol: postcard messages, as whole messages on a
//! local client's rings, as length-prefixed frames on a TCP socket.
//!
//! A frame is a little-endian `u32` length and that many bytes of postcard:
//! a [`Request`] from a client, a [`Response`] from the server, one response
//! per request, in order, on one connection. Keys and values travel as the
//! postcard bytes of the proxy's types; the server never decodes them (it
//! compares keys by their bytes), so it needs none of the client's types.
//!
//! Bytes from the other end are untrusted: a length above [`MAX_FRAME`], a
//! frame that does not decode, or bytes left over after a message end the
//! connection with [`ManagerError::Protocol`]; nothing is allocated from a
//! length before it is checked.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::ManagerError;

/// The largest frame either side sends or accepts (256 MiB): a bigger value
/// is refused with [`ManagerError::TooLarge`] before it is sent.
pub(crate) const MAX_FRAME: usize = 256 << 20;

/// What a shared object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Dict,
    List,
    Value,
}

/// A request from a proxy. Object ids are the server's.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// A new object, or the named one (created if absent): `types` is the
    /// fingerprint of the proxy's types, `init` a value's first value.
    Create {
        kind: Kind,
        name: Option<&'a str>,
        types: u64,
        #[serde(borrow, with = "serde_bytes")]
        init: Option<&'a [u8]>,
    },
    /// The number of entries (any kind; 1 for a value).
    Len {
        obj: u64,
    },
    /// Removes every entry of a dict or a list.
    Clear {
        obj: u64,
    },
    /// A snapshot: a dict's keys and values interleaved, a list's items, a
    /// value's bytes.
    Snapshot {
        obj: u64,
    },
    Get {
        obj: u64,
        #[serde(borrow, with = "serde_bytes")]
        key: &'a [u8],
    },
    Insert {
        obj: u64,
        #[serde(borrow, with = "serde_bytes")]
        key: &'a [u8],
        #[serde(borrow, with = "serde_bytes")]
        value: &'a [u8],
    },
    Remove {
        obj: u64,
        #[serde(borrow, with = "serde_bytes")]
        key: &'a [u8],
    },
    Contains {
        obj: u64,
        #[serde(borrow, with = "serde_bytes")]
        key: &'a [u8],
    },
    /// Runs registered task `task` on a dict entry (`fn(Option<V>, A) ->
    /// Option<V>`), a list item or a value (`fn(T, A) -> T`) under the
    /// object's lock; `index` is a list's index (unused otherwise).
    Update {
        obj: u64,
        #[serde(borrow, with = "serde_bytes")]
        key: &'a [u8],
        index: u64,
        task: &'a str,
        types: u64,
        #[serde(borrow, with = "serde_bytes")]
        args: &'a [u8],
    },
    Push {
        obj: u64,
        #[serde(borrow, with = "serde_bytes")]
        value: &'a [u8],
    },
    Pop {
        obj: u64,
    },
    GetAt {
        obj: u64,
        index: u64,
    },
    SetAt {
        obj: u64,
        index: u64,
        #[serde(borrow, with = "serde_bytes")]
        value: &'a [u8],
    },
    InsertAt {
        obj: u64,
        index: u64,
        #[serde(borrow, with = "serde_bytes")]
        value: &'a [u8],
    },
    RemoveAt {
        obj: u64,
        index: u64,
    },
    /// Replaces a value's bytes.
    Set {
        obj: u64,
        #[serde(borrow, with = "serde_bytes")]
        value: &'a [u8],
    },
    /// Ends the server once it has answered.
    Shutdown,
}

impl Request<'_> {
    /// The request's name, for messages (never its bytes).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Request::Create { .. } => "create",
            Request::Len { .. } => "len",
            Request::Clear { .. } => "clear",
            Request::Snapshot { .. } => "snapshot",
            Request::Get { .. } => "get",
            Request::Insert { .. } => "insert",
            Request::Remove { .. } => "remove",
            Request::Contains { .. } => "contains",
            Request::Update { .. } => "update",
            Request::Push { .. } => "push",
            Request::Pop { .. } => "pop",
            Request::GetAt { .. } => "get at",
            Request::SetAt { .. } => "set at",
            Request::InsertAt { .. } => "insert at",
            Request::RemoveAt { .. } => "remove at",
            Request::Set { .. } => "set",
            Request::Shutdown => "shutdown",
        }
    }

    /// The object a request is about (0 for none).
    pub(crate) fn obj(&self) -> u64 {
        match *self {
            Request::Create { .. } | Request::Shutdown => 0,
            Request::Len { obj }
            | Request::Clear { obj }
            | Request::Snapshot { obj }
            | Request::Get { obj, .. }
            | Request::Insert { obj, .. }
            | Request::Remove { obj, .. }
            | Request::Contains { obj, .. }
            | Request::Update { obj, .. }
            | Request::Push { obj, .. }
            | Request::Pop { obj }
            | Request::GetAt { obj, .. }
            | Request::SetAt { obj, .. }
            | Request::InsertAt { obj, .. }
            | Request::RemoveAt { obj, .. }
            | Request::Set { obj, .. } => obj,
        }
    }
}

/// Why the server refused a request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Refusal {
    NoSuchObject(u64),
    WrongType(String),
    IndexOutOfRange { index: u64, len: u64 },
    UnknownTask(String),
    TaskTypes(String),
    TaskFailed(String),
    Protocol(String),
}

/// The server's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Done,
    Created(u64),
    Len(u64),
    Bool(bool),
    Bytes(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    Many(Vec<serde_bytes::ByteBuf>),
    Refused(Refusal),
}

impl Response {
    /// The answer's name, for messages (never its bytes).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Response::Done => "done",
            Response::Created(_) => "created",
            Response::Len(_) => "len",
            Response::Bool(_) => "bool",
            Response::Bytes(_) => "bytes",
            Response::Many(_) => "many",
            Response::Refused(_) => "refused",
        }
    }
}

/// Appends `msg` as a frame to `buf` (cleared first).
pub(crate) fn frame<T: Serialize>(buf: &mut Vec<u8>, msg: &T) -> Result<(), ManagerError> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    let mut out = std::mem::take(buf);
    out = postcard::to_extend(msg, out).map_err(|e| ManagerError::Codec(e.to_string()))?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        *buf = out;
        return Err(ManagerError::TooLarge(len));
    }
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    *buf = out;
    Ok(())
}

/// Decodes a whole frame body as `T`; bytes left over are a protocol error.
pub(crate) fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ManagerError> {
    let (msg, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|e| ManagerError::Protocol(format!("a frame that does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(ManagerError::Protocol(format!(
            "{} bytes left over after a message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Writes a whole frame (made by [`frame`]). The stream's write timeout
/// (if any) is the slice after which `patience` is asked again.
pub(crate) fn send(
    stream: &mut impl Write,
    mut buf: &[u8],
    patience: &impl Patience,
) -> Result<(), ManagerError> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(ManagerError::ServerGone),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                patience.still_waiting()?
            }
            Err(e) => return Err(gone(e)),
        }
    }
    Ok(())
}

/// A buffer that held one very large message is given back rather than
/// kept for the connection's life.
pub(crate) fn trim(buf: &mut Vec<u8>) {
    if buf.capacity() > SHRINK_ABOVE {
        *buf = Vec::new();
    }
}

/// Buffers larger than this are freed after use.
const SHRINK_ABOVE: usize = 1 << 20;

/// What a read that waits in slices checks between slices.
pub(crate) trait Patience {
    /// `Err` to give up: the peer is known dead, or the deadline passed.
    fn still_waiting(&self) -> Result<(), ManagerError>;
}

/// The server side waits for a client without a bound.
pub(crate) struct Forever;

impl Patience for Forever {
    fn still_waiting(&self) -> Result<(), ManagerError> {
        Ok(())
    }
}

/// The receiving side of a connection: frames are read in as large pieces
/// as the socket has (one read usually holds a whole frame), and handed out
/// one by one.
#[derive(Default)]
pub(crate) struct Reader {
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Reader {
    /// The next frame's body. The stream's read timeout (if any) is the
    /// slice after which `patience` is asked again; a partial frame is kept
    /// across slices.
    pub(crate) fn next<S: Read>(
        &mut self,
        stream: &mut S,
        patience: &impl Patience,
    ) -> Result<&[u8], ManagerError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            trim(&mut self.buf);
        }
        loop {
            let have = self.end - self.start;
            let mut need = 4;
            if have >= 4 {
                let head: [u8; 4] = self.buf[self.start..self.start + 4]
                    .try_into()
                    .expect("four bytes");
                let len = u32::from_le_bytes(head) as usize;
                if len > MAX_FRAME {
                    return Err(ManagerError::Protocol(format!(
                        "a frame of {len} bytes (the limit is {MAX_FRAME})"
                    )));
                }
                need = 4 + len;
                if have >= need {
                    let body = self.start + 4..self.start + need;
                    self.start += need;
                    return Ok(&self.buf[body]);
                }
            }
            // Room for more of this frame: grown as its bytes arrive (at
            // most 1 MiB ahead of them), never from the length alone,
            // which the peer wrote.
            let want = need.min(have + (1 << 20)).max(READ);
            if self.buf.len() - self.start < want {
                self.buf.copy_within(self.start..self.end, 0);
                self.end = have;
                self.start = 0;
                if self.buf.len() < want {
                    self.buf.resize(want, 0);
                }
            }
            self.end += read_some(stream, &mut self.buf[self.end..], patience)?;
        }
    }
}

/// The smallest read a [`Reader`] makes room for.
const READ: usize = 16 << 10;

/// One read of at least a byte, waiting in slices.
fn read_some(
    stream: &mut impl Read,
    out: &mut [u8],
    patience: &impl Patience,
) -> Result<usize, ManagerError> {
    loop {
        match stream.read(out) {
            Ok(0) => return Err(ManagerError::ServerGone),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                patience.still_waiting()?
            }
            Err(e) => return Err(gone(e)),
        }
    }
}

/// An error of a connected socket: the other end is gone (reset, broken
/// pipe) or the socket failed.
pub(crate) fn gone(e: io::Error) -> ManagerError {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::UnexpectedEof => ManagerError::ServerGone,
        _ => ManagerError::Io(e),
    }
}

/// A deadline for a call, checked between read slices; with the server's
/// identity when it runs on this machine.
pub(crate) struct CallPatience {
    pub(crate) deadline: Option<(Instant, Duration)>,
    pub(crate) server: Option<mproc_shm::ProcessIdent>,
}

impl Patience for CallPatience {
    fn still_waiting(&self) -> Result<(), ManagerError> {
        if let Some(server) = self.server {
            if server.has_ended() {
                return Err(ManagerError::ServerGone);
            }
        }
        match self.deadline {
            Some((at, after)) if Instant::now() >= at => Err(ManagerError::Timeout(after)),
            _ => Ok(()),
        }
    }
}
