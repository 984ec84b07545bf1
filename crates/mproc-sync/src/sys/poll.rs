//! The portable wait layer: a bounded sleep-poll, no kernel wait queue.
//! Forced with the `portable-wait` feature so the fallback is tested on Linux.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use super::Sleep;

/// Sleeps in growing steps while `*word == expected`.
pub(crate) fn wait_on(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Sleep {
    super::poll_wait(word, expected, deadline)
}

/// Nothing to do: pollers notice changes by themselves.
pub(crate) fn wake(_word: &AtomicU32, _n: u32) {}
