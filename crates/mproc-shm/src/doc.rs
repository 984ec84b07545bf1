//! `FileDoc<T>`: a document in a file, shared by every process that knows its
//! path, read under a shared lock and replaced atomically under an exclusive
//! one. The tutorials' "ticket office" that must never oversell.
//!
//! # Files
//!
//! For a document at `dir/name` three paths are used:
//!
//! - `dir/name` — the document itself, always complete;
//! - `dir/name.lock` — an empty file that carries the `flock` locks; it is
//!   never renamed, so every process locks the same inode;
//! - `dir/.name.tmp` — the next version while an update writes it.
//!
//! # Update protocol and crash story
//!
//! [`FileDoc::update`] takes the exclusive lock, reads and decodes the current
//! document, runs the caller's closure, encodes the result into the temp
//! file, `fsync`s it, `rename`s it over the document and `fsync`s the
//! directory, then unlocks. `rename` replaces the name in one step, so a
//! reader sees the old document or the new one, never a mix. If the writer is
//! killed at any point, the kernel drops its lock, the document is still the
//! old complete one (or the new complete one, past the rename), and at worst
//! a stale temp file remains; the next [`FileDoc::open`] or update removes or
//! overwrites it. Only the exclusive-lock holder ever touches the temp file,
//! so there is one temp name and no directory scan.
//!
//! Threads of one process serialize on a process-local mutex before taking
//! the file lock, since `flock` does not exclude two users of one descriptor.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::sys::{self, FlockKind};

/// How a document is encoded in its file.
pub trait Format {
    /// Encodes a document.
    ///
    /// # Errors
    ///
    /// A message when the value cannot be encoded.
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String>;

    /// Decodes a document; the whole input must be consumed.
    ///
    /// # Errors
    ///
    /// A message when the bytes are not a valid document.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String>;
}

/// Pretty-printed JSON through serde_json, the default format.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Format for Json {
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
        let mut v = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
        v.push(b'\n');
        Ok(v)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// Compact binary through postcard.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl Format for Postcard {
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
        postcard::to_stdvec(value).map_err(|e| e.to_string())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        match postcard::take_from_bytes(bytes) {
            Ok((v, [])) => Ok(v),
            Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Why a document operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum DocError {
    /// The file system refused (missing file, permissions, full disk…).
    Io(io::Error),
    /// The file does not hold a valid document; it was left as it is.
    Corrupt {
        /// The document's path.
        path: PathBuf,
        /// What the decoder said.
        message: String,
    },
    /// The new document could not be encoded; nothing was written.
    Encode(String),
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocError::Io(e) => write!(f, "document i/o failed: {e}"),
            DocError::Corrupt { path, message } => {
                write!(f, "document {} is corrupt: {message}", path.display())
            }
            DocError::Encode(m) => write!(f, "cannot encode document: {m}"),
        }
    }
}

impl std::error::Error for DocError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DocError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for DocError {
    fn from(e: io::Error) -> DocError {
        DocError::Io(e)
    }
}

/// A locked document in a file, replaced atomically on every update.
///
/// # Examples
///
/// The ticket office: buyers in any number of processes can never sell more
/// tickets than there are.
///
/// ```
/// use mproc_shm::FileDoc;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Office { count: u32 }
///
/// let dir = std::env::temp_dir().join(format!("mproc-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let doc = FileDoc::create(dir.join("tickets.json"), &Office { count: 1 })?;
///
/// let buy = |o: &mut Office| if o.count > 0 { o.count -= 1; true } else { false };
/// assert!(doc.update(buy)?);
/// assert!(!doc.update(buy)?);       // sold out: no oversell
/// assert_eq!(doc.read()?.count, 0);
///
/// doc.remove()?;
/// std::fs::remove_dir(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FileDoc<T, F = Json> {
    path: PathBuf,
    lock_path: PathBuf,
    tmp_path: PathBuf,
    lock: Mutex<File>,
    _t: PhantomData<fn(T, F) -> T>,
}

/// Holds the file lock; unlocks on drop (a panic in a closure included).
struct Held<'a> {
    file: parking_lot::MutexGuard<'a, File>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = sys::flock(self.file.as_fd(), FlockKind::Unlock);
    }
}

impl<T: Serialize + DeserializeOwned> FileDoc<T, Json> {
    /// Creates a new JSON document at `path` holding `initial`.
    ///
    /// # Errors
    ///
    /// `Io(AlreadyExists)` when the document exists; other I/O errors.
    pub fn create(path: impl AsRef<Path>, initial: &T) -> Result<FileDoc<T, Json>, DocError> {
        FileDoc::create_with_format(path, initial)
    }

