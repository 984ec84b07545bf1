//! Writes the real-workload benches' corpus into a directory (for
//! `python/workloads.py`, which must read the very same files):
//! `corpus DIR [BYTES]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: corpus DIR [BYTES]");
        std::process::exit(2);
    };
    let bytes = args
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or(mproc_benches::corpus::FULL_BYTES);
    let dir = std::path::PathBuf::from(dir);
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| mproc_benches::corpus::write(&dir, bytes))
        .map(|paths| println!("{}", paths.len()))
    {
        eprintln!("corpus: {e}");
        std::process::exit(1);
    }
}
