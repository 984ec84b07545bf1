//! The proxies: typed handles to objects that live in the server.
//!
//! A proxy holds a [`Client`] and the object's id. Every method is one
//! request and one answer; keys and values cross as postcard bytes, and the
//! server compares keys by those bytes (so a key type must serialize equal
//! keys to equal bytes — every std type but hash maps and sets does).

use std::fmt;
use std::marker::PhantomData;

use mproc_call::{type_fingerprint, Task};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::{unexpected, Client};
use crate::error::ManagerError;
use crate::wire::{Request, Response};

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ManagerError> {
    postcard::to_allocvec(value).map_err(|e| ManagerError::Codec(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ManagerError> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|e| ManagerError::Codec(format!("a stored value does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(ManagerError::Codec(format!(
            "{} bytes left over after a stored value",
            rest.len()
        )));
    }
    Ok(value)
}

fn bytes(answer: Response) -> Result<Option<Vec<u8>>, ManagerError> {
    match answer {
        Response::Bytes(b) => Ok(b),
        other => Err(unexpected(&other)),
    }
}

fn maybe<T: DeserializeOwned>(answer: Response) -> Result<Option<T>, ManagerError> {
    bytes(answer)?.map(|b| decode(&b)).transpose()
}

fn some<T: DeserializeOwned>(answer: Response) -> Result<T, ManagerError> {
    maybe(answer)?.ok_or_else(|| ManagerError::Protocol("an answer without its value".into()))
}

fn count(answer: Response) -> Result<usize, ManagerError> {
    match answer {
        Response::Len(n) => usize::try_from(n).map_err(|_| unexpected(&Response::Len(n))),
        other => Err(unexpected(&other)),
    }
}

fn done(answer: Response) -> Result<(), ManagerError> {
    match answer {
        Response::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

fn many(answer: Response) -> Result<Vec<serde_bytes::ByteBuf>, ManagerError> {
    match answer {
        Response::Many(items) => Ok(items),
        other => Err(unexpected(&other)),
    }
}

/// Checks that `task` has the types `(A, R)` before it is sent.
fn check_task<A, R>(task: &Task) -> Result<(), ManagerError> {
    if task.types() == type_fingerprint::<A, R>() {
        Ok(())
    } else {
        Err(ManagerError::TaskTypes(format!(
            "{} (called as fn{} -> {})",
            task.name(),
            std::any::type_name::<A>(),
            std::any::type_name::<R>()
        )))
    }
}

/// The handle part of every proxy.
#[derive(Clone, Serialize, Deserialize)]
struct Handle {
    client: Client,
    obj: u64,
}

impl Handle {
    fn call(&self, req: &Request<'_>) -> Result<Response, ManagerError> {
        self.client.call(req)
    }

    /// Runs `task` (`fn(T, A) -> T`) on a list item or a value in the
    /// server; the new item.
    fn update_in_place<T, A>(&self, task: &Task, index: u64, args: A) -> Result<T, ManagerError>
    where
        T: DeserializeOwned,
        A: Serialize,
    {
        check_task::<(T, A), T>(task)?;
        let args = encode(&args)?;
        some(self.call(&Request::Update {
            obj: self.obj,
            key: &[],
            index,
            task: task.name(),
            types: task.types(),
            args: &args,
        })?)
    }
}

macro_rules! proxy_common {
    ($name:ident < $($t:ident),+ >, $what:literal) => {
        impl<$($t),+> Clone for $name<$($t),+> {
            fn clone(&self) -> Self {
                $name { handle: self.handle.clone(), _t: PhantomData }
            }
        }

        impl<$($t),+> fmt::Debug for $name<$($t),+> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("id", &self.handle.obj).finish_non_exhaustive()
            }
        }

        impl<$($t),+> $name<$($t),+> {
            pub(crate) fn new(client: Client, obj: u64) -> Self {
                $name { handle: Handle { client, obj }, _t: PhantomData }
            }

            /// The object's id on its server.
            pub fn id(&self) -> u64 {
                self.handle.obj
            }

            #[doc = concat!("The client this ", $what, " is reached through.")]
            pub fn client(&self) -> &Client {
                &self.handle.client
            }
        }
    };
}

