//! Cross-process suites. Every test runs real child processes (fixtures in
//! `tests/src/bin/`), reaps them, and ends with a `LeakCheck`.

mod asyncs;
mod buf;
mod facade;
#[cfg(feature = "failpoints")]
mod killpoint_manager;
#[cfg(feature = "failpoints")]
mod killpoint_process;
#[cfg(feature = "failpoints")]
mod killpoint_queue;
#[cfg(feature = "failpoints")]
mod killpoint_redis;
#[cfg(feature = "failpoints")]
mod killpoint_sync;
mod manager;
mod output;
mod pool;
mod pool_backend;
mod process;
mod progress;
mod queue;
mod redis;
mod shm;
mod spawn;
mod sync;
mod tracing_events;