    /// Opens an existing JSON document at `path`, cleaning up a temp file left
    /// by a writer that died.
    ///
    /// # Errors
    ///
    /// `Io(NotFound)` when there is no document.
    pub fn open(path: impl AsRef<Path>) -> Result<FileDoc<T, Json>, DocError> {
        FileDoc::open_with_format(path)
    }

    /// Opens the JSON document at `path`, creating it from `init()` when it
    /// does not exist. Safe to race from several processes: exactly one of
    /// them creates it.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn open_or_create(
        path: impl AsRef<Path>,
        init: impl FnOnce() -> T,
    ) -> Result<FileDoc<T, Json>, DocError> {
        FileDoc::open_or_create_with_format(path, init)
    }
}

impl<T: Serialize + DeserializeOwned, F: Format> FileDoc<T, F> {
    fn handle(path: &Path) -> Result<FileDoc<T, F>, DocError> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "document path has no file name",
            )
        })?;
        let with = |prefix: &str, suffix: &str| {
            let mut n = std::ffi::OsString::from(prefix);
            n.push(name);
            n.push(suffix);
            path.with_file_name(n)
        };
        let lock_path = with("", ".lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)?;
        Ok(FileDoc {
            path: path.to_owned(),
            tmp_path: with(".", ".tmp"),
            lock_path,
            lock: Mutex::new(lock),
            _t: PhantomData,
        })
    }

    fn hold(&self, kind: FlockKind) -> io::Result<Held<'_>> {
        let file = self.lock.lock();
        sys::flock(file.as_fd(), kind)?;
        Ok(Held { file })
    }

    /// [`FileDoc::create`] with a chosen [`Format`].
    ///
    /// # Errors
    ///
    /// As [`FileDoc::create`].
    pub fn create_with_format(
        path: impl AsRef<Path>,
        initial: &T,
    ) -> Result<FileDoc<T, F>, DocError> {
        let doc = FileDoc::handle(path.as_ref())?;
        {
            let _held = doc.hold(FlockKind::Exclusive)?;
            if doc.path.try_exists()? {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "document already exists",
                )
                .into());
            }
            doc.replace(initial)?;
        }
        Ok(doc)
    }

    /// [`FileDoc::open`] with a chosen [`Format`].
    ///
    /// # Errors
    ///
    /// As [`FileDoc::open`].
    pub fn open_with_format(path: impl AsRef<Path>) -> Result<FileDoc<T, F>, DocError> {
        let doc = FileDoc::handle(path.as_ref())?;
        {
            let _held = doc.hold(FlockKind::Exclusive)?;
            if !doc.path.try_exists()? {
                return Err(
                    io::Error::new(io::ErrorKind::NotFound, "document does not exist").into(),
                );
            }
            doc.clean_stale()?;
        }
        Ok(doc)
    }

    /// [`FileDoc::open_or_create`] with a chosen [`Format`].
    ///
    /// # Errors
    ///
    /// As [`FileDoc::open_or_create`].
    pub fn open_or_create_with_format(
        path: impl AsRef<Path>,
        init: impl FnOnce() -> T,
    ) -> Result<FileDoc<T, F>, DocError> {
        let doc = FileDoc::handle(path.as_ref())?;
        {
            let _held = doc.hold(FlockKind::Exclusive)?;
            if doc.path.try_exists()? {
                doc.clean_stale()?;
            } else {
                doc.replace(&init())?;
            }
        }
        Ok(doc)
    }

    fn clean_stale(&self) -> io::Result<()> {
        match fs::remove_file(&self.tmp_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn load(&self) -> Result<T, DocError> {
        let bytes = fs::read(&self.path)?;
        F::decode(&bytes).map_err(|message| DocError::Corrupt {
            path: self.path.clone(),
            message,
        })
    }

    /// Writes `value` to the temp file and renames it over the document.
    /// The caller holds the exclusive lock.
    fn replace(&self, value: &T) -> Result<(), DocError> {
        let bytes = F::encode(value).map_err(DocError::Encode)?;
        let mut tmp = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp_path)?;
        tmp.write_all(&bytes)?;
        tmp.sync_all()?;
        drop(tmp);
        fs::rename(&self.tmp_path, &self.path)?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sys::fsync_dir(dir)?;
        Ok(())
    }

    /// A copy of the document, read under the shared lock.
    ///
    /// # Errors
    ///
    /// `Io` when the file cannot be read; `Corrupt` when it does not decode.
    pub fn read(&self) -> Result<T, DocError> {
        let _held = self.hold(FlockKind::Shared)?;
        self.load()
    }

    /// Reads the document, lets `f` change it, and replaces the file with the
    /// result, all under the exclusive lock. Returns what `f` returned.
    ///
    /// If `f` panics, nothing is written and the lock is released.
    ///
    /// # Errors
    ///
    /// `Corrupt` when the current file does not decode (it is left as it is);
    /// `Encode` or `Io` when the new version cannot be written (the old one
    /// stays).
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, DocError> {
        let _held = self.hold(FlockKind::Exclusive)?;
        let mut doc = self.load()?;
        let r = f(&mut doc);
        self.replace(&doc)?;
        Ok(r)
    }

    /// Like [`update`](FileDoc::update), but writes only when `f` returns
    /// `Ok`; an `Err` leaves the file untouched and is handed back.
    ///
    /// # Errors
    ///
    /// As [`update`](FileDoc::update), in the outer result.
    pub fn try_update<R, E>(
        &self,
        f: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<Result<R, E>, DocError> {
        let _held = self.hold(FlockKind::Exclusive)?;
        let mut doc = self.load()?;
        match f(&mut doc) {
            Ok(r) => {
                self.replace(&doc)?;
                Ok(Ok(r))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Replaces the whole document with `value`, under the exclusive lock.
    ///
    /// # Errors
    ///
    /// `Encode` or `Io`; the old document stays on error.
    pub fn write(&self, value: &T) -> Result<(), DocError> {
        let _held = self.hold(FlockKind::Exclusive)?;
        self.replace(value)
    }

    /// The document's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the document, its lock file and any temp file.
    ///
    /// # Errors
    ///
    /// The first I/O error other than "not found".
    pub fn remove(self) -> io::Result<()> {
        let held = self.hold(FlockKind::Exclusive)?;
        let mut result = Ok(());
        for p in [&self.tmp_path, &self.path, &self.lock_path] {
            match fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound && result.is_ok() => result = Err(e),
                _ => {}
            }
        }
        drop(held);
        result
    }
}

impl<T, F> fmt::Debug for FileDoc<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDoc").field("path", &self.path).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Doc {
        n: i64,
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mproc-shm-unit-{tag}-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn corrupt_file_is_an_error_and_left_alone() {
        let d = dir("corrupt");
        let p = d.join("doc.json");
        let doc = FileDoc::create(&p, &Doc { n: 1 }).unwrap();
        fs::write(&p, b"{\"n\": 1").unwrap();
        assert!(matches!(doc.read(), Err(DocError::Corrupt { .. })));
        assert!(matches!(
            doc.update(|d| d.n += 1),
            Err(DocError::Corrupt { .. })
        ));
        assert_eq!(fs::read(&p).unwrap(), b"{\"n\": 1");
        doc.remove().unwrap();
        fs::remove_dir(&d).unwrap();
    }

    #[test]
    fn create_open_and_stale_temp() {
        let d = dir("stale");
        let p = d.join("doc.json");
        assert!(
            matches!(FileDoc::<Doc>::open(&p), Err(DocError::Io(e)) if e.kind() == io::ErrorKind::NotFound)
        );
        let doc = FileDoc::create(&p, &Doc { n: 5 }).unwrap();
        assert!(
            matches!(FileDoc::create(&p, &Doc { n: 0 }), Err(DocError::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists)
        );
        fs::write(d.join(".doc.json.tmp"), b"{\"n\": 9").unwrap();
        let again = FileDoc::<Doc>::open(&p).unwrap();
        assert!(!d.join(".doc.json.tmp").exists());
        assert_eq!(again.read().unwrap(), Doc { n: 5 });
        assert_eq!(doc.try_update(|_| Err::<(), _>("no")).unwrap(), Err("no"));
        assert_eq!(again.read().unwrap(), Doc { n: 5 });
        drop(again);
        doc.remove().unwrap();
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        fs::remove_dir(&d).unwrap();
    }

    #[test]
    fn postcard_format_round_trips() {
        let d = dir("postcard");
        let p = d.join("doc.bin");
        let doc = FileDoc::<Doc, Postcard>::create_with_format(&p, &Doc { n: -3 }).unwrap();
        doc.update(|d| d.n *= 2).unwrap();
        assert_eq!(doc.read().unwrap(), Doc { n: -6 });
        doc.remove().unwrap();
        fs::remove_dir(&d).unwrap();
    }
}
