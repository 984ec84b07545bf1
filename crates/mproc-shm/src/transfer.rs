//! Handing mproc handles to other processes: the fd table and its carriers.
//!
//! A handle such as [`Segment`](crate::Segment) is a file descriptor plus a
//! little metadata. Serializing it through [`encode`] records a duplicate of
//! its descriptor in a per-transfer [`FdTable`] and writes the descriptor's
//! *index in that table* into the bytes; [`decode`] on the other side looks
//! the index up in the table it was given. Bytes and table travel together as
//! a [`Message`], by one of two carriers:
//!
//! - **inheritance**, for a child that is about to be started:
//!   [`spawn_inheriting`] clears `FD_CLOEXEC` on exactly the table's
//!   descriptors in the child (between `fork` and `exec`) and names them in the
//!   [`INHERIT_ENV`] variable; the child rebuilds the table with
//!   [`FdTable::from_inherit_spec`]. Every other descriptor of the parent stays
//!   close-on-exec. A `fork` without `exec` inherits the table as it is.
//! - **`SCM_RIGHTS`**, for a process that is already running: [`send`] and
//!   [`recv`] move a whole message over a connected `UnixStream`.
//!
//! Serializing a handle outside [`encode`] (say, to JSON) is an error, not a
//! silent copy of a descriptor number that means nothing elsewhere.
//!
//! # Examples
//!
//! ```
//! use mproc_shm::{transfer, Segment};
//! use std::os::unix::net::UnixStream;
//!
//! let seg = Segment::anonymous(4096)?;
//! seg.write(0, b"over the wire")?;
//!
//! let (a, b) = UnixStream::pair()?;
//! transfer::send(&a, &transfer::encode(&(7u32, seg))?)?;
//! let (n, seg2): (u32, Segment) = transfer::decode(transfer::recv(&b)?)?;
//!
//! let mut buf = [0u8; 13];
//! seg2.read(0, &mut buf)?;
//! assert_eq!((n, &buf), (7, b"over the wire"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sys;

/// The environment variable that names inherited descriptors in a child
/// started by [`spawn_inheriting`] (a comma-separated list of numbers).
pub const INHERIT_ENV: &str = "MPROC_INHERITED_FDS";

/// The largest message [`recv`] accepts, in bytes (1 GiB).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// The largest number of descriptors one [`send`] can carry.
pub const MAX_FDS: usize = sys::MAX_FDS_PER_MESSAGE;

const MAGIC: u32 = u32::from_le_bytes(*b"MPfd");
const HEADER_LEN: usize = 12;

/// The descriptors that travel with one message, in index order.
#[derive(Debug, Default)]
pub struct FdTable {
    fds: Vec<OwnedFd>,
}

impl FdTable {
    /// An empty table.
    pub fn new() -> FdTable {
        FdTable::default()
    }

    /// How many descriptors the table holds.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether the table holds no descriptor.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Adds a descriptor and returns its index.
    pub fn push(&mut self, fd: OwnedFd) -> u32 {
        self.fds.push(fd);
        (self.fds.len() - 1) as u32
    }

