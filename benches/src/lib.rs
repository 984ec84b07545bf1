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

/// The generated corpus of the real-workload benches (`workloads.rs` and
/// `python/workloads.py`): text files of uneven size made of words from a
/// fixed vocabulary, the same bytes on every run.
pub mod corpus {
    use std::io::Write as _;
    use std::path::{Path, PathBuf};

    /// The corpus of a full bench run: about 100 MB.
    pub const FULL_BYTES: u64 = 100 << 20;
    /// The corpus of a smoke run (`cargo test --benches`): about 4 MB.
    pub const SMOKE_BYTES: u64 = 4 << 20;

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 11
        }

        /// A uniform in (0, 1).
        fn unit(&mut self) -> f64 {
            (self.next() as f64 + 0.5) / (1u64 << 53) as f64
        }
    }

    /// 4,096 words of two to four syllables.
    fn vocabulary(rng: &mut Lcg) -> Vec<String> {
        const SYLLABLES: [&str; 24] = [
            "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "an", "el", "or", "um", "pra", "sto",
            "qui", "dre", "bel", "con", "fin", "gal", "hor", "jun", "lex", "mor",
        ];
        (0..4096)
            .map(|_| {
                let n = 2 + rng.next() % 3;
                (0..n)
                    .map(|_| SYLLABLES[(rng.next() % 24) as usize])
                    .collect()
            })
            .collect()
    }

    /// Writes files of about `total` bytes in all under `dir` and returns
    /// their paths. Sizes are exponentially distributed (mean 64 KiB, at
    /// least 256 bytes); word frequencies are skewed (Zipf-like), as in
    /// real text.
    ///
    /// # Errors
    ///
    /// The I/O error of a file that could not be written.
    pub fn write(dir: &Path, total: u64) -> std::io::Result<Vec<PathBuf>> {
        let mut rng = Lcg(0x5EED_C0DE_2026_1202);
        let words = vocabulary(&mut rng);
        let mut paths = Vec::new();
        let mut written = 0u64;
        while written < total {
            let size = ((-rng.unit().ln() * 65_536.0) as u64).max(256);
            let path = dir.join(format!("doc-{:05}.txt", paths.len()));
            let mut text = Vec::with_capacity(size as usize + 32);
            while (text.len() as u64) < size {
                // u² skews the choice towards the first words.
                let u = rng.unit();
                let w = &words[((u * u) * words.len() as f64) as usize];
                text.extend_from_slice(w.as_bytes());
                text.push(if rng.next() % 12 == 0 { b'\n' } else { b' ' });
            }
            std::fs::File::create(&path)?.write_all(&text)?;
            written += text.len() as u64;
            paths.push(path);
        }
        Ok(paths)
    }

    /// SHA-256 of one file.
    pub fn sha256_file(path: String) -> [u8; 32] {
        use sha2::Digest as _;
        let bytes = std::fs::read(path).unwrap_or_default();
        sha2::Sha256::digest(&bytes).into()
    }

    /// Word counts of one file.
    pub fn count_words(path: String) -> std::collections::HashMap<String, u64> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut counts = std::collections::HashMap::<&str, u64>::new();
        for w in text.split_ascii_whitespace() {
            *counts.entry(w).or_default() += 1;
        }
        counts.into_iter().map(|(w, n)| (w.to_owned(), n)).collect()
    }

    /// Adds `part`'s counts into `total`.
    pub fn merge(
        mut total: std::collections::HashMap<String, u64>,
        part: std::collections::HashMap<String, u64>,
    ) -> std::collections::HashMap<String, u64> {
        for (w, n) in part {
            *total.entry(w).or_default() += n;
        }
        total
    }
}
