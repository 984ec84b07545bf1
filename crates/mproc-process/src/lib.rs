//! Processes for mproc: run a function or a struct target in a child.
//!
//! - [`Process`] — Python's `multiprocessing.Process`: `start`, `join`,
//!   `join_timeout`, `is_alive`, `terminate`, `kill`, `pid`, `exitcode`
//!   (negative for a signal), `panic_message`, daemons.
//! - [`StartMethod`] — [`Spawn`](StartMethod::Spawn) (re-execute this
//!   binary), [`Forkserver`](StartMethod::Forkserver) (a helper forks on
//!   request) or [`Fork`](StartMethod::Fork); [`set_start_method`].
//! - [`Target`] — a serde struct with `run(self)`: the Rust form of a
//!   `Process` subclass.
//! - [`current_process`], [`parent_process`], [`active_children`],
//!   [`cpu_count`], [`exit`].
//!
//! Targets are non-capturing `fn` items; they cross to a spawned child as
//! offsets from a symbol of this binary, with their arguments serialized by
//! serde + postcard. Arguments may carry mproc handles (segments, locks…):
//! they arrive working under every start method. A constructor that runs
//! before `main` boots spawned children, so this works in any binary —
//! `cargo test` and nextest harnesses included — without an `init()` call.
//!
//! Every child is reaped (never with `waitpid(-1)`): by `join`, by a dropped
//! handle once it has ended, by [`active_children`], by the next `start`,
//! and at exit, when non-daemon children are joined and daemon children
//! terminated (CPython's rules). Daemon children also die with their parent
//! on Linux (`PR_SET_PDEATHSIG`; note that Linux sends it when the *thread*
//! that started the child ends).
//!
//! # Examples
//!
//! ```no_run
//! use mproc_process::{Process, StartMethod};
//!
//! fn square(x: u64) -> Result<(), String> {
//!     println!("{}", x * x);
//!     Ok(())
//! }
//!
//! let mut p = Process::new(square, 7).start_method(StartMethod::Spawn);
//! p.start()?;
//! p.join()?;
//! assert_eq!(p.exitcode(), Some(0));
//! # Ok::<(), mproc_process::ProcessError>(())
//! ```
//!
//! # Platform support
//!
//! Linux and macOS. The default start method is the forkserver on Linux and
//! spawn on macOS (Python 3.14's choice). `join_timeout` waits on a pidfd on
//! Linux and polls elsewhere.

#![warn(missing_docs)]

mod sys;

mod boot;
mod forkserver;
mod process;
mod registry;
mod report;

pub use boot::FnOffset;
pub use forkserver::{forkserver_pid, stop_forkserver};
pub use process::{
    exit, get_start_method, set_start_method, Outcome, Process, ProcessError, StartMethod, Target,
};
pub use registry::{active_children, cpu_count, current_process, parent_process, ProcessInfo};