/// A dict that lives in a manager's server: CPython's `manager.dict()`,
/// typed.
///
/// Every method is one round trip to the server; each is atomic, and
/// [`update`](Dict::update) makes a read-modify-write atomic by running a
/// registered function on the server. Put a `Dict` in a child's arguments
/// (or a pool task's) and it reaches the same dict there.
///
/// # Examples
///
/// ```no_run
/// use mproc_manager::Manager;
///
/// fn count_words(text: String, words: mproc_manager::Dict<String, u64>) {
///     for w in text.split_whitespace() {
///         let n = words.get(w).unwrap().unwrap_or(0);
///         words.insert(w.to_string(), n + 1).unwrap(); // not atomic: see `update`
///     }
/// }
///
/// let m = Manager::new()?;
/// let words = m.dict::<String, u64>()?;
/// mproc_process::spawn(count_words, ("a b a".to_string(), words.clone())).join().unwrap();
/// assert_eq!(words.get("a")?, Some(2));
/// assert_eq!(words.len()?, 2);
/// # Ok::<(), mproc_manager::ManagerError>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Dict<K, V> {
    handle: Handle,
    #[serde(skip)]
    _t: PhantomData<fn() -> (K, V)>,
}

proxy_common!(Dict<K, V>, "dict");

impl<K, V> Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    pub(crate) fn types() -> u64 {
        type_fingerprint::<K, V>()
    }

    /// The value of `key`, if any.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ServerGone`], [`ManagerError::Codec`] and the other
    /// errors of a call (the same for every method).
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>, ManagerError>
    where
        K: std::borrow::Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let key = encode(key)?;
        maybe(self.handle.call(&Request::Get {
            obj: self.handle.obj,
            key: &key,
        })?)
    }

    /// Sets `key` to `value`; the value it had.
    ///
    /// # Errors
    ///
    /// As for [`get`](Dict::get); [`ManagerError::TooLarge`] for a value
    /// over 256 MiB.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, ManagerError> {
        let key = encode(&key)?;
        let value = encode(&value)?;
        maybe(self.handle.call(&Request::Insert {
            obj: self.handle.obj,
            key: &key,
            value: &value,
        })?)
    }

    /// Removes `key`; the value it had.
    ///
    /// # Errors
    ///
    /// As for [`get`](Dict::get).
    pub fn remove<Q>(&self, key: &Q) -> Result<Option<V>, ManagerError>
    where
        K: std::borrow::Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let key = encode(key)?;
        maybe(self.handle.call(&Request::Remove {
            obj: self.handle.obj,
            key: &key,
        })?)
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    ///
    /// As for [`get`](Dict::get).
    pub fn contains_key<Q>(&self, key: &Q) -> Result<bool, ManagerError>
    where
        K: std::borrow::Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let key = encode(key)?;
        match self.handle.call(&Request::Contains {
            obj: self.handle.obj,
            key: &key,
        })? {
            Response::Bool(b) => Ok(b),
            other => Err(unexpected(&other)),
        }
    }

    /// The number of entries.
    ///
    /// # Errors
    ///
    /// As for [`get`](Dict::get).
    pub fn len(&self) -> Result<usize, ManagerError> {
        count(self.handle.call(&Request::Len {
            obj: self.handle.obj,
        })?)
    }

    /// Whether the dict is empty.
    ///
    /// # Errors
    ///
    /// As for [`get`](Dict::get).
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// Removes every entry.
    ///
    /// # Errors
    ///
    /// As for [`get`](Dict::get).
    pub fn clear(&self) -> Result<(), ManagerError> {
        done(self.handle.call(&Request::Clear {
            obj: self.handle.obj,
        })?)
    }

    /// Every entry at one instant (in no particular order): a snapshot,
    /// unaffected by later changes.
    ///
    /// # Errors
    ///
    /// As for [`get`](Dict::get).
    pub fn iter(&self) -> Result<std::vec::IntoIter<(K, V)>, ManagerError> {
        let flat = many(self.handle.call(&Request::Snapshot {
            obj: self.handle.obj,
        })?)?;
        if flat.len() % 2 != 0 {
            return Err(ManagerError::Protocol(
                "a dict snapshot of odd length".into(),
            ));
        }
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((decode(&k)?, decode(&v)?));
        }
        Ok(out.into_iter())
    }

    /// Every key at one instant (in no particular order).
    ///
    /// # Errors
    ///
    /// As for [`get`](Dict::get).
    pub fn keys(&self) -> Result<Vec<K>, ManagerError> {
        Ok(self.iter()?.map(|(k, _)| k).collect())
    }

    /// Runs `task` — a function `fn(Option<V>, A) -> Option<V>` registered
    /// with the manager ([`Builder::tasks`](crate::Builder::tasks)) — on the
    /// entry of `key` *in the server*, with the entry locked: an atomic
    /// read-modify-write. `None` in means no entry; `None` out removes it.
    /// Returns the new value.
    ///
    /// The task runs with the whole object locked: a task that calls the
    /// same object through a proxy (in its arguments) waits for itself —
    /// give such a client a [timeout](Client::with_timeout), or don't.
    ///
    /// # Errors
    ///
    /// [`ManagerError::TaskTypes`] when `task` does not have the types
    /// `fn(Option<V>, A) -> Option<V>`, [`ManagerError::UnknownTask`] when
    /// the server has no such task, [`ManagerError::TaskFailed`] when it
    /// panicked (the entry is unchanged); as for [`get`](Dict::get).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use mproc_manager::{task, Manager, Registry};
    ///
    /// fn add(count: Option<u64>, by: u64) -> Option<u64> {
    ///     Some(count.unwrap_or(0) + by)
    /// }
    ///
    /// fn tasks() -> Registry {
    ///     Registry::new().with(task!(add))
    /// }
    ///
    /// let m = Manager::builder().tasks(tasks).start()?;
    /// let hits = m.dict::<String, u64>()?;
    /// assert_eq!(hits.update(&task!(add), "home".to_string(), 5)?, Some(5));
    /// assert_eq!(hits.update(&task!(add), "home".to_string(), 2)?, Some(7));
    /// # Ok::<(), mproc_manager::ManagerError>(())
    /// ```
    pub fn update<A: Serialize>(
        &self,
        task: &Task,
        key: K,
        args: A,
    ) -> Result<Option<V>, ManagerError> {
        check_task::<(Option<V>, A), Option<V>>(task)?;
        let key = encode(&key)?;
        let args = encode(&args)?;
        maybe(self.handle.call(&Request::Update {
            obj: self.handle.obj,
            key: &key,
            index: 0,
            task: task.name(),
            types: task.types(),
            args: &args,
        })?)
    }
}

