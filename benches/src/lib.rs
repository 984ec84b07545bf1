//! Shared pieces of mproc's criterion benches. The benches themselves are
//! the `[[bench]]` targets of this package; `cargo xtask bench` runs them
//! next to their Python counterparts in `python/`.

use std::path::PathBuf;

/// A scratch directory for a bench, unique to this process, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates the directory under the system temp dir.
    pub fn new(tag: &str) -> std::io::Result<Scratch> {
        let path = std::env::temp_dir().join(format!("mproc-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Scratch { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
