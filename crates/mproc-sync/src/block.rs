//! `Block`: a primitive's run of 32-bit words at an offset of a segment.
//!
//! Word 0 of every block holds the primitive's kind tag, so that a handle
//! received from another process is checked against the type it is decoded
//! as. The other words are the primitive's own; their meaning is documented
//! next to each primitive. A block starts 8-byte aligned, so that pairs of
//! words at even indices can be one `u64` ([`Block::wide`]).
//!
//! **Shared numbers are untrusted.** A handle's bytes come from another
//! process: decoding one checks the kind tag, that the offset is aligned and
//! the block inside its segment, and that the word count is exactly the one
//! its type uses (a forged `{offset 4092, len 1}` of a 4 KiB segment is an
//! error, never a lock that reaches past the mapping).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64};

use mproc_shm::Segment;
use serde::{Deserialize, Serialize};

/// A validated run of `len` words in a segment.
#[derive(Clone)]
pub(crate) struct Block {
    seg: Segment,
    offset: usize,
    len: usize,
}

impl Block {
    /// A new anonymous segment holding `len` zeroed words, tagged `kind`.
    pub(crate) fn new(kind: u32, len: usize) -> io::Result<Block> {
        let seg = Segment::anonymous(len * 4)?;
        Block::init(seg, 0, kind, len)
    }

    /// Tags `len` words at `offset` of `seg` as `kind` (they must be zero).
    pub(crate) fn init(seg: Segment, offset: usize, kind: u32, len: usize) -> io::Result<Block> {
        let b = Block::view(seg, offset, len)?;
        b.word(0).store(kind, std::sync::atomic::Ordering::Release);
        Ok(b)
    }

    /// Views `len` words at `offset` of `seg`, checking the kind tag.
    pub(crate) fn attach(seg: Segment, offset: usize, kind: u32, len: usize) -> io::Result<Block> {
        let b = Block::view(seg, offset, len)?;
        let found = b.word(0).load(std::sync::atomic::Ordering::Acquire);
        if found != kind {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "shared block holds {} where {} was expected",
                    kind_name(found),
                    kind_name(kind)
                ),
            ));
        }
        Ok(b)
    }

    fn view(seg: Segment, offset: usize, len: usize) -> io::Result<Block> {
        let fits = len
            .checked_mul(4)
            .and_then(|n| n.checked_add(offset))
            .is_some_and(|end| end <= seg.len());
        if len == 0 || offset % 8 != 0 || !fits {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "block does not fit in its segment",
            ));
        }
        Ok(Block { seg, offset, len })
    }

    /// Word `i` of the block.
    ///
    /// # Panics
    ///
    /// Never for `i < len`, which every caller in this crate guarantees by
    /// its fixed layout (a debug assertion checks it).
    #[inline]
    pub(crate) fn word(&self, i: usize) -> &AtomicU32 {
        debug_assert!(i < self.len);
        // SAFETY: (1) `view` checked that offset + 4 * len is inside the
        // mapping and offset is 4-aligned (the base is page-aligned), and
        // callers pass i < len; (2) the mapping lives as long as `self.seg`,
        // which the returned borrow of `self` keeps alive; (3) AtomicU32
        // tolerates concurrent access from other processes.
        unsafe { AtomicU32::from_ptr(self.seg.as_ptr().add(self.offset + 4 * i).cast()) }
    }

    /// Words `i` and `i + 1` of the block as one 64-bit atomic.
    ///
    /// # Panics
    ///
    /// Never for an even `i` with `i + 1 < len`, which every caller in this
    /// crate guarantees by its fixed layout (a debug assertion checks it).
    #[inline]
    pub(crate) fn wide(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i % 2 == 0 && i + 1 < self.len);
        // SAFETY: (1) `view` checked that offset + 4 * len is inside the
        // mapping and that offset is 8-aligned (the base is page-aligned),
        // and callers pass an even i with i + 1 < len, so the 8 bytes are
        // inside and 8-aligned; (2) the mapping lives as long as `self.seg`;
        // (3) AtomicU64 tolerates concurrent access from other processes.
        unsafe { AtomicU64::from_ptr(self.seg.as_ptr().add(self.offset + 4 * i).cast()) }
    }

    /// The number of words.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("offset", &self.offset)
            .field("words", &self.len)
            .finish()
    }
}

/// A block as it travels: segment, offset, length.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireBlock {
    pub(crate) seg: Segment,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

impl Block {
    pub(crate) fn to_wire(&self) -> WireBlock {
        WireBlock {
            seg: self.seg.clone(),
            offset: self.offset as u64,
            len: self.len as u32,
        }
    }

    /// The block a handle names, checked: kind tag, alignment, bounds, and
    /// `len_ok(len)` — the word count its type uses.
    pub(crate) fn from_wire(
        w: WireBlock,
        kind: u32,
        len_ok: impl FnOnce(&Block) -> bool,
    ) -> io::Result<Block> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let offset = usize::try_from(w.offset).map_err(|_| bad("offset out of range"))?;
        let block = Block::attach(w.seg, offset, kind, w.len as usize)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if !len_ok(&block) {
            return Err(bad(&format!(
                "{} handle names {} words, which is not its layout",
                kind_name(kind),
                block.len
            )));
        }
        Ok(block)
    }
}

pub(crate) const KIND_LOCK: u32 = u32::from_le_bytes(*b"LOCK");
pub(crate) const KIND_RLOCK: u32 = u32::from_le_bytes(*b"RLCK");
pub(crate) const KIND_SEMAPHORE: u32 = u32::from_le_bytes(*b"SEMA");
pub(crate) const KIND_EVENT: u32 = u32::from_le_bytes(*b"EVNT");
pub(crate) const KIND_CONDITION: u32 = u32::from_le_bytes(*b"COND");
pub(crate) const KIND_BARRIER: u32 = u32::from_le_bytes(*b"BARR");

fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_LOCK => "a Lock",
        KIND_RLOCK => "an RLock",
        KIND_SEMAPHORE => "a Semaphore",
        KIND_EVENT => "an Event",
        KIND_CONDITION => "a Condition",
        KIND_BARRIER => "a Barrier",
        0 => "nothing (zeroed memory)",
        _ => "unknown primitive",
    }
}

/// Implements Serialize / Deserialize for a handle type whose only field is
/// `block: Block`, checking the kind and the layout on arrival: `$len_ok`
/// is a `fn(&Block) -> bool` that accepts the word counts of the type.
macro_rules! block_serde {
    ($ty:ty, $kind:expr, $len_ok:expr) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.block.to_wire().serialize(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let w = $crate::block::WireBlock::deserialize(d)?;
                let block = $crate::block::Block::from_wire(w, $kind, $len_ok)
                    .map_err(mproc_shm::transfer::de_error)?;
                Ok(Self::from_block(block))
            }
        }
    };
}
pub(crate) use block_serde;
