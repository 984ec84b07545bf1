//! What the examples share: their error type and a small random pause.

#![allow(dead_code)]

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A pseudo-random number from the clock and pid (the examples need no
/// more than a different pause per process).
pub(crate) fn jitter(max: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (t ^ (u64::from(std::process::id()) * 0x9e37_79b9)) % max.max(1)
}
