//! Chapter 8 — progress: bars that count items, not chunks.

use std::sync::{Arc, Mutex};

use crate::common::Result;
use mproc::pool::indicatif::ProgressBar;
use mproc::Pool;

fn square(x: u64) -> u64 {
    x * x
}

pub(crate) fn chapter() -> Result<()> {
    println!("== Chapter 8: progress (feature progress) ==\n");
    let pool = Pool::new(2)?;

    println!("map over 10,000 items in chunks of 1,250, with a plain hook:");
    let reports = Arc::new(Mutex::new(Vec::new()));
    let log = reports.clone();
    pool.map_on_progress(square, 0..10_000, move |done, total| {
        log.lock().expect("not poisoned").push((done, total))
    })?;
    let reports = reports.lock().map_err(|_| "poisoned")?.clone();
    println!(
        "  {} reports; the last one says {:?}",
        reports.len(),
        reports.last()
    );

    println!("imap knows its length, so indicatif can draw a bar for it:");
    let input: Vec<u64> = (0..5_000).collect();
    let it = pool.imap(square, input).chunksize(100)?;
    println!(
        "  len() = {} items (50 chunks in flight or to come)",
        it.len()
    );
    let bar = ProgressBar::new(0);
    let n = it.progress_bar(bar.clone()).count();
    println!(
        "  yielded {n}; the bar stands at {}/{:?}\n",
        bar.position(),
        bar.length()
    );
    pool.close();
    pool.join()?;
    Ok(())
}
