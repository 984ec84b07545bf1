//! `RawValue<T>` and `RawArray<T>`: plain-old-data in shared memory, without
//! a lock (Python's `multiprocessing.sharedctypes.RawValue` / `RawArray`).
//!
//! # Layout
//!
//! A value or array is `size_of::<T>() * len` bytes at an offset of a
//! [`Segment`], aligned for `T`. There is no header.
//!
//! # Concurrency and crash story
//!
//! Reads and writes copy whole elements with volatile accesses. They are not
//! atomic: a reader racing a writer in another process may see an element
//! half old and half new. `T: Pod` makes every bit pattern a valid `T`, so a
//! torn read is a wrong value, never undefined behaviour. A process killed
//! mid-write leaves the same kind of torn element behind. Where that matters,
//! use the locked `Value` / `Array` of `mproc-sync`.

use std::fmt;
use std::io;
use std::marker::PhantomData;

use bytemuck::Pod;
use serde::{Deserialize, Serialize};

use crate::Segment;

/// One `T` in shared memory, read and written by copy.
///
/// # Examples
///
/// ```
/// use mproc_shm::RawValue;
///
/// let v = RawValue::new(1.5f64)?;
/// v.set(v.get() * 2.0);
/// assert_eq!(v.get(), 3.0);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "Place", into = "Place", bound = "")]
pub struct RawValue<T: Pod> {
    seg: Segment,
    offset: usize,
    _t: PhantomData<fn() -> T>,
}

/// The serialized form of values and arrays: a segment and where in it.
#[derive(Clone, Serialize, Deserialize)]
struct Place {
    seg: Segment,
    offset: u64,
    len: u64,
}

impl<T: Pod> RawValue<T> {
    /// Puts `value` in a new anonymous segment.
    ///
    /// # Errors
    ///
    /// The OS error when the segment cannot be created.
    pub fn new(value: T) -> io::Result<RawValue<T>> {
        let seg = Segment::anonymous(std::mem::size_of::<T>().max(1))?;
        let v = RawValue::at(seg, 0)?;
        v.set(value);
        Ok(v)
    }

    /// Views the `T` at `offset` of an existing segment.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `offset` is not aligned for `T` or the value does
    /// not fit inside the segment.
    pub fn at(seg: Segment, offset: usize) -> io::Result<RawValue<T>> {
        check_place::<T>(&seg, offset, 1)?;
        Ok(RawValue {
            seg,
            offset,
            _t: PhantomData,
        })
    }

    fn ptr(&self) -> *mut T {
        // SAFETY: `at` checked that offset + size_of::<T>() is inside the
        // mapping, so the pointer stays in bounds.
        unsafe { self.seg.as_ptr().add(self.offset).cast() }
    }

    /// A copy of the value.
    pub fn get(&self) -> T {
        // SAFETY: (1) the pointer is in bounds and aligned for T (checked in
        // `at`); (2) T: Pod, so whatever bytes another process left there form
        // a valid T; (3) the volatile read copies without forming a reference.
        unsafe { self.ptr().read_volatile() }
    }

    /// Overwrites the value.
    pub fn set(&self, value: T) {
        // SAFETY: in bounds and aligned (checked in `at`); the mapping is
        // writable; the volatile write forms no reference.
        unsafe { self.ptr().write_volatile(value) }
    }

    /// The segment that holds the value.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The value's byte offset in its segment.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

impl<T: Pod> From<RawValue<T>> for Place {
    fn from(v: RawValue<T>) -> Place {
        Place {
            seg: v.seg,
            offset: v.offset as u64,
            len: 1,
        }
    }
}

impl<T: Pod> TryFrom<Place> for RawValue<T> {
    type Error = io::Error;
    fn try_from(p: Place) -> io::Result<RawValue<T>> {
        if p.len != 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a single value",
            ));
        }
        RawValue::at(p.seg, to_usize(p.offset)?)
    }
}

/// A fixed-length array of `T` in shared memory, read and written by copy.
///
/// # Examples
///
/// ```
/// use mproc_shm::RawArray;
///
/// let a = RawArray::<i32>::from_slice(&[1, 2, 3])?;
/// a.set(1, 20)?;
/// assert_eq!(a.to_vec(), [1, 20, 3]);
/// assert!(a.get(3).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "Place", into = "Place", bound = "")]
pub struct RawArray<T: Pod> {
    seg: Segment,
    offset: usize,
    len: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod> RawArray<T> {
    /// A new array of `len` zeroed elements in a new anonymous segment.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the size overflows; the OS error when the segment
    /// cannot be created.
    pub fn new(len: usize) -> io::Result<RawArray<T>> {
        let bytes = std::mem::size_of::<T>()
            .checked_mul(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "array size overflows"))?;
        let seg = Segment::anonymous(bytes.max(1))?;
        RawArray::at(seg, 0, len)
    }

    /// A new array holding a copy of `items`.
    ///
    /// # Errors
    ///
    /// As [`RawArray::new`].
    pub fn from_slice(items: &[T]) -> io::Result<RawArray<T>> {
        let a = RawArray::new(items.len())?;
        for (i, item) in items.iter().enumerate() {
            a.write_at(i, *item);
        }
        Ok(a)
    }

