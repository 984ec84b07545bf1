//! `BuildId`: which build of the program a process runs.

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::sys;

/// The identity of the running binary: its linker build id (ELF
/// `.note.gnu.build-id` on Linux, Mach-O `LC_UUID` on macOS), or — for a
/// binary linked without one — a hash of the executable file. Two processes
/// with the same `BuildId` run the same machine code, so a function's
/// offset names the same function in both.
///
/// # Examples
///
/// ```
/// let id = mproc_call::BuildId::current();
/// assert_eq!(id, mproc_call::BuildId::current());
/// println!("this build: {id}");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BuildId([u8; 16]);

impl BuildId {
    /// The running binary's id, computed once per process.
    pub fn current() -> BuildId {
        static CURRENT: OnceLock<BuildId> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let bytes = sys::embedded_build_id()
                .filter(|b| !b.is_empty())
                .or_else(|| sys::executable_bytes().ok())
                .unwrap_or_default();
            BuildId::digest(&bytes)
        })
    }

    /// 128 bits of `bytes`: taken as they are when they are an id of at
    /// most 16 bytes, else folded with two FNV-1a lanes.
    fn digest(bytes: &[u8]) -> BuildId {
        let mut out = [0u8; 16];
        if bytes.len() <= 16 {
            out[..bytes.len()].copy_from_slice(bytes);
            return BuildId(out);
        }
        let fnv = |seed: u64| {
            bytes.iter().fold(seed, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        };
        out[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_le_bytes());
        out[8..].copy_from_slice(&fnv(0x8422_2325_cbf2_9ce4).to_le_bytes());
        BuildId(out)
    }

    /// An id made up from bytes, for tests of what another build sends.
    #[doc(hidden)]
    pub fn from_bytes(bytes: [u8; 16]) -> BuildId {
        BuildId(bytes)
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({self})")
    }
}
