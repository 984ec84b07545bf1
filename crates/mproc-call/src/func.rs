//! `Callable`: the functions that can run in another process, of up to
//! eight arguments, through one trait over their argument tuples.

/// A function that can be called in another process: a `fn` item — or a
/// closure that captures nothing — of up to eight arguments. (Whoever sends
/// the arguments asks them to be `Serialize + DeserializeOwned`; the
/// machinery's own internal calls pass values that are not.)
///
/// Its arguments travel as one value, [`Args`](Callable::Args): the
/// argument itself for one argument, a tuple for several, `()` for none. So
/// `fn add(a: u64, b: u64) -> u64` is called with `(2, 3)` and
/// `fn greet(name: String)` with `"bob".to_string()`.
///
/// `M` is a marker that tells the arities apart (`fn(A, B) -> R` for a
/// two-argument function); it is always inferred.
///
/// A capturing closure is refused when the call is made
/// ([`RemoteFn::new`](crate::RemoteFn::new)): only code, never data that
/// lives in this process, can be named in another one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be called in another process",
    label = "not a function mproc can send to another process",
    note = "a target is a `fn` item (or a closure that captures nothing) of up to 8 arguments, \
            each `Send + 'static` (and `Serialize + DeserializeOwned` to cross processes)"
)]
pub trait Callable<M>: Copy + Send + Sync + 'static {
    /// The arguments as one value.
    type Args: Send + 'static;
    /// What the function returns.
    type Output: 'static;

    /// Calls the function.
    fn call(self, args: Self::Args) -> Self::Output;
}

impl<F, R> Callable<fn() -> R> for F
where
    F: Fn() -> R + Copy + Send + Sync + 'static,
    R: 'static,
{
    type Args = ();
    type Output = R;

    fn call(self, (): ()) -> R {
        self()
    }
}

impl<F, A, R> Callable<fn(A) -> R> for F
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: Send + 'static,
    R: 'static,
{
    type Args = A;
    type Output = R;

    fn call(self, a: A) -> R {
        self(a)
    }
}

macro_rules! callable {
    ($($a:ident),+) => {
        impl<F, $($a,)+ R> Callable<fn($($a),+) -> R> for F
        where
            F: Fn($($a),+) -> R + Copy + Send + Sync + 'static,
            $($a: Send + 'static,)+
            R: 'static,
        {
            type Args = ($($a,)+);
            type Output = R;

            #[allow(non_snake_case)]
            fn call(self, ($($a,)+): Self::Args) -> R {
                self($($a),+)
            }
        }
    };
}

callable!(A, B);
callable!(A, B, C);
callable!(A, B, C, D);
callable!(A, B, C, D, E);
callable!(A, B, C, D, E, G);
callable!(A, B, C, D, E, G, H);
callable!(A, B, C, D, E, G, H, I);
