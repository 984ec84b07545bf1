//! `imap` and `imap_unordered`: lazy, bounded, in flat memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{IdMap, Work};
use crate::chunk::decode_each;
use crate::pool::Handler;
use crate::{Pool, PoolError};

/// Makes the job for a chunk of items.
pub(crate) type MakeWork<A> = Box<dyn Fn(&[A]) -> Result<Work, PoolError> + Send + Sync>;

/// How long chunks pulled from a slow input may wait to be sent (and a
/// run, for items to fill it): the burst goes as it is then.
const SLOW_INPUT: Duration = Duration::from_millis(1);

/// Makes the hook of [`Imap::on_progress`].
type Hook = Box<dyn FnMut(u64, Option<u64>) + Send>;

struct Done {
    chunks: IdMap<Arrived>,
    /// The chunk the iterating thread sleeps for (`Some(u64::MAX)`: any
    /// chunk), if it sleeps: a chunk filed under another index does not
    /// wake it.
    awaited: Option<u64>,
    /// The task of a stream that found nothing to yield.
    #[cfg(feature = "async")]
    waker: Option<std::task::Waker>,
}

/// A chunk's outcome as it arrived: decoded by the iterating thread when it
/// takes it, not by the pool's result thread, which serves every call.
enum Arrived {
    Raw {
        out: Result<mproc_shm::transfer::Message, PoolError>,
        len: usize,
    },
    Failed {
        error: PoolError,
        len: usize,
    },
}

impl Arrived {
    /// One result per item, always: the length is what `size_hint` promised.
    fn items<R: DeserializeOwned>(self) -> Vec<Result<R, PoolError>> {
        let (out, len) = match self {
            Arrived::Failed { error, len } => {
                return (0..len).map(|_| Err(error.clone())).collect()
            }
            Arrived::Raw { out, len } => (out, len),
        };
        match out.and_then(decode_each::<R>) {
            Ok(items) if items.len() == len => items,
            Ok(items) => {
                let e = PoolError::Codec(format!(
                    "a chunk of {len} items came back with {} results",
                    items.len()
                ));
                (0..len).map(|_| Err(e.clone())).collect()
            }
            Err(e) => (0..len).map(|_| Err(e.clone())).collect(),
        }
    }
}

struct Shared {
    done: Mutex<Done>,
    arrived: Condvar,
}

/// What the iterator can do now without waiting.
enum Step<T> {
    Item(T),
    End,
    Wait,
}

/// The iterator of [`Pool::imap`] (in input order) and
/// [`Pool::imap_unordered`] (in completion order).
///
/// It pulls its input lazily, on the thread that iterates, and keeps at most
/// a bounded number of chunks in flight, so an endless input runs in flat
/// memory. Each item is the task's result or the pool's error for that item
/// (a panic, or the death of the worker that ran its chunk).
///
/// Its [`size_hint`](Iterator::size_hint) is exact when its input's is,
/// and it is an [`ExactSizeIterator`] when its input is: indicatif's
/// `.progress()` works on it directly and counts items, whatever the chunk
/// size. [`on_progress`](Imap::on_progress) takes a plain hook instead.
///
/// With the `async` feature it is also a `futures_core::Stream`: the pool's
/// result thread wakes the task, no thread waits for it. Submitting the
/// next chunks happens in `poll_next` and may wait briefly for room in a
/// worker's job pipe (backpressure).
pub struct Imap<'p, A, R, I> {
    pool: &'p Pool,
    make: MakeWork<A>,
    input: I,
    chunksize: usize,
    ordered: bool,
    window: u64,
    shared: Arc<Shared>,
    submitted: u64,
    taken: u64,
    exhausted: bool,
    /// The rest of the chunk being yielded.
    buffer: std::vec::IntoIter<Result<R, PoolError>>,
    /// Items sent and not yet yielded (the buffer's included).
    pending: u64,
    /// Items yielded.
    yielded: u64,
    progress: Option<Hook>,
    /// The pool's refusal, yielded once instead of any result.
    refused: Option<PoolError>,
    _args: std::marker::PhantomData<fn(A)>,
}

