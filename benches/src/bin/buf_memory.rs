//! A 1 GiB `Buf` handed to a pool worker, read there in full, and handed
//! back: prints the time and each side's peak resident memory against the
//! buffer's size (the target: at most 1.1× the buffer — it exists once,
//! not once per copy). `cargo xtask bench` runs it.

use std::time::Instant;

use mproc::{Buf, BufMut, Pool};

const LEN: usize = 1 << 30;

/// Peak resident set size in KiB (`VmHWM`), where the OS tells it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Shared memory in use on the whole machine, in KiB (`Shmem` of
/// `/proc/meminfo`): each page of a memfd counts once, however many
/// mappings of it there are (RSS counts it in every mapping).
fn shmem_kib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("Shmem:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads every byte, then hands the buffer back with the worker's peak RSS.
fn read_all(b: Buf) -> (Buf, u64, Option<u64>) {
    let sum = b
        .cast::<u64>()
        .map(|w| w.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
        .unwrap_or(0);
    (b, sum, peak_rss_kib())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new(1)?;
    let before = peak_rss_kib();
    let shmem_before = shmem_kib();
    let mut b = BufMut::zeroed(LEN)?;
    for (i, w) in b.chunks_mut(8).enumerate() {
        w.copy_from_slice(&(i as u64).to_le_bytes());
    }
    let buf = b.freeze()?;
    let start = Instant::now();
    let (back, sum, worker_peak) = pool.apply(read_all, buf.clone())?;
    let took = start.elapsed();
    let shmem_at_peak = shmem_kib();
    let n = (LEN / 8) as u64;
    // The worker summed every word; here only the ends of what came back
    // are read (reading it all would count its pages again in this
    // process's RSS: a second mapping of the same memory).
    let ends_match =
        back.len() == LEN && back[..4096] == buf[..4096] && back[LEN - 4096..] == buf[LEN - 4096..];
    if sum != n.wrapping_mul(n - 1) / 2 || !ends_match {
        return Err("the worker read other bytes than were written".into());
    }
    let after = peak_rss_kib();
    let mib = |k: u64| k as f64 / 1024.0;
    let size = (LEN >> 10) as f64;
    let line = match (before, after, worker_peak, shmem_before, shmem_at_peak) {
        (Some(b), Some(a), Some(w), Some(s0), Some(s1)) => format!(
            "memory in use +{:.0} MiB ({:.2}× the buffer: system Shmem); parent peak RSS +{:.0} MiB \
             ({:.2}×), worker peak RSS {:.0} MiB ({:.2}×) — each mapping of the one buffer",
            mib(s1.saturating_sub(s0)),
            s1.saturating_sub(s0) as f64 / size,
            mib(a.saturating_sub(b)),
            a.saturating_sub(b) as f64 / size,
            mib(w),
            w as f64 / size
        ),
        _ => "memory figures not available on this OS".into(),
    };
    println!(
        "Buf of 1 GiB to a pool worker, read there in full, and back: {:.0} ms; {line}",
        took.as_secs_f64() * 1e3
    );
    pool.close();
    pool.join()?;
    Ok(())
}
