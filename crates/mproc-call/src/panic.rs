//! Panic capture: what a function's panic becomes on the way back.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The message of a panic payload (`&str` or `String`; anything else is
/// described).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs `f`, turning a panic into its message.
///
/// # Errors
///
/// The panic's message when `f` panicked.
///
/// # Examples
///
/// ```
/// let r = mproc_call::catch_panic(|| -> u32 { panic!("no") });
/// assert_eq!(r, Err("no".to_string()));
/// ```
pub fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}
