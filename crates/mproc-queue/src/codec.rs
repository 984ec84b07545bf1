//! Items to bytes and back: postcard, with a per-thread buffer so that a
//! put or get allocates nothing in the steady state.
//!
//! # Items that hold handles
//!
//! An item's first byte says what follows. `0`: the value's postcard. `1`:
//! the value holds mproc handles — a [`Buf`](mproc_shm::Buf), a segment,
//! a lock, a queue — whose descriptors shared memory cannot carry; they
//! wait in the sender's handoff table ([`mproc_shm::handoff`]) and the
//! item carries a ticket for them, then the value's postcard as
//! [`mproc_shm::transfer`] writes it. The taker fetches the descriptors
//! from the sender, so **the sender must still be running when the item
//! is taken** (the taker gets [`BadMessage::Handles`] otherwise), and an
//! item never taken keeps its descriptors open in the sender until it
//! ends — as CPython's queues do for the connections and sockets put in
//! them.
//!
//! # What postcard cannot carry
//!
//! postcard is compact because it is not self-describing: the reader must
//! know the shape of what comes next. Two kinds of serde type break that:
//!
//! - types that deserialize with `deserialize_any` — `serde_json::Value`,
//!   `#[serde(untagged)]` enums, `#[serde(flatten)]` fields — cannot be read
//!   back at all;
//! - fields skipped only sometimes (`skip_serializing_if`) shift every byte
//!   after them, so the reader misreads or fails.
//!
//! Encode such values first (`serde_json::to_string`, say) and send the
//! string, or drop the conditional skip. Every decode error names the type
//! and, for these cases, says so; and in debug builds `put` and `send`
//! check that each value of up to 1 MiB encoded reads back as itself
//! (decode, re-encode, compare)
//! and refuse one that does not, at the sender rather than at the receiver.

use std::cell::Cell;

use mproc_shm::handoff::{self, Ticket};
use mproc_shm::transfer;
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

const NOT_SELF_DESCRIBING: &str = "items travel as postcard, which is not self-describing: \
     types read with deserialize_any (serde_json::Value, untagged enums, flatten) cannot be read \
     back, and fields skipped with skip_serializing_if shift what follows; encode such a value \
     first (serde_json::to_string) or drop the conditional skip";

/// The first byte of an item: its bytes are the value's postcard.
const PLAIN: u8 = 0;
/// The first byte of an item that holds mproc handles: a handoff
/// [`Ticket`] for its descriptors, then the value's postcard (see the
/// module docs).
const HANDLES: u8 = 1;

/// Serializes `value` into `buf` (cleared first); in debug builds, checks
/// that it reads back as itself (see the module docs). A value holding
/// handles leaves its descriptors in this process's handoff table under
/// the returned ticket: a caller whose put then fails must
/// [`handoff::cancel`] it.
pub(crate) fn encode<T: Serialize + DeserializeOwned>(
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<Option<Ticket>, String> {
    buf.clear();
    buf.push(PLAIN);
    match postcard::to_extend(value, std::mem::take(buf)) {
        Ok(out) => {
            *buf = out;
            if cfg!(debug_assertions) && buf.len() <= ROUND_TRIP_CHECK_MAX {
                round_trips::<T>(&buf[1..])?;
            }
            Ok(None)
        }
        // A handle (a Buf, a Segment, a Lock…) serializes only inside a
        // transfer: encode it that way and hand its descriptors off.
        Err(plain) => {
            let msg = transfer::encode(value).map_err(|e| {
                format!(
                    "cannot serialize a {}: {e} (plainly: {plain})",
                    std::any::type_name::<T>()
                )
            })?;
            let ticket = handoff::export(msg.fds).map_err(|e| {
                format!(
                    "cannot hand off the handles of a {}: {e}",
                    std::any::type_name::<T>()
                )
            })?;
            buf.clear();
            buf.push(HANDLES);
            let mut out =
                postcard::to_extend(&ticket, std::mem::take(buf)).map_err(|e| e.to_string())?;
            out.extend_from_slice(&msg.bytes);
            *buf = out;
            Ok(Some(ticket))
        }
    }
}

/// Debug builds check that a value reads back as itself at the sender when
/// it encodes to at most this many bytes (1 MiB): the check costs a decode
/// and an encode, which for a large value is seconds of an unoptimised
/// build; the receiver still reports a value that does not read back.
const ROUND_TRIP_CHECK_MAX: usize = 1 << 20;

/// Whether `bytes` decode to a value that encodes to `bytes` again.
fn round_trips<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<(), String> {
    let name = std::any::type_name::<T>();
    let why = match postcard::take_from_bytes::<T>(bytes) {
        Ok((back, [])) => match postcard::to_allocvec(&back) {
            Ok(again) if again == bytes => return Ok(()),
            _ => "it reads back as another value".to_owned(),
        },
        Ok((_, rest)) => format!("{} bytes are left over when it is read back", rest.len()),
        Err(e) => format!("reading it back fails: {e}"),
    };
    Err(format!(
        "a {name} does not read back as itself ({why}; checked at the sender): \
         {NOT_SELF_DESCRIBING}"
    ))
}

/// Deserializes a whole `T` from an item's bytes (fetching the
/// descriptors of an item that holds handles from its sender).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BadMessage> {
    let name = std::any::type_name::<T>();
    match bytes.split_first() {
        Some((&PLAIN, value)) => decode_plain(value),
        Some((&HANDLES, rest)) => {
            let (ticket, value) = postcard::take_from_bytes::<Ticket>(rest)
                .map_err(|e| BadMessage::Decode(format!("a {name} with a bad ticket: {e}")))?;
            let fds = handoff::import(&ticket)
                .map_err(|e| BadMessage::Handles(format!("a {name}: {e}")))?;
            transfer::decode(transfer::Message {
                bytes: value.to_vec(),
                fds,
            })
            .map_err(|e| BadMessage::Decode(format!("cannot read a {name}: {e}")))
        }
        _ => Err(BadMessage::Decode(format!(
            "a {name} that is not an item of this queue (an unknown first byte)"
        ))),
    }
}

fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BadMessage> {
    let name = std::any::type_name::<T>();
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(BadMessage::Decode(format!(
            "{} bytes left over after a {name} ({NOT_SELF_DESCRIBING})",
            rest.len()
        ))),
        Err(postcard::Error::WontImplement) => Err(BadMessage::Decode(format!(
            "cannot read a {name}: {NOT_SELF_DESCRIBING}"
        ))),
        // A type that does not round-trip is the usual cause; say so.
        Err(e) => Err(BadMessage::Decode(format!(
            "cannot read a {name}: {e}; if the sender's value is fine, note that \
             {NOT_SELF_DESCRIBING}"
        ))),
    }
}