    /// The descriptor at `index`, if any.
    pub fn get(&self, index: u32) -> Option<BorrowedFd<'_>> {
        self.fds.get(index as usize).map(|f| f.as_fd())
    }

    /// The descriptors, in index order.
    pub fn iter(&self) -> impl Iterator<Item = BorrowedFd<'_>> + '_ {
        self.fds.iter().map(|f| f.as_fd())
    }

    /// Gives the descriptors up, in index order.
    pub fn into_vec(self) -> Vec<OwnedFd> {
        self.fds
    }

    /// The table as a value for [`INHERIT_ENV`]: its descriptor numbers, in
    /// index order, separated by commas.
    pub fn inherit_spec(&self) -> String {
        let nums: Vec<String> = self.fds.iter().map(|f| f.as_raw_fd().to_string()).collect();
        nums.join(",")
    }

    /// The table a parent handed over with [`spawn_inheriting`]: the
    /// descriptors named in [`INHERIT_ENV`] (an empty table when the variable
    /// is not set). See [`from_inherit_spec`](FdTable::from_inherit_spec).
    ///
    /// # Errors
    ///
    /// As [`from_inherit_spec`](FdTable::from_inherit_spec).
    ///
    /// # Safety
    ///
    /// As [`from_inherit_spec`](FdTable::from_inherit_spec): call it once, at
    /// start-up, in the child that inherited the descriptors.
    pub unsafe fn from_env() -> io::Result<FdTable> {
        let spec = std::env::var(INHERIT_ENV).unwrap_or_default();
        // SAFETY: the caller's promise, passed on.
        unsafe { FdTable::from_inherit_spec(&spec) }
    }

    /// Rebuilds a table from an [`inherit_spec`](FdTable::inherit_spec) in the
    /// child that inherited the descriptors.
    ///
    /// Each descriptor gets `FD_CLOEXEC` again, so the child's own children do
    /// not inherit it by accident.
    ///
    /// # Errors
    ///
    /// `InvalidData` for a malformed spec; `EBADF` for a number that is not open.
    ///
    /// # Safety
    ///
    /// Every number in `spec` must be an open descriptor that nothing else in
    /// this process owns or will close — as is the case for the descriptors a
    /// parent handed over with [`spawn_inheriting`], read once at start-up.
    pub unsafe fn from_inherit_spec(spec: &str) -> io::Result<FdTable> {
        let mut nums = Vec::new();
        for part in spec.split(',').filter(|s| !s.is_empty()) {
            let n: RawFd = part.trim().parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "malformed inherited fd list")
            })?;
            if n < 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "negative inherited fd",
                ));
            }
            nums.push(n);
        }
        let mut table = FdTable::new();
        for n in nums {
            // SAFETY: the caller promises that each listed number is open and
            // owned by nothing else.
            let fd = unsafe { sys::own_fd(n)? };
            sys::set_cloexec(fd.as_raw_fd(), true)?;
            table.push(fd);
        }
        Ok(table)
    }
}

/// Serialized bytes and the descriptors they refer to.
#[derive(Debug, Default)]
pub struct Message {
    /// The postcard encoding of the value.
    pub bytes: Vec<u8>,
    /// The descriptors that the bytes refer to by index.
    pub fds: FdTable,
}

/// Why a value could not be encoded, decoded or carried.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransferError {
    /// The value could not be serialized.
    Encode(String),
    /// The bytes did not decode to the expected type.
    Decode(String),
    /// The bytes decoded but `n` bytes were left over.
    TrailingBytes(usize),
    /// A descriptor could not be duplicated or mapped.
    Io(io::Error),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::Encode(m) => write!(f, "cannot encode value for transfer: {m}"),
            TransferError::Decode(m) => write!(f, "cannot decode transferred value: {m}"),
            TransferError::TrailingBytes(n) => {
                write!(f, "transferred value has {n} trailing bytes")
            }
            TransferError::Io(e) => write!(f, "descriptor transfer failed: {e}"),
        }
    }
}

impl std::error::Error for TransferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransferError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for TransferError {
    fn from(e: io::Error) -> TransferError {
        TransferError::Io(e)
    }
}

