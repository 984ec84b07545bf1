//! A server process that owns shared dicts, lists and values, for mproc:
//! Python's `multiprocessing.Manager`.
//!
//! - [`Manager`] — starts the server (a daemon child) and owns it;
//!   [`Builder`] adds TCP with an authkey and the update tasks.
//! - [`Dict`], [`List`], [`SharedValue`] — typed proxies: handles that
//!   travel to other processes (as arguments of `spawn`, `Process`, pool
//!   tasks) and reach the same object there.
//! - `update(task, …)` — an atomic read-modify-write *in the server*: the
//!   task is a function registered by name ([`task!`], [`Registry`]), so
//!   it works for clients on other machines too; no code crosses the wire.
//! - [`Client`] — a connection to a server; [`Client::connect_tcp`] from
//!   another machine.
//! - [`ManagerError`] — including [`ServerGone`](ManagerError::ServerGone):
//!   when the server dies every call in flight and every later one fails
//!   with it, never hangs.
//!
//! Keys and values are any serde types; they cross as postcard bytes and
//! the server never decodes them. Each call is one round trip on a
//! connection of the calling process (a connection per concurrently
//! calling thread): on one machine a pair of mproc's shared-memory rings,
//! about 1.5 µs (CPython's `Manager().dict()` takes 50–80 µs); over TCP,
//! length-prefixed frames.
//!
//! # Examples
//!
//! ```no_run
//! use mproc_manager::{task, Dict, Manager, Registry};
//!
//! fn add(count: Option<u64>, by: u64) -> Option<u64> {
//!     Some(count.unwrap_or(0) + by)
//! }
//!
//! fn tasks() -> Registry {
//!     Registry::new().with(task!(add))
//! }
//!
//! fn visit(page: String, hits: Dict<String, u64>) {
//!     for _ in 0..100 {
//!         hits.update(&task!(add), page.clone(), 1).unwrap();
//!     }
//! }
//!
//! let m = Manager::builder().tasks(tasks).start()?;
//! let hits = m.dict::<String, u64>()?;
//! let children: Vec<_> = (0..4)
//!     .map(|_| mproc_process::spawn(visit, ("home".to_string(), hits.clone())))
//!     .collect();
//! for c in children {
//!     c.join().unwrap();
//! }
//! assert_eq!(hits.get("home")?, Some(400)); // no update lost
//! # Ok::<(), mproc_manager::ManagerError>(())
//! ```
//!
//! # Platform support
//!
//! Linux and macOS. On Linux the server's unix socket is abstract (no file
//! to leak); on macOS it is a socket file in a 0700 directory under the
//! temporary directory, removed when the manager ends. Either way only
//! processes of the same user are served.

#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod auth;
mod client;
mod error;
mod manager;
mod proxy;
mod server;
mod wire;

pub use client::Client;
pub use error::ManagerError;
pub use manager::{Builder, Manager};
pub use mproc_call::{task, Registry, Task};
pub use proxy::{Dict, List, SharedValue};