/// A list that lives in a manager's server: CPython's `manager.list()`,
/// typed.
///
/// # Examples
///
/// ```no_run
/// use mproc_manager::Manager;
///
/// let m = Manager::new()?;
/// let log = m.list::<String>()?;
/// log.push("started".to_string())?;
/// log.push("done".to_string())?;
/// assert_eq!(log.get(1)?, Some("done".to_string()));
/// assert_eq!(log.to_vec()?, ["started", "done"]);
/// # Ok::<(), mproc_manager::ManagerError>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct List<T> {
    handle: Handle,
    #[serde(skip)]
    _t: PhantomData<fn() -> T>,
}

proxy_common!(List<T>, "list");

impl<T> List<T>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn types() -> u64 {
        type_fingerprint::<T, ()>()
    }

    /// Appends `value`; the new length.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ServerGone`], [`ManagerError::Codec`] and the other
    /// errors of a call (the same for every method).
    pub fn push(&self, value: T) -> Result<usize, ManagerError> {
        let value = encode(&value)?;
        count(self.handle.call(&Request::Push {
            obj: self.handle.obj,
            value: &value,
        })?)
    }

    /// Removes and returns the last item.
    ///
    /// # Errors
    ///
    /// As for [`push`](List::push).
    pub fn pop(&self) -> Result<Option<T>, ManagerError> {
        maybe(self.handle.call(&Request::Pop {
            obj: self.handle.obj,
        })?)
    }

    /// The item at `index`, or `None` past the end.
    ///
    /// # Errors
    ///
    /// As for [`push`](List::push).
    pub fn get(&self, index: usize) -> Result<Option<T>, ManagerError> {
        maybe(self.handle.call(&Request::GetAt {
            obj: self.handle.obj,
            index: index as u64,
        })?)
    }

    /// Replaces the item at `index`; the item it was.
    ///
    /// # Errors
    ///
    /// [`ManagerError::IndexOutOfRange`] past the end; as for
    /// [`push`](List::push).
    pub fn set(&self, index: usize, value: T) -> Result<T, ManagerError> {
        let value = encode(&value)?;
        some(self.handle.call(&Request::SetAt {
            obj: self.handle.obj,
            index: index as u64,
            value: &value,
        })?)
    }

    /// Inserts `value` before `index` (`index == len` appends); the new
    /// length.
    ///
    /// # Errors
    ///
    /// [`ManagerError::IndexOutOfRange`] past the end; as for
    /// [`push`](List::push).
    pub fn insert(&self, index: usize, value: T) -> Result<usize, ManagerError> {
        let value = encode(&value)?;
        count(self.handle.call(&Request::InsertAt {
            obj: self.handle.obj,
            index: index as u64,
            value: &value,
        })?)
    }

    /// Removes and returns the item at `index`.
    ///
    /// # Errors
    ///
    /// [`ManagerError::IndexOutOfRange`] past the end; as for
    /// [`push`](List::push).
    pub fn remove(&self, index: usize) -> Result<T, ManagerError> {
        some(self.handle.call(&Request::RemoveAt {
            obj: self.handle.obj,
            index: index as u64,
        })?)
    }

    /// The number of items.
    ///
    /// # Errors
    ///
    /// As for [`push`](List::push).
    pub fn len(&self) -> Result<usize, ManagerError> {
        count(self.handle.call(&Request::Len {
            obj: self.handle.obj,
        })?)
    }

    /// Whether the list is empty.
    ///
    /// # Errors
    ///
    /// As for [`push`](List::push).
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// Removes every item.
    ///
    /// # Errors
    ///
    /// As for [`push`](List::push).
    pub fn clear(&self) -> Result<(), ManagerError> {
        done(self.handle.call(&Request::Clear {
            obj: self.handle.obj,
        })?)
    }

    /// Every item at one instant, in order.
    ///
    /// # Errors
    ///
    /// As for [`push`](List::push).
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        many(self.handle.call(&Request::Snapshot {
            obj: self.handle.obj,
        })?)?
        .iter()
        .map(|b| decode(b))
        .collect()
    }

    /// A snapshot of the items (see [`to_vec`](List::to_vec)).
    ///
    /// # Errors
    ///
    /// As for [`push`](List::push).
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>, ManagerError> {
        Ok(self.to_vec()?.into_iter())
    }

    /// Runs `task` — a registered `fn(T, A) -> T` — on the item at
    /// `index` in the server, with the list locked; the new item.
    ///
    /// # Errors
    ///
    /// [`ManagerError::IndexOutOfRange`] past the end; as for
    /// [`Dict::update`].
    pub fn update<A: Serialize>(
        &self,
        task: &Task,
        index: usize,
        args: A,
    ) -> Result<T, ManagerError> {
        self.handle.update_in_place(task, index as u64, args)
    }
}

