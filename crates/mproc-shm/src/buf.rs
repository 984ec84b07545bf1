//! Zero-copy buffers: [`BufMut`], filled once, frozen into a [`Buf`] that
//! other processes map instead of copying (see [`Buf`]).

use std::fmt;
use std::io;
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use memmap2::{Mmap, MmapMut, MmapOptions};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::segment::RangeError;
use crate::{sys, transfer};

/// A buffer being filled: writable, and seen by this process alone until
/// [`freeze`](BufMut::freeze).
pub struct BufMut {
    fd: OwnedFd,
    /// `None` for an empty buffer (nothing to map).
    map: Option<MmapMut>,
}

impl BufMut {
    /// A buffer of `len` zero bytes, its memory reserved now (so running out
    /// is an error here, never a fault later).
    ///
    /// # Errors
    ///
    /// `OutOfMemory` when `len` is larger than the machine's memory and
    /// swap; the OS error when the memory cannot be reserved or mapped.
    pub fn zeroed(len: usize) -> io::Result<BufMut> {
        let fd = sys::sealable(len)?;
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the memfd was made just now and no other process or
            // mapping has it: this mapping is the only way to its bytes
            // until `freeze`, which drops it first.
            Some(unsafe { MmapOptions::new().len(len).map_mut(&fd)? })
        };
        Ok(BufMut { fd, map })
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seals the buffer for good and maps it read-only: from now on no
    /// process can change it.
    ///
    /// # Errors
    ///
    /// The OS error when the seals cannot be added or the buffer mapped
    /// again.
    pub fn freeze(self) -> io::Result<Buf> {
        let BufMut { fd, map } = self;
        let len = map.as_ref().map_or(0, |m| m.len());
        // The writable mapping must be gone before the write seal goes on.
        drop(map);
        sys::seal_frozen(fd.as_fd())?;
        Buf::map(fd, len, 0, len)
    }
}

impl Deref for BufMut {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for BufMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }
}

impl fmt::Debug for BufMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufMut").field("len", &self.len()).finish()
    }
}

/// Why a buffer cannot be viewed as a slice of some `T` ([`Buf::cast`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CastError {
    /// The view does not start at an address aligned for `T`.
    Misaligned,
    /// The view's length is not a multiple of `T`'s size.
    Length,
}

impl fmt::Display for CastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CastError::Misaligned => "the buffer's start is not aligned for the type",
            CastError::Length => "the buffer's length is not a whole number of the type",
        })
    }
}

impl std::error::Error for CastError {}

struct Frozen {
    fd: OwnedFd,
    map: Option<Mmap>,
    len: usize,
}

/// Frozen bytes shared by every process that holds a handle: `Clone`
/// (another handle to the same pages), `Deref<Target = [u8]>`,
/// [`slice`](Buf::slice) and [`cast`](Buf::cast) without copying, and
/// `Serialize` as a handle.
///
/// Zero-copy buffers: bytes written once, then handed to other processes as
/// a descriptor instead of being copied.
///
/// [`BufMut::zeroed`] makes a buffer of its own memory (a memfd on Linux, an
/// unlinked shm object on macOS) that only this process can see; fill it,
/// then [`freeze`](BufMut::freeze) it into a [`Buf`]. Freezing seals the
/// memfd — no process can write, shrink or grow it any more, nor lift the
/// seals — and maps it read-only. A `Buf` is cheap to clone and slice, and
/// it travels as a handle: its descriptor goes with it (inherited by a
/// child, or over `SCM_RIGHTS` to a running worker, see
/// [`transfer`](crate::transfer); through a queue or a pipe, by
/// [`handoff`](crate::handoff) from the sender), and the receiver maps the
/// same pages. A
/// gigabyte crosses in the time of a few system calls, and exists once in
/// memory however many processes hold it; it is freed when the last one
/// lets go — or dies.
///
/// A received buffer is checked: the descriptor must be sealed against
/// writes (on Linux; macOS has no seals, and a frozen buffer there is
/// read-only by convention: every mproc handle maps it read-only), and the
/// length and range must match the file.
///
/// ```
/// use mproc_shm::{transfer, BufMut};
///
/// let mut b = BufMut::zeroed(1 << 20)?;
/// b[..5].copy_from_slice(b"hello");
/// let buf = b.freeze()?;
///
/// // What a child or a pool worker receives: the same pages, not a copy.
/// let there: mproc_shm::Buf = transfer::decode(transfer::encode(&buf)?)?;
/// assert_eq!(&there[..5], b"hello");
/// assert_eq!(there.len(), 1 << 20);
/// let head = there.slice(0..64)?;
/// let words = head.cast::<u64>()?;
/// assert_eq!(words.len(), 8);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Buf {
    inner: Arc<Frozen>,
    start: usize,
    end: usize,
}

/// How a buffer travels: its descriptor's place in the transfer's table,
/// the file's length and the range this handle shows.
#[derive(Serialize, Deserialize)]
struct Wire {
    fd: transfer::FdRef,
    len: u64,
    start: u64,
    end: u64,
}

