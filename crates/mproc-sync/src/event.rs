//! `Event`: a flag that processes wait for.
//!
//! # Layout (three 32-bit words)
//!
//! Word 0 is the kind `"EVNT"`, word 1 the state — bit 0 the flag, bits
//! 1–31 a generation that every `set` of a clear event bumps — and word 2
//! the number of sleepers.
//!
//! `set` turns a clear state `g << 1` into `(g + 1) << 1 | 1` in one
//! compare-exchange (`SeqCst`) and wakes every sleeper when word 2 says
//! there may be any; `clear` drops bit 0 only. A waiter reads the state,
//! sleeps while it is unchanged, and returns `true` once the flag is set
//! *or the generation moved*: a `set` quickly followed by `clear` still
//! releases every waiter that was already blocked, as in CPython (where
//! `set` wakes its waiters whatever happens next).
//!
//! # Crash story
//!
//! A sleeper killed in `wait` leaves word 2 one too high: later `set`s make
//! one spare wake call. A process killed in `set` after the state changed
//! and before its wake call (kill point `event.set`) costs the sleepers at
//! most one [`SLICE`](crate::wait::SLICE): they re-read the state when
//! their slice ends. Nothing depends on who is alive.

use std::fmt;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mproc_shm::fault;

use crate::block::{block_serde, Block, KIND_EVENT};
use crate::wait::{self, WaitResult};

const STATE: usize = 1;
const SLEEPERS: usize = 2;
const FLAG: u32 = 1;

/// Python's `multiprocessing.Event`.
///
/// # Examples
///
/// ```
/// use mproc_sync::Event;
/// use std::time::Duration;
///
/// let ready = Event::new()?;
/// assert!(!ready.wait_timeout(Duration::from_millis(1)));
/// ready.set();
/// ready.wait();
/// assert!(ready.is_set());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    block: Block,
}

block_serde!(Event, KIND_EVENT, |b: &Block| b.len() == 3);

impl Event {
    /// A new event, not set.
    ///
    /// # Errors
    ///
    /// The OS error when the segment cannot be created.
    pub fn new() -> io::Result<Event> {
        Ok(Event {
            block: Block::new(KIND_EVENT, 3)?,
        })
    }

    fn from_block(block: Block) -> Event {
        Event { block }
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let state = self.block.word(STATE);
        let mut cur = state.load(Ordering::SeqCst);
        loop {
            if cur & FLAG != 0 {
                return;
            }
            let next = ((cur >> 1).wrapping_add(1) << 1) | FLAG;
            match state.compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        fault::point("event.set");
        if self.block.word(SLEEPERS).load(Ordering::SeqCst) > 0 {
            wait::wake_all(state);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.block.word(STATE).fetch_and(!FLAG, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.block.word(STATE).load(Ordering::Acquire) & FLAG != 0
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let state = self.block.word(STATE);
        let start = state.load(Ordering::Acquire);
        if start & FLAG != 0 {
            return true;
        }
        // Set now, or set since we started waiting (and maybe cleared).
        let released = |s: u32| s & FLAG != 0 || s >> 1 != start >> 1;
        if wait::spin(state, start) && released(state.load(Ordering::Acquire)) {
            return true;
        }
        let sleepers = self.block.word(SLEEPERS);
        loop {
            let r = wait::sleep_counted(state, sleepers, start, deadline);
            if released(state.load(Ordering::Acquire)) {
                return true;
            }
            if r == WaitResult::TimedOut {
                return false;
            }
        }
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Blocks until the flag is set or `timeout` passes. Returns `true`
    /// when it was set while this call waited (even if cleared again since),
    /// `false` on timeout — CPython's `wait(timeout)`.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(wait::deadline(timeout))
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("is_set", &self.is_set())
            .finish()
    }
}
