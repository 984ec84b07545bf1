//! Chunks: a call's items cut into jobs, run in a worker, and their results
//! encoded for the way back.
//!
//! # The results' encoding
//!
//! A chunk's results travel as postcard of
//!
//! ```text
//! enum ChunkOut<R> { All(Vec<R>), Each(Vec<Result<R, String>>) }
//! ```
//!
//! `All` when every item succeeded (the common case: one tag for the whole
//! chunk), `Each` with each item's value or panic message otherwise. A
//! third form, `Items(Vec<ItemOut<R>>)`, is what the local backend puts
//! together from a *run* — a job whose items are separate tasks, each
//! reported on its own by the worker — where one item may have failed
//! because its worker died. Since
//! postcard simply concatenates, a worker that holds each item's result
//! already encoded (a remote worker running a named task) builds the same
//! bytes without knowing `R`: [`ChunkResults`].

use std::cell::Cell;

use mproc_call::{catch_panic, ContextFn, RemoteFn};
use mproc_shm::transfer::{self, Message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backend::{LocalInput, Runner};
use crate::error::{PoolError, TaskError};

thread_local! {
    /// Set while a task runs: a worker's panic hook stays quiet then (the
    /// panic goes back to the caller; CPython's workers print nothing).
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Whether a task is running on this thread (for a worker's panic hook).
pub fn in_task() -> bool {
    IN_TASK.with(Cell::get)
}

/// Runs one item, catching its panic.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    IN_TASK.with(|t| t.set(true));
    let r = catch_panic(f);
    IN_TASK.with(|t| t.set(false));
    r
}

#[derive(Serialize)]
enum ChunkOutRef<'a, R> {
    All(&'a [R]),
    Each(&'a [Result<R, String>]),
}

#[derive(Deserialize)]
enum ChunkOut<R> {
    All(Vec<R>),
    Each(Vec<Result<R, String>>),
    Items(Vec<ItemOut<R>>),
}

/// One item's outcome in a run's results (see the module docs).
#[derive(Serialize, Deserialize)]
enum ItemOut<R> {
    Ok(R),
    Panicked(String),
    Died { pid: u32, signal: Option<i32> },
    Refused(String),
}

/// The results of a run put together from its items' outcomes, each item's
/// value encoded on its own (by [`transfer::encode_from`], numbering the
/// descriptors after those of the items before it): one message in the
/// chunk format, whose table is the items' tables one after the other.
///
/// `items` must yield `count` pieces (a chunk that says otherwise fails to
/// decode); `size` is the room their bytes need, for the buffer.
pub(crate) fn run_output<'a>(
    items: impl Iterator<Item = Piece<'a>>,
    count: usize,
    size: usize,
) -> Result<Message, String> {
    let mut bytes = Vec::with_capacity(size + 2 * count + 20);
    let mut fds = transfer::FdTable::new();
    push_varint(&mut bytes, 2);
    push_varint(&mut bytes, count as u64);
    let head = |out: &mut Vec<u8>, item: &ItemOut<()>| {
        postcard::to_extend(item, std::mem::take(out))
            .map(|v| *out = v)
            .map_err(|e| format!("cannot encode a run's results: {e}"))
    };
    for item in items {
        match item {
            Piece::Value(value) => {
                push_varint(&mut bytes, 0);
                bytes.extend_from_slice(value);
            }
            Piece::Sent(Ok(m)) => {
                push_varint(&mut bytes, 0);
                bytes.extend_from_slice(&m.bytes);
                for fd in m.fds.into_vec() {
                    fds.push(fd);
                }
            }
            Piece::Sent(Err(TaskError::Panicked { message })) => {
                head(&mut bytes, &ItemOut::Panicked(message))?
            }
            Piece::Sent(Err(TaskError::WorkerDied { pid, signal })) => {
                head(&mut bytes, &ItemOut::Died { pid, signal })?
            }
            Piece::Sent(Err(other)) => head(&mut bytes, &ItemOut::Refused(other.to_string()))?,
        }
    }
    Ok(Message { bytes, fds })
}

/// One item's outcome for [`run_output`].
pub(crate) enum Piece<'a> {
    /// Its value's bytes, holding no handles.
    Value(&'a [u8]),
    /// Its value as a message (its handles numbered in the run), or its
    /// failure.
    Sent(Result<Message, TaskError>),
}

/// What the worker does with each item of a run: installed (by
/// [`with_run`]) around the runner's call, which then runs the items one
/// by one and hands each outcome here instead of returning them together.
pub(crate) trait RunSink {
    /// The first item to run: those before it ran in an earlier delivery.
    fn skip(&self) -> usize;
    /// How many descriptors the results of the items before `skip` hold.
    fn fd_base(&self) -> u32;
    /// Item `index` starts now.
    fn start(&mut self, index: usize);
    /// Item `index`'s outcome, its value encoded on its own: how many of
    /// its descriptors reached the parent (the next item's are numbered
    /// after them), or `None` when the run must stop (the worker is to
    /// end).
    fn done(&mut self, index: usize, outcome: Result<Message, TaskError>) -> Option<u32>;
    /// A report failed (or the sink was lost): the worker is to end.
    fn stopped(&self) -> bool;
}

thread_local! {
    static RUN: std::cell::RefCell<Option<Box<dyn RunSink>>> = const { std::cell::RefCell::new(None) };
}

/// Calls `f` with `sink` installed for the runner it calls, and gives the
/// sink back.
pub(crate) fn with_run<T>(sink: Box<dyn RunSink>, f: impl FnOnce() -> T) -> (T, Box<dyn RunSink>) {
    RUN.with(|r| *r.borrow_mut() = Some(sink));
    let out = f();
    let sink = RUN.with(|r| r.borrow_mut().take());
    // The runner puts it back before it returns; should it not have, the
    // sink it took is gone with it.
    (out, sink.unwrap_or_else(|| Box::new(Gone)))
}

/// A sink that stops every run: what is left if a runner lost the real one.
struct Gone;

impl RunSink for Gone {
    fn skip(&self) -> usize {
        usize::MAX
    }
    fn fd_base(&self) -> u32 {
        0
    }
    fn start(&mut self, _: usize) {}
    fn done(&mut self, _: usize, _: Result<Message, TaskError>) -> Option<u32> {
        None
    }
    fn stopped(&self) -> bool {
        true
    }
}

/// Runs the items of a run one by one, each outcome to `sink`.
fn run_each<T, R: Serialize>(
    items: Vec<T>,
    f: &mut impl FnMut(T) -> R,
    sink: &mut dyn RunSink,
) -> Message {
    let skip = sink.skip();
    let mut fds = sink.fd_base();
    for (index, item) in items.into_iter().enumerate() {
        if index < skip {
            continue;
        }
        sink.start(index);
        let outcome = match guarded(|| f(item)) {
            Ok(v) => transfer::encode_from(&v, fds)
                .map_err(|e| TaskError::Refused(format!("cannot encode the task's result: {e}"))),
            Err(message) => Err(TaskError::Panicked { message }),
        };
        match sink.done(index, outcome) {
            Some(sent) => fds += sent,
            None => break,
        }
    }
    Message {
        bytes: Vec::new(),
        fds: transfer::FdTable::new(),
    }
}

/// Calls `f` on each item, then encodes the outcomes (with the handle
/// transfer: a result may carry handles).
fn run_items<T, R: Serialize>(items: Vec<T>, mut f: impl FnMut(T) -> R) -> Result<Message, String> {
    if let Some(mut sink) = RUN.with(|r| r.borrow_mut().take()) {
        let out = run_each(items, &mut f, &mut *sink);
        RUN.with(|r| *r.borrow_mut() = Some(sink));
        return Ok(out);
    }
    let mut all: Vec<R> = Vec::with_capacity(items.len());
    let mut each: Option<Vec<Result<R, String>>> = None;
    for item in items {
        let r = guarded(|| f(item));
        match (&mut each, r) {
            (Some(each), r) => each.push(r),
            (None, Ok(v)) => all.push(v),
            (None, Err(e)) => {
                let mut v: Vec<Result<R, String>> = all.drain(..).map(Ok).collect();
                v.push(Err(e));
                each = Some(v);
            }
        }
    }
    let out = match &each {
        None => ChunkOutRef::All(&all),
        Some(each) => ChunkOutRef::Each(each),
    };
    transfer::encode(&out).map_err(|e| format!("cannot encode the task's results: {e}"))
}

/// The runner of chunks of `f: A -> R` in a worker of this build: the input
/// is `(RemoteFn<A, R>, Vec<A>)`, encoded with the handle transfer.
fn run_chunk<A, R>(input: Message) -> Result<Message, String>
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
{
    let (f, items): (RemoteFn<A, R>, Vec<A>) =
        transfer::decode(input).map_err(|e| format!("cannot decode the task's arguments: {e}"))?;
    let f = f.resolve().map_err(|e| e.to_string())?;
    run_items(items, f)
}

/// A runner and its input, encoded with the handle transfer.
fn job_input<T: Serialize + ?Sized>(
    runner: Runner,
    input: &T,
) -> Result<(Runner, LocalInput), PoolError> {
    let msg = transfer::encode(input).map_err(|e| PoolError::Codec(e.to_string()))?;
    Ok((
        runner,
        LocalInput {
            bytes: msg.bytes,
            fds: msg.fds.into_vec(),
        },
    ))
}

/// The runner for `f: A -> R` and the input of one chunk of its items.
pub(crate) fn same_build<A, R>(
    f: RemoteFn<A, R>,
    items: &[A],
) -> Result<(Runner, LocalInput), PoolError>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    job_input(RemoteFn::new(run_chunk::<A, R>), &(f, items))
}

/// What a `map_reduce` chunk's input decodes to.
type ReduceInput<A, R> = (RemoteFn<A, R>, RemoteFn<(R, R), R>, Vec<A>);

/// The runner of `map_reduce` chunks: the input is
/// `(RemoteFn<A, R>, RemoteFn<(R, R), R>, Vec<A>)`; the output is the
/// chunk's items mapped and reduced to one value (`All` of one), or the
/// first panic (`Each` of one error).
fn run_chunk_reduce<A, R>(input: Message) -> Result<Message, String>
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
{
    let (f, g, items): ReduceInput<A, R> =
        transfer::decode(input).map_err(|e| format!("cannot decode the task's arguments: {e}"))?;
    let f = f.resolve().map_err(|e| e.to_string())?;
    let g = g.resolve().map_err(|e| e.to_string())?;
    let mut acc: Option<R> = None;
    for item in items {
        let before = acc.take();
        match guarded(|| {
            let v = f(item);
            match before {
                None => v,
                Some(a) => g((a, v)),
            }
        }) {
            Ok(v) => acc = Some(v),
            Err(message) => {
                let failed: [Result<R, String>; 1] = [Err(message)];
                return transfer::encode(&ChunkOutRef::Each(&failed))
                    .map_err(|e| format!("cannot encode the task's results: {e}"));
            }
        }
    }
    let out = match &acc {
        Some(v) => ChunkOutRef::All(std::slice::from_ref(v)),
        None => ChunkOutRef::All(&[]),
    };
    transfer::encode(&out).map_err(|e| format!("cannot encode the task's results: {e}"))
}

/// The runner and the input of one `map_reduce` chunk: `f` over the items,
/// reduced with `g` in the worker.
pub(crate) fn same_build_reduce<A, R>(
    f: RemoteFn<A, R>,
    g: RemoteFn<(R, R), R>,
    items: &[A],
) -> Result<(Runner, LocalInput), PoolError>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    job_input(RemoteFn::new(run_chunk_reduce::<A, R>), &(f, g, items))
}

