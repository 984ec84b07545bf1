//! A multi-process echo server on 127.0.0.1: one child per connection, each
//! handed its socket as an argument and detached — reaped in the background
//! when its client leaves, so a long-running server needs no thread of its
//! own to reap finished handlers. The example drives two clients itself
//! (threads of this process) and exits.
//!
//! The connection reaches the child as a [`SharedFd`]. With the default
//! start methods (forkserver, spawn) a child receives only the descriptors
//! in its arguments; a forked child would also inherit the clients' sockets
//! of this very process and keep them open.
//!
//! ```text
//! cargo run --example echo_server
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use mproc::shm::transfer::SharedFd;
use mproc::{current_process, Process};

/// The per-connection child: echoes lines until the client hangs up.
fn handle(conn: SharedFd) -> std::io::Result<()> {
    let mut out = TcpStream::from(conn.into_owned());
    let lines = BufReader::new(out.try_clone()?).lines();
    let me = current_process();
    for line in lines {
        writeln!(out, "{}: {}", me.name, line?)?;
    }
    Ok(())
}

/// A client: says three things, checks each echo, hangs up.
fn client(id: u32, addr: SocketAddr) -> std::io::Result<Vec<String>> {
    let mut conn = TcpStream::connect(addr)?;
    let mut echoes = BufReader::new(conn.try_clone()?).lines();
    let mut heard = Vec::new();
    for n in 1..=3 {
        writeln!(conn, "client {id} says {n}")?;
        heard.push(echoes.next().ok_or(std::io::ErrorKind::UnexpectedEof)??);
    }
    Ok(heard)
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    println!("An echo server on {addr}, one process per connection.");
    let clients: Vec<_> = (1..=2)
        .map(|id| std::thread::spawn(move || client(id, addr)))
        .collect();
    for n in 1..=2 {
        let (conn, peer) = listener.accept()?;
        let mut p = Process::new(handle, SharedFd::new(conn)).name(format!("handler-{n}"));
        p.start()?; // the child has its own copy of the socket; ours is closed
        println!("  {peer} is served by {} (pid {:?})", p.get_name(), p.pid());
        // No handle to keep: the handler is reaped as soon as it ends.
        p.detach();
    }
    for c in clients {
        for line in c.join().map_err(|_| "a client panicked")?? {
            println!("  echo: {line}");
        }
    }
    // Handlers still finishing are joined by the exit rules as main returns.
    println!("  the clients left; their handlers are reaped as they exit\n");
    Ok(())
}
