//! `apply`, and `apply_async` used wrong and right: five tasks of 100 ms on a
//! Pool of 5. `apply` waits for each task; so does `apply_async` with `get`
//! inside the loop (the tutorials' "wrong use": serial again); `apply_async`
//! with every `get` after the loop runs the five at once.
//!
//! ```text
//! cargo run --example pool_apply
//! ```

use std::time::{Duration, Instant};

use mproc::Pool;

fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(100));
    x * x
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("Five tasks of 100 ms each on a Pool of 5.");
    let pool = Pool::new(5)?;
    let expected: Vec<u64> = (0..5).map(|x| x * x).collect();

    let start = Instant::now();
    let got: Vec<u64> = (0..5)
        .map(|x| pool.apply(slow_square, x))
        .collect::<Result<_, _>>()?;
    println!(
        "  apply, one after another:            {:.2?}",
        start.elapsed()
    );
    check(&got, &expected)?;

    let start = Instant::now();
    let mut got = Vec::new();
    for x in 0..5 {
        got.push(pool.apply_async(slow_square, x)?.get()?); // waits here: serial
    }
    println!(
        "  apply_async, get inside the loop:    {:.2?}",
        start.elapsed()
    );
    check(&got, &expected)?;

    let start = Instant::now();
    let pending: Vec<_> = (0..5)
        .map(|x| pool.apply_async(slow_square, x))
        .collect::<Result<_, _>>()?;
    let got: Vec<u64> = pending
        .into_iter()
        .map(|r| r.get())
        .collect::<Result<_, _>>()?;
    println!(
        "  apply_async, get after the loop:     {:.2?}\n",
        start.elapsed()
    );
    check(&got, &expected)?;

    pool.close();
    pool.join()?;
    Ok(())
}

fn check(got: &[u64], expected: &[u64]) -> Result<(), Box<dyn std::error::Error>> {
    if got == expected {
        Ok(())
    } else {
        Err(format!("got {got:?}, expected {expected:?}").into())
    }
}