/// The runner of chunks of `f(&ctx, item)`: the input is
/// `(ContextFn<C, A, R>, C, Vec<A>)`, the context decoded once per chunk.
fn run_chunk_with<C, A, R>(input: Message) -> Result<Message, String>
where
    C: DeserializeOwned + Send + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
{
    let (f, ctx, items): (ContextFn<C, A, R>, C, Vec<A>) =
        transfer::decode(input).map_err(|e| format!("cannot decode the task's arguments: {e}"))?;
    let f = f.resolve().map_err(|e| e.to_string())?;
    run_items(items, |a| f(&ctx, a))
}

/// The runner for `f(&ctx, item)` and the input of one chunk.
pub(crate) fn same_build_with<C, A, R>(
    f: ContextFn<C, A, R>,
    ctx: &C,
    items: &[A],
) -> Result<(Runner, LocalInput), PoolError>
where
    C: Serialize + DeserializeOwned + Send + 'static,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    job_input(RemoteFn::new(run_chunk_with::<C, A, R>), &(f, ctx, items))
}

/// Each item postcard-encoded on its own, for a named task.
pub(crate) fn named_items<A: Serialize>(items: &[A]) -> Result<Vec<Vec<u8>>, PoolError> {
    items
        .iter()
        .map(|a| {
            postcard::to_allocvec(a).map_err(|e| {
                PoolError::Codec(format!(
                    "{e} (a task for another machine carries data; handles cannot cross)"
                ))
            })
        })
        .collect()
}

