//! How fast word frequencies by `imap_unordered` + a reduce in the parent
//! could ever be, on this machine: the bench's work, timed phase by phase on
//! one thread, then spread over the cores as if the pool cost nothing.
//! `cargo xtask bench` runs it and adds its line to the report.
//!
//! Each file's counts come back as a `HashMap<String, u64>`: a worker counts
//! the words, encodes the map (postcard, as the pool does) and drops it; the
//! parent decodes it and merges it into the total, one file after another.
//! The workers' part spreads over the cores; the parent's does not, and it
//! takes the cores' time from the workers. So no pool can be faster than
//! `max((workers + parent) / cores, parent)`. Rayon's `par_iter` + `reduce`
//! counts and merges in its threads, with nothing encoded or decoded.

use std::collections::HashMap;
use std::time::Instant;

use mproc_benches::{corpus, Scratch};
use rayon::prelude::*;

/// The fastest of `n` runs, in ms, and the last run's value (dropped outside
/// the timing).
fn fastest<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..n {
        let start = Instant::now();
        let v = f();
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
        last = Some(v);
    }
    (best, last.expect("n > 0"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Scratch::new("words-bound")?;
    let paths: Vec<String> = corpus::write(dir.path(), corpus::FULL_BYTES)?
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let cores = mproc::process::cpu_count();
    let threads = rayon::ThreadPoolBuilder::new().num_threads(cores).build()?;
    let (rayon_ms, total) = fastest(5, || {
        threads.install(|| {
            paths
                .par_iter()
                .cloned()
                .map(corpus::count_words)
                .reduce(HashMap::new, corpus::merge)
        })
    });
    // The workers' part.
    let (count_ms, counts) = fastest(3, || {
        paths
            .iter()
            .cloned()
            .map(corpus::count_words)
            .collect::<Vec<_>>()
    });
    let (encode_ms, encoded) = fastest(3, || {
        counts
            .iter()
            .map(postcard::to_allocvec)
            .collect::<Result<Vec<_>, _>>()
    });
    let encoded = encoded?;
    let start = Instant::now();
    drop(counts);
    let drop_ms = start.elapsed().as_secs_f64() * 1e3;
    // The parent's part, file by file as it comes.
    let (parent_ms, merged) = fastest(3, || {
        encoded.iter().try_fold(HashMap::new(), |t, bytes| {
            postcard::from_bytes(bytes).map(|part| corpus::merge(t, part))
        })
    });
    if merged? != total {
        return Err("the parent's merge and rayon's disagree".into());
    }
    let workers_ms = count_ms + encode_ms + drop_ms;
    let bound_ms = ((workers_ms + parent_ms) / cores as f64).max(parent_ms);
    println!(
        "Words, imap_unordered + a reduce in the parent, with a pool that costs nothing: at least \
         {bound_ms:.0} ms = {:.2}× rayon's {rayon_ms:.0} ms on {cores} cores (workers: count \
         {count_ms:.0} + encode {encode_ms:.0} + drop {drop_ms:.0} ms; parent: decode + merge \
         {parent_ms:.0} ms, on one thread) — the 1.1× target needs the merge done in the workers \
         (map_reduce)",
        bound_ms / rayon_ms
    );
    Ok(())
}
