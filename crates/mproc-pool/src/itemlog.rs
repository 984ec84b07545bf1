//! A worker's item log: where it writes the result of each task of a run
//! (see the local backend's "Runs") before it starts the next one.
//!
//! One writer (the worker) and one reader (the parent's result thread)
//! share a byte ring: the worker's slot's region of one segment for the
//! whole pool (untouched pages cost nothing, and no descriptor is spent
//! per worker). The worker appends a record
//! and then publishes it by moving `tail`; the parent reads what is
//! published when the run ends, when the worker dies, or when the worker
//! sends a task's result the other way, and then moves `head`. Nothing
//! waits and nobody is woken: a record that does not fit (a full log, a
//! large result, a result holding handles) goes as a message on the result
//! queue instead, and the parent reads the log before it takes such a
//! message, so the tasks of a run arrive in order either way.
//!
//! ```text
//! (from the region's start)
//! 0: head (u64, the parent's)   8: tail (u64, the worker's)   64: data
//! a record, 8-byte aligned, never split by the end of the data:
//!   total: u32 | kind: u8 | 0 0 0 | seq: u64 | index: u32 | payload len: u32 | payload
//! kind PAD (header only) skips to the end of the data.
//! ```
//!
//! The positions only grow; a record sits at `position % capacity`. The
//! bytes are the worker's, so the parent checks every length and position
//! and stops at the first that does not add up.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use mproc_shm::Segment;
use serde::{Deserialize, Serialize};

const HEAD: usize = 0;
const TAIL: usize = 8;
const DATA: usize = 64;
/// The data's size: some runs' worth of small results.
const CAPACITY: usize = 32 << 10;
const HEADER: usize = 24;

/// The record kinds.
pub(crate) const OK: u8 = 0;
pub(crate) const PANICKED: u8 = 1;
pub(crate) const REFUSED: u8 = 2;
const PAD: u8 = 0xff;

/// A record read back; its payload is a copy, valid until the next record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    pub(crate) seq: u64,
    pub(crate) index: u32,
    pub(crate) kind: u8,
    pub(crate) payload: &'a [u8],
}

/// One worker's item log (a handle: the worker and the parent hold the
/// same segment).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct ItemLog {
    seg: Segment,
    /// Where its region starts.
    base: usize,
}

/// The bytes of one slot's region.
const REGION: usize = DATA + CAPACITY;