/// A chunk's results, item by item, as [`TaskError`]s for the failures.
pub(crate) fn decode_each<R: DeserializeOwned>(
    output: Message,
) -> Result<Vec<Result<R, PoolError>>, PoolError> {
    decode::<R>(output).map(decode_out)
}

/// A decoded chunk's results, item by item.
fn decode_out<R>(out: ChunkOut<R>) -> Vec<Result<R, PoolError>> {
    match out {
        ChunkOut::All(v) => v.into_iter().map(Ok).collect(),
        ChunkOut::Each(v) => v
            .into_iter()
            .map(|r| r.map_err(|message| PoolError::Task(TaskError::Panicked { message })))
            .collect(),
        ChunkOut::Items(v) => v
            .into_iter()
            .map(|item| match item {
                ItemOut::Ok(r) => Ok(r),
                ItemOut::Panicked(message) => Err(PoolError::Task(TaskError::Panicked { message })),
                ItemOut::Died { pid, signal } => {
                    Err(PoolError::Task(TaskError::WorkerDied { pid, signal }))
                }
                ItemOut::Refused(why) => Err(PoolError::Task(TaskError::Refused(why))),
            })
            .collect(),
    }
}

/// A chunk's results as one list, or the first failure.
pub(crate) fn decode_all<R: DeserializeOwned>(output: Message) -> Result<Vec<R>, PoolError> {
    match decode::<R>(output)? {
        // The common case, taken as it is (no list of `Result`s between).
        ChunkOut::All(v) => Ok(v),
        other => decode_out(other).into_iter().collect(),
    }
}

