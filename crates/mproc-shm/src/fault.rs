//! Named kill points: where tests stop a process in the middle of a
//! cross-process protocol.
//!
//! Every step of every protocol that publishes something to other processes
//! or wakes them (a ring chunk written, a tail stored, a lock taken, a wake
//! about to be sent, …) calls [`point`] with a stable name such as
//! `"ring.tail-stored"`. With the `failpoints` cargo feature the call
//! consults the [`fail`](https://docs.rs/fail) crate's registry, so a test
//! can make a child process SIGKILL itself exactly there (`die_at`) and
//! then check that nobody else hangs, loses or half-reads anything. Without
//! the feature `point` is an empty inline function and costs nothing.
//!
//! The names are listed in each crate's protocol docs (the ring's in
//! `mproc-queue`'s `ring.md`, the locks' in `mproc-sync`'s module docs).

/// Marks kill point `name`. A no-op unless the `failpoints` feature is on
/// and a test configured `name`.
#[inline(always)]
pub fn point(name: &'static str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Makes this process SIGKILL itself the next time any thread reaches kill
/// point `name` (with the `failpoints` feature).
///
/// # Errors
///
/// The `fail` crate's message when the point cannot be configured.
#[cfg(feature = "failpoints")]
pub fn die_at(name: &str) -> Result<(), String> {
    fail::cfg_callback(name, crate::sys::kill_self)
}

/// Runs `f` every time a thread reaches kill point `name` (with the
/// `failpoints` feature), for tests that pause or count instead of dying.
///
/// # Errors
///
/// The `fail` crate's message when the point cannot be configured.
#[cfg(feature = "failpoints")]
pub fn on(name: &str, f: impl Fn() + Send + Sync + 'static) -> Result<(), String> {
    fail::cfg_callback(name, f)
}

/// Removes what [`die_at`] or [`on`] configured at `name`.
#[cfg(feature = "failpoints")]
pub fn clear(name: &str) {
    fail::remove(name);
}