impl std::fmt::Debug for ItemLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemLog").finish_non_exhaustive()
    }
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl ItemLog {
    /// The segment for the logs of a pool of `workers`.
    pub(crate) fn segment(workers: usize) -> io::Result<Segment> {
        Segment::anonymous(workers.max(1) * REGION)
    }

    /// Slot `slot`'s log in `seg`.
    pub(crate) fn slot(seg: &Segment, slot: usize) -> ItemLog {
        ItemLog {
            seg: seg.clone(),
            base: slot.saturating_mul(REGION),
        }
    }

    /// Empties the log for the slot's next worker (the last one is gone,
    /// and what it wrote has been read).
    pub(crate) fn reset(&self) {
        for at in [HEAD, TAIL] {
            if let Some(w) = self.word(at) {
                w.store(0, Ordering::Release);
            }
        }
    }

    fn word(&self, at: usize) -> Option<&AtomicU64> {
        self.seg.atomic_u64(self.base.checked_add(at)?)
    }

    /// The data's capacity, if the segment has room for the region.
    fn capacity(&self) -> Option<usize> {
        let end = self.base.checked_add(REGION)?;
        (self.seg.len() >= end).then_some(CAPACITY)
    }

    fn write(&self, at: usize, bytes: &[u8]) -> bool {
        self.seg.write(self.base + DATA + at, bytes).is_ok()
    }

    fn read(&self, at: usize, buf: &mut [u8]) -> bool {
        self.seg.read(self.base + DATA + at, buf).is_ok()
    }

    /// Appends a record and publishes it; `false` when it does not fit
    /// now (nothing was published).
    pub(crate) fn append(&self, seq: u64, index: u32, kind: u8, payload: &[u8]) -> bool {
        let (Some(cap), Some(head), Some(tail)) =
            (self.capacity(), self.word(HEAD), self.word(TAIL))
        else {
            return false;
        };
        let need = align8(HEADER + payload.len());
        if need > cap / 4 {
            return false;
        }
        let head = head.load(Ordering::Acquire);
        let start = tail.load(Ordering::Relaxed);
        let Some(used) = start.checked_sub(head).map(|u| u as usize) else {
            return false;
        };
        let off = start as usize % cap;
        let pad = if off + need > cap { cap - off } else { 0 };
        if used + pad + need > cap {
            return false;
        }
        if pad > 0 {
            let mut h = [0u8; 8];
            h[..4].copy_from_slice(&(pad as u32).to_le_bytes());
            h[4] = PAD;
            let _ = self.write(off, &h);
        }
        let at = (off + pad) % cap;
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(&(need as u32).to_le_bytes());
        h[4] = kind;
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..20].copy_from_slice(&index.to_le_bytes());
        h[20..24].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        if !self.write(at, &h) || !self.write(at + HEADER, payload) {
            return false;
        }
        tail.store(start + (pad + need) as u64, Ordering::Release);
        true
    }

    /// Reads every published record, in order, and frees its room. `Err`
    /// at the first record that does not add up: what was read before it
    /// is handed on, what follows it (up to what is published) is dropped.
    pub(crate) fn drain(&self, mut f: impl FnMut(Entry<'_>)) -> Result<(), String> {
        let (Some(cap), Some(head_w), Some(tail_w)) =
            (self.capacity(), self.word(HEAD), self.word(TAIL))
        else {
            return Err("the item log is too small".into());
        };
        let tail = tail_w.load(Ordering::Acquire);
        let mut head = head_w.load(Ordering::Relaxed);
        let bad = |why: &str| Err(format!("the worker's item log is corrupt: {why}"));
        if tail < head || tail - head > cap as u64 {
            return bad("impossible positions");
        }
        let mut result = Ok(());
        // One copy of each payload out of the shared ring, into one buffer.
        let mut payload = Vec::new();
        while head < tail {
            let off = head as usize % cap;
            let left = (tail - head) as usize;
            let mut h = [0u8; 8];
            if off + 8 > cap || left < 8 || !self.read(off, &mut h) {
                result = bad("a record header past the end");
                break;
            }
            let total = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let kind = h[4];
            if total < 8 || total % 8 != 0 || total > left || off + total > cap {
                result = bad("a record of impossible length");
                break;
            }
            if kind == PAD {
                if off + total != cap {
                    result = bad("padding short of the end");
                    break;
                }
                head += total as u64;
                continue;
            }
            let mut rest = [0u8; HEADER - 8];
            if total < HEADER || !self.read(off + 8, &mut rest) {
                result = bad("a record shorter than its header");
                break;
            }
            let seq = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
            let index = u32::from_le_bytes(rest[8..12].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(rest[12..16].try_into().unwrap_or_default()) as usize;
            if align8(HEADER + len) != total {
                result = bad("a payload of impossible length");
                break;
            }
            payload.clear();
            payload.resize(len, 0);
            if !self.read(off + HEADER, &mut payload) {
                result = bad("a payload past the end");
                break;
            }
            f(Entry {
                seq,
                index,
                kind,
                payload: &payload,
            });
            head += total as u64;
        }
        if result.is_err() {
            head = tail;
        }
        head_w.store(head, Ordering::Release);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record as (seq, index, kind, payload).
    fn all(log: &ItemLog) -> Vec<(u64, u32, u8, Vec<u8>)> {
        let mut v = Vec::new();
        log.drain(|e| v.push((e.seq, e.index, e.kind, e.payload.to_vec())))
            .unwrap();
        v
    }

    /// Records come back in order, across the wrap of the ring many times
    /// over; a record that does not fit is refused, never half-written.
    #[test]
    fn records_come_back_in_order_across_the_wrap() {
        let seg = ItemLog::segment(3).unwrap();
        let log = ItemLog::slot(&seg, 1);
        let mut next = 0u32;
        for round in 0..200u32 {
            let n = 1 + round % 37;
            let mut sent = Vec::new();
            for _ in 0..n {
                let payload = vec![next as u8; (next % 300) as usize];
                if log.append(7, next, OK, &payload) {
                    sent.push((next, payload));
                    next += 1;
                } else {
                    break;
                }
            }
            let got = all(&log);
            assert_eq!(got.len(), sent.len(), "round {round}");
            for (e, (i, p)) in got.iter().zip(&sent) {
                assert_eq!((e.0, e.1, e.2, &e.3), (7, *i, OK, p));
            }
        }
        assert!(next > 2_000, "the ring wrapped many times: {next} records");
        // Full: refused until the reader frees room.
        let mut fitted = 0;
        while log.append(1, fitted, PANICKED, &[1; 64]) {
            fitted += 1;
        }
        assert!(fitted > 10);
        assert_eq!(all(&log).len(), fitted as usize);
        assert!(log.append(1, 0, REFUSED, b"room again"));
        // Too large for the log at all.
        assert!(!log.append(1, 1, OK, &vec![0; CAPACITY]));
        // The slots beside it saw nothing; a slot past the end takes
        // nothing.
        for other in [0, 2] {
            assert!(all(&ItemLog::slot(&seg, other)).is_empty());
        }
        assert!(!ItemLog::slot(&seg, 3).append(1, 0, OK, b"x"));
        assert!(ItemLog::slot(&seg, 3).drain(|_| {}).is_err());
        log.reset();
        assert!(all(&log).is_empty());
    }

    /// Garbage written by a confused worker is an error, never a panic or a
    /// read past the data.
    #[test]
    fn a_corrupt_log_is_an_error() {
        let seg = ItemLog::segment(1).unwrap();
        let log = ItemLog::slot(&seg, 0);
        assert!(log.append(3, 0, OK, b"fine"));
        // A header claiming more than was published.
        let tail = log.word(TAIL).unwrap().load(Ordering::Relaxed);
        assert!(log.write(0, &(4096u32).to_le_bytes()));
        assert!(log.drain(|_| {}).is_err());
        // Dropped: the log goes on after it.
        assert!(log.append(3, 1, OK, b"after"));
        assert_eq!(all(&log).len(), 1);
        // Impossible positions.
        log.word(TAIL)
            .unwrap()
            .store(tail + (1 << 40), Ordering::Relaxed);
        assert!(log.drain(|_| {}).is_err());
    }
}