impl From<TransferError> for io::Error {
    fn from(e: TransferError) -> io::Error {
        match e {
            TransferError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// What an `encode` or `decode` in progress on this thread has gathered.
struct Context {
    fds: Vec<OwnedFd>,
    /// The index of the first descriptor gathered here (see
    /// [`encode_from`]).
    base: u32,
    /// The first error a handle reported: serde formats such as postcard keep
    /// only the kind of a custom error, so we keep its words here.
    error: Option<String>,
}

thread_local! {
    static ENCODING: RefCell<Option<Context>> = const { RefCell::new(None) };
    static DECODING: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Installs a context for the duration of a call and restores the previous
/// one afterwards, even on panic, so that nested transfers work.
struct Scope {
    key: &'static std::thread::LocalKey<RefCell<Option<Context>>>,
    prev: Option<Option<Context>>,
}

impl Scope {
    fn enter(
        key: &'static std::thread::LocalKey<RefCell<Option<Context>>>,
        fds: Vec<OwnedFd>,
    ) -> Scope {
        Scope::enter_at(key, fds, 0)
    }

    fn enter_at(
        key: &'static std::thread::LocalKey<RefCell<Option<Context>>>,
        fds: Vec<OwnedFd>,
        base: u32,
    ) -> Scope {
        let prev = key.with(|c| {
            c.replace(Some(Context {
                fds,
                base,
                error: None,
            }))
        });
        Scope {
            key,
            prev: Some(prev),
        }
    }

    fn take(&mut self) -> Context {
        let prev = self.prev.take().unwrap_or(None);
        self.key.with(|c| c.replace(prev)).unwrap_or(Context {
            fds: Vec::new(),
            base: 0,
            error: None,
        })
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            self.key.with(|c| *c.borrow_mut() = prev);
        }
    }
}

/// Serializes `value` with postcard, gathering the descriptors of any handles
/// inside it.
///
/// # Errors
///
/// [`TransferError::Encode`] when serialization fails, with the handle's own
/// words when a handle refused; [`TransferError::Io`] when a descriptor could
/// not be duplicated.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Message, TransferError> {
    encode_from(value, 0)
}

/// [`encode`], numbering the descriptors from `first` instead of 0: the
/// message is the continuation of others whose tables hold `first`
/// descriptors in all. Their bytes put one after the other, and their
/// tables likewise, decode as one message (a pool's results sent item by
/// item and put back together as one chunk). The returned table holds only
/// this message's own descriptors.
///
/// # Errors
///
/// As [`encode`].
///
/// # Examples
///
/// ```
/// use mproc_shm::transfer::{self, FdTable, Message};
/// use mproc_shm::Segment;
///
/// let a = Segment::anonymous(4096)?;
/// let b = Segment::anonymous(8192)?;
/// let first = transfer::encode(&a)?;
/// let second = transfer::encode_from(&b, first.fds.len() as u32)?;
/// let mut bytes = first.bytes;
/// bytes.extend_from_slice(&second.bytes);
/// let mut fds = FdTable::new();
/// for fd in first.fds.into_vec().into_iter().chain(second.fds.into_vec()) {
///     fds.push(fd);
/// }
/// let (a2, b2): (Segment, Segment) = transfer::decode(Message { bytes, fds })?;
/// assert_eq!((a2.len(), b2.len()), (4096, 8192));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_from<T: Serialize + ?Sized>(value: &T, first: u32) -> Result<Message, TransferError> {
    let mut scope = Scope::enter_at(&ENCODING, Vec::new(), first);
    let result = postcard::to_stdvec(value);
    let ctx = scope.take();
    match result {
        Ok(bytes) => Ok(Message {
            bytes,
            fds: FdTable { fds: ctx.fds },
        }),
        Err(e) => Err(TransferError::Encode(
            ctx.error.unwrap_or_else(|| e.to_string()),
        )),
    }
}

/// Deserializes a value from a [`Message`], resolving handle descriptors from
/// its table. Descriptors left unused are closed.
///
/// # Errors
///
/// [`TransferError::Decode`] when the bytes are not a `T` (or a descriptor
/// index is missing from the table); [`TransferError::TrailingBytes`] when
/// bytes are left over.
pub fn decode<T: DeserializeOwned>(msg: Message) -> Result<T, TransferError> {
    let mut scope = Scope::enter(&DECODING, msg.fds.fds);
    let result = postcard::take_from_bytes::<T>(&msg.bytes);
    let ctx = scope.take();
    match result {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(TransferError::TrailingBytes(rest.len())),
        Err(e) => Err(TransferError::Decode(
            ctx.error.unwrap_or_else(|| e.to_string()),
        )),
    }
}

fn remember(key: &'static std::thread::LocalKey<RefCell<Option<Context>>>, msg: &str) {
    key.with(|c| {
        if let Some(ctx) = c.borrow_mut().as_mut() {
            ctx.error.get_or_insert_with(|| msg.to_owned());
        }
    });
}

/// A deserialization error for a handle that cannot be rebuilt, whose words
/// reach [`TransferError::Decode`] (serde formats such as postcard keep only
/// the kind of a custom error).
pub fn de_error<E: serde::de::Error>(msg: impl fmt::Display) -> E {
    let msg = msg.to_string();
    remember(&DECODING, &msg);
    E::custom(msg)
}

/// A serialization error for a handle that cannot be sent, whose words reach
/// [`TransferError::Encode`].
pub fn ser_error<E: serde::ser::Error>(msg: impl fmt::Display) -> E {
    let msg = msg.to_string();
    remember(&ENCODING, &msg);
    E::custom(msg)
}

/// Decodes a `T` from the front of `bytes`, resolving descriptors from
/// `fds`, and hands back how many bytes it used and the table, so that a
/// second value can be decoded from the rest (a header, then a body whose
/// type the header names).
///
/// # Errors
///
/// [`TransferError::Decode`] when the front of `bytes` is not a `T`.
pub fn decode_prefix<T: DeserializeOwned>(
    bytes: &[u8],
    fds: FdTable,
) -> Result<(T, usize, FdTable), TransferError> {
    let mut scope = Scope::enter(&DECODING, fds.fds);
    let result = postcard::take_from_bytes::<T>(bytes);
    let ctx = scope.take();
    let table = FdTable { fds: ctx.fds };
    match result {
        Ok((value, rest)) => Ok((value, bytes.len() - rest.len(), table)),
        Err(e) => Err(TransferError::Decode(
            ctx.error.unwrap_or_else(|| e.to_string()),
        )),
    }
}

/// A descriptor inside a serialized handle: its index in the transfer's table.
///
/// Handle types of other mproc crates serialize their descriptors through
/// this type, so that any handle works with every carrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdRef(u32);

impl FdRef {
    /// Records a duplicate of `fd` in the current [`encode`] and returns its
    /// reference.
    ///
    /// # Errors
    ///
    /// An error (meant for `serde::ser::Error::custom`) outside [`encode`], or
    /// when the descriptor cannot be duplicated.
    pub fn export(fd: BorrowedFd<'_>) -> Result<FdRef, String> {
        ENCODING.with(|c| {
            let mut c = c.borrow_mut();
            let Some(ctx) = c.as_mut() else {
                return Err(
                    "mproc handles can only be serialized by mproc_shm::transfer::encode"
                        .to_owned(),
                );
            };
            match sys::dup_cloexec(fd) {
                Ok(dup) => {
                    ctx.fds.push(dup);
                    Ok(FdRef(ctx.base + (ctx.fds.len() - 1) as u32))
                }
                Err(e) => {
                    let msg = format!("cannot duplicate descriptor: {e}");
                    ctx.error.get_or_insert(msg.clone());
                    Err(msg)
                }
            }
        })
    }