impl<'p, A, R, I> Imap<'p, A, R, I>
where
    A: Serialize,
    R: Serialize + DeserializeOwned + Send + 'static,
    I: Iterator<Item = A>,
{
    pub(crate) fn new(
        pool: &'p Pool,
        make: MakeWork<A>,
        input: I,
        ordered: bool,
        refused: Option<PoolError>,
    ) -> Self {
        Imap {
            pool,
            make,
            input,
            chunksize: 1,
            ordered,
            window: (4 * pool.processes() as u64).max(128),
            shared: Arc::new(Shared {
                done: Mutex::new(Done {
                    chunks: IdMap::default(),
                    awaited: None,
                    #[cfg(feature = "async")]
                    waker: None,
                }),
                arrived: Condvar::new(),
            }),
            submitted: 0,
            taken: 0,
            exhausted: false,
            buffer: Vec::new().into_iter(),
            pending: 0,
            yielded: 0,
            progress: None,
            refused,
            _args: std::marker::PhantomData,
        }
    }

    /// Items per task (default 1, as CPython). Set it before iterating.
    ///
    /// At 1, each item is a task of its own: its result or its error is its
    /// own, and a worker that dies fails only the item it ran. When tasks
    /// are very short, the pool still sends several to a worker at once
    /// (a *run*, see [`Builder::run_length`](crate::Builder::run_length)),
    /// so that chunk size 1 costs little more than larger chunks. A larger
    /// chunk size makes a chunk one task: a panic fails only its item, but
    /// a worker's death fails the whole chunk.
    ///
    /// # Errors
    ///
    /// [`PoolError::ZeroChunksize`] for 0.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let it = pool.imap(square, vec![1, 2, 3, 4, 5]).chunksize(2)?;
    /// assert_eq!(it.len(), 5); // items, not chunks
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn chunksize(mut self, chunksize: usize) -> Result<Self, PoolError> {
        if chunksize == 0 {
            return Err(PoolError::ZeroChunksize);
        }
        self.chunksize = chunksize;
        Ok(self)
    }

    /// Chunks (or runs) in flight at most (default: 4 per worker, at least
    /// 128). The window refills once half of it has been taken.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let n = pool.imap(square, 0..1_000).window(8).count();
    /// assert_eq!(n, 1_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn window(mut self, chunks: usize) -> Self {
        self.window = chunks.max(1) as u64;
        self
    }

    /// Calls `hook(done, total)` after each item is yielded: `done` counts
    /// items (never chunks), `total` is the number of items when the input
    /// says exactly how many it has (`None` otherwise).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let results: Vec<_> = pool
    ///     .imap(square, 0..1_000)
    ///     .chunksize(50)?
    ///     .on_progress(|done, total| eprint!("\r{done}/{}", total.unwrap_or(0)))
    ///     .collect();
    /// assert_eq!(results.len(), 1_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_progress(mut self, hook: impl FnMut(u64, Option<u64>) + Send + 'static) -> Self {
        self.progress = Some(Box::new(hook));
        self
    }

    /// Advances `bar` by one for each item yielded, and sets its length to
    /// the number of items when the input says exactly how many (the
    /// `progress` feature, indicatif). The bar is finished with the last
    /// item.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use indicatif::ProgressBar;
    ///
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// let pool = mproc_pool::Pool::new(2)?;
    /// let bar = ProgressBar::hidden();
    /// let n = pool.imap(square, 0..500).chunksize(25)?.progress_bar(bar.clone()).count();
    /// assert_eq!((n, bar.position()), (500, 500));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "progress")]
    pub fn progress_bar(self, bar: indicatif::ProgressBar) -> Self {
        self.on_progress(crate::progress::bar_hook(bar))
    }

    /// Sends chunks while the window has room and the input lasts — all
    /// at once, once the window is half empty: the pool sends them to its
    /// workers together, and the iterating thread yields results between
    /// refills instead of sending one chunk per result. From an input that
    /// is slow to give its items, what has been pulled goes every
    /// [`SLOW_INPUT`], and a run is cut short then: workers do not wait for
    /// a burst to fill.
    fn fill(&mut self) {
        if self.submitted - self.taken > self.window / 2 {
            return;
        }
        // At chunk size 1, tasks too short to be worth a job each go
        // several to a job, as a run: each stays a task of its own, failed
        // alone if its worker dies (see `Backend::run_length`).
        let run = if self.chunksize == 1 {
            self.pool.scheduler().run_length()
        } else {
            1
        };
        let mut jobs = Vec::new();
        let mut since = Instant::now();
        while !self.exhausted && self.submitted - self.taken < self.window {
            let want = self.chunksize.max(run);
            let mut chunk: Vec<A> = Vec::with_capacity(want.min(1024));
            let mut slow = false;
            while chunk.len() < want {
                let Some(item) = self.input.next() else {
                    self.exhausted = true;
                    break;
                };
                chunk.push(item);
                // A run is the pool's choice, not the caller's: it ends
                // early when the input is slow (a chunk never does).
                if run > 1 && chunk.len() % 8 == 0 && since.elapsed() >= SLOW_INPUT {
                    slow = true;
                    break;
                }
            }
            if chunk.is_empty() {
                break;
            }
            slow = slow || since.elapsed() >= SLOW_INPUT;
            let (index, len) = (self.submitted, chunk.len());
            self.submitted += 1;
            self.pending += len as u64;
            let shared = self.shared.clone();
            let file = move |items: Arrived| {
                let mut done = shared.done.lock();
                done.chunks.insert(index, items);
                #[cfg(feature = "async")]
                let waker = done.waker.take();
                let wake = done.awaited.is_some_and(|a| a == index || a == u64::MAX);
                drop(done);
                if wake {
                    shared.arrived.notify_all();
                }
                #[cfg(feature = "async")]
                if let Some(w) = waker {
                    w.wake();
                }
            };
            match (self.make)(&chunk) {
                Ok(work) => {
                    let handler: Handler = Box::new(move |out| file(Arrived::Raw { out, len }));
                    jobs.push((work, len, handler));
                }
                Err(error) => file(Arrived::Failed { error, len }),
            }
            if (slow || run == 1) && !jobs.is_empty() {
                let burst = std::mem::take(&mut jobs);
                self.pool.scheduler().submit_many(burst, run > 1, true);
                since = Instant::now();
            }
        }
        if !jobs.is_empty() {
            self.pool.scheduler().submit_many(jobs, run > 1, true);
        }
    }

    /// Whether the chunk to yield next has arrived.
    fn arrived(&self, done: &Done) -> bool {
        if self.ordered {
            done.chunks.contains_key(&self.taken)
        } else {
            !done.chunks.is_empty()
        }
    }

    /// Yields what can be yielded without waiting.
    fn step(&mut self) -> Step<Result<R, PoolError>> {
        if let Some(e) = self.refused.take() {
            self.exhausted = true;
            return Step::Item(Err(e));
        }
        loop {
            if let Some(item) = self.buffer.next() {
                self.pending -= 1;
                self.yielded += 1;
                if self.progress.is_some() {
                    let total = match self.size_hint() {
                        (lo, Some(hi)) if lo == hi => Some(self.yielded + lo as u64),
                        _ => None,
                    };
                    if let Some(hook) = self.progress.as_mut() {
                        hook(self.yielded, total);
                    }
                }
                return Step::Item(item);
            }
            self.fill();
            if self.taken == self.submitted {
                return Step::End;
            }
            let mut done = self.shared.done.lock();
            let key = if self.ordered {
                Some(self.taken)
            } else {
                done.chunks.keys().next().copied()
            };
            let Some(arrived) = key.and_then(|k| done.chunks.remove(&k)) else {
                return Step::Wait;
            };
            drop(done);
            self.taken += 1;
            self.buffer = arrived.items::<R>().into_iter();
        }
    }
}

