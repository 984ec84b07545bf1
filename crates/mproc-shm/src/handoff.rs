//! Handing descriptors to a process that is not known yet: what lets a
//! value holding mproc handles (a [`Buf`](crate::Buf), a segment, a lock…)
//! travel through a queue or a pipe, whose reader is only known when it
//! takes the item.
//!
//! A queue's bytes live in shared memory, which cannot hold a descriptor.
//! So the sender keeps the item's descriptors in this process's *handoff
//! table* under a fresh [`Ticket`] and puts the ticket in the item's bytes;
//! whoever takes the item presents the ticket to the sender's handoff
//! server — a unix socket of the sender (abstract on Linux, a file in a
//! 0700 directory on macOS) served by a thread — and receives the
//! descriptors over `SCM_RIGHTS`. The server hands each ticket's
//! descriptors out once, then closes its copies (CPython's
//! `multiprocessing.resource_sharer` works the same way for sockets and
//! connections put in a queue).
//!
//! What this means for a user:
//!
//! - The sender must still be running when the item is taken: if it has
//!   ended, the taker gets a clear error ([`import`] fails with
//!   `NotConnected`), never a hang, never a wrong descriptor.
//! - An item that is never taken keeps its descriptors (and a `Buf`'s
//!   memory) open in the sender until the sender ends.
//! - Only processes of the same user are served (`SO_PEERCRED` /
//!   `getpeereid`), a taker talks only to a server of its own user, and a
//!   ticket's 64 random bits must be presented. The server's name carries
//!   32 random bits of its own, so it cannot be taken over in advance.
//! - At most [`MAX_PENDING_FDS`] descriptors wait at once: a put past that
//!   fails with a clear error instead of running the process out of
//!   descriptors.
//! - A child started by mproc that ends with items still waiting stays up
//!   to [`EXIT_GRACE`] for them to be taken.
//!
//! A ticket names the sender by pid *and* start time, so a reused pid is
//! never asked.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ident::ProcessIdent;
use crate::sys;
use crate::transfer::{self, FdTable, Message};

/// How long one read waits before the taker looks whether the sender is
/// still alive.
const SLICE: Duration = Duration::from_millis(100);
/// How long the server waits for a taker to present its ticket.
const TICKET_WAIT: Duration = Duration::from_secs(1);

/// The most descriptors this process holds for takers at once.
pub const MAX_PENDING_FDS: usize = 512;
/// How long a child started by mproc that ends with items waiting stays
/// up for them to be taken (see `mproc_process::exit`).
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What a taker presents to get an item's descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The sender's packed [`ProcessIdent`].
    sender: u64,
    /// The random part of the sender's server name.
    salt: u32,
    /// Which item (random, so that it cannot be guessed).
    token: u64,
}

/// This process's handoff table and server.
struct Table {
    /// The process that made them: a forked child starts its own.
    owner: ProcessIdent,
    items: HashMap<u64, FdTable>,
    /// Descriptors held in `items`.
    fds: usize,
    /// The server's thread and the random part of its name.
    server: Option<(std::thread::JoinHandle<()>, u32)>,
}

/// Tells the server thread to end at its next wake-up ([`stop_server`]).
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

static TABLE: Mutex<Option<Table>> = Mutex::new(None);
/// Signalled whenever an item leaves the table.
static TAKEN: Condvar = Condvar::new();

fn lock() -> std::sync::MutexGuard<'static, Option<Table>> {
    TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The socket name of a handoff server.
fn name(sender: ProcessIdent, salt: u32) -> String {
    format!(
        "mproc-handoff-{}-{}-{salt:08x}",
        sender.pid(),
        sender.start()
    )
}

/// Where the handoff server of `sender` listens.
fn private_address(sender: ProcessIdent, salt: u32) -> String {
    if cfg!(target_os = "linux") {
        format!("@{}", name(sender, salt))
    } else {
        std::env::temp_dir()
            .join(name(sender, salt))
            .join("s")
            .to_string_lossy()
            .into_owned()
    }
}