fn decode<R: DeserializeOwned>(output: Message) -> Result<ChunkOut<R>, PoolError> {
    if !output.fds.is_empty() {
        // Handles inside: decoded with their descriptors.
        return transfer::decode::<ChunkOut<R>>(output).map_err(|e| {
            PoolError::Codec(format!(
                "cannot decode a task's results as {}: {e}",
                std::any::type_name::<R>()
            ))
        });
    }
    match postcard::take_from_bytes::<ChunkOut<R>>(&output.bytes) {
        Ok((out, [])) => Ok(out),
        Ok((_, rest)) => Err(PoolError::Codec(format!(
            "{} bytes left over after a task's results",
            rest.len()
        ))),
        Err(e) => Err(PoolError::Codec(format!(
            "cannot decode a task's results as {}: {e}",
            std::any::type_name::<R>()
        ))),
    }
}

/// Builds a chunk's encoded results from each item's result already
/// encoded (postcard of `R`), without knowing `R`: what a worker running
/// named tasks returns in [`Event::Done`](crate::Event::Done).
///
/// # Examples
///
/// ```
/// use mproc_pool::ChunkResults;
///
/// let mut out = ChunkResults::new();
/// out.push(Ok(postcard::to_allocvec(&7u32)?));
/// out.push(Err("boom".into()));
/// let bytes = out.finish();
/// # let _ = bytes;
/// # Ok::<(), postcard::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct ChunkResults {
    items: Vec<Result<Vec<u8>, String>>,
}