/// A single value that lives in a manager's server: CPython's
/// `manager.Value`, for any serde type (mproc's [`Value`] in shared memory
/// is faster, but holds only plain-old-data).
///
/// [`Value`]: https://docs.rs/mproc-sync/latest/mproc_sync/struct.Value.html
///
/// # Examples
///
/// ```no_run
/// use mproc_manager::{task, Manager, Registry};
///
/// fn append(mut s: String, tail: String) -> String {
///     s.push_str(&tail);
///     s
/// }
///
/// let m = Manager::builder().tasks(|| Registry::new().with(task!(append))).start()?;
/// let status = m.value(&"idle".to_string())?;
/// status.set(&"busy".to_string())?;
/// assert_eq!(status.update(&task!(append), " (2/3)".to_string())?, "busy (2/3)");
/// # Ok::<(), mproc_manager::ManagerError>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SharedValue<T> {
    handle: Handle,
    #[serde(skip)]
    _t: PhantomData<fn() -> T>,
}

proxy_common!(SharedValue<T>, "value");

impl<T> SharedValue<T>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn types() -> u64 {
        type_fingerprint::<T, ((),)>()
    }

    /// The value.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ServerGone`], [`ManagerError::Codec`] and the other
    /// errors of a call (the same for every method).
    pub fn get(&self) -> Result<T, ManagerError> {
        some(self.handle.call(&Request::Get {
            obj: self.handle.obj,
            key: &[],
        })?)
    }

    /// Replaces the value; the value it was.
    ///
    /// # Errors
    ///
    /// As for [`get`](SharedValue::get).
    pub fn set(&self, value: &T) -> Result<T, ManagerError> {
        let value = encode(value)?;
        some(self.handle.call(&Request::Set {
            obj: self.handle.obj,
            value: &value,
        })?)
    }

    /// Runs `task` — a registered `fn(T, A) -> T` — on the value in the
    /// server, atomically; the new value.
    ///
    /// # Errors
    ///
    /// As for [`Dict::update`].
    pub fn update<A: Serialize>(&self, task: &Task, args: A) -> Result<T, ManagerError> {
        self.handle.update_in_place(task, 0, args)
    }
}
