//! Chunk headers: how a message is cut into pieces in the ring, and how a
//! piece is checked before anything is believed.
//!
//! A chunk is an 8-byte header, then `len` bytes of payload, padded to a
//! multiple of 8. The header is two little-endian `u32`s:
//!
//! ```text
//! word 0: len (bits 0..24) | flags (bits 24..32): FIRST = 1, LAST = 2
//! word 1: check = mix(word 0)
//! ```
//!
//! A message is one chunk flagged `FIRST | LAST`, or a `FIRST` chunk, zero or
//! more middle chunks and a `LAST` chunk. The check word catches flipped bits
//! in a header; a length is believed only when it is at most the ring's
//! largest chunk *and* the bytes are really there, so nothing is ever
//! allocated or copied on the word of an unchecked length.

use std::fmt;

/// Bytes of a chunk header.
pub(crate) const HEADER: usize = 8;
/// The largest payload one chunk can describe (24 bits).
pub(crate) const MAX_CHUNK: usize = (1 << 24) - 1;

pub(crate) const FIRST: u8 = 1;
pub(crate) const LAST: u8 = 2;

/// A chunk header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) len: u32,
    pub(crate) flags: u8,
}

fn mix(w: u32) -> u32 {
    let x = (w ^ 0x6d70_7163).wrapping_mul(0x9e37_79b1);
    x ^ (x >> 15) ^ 0xa5a5_0f0f
}

/// Bytes a chunk with `len` bytes of payload takes in the ring.
pub(crate) fn footprint(len: usize) -> usize {
    HEADER + len.div_ceil(8) * 8
}

impl Chunk {
    pub(crate) fn encode(self) -> [u8; HEADER] {
        let w0 = self.len | (u32::from(self.flags) << 24);
        let mut out = [0u8; HEADER];
        out[..4].copy_from_slice(&w0.to_le_bytes());
        out[4..].copy_from_slice(&mix(w0).to_le_bytes());
        out
    }

    /// Checks a header read from the ring. `max_len` is the ring's largest
    /// chunk; `available` the bytes published from the header on.
    pub(crate) fn decode(
        bytes: [u8; HEADER],
        max_len: usize,
        available: usize,
    ) -> Result<Chunk, FrameError> {
        let w0 = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let w1 = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if mix(w0) != w1 {
            return Err(FrameError::BadHeader);
        }
        let chunk = Chunk {
            len: w0 & 0x00ff_ffff,
            flags: (w0 >> 24) as u8,
        };
        if chunk.flags & !(FIRST | LAST) != 0 {
            return Err(FrameError::BadHeader);
        }
        let len = chunk.len as usize;
        if len > max_len {
            return Err(FrameError::TooLong { len, max: max_len });
        }
        if footprint(len) > available {
            return Err(FrameError::Truncated {
                need: footprint(len),
                available,
            });
        }
        Ok(chunk)
    }
}

/// Why a chunk in the ring cannot be believed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The header's check word does not match, or it has unknown flags.
    BadHeader,
    /// The header claims more payload than any chunk of this ring can hold.
    TooLong {
        /// The claimed length.
        len: usize,
        /// The ring's largest chunk.
        max: usize,
    },
    /// The header claims more bytes than were published.
    Truncated {
        /// Bytes the chunk would take.
        need: usize,
        /// Bytes published.
        available: usize,
    },
    /// The ring's shared positions are impossible: more unread bytes than
    /// the ring holds, or more whole messages than chunks.
    BadPositions,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadHeader => f.write_str("corrupt chunk header"),
            FrameError::TooLong { len, max } => {
                write!(f, "chunk claims {len} bytes, more than the ring's {max}")
            }
            FrameError::Truncated { need, available } => write!(
                f,
                "chunk needs {need} bytes but only {available} were published"
            ),
            FrameError::BadPositions => f.write_str("the ring's shared positions are impossible"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Lays `messages` out as a producer puts them in the ring: each cut into
/// chunks of at most `max_chunk` bytes (at least 1), headers and padding
/// included. The inverse of [`decode_stream`], for tests and the fuzz target.
pub fn encode_stream<'a>(
    messages: impl IntoIterator<Item = &'a [u8]>,
    max_chunk: usize,
) -> Vec<u8> {
    let max_chunk = max_chunk.clamp(1, MAX_CHUNK);
    let mut out = Vec::new();
    for m in messages {
        let mut pieces = m.chunks(max_chunk).peekable();
        let mut flags = FIRST;
        if pieces.peek().is_none() {
            // A zero-length message is one empty chunk.
            out.extend_from_slice(
                &Chunk {
                    len: 0,
                    flags: FIRST | LAST,
                }
                .encode(),
            );
            continue;
        }
        while let Some(piece) = pieces.next() {
            if pieces.peek().is_none() {
                flags |= LAST;
            }
            out.extend_from_slice(
                &Chunk {
                    len: piece.len() as u32,
                    flags,
                }
                .encode(),
            );
            out.extend_from_slice(piece);
            out.resize(out.len().next_multiple_of(8), 0);
            flags = 0;
        }
    }
    out
}

