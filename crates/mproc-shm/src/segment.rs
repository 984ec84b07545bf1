//! `Segment`: a `MAP_SHARED` mapping of a file that several processes map.
//!
//! # Layout and crash story
//!
//! A segment is a run of bytes with no header of its own: the structures
//! built on it (values, locks, rings) define their layouts. The file behind it
//! is sized and its blocks reserved when it is created, so a full disk or a
//! full tmpfs is an error from the constructor and never a `SIGBUS` on a later
//! store. Its length never changes afterwards.
//!
//! An anonymous segment cannot be resized by anyone after that: on Linux its
//! memfd is sealed (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), on macOS a
//! shm object accepts only its first `ftruncate`. A file-backed or named
//! segment is a file that any process allowed to write it may truncate;
//! every process mapping it would then take `SIGBUS` on the lost pages, as
//! with any shared file mapping.
//!
//! The mapping lives as long as the last clone of the handle in a process; the
//! file lives as long as the last descriptor or mapping in any process (and
//! its name, for file-backed segments). An anonymous segment has no name, so a
//! process killed at any moment leaks nothing.
//!
//! # Access rules
//!
//! Another process may write any byte at any time, so this type never hands
//! out `&[u8]` or `&T` into the mapping. Bytes move in and out by copies
//! ([`Segment::read`], [`Segment::write`]); words shared for synchronization are
//! reached as atomics ([`Segment::atomic_u32`], [`Segment::atomic_u64`]).

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys;
use crate::transfer;

/// Shared memory mapped `MAP_SHARED` by every process that holds a handle.
///
/// Cloning a `Segment` is cheap and shares the one mapping. Handing it to
/// another process goes through [`transfer`](crate::transfer): the handle
/// serializes as a reference to its file descriptor, which the carrier
/// (inheritance or `SCM_RIGHTS`) delivers.
///
/// # Examples
///
/// ```
/// use mproc_shm::Segment;
///
/// let seg = Segment::anonymous(4096)?;
/// seg.write(16, b"hello")?;
/// let mut buf = [0u8; 5];
/// seg.read(16, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Segment {
    inner: Arc<Inner>,
}

struct Inner {
    fd: OwnedFd,
    map: MmapRaw,
    len: usize,
}

impl Segment {
    /// Creates an anonymous segment of `len` zeroed bytes.
    ///
    /// Linux uses a memfd, macOS a POSIX shm object whose name is unlinked
    /// immediately. Either way nothing in any file system names it.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `len` is zero; the OS error when the memory cannot
    /// be reserved (for example `ENOSPC` or `ENOMEM`).
    pub fn anonymous(len: usize) -> io::Result<Segment> {
        check_len(len)?;
        let fd = sys::anonymous(len)?;
        Segment::map(fd, len)
    }

    /// Creates a new file at `path` of `len` zeroed bytes and maps it.
    ///
    /// The file's blocks are reserved at once, so a full disk is reported here.
    /// The file stays after every handle is gone; remove it when done.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when `path` exists; `InvalidInput` when `len` is zero;
    /// `ENOSPC` (`StorageFull`) when the disk cannot hold it.
    pub fn create_file(path: impl AsRef<Path>, len: usize) -> io::Result<Segment> {
        check_len(len)?;
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        if let Err(e) = sys::preallocate(file.as_fd(), len, false) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Segment::map(file.into(), len)
    }

    /// Maps an existing file at `path`, its whole length.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such file; `InvalidInput` when it is empty.
    pub fn open_file(path: impl AsRef<Path>) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Segment::from_fd(file.into())
    }

    /// Maps the whole file behind a descriptor this process owns.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the file is empty or larger than the address space.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Segment> {
        let len = sys::file_len(fd.as_fd())?;
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large to map"))?;
        check_len(len)?;
        Segment::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Segment> {
        let map = MmapOptions::new().len(len).map_raw(&fd)?;
        Ok(Segment {
            inner: Arc::new(Inner { fd, map, len }),
        })
    }

    /// The length in bytes, fixed at creation.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Always `false`: a segment has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The base address of the mapping in this process (page-aligned).
    ///
    /// Other processes may write through the mapping at any time: build only
    /// atomics or volatile accesses on this pointer, never references.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.map.as_mut_ptr()
    }

    /// Returns `true` when both handles share one mapping in this process.
    pub fn ptr_eq(&self, other: &Segment) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), RangeError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.inner.len => Ok(()),
            _ => Err(RangeError {
                offset,
                len,
                segment_len: self.inner.len,
            }),
        }
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    ///
    /// # Errors
    ///
    /// [`RangeError`] when the range is not inside the segment.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), RangeError> {
        self.check(offset, buf.len())?;
        // SAFETY: (1) the range is inside the mapping (checked above) and the
        // mapping lives as long as `self`; (2) `buf` is a distinct local
        // buffer, so the regions do not overlap; (3) we copy bytes out without
        // forming a reference into the shared memory.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies `data` into the segment starting at `offset`.
    ///
    /// # Errors
    ///
    /// [`RangeError`] when the range is not inside the segment.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), RangeError> {
        self.check(offset, data.len())?;
        // SAFETY: (1) the range is inside the writable mapping (checked above);
        // (2) `data` is not inside the mapping's range we write, since safe code
        // never holds a slice of the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len())
        };
        Ok(())
    }

    /// The 4-byte word at `offset` as an atomic, or `None` when `offset` is
    /// out of range or not 4-byte aligned.
    ///
    /// Atomics are the one way to share a word with other processes: every
    /// access through them is well defined whatever the others do.
    pub fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        if offset % 4 != 0 || self.check(offset, 4).is_err() {
            return None;
        }
        // SAFETY: (1) the word is inside the mapping, which lives as long as
        // the returned borrow of `self`; (2) the base is page-aligned and
        // `offset` is a multiple of 4, so the pointer is aligned for
        // AtomicU32; (3) AtomicU32 permits concurrent access from anywhere,
        // including other processes mapping the same page.
        Some(unsafe { AtomicU32::from_ptr(self.as_ptr().add(offset).cast()) })
    }

    /// The 8-byte word at `offset` as an atomic, or `None` when `offset` is
    /// out of range or not 8-byte aligned.
    pub fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        if offset % 8 != 0 || self.check(offset, 8).is_err() {
            return None;
        }
        // SAFETY: as in `atomic_u32`, with 8-byte alignment checked.
        Some(unsafe { AtomicU64::from_ptr(self.as_ptr().add(offset).cast()) })
    }

    /// Writes dirty pages of a file-backed segment to the file
    /// (`msync(MS_SYNC)`). Anonymous segments have nothing to write.
    ///
    /// # Errors
    ///
    /// The OS error from `msync`.
    pub fn flush(&self) -> io::Result<()> {
        self.inner.map.flush()
    }
}