/// Keeps `fds` for whoever presents the returned ticket (once), starting
/// this process's handoff server if it has none.
///
/// # Errors
///
/// `OutOfMemory`-like `Other` when [`MAX_PENDING_FDS`] would be passed;
/// when the server's socket or thread cannot be made.
pub fn export(fds: FdTable) -> io::Result<Ticket> {
    let me = ProcessIdent::current();
    let mut table = lock();
    if table.as_ref().is_none_or(|t| t.owner != me) {
        // A forked child has its parent's table but not its server: the
        // parent's items are the parent's to hand out.
        *table = Some(Table {
            owner: me,
            items: HashMap::new(),
            fds: 0,
            server: None,
        });
    }
    let t = table.as_mut().expect("just made");
    if t.fds + fds.len() > MAX_PENDING_FDS {
        return Err(io::Error::other(format!(
            "{} descriptors already wait in this process for items not yet taken \
             (the limit is {MAX_PENDING_FDS}): take some first",
            t.fds
        )));
    }
    if t.server.is_none() {
        // A fresh random name each time (another user cannot take it in
        // advance); on macOS its directory goes when the server stops.
        let (listener, salt, dir) = loop {
            let salt = u32::from_le_bytes(sys::random_bytes::<4>()?);
            match sys::listen_private(&name(me, salt)) {
                Ok((listener, _, dir)) => break (listener, salt, dir),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        };
        STOPPING.store(false, std::sync::atomic::Ordering::SeqCst);
        let thread = std::thread::Builder::new()
            .name("mproc-handoff".into())
            .spawn(move || {
                serve(&listener);
                drop(listener);
                if let Some(dir) = dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            })?;
        t.server = Some((thread, salt));
    }
    let salt = t.server.as_ref().map_or(0, |s| s.1);
    let token = loop {
        let token = u64::from_le_bytes(sys::random_bytes::<8>()?);
        if !t.items.contains_key(&token) {
            break token;
        }
    };
    t.fds += fds.len();
    t.items.insert(token, fds);
    Ok(Ticket {
        sender: me.to_bits(),
        salt,
        token,
    })
}

/// Takes item `token` out of the table.
fn take(token: u64) -> Option<FdTable> {
    let mut table = lock();
    let t = table.as_mut()?;
    let fds = t.items.remove(&token)?;
    t.fds -= fds.len();
    TAKEN.notify_all();
    Some(fds)
}

fn serve(listener: &UnixListener) {
    for stream in listener.incoming() {
        if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => hand_out(stream),
            // Out of descriptors (or another passing failure): let the
            // process breathe instead of spinning on accept.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Serves one taker: its ticket, then the descriptors (or a refusal).
fn hand_out(mut stream: UnixStream) {
    if !matches!(sys::peer_is_us(&stream), Ok(true)) {
        return;
    }
    let _ = stream.set_read_timeout(Some(TICKET_WAIT));
    let mut token = [0u8; 8];
    if stream.read_exact(&mut token).is_err() {
        return;
    }
    let msg = match take(u64::from_le_bytes(token)) {
        Some(fds) => Message {
            bytes: vec![1],
            fds,
        },
        None => Message {
            bytes: vec![0],
            fds: FdTable::new(),
        },
    };
    // If the taker is gone, the descriptors close here: the item was
    // taken, by a process that then died. Ours are closed before the
    // connection, which the taker reads to its end: once it has the item,
    // we hold nothing of it.
    let _ = transfer::send(&stream, &msg);
    drop(msg);
}

/// Fetches the descriptors of `ticket` from its sender.
///
/// # Errors
///
/// `NotConnected` when the sender has ended (or never served), `NotFound`
/// when it no longer holds the ticket (taken already), `PermissionDenied`
/// when what listens there is another user's, and what the socket reports.
pub fn import(ticket: &Ticket) -> io::Result<FdTable> {
    let sender = ProcessIdent::from_bits(ticket.sender)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a ticket without a sender"))?;
    let gone = || {
        io::Error::new(
            io::ErrorKind::NotConnected,
            format!(
                "the process that sent this item (pid {}) has ended: its handles went with it",
                sender.pid()
            ),
        )
    };
    let mut stream = match sys::connect_private(&private_address(sender, ticket.salt)) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            return Err(gone())
        }
        Err(e) => return Err(e),
    };
    if !sys::peer_is_us(&stream)? {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "another user listens where this item's sender served its handles",
        ));
    }
    stream.write_all(&ticket.token.to_le_bytes())?;
    // Wait in slices, looking whether the sender still lives between them.
    while !sys::wait_readable(std::os::fd::AsFd::as_fd(&stream), SLICE)? {
        if sender.has_ended() {
            return Err(gone());
        }
    }
    match transfer::recv(&stream) {
        Ok(msg) if msg.bytes == [1] => {
            // The server closes its end once its copies are closed.
            let mut rest = [0u8; 1];
            let _ = stream.set_read_timeout(Some(SLICE * 10));
            let _ = stream.read(&mut rest);
            Ok(msg.fds)
        }
        Ok(msg) if msg.bytes == [0] => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the sender no longer holds this item's handles (taken already)",
        )),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the handoff server sent something else",
        )),
        // An end without an answer: the sender died as it was asked.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(gone()),
        Err(e) => Err(e),
    }
}

