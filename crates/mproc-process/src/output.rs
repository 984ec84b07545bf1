//! Forwarding a child's output to its parent: stdout and stderr lines (and,
//! with the `tracing` feature, `tracing` events), tagged with the child's
//! name.
//!
//! Opt in per process ([`Process::forward_output`](crate::Process::forward_output),
//! [`Builder::forward_output`](crate::Builder::forward_output)), for every
//! child of this process ([`set_forward_output`]), or for a pool's workers.
//! Lines arrive whole — lines of different children never interleave
//! mid-line — and go to this process's stdout or stderr as
//! `[name] line`, or to the function given to [`set_output_sink`].
//!
//! # How
//!
//! The parent makes a socket pair per child and keeps one end; a reader
//! thread reads frames from it and hands each to the sink. In the child,
//! descriptors 1 and 2 become pipes that a forwarder thread drains: it cuts
//! what it reads into lines (a line longer than [`MAX_LINE`] into pieces),
//! queues them — at most [`QUEUE_BYTES`] — and writes them to the socket
//! without ever blocking on it. When the queue is full (the parent is slow
//! or stopped) lines are dropped and counted, and the count reaches the
//! parent as soon as there is room again (`[name] (N lines of output dropped …)`). So a
//! child's writes wait only for its own forwarder thread, never for its
//! parent.
//!
//! When a child ends (its target returned, panicked, or it called
//! [`exit`](crate::exit) or `std::process::exit`), its Rust buffers are
//! flushed, descriptors 1 and 2 are pointed at `/dev/null` (which closes
//! the pipes), and the forwarder sends what it has — waiting at most
//! [`FLUSH_LIMIT`] for a parent that does not read — before the process
//! exits. [`Process::join`](crate::Process::join) returns once the reader
//! has handed on everything the child sent. A SIGKILLed child loses what
//! its forwarder had not sent yet.
//!
//! A frame is a kind byte (1 stdout, 2 stderr, 3 a dropped count, 4 a
//! `tracing` event), a little-endian `u32` length and the body. The bytes
//! come from another process: a length over the limit or an unknown kind
//! ends the forwarding of that child with a notice, never a panic.
//!
//! With the `tracing` feature a forwarding child also gets a global
//! `tracing` subscriber (unless it already has one, as a forked child of a
//! program that set one does) that sends its events to the parent, where
//! they are emitted again under the target `mproc::child` with the child's
//! name and pid — or handed to the sink as [`OutputKind::Event`]. A child
//! that sets a global subscriber of its own must then handle the error of
//! `set_global_default` / `try_init` (its events go to that subscriber;
//! if it writes to stdout or stderr, they are forwarded as lines).
//!
//! The reader never waits for ever: it looks every 100 ms whether the child
//! has ended (a process the child started could keep a copy of its end of
//! the socket open), and then takes what is left and stops.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mproc_shm::ProcessIdent;

use crate::sys;

/// The longest line sent as one; longer ones go in pieces of this size.
pub const MAX_LINE: usize = 64 << 10;
/// The most a child's forwarder holds for a slow parent before it drops
/// lines (and counts them).
pub const QUEUE_BYTES: usize = 1 << 20;
/// The longest an ending child waits for its parent to take its last
/// output.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(2);
/// How often the parent's reader looks whether the child has ended.
const SLICE: Duration = Duration::from_millis(100);

const KIND_STDOUT: u8 = 1;
const KIND_STDERR: u8 = 2;
const KIND_DROPPED: u8 = 3;
const KIND_EVENT: u8 = 4;
/// The largest frame body: a line piece, or an event (level, target,
/// message) of about the same size.
const MAX_BODY: usize = MAX_LINE + 1024;

/// What a forwarded piece of output is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputKind {
    /// A line the child wrote to its stdout.
    Stdout,
    /// A line the child wrote to its stderr.
    Stderr,
    /// This many lines were dropped while the parent did not keep up.
    Dropped(u64),
    /// A `tracing` event of the child (feature `tracing`): its level
    /// (1 error … 5 trace); the line is `target: message fields`.
    Event(u8),
}

