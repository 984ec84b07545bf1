//! `Value<T>` and `Array<T>`: plain-old-data in shared memory with a lock of
//! their own (Python's synchronized `multiprocessing.Value` / `Array`).
//!
//! # Layout
//!
//! One segment: a [`Lock`] at offset 0 (16 bytes), the data at offset 64.
//! The data is a [`RawValue`] / [`RawArray`] (volatile whole-element copies).
//! Every access through [`Value::get`], [`Value::set`], [`Value::update`] or
//! a [`ValueGuard`] holds the lock, so no reader sees a torn value written
//! through these methods.
//!
//! # Crash story
//!
//! A process killed while holding the lock may leave the data half-written.
//! The next locker gets the lock with the owner-died flag set:
//! [`ValueGuard::owner_died`] says so, until [`ValueGuard::mark_consistent`].
//! The convenience methods (`get`, `set`, `update`) carry on regardless —
//! `T: Pod`, so any bytes are a valid `T` — and leave the flag for explicit
//! lockers to see.

use std::fmt;
use std::io;

use bytemuck::Pod;
use mproc_shm::{IndexError, RawArray, RawValue, Segment};
use serde::{Deserialize, Serialize};

use crate::lock::{Lock, LockGuard};

const DATA: usize = 64;

fn layout(data_bytes: usize, align: usize) -> io::Result<Segment> {
    if align > DATA {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "types aligned above 64 bytes are not supported",
        ));
    }
    let len = DATA
        .checked_add(data_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "size overflows"))?;
    Segment::anonymous(len)
}

/// Takes `lock` whatever happened to its last holder.
fn take(lock: &Lock) -> (LockGuard<'_>, bool) {
    match lock.lock() {
        Ok(g) => (g, false),
        Err(died) => (died.into_inner(), true),
    }
}

/// A `T` in shared memory behind its own lock.
///
/// # Examples
///
/// ```
/// use mproc_sync::Value;
///
/// let hits = Value::new(0u64)?;
/// hits.update(|n| *n += 1);
/// {
///     let mut g = hits.lock();
///     let n = g.get();
///     g.set(n * 10);
/// }
/// assert_eq!(hits.get(), 10);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Value<T: Pod> {
    lock: Lock,
    raw: RawValue<T>,
}

impl<T: Pod> Value<T> {
    /// A new value, holding `value`.
    ///
    /// # Errors
    ///
    /// The OS error when the segment cannot be created.
    pub fn new(value: T) -> io::Result<Value<T>> {
        let seg = layout(std::mem::size_of::<T>(), std::mem::align_of::<T>())?;
        let lock = Lock::new_in(seg.clone(), 0)?;
        let raw = RawValue::at(seg, DATA)?;
        raw.set(value);
        Ok(Value { lock, raw })
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the lock and gives access to the value.
    pub fn lock(&self) -> ValueGuard<'_, T> {
        let (guard, died) = take(&self.lock);
        ValueGuard {
            guard,
            raw: &self.raw,
            died,
        }
    }

    /// A copy of the value, read under the lock.
    pub fn get(&self) -> T {
        self.lock().get()
    }

    /// Overwrites the value under the lock.
    pub fn set(&self, value: T) {
        self.lock().set(value)
    }

    /// Changes the value in place under the lock; returns what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut g = self.lock();
        let mut v = g.get();
        let r = f(&mut v);
        g.set(v);
        r
    }

    /// The unlocked value, for callers that hold the lock another way.
    pub fn get_obj(&self) -> &RawValue<T> {
        &self.raw
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Value").field(&self.get()).finish()
    }
}

/// The lock of a [`Value`], held, with access to the value.
pub struct ValueGuard<'a, T: Pod> {
    guard: LockGuard<'a>,
    raw: &'a RawValue<T>,
    died: bool,
}

impl<T: Pod> ValueGuard<'_, T> {
    /// A copy of the value.
    pub fn get(&self) -> T {
        self.raw.get()
    }

    /// Overwrites the value.
    pub fn set(&mut self, value: T) {
        self.raw.set(value)
    }

    /// Whether a previous holder died with the lock (the value may be torn).
    pub fn owner_died(&self) -> bool {
        self.died
    }

    /// Declares the value repaired.
    pub fn mark_consistent(&mut self) {
        self.guard.mark_consistent();
        self.died = false;
    }
}

impl<T: Pod> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueGuard")
            .field("owner_died", &self.died)
            .finish()
    }
}

/// A fixed-length array of `T` in shared memory behind its own lock.
///
/// # Examples
///
/// ```
/// use mproc_sync::Array;
///
/// let a = Array::from_slice(&[1i32, 2, 3])?;
/// a.lock().set(0, 10)?;
/// assert_eq!(a.to_vec(), [10, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Array<T: Pod> {
    lock: Lock,
    raw: RawArray<T>,
}

impl<T: Pod> Array<T> {
    /// A new array of `len` zeroed elements.
    ///
    /// # Errors
    ///
    /// The OS error when the segment cannot be created.
    pub fn new(len: usize) -> io::Result<Array<T>> {
        let bytes = std::mem::size_of::<T>()
            .checked_mul(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "array size overflows"))?;
        let seg = layout(bytes, std::mem::align_of::<T>())?;
        Ok(Array {
            lock: Lock::new_in(seg.clone(), 0)?,
            raw: RawArray::at(seg, DATA, len)?,
        })
    }

    /// A new array holding a copy of `items`.
    ///
    /// # Errors
    ///
    /// As [`Array::new`].
    pub fn from_slice(items: &[T]) -> io::Result<Array<T>> {
        let a = Array::new(items.len())?;
        a.raw.copy_from_slice(items).map_err(io::Error::other)?;
        Ok(a)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the lock and gives access to the elements.
    pub fn lock(&self) -> ArrayGuard<'_, T> {
        let (guard, died) = take(&self.lock);
        ArrayGuard {
            guard,
            raw: &self.raw,
            died,
        }
    }

    /// A copy of element `index` read under the lock, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        self.lock().get(index)
    }

    /// Overwrites element `index` under the lock.
    ///
    /// # Errors
    ///
    /// [`IndexError`] past the end.
    pub fn set(&self, index: usize, value: T) -> Result<(), IndexError> {
        self.lock().set(index, value)
    }

    /// A copy of every element, taken under the lock.
    pub fn to_vec(&self) -> Vec<T> {
        self.lock().to_vec()
    }

    /// The unlocked array, for callers that hold the lock another way.
    pub fn get_obj(&self) -> &RawArray<T> {
        &self.raw
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Array").field(&self.to_vec()).finish()
    }
}

/// The lock of an [`Array`], held, with access to the elements.
pub struct ArrayGuard<'a, T: Pod> {
    guard: LockGuard<'a>,
    raw: &'a RawArray<T>,
    died: bool,
}

impl<T: Pod> ArrayGuard<'_, T> {
    /// A copy of element `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        self.raw.get(index)
    }

    /// Overwrites element `index`.
    ///
    /// # Errors
    ///
    /// [`IndexError`] past the end.
    pub fn set(&mut self, index: usize, value: T) -> Result<(), IndexError> {
        self.raw.set(index, value)
    }

    /// A copy of every element.
    pub fn to_vec(&self) -> Vec<T> {
        self.raw.to_vec()
    }

    /// Whether a previous holder died with the lock.
    pub fn owner_died(&self) -> bool {
        self.died
    }

    /// Declares the elements repaired.
    pub fn mark_consistent(&mut self) {
        self.guard.mark_consistent();
        self.died = false;
    }
}

impl<T: Pod> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayGuard")
            .field("owner_died", &self.died)
            .finish()
    }
}
