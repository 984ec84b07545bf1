//! Bytes of any size handed to another process as one descriptor: a
//! segment holding a length and the bytes. A spawned child's boot message
//! travels this way (the environment cannot hold it), and so does a large
//! result of [`spawn`](crate::spawn) (a socket would block the child until
//! its parent reads, and the parent reads once the child has ended).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use mproc_shm::Segment;

/// A new segment holding `bytes`, as a descriptor.
pub(crate) fn seal(bytes: &[u8]) -> io::Result<OwnedFd> {
    let seg = Segment::anonymous(8 + bytes.len())?;
    seg.write(8, bytes).map_err(io::Error::from)?;
    let len = seg
        .atomic_u64(0)
        .ok_or_else(|| io::Error::other("payload segment too small"))?;
    len.store(bytes.len() as u64, Ordering::Release);
    seg.as_fd().try_clone_to_owned()
}

/// The bytes a [`seal`]ed segment holds. The segment came from another
/// process: a length that does not fit it is an error, not a short read.
pub(crate) fn open(fd: OwnedFd) -> io::Result<Vec<u8>> {
    let seg = Segment::from_fd(fd)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed payload segment");
    let len = seg.atomic_u64(0).ok_or_else(bad)?.load(Ordering::Acquire);
    let room = seg.len().saturating_sub(8) as u64;
    if len > room {
        return Err(bad());
    }
    let mut bytes = vec![0u8; len as usize];
    seg.read(8, &mut bytes).map_err(io::Error::from)?;
    Ok(bytes)
}
