//! Where a child leaves its panic message for the parent: a slot of a
//! shared arena.
//!
//! Each process keeps one anonymous segment of [`SLOTS`] slots of
//! [`SLOT_LEN`] bytes; a start takes a free slot and the child's handle gives
//! it back when it drops. A slot is a `u32` length, then the message
//! (truncated). The length is stored last, with release ordering, so the
//! parent reads either nothing or a whole message; the parent reads only
//! after reaping the child. When every slot is taken, a start gets a segment
//! of its own, as before the arena existed: slower, never wrong.
//!
//! The arena lives as long as the process (one descriptor, like the
//! lifeline). It belongs to the process that made it (a [`PerProcess`]): a
//! forked child sees its parent's arena in its copy of memory and makes its
//! own on first use, so the two never hand out the same slot.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use mproc_shm::Segment;
use serde::{Deserialize, Serialize};

use crate::state::lock;
use crate::state::PerProcess;

/// Slots per arena.
const SLOTS: usize = 128;
/// Bytes per slot: a `u32` length and up to `SLOT_LEN - 4` bytes of message.
pub(crate) const SLOT_LEN: usize = 2048;

/// The child's view: a segment and the offset of its slot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    seg: Segment,
    base: usize,
}

/// The parent's view: the report and the slot to give back.
#[derive(Debug)]
pub(crate) struct ReportSlot {
    report: Report,
    /// (arena owner pid, slot index) when the slot came from an arena.
    slot: Option<(u32, u32)>,
}

struct Arena {
    seg: Segment,
    free: Vec<u32>,
}

static ARENA: PerProcess<Mutex<Option<Arena>>> = PerProcess::new();

impl ReportSlot {
    /// An empty report for a child about to start.
    pub(crate) fn new() -> io::Result<ReportSlot> {
        let me = crate::sys::my_pid();
        let mut arena = lock(ARENA.get(|| Mutex::new(None)));
        if arena.is_none() {
            *arena = Some(Arena {
                seg: Segment::anonymous(SLOTS * SLOT_LEN)?,
                free: (0..SLOTS as u32).rev().collect(),
            });
        }
        let report = match arena.as_mut().and_then(|a| Some((a.free.pop()?, a))) {
            Some((i, a)) => ReportSlot {
                report: Report {
                    seg: a.seg.clone(),
                    base: i as usize * SLOT_LEN,
                },
                slot: Some((me, i)),
            },
            None => {
                drop(arena);
                ReportSlot {
                    report: Report {
                        seg: Segment::anonymous(SLOT_LEN)?,
                        base: 0,
                    },
                    slot: None,
                }
            }
        };
        if let Some(len) = report.report.seg.atomic_u32(report.report.base) {
            len.store(0, Ordering::Relaxed);
        }
        Ok(report)
    }

    /// What the child gets.
    pub(crate) fn report(&self) -> &Report {
        &self.report
    }

    /// The message the child left, if any.
    pub(crate) fn read(&self) -> Option<String> {
        let Report { seg, base } = &self.report;
        let n = seg.atomic_u32(*base)?.load(Ordering::Acquire) as usize;
        if n == 0 || n > SLOT_LEN - 4 {
            return None;
        }
        let mut buf = vec![0u8; n];
        seg.read(base + 4, &mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }
}

impl Drop for ReportSlot {
    fn drop(&mut self) {
        // A slot inherited through fork belongs to the parent's arena.
        let Some((_, i)) = self.slot.filter(|s| s.0 == crate::sys::my_pid()) else {
            return;
        };
        if let Some(arena) = ARENA.existing() {
            if let Some(a) = lock(arena).as_mut() {
                a.free.push(i);
            }
        }
    }
}

impl Report {
    /// In the child: leaves `message` for the parent.
    pub(crate) fn write(&self, message: &str) {
        let bytes = message.as_bytes();
        let n = bytes.len().min(SLOT_LEN - 4);
        let _ = self.seg.write(self.base + 4, &bytes[..n]);
        if let Some(len) = self.seg.atomic_u32(self.base) {
            len.store(n as u32, Ordering::Release);
        }
    }
}

/// Reports why a child cannot run its function, just before it exits with
/// [`BOOT_FAILED`](crate::boot::BOOT_FAILED) or a refusal code: on stderr —
/// the one channel a child that has not reached user code has; a spawned or
/// forkserver child has no `tracing` subscriber of its own — and, with the
/// `tracing` feature, as an error event too (a forked child inherits its
/// parent's subscriber).
pub(crate) fn fatal(message: &str) {
    eprintln!("mproc: {message}");
    #[cfg(feature = "tracing")]
    tracing::error!(target: "mproc::process", pid = std::process::id(), "{message}");
}
