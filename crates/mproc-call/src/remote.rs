//! `RemoteFn`: a function named so that another process of the same build
//! can call it.
//!
//! # How a function is named
//!
//! By the offset of its code from [`anchor`], a function of this crate:
//! every process running the same binary — forked, re-executed, or started
//! from a forkserver — has the same code at the same offsets from it,
//! whatever ASLR did. The offset travels with the sender's [`BuildId`] and a
//! fingerprint of the argument and result types; [`RemoteFn::resolve`]
//! checks both before it turns the offset back into a function pointer —
//! the one place in mproc where an address from another process becomes
//! code. A call from another build is an error, never a jump.
//!
//! What is named is not the user's function itself but `invoke::<F, M>`, a
//! function generated for its type: `F` is a zero-sized type (a `fn` item
//! or a closure that captures nothing), so `invoke` makes its value from
//! nothing and calls it. A closure that captures something is refused at
//! compile time.

use std::any::TypeId;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::build::BuildId;
use crate::error::CallError;
use crate::func::Callable;

/// The base every function offset is taken from.
#[inline(never)]
fn anchor() -> usize {
    anchor as fn() -> usize as usize
}

/// Refuses, at compile time, a function type that carries data.
struct NoCaptures<F>(PhantomData<F>);

impl<F> NoCaptures<F> {
    const OK: () = assert!(
        std::mem::size_of::<F>() == 0,
        "a function sent to another process must be a `fn` item or a closure that captures \
         nothing"
    );
}

/// The value of a zero-sized function type, made from nothing.
pub(crate) fn conjure<F: Copy>() -> F {
    let () = NoCaptures::<F>::OK;
    // SAFETY: F is zero-sized (asserted above at compile time): a `fn` item
    // or a closure without captures. Such a type has no bytes and no
    // invariant, so "all zero bytes" is its one value.
    unsafe { std::mem::zeroed::<F>() }
}

/// Calls the function of type `F` (the code a [`RemoteFn`] names).
fn invoke<F: Callable<M>, M>(args: F::Args) -> F::Output {
    conjure::<F>().call(args)
}

/// A fingerprint of `(A, R)` that differs between distinct types within one
/// build (it is only ever compared within one build).
fn types_of<A: 'static, R: 'static>() -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    TypeId::of::<(A, R)>().hash(&mut h);
    h.finish()
}

/// A function of arguments `A` returning `R`, named so that another process
/// running the same build can call it: serialize it, send it, and
/// [`resolve`](RemoteFn::resolve) or [`call`](RemoteFn::call) it there.
///
/// `A` is the arguments as one value ([`Callable::Args`]): the argument of a
/// one-argument function, a tuple for several.
///
/// # Examples
///
/// ```
/// use mproc_call::RemoteFn;
///
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// let f = RemoteFn::new(add);
/// let bytes = postcard::to_allocvec(&f)?;
/// // …in another process of the same build:
/// let g: RemoteFn<(u64, u64), u64> = postcard::from_bytes(&bytes)?;
/// assert_eq!(g.call((2, 3))?, 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Only code crosses, never captured data:
///
/// ```compile_fail
/// let n = 3u64;
/// let f = mproc_call::RemoteFn::new(move |x: u64| x + n);
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct RemoteFn<A, R> {
    offset: u64,
    build: BuildId,
    types: u64,
    #[serde(skip)]
    _f: PhantomData<fn(A) -> R>,
}

impl<A, R> Clone for RemoteFn<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for RemoteFn<A, R> {}

impl<A, R> PartialEq for RemoteFn<A, R> {
    fn eq(&self, other: &Self) -> bool {
        (self.offset, self.build, self.types) == (other.offset, other.build, other.types)
    }
}

impl<A, R> Eq for RemoteFn<A, R> {}

impl<A, R> fmt::Debug for RemoteFn<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteFn")
            .field("offset", &format_args!("{:#x}", self.offset))
            .field("build", &self.build)
            .finish()
    }
}

