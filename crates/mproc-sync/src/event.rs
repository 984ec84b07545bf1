//! `Event`: a flag that processes wait for.
//!
//! # Layout (three 32-bit words)
//!
//! Word 0 is the kind `"EVNT"`, word 1 the flag (0 or 1), word 2 the number
//! of sleepers. `set` stores 1 (`SeqCst`) and wakes every sleeper when word 2
//! says there may be any; `wait` sleeps on word 1 while it reads 0. A sleeper
//! killed in `wait` leaves word 2 one too high: later `set`s make one spare
//! wake call. Nothing else depends on who is alive.

use std::fmt;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::block::{block_serde, Block, KIND_EVENT};
use crate::wait::{self, WaitResult};

const FLAG: usize = 1;
const SLEEPERS: usize = 2;

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

block_serde!(Event, KIND_EVENT);

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
        self.block.word(FLAG).store(1, Ordering::SeqCst);
        if self.block.word(SLEEPERS).load(Ordering::SeqCst) > 0 {
            wait::wake_all(self.block.word(FLAG));
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.block.word(FLAG).store(0, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.block.word(FLAG).load(Ordering::Acquire) != 0
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let flag = self.block.word(FLAG);
        if flag.load(Ordering::Acquire) != 0 || wait::spin(flag, 0) {
            return true;
        }
        let sleepers = self.block.word(SLEEPERS);
        loop {
            let r = wait::sleep_counted(flag, sleepers, 0, deadline);
            if flag.load(Ordering::Acquire) != 0 {
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

    /// Blocks until the flag is set or `timeout` passes; returns the flag.
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
