//! `SharedMemory`: named segments that unrelated processes open by name, like
//! Python's `multiprocessing.shared_memory.SharedMemory`.
//!
//! A name lives in the system-wide POSIX shm namespace (`/dev/shm` on Linux)
//! until it is unlinked, even after every process that used it has died. So
//! the creating handle unlinks the name when its last clone in the creating
//! process drops (CPython's `track=True`), unless created with
//! [`SharedMemoryOptions::track(false)`](SharedMemoryOptions::track).
//! Handles opened by name, and copies received by other processes, never
//! unlink on drop; [`SharedMemory::unlink`] is explicit and idempotent.
//!
//! A process killed with SIGKILL cannot run its drop, so a tracked name can
//! outlive a killed creator: prefer anonymous [`Segment`]s handed to children
//! (nothing to leak) and use names only where unrelated processes must meet.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{sys, RangeError, Segment};

/// The longest name accepted, in bytes: macOS allows 31 including the
/// leading `/` that the platform name gets.
pub const MAX_NAME_LEN: usize = 30;

/// A named shared-memory block.
///
/// # Examples
///
/// ```
/// use mproc_shm::SharedMemory;
///
/// let name = format!("mproc-doc-{}", std::process::id());
/// let created = SharedMemory::create(&name, 4096)?;
/// created.write(0, b"hi")?;
///
/// let opened = SharedMemory::open(&name)?;   // another process would do this
/// let mut buf = [0u8; 2];
/// opened.read(0, &mut buf)?;
/// assert_eq!(&buf, b"hi");
///
/// drop(opened);
/// drop(created);                             // the creator unlinks the name
/// assert!(SharedMemory::open(&name).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    seg: Segment,
    /// The pid of the creating process, when that process should unlink the
    /// name on the last drop.
    tracked_by: Option<u32>,
    unlinked: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.tracked_by == Some(std::process::id()) && !self.unlinked.load(Ordering::Acquire) {
            let _ = sys::shm_unlink(&platform_name(&self.name));
        }
    }
}

/// Options for creating a [`SharedMemory`].
#[derive(Clone, Debug)]
pub struct SharedMemoryOptions {
    track: bool,
}

impl SharedMemoryOptions {
    /// Whether the creator unlinks the name when its last handle drops
    /// (default `true`).
    pub fn track(mut self, track: bool) -> SharedMemoryOptions {
        self.track = track;
        self
    }

    /// Creates a new block named `name` of `size` zeroed bytes.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an invalid name or a zero size; `AlreadyExists`
    /// when the name is taken; the OS error otherwise.
    pub fn create(&self, name: &str, size: usize) -> io::Result<SharedMemory> {
        validate_name(name)?;
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "size must be non-zero",
            ));
        }
        let fd = sys::shm_create(&platform_name(name), size)?;
        let seg = match Segment::from_fd(fd) {
            Ok(seg) => seg,
            Err(e) => {
                let _ = sys::shm_unlink(&platform_name(name));
                return Err(e);
            }
        };
        Ok(SharedMemory::wrap(
            name,
            seg,
            self.track.then(std::process::id),
        ))
    }
}

impl SharedMemory {
    /// Options for [`create`](SharedMemoryOptions::create).
    pub fn options() -> SharedMemoryOptions {
        SharedMemoryOptions { track: true }
    }

    /// Creates a new tracked block named `name` of `size` zeroed bytes.
    ///
    /// # Errors
    ///
    /// As [`SharedMemoryOptions::create`].
    pub fn create(name: &str, size: usize) -> io::Result<SharedMemory> {
        SharedMemory::options().create(name, size)
    }

    /// Creates a new tracked block under a fresh unique name (Python's
    /// `SharedMemory(create=True, size=n)` without a name).
    ///
    /// # Errors
    ///
    /// As [`SharedMemoryOptions::create`].
    pub fn create_unique(size: usize) -> io::Result<SharedMemory> {
        loop {
            let name: String = format!("mp-{}", sys::unique_suffix())
                .chars()
                .take(MAX_NAME_LEN)
                .collect();
            match SharedMemory::create(&name, size) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                other => return other,
            }
        }
    }

    /// Opens the existing block named `name`. The handle never unlinks it on
    /// drop.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an invalid name; `NotFound` when there is no such
    /// block. A failed open changes nothing.
    pub fn open(name: &str) -> io::Result<SharedMemory> {
        validate_name(name)?;
        let fd = sys::shm_open(&platform_name(name))?;
        let seg = Segment::from_fd(fd)?;
        Ok(SharedMemory::wrap(name, seg, None))
    }

    fn wrap(name: &str, seg: Segment, tracked_by: Option<u32>) -> SharedMemory {
        SharedMemory {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                seg,
                tracked_by,
                unlinked: AtomicBool::new(false),
            }),
        }
    }

    /// The name, without the platform's leading `/`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The size in bytes. On macOS this is rounded up to whole pages.
    pub fn len(&self) -> usize {
        self.inner.seg.len()
    }

    /// Always `false`: a block has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The mapping, for atomics and typed views.
    pub fn segment(&self) -> &Segment {
        &self.inner.seg
    }

    /// Copies bytes out of the block; see [`Segment::read`].
    ///
    /// # Errors
    ///
    /// [`RangeError`] when the range is not inside the block.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), RangeError> {
        self.inner.seg.read(offset, buf)
    }

    /// Copies bytes into the block; see [`Segment::write`].
    ///
    /// # Errors
    ///
    /// [`RangeError`] when the range is not inside the block.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), RangeError> {
        self.inner.seg.write(offset, data)
    }

    /// Removes the name, so no new process can open it. Mappings stay valid.
    /// Calling it again, or after another process unlinked the name, is `Ok`.
    ///
    /// # Errors
    ///
    /// The OS error other than "not found".
    pub fn unlink(&self) -> io::Result<()> {
        if self.inner.unlinked.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match sys::shm_unlink(&platform_name(&self.inner.name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                self.inner.unlinked.store(false, Ordering::Release);
                Err(e)
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.inner.name)
            .field("len", &self.len())
            .field("tracked", &self.inner.tracked_by.is_some())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    name: String,
    seg: Segment,
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            name: self.inner.name.clone(),
            seg: self.inner.seg.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    /// A received handle is an attacher: it never unlinks on drop.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SharedMemory, D::Error> {
        let w = Wire::deserialize(deserializer)?;
        validate_name(&w.name).map_err(crate::transfer::de_error)?;
        Ok(SharedMemory::wrap(&w.name, w.seg, None))
    }
}

fn platform_name(name: &str) -> String {
    format!("/{name}")
}

fn validate_name(name: &str) -> io::Result<()> {
    let bad = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid shared memory name {name:?}: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 30 bytes");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.contains('\0') {
        return bad("contains a nul byte");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for name in ["", "a/b", "x\0y", "..", &"n".repeat(31)] {
            let e = SharedMemory::create(name, 16).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
            assert_eq!(
                SharedMemory::open(name).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }
}
