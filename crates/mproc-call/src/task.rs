//! Named tasks: functions that other *machines* may ask this process to
//! run, by a stable name and a fingerprint of their types.
//!
//! No pointer and no code crosses a network: a remote caller sends a task's
//! name, the fingerprint of its argument and result types, and postcard
//! arguments; the worker looks the name up in its [`Registry`], checks the
//! fingerprint, decodes the arguments, runs the function (catching a panic)
//! and encodes the result. Only registered functions run.
//!
//! The registry is an explicit list, built by the program itself
//! ([`task!`](crate::task)): no constructor runs before `main` (fragile on
//! some platforms and linkers) and nothing is registered that the program
//! did not name. Build it in one function that callers and workers share,
//! so that both sides agree on names.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CallError;
use crate::func::Callable;
use crate::panic::catch_panic;
use crate::remote::conjure;

/// A fingerprint of `(A, R)` by their type names: equal across builds made
/// by the same compiler from the same types (FNV-1a, 64 bits).
pub fn type_fingerprint<A, R>() -> u64 {
    std::any::type_name::<(A, R)>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// Runs a task from its postcard arguments; returns its postcard result.
type Run = fn(&[u8]) -> Result<Vec<u8>, CallError>;

/// One registered function: its stable name, its type fingerprint, and how
/// to run it from bytes.
#[derive(Clone)]
pub struct Task {
    name: &'static str,
    types: u64,
    function: TypeId,
    run: Run,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("types", &format_args!("{:#018x}", self.types))
            .finish()
    }
}

fn run_task<F, M>(args: &[u8]) -> Result<Vec<u8>, CallError>
where
    F: Callable<M>,
    F::Args: DeserializeOwned,
    F::Output: Serialize,
{
    let (args, rest) =
        postcard::take_from_bytes::<F::Args>(args).map_err(|e| CallError::Codec(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CallError::Codec(format!(
            "{} bytes left over after the arguments",
            rest.len()
        )));
    }
    let out = catch_panic(|| conjure::<F>().call(args)).map_err(CallError::Panicked)?;
    postcard::to_allocvec(&out).map_err(|e| CallError::Codec(e.to_string()))
}

impl Task {
    /// The task `f` under `name` (use [`task!`](crate::task), which names
    /// it by its path).
    pub fn new<F, M>(name: &'static str, f: F) -> Task
    where
        F: Callable<M>,
        F::Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        Task {
            name,
            types: type_fingerprint::<F::Args, F::Output>(),
            function: TypeId::of::<F>(),
            run: run_task::<F, M>,
        }
    }

    /// The task's stable name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The fingerprint of its argument and result types.
    pub fn types(&self) -> u64 {
        self.types
    }

    /// Runs the task from postcard-encoded arguments; the postcard-encoded
    /// result.
    ///
    /// # Errors
    ///
    /// [`CallError::Codec`] for arguments that do not decode (or leave bytes
    /// over), [`CallError::Panicked`] when the function panicked.
    pub fn run(&self, args: &[u8]) -> Result<Vec<u8>, CallError> {
        (self.run)(args)
    }
}

/// A registered function, named `module::path::function`.
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let tasks = mproc_call::Registry::new().with(mproc_call::task!(square));
/// let t = tasks.get("rust_out::square").or_else(|| tasks.iter().next()).unwrap();
/// let out = t.run(&postcard::to_allocvec(&7u64)?)?;
/// assert_eq!(postcard::from_bytes::<u64>(&out)?, 49);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[macro_export]
macro_rules! task {
    ($f:ident) => {
        $crate::Task::new(concat!(module_path!(), "::", stringify!($f)), $f)
    };
    ($name:literal, $f:expr) => {
        $crate::Task::new($name, $f)
    };
}

/// The functions this program lets other machines run, by name.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    tasks: BTreeMap<&'static str, Task>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds `task`; a later task of the same name replaces an earlier one.
    pub fn with(mut self, task: Task) -> Registry {
        self.tasks.insert(task.name, task);
        self
    }

    /// The task named `name`.
    pub fn get(&self, name: &str) -> Option<&Task> {
        self.tasks.get(name)
    }

    /// The task registered for function `f` (the same `fn` item), for a
    /// caller that holds the function and needs its name.
    pub fn find<F: 'static>(&self, f: F) -> Option<&Task> {
        let _ = f;
        let id = TypeId::of::<F>();
        self.tasks.values().find(|t| t.function == id)
    }

    /// Every task, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// Runs task `name`, checking that the caller's type fingerprint
    /// `types` is the task's.
    ///
    /// # Errors
    ///
    /// [`CallError::UnknownTask`], [`CallError::TaskTypes`], and the errors
    /// of [`Task::run`].
    pub fn call(&self, name: &str, types: u64, args: &[u8]) -> Result<Vec<u8>, CallError> {
        let task = self
            .get(name)
            .ok_or_else(|| CallError::UnknownTask(name.to_owned()))?;
        if task.types != types {
            return Err(CallError::TaskTypes(name.to_owned()));
        }
        task.run(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(w: u32, h: u32) -> u64 {
        u64::from(w) * u64::from(h)
    }

    fn boom(_: ()) -> u8 {
        panic!("boom")
    }

    #[test]
    fn a_registered_task_runs_by_name_and_nothing_else_does() {
        let reg = Registry::new()
            .with(crate::task!(area))
            .with(crate::task!(boom));
        let t = reg.find(area).unwrap();
        assert!(t.name().ends_with("::area"), "{}", t.name());
        let args = postcard::to_allocvec(&(6u32, 7u32)).unwrap();
        let out = reg.call(t.name(), t.types(), &args).unwrap();
        assert_eq!(postcard::from_bytes::<u64>(&out).unwrap(), 42);
        assert_eq!(
            reg.call("nope", t.types(), &args),
            Err(CallError::UnknownTask("nope".into()))
        );
        assert!(matches!(
            reg.call(t.name(), t.types() ^ 1, &args),
            Err(CallError::TaskTypes(_))
        ));
        assert!(matches!(
            reg.call(t.name(), t.types(), &args[..1]),
            Err(CallError::Codec(_))
        ));
        let mut long = args.clone();
        long.push(0);
        assert!(matches!(
            reg.call(t.name(), t.types(), &long),
            Err(CallError::Codec(_))
        ));
        let b = reg.find(boom).unwrap();
        assert_eq!(
            reg.call(b.name(), b.types(), &postcard::to_allocvec(&()).unwrap()),
            Err(CallError::Panicked("boom".into()))
        );
    }
}