/// One forwarded line, as the sink gets it.
#[derive(Debug)]
pub struct OutputLine<'a> {
    /// The child's name.
    pub name: &'a str,
    /// The child's pid.
    pub pid: u32,
    /// Where it came from.
    pub kind: OutputKind,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub text: &'a str,
}

/// Where forwarded lines go, instead of this process's stdout and stderr.
pub type OutputSink = fn(&OutputLine<'_>);

static SINK: Mutex<Option<OutputSink>> = Mutex::new(None);
/// 0: not set; 1: off; 2: on.
static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// Forward the output of every child this process starts from now on
/// (unless a process says otherwise with
/// [`Process::forward_output`](crate::Process::forward_output)). Off by
/// default: children write to the stdout and stderr they inherit.
pub fn set_forward_output(on: bool) {
    DEFAULT.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether children forward their output unless told otherwise.
pub(crate) fn forward_by_default() -> bool {
    DEFAULT.load(Ordering::Relaxed) == 2
}

/// Sends forwarded lines to `sink` (a logger, a test) instead of this
/// process's stdout and stderr; `None` goes back to printing them.
///
/// The sink runs on the reader thread of the child that wrote the line; a
/// slow sink slows only the forwarding (the child drops and counts what
/// does not fit), never the child.
pub fn set_output_sink(sink: Option<OutputSink>) {
    *SINK.lock().unwrap_or_else(PoisonError::into_inner) = sink;
}

/// The default sink: `[name] line` on this process's stdout or stderr,
/// each line one `write` straight to the descriptor. Rust's `Stdout` lock
/// is never taken: a reader thread holding it while another thread forks a
/// child would leave that lock held for ever in the child.
fn print(line: &OutputLine<'_>) {
    let mut text = format!("[{}] ", line.name);
    let to_stdout = match line.kind {
        OutputKind::Stdout => {
            text.push_str(line.text);
            true
        }
        OutputKind::Stderr => {
            text.push_str(line.text);
            false
        }
        OutputKind::Dropped(n) => {
            text.push_str(&format!(
                "({n} lines of output dropped: the parent did not keep up)"
            ));
            false
        }
        OutputKind::Event(level) => {
            let level = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .get(usize::from(level.saturating_sub(1)))
                .unwrap_or(&"?");
            text.push_str(level);
            text.push(' ');
            text.push_str(line.text);
            false
        }
    };
    text.push('\n');
    let _ = if to_stdout {
        sys::write_all(io::stdout().as_fd(), text.as_bytes())
    } else {
        sys::write_all(io::stderr().as_fd(), text.as_bytes())
    };
}

fn deliver(line: &OutputLine<'_>) {
    let sink = *SINK.lock().unwrap_or_else(PoisonError::into_inner);
    #[cfg(feature = "tracing")]
    if let OutputKind::Event(level) = line.kind {
        if sink.is_none() {
            reemit(line, level);
            return;
        }
    }
    sink.unwrap_or(print)(line);
}

/// A child's event, emitted again here with the child's name.
#[cfg(feature = "tracing")]
fn reemit(line: &OutputLine<'_>, level: u8) {
    let (name, pid, text) = (line.name, line.pid, line.text);
    match level {
        1 => tracing::error!(target: "mproc::child", process = name, pid, "{text}"),
        2 => tracing::warn!(target: "mproc::child", process = name, pid, "{text}"),
        3 => tracing::info!(target: "mproc::child", process = name, pid, "{text}"),
        4 => tracing::debug!(target: "mproc::child", process = name, pid, "{text}"),
        _ => tracing::trace!(target: "mproc::child", process = name, pid, "{text}"),
    }
}

// ---------------------------------------------------------------- parent

/// The two ends for a new child: (the parent's, the child's).
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    sys::stream_pair()
}

/// Starts the reader of child `pid`'s output.
pub(crate) fn read_from(
    ours: OwnedFd,
    name: String,
    pid: u32,
) -> io::Result<std::thread::JoinHandle<()>> {
    let ident = ProcessIdent::of(pid);
    std::thread::Builder::new()
        .name("mproc-output".into())
        .spawn(move || read_loop(&ours, &name, pid, ident))
}

fn read_loop(fd: &OwnedFd, name: &str, pid: u32, child: Option<ProcessIdent>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    let mut ended = false;
    loop {
        let wait = if ended { Duration::ZERO } else { SLICE };
        match sys::read_some(fd.as_fd(), &mut chunk, wait) {
            Ok(Some(0)) => break,
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            // Nothing within the slice: has the child ended? Then take
            // what is there without waiting, and stop.
            Ok(None) if ended => break,
            Ok(None) => ended = child.is_none_or(ProcessIdent::has_ended),
            Err(_) => break,
        }
        if let Err(why) = dispatch(&mut buf, name, pid) {
            deliver(&OutputLine {
                name,
                pid,
                kind: OutputKind::Stderr,
                text: &format!("(output forwarding stopped: {why})"),
            });
            return;
        }
    }
}

/// Hands on every whole frame at the front of `buf`.
fn dispatch(buf: &mut Vec<u8>, name: &str, pid: u32) -> Result<(), String> {
    let mut at = 0;
    while buf.len() - at >= 5 {
        let kind = buf[at];
        let len = u32::from_le_bytes(buf[at + 1..at + 5].try_into().expect("four bytes")) as usize;
        if len > MAX_BODY {
            return Err(format!("a frame of {len} bytes"));
        }
        if buf.len() - at - 5 < len {
            break;
        }
        let body = &buf[at + 5..at + 5 + len];
        let kind = match kind {
            KIND_STDOUT => OutputKind::Stdout,
            KIND_STDERR => OutputKind::Stderr,
            KIND_DROPPED => {
                let n: [u8; 8] = body
                    .try_into()
                    .map_err(|_| "a short drop count".to_string())?;
                OutputKind::Dropped(u64::from_le_bytes(n))
            }
            KIND_EVENT if !body.is_empty() => OutputKind::Event(body[0]),
            other => return Err(format!("a frame of unknown kind {other}")),
        };
        let body = if matches!(kind, OutputKind::Event(_)) {
            &body[1..]
        } else {
            body
        };
        let text = String::from_utf8_lossy(body);
        deliver(&OutputLine {
            name,
            pid,
            kind,
            text: if matches!(kind, OutputKind::Dropped(_)) {
                ""
            } else {
                &text
            },
        });
        at += 5 + len;
    }
    buf.drain(..at);
    Ok(())
}

// ---------------------------------------------------------------- child

/// The forwarder of this process, when it forwards.
static FORWARDER: Mutex<Option<Forwarder>> = Mutex::new(None);

/// Set before a forwarder is made (and so inherited by a child forked from
/// a forwarding process): without it there is nothing to close, forget or
/// finish, and a forked child writes none of these statics — each page it
/// writes costs it a copy-on-write fault.
static FORWARDING: AtomicBool = AtomicBool::new(false);

struct Forwarder {
    done: std::sync::mpsc::Receiver<()>,
    /// The process whose thread it is.
    owner: u32,
}

/// In a child forked from this process: the forwarder and its descriptors
/// are the parent's (its thread does not exist here). Closes them and
/// forgets it, so that the child neither waits for it at exit nor keeps
/// the parent's pipes open.
pub(crate) fn forked_child() {
    if !FORWARDING.load(Ordering::Acquire) {
        return;
    }
    for slot in &FORWARDER_FDS {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            sys::close_raw_in_forked_child(fd);
        }
    }
    if let Ok(mut f) = FORWARDER.try_lock() {
        f.take();
    }
    if let Ok(mut e) = EVENTS.try_lock() {
        e.take();
    }
    FORWARDING.store(false, Ordering::Release);
}

