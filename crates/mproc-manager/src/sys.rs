//! The calls this crate makes to the OS: where a private unix socket lives
//! and who is on the other end of one.
//!
//! On Linux the server listens on an *abstract* unix socket (no file, so a
//! killed manager leaves nothing on disk); on macOS, which has none, on a
//! socket file in a directory only this user can enter, removed at
//! shutdown. Either way the server accepts only peers of its own user
//! (`SO_PEERCRED` / `getpeereid`), as a 0700 directory would.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh name for this process's next server.
fn fresh_name() -> io::Result<String> {
    let salt = crate::auth::random::<4>()?;
    Ok(format!(
        "mproc-mgr-{}-{}-{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        u32::from_le_bytes(salt)
    ))
}

/// A listening socket only this user can reach: its address (`@name` for
/// an abstract socket) and the directory to remove at the end, if any.
pub(crate) fn listen_private() -> io::Result<(UnixListener, String, Option<PathBuf>)> {
    let name = fresh_name()?;
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let listener = UnixListener::bind_addr(&addr)?;
        Ok((listener, format!("@{name}"), None))
    }
    #[cfg(not(target_os = "linux"))]
    {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(&name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("s");
        match UnixListener::bind(&path) {
            Ok(listener) => Ok((listener, path.to_string_lossy().into_owned(), Some(dir))),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }
}

/// Connects to a unix address made by [`listen_private`].
pub(crate) fn connect(addr: &str) -> io::Result<UnixStream> {
    #[cfg(target_os = "linux")]
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        return UnixStream::connect_addr(&addr);
    }
    UnixStream::connect(addr)
}

/// Whether the peer of `stream` runs as this process's effective user.
pub(crate) fn peer_is_us(stream: &UnixStream) -> io::Result<bool> {
    let me = nix::unistd::geteuid();
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let cred = getsockopt(stream, PeerCredentials)?;
        Ok(cred.uid() == me.as_raw())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (uid, _) = nix::unistd::getpeereid(stream)?;
        Ok(uid == me)
    }
}

/// One read that never blocks: `Ok(None)` when nothing is there yet.
pub(crate) fn read_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    use nix::sys::socket::{recv, MsgFlags};
    match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
        Ok(n) => Ok(Some(n)),
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
