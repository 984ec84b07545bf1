//! `Block`: a primitive's run of 32-bit words at an offset of a segment.
//!
//! Word 0 of every block holds the primitive's kind tag, so that a handle
//! received from another process is checked against the type it is decoded
//! as. The other words are the primitive's own; their meaning is documented
//! next to each primitive.

use std::fmt;
use std::io;
use std::sync::atomic::AtomicU32;

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
        if len == 0 || offset % 4 != 0 || !fits {
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

    pub(crate) fn from_wire(w: WireBlock, kind: u32) -> io::Result<Block> {
        let offset = usize::try_from(w.offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "offset out of range"))?;
        Block::attach(w.seg, offset, kind, w.len as usize)
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
/// `block: Block` (plus what `$build` adds), checking the kind on arrival.
macro_rules! block_serde {
    ($ty:ty, $kind:expr) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.block.to_wire().serialize(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let w = $crate::block::WireBlock::deserialize(d)?;
                let block = $crate::block::Block::from_wire(w, $kind)
                    .map_err(mproc_shm::transfer::de_error)?;
                Ok(Self::from_block(block))
            }
        }
    };
}
pub(crate) use block_serde;
