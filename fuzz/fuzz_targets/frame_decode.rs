//! Feeds the queue's frame decoder two kinds of input: raw bytes, and
//! well-formed streams with bits flipped. Flipped bits, impossible lengths
//! and torn chunks must come back as `FrameError`s or abandoned messages,
//! never as a panic, an out-of-bounds read, or an allocation sized by a
//! length nobody checked; an untouched stream must come back whole.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run frame_decode
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use mproc_queue::frame::{decode_stream, encode_stream};

fuzz_target!(|input: &[u8]| {
    let [k, mode, rest @ ..] = input else {
        return;
    };
    // The ring's chunk limit, as rings of different capacities have: 1 B to 64 KiB.
    let max_chunk = 1usize << (k % 17);
    if mode & 1 == 0 {
        if let Ok((messages, _abandoned)) = decode_stream(rest, max_chunk) {
            let total: usize = messages.iter().map(Vec::len).sum();
            assert!(total <= rest.len());
        }
        return;
    }
    // Messages cut from `rest` at every 0xff byte, then `mode >> 1` bit
    // flips at positions taken from the message bytes themselves.
    let messages: Vec<&[u8]> = rest.split(|&b| b == 0xff).collect();
    let mut stream = encode_stream(messages.iter().copied(), max_chunk);
    let flips = usize::from(mode >> 1);
    for i in 0..flips.min(rest.len()) {
        if stream.is_empty() {
            break;
        }
        let at = usize::from(rest[i]) * 31 % stream.len();
        stream[at] ^= 1 << (rest[i] % 8);
    }
    match decode_stream(&stream, max_chunk) {
        Ok((got, abandoned)) if flips == 0 || rest.is_empty() => {
            assert_eq!(abandoned, 0);
            assert_eq!(got, messages);
        }
        _ => {}
    }
});
