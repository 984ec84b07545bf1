//! `imap` over 1e7 items in flat memory: runs it once and prints the time
//! and this process's peak resident memory before and after (the DESIGN's
//! "imap over 1e7 items: memory stays flat"). `cargo xtask bench` runs it.

use std::time::Instant;

use mproc::Pool;

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

/// Peak resident set size in KiB (`VmHWM`), where the OS tells it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const N: u64 = 10_000_000;
    const CHUNK: usize = 1000;
    let pool = Pool::new(2)?;
    // Warm up: the pool's buffers and the allocator's arenas.
    let _ = pool.imap(square, 0..100_000).chunksize(CHUNK)?.count();
    let before = peak_rss_kib();
    let start = Instant::now();
    let mut sum = 0u64;
    let mut count = 0u64;
    for r in pool.imap(square, 0..N).chunksize(CHUNK)? {
        sum = sum.wrapping_add(r?);
        count += 1;
    }
    let took = start.elapsed();
    let after = peak_rss_kib();
    let expected = (0..N).map(square).fold(0u64, u64::wrapping_add);
    if (count, sum) != (N, expected) {
        return Err(format!("imap returned {count} items summing to {sum}").into());
    }
    let rss = match (before, after) {
        (Some(b), Some(a)) => format!(
            "peak RSS {b} KiB before, {a} KiB after (+{} KiB; the items alone would be {} KiB)",
            a.saturating_sub(b),
            N * 16 / 1024
        ),
        _ => "peak RSS not available on this OS".into(),
    };
    println!(
        "imap over 1e7 items (chunksize {CHUNK}): {:.2} s, {:.1}M items/s; {rss}",
        took.as_secs_f64(),
        N as f64 / took.as_secs_f64() / 1e6
    );
    pool.close();
    pool.join()?;
    Ok(())
}