    /// Resolves the reference in the current [`decode`] to a descriptor this
    /// process owns (a duplicate: one entry may back several handles).
    ///
    /// # Errors
    ///
    /// An error (meant for `serde::de::Error::custom`) outside [`decode`], or
    /// when the index is not in the table.
    pub fn import(self) -> Result<OwnedFd, String> {
        DECODING.with(|c| {
            let mut c = c.borrow_mut();
            let Some(ctx) = c.as_mut() else {
                return Err(
                    "mproc handles can only be deserialized by mproc_shm::transfer::decode"
                        .to_owned(),
                );
            };
            let result = match ctx.fds.get(self.0 as usize) {
                Some(fd) => sys::dup_cloexec(fd.as_fd())
                    .map_err(|e| format!("cannot duplicate descriptor: {e}")),
                None => Err(format!(
                    "descriptor index {} is not in the transfer's table of {}",
                    self.0,
                    ctx.fds.len()
                )),
            };
            if let Err(msg) = &result {
                ctx.error.get_or_insert(msg.clone());
            }
            result
        })
    }
}

/// Any open descriptor — a socket, a pipe end, a file — as a handle: put it
/// in a child's arguments and it arrives open in the child, whatever the
/// carrier (Python's `multiprocessing.reduction` does this for sockets).
///
/// Each process holds its own duplicate; closing one closes only that one.
///
/// # Examples
///
/// ```
/// use mproc_shm::transfer::{self, SharedFd};
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
///
/// let (mut ours, theirs) = UnixStream::pair()?;
/// let msg = transfer::encode(&SharedFd::new(theirs))?;
/// // ... in another process:
/// let fd: SharedFd = transfer::decode(msg)?;
/// let mut theirs = UnixStream::from(fd.into_owned());
/// theirs.write_all(b"hi")?;
/// let mut buf = [0u8; 2];
/// ours.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"hi");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SharedFd(OwnedFd);

impl SharedFd {
    /// Wraps a descriptor (a `TcpStream`, `File`, `UnixStream`, …).
    pub fn new(fd: impl Into<OwnedFd>) -> SharedFd {
        SharedFd(fd.into())
    }