/// Tracing events of this process go to the forwarder's queue.
static EVENTS: Mutex<Option<std::sync::mpsc::SyncSender<Vec<u8>>>> = Mutex::new(None);
/// Events dropped because the forwarder was behind: counted with the
/// dropped lines.
static EVENTS_DROPPED: AtomicU64 = AtomicU64::new(0);
/// The forwarder's descriptors (its pipes' read ends and its socket), for
/// a child forked from this process to close: they are this process's.
static FORWARDER_FDS: [AtomicI32; 3] = [AtomicI32::new(-1), AtomicI32::new(-1), AtomicI32::new(-1)];

/// In a child: makes descriptors 1 and 2 pipes to a forwarder thread that
/// sends their lines on `sock`.
pub(crate) fn start_in_child(sock: OwnedFd) -> io::Result<()> {
    let (out_r, out_w) = sys::pipe()?;
    let (err_r, err_w) = sys::pipe()?;
    sys::set_nonblocking(sock.as_fd())?;
    sys::set_nonblocking(out_r.as_fd())?;
    sys::set_nonblocking(err_r.as_fd())?;
    let _ = io::stdout().flush();
    sys::redirect_stdio(out_w.as_fd(), err_w.as_fd())?;
    drop((out_w, err_w));
    let (events_tx, events_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1024);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    FORWARDING.store(true, Ordering::Release);
    for (slot, fd) in FORWARDER_FDS.iter().zip([&out_r, &err_r, &sock]) {
        slot.store(fd.as_raw_fd(), Ordering::Relaxed);
    }
    std::thread::Builder::new()
        .name("mproc-forward".into())
        .spawn(move || {
            forward(&sock, [out_r, err_r], &events_rx);
            let _ = done_tx.send(());
        })?;
    *FORWARDER.lock().unwrap_or_else(PoisonError::into_inner) = Some(Forwarder {
        done: done_rx,
        owner: sys::my_pid(),
    });
    *EVENTS.lock().unwrap_or_else(PoisonError::into_inner) = Some(events_tx);
    #[cfg(feature = "tracing")]
    events::install();
    static AT_EXIT: AtomicBool = AtomicBool::new(false);
    if !AT_EXIT.swap(true, Ordering::AcqRel) {
        sys::at_exit(finish_at_exit);
    }
    Ok(())
}