impl<A: 'static, R: 'static> RemoteFn<A, R> {
    /// Names `f`, a `fn` item or a closure that captures nothing.
    pub fn new<F, M>(f: F) -> RemoteFn<A, R>
    where
        F: Callable<M, Args = A, Output = R>,
    {
        let () = NoCaptures::<F>::OK;
        let _ = f;
        let code: fn(A) -> R = invoke::<F, M>;
        RemoteFn {
            offset: (code as usize).wrapping_sub(anchor()) as u64,
            build: BuildId::current(),
            types: types_of::<A, R>(),
            _f: PhantomData,
        }
    }

    /// The function, in this process.
    ///
    /// # Errors
    ///
    /// [`CallError::OtherBuild`] when it was named by another build of the
    /// program; [`CallError::WrongType`] when it was named with other
    /// argument or result types than `A` and `R`.
    pub fn resolve(&self) -> Result<fn(A) -> R, CallError> {
        let here = BuildId::current();
        if self.build != here {
            return Err(CallError::OtherBuild {
                sent: self.build,
                here,
            });
        }
        if self.types != types_of::<A, R>() {
            return Err(CallError::WrongType);
        }
        let address = anchor().wrapping_add(self.offset as usize);
        // SAFETY: (1) the build ids match, so this process runs the very
        // binary in which `RemoteFn::new` took this offset, and the same
        // offset from `anchor` is the same function here; (2) that function
        // was `invoke::<F, M>` coerced to `fn(A) -> R`, and the fingerprint
        // of `(A, R)` it was named with matches ours, so it has exactly this
        // type. Bytes from another process are untrusted: a forged message
        // could pass both checks only by knowing both, and the build id is
        // derived from the binary itself.
        Ok(unsafe { std::mem::transmute::<usize, fn(A) -> R>(address) })
    }

    /// Calls the function here.
    ///
    /// # Errors
    ///
    /// As [`resolve`](RemoteFn::resolve). A panic of the function is not
    /// caught (see [`catch_panic`](crate::catch_panic)).
    pub fn call(&self, args: A) -> Result<R, CallError> {
        Ok(self.resolve()?(args))
    }

    /// The build that named the function.
    pub fn build_id(&self) -> BuildId {
        self.build
    }

    /// The same function, as if named by build `build` (tests of what
    /// another build sends).
    #[doc(hidden)]
    pub fn with_build_id(mut self, build: BuildId) -> RemoteFn<A, R> {
        self.build = build;
        self
    }
}

/// Calls the function of type `F` with a borrowed context (the code a
/// [`ContextFn`] names).
fn invoke_with<F, C, A, R>(ctx: &C, item: A) -> R
where
    F: Fn(&C, A) -> R + Copy,
{
    conjure::<F>()(ctx, item)
}

/// A function of a borrowed context and one item, `fn(&C, A) -> R`, named
/// for another process of the same build as [`RemoteFn`] names functions
/// (same checks: the build id and a fingerprint of the types). It is how a
/// pool's `map_with` shares one context with every item of a chunk without
/// cloning it per item.
///
/// # Examples
///
/// ```
/// use mproc_call::ContextFn;
///
/// fn scale(by: &Vec<f64>, i: usize) -> f64 {
///     by[i] * 2.0
/// }
///
/// let f = ContextFn::new(scale);
/// let bytes = postcard::to_allocvec(&f)?;
/// let g: ContextFn<Vec<f64>, usize, f64> = postcard::from_bytes(&bytes)?;
/// assert_eq!(g.call(&vec![1.0, 1.5], 1)?, 3.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ContextFn<C, A, R> {
    offset: u64,
    build: BuildId,
    types: u64,
    #[serde(skip)]
    _f: PhantomData<fn(&C, A) -> R>,
}

impl<C, A, R> Clone for ContextFn<C, A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, A, R> Copy for ContextFn<C, A, R> {}

impl<C, A, R> fmt::Debug for ContextFn<C, A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextFn")
            .field("offset", &format_args!("{:#x}", self.offset))
            .field("build", &self.build)
            .finish()
    }
}

/// The fingerprint of a context function's types: that of the fn-pointer
/// type itself, so it never equals a [`RemoteFn`]'s of the same parts.
fn context_types<C: 'static, A: 'static, R: 'static>() -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    TypeId::of::<fn(&C, A) -> R>().hash(&mut h);
    h.finish()
}