    /// The descriptor, to turn back into its type with `From<OwnedFd>`.
    pub fn into_owned(self) -> OwnedFd {
        self.0
    }
}

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Serialize for SharedFd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        FdRef::export(self.0.as_fd())
            .map_err(ser_error::<S::Error>)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedFd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SharedFd, D::Error> {
        let fd = FdRef::deserialize(d)?;
        fd.import().map(SharedFd).map_err(de_error::<D::Error>)
    }
}

/// Starts `cmd` so that the child inherits exactly the descriptors of
/// `table` (plus stdio and whatever `cmd` itself sets up), named in
/// [`INHERIT_ENV`].
///
/// The descriptors stay close-on-exec in the parent, so a child started at the
/// same moment by another thread inherits none of them.
///
/// # Errors
///
/// Whatever [`Command::spawn`] reports.
pub fn spawn_inheriting(cmd: &mut Command, table: &FdTable) -> io::Result<Child> {
    let raw: Vec<RawFd> = table.fds.iter().map(|f| f.as_raw_fd()).collect();
    cmd.env(INHERIT_ENV, table.inherit_spec());
    // SAFETY: the hook runs in the child between fork and exec; it only calls
    // fcntl (async-signal-safe) on numbers from `raw`, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &raw {
                sys::set_cloexec(fd, false)?;
            }
            Ok(())
        });
    }
    // `table` is borrowed for the whole call, so its descriptors are open
    // while the child forks.
    cmd.spawn()
}

/// Sends a message over a connected unix stream, its descriptors attached
/// with `SCM_RIGHTS`.
///
/// # Errors
///
/// `InvalidInput` when the message is larger than [`MAX_MESSAGE_LEN`] or
/// carries more than [`MAX_FDS`] descriptors; otherwise the socket's error.
pub fn send(sock: &UnixStream, msg: &Message) -> io::Result<()> {
    if msg.bytes.len() > MAX_MESSAGE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message larger than MAX_MESSAGE_LEN",
        ));
    }
    if msg.fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message carries more than MAX_FDS descriptors",
        ));
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + msg.bytes.len());
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&(msg.bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(msg.fds.len() as u32).to_le_bytes());
    buf.extend_from_slice(&msg.bytes);
    let fds: Vec<BorrowedFd<'_>> = msg.fds.iter().collect();
    let sent = sys::send_with_fds(sock, &buf, &fds)?;
    (&*sock).write_all(&buf[sent..])
}

