//! The errors of queue and pipe operations. Operations that take a value
//! give it back when it was not sent.

use std::fmt;

use crate::frame::FrameError;

/// A message that arrived but could not be read: a corrupt frame, or bytes
/// that do not decode as the item type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadMessage {
    /// The ring held a chunk that cannot be believed (see [`FrameError`]).
    Corrupt(FrameError),
    /// The bytes are not a postcard encoding of the item type (or leave
    /// bytes over).
    Decode(String),
    /// The item holds handles whose descriptors could not be fetched from
    /// the process that sent it (it has ended).
    Handles(String),
}

impl fmt::Display for BadMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadMessage::Corrupt(e) => write!(f, "corrupt message: {e}"),
            BadMessage::Decode(e) => write!(f, "message does not decode: {e}"),
            BadMessage::Handles(e) => write!(f, "message's handles are gone: {e}"),
        }
    }
}

impl std::error::Error for BadMessage {}

/// A value that could not be serialized; the value is given back.
#[derive(PartialEq, Eq)]
pub struct EncodeError<T> {
    /// The value.
    pub value: T,
    /// What serde said.
    pub message: String,
}

impl<T> fmt::Display for EncodeError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot serialize the value: {}", self.message)
    }
}

impl<T> fmt::Debug for EncodeError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodeError")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// Why [`put`](crate::Queue::put) (or `send` on a queue) failed.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum PutError<T> {
    /// The queue was closed; the value is given back.
    Closed(T),
    /// The value could not be serialized.
    Encode(EncodeError<T>),
    /// The queue's shared positions are impossible (another process wrote
    /// over them); the value is given back. A consumer's next `get` reports
    /// and repairs it.
    Corrupt(T),
}

const CORRUPT: &str = "the queue's shared positions are corrupt";

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Closed(_) => f.write_str("queue is closed"),
            PutError::Encode(e) => fmt::Display::fmt(e, f),
            PutError::Corrupt(_) => f.write_str(CORRUPT),
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PutError(\"{self}\")")
    }
}

impl<T> std::error::Error for PutError<T> {}

impl<T> PutError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Closed(v) | PutError::Corrupt(v) => v,
            PutError::Encode(e) => e.value,
        }
    }
}

/// Why [`try_put`](crate::Queue::try_put) or
/// [`put_timeout`](crate::Queue::put_timeout) failed.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum TryPutError<T> {
    /// No room (in the ring, or under the item limit) in time; the value is
    /// given back.
    Full(T),
    /// The queue was closed; the value is given back.
    Closed(T),
    /// The value could not be serialized.
    Encode(EncodeError<T>),
    /// The queue's shared positions are impossible; the value is given back.
    Corrupt(T),
}

impl<T> fmt::Display for TryPutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutError::Full(_) => f.write_str("queue is full"),
            TryPutError::Closed(_) => f.write_str("queue is closed"),
            TryPutError::Encode(e) => fmt::Display::fmt(e, f),
            TryPutError::Corrupt(_) => f.write_str(CORRUPT),
        }
    }
}

impl<T> fmt::Debug for TryPutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TryPutError(\"{self}\")")
    }
}

impl<T> std::error::Error for TryPutError<T> {}

impl<T> TryPutError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TryPutError::Full(v) | TryPutError::Closed(v) | TryPutError::Corrupt(v) => v,
            TryPutError::Encode(e) => e.value,
        }
    }
}

/// Why [`get`](crate::Queue::get) returned no item.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum GetError {
    /// The queue was closed and is empty.
    Closed,
    /// A message arrived but could not be read.
    Bad(BadMessage),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Closed => f.write_str("queue is closed and empty"),
            GetError::Bad(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Debug for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GetError(\"{self}\")")
    }
}

impl std::error::Error for GetError {}

/// Why [`try_get`](crate::Queue::try_get) returned no item.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum TryGetError {
    /// Nothing to get now.
    Empty,
    /// The queue was closed and is empty.
    Closed,
    /// A message arrived but could not be read.
    Bad(BadMessage),
}

impl fmt::Display for TryGetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryGetError::Empty => f.write_str("queue is empty"),
            TryGetError::Closed => f.write_str("queue is closed and empty"),
            TryGetError::Bad(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Debug for TryGetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TryGetError(\"{self}\")")
    }
}

impl std::error::Error for TryGetError {}

/// Why [`get_timeout`](crate::Queue::get_timeout) returned no item.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum GetTimeoutError {
    /// Nothing arrived before the timeout.
    Timeout,
    /// The queue was closed and is empty.
    Closed,
    /// A message arrived but could not be read.
    Bad(BadMessage),
}

impl fmt::Display for GetTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetTimeoutError::Timeout => f.write_str("timed out waiting for an item"),
            GetTimeoutError::Closed => f.write_str("queue is closed and empty"),
            GetTimeoutError::Bad(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Debug for GetTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GetTimeoutError(\"{self}\")")
    }
}

impl std::error::Error for GetTimeoutError {}

/// Why [`send`](crate::Connection::send) failed.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The other end is gone (every handle to it dropped, or its processes
    /// died); the value is given back.
    Disconnected(T),
    /// This end was made receive-only by [`Pipe::simplex`](crate::Pipe::simplex);
    /// the value is given back.
    NotWritable(T),
    /// The value could not be serialized.
    Encode(EncodeError<T>),
    /// The pipe's shared positions are impossible; the value is given back.
    Corrupt(T),
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Disconnected(_) => f.write_str("the other end of the pipe is gone"),
            SendError::NotWritable(_) => f.write_str("this end of the pipe only receives"),
            SendError::Encode(e) => fmt::Display::fmt(e, f),
            SendError::Corrupt(_) => f.write_str("the pipe's shared positions are corrupt"),
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SendError(\"{self}\")")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::NotWritable(v) | SendError::Disconnected(v) | SendError::Corrupt(v) => v,
            SendError::Encode(e) => e.value,
        }
    }
}

/// Why [`recv`](crate::Connection::recv) returned no message.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// The other end is gone and everything it sent has been read.
    Disconnected,
    /// This end was made send-only by [`Pipe::simplex`](crate::Pipe::simplex).
    NotReadable,
    /// A message arrived but could not be read.
    Bad(BadMessage),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Disconnected => f.write_str("the other end of the pipe is gone"),
            RecvError::NotReadable => f.write_str("this end of the pipe only sends"),
            RecvError::Bad(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Debug for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecvError(\"{self}\")")
    }
}

impl std::error::Error for RecvError {}

/// Why [`recv_timeout`](crate::Connection::recv_timeout) returned no
/// message.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// Nothing arrived before the timeout.
    Timeout,
    /// The other end is gone and everything it sent has been read.
    Disconnected,
    /// This end was made send-only by [`Pipe::simplex`](crate::Pipe::simplex).
    NotReadable,
    /// A message arrived but could not be read.
    Bad(BadMessage),
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out waiting for a message"),
            RecvTimeoutError::Disconnected => f.write_str("the other end of the pipe is gone"),
            RecvTimeoutError::NotReadable => f.write_str("this end of the pipe only sends"),
            RecvTimeoutError::Bad(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Debug for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecvTimeoutError(\"{self}\")")
    }
}

impl std::error::Error for RecvTimeoutError {}
