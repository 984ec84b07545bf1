//! `Error`: what goes wrong when connecting, running a worker, or using a
//! Redis queue.

use std::fmt;

/// Why a Redis client, worker or queue could not do what was asked.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Redis refused, or could not be reached (bad URL, network, AUTH).
    Redis(redis::RedisError),
    /// The server is not one we can use (too old: streams need 6.2).
    Server(String),
    /// A worker was built without the tasks it may run.
    NoTasks,
    /// The local worker processes could not be started or broke.
    Workers(String),
    /// Something read from Redis was not what this protocol writes.
    Corrupt(String),
    /// Redis stayed unreachable for longer than
    /// [`Options::reconnect_for`](crate::Options::reconnect_for).
    Unreachable(String),
    /// The options do not make sense together (a lease shorter than two
    /// heartbeats, an empty namespace).
    Options(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Redis(e) => write!(f, "redis: {e}"),
            Error::Server(why) => write!(f, "this redis server cannot be used: {why}"),
            Error::NoTasks => f.write_str("a worker needs its registry of tasks (Worker::tasks)"),
            Error::Workers(why) => write!(f, "the local worker processes failed: {why}"),
            Error::Corrupt(why) => write!(f, "unreadable data in redis: {why}"),
            Error::Options(why) => write!(f, "bad options: {why}"),
            Error::Unreachable(why) => write!(f, "redis could not be reached for {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Redis(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Error {
        Error::Redis(e)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::other(e)
    }
}