extern "C" fn finish_at_exit() {
    finish_in_child();
}

/// In a child that forwards, as it ends: flushes, closes the pipes, and
/// waits (at most [`FLUSH_LIMIT`]) for the forwarder to send the rest.
pub(crate) fn finish_in_child() {
    if !FORWARDING.load(Ordering::Acquire) {
        return;
    }
    let Some(fwd) = FORWARDER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    else {
        return;
    };
    if fwd.owner != sys::my_pid() {
        return;
    }
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    EVENTS.lock().unwrap_or_else(PoisonError::into_inner).take();
    if sys::stdio_to_null().is_ok() {
        let _ = fwd.done.recv_timeout(FLUSH_LIMIT + SLICE);
    }
}

/// Queues a tracing event (level, then `target: message fields`).
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
fn queue_event(level: u8, text: &str) -> bool {
    let tx = EVENTS.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(tx) = tx.as_ref() else { return false };
    let mut body = Vec::with_capacity(1 + text.len().min(MAX_LINE));
    body.push(level);
    body.extend_from_slice(&text.as_bytes()[..text.len().min(MAX_LINE)]);
    // Full: the forwarder is behind; the event is dropped and counted like
    // a line.
    if tx.try_send(body).is_err() {
        EVENTS_DROPPED.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// The forwarder's state: what is queued for the parent.
struct Outbox {
    queue: VecDeque<u8>,
    dropped: u64,
    /// The parent's end is gone: everything is discarded from now on.
    closed: bool,
}

impl Outbox {
    fn push(&mut self, kind: u8, body: &[u8]) {
        if self.closed {
            return;
        }
        // The count of earlier drops goes first, when the line fits with it.
        let count = if self.dropped > 0 { 13 } else { 0 };
        if self.queue.len() + count + 5 + body.len() > QUEUE_BYTES {
            self.dropped += 1;
            return;
        }
        if self.dropped > 0 {
            let n = self.dropped.to_le_bytes();
            self.dropped = 0;
            self.frame(KIND_DROPPED, &n);
        }
        self.frame(kind, body);
    }

    fn frame(&mut self, kind: u8, body: &[u8]) {
        self.queue.push_back(kind);
        self.queue.extend((body.len() as u32).to_le_bytes());
        self.queue.extend(body);
    }

    /// Writes what the socket takes now; never blocks.
    fn send(&mut self, sock: &OwnedFd) {
        while !self.queue.is_empty() && !self.closed {
            let (front, _) = self.queue.as_slices();
            match sys::write_now(sock.as_fd(), front) {
                Ok(Some(n)) => drop(self.queue.drain(..n)),
                Ok(None) => return,
                Err(_) => {
                    self.closed = true;
                    self.queue.clear();
                }
            }
        }
        if self.dropped > 0 && self.queue.is_empty() && !self.closed {
            let n = self.dropped.to_le_bytes();
            self.dropped = 0;
            self.frame(KIND_DROPPED, &n);
            self.send(sock);
        }
    }
}

/// Cuts the complete lines off the front of `partial` and queues them.
fn lines(partial: &mut Vec<u8>, kind: u8, out: &mut Outbox, at_end: bool) {
    let mut start = 0;
    while let Some(nl) = partial[start..].iter().position(|&b| b == b'\n') {
        let mut line = &partial[start..start + nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        for piece in line
            .chunks(MAX_LINE)
            .chain(line.is_empty().then_some(&[][..]))
        {
            out.push(kind, piece);
        }
        start += nl + 1;
    }
    while partial.len() - start >= MAX_LINE || (at_end && partial.len() > start) {
        let end = (start + MAX_LINE).min(partial.len());
        out.push(kind, &partial[start..end]);
        start = end;
    }
    partial.drain(..start);
}

fn forward(sock: &OwnedFd, pipes: [OwnedFd; 2], events: &std::sync::mpsc::Receiver<Vec<u8>>) {
    let mut out = Outbox {
        queue: VecDeque::new(),
        dropped: 0,
        closed: false,
    };
    let mut open = [true, true];
    let mut partial = [Vec::new(), Vec::new()];
    let mut chunk = vec![0u8; 64 << 10];
    let mut flush_until: Option<Instant> = None;
    loop {
        for (i, pipe) in pipes.iter().enumerate() {
            // A bounded number of reads per round, so that a child that
            // never stops writing cannot keep the queue from being sent.
            for _ in 0..16 {
                if !open[i] {
                    break;
                }
                match sys::read_now(pipe.as_fd(), &mut chunk) {
                    Ok(Some(0)) | Err(_) => {
                        open[i] = false;
                        lines(&mut partial[i], KIND_STDOUT + i as u8, &mut out, true);
                    }
                    Ok(Some(n)) => {
                        partial[i].extend_from_slice(&chunk[..n]);
                        lines(&mut partial[i], KIND_STDOUT + i as u8, &mut out, false);
                    }
                    Ok(None) => break,
                }
            }
        }
        while let Ok(event) = events.try_recv() {
            out.push(KIND_EVENT, &event);
        }
        out.dropped += EVENTS_DROPPED.swap(0, Ordering::Relaxed);
        out.send(sock);
        if !open[0] && !open[1] {
            let until = *flush_until.get_or_insert_with(|| Instant::now() + FLUSH_LIMIT);
            if out.queue.is_empty() || out.closed || Instant::now() >= until {
                return;
            }
        }
        let want_write = !out.queue.is_empty() && !out.closed;
        let live: Vec<_> = pipes
            .iter()
            .zip(open)
            .filter(|(_, o)| *o)
            .map(|(p, _)| p.as_fd())
            .collect();
        // Events have no descriptor: look again for them every slice.
        let _ = sys::wait_io(&live, want_write.then(|| sock.as_fd()), SLICE);
    }
}

#[cfg(feature = "tracing")]
mod events {
    //! A subscriber that sends this child's events to its parent.

    use std::fmt::Write as _;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    struct Forwarding;

    struct Text(String);

    impl Visit for Text {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, " {value:?}");
            } else {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                let _ = write!(self.0, " {value}");
            } else {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
    }

    impl Subscriber for Forwarding {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }

        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }

        fn record(&self, _: &Id, _: &Record<'_>) {}

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            let meta = event.metadata();
            let level = match *meta.level() {
                Level::ERROR => 1,
                Level::WARN => 2,
                Level::INFO => 3,
                Level::DEBUG => 4,
                Level::TRACE => 5,
            };
            let mut text = Text(format!("{}:", meta.target()));
            event.record(&mut text);
            super::queue_event(level, &text.0);
        }

        fn enter(&self, _: &Id) {}

        fn exit(&self, _: &Id) {}
    }

    /// Makes the forwarding subscriber this process's, unless the program
    /// set one of its own (its events then go wherever that one writes —
    /// forwarded as lines if that is stdout or stderr).
    pub(super) fn install() {
        let _ = tracing::subscriber::set_global_default(Forwarding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(out: &Outbox) -> Vec<(u8, Vec<u8>)> {
        let bytes: Vec<u8> = out.queue.iter().copied().collect();
        let mut at = 0;
        let mut v = Vec::new();
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
            v.push((bytes[at], bytes[at + 5..at + 5 + len].to_vec()));
            at += 5 + len;
        }
        v
    }

    fn outbox() -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            dropped: 0,
            closed: false,
        }
    }

    #[test]
    fn lines_are_cut_at_newlines_and_a_long_one_in_pieces() {
        let mut out = outbox();
        let mut partial = b"one\r\ntwo\n\nthr".to_vec();
        lines(&mut partial, KIND_STDOUT, &mut out, false);
        assert_eq!(partial, b"thr");
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        lines(&mut long, KIND_STDERR, &mut out, false);
        lines(&mut partial, KIND_STDOUT, &mut out, true);
        let got = frames(&out);
        let texts: Vec<_> = got.iter().map(|(k, b)| (*k, b.len())).collect();
        assert_eq!(
            texts,
            [(1, 3), (1, 3), (1, 0), (2, MAX_LINE), (2, 10), (1, 3)]
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_then_says_how_many() {
        let mut out = outbox();
        let line = vec![b'y'; 1000];
        let fit = QUEUE_BYTES / 1005;
        for _ in 0..fit + 7 {
            out.push(KIND_STDOUT, &line);
        }
        assert_eq!(out.dropped, 7);
        // Room again: the count goes first, then the line.
        out.queue.clear();
        out.push(KIND_STDOUT, b"after");
        let got = frames(&out);
        assert_eq!(got[0], (KIND_DROPPED, 7u64.to_le_bytes().to_vec()));
        assert_eq!(got[1], (KIND_STDOUT, b"after".to_vec()));
    }

    #[test]
    fn bad_frames_stop_the_dispatch_with_a_reason() {
        let mut buf = vec![9, 1, 0, 0, 0, b'z'];
        assert!(dispatch(&mut buf, "c", 1)
            .unwrap_err()
            .contains("unknown kind"));
        let mut buf = vec![1];
        buf.extend(u32::MAX.to_le_bytes());
        assert!(dispatch(&mut buf, "c", 1).unwrap_err().contains("bytes"));
        // A frame cut short waits for the rest.
        let mut buf = vec![1, 5, 0, 0, 0, b'a'];
        dispatch(&mut buf, "c", 1).unwrap();
        assert_eq!(buf.len(), 6);
    }
}