/// Receives one message sent by [`send`].
///
/// # Errors
///
/// `UnexpectedEof` when the peer closed the stream before a whole message;
/// `InvalidData` when the header is not ours, announces more than
/// [`MAX_MESSAGE_LEN`] bytes, or the descriptor count does not match.
pub fn recv(sock: &UnixStream) -> io::Result<Message> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < HEADER_LEN {
        let (n, more) = sys::recv_with_fds(sock, &mut header[got..])?;
        fds.extend(more);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the stream",
            ));
        }
        got += n;
    }
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if word(0) != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an mproc transfer message",
        ));
    }
    let len = word(4) as usize;
    let nfds = word(8) as usize;
    if len > MAX_MESSAGE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message length exceeds MAX_MESSAGE_LEN",
        ));
    }
    if nfds != fds.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "message announced {nfds} descriptors but {} arrived",
                fds.len()
            ),
        ));
    }
    let mut bytes = vec![0u8; len];
    (&*sock).read_exact(&mut bytes)?;
    Ok(Message {
        bytes,
        fds: FdTable { fds },
    })
}

/// A listening unix socket named `name` that only this user's processes
/// can reach, for servers of this machine (the Manager, the handoff of
/// [`crate::handoff`]): on Linux an abstract socket (nothing on disk, so a
/// killed server leaves nothing behind), elsewhere a socket file in a
/// fresh 0700 directory under the temporary directory. Returns the address
/// for [`connect_private`] and the directory to remove at the end, if any.
/// Accept only peers for which [`peer_is_us`] holds.
///
/// # Errors
///
/// When the name is taken or the socket cannot be made.
pub fn listen_private(
    name: &str,
) -> io::Result<(
    std::os::unix::net::UnixListener,
    String,
    Option<std::path::PathBuf>,
)> {
    sys::listen_private(name)
}

/// Connects to an address from [`listen_private`].
///
/// # Errors
///
/// `ConnectionRefused` or `NotFound` when nobody listens there (any more).
pub fn connect_private(addr: &str) -> io::Result<UnixStream> {
    sys::connect_private(addr)
}

/// Whether the peer of `stream` runs as this process's effective user
/// (`SO_PEERCRED` on Linux, `getpeereid` on macOS).
///
/// # Errors
///
/// When the kernel cannot say.
pub fn peer_is_us(stream: &UnixStream) -> io::Result<bool> {
    sys::peer_is_us(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Segment;

    #[test]
    fn handles_refuse_other_serializers() {
        let seg = Segment::anonymous(64).unwrap();
        let err = serde_json::to_string(&seg).unwrap_err();
        assert!(
            err.to_string().contains("mproc_shm::transfer::encode"),
            "{err}"
        );
    }

    #[test]
    fn round_trip_in_process_maps_the_same_memory() {
        let seg = Segment::anonymous(4096).unwrap();
        let msg = encode(&vec![seg.clone(), seg.clone()]).unwrap();
        assert_eq!(msg.fds.len(), 2);
        let back: Vec<Segment> = decode(msg).unwrap();
        back[1].write(8, b"xy").unwrap();
        let mut buf = [0u8; 2];
        seg.read(8, &mut buf).unwrap();
        assert_eq!(&buf, b"xy");
    }

    #[test]
    fn missing_descriptor_is_a_clear_error() {
        let seg = Segment::anonymous(64).unwrap();
        let mut msg = encode(&seg).unwrap();
        msg.fds = FdTable::new();
        let err = decode::<Segment>(msg).unwrap_err();
        assert!(
            err.to_string().contains("not in the transfer's table"),
            "{err}"
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut msg = encode(&5u32).unwrap();
        msg.bytes.push(0);
        assert!(matches!(
            decode::<u32>(msg),
            Err(TransferError::TrailingBytes(1))
        ));
    }

    #[test]
    fn bad_header_is_rejected_not_allocated() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut evil = MAGIC.to_le_bytes().to_vec();
        evil.extend_from_slice(&u32::MAX.to_le_bytes());
        evil.extend_from_slice(&0u32.to_le_bytes());
        (&a).write_all(&evil).unwrap();
        let err = recv(&b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(a);
        assert_eq!(recv(&b).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
