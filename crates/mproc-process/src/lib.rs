//! Processes for mproc: run a function or a struct target in a child.
//!
//! - [`spawn`] — `std::thread::spawn` for processes: `spawn(f, args)`
//!   runs `f` in a child and [`JoinHandle::join`] returns its value, or a
//!   [`JoinError`] that tells a panic (with its message), an exit code and a
//!   signal apart; [`Builder`] for a name, a daemon or a start method.
//! - [`Process`] — Python's `multiprocessing.Process`: `start`, `join`,
//!   `join_timeout`, `is_alive`, `terminate`, `kill`, `pid`, `exitcode`
//!   (negative for a signal), `panic_message`, daemons, `detach`.
//! - [`StartMethod`] — [`Spawn`](StartMethod::Spawn) (re-execute this
//!   binary), [`Forkserver`](StartMethod::Forkserver) (a helper forks on
//!   request) or [`Fork`](StartMethod::Fork); [`set_start_method`].
//! - [`Target`] — a serde struct with `run(self)`: the Rust form of a
//!   `Process` subclass.
//! - [`output`] — children's stdout and stderr lines (and `tracing`
//!   events) forwarded to the parent, tagged `[name]`, whole, flushed
//!   before `join` returns, never blocking a child
//!   ([`Process::forward_output`], [`set_forward_output`],
//!   [`set_output_sink`]).
//! - [`current_process`], [`parent_process`] (with
//!   [`is_alive`](ProcessInfo::is_alive)), [`active_children`],
//!   [`cpu_count`], [`exit`].
//!
//! Targets are `fn` items (or closures that capture nothing) of up to eight
//! arguments, passed as one value — the argument itself, or a tuple for
//! several: `spawn(add, (2, 3))`. They cross to a spawned child as a
//! [`RemoteFn`](mproc_call::RemoteFn), checked against the binary's build
//! id before anything runs, with their arguments (and a `spawn`'s result)
//! serialized by serde + postcard. Arguments and results may carry mproc
//! handles (segments, locks, queues…): they arrive working under every
//! start method. A constructor that runs
//! before `main` boots spawned children, so this works in any binary —
//! `cargo test` and nextest harnesses included — without an `init()` call;
//! and it prepares them as Rust's runtime prepares `main` (SIGPIPE ignored,
//! stack overflows reported, panics printed under the process's name).
//!
//! Spawn and forkserver children receive stdin, stdout, stderr and the
//! descriptors of the handles passed to them, nothing else (every other
//! descriptor is closed at exec); forkserver children also start in the
//! working directory and with the environment of their parent at `start()`.
//! Fork children inherit what `fork` gives.
//!
//! Every child is reaped (never with `waitpid(-1)`): by `join`, by a dropped
//! handle once it has ended, by [`active_children`], by the next `start`, in
//! the background once [detached](Process::detach), and at exit, when
//! non-daemon children are joined and daemon children terminated (CPython's
//! rules; a daemon that ignores SIGTERM is killed after
//! [`DAEMON_EXIT_GRACE`]). Exit statuses are kept per child, never by a
//! bare pid. Daemon children also die with their parent *process*, however
//! it ends and whichever thread started them (a lifeline pipe they watch).
//!
//! # Examples
//!
//! A value back from a child:
//!
//! ```no_run
//! fn mean(xs: Vec<f64>, weight: f64) -> f64 {
//!     weight * xs.iter().sum::<f64>() / xs.len() as f64
//! }
//!
//! let m = mproc_process::spawn(mean, (vec![1.0, 2.0, 3.0], 2.0)).join()?;
//! assert_eq!(m, 4.0);
//! # Ok::<(), mproc_process::JoinError>(())
//! ```
//!
//! A `Process`, as in Python:
//!
//! ```no_run
//! use mproc_process::{Process, StartMethod};
//!
//! fn report(name: String, x: u64) -> Result<(), String> {
//!     println!("{name}: {}", x * x);
//!     Ok(())
//! }
//!
//! let mut p = Process::new(report, ("square".to_string(), 7))
//!     .start_method(StartMethod::Spawn);
//! p.start()?;
//! p.join()?;
//! assert_eq!(p.exitcode(), Some(0));
//! # Ok::<(), mproc_process::ProcessError>(())
//! ```
//!
//! # Platform support
//!
//! Linux and macOS. The default start method is the forkserver on Linux and
//! spawn on macOS (Python 3.14's choice). On Linux a child is watched by its
//! pidfd (Linux 5.3+), elsewhere by short naps; spawned children's extra
//! descriptors are closed with `close_range` (Linux 5.11+), elsewhere one by
//! one up to the descriptor limit (capped at 65,536). macOS has no `pipe2`,
//! so its pipes become close-on-exec a call after they are made.

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod sys;

mod state;

#[cfg(feature = "async")]
mod asyncs;
mod boot;
mod child;
mod entry;
mod error;
mod exit;
mod forkserver;
mod lifeline;
mod method;
pub mod output;
mod payload;
mod process;
mod registry;
mod report;
mod spawn;
mod target;

#[cfg(feature = "failpoints")]
pub use boot::DIE_AT_ENV;
pub use error::ProcessError;
pub use exit::exit;
pub use forkserver::{forkserver_pid, stop_forkserver};
pub use method::{get_start_method, set_start_method, StartMethod};
pub use output::{set_forward_output, set_output_sink, OutputKind, OutputLine};
pub use process::Process;
pub use registry::{
    active_children, cpu_count, current_process, parent_process, ProcessInfo, DAEMON_EXIT_GRACE,
};
pub use spawn::{spawn, Builder, JoinError, JoinHandle};
pub use target::{Outcome, Target};

#[cfg(feature = "async")]
pub use asyncs::{Join, JoinFuture};
