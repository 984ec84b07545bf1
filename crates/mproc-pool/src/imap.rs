//! `imap` and `imap_unordered`: lazy, bounded, in flat memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::Work;
use crate::chunk::decode_each;
use crate::{Pool, PoolError};

/// Makes the job for a chunk of items.
pub(crate) type MakeWork<A> = Box<dyn Fn(&[A]) -> Result<Work, PoolError> + Send + Sync>;

struct Shared<R> {
    done: Mutex<HashMap<u64, Vec<Result<R, PoolError>>>>,
    arrived: Condvar,
}

/// The iterator of [`Pool::imap`] (in input order) and
/// [`Pool::imap_unordered`] (in completion order).
///
/// It pulls its input lazily, on the thread that iterates, and keeps at most
/// a bounded number of chunks in flight, so an endless input runs in flat
/// memory. Each item is the task's result or the pool's error for that item
/// (a panic, or the death of the worker that ran its chunk).
pub struct Imap<'p, A, R, I> {
    pool: &'p Pool,
    make: MakeWork<A>,
    input: I,
    chunksize: usize,
    ordered: bool,
    window: u64,
    shared: Arc<Shared<R>>,
    submitted: u64,
    taken: u64,
    exhausted: bool,
    buffer: VecDeque<Result<R, PoolError>>,
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
                done: Mutex::new(HashMap::new()),
                arrived: Condvar::new(),
            }),
            submitted: 0,
            taken: 0,
            exhausted: false,
            buffer: VecDeque::new(),
            refused,
            _args: std::marker::PhantomData,
        }
    }

    /// Items per task (default 1, as CPython). Set it before iterating.
    ///
    /// # Errors
    ///
    /// [`PoolError::ZeroChunksize`] for 0.
    pub fn chunksize(mut self, chunksize: usize) -> Result<Self, PoolError> {
        if chunksize == 0 {
            return Err(PoolError::ZeroChunksize);
        }
        self.chunksize = chunksize;
        Ok(self)
    }

    /// Chunks in flight at most (default: 4 per worker, at least 128).
    pub fn window(mut self, chunks: usize) -> Self {
        self.window = chunks.max(1) as u64;
        self
    }

    /// Sends chunks while the window has room and the input lasts.
    fn fill(&mut self) {
        while !self.exhausted && self.submitted - self.taken < self.window {
            let chunk: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.exhausted = true;
                return;
            }
            let (index, len) = (self.submitted, chunk.len());
            self.submitted += 1;
            let shared = self.shared.clone();
            let file = move |items: Vec<Result<R, PoolError>>| {
                shared.done.lock().insert(index, items);
                shared.arrived.notify_all();
            };
            match (self.make)(&chunk) {
                Ok(work) => self.pool.scheduler().submit(
                    work,
                    len,
                    Box::new(move |out| {
                        let items = match out.and_then(|b| decode_each::<R>(&b)) {
                            Ok(items) => items,
                            Err(e) => (0..len).map(|_| Err(e.clone())).collect(),
                        };
                        file(items);
                    }),
                    true,
                ),
                Err(e) => file((0..len).map(|_| Err(e.clone())).collect()),
            }
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
        if let Some(e) = self.refused.take() {
            self.exhausted = true;
            return Some(Err(e));
        }
        loop {
            if let Some(item) = self.buffer.pop_front() {
                return Some(item);
            }
            self.fill();
            if self.taken == self.submitted {
                return None;
            }
            let mut done = self.shared.done.lock();
            let items = loop {
                let key = if self.ordered {
                    Some(self.taken)
                } else {
                    done.keys().next().copied()
                };
                if let Some(items) = key.and_then(|k| done.remove(&k)) {
                    break items;
                }
                self.shared.arrived.wait(&mut done);
            };
            drop(done);
            self.taken += 1;
            self.buffer.extend(items);
        }
    }
}

impl<A, R, I> std::fmt::Debug for Imap<'_, A, R, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("in_flight", &(self.submitted - self.taken))
            .finish()
    }
}