fn check_len(len: usize) -> io::Result<()> {
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "segment length must be non-zero",
        ));
    }
    if isize::try_from(len).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "segment length too large",
        ));
    }
    Ok(())
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("len", &self.inner.len)
            .field("addr", &self.as_ptr())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    fd: transfer::FdRef,
    len: u64,
}

impl Serialize for Segment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fd = transfer::FdRef::export(self.as_fd()).map_err(transfer::ser_error)?;
        Wire {
            fd,
            len: self.inner.len as u64,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Segment, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let fd = wire.fd.import().map_err(transfer::de_error)?;
        let seg = Segment::from_fd(fd).map_err(transfer::de_error)?;
        if seg.len() as u64 != wire.len {
            return Err(transfer::de_error(format_args!(
                "segment length mismatch: sent {} bytes, file has {}",
                wire.len,
                seg.len()
            )));
        }
        Ok(seg)
    }
}

/// A byte range that does not fit inside a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeError {
    /// Where the range starts.
    pub offset: usize,
    /// How many bytes it spans.
    pub len: usize,
    /// The segment's length.
    pub segment_len: usize,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "range of {} bytes at offset {} is outside the segment of {} bytes",
            self.len, self.offset, self.segment_len
        )
    }
}

impl std::error::Error for RangeError {}

impl From<RangeError> for io::Error {
    fn from(e: RangeError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_length_is_an_error() {
        let e = Segment::anonymous(0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn out_of_range_access_is_an_error() {
        let seg = Segment::anonymous(64).unwrap();
        assert!(seg.write(60, &[0; 8]).is_err());
        assert!(seg.read(usize::MAX, &mut [0; 2]).is_err());
        assert!(seg.atomic_u32(62).is_none());
        assert!(seg.atomic_u32(64).is_none());
        assert!(seg.atomic_u64(4).is_none());
        assert!(seg.atomic_u64(56).is_some());
    }

    #[test]
    fn clones_share_memory_and_fresh_memory_is_zero() {
        let a = Segment::anonymous(8192).unwrap();
        let b = a.clone();
        let mut buf = [0xffu8; 16];
        b.read(8000, &mut buf).unwrap();
        assert_eq!(buf, [0; 16]);
        a.atomic_u64(8)
            .unwrap()
            .store(42, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            b.atomic_u64(8)
                .unwrap()
                .load(std::sync::atomic::Ordering::SeqCst),
            42
        );
    }

    #[test]
    fn an_anonymous_segment_cannot_be_resized() {
        let seg = Segment::anonymous(8192).unwrap();
        let file = std::fs::File::from(seg.as_fd().try_clone_to_owned().unwrap());
        assert!(file.set_len(0).is_err(), "shrunk under its mappings");
        assert!(file.set_len(1 << 20).is_err(), "grown");
        assert_eq!(file.metadata().unwrap().len(), 8192);
        seg.write(8000, b"still mapped").unwrap();
    }

    #[test]
    fn two_mappings_of_one_fd_see_each_other() {
        let a = Segment::anonymous(4096).unwrap();
        let b = Segment::from_fd(a.as_fd().try_clone_to_owned().unwrap()).unwrap();
        assert!(!a.ptr_eq(&b));
        a.write(100, b"shared").unwrap();
        let mut buf = [0u8; 6];
        b.read(100, &mut buf).unwrap();
        assert_eq!(&buf, b"shared");
    }
}