impl<A, R, I> Iterator for Imap<'_, A, R, I>
where
    A: Serialize,
    R: Serialize + DeserializeOwned + Send + 'static,
    I: Iterator<Item = A>,
{
    type Item = Result<R, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.step() {
                Step::Item(item) => return Some(item),
                Step::End => return None,
                Step::Wait => {
                    let mut done = self.shared.done.lock();
                    while !self.arrived(&done) {
                        done.awaited = Some(if self.ordered { self.taken } else { u64::MAX });
                        self.shared.arrived.wait(&mut done);
                    }
                    done.awaited = None;
                }
            }
        }
    }

    /// Exact when the input's is: the items not yet pulled from the input
    /// plus those sent and not yet yielded.
    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.refused.is_some() {
            return (1, Some(1));
        }
        let (lo, hi) = if self.exhausted {
            (0, Some(0))
        } else {
            self.input.size_hint()
        };
        let pending = usize::try_from(self.pending).unwrap_or(usize::MAX);
        (
            lo.saturating_add(pending),
            hi.and_then(|h| h.checked_add(pending)),
        )
    }
}

impl<A, R, I> ExactSizeIterator for Imap<'_, A, R, I>
where
    A: Serialize,
    R: Serialize + DeserializeOwned + Send + 'static,
    I: ExactSizeIterator<Item = A>,
{
}

#[cfg(feature = "async")]
impl<A, R, I> futures_core::Stream for Imap<'_, A, R, I>
where
    A: Serialize,
    R: Serialize + DeserializeOwned + Send + 'static,
    I: Iterator<Item = A>,
{
    type Item = Result<R, PoolError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.step() {
                Step::Item(item) => return std::task::Poll::Ready(Some(item)),
                Step::End => return std::task::Poll::Ready(None),
                Step::Wait => {
                    let mut done = this.shared.done.lock();
                    if this.arrived(&done) {
                        continue;
                    }
                    // Under the lock a chunk is filed under: the next one
                    // to arrive finds this waker.
                    done.waker = Some(cx.waker().clone());
                    return std::task::Poll::Pending;
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        Iterator::size_hint(self)
    }
}

/// Nothing of an `Imap` is ever pinned in place (its input is pulled
/// through `&mut`), so it may move freely.
impl<A, R, I> Unpin for Imap<'_, A, R, I> {}

impl<A, R, I> std::fmt::Debug for Imap<'_, A, R, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("in_flight", &(self.submitted - self.taken))
            .finish()
    }
}
