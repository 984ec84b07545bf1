//! Shared pieces of mproc's criterion benches. The benches themselves are
//! the `[[bench]]` targets of this package; `cargo xtask bench` runs them
//! next to their Python counterparts in `python/`.

use std::path::PathBuf;

/// A scratch directory for a bench, unique to this process, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates the directory under the system temp dir.
    pub fn new(tag: &str) -> std::io::Result<Scratch> {
        let path = std::env::temp_dir().join(format!("mproc-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Scratch { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The uneven workload of `pool/uneven_*`: `n` task durations in
/// microseconds, exponentially distributed with mean `mean_us` (CPython's
/// counterpart in `python/pool.py` draws the same ones: a 64-bit LCG, the
/// top 53 bits as a uniform in (0, 1), `-ln(u) × mean`).
pub fn uneven_durations_us(n: usize, mean_us: f64) -> Vec<u64> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (-u.ln() * mean_us).round() as u64
        })
        .collect()
}

/// Keeps a core busy for `us` microseconds of wall time (the way the
/// Python counterpart does, so both run tasks of the same length).
pub fn busy_for_us(us: u64) -> u64 {
    let end = std::time::Instant::now() + std::time::Duration::from_micros(us);
    let mut spins = 0u64;
    while std::time::Instant::now() < end {
        spins = spins.wrapping_add(1);
    }
    spins
}

#[cfg(test)]
mod tests {
    /// `python/pool.py` must draw the very same durations: these are its
    /// first ones and its total (`uneven_durations_us(50, 2000.0)`).
    #[test]
    fn uneven_durations_match_the_python_counterpart() {
        let d = super::uneven_durations_us(50, 2000.0);
        assert_eq!(d[..8], [1501, 3061, 253, 988, 258, 2092, 2108, 14642]);
        assert_eq!(d.iter().sum::<u64>(), 91_111);
    }
}
