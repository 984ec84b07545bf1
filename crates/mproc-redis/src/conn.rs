//! A connection that comes back: opened on first use, dropped after an I/O
//! error, opened again (with the scripts loaded) on the next use.

use std::time::{Duration, Instant};

use redis::{Client, Cmd, Connection, ConnectionLike, ErrorKind, RedisError, RedisResult, Value};

use crate::scripts::Scripts;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection to Redis, reopened after a failure.
pub(crate) struct Conn {
    client: Client,
    con: Option<Connection>,
    /// The read timeout: longer than any BLOCK this connection sends.
    read_timeout: Duration,
    /// Since when every attempt has failed.
    failing_since: Option<Instant>,
    /// When the current connection was opened.
    connected_at: Option<Instant>,
    /// Connections opened so far.
    opened: u64,
}

impl Conn {
    pub(crate) fn new(client: Client, read_timeout: Duration) -> Conn {
        Conn {
            client,
            con: None,
            read_timeout,
            failing_since: None,
            connected_at: None,
            opened: 0,
        }
    }

    /// The connection, opened (and the scripts loaded) if need be.
    fn get(&mut self, scripts: &Scripts) -> RedisResult<&mut Connection> {
        if self.con.is_none() {
            let mut con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
            con.set_read_timeout(Some(self.read_timeout))?;
            con.set_write_timeout(Some(self.read_timeout))?;
            scripts.load(&mut con)?;
            self.con = Some(con);
            self.connected_at = Some(Instant::now());
            self.opened += 1;
        }
        match self.con.as_mut() {
            Some(c) => Ok(c),
            None => Err(RedisError::from((ErrorKind::IoError, "no connection"))),
        }
    }

    /// Runs `op` on the connection. After an error that may have left the
    /// connection unusable it is dropped (the next call reconnects); a
    /// server without our scripts (flushed) gets them again.
    pub(crate) fn run<T>(
        &mut self,
        scripts: &Scripts,
        op: impl Fn(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let r = self.get(scripts).and_then(|c| match op(c) {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                scripts.load(c)?;
                op(c)
            }
            r => r,
        });
        self.note(&r);
        r
    }

    /// Sends `cmds` in one round trip and returns each reply, a failed
    /// command's as [`Value::ServerError`] (the others still ran). A script
    /// the server did not have (NOSCRIPT: it did not run) is loaded and its
    /// command sent again.
    pub(crate) fn batch(&mut self, scripts: &Scripts, cmds: &[Cmd]) -> RedisResult<Vec<Value>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let r = self.get(scripts).and_then(|c| {
            let mut replies = send(c, cmds.iter())?;
            let again: Vec<usize> = (0..replies.len())
                .filter(|&i| matches!(&replies[i], Value::ServerError(e) if e.code() == "NOSCRIPT"))
                .collect();
            if !again.is_empty() {
                scripts.load(c)?;
                let redone = send(c, again.iter().map(|&i| &cmds[i]))?;
                for (i, v) in again.into_iter().zip(redone) {
                    replies[i] = v;
                }
            }
            Ok(replies)
        });
        self.note(&r);
        r
    }

    fn note<T>(&mut self, r: &RedisResult<T>) {
        match r {
            Ok(_) => self.failing_since = None,
            Err(e) => {
                if broken(e) {
                    self.con = None;
                    self.connected_at = None;
                }
                self.failing_since.get_or_insert_with(Instant::now);
            }
        }
    }

    /// How long every attempt has been failing, if it has.
    pub(crate) fn failing_for(&self) -> Option<Duration> {
        self.failing_since.map(|t| t.elapsed())
    }

    /// How many connections were opened so far (a change means the
    /// connection was lost and made again).
    pub(crate) fn opened(&self) -> u64 {
        self.opened
    }

    /// Whether a connection is open now.
    pub(crate) fn is_connected(&self) -> bool {
        self.con.is_some()
    }

    /// How long the current connection has been up (zero without one).
    pub(crate) fn connected_for(&self) -> Duration {
        self.connected_at.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// Sends `cmds` as one pipeline; each reply, errors included.
fn send<'a>(c: &mut Connection, cmds: impl Iterator<Item = &'a Cmd>) -> RedisResult<Vec<Value>> {
    let mut packed = Vec::new();
    let mut n = 0;
    for cmd in cmds {
        cmd.write_packed_command(&mut packed);
        n += 1;
    }
    let replies = c.req_packed_commands(&packed, 0, n)?;
    if replies.len() != n {
        return Err(RedisError::from((
            ErrorKind::ParseError,
            "a pipeline came back with the wrong number of replies",
        )));
    }
    Ok(replies)
}

/// Whether an error may have left the connection in an unknown state.
pub(crate) fn broken(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.kind(), ErrorKind::TypeError | ErrorKind::ParseError)
        || e.code() == Some("LOADING")
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("connected", &self.con.is_some())
            .finish()
    }
}