    /// Views `len` elements at `offset` of an existing segment.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `offset` is not aligned for `T` or the array does
    /// not fit inside the segment.
    pub fn at(seg: Segment, offset: usize, len: usize) -> io::Result<RawArray<T>> {
        check_place::<T>(&seg, offset, len)?;
        Ok(RawArray {
            seg,
            offset,
            len,
            _t: PhantomData,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn ptr(&self, index: usize) -> *mut T {
        debug_assert!(index < self.len);
        // SAFETY: callers pass index < len, and `at` checked that
        // offset + len * size_of::<T>() is inside the mapping.
        unsafe { self.seg.as_ptr().add(self.offset).cast::<T>().add(index) }
    }

    fn read_at(&self, index: usize) -> T {
        // SAFETY: index < len (callers check); aligned (checked in `at`); any
        // bytes are a valid T: Pod; the volatile read forms no reference.
        unsafe { self.ptr(index).read_volatile() }
    }

    fn write_at(&self, index: usize, value: T) {
        // SAFETY: index < len (callers check); aligned; writable mapping.
        unsafe { self.ptr(index).write_volatile(value) }
    }

    /// A copy of element `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        (index < self.len).then(|| self.read_at(index))
    }

    /// Overwrites element `index`.
    ///
    /// # Errors
    ///
    /// [`IndexError`] past the end.
    pub fn set(&self, index: usize, value: T) -> Result<(), IndexError> {
        if index >= self.len {
            return Err(IndexError {
                index,
                len: self.len,
            });
        }
        self.write_at(index, value);
        Ok(())
    }

    /// A copy of every element.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).map(|i| self.read_at(i)).collect()
    }

    /// Overwrites every element from `items`, which must have the same length.
    ///
    /// # Errors
    ///
    /// [`IndexError`] when the lengths differ (nothing is written).
    pub fn copy_from_slice(&self, items: &[T]) -> Result<(), IndexError> {
        if items.len() != self.len {
            return Err(IndexError {
                index: items.len(),
                len: self.len,
            });
        }
        for (i, item) in items.iter().enumerate() {
            self.write_at(i, *item);
        }
        Ok(())
    }

    /// The segment that holds the array.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The array's byte offset in its segment.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

impl<T: Pod> From<RawArray<T>> for Place {
    fn from(a: RawArray<T>) -> Place {
        Place {
            seg: a.seg,
            offset: a.offset as u64,
            len: a.len as u64,
        }
    }
}

impl<T: Pod> TryFrom<Place> for RawArray<T> {
    type Error = io::Error;
    fn try_from(p: Place) -> io::Result<RawArray<T>> {
        RawArray::at(p.seg, to_usize(p.offset)?, to_usize(p.len)?)
    }
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "offset out of range"))
}

fn check_place<T>(seg: &Segment, offset: usize, len: usize) -> io::Result<()> {
    if offset % std::mem::align_of::<T>() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "offset {offset} is not aligned to {} bytes",
                std::mem::align_of::<T>()
            ),
        ));
    }
    let fits = std::mem::size_of::<T>()
        .checked_mul(len)
        .and_then(|bytes| offset.checked_add(bytes))
        .is_some_and(|end| end <= seg.len());
    if !fits {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{len} elements at offset {offset} do not fit in a segment of {} bytes",
                seg.len()
            ),
        ));
    }
    Ok(())
}

/// An index past the end of a [`RawArray`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexError {
    /// The index (or slice length) that did not fit.
    pub index: usize,
    /// The array's length.
    pub len: usize,
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "index {} out of range for an array of length {}",
            self.index, self.len
        )
    }
}

impl std::error::Error for IndexError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misaligned_or_oversized_places_are_errors() {
        let seg = Segment::anonymous(64).unwrap();
        assert!(RawValue::<u64>::at(seg.clone(), 4).is_err());
        assert!(RawValue::<u64>::at(seg.clone(), 64).is_err());
        assert!(RawArray::<u32>::at(seg.clone(), 0, 17).is_err());
        assert!(RawArray::<u32>::at(seg.clone(), 0, usize::MAX).is_err());
        assert!(RawArray::<u32>::at(seg, 0, 16).is_ok());
    }

    #[test]
    fn array_bounds() {
        let a = RawArray::<u16>::new(4).unwrap();
        assert_eq!(a.to_vec(), [0; 4]);
        assert_eq!(a.set(4, 1), Err(IndexError { index: 4, len: 4 }));
        assert!(a.copy_from_slice(&[1, 2, 3]).is_err());
        a.copy_from_slice(&[1, 2, 3, 4]).unwrap();
        assert_eq!(a.get(3), Some(4));
        let empty = RawArray::<u64>::new(0).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.get(0), None);
    }

    #[test]
    fn values_survive_transfer() {
        let v = RawValue::new(7u64).unwrap();
        let back: RawValue<u64> =
            crate::transfer::decode(crate::transfer::encode(&v).unwrap()).unwrap();
        back.set(9);
        assert_eq!(v.get(), 9);
    }
}