impl ChunkResults {
    /// No results yet.
    pub fn new() -> ChunkResults {
        ChunkResults::default()
    }

    /// The next item's result: its postcard bytes, or a panic's message.
    pub fn push(&mut self, item: Result<Vec<u8>, String>) {
        self.items.push(item);
    }

    /// The encoded results.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        let all_ok = self.items.iter().all(Result::is_ok);
        push_varint(&mut out, u64::from(!all_ok));
        push_varint(&mut out, self.items.len() as u64);
        for item in self.items {
            match item {
                Ok(bytes) if all_ok => out.extend_from_slice(&bytes),
                Ok(bytes) => {
                    push_varint(&mut out, 0);
                    out.extend_from_slice(&bytes);
                }
                Err(message) => {
                    push_varint(&mut out, 1);
                    push_varint(&mut out, message.len() as u64);
                    out.extend_from_slice(message.as_bytes());
                }
            }
        }
        out
    }
}

/// postcard's varint (LEB128) of `n`.
fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Runs a job's work here, in this process: what a backend's worker does
/// with a [`Job`](crate::Job) it was given. `registry` holds the tasks a
/// [`Work::Named`](crate::Work::Named) job may name (a backend of named tasks passes its own).
///
/// # Errors
///
/// [`TaskError::Refused`] when the job cannot run here: its input does not
/// decode, it names a task that is not registered (or with other types), or
/// it comes from another build.
///
/// # Examples
///
/// A backend's worker thread, in short:
///
/// ```no_run
/// use mproc_pool::{run_job, Event, Events, Job};
///
/// fn work(job: Job, events: &dyn Events) {
///     events.event(match run_job(&job.work, None) {
///         Ok(output) => Event::Done { job: job.id, output },
///         Err(error) => Event::Failed { job: job.id, error },
///     });
/// }
/// # let _ = work;
/// ```
pub fn run_job(
    work: &crate::Work,
    registry: Option<&mproc_call::Registry>,
) -> Result<Vec<u8>, TaskError> {
    use crate::Work;
    match work {
        Work::SameBuild { runner, input } => {
            let msg = input
                .message()
                .map_err(|e| TaskError::Refused(format!("cannot pass the job's handles: {e}")))?;
            match runner.call(msg) {
                // A backend that carries no descriptors cannot bring these
                // back (its results would name descriptors it dropped).
                Ok(Ok(output)) if !output.fds.is_empty() => Err(TaskError::Refused(
                    "the results hold handles, which only the local pool brings back".into(),
                )),
                Ok(Ok(output)) => Ok(output.bytes),
                Ok(Err(why)) => Err(TaskError::Refused(why)),
                Err(why) => Err(TaskError::Refused(why.to_string())),
            }
        }
        Work::Named { task, types, items } => {
            let t = registry.and_then(|r| r.get(task)).ok_or_else(|| {
                TaskError::Refused(format!("no task named {task:?} is registered here"))
            })?;
            if t.types() != *types {
                return Err(TaskError::Refused(format!(
                    "task {task:?} is registered here with other argument or result types"
                )));
            }
            let mut out = ChunkResults::new();
            for item in items.iter() {
                IN_TASK.with(|f| f.set(true));
                let r = t.run(item);
                IN_TASK.with(|f| f.set(false));
                match r {
                    Ok(bytes) => out.push(Ok(bytes)),
                    Err(mproc_call::CallError::Panicked(message)) => out.push(Err(message)),
                    Err(e) => return Err(TaskError::Refused(e.to_string())),
                }
            }
            Ok(out.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_results_decode_as_the_workers_own() {
        for outcomes in [
            vec![Ok(1u64), Ok(300), Ok(u64::MAX)],
            vec![Ok(5), Err("boom".to_string()), Ok(6)],
            vec![],
        ] {
            let mut b = ChunkResults::new();
            for o in &outcomes {
                b.push(match o {
                    Ok(v) => Ok(postcard::to_allocvec(v).unwrap()),
                    Err(m) => Err(m.clone()),
                });
            }
            let got = decode_each::<u64>(Message {
                bytes: b.finish(),
                fds: transfer::FdTable::new(),
            })
            .unwrap();
            let want: Vec<Result<u64, PoolError>> = outcomes
                .into_iter()
                .map(|o| o.map_err(|message| PoolError::Task(TaskError::Panicked { message })))
                .collect();
            assert_eq!(got, want);
        }
    }

    /// A run's results, put together from each item's own message (with a
    /// handle numbered after the items before it), decode as one chunk —
    /// the dead worker's item as `WorkerDied`.
    #[test]
    fn a_runs_items_put_together_decode_as_one_chunk() {
        let a = mproc_shm::Segment::anonymous(4096).unwrap();
        let b = mproc_shm::Segment::anonymous(8192).unwrap();
        let first = transfer::encode_from(&(3u64, a), 0).unwrap();
        let second = transfer::encode_from(&(4u64, b), 1).unwrap();
        let pieces = vec![
            Piece::Sent(Ok(first)),
            Piece::Sent(Err(TaskError::WorkerDied {
                pid: 42,
                signal: Some(9),
            })),
            Piece::Sent(Err(TaskError::Panicked {
                message: "boom".into(),
            })),
            Piece::Sent(Ok(second)),
        ];
        let out = run_output(pieces.into_iter(), 4, 0).unwrap();
        assert_eq!(out.fds.len(), 2);
        let got = decode_each::<(u64, mproc_shm::Segment)>(out).unwrap();
        assert_eq!(got.len(), 4);
        assert!(matches!(&got[0], Ok((3, s)) if s.len() == 4096));
        assert_eq!(
            got[1].as_ref().err(),
            Some(&PoolError::Task(TaskError::WorkerDied {
                pid: 42,
                signal: Some(9)
            }))
        );
        assert_eq!(
            got[2].as_ref().err(),
            Some(&PoolError::Task(TaskError::Panicked {
                message: "boom".into()
            }))
        );
        assert!(matches!(&got[3], Ok((4, s)) if s.len() == 8192));
    }

    /// Values from the item log (bytes without handles) and values sent as
    /// messages mix in one chunk, in the order given.
    #[test]
    fn logged_and_sent_values_decode_in_order() {
        let seven = postcard::to_allocvec(&7u64).unwrap();
        let nine = postcard::to_allocvec(&9u64).unwrap();
        let eight = transfer::encode(&8u64).unwrap();
        let pieces = vec![
            Piece::Value(&seven),
            Piece::Sent(Ok(eight)),
            Piece::Sent(Err(TaskError::Panicked {
                message: "boom".into(),
            })),
            Piece::Value(&nine),
        ];
        let out = run_output(pieces.into_iter(), 4, seven.len() + nine.len()).unwrap();
        let got = decode_each::<u64>(out).unwrap();
        assert_eq!(got[..2], [Ok(7), Ok(8)]);
        assert!(matches!(
            &got[2],
            Err(PoolError::Task(TaskError::Panicked { .. }))
        ));
        assert_eq!(got[3], Ok(9));
    }
}