/// Reassembles the messages of a byte stream laid out as the ring lays it
/// out (chunks back to back), as a consumer that joined at its start would:
/// continuation chunks without a `FIRST` are skipped, a `FIRST` in the middle
/// of a message abandons the partial one. Returns the whole messages and the
/// number abandoned, or the first error.
///
/// This is the consumer's state machine on a plain slice, for tests and the
/// fuzz target; the ring runs the same state machine, chunk by chunk.
pub fn decode_stream(
    mut bytes: &[u8],
    max_chunk: usize,
) -> Result<(Vec<Vec<u8>>, u64), FrameError> {
    let mut asm = Assembler::default();
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut h = [0u8; HEADER];
        let n = bytes.len().min(HEADER);
        h[..n].copy_from_slice(&bytes[..n]);
        let chunk = Chunk::decode(h, max_chunk, bytes.len())?;
        let len = chunk.len as usize;
        let step = asm.accept(chunk, |buf| {
            buf.extend_from_slice(&bytes[HEADER..HEADER + len])
        });
        if let Step::Message = step {
            out.push(std::mem::take(&mut asm.buf));
        }
        bytes = &bytes[footprint(len)..];
    }
    Ok((out, asm.abandoned))
}

/// What a consumer does with the chunks it reads, one at a time.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    /// Payload of the message being read.
    pub(crate) buf: Vec<u8>,
    /// Inside a message whose `FIRST` we read.
    pub(crate) mid: bool,
    /// Inside a message whose `FIRST` somebody else read (a consumer that
    /// died): its chunks are skipped.
    pub(crate) skipping: bool,
    /// Messages given up on: partial ones overtaken by a new `FIRST`, and
    /// the rest of ones whose start was lost.
    pub(crate) abandoned: u64,
}

/// The outcome of one chunk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// More chunks to come (or nothing delivered yet).
    More,
    /// `buf` holds a whole message.
    Message,
}

impl Assembler {
    /// Takes one chunk; `copy` appends its payload to the buffer, and is
    /// called only when the payload is wanted.
    pub(crate) fn accept(&mut self, chunk: Chunk, copy: impl FnOnce(&mut Vec<u8>)) -> Step {
        if chunk.flags & FIRST != 0 {
            if self.mid {
                self.abandoned += 1;
            }
            self.buf.clear();
            self.mid = true;
            self.skipping = false;
        } else if !self.mid && !self.skipping {
            self.skipping = true;
        }
        if self.mid {
            copy(&mut self.buf);
        }
        if chunk.flags & LAST != 0 {
            if self.skipping {
                self.skipping = false;
                self.abandoned += 1;
                return Step::More;
            }
            self.mid = false;
            return Step::Message;
        }
        Step::More
    }

    /// The message being read is sent again from its start by its writer
    /// (this reader gave it back at its deadline): drop what was read,
    /// without counting it abandoned.
    pub(crate) fn give_back(&mut self) {
        self.mid = false;
        self.skipping = false;
        self.buf.clear();
    }

    /// The writer of the message being read gave up or died.
    pub(crate) fn abandon(&mut self) {
        if self.mid || self.skipping {
            self.abandoned += 1;
        }
        self.mid = false;
        self.skipping = false;
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_stream_round_trips_through_decode_stream() {
        let messages: Vec<Vec<u8>> = [0usize, 1, 7, 8, 9, 16, 17, 100]
            .iter()
            .map(|&n| (0..n).map(|i| i as u8 ^ 0x5a).collect())
            .collect();
        for max_chunk in [1, 8, 9, 64] {
            let bytes = encode_stream(messages.iter().map(Vec::as_slice), max_chunk);
            let (got, abandoned) = decode_stream(&bytes, max_chunk).unwrap();
            assert_eq!(
                (got, abandoned),
                (messages.clone(), 0),
                "max_chunk {max_chunk}"
            );
        }
    }

    fn chunk(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Chunk {
            len: payload.len() as u32,
            flags,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(payload);
        v.resize(footprint(payload.len()), 0);
        v
    }

    #[test]
    fn whole_split_and_empty_messages_come_back() {
        let mut s = chunk(FIRST | LAST, b"hello");
        s.extend(chunk(FIRST, b"ab"));
        s.extend(chunk(0, b"cd"));
        s.extend(chunk(LAST, b"e"));
        s.extend(chunk(FIRST | LAST, b""));
        let (msgs, abandoned) = decode_stream(&s, 64).unwrap();
        assert_eq!(msgs, vec![b"hello".to_vec(), b"abcde".to_vec(), vec![]]);
        assert_eq!(abandoned, 0);
    }

    #[test]
    fn partial_messages_are_abandoned_and_counted() {
        let mut s = chunk(0, b"tail of a lost start");
        s.extend(chunk(LAST, b"end"));
        s.extend(chunk(FIRST, b"cut short"));
        s.extend(chunk(FIRST | LAST, b"ok"));
        let (msgs, abandoned) = decode_stream(&s, 64).unwrap();
        assert_eq!(msgs, vec![b"ok".to_vec()]);
        assert_eq!(abandoned, 2);
    }

    #[test]
    fn flipped_bits_and_impossible_lengths_are_errors() {
        let good = chunk(FIRST | LAST, b"12345678");
        for bit in 0..64 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_stream(&bad, 64).is_err(), "bit {bit}");
        }
        let long = chunk(FIRST | LAST, &[7; 100]);
        assert_eq!(
            decode_stream(&long, 64),
            Err(FrameError::TooLong { len: 100, max: 64 })
        );
        assert!(matches!(
            decode_stream(&long[..50], 128),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn random_bytes_are_rejected_or_stay_within_their_input() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let n = ((x >> 33) % 97) as usize;
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            match decode_stream(&bytes, 48) {
                Ok((msgs, _)) => {
                    let total: usize = msgs.iter().map(Vec::len).sum();
                    assert!(total <= bytes.len());
                    accepted += usize::from(!bytes.is_empty());
                }
                Err(_) => rejected += 1,
            }
        }
        // A random header passes its 32-bit check about once in 4 billion.
        assert_eq!(accepted, 0);
        assert!(rejected > 19_000);
    }
}
