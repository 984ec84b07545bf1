//! Items to bytes and back: postcard, with a per-thread buffer so that a
//! put or get allocates nothing in the steady state.

use std::cell::Cell;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::BadMessage;

thread_local! {
    static BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer (a fresh one when a nested
/// call already holds it).
pub(crate) fn with_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = BUF.with(Cell::take);
    let r = f(&mut buf);
    // Keep a big buffer only while it is modest: one 64 MiB message should
    // not pin 64 MiB for the thread's life.
    if buf.capacity() <= 1 << 20 {
        BUF.with(|c| c.set(buf));
    }
    r
}

/// Serializes `value` into `buf` (cleared first).
pub(crate) fn encode<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    let out = postcard::to_extend(value, std::mem::take(buf)).map_err(|e| {
        // Handles inside an item (a Segment, a Lock…) refuse to serialize
        // outside mproc_shm::transfer: say so plainly.
        format!("{e} (queues carry data; pass mproc handles as process arguments)")
    })?;
    *buf = out;
    Ok(())
}

/// Deserializes a whole `T` from `bytes`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BadMessage> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(BadMessage::Decode(format!(
            "{} bytes left over after the item",
            rest.len()
        ))),
        Err(e) => Err(BadMessage::Decode(e.to_string())),
    }
}