/// Gives up the descriptors of `ticket` (an item that was never sent:
/// the put failed), if this process still holds them.
pub fn cancel(ticket: &Ticket) {
    let me = ProcessIdent::current();
    if ticket.sender == me.to_bits() && lock().as_ref().is_some_and(|t| t.owner == me) {
        take(ticket.token);
    }
}

/// Waits until no item of this process waits for a taker, at most
/// `timeout`; whether none does.
pub fn wait_taken(timeout: Duration) -> bool {
    // Nothing handed out — the common case, and a fresh child's — needs no
    // identity: a child's first `ProcessIdent::current` reads `/proc`.
    if lock().as_ref().is_none_or(|t| t.items.is_empty()) {
        return true;
    }
    let me = ProcessIdent::current();
    let deadline = Instant::now() + timeout;
    let mut table = lock();
    loop {
        let waiting = table
            .as_ref()
            .filter(|t| t.owner == me)
            .is_some_and(|t| !t.items.is_empty());
        let left = deadline.saturating_duration_since(Instant::now());
        if !waiting {
            return true;
        }
        if left.is_zero() {
            return false;
        }
        table = TAKEN
            .wait_timeout(table, left.min(SLICE))
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

/// Ends this process's handoff server and gives up the items it holds
/// (their takers will be told the sender has ended): for the end of a
/// test, as `stop_forkserver` is. The next item with handles starts a new
/// server.
pub fn stop_server() {
    let me = ProcessIdent::current();
    let server = {
        let mut table = lock();
        match table.as_mut().filter(|t| t.owner == me) {
            Some(t) => {
                t.items.clear();
                t.fds = 0;
                t.server.take()
            }
            None => None,
        }
    };
    let Some((server, salt)) = server else { return };
    STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
    // Wake its accept with a connection of our own.
    let _ = sys::connect_private(&private_address(me, salt));
    let _ = server.join();
}

/// How many items this process holds for takers.
pub fn pending() -> usize {
    let me = ProcessIdent::current();
    lock()
        .as_ref()
        .filter(|t| t.owner == me)
        .map_or(0, |t| t.items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nulls(n: usize) -> FdTable {
        let mut t = FdTable::new();
        for _ in 0..n {
            t.push(std::fs::File::open("/dev/null").unwrap().into());
        }
        t
    }

    #[test]
    fn items_are_handed_out_once_and_the_table_is_bounded() {
        let a = export(nulls(3)).unwrap();
        assert_eq!(pending(), 1);
        // Past the bound: a clear error, nothing kept.
        let e = export(nulls(MAX_PENDING_FDS)).unwrap_err();
        assert!(e.to_string().contains("already wait"), "{e}");
        assert_eq!(pending(), 1);
        assert_eq!(import(&a).unwrap().len(), 3);
        assert_eq!(pending(), 0);
        assert!(wait_taken(Duration::ZERO));
        // Taken already: said so, not mistaken for a dead sender.
        assert_eq!(import(&a).unwrap_err().kind(), io::ErrorKind::NotFound);
        let b = export(nulls(1)).unwrap();
        cancel(&b);
        assert_eq!(pending(), 0);
        assert_eq!(import(&b).unwrap_err().kind(), io::ErrorKind::NotFound);
        stop_server();
    }
}