impl<C: 'static, A: 'static, R: 'static> ContextFn<C, A, R> {
    /// Names `f`, a `fn` item (or a closure that captures nothing) taking
    /// the context by reference and one item.
    pub fn new<F>(f: F) -> ContextFn<C, A, R>
    where
        F: Fn(&C, A) -> R + Copy + Send + Sync + 'static,
    {
        let () = NoCaptures::<F>::OK;
        let _ = f;
        let code: fn(&C, A) -> R = invoke_with::<F, C, A, R>;
        ContextFn {
            offset: (code as usize).wrapping_sub(anchor()) as u64,
            build: BuildId::current(),
            types: context_types::<C, A, R>(),
            _f: PhantomData,
        }
    }

    /// The function, in this process.
    ///
    /// # Errors
    ///
    /// As [`RemoteFn::resolve`].
    pub fn resolve(&self) -> Result<fn(&C, A) -> R, CallError> {
        let here = BuildId::current();
        if self.build != here {
            return Err(CallError::OtherBuild {
                sent: self.build,
                here,
            });
        }
        if self.types != context_types::<C, A, R>() {
            return Err(CallError::WrongType);
        }
        let address = anchor().wrapping_add(self.offset as usize);
        // SAFETY: as in `RemoteFn::resolve`: (1) the build ids match, so the
        // offset names the same code here as where it was taken; (2) that
        // code is `invoke_with::<F, C, A, R>` coerced to `fn(&C, A) -> R`,
        // and the fingerprint of exactly that type matches ours.
        Ok(unsafe { std::mem::transmute::<usize, fn(&C, A) -> R>(address) })
    }

    /// Calls the function here.
    ///
    /// # Errors
    ///
    /// As [`resolve`](ContextFn::resolve).
    pub fn call(&self, ctx: &C, item: A) -> Result<R, CallError> {
        Ok(self.resolve()?(ctx, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> &'static str {
        "none"
    }

    fn one(x: u32) -> u32 {
        x + 1
    }

    #[allow(clippy::too_many_arguments)]
    fn eight(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) -> u32 {
        [a, b, c, d, e, f, g, h].iter().map(|&x| u32::from(x)).sum()
    }

    #[test]
    fn functions_of_every_arity_round_trip() {
        let f0 = RemoteFn::new(none);
        assert_eq!(f0.call(()), Ok("none"));
        let f1: RemoteFn<u32, u32> =
            postcard::from_bytes(&postcard::to_allocvec(&RemoteFn::new(one)).unwrap()).unwrap();
        assert_eq!(f1.call(41), Ok(42));
        let f8 = RemoteFn::new(eight);
        assert_eq!(f8.call((1, 2, 3, 4, 5, 6, 7, 8)), Ok(36));
        let closure = RemoteFn::new(|a: String, b: String| a + &b);
        assert_eq!(closure.call(("a".into(), "b".into())), Ok("ab".to_string()));
    }

    // A context is lent as `&C`, and this one is a Vec.
    #[allow(clippy::ptr_arg)]
    fn weigh(w: &Vec<u32>, i: usize) -> u32 {
        w[i] * 10
    }

    #[test]
    fn a_context_function_round_trips_and_checks_its_types() {
        let f: ContextFn<Vec<u32>, usize, u32> =
            postcard::from_bytes(&postcard::to_allocvec(&ContextFn::new(weigh)).unwrap()).unwrap();
        assert_eq!(f.call(&vec![1, 2], 1), Ok(20));
        let bytes = postcard::to_allocvec(&ContextFn::new(weigh)).unwrap();
        let wrong: ContextFn<Vec<u32>, usize, u64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(wrong.call(&vec![1], 0), Err(CallError::WrongType));
        // Not taken for a RemoteFn of the same parts either.
        let remote: RemoteFn<(Vec<u32>, usize), u32> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(remote.call((vec![1], 0)), Err(CallError::WrongType));
    }

    #[test]
    fn another_build_or_other_types_are_refused() {
        let f = RemoteFn::new(one);
        let other = f.with_build_id(BuildId::from_bytes([9; 16]));
        assert!(matches!(other.call(1), Err(CallError::OtherBuild { .. })));
        // The same bytes received as a function of other types.
        let bytes = postcard::to_allocvec(&f).unwrap();
        let wrong: RemoteFn<u64, u32> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(wrong.call(1), Err(CallError::WrongType));
    }
}