impl Buf {
    fn map(fd: OwnedFd, len: usize, start: usize, end: usize) -> io::Result<Buf> {
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the file is sealed against writes and size changes
            // (checked on receipt; macOS: by convention, see the module
            // docs), so the bytes behind the shared slice never change.
            Some(unsafe { MmapOptions::new().len(len).map(&fd)? })
        };
        Ok(Buf {
            inner: Arc::new(Frozen { fd, map, len }),
            start,
            end,
        })
    }

    /// The length in bytes of this view.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether this view has no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// A view of `range` of this one, sharing the same pages.
    ///
    /// # Errors
    ///
    /// [`RangeError`] when `range` is not inside this view.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Result<Buf, RangeError> {
        let len = self.len();
        let from = match range.start_bound() {
            Bound::Included(&s) => Some(s),
            Bound::Excluded(&s) => s.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let to = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => Some(len),
        };
        match (from, to) {
            (Some(from), Some(to)) if from <= to && to <= len => Ok(Buf {
                inner: self.inner.clone(),
                start: self.start + from,
                end: self.start + to,
            }),
            (from, to) => Err(RangeError {
                offset: from.unwrap_or(usize::MAX),
                len: to.unwrap_or(usize::MAX).saturating_sub(from.unwrap_or(0)),
                segment_len: len,
            }),
        }
    }

    /// This view as a slice of `T`, without copying.
    ///
    /// # Errors
    ///
    /// [`CastError`] when the view's start is not aligned for `T` or its
    /// length is not a multiple of `T`'s size.
    pub fn cast<T: bytemuck::Pod>(&self) -> Result<&[T], CastError> {
        bytemuck::try_cast_slice(self).map_err(|e| match e {
            bytemuck::PodCastError::OutputSliceWouldHaveSlop
            | bytemuck::PodCastError::SizeMismatch => CastError::Length,
            _ => CastError::Misaligned,
        })
    }
}

impl Deref for Buf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner.map {
            Some(m) => &m[self.start..self.end],
            None => &[],
        }
    }
}

impl AsRef<[u8]> for Buf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for Buf {
    fn eq(&self, other: &Buf) -> bool {
        **self == **other
    }
}

impl Eq for Buf {}

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buf")
            .field("len", &self.len())
            .field("of", &self.inner.len)
            .finish()
    }
}

impl Serialize for Buf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fd = transfer::FdRef::export(self.inner.fd.as_fd()).map_err(transfer::ser_error)?;
        Wire {
            fd,
            len: self.inner.len as u64,
            start: self.start as u64,
            end: self.end as u64,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Buf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Buf, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let fd = wire.fd.import().map_err(transfer::de_error)?;
        let actual = sys::file_len(fd.as_fd()).map_err(transfer::de_error)?;
        if actual != wire.len {
            return Err(transfer::de_error(format_args!(
                "buffer length mismatch: sent {} bytes, file has {actual}",
                wire.len
            )));
        }
        if !(wire.start <= wire.end && wire.end <= wire.len) {
            return Err(transfer::de_error(format_args!(
                "buffer range {}..{} is outside its {} bytes",
                wire.start, wire.end, wire.len
            )));
        }
        match sys::is_frozen(fd.as_fd()) {
            Ok(true) => {}
            Ok(false) => {
                return Err(transfer::de_error(
                    "a buffer's descriptor is not sealed against writes",
                ))
            }
            Err(e) => return Err(transfer::de_error(format_args!("{e}"))),
        }
        let (len, start, end) = usize::try_from(wire.len)
            .ok()
            .zip(usize::try_from(wire.start).ok())
            .zip(usize::try_from(wire.end).ok())
            .map(|((l, s), e)| (l, s, e))
            .ok_or_else(|| transfer::de_error("buffer too large to map"))?;
        Buf::map(fd, len, start, end).map_err(transfer::de_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_buffer_cannot_be_written_or_resized_by_anyone() {
        let mut b = BufMut::zeroed(8192).unwrap();
        b[100] = 7;
        let buf = b.freeze().unwrap();
        assert_eq!(buf[100], 7);
        assert_eq!(buf.len(), 8192);
        #[cfg(target_os = "linux")]
        {
            // A writable mapping, or a write through the descriptor, is
            // refused by the kernel.
            let f = std::fs::File::from(buf.inner.fd.try_clone().unwrap());
            // SAFETY: only attempts the mapping; it must fail.
            assert!(unsafe { MmapOptions::new().len(8192).map_mut(&f) }.is_err());
            assert!(f.set_len(4096).is_err());
        }
    }

    #[test]
    fn slices_share_the_pages_and_bad_ranges_are_errors() {
        let mut b = BufMut::zeroed(64).unwrap();
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8;
        }
        let buf = b.freeze().unwrap();
        let s = buf.slice(8..24).unwrap();
        assert_eq!(&s[..3], &[8, 9, 10]);
        assert_eq!(s.slice(..=1).unwrap().to_vec(), [8, 9]);
        assert!(s.slice(10..20).is_err());
        let (from, to) = (5, 3);
        assert!(s.slice(from..to).is_err());
        assert_eq!(s.cast::<u64>().unwrap().len(), 2);
        assert!(buf.slice(1..9).unwrap().cast::<u64>().is_err());
        let empty = BufMut::zeroed(0).unwrap().freeze().unwrap();
        assert!(empty.is_empty());
        assert_eq!(&*empty, &[] as &[u8]);
    }

    #[test]
    fn a_received_buffer_is_checked() {
        let buf = BufMut::zeroed(4096).unwrap().freeze().unwrap();
        let there: Buf =
            transfer::decode(transfer::encode(&buf.slice(10..20).unwrap()).unwrap()).unwrap();
        assert_eq!(there.len(), 10);
        // An unsealed descriptor passed off as a buffer is refused (Linux).
        #[cfg(target_os = "linux")]
        {
            let seg = crate::Segment::anonymous(4096).unwrap();
            let msg = transfer::encode(&seg).unwrap();
            // Same wire shape: fd index and length; add a range.
            let mut bytes = msg.bytes.clone();
            bytes.extend_from_slice(&[0, 0x80, 0x20]);
            let forged: Result<Buf, _> = transfer::decode(transfer::Message {
                bytes,
                fds: msg.fds,
            });
            assert!(forged.is_err(), "{forged:?}");
        }
    }
}
