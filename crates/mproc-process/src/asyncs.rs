//! Awaiting a child (the `async` feature): [`Process::join_async`] and
//! `JoinHandle: IntoFuture`.
//!
//! Runtime-agnostic (std `Waker`s). How the task is woken when the child
//! ends depends on who its parent is:
//!
//! - a forkserver's child (the Linux default): the thread that files the
//!   server's reports wakes it — no thread waits for the child;
//! - a child of our own (spawn, fork) under a tokio runtime, with the
//!   `tokio` feature on Linux: its pidfd, registered with the runtime's
//!   reactor (`AsyncFd`);
//! - otherwise: one watcher thread per awaited child, asleep in the same
//!   wait as [`Process::join`] (see `mproc_shm::waker`).
//!
//! Dropping the future stops the waiting and nothing else: the child runs
//! on, and the handle still joins it.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;

use crate::child::AsyncWait;
use crate::error::ProcessError;
use crate::process::Process;
use crate::spawn::{JoinError, JoinHandle};

/// The future of [`Process::join_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Join<'a> {
    process: &'a Process,
    wait: AsyncWait,
}

impl Future for Join<'_> {
    type Output = Result<(), ProcessError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(child) = this.process.child() else {
            return Poll::Ready(Err(ProcessError::NotStarted));
        };
        match child.poll_ended(cx, &mut this.wait) {
            Poll::Ready(_) => {
                // Reaped: let the handle forget it as `join` does.
                let _ = this.process.join();
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Process {
    /// Waits for the child to end, as [`join`](Process::join), without
    /// blocking the task's thread (the `async` feature).
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`] before `start`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use mproc_process::Process;
    ///
    /// fn work(n: u64) {
    ///     println!("{}", n * n);
    /// }
    ///
    /// # futures_executor::block_on(async {
    /// let mut p = Process::new(work, 7);
    /// p.start()?;
    /// p.join_async().await?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), mproc_process::ProcessError>(())
    /// # }).unwrap();
    /// ```
    pub fn join_async(&self) -> Join<'_> {
        Join {
            process: self,
            wait: AsyncWait::default(),
        }
    }
}

/// The future of an awaited [`JoinHandle`]: the child's value.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct JoinFuture<R> {
    handle: Option<JoinHandle<R>>,
    wait: AsyncWait,
}

impl<R: DeserializeOwned> Future for JoinFuture<R> {
    type Output = Result<R, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(handle) = this.handle.as_ref() else {
            return Poll::Ready(Err(JoinError::Start(ProcessError::NotStarted)));
        };
        if let Some(child) = handle.process().and_then(Process::child) {
            if child.poll_ended(cx, &mut this.wait).is_pending() {
                return Poll::Pending;
            }
        }
        // Ended (or never started): `join` returns at once.
        match this.handle.take() {
            Some(h) => Poll::Ready(h.join()),
            None => Poll::Ready(Err(JoinError::Start(ProcessError::NotStarted))),
        }
    }
}

impl<R> Unpin for JoinFuture<R> {}

/// `spawn(f, args).await`: the child's value without blocking the task's
/// thread (the `async` feature).
///
/// # Examples
///
/// ```no_run
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// # futures_executor::block_on(async {
/// let sum = mproc_process::spawn(add, (2, 3)).await?;
/// assert_eq!(sum, 5);
/// # Ok::<(), mproc_process::JoinError>(())
/// # }).unwrap();
/// ```
impl<R: DeserializeOwned> IntoFuture for JoinHandle<R> {
    type Output = Result<R, JoinError>;
    type IntoFuture = JoinFuture<R>;

    fn into_future(self) -> JoinFuture<R> {
        JoinFuture {
            handle: Some(self),
            wait: AsyncWait::default(),
        }
    }
}
