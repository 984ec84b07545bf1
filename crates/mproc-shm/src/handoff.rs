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
//!   `getpeereid`), and a ticket's 64 random bits must be presented.
//!
//! A ticket names the sender by pid *and* start time, so a reused pid is
//! never asked.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ident::ProcessIdent;
use crate::sys;
use crate::transfer::{self, FdTable, Message};

/// How long one read waits before the taker looks whether the sender is
/// still alive.
const SLICE: Duration = Duration::from_millis(100);

/// What a taker presents to get an item's descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The sender's packed [`ProcessIdent`].
    sender: u64,
    /// Which item (random, so that it cannot be guessed).
    token: u64,
}

/// This process's handoff table and server.
struct Table {
    /// The process that made them: a forked child starts its own.
    owner: ProcessIdent,
    items: HashMap<u64, FdTable>,
    server: Option<std::thread::JoinHandle<()>>,
}

/// Tells the server thread to end at its next wake-up ([`stop_server`]).
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<Table>> {
    TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The socket name of the handoff server of `sender`.
fn address(sender: ProcessIdent) -> String {
    format!("mproc-handoff-{}-{}", sender.pid(), sender.start())
}

/// Keeps `fds` for whoever presents the returned ticket (once), starting
/// this process's handoff server if it has none.
///
/// # Errors
///
/// When the server's socket or thread cannot be made.
pub fn export(fds: FdTable) -> io::Result<Ticket> {
    let me = ProcessIdent::current();
    let mut table = lock();
    if table.as_ref().is_none_or(|t| t.owner != me) {
        // A forked child has its parent's table but not its server: the
        // parent's items are the parent's to hand out.
        *table = Some(Table {
            owner: me,
            items: HashMap::new(),
            server: None,
        });
    }
    let t = table.as_mut().expect("just made");
    if t.server.is_none() {
        // On macOS the socket's directory stays until the process ends;
        // Linux's abstract socket leaves nothing.
        let (listener, _, dir) = sys::listen_private(&address(me))?;
        STOPPING.store(false, std::sync::atomic::Ordering::SeqCst);
        t.server = Some(
            std::thread::Builder::new()
                .name("mproc-handoff".into())
                .spawn(move || {
                    serve(&listener);
                    drop(listener);
                    if let Some(dir) = dir {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                })?,
        );
    }
    let token = loop {
        let token = u64::from_le_bytes(sys::random_bytes::<8>()?);
        if !t.items.contains_key(&token) {
            break token;
        }
    };
    t.items.insert(token, fds);
    Ok(Ticket {
        sender: me.to_bits(),
        token,
    })
}

fn serve(listener: &UnixListener) {
    for stream in listener.incoming() {
        if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        if !matches!(sys::peer_is_us(&stream), Ok(true)) {
            continue;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut token = [0u8; 8];
        if stream.read_exact(&mut token).is_err() {
            continue;
        }
        let fds = lock()
            .as_mut()
            .and_then(|t| t.items.remove(&u64::from_le_bytes(token)));
        match fds {
            Some(fds) => {
                let msg = Message {
                    bytes: vec![1],
                    fds,
                };
                // If the taker is gone, the descriptors close here: the
                // item was taken, by a process that then died. Ours are
                // closed before the connection, which the taker reads to
                // its end: once it has the item, we hold nothing of it.
                let _ = transfer::send(&stream, &msg);
                drop(msg);
                drop(stream);
            }
            None => {
                let _ = stream.write_all(&[0]);
            }
        }
    }
}

/// Fetches the descriptors of `ticket` from its sender.
///
/// # Errors
///
/// `NotConnected` when the sender has ended (or never served), `NotFound`
/// when it no longer holds the ticket (taken already), and what the socket
/// reports.
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
    let mut stream = match sys::connect_private(&private_address(sender)) {
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
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the handoff server sent something else",
        )),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(if sender.has_ended() {
            gone()
        } else {
            io::Error::new(
                io::ErrorKind::NotFound,
                "the sender no longer holds this item's handles (taken already)",
            )
        }),
        Err(e) => Err(e),
    }
}

/// Gives up the descriptors of `ticket` (an item that was never sent:
/// the put failed), if this process still holds them.
pub fn cancel(ticket: &Ticket) {
    let me = ProcessIdent::current();
    if ticket.sender != me.to_bits() {
        return;
    }
    if let Some(t) = lock().as_mut().filter(|t| t.owner == me) {
        t.items.remove(&ticket.token);
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
                t.server.take()
            }
            None => None,
        }
    };
    let Some(server) = server else { return };
    STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
    // Wake its accept with a connection of our own.
    let addr = private_address(me);
    let _ = sys::connect_private(&addr);
    let _ = server.join();
}

/// Where the handoff server of `sender` listens.
fn private_address(sender: ProcessIdent) -> String {
    if cfg!(target_os = "linux") {
        format!("@{}", address(sender))
    } else {
        std::env::temp_dir()
            .join(address(sender))
            .join("s")
            .to_string_lossy()
            .into_owned()
    }
}

/// How many items this process holds for takers.
pub fn pending() -> usize {
    let me = ProcessIdent::current();
    lock()
        .as_ref()
        .filter(|t| t.owner == me)
        .map_or(0, |t| t.items.len())
}
