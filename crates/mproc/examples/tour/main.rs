//! A guided tour of mproc, one chapter per crate, then async and progress.
//!
//! ```text
//! cargo run --release --example tour
//! ```
//!
//! Every child here is a function started with `Process::new` or `spawn`;
//! the handles it needs (a lock, a value, a queue) are its arguments.

mod asyncs;
#[path = "../common/mod.rs"]
mod common;
mod manager;
mod pool;
mod process;
mod progress;
mod queue;
mod sync;

use std::path::Path;

use common::Result;
use mproc::shm::{FileDoc, RawArray};
use mproc::sync::Barrier;
use mproc::Process;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct Office {
    count: i64,
}

fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("mproc-tour-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = chapter_shm(&dir);
    std::fs::remove_dir_all(&dir)?;
    result?;
    sync::chapter()?;
    process::chapter()?;
    queue::chapter()?;
    pool::chapter()?;
    manager::chapter()?;
    asyncs::chapter()?;
    progress::chapter()
}

/// A buyer done wrong: read the count, wait until every buyer has read it
/// (the race, made certain), then write count - 1. Whether it bought.
fn buy_naive(path: String, all_read: Barrier) -> Result<bool> {
    let office: Office = serde_json::from_slice(&std::fs::read(&path)?)?;
    all_read.wait()?;
    if office.count > 0 {
        let left = Office {
            count: office.count - 1,
        };
        std::fs::write(&path, serde_json::to_vec(&left)?)?;
        return Ok(true);
    }
    Ok(false)
}

/// A buyer done right: query and buy under the document's lock.
fn buy_locked(path: String) -> Result<bool> {
    let doc = FileDoc::<Office>::open(&path)?;
    Ok(doc.update(|o| {
        let ok = o.count > 0;
        if ok {
            o.count -= 1;
        }
        ok
    })?)
}

/// Fills a quarter of the shared array with squares.
fn fill(squares: RawArray<u64>, part: usize) {
    for i in part * 4..part * 4 + 4 {
        squares.set(i, (i * i) as u64).expect("in range");
    }
}

/// Runs `n` buyers at once and counts the tickets they bought.
fn sold(buyers: Vec<mproc::JoinHandle<std::result::Result<bool, String>>>) -> Result<usize> {
    let mut sold = 0;
    for b in buyers {
        if b.join()?? {
            sold += 1;
        }
    }
    Ok(sold)
}

/// Chapter 1 — mproc-shm: documents and memory shared between processes.
fn chapter_shm(dir: &Path) -> Result<()> {
    println!("== Chapter 1: file-backed IPC (mproc::shm) ==\n");

    println!("The ticket office has 3 tickets and 6 buyers, each a process.");
    println!("First, done wrong: every buyer reads the count, then writes count - 1.");
    let path = dir.join("tickets.json");
    let path_s = path.to_str().ok_or("temp path is not UTF-8")?.to_owned();
    std::fs::write(&path, serde_json::to_vec(&Office { count: 3 })?)?;
    let all_read = Barrier::new(6)?;
    let buyers = (0..6)
        .map(|_| mproc::spawn(naive, (path_s.clone(), all_read.clone())))
        .collect();
    let n = sold(buyers)?;
    let left: Office = serde_json::from_slice(&std::fs::read(&path)?)?;
    println!(
        "  sold {n} tickets out of 3; the file says {} left. Oversold!\n",
        left.count
    );
    std::fs::remove_file(&path)?;

    println!(
        "Now with FileDoc::update: query and buy under one lock, replace the file atomically."
    );
    let doc = FileDoc::create(&path, &Office { count: 3 })?;
    let buyers = (0..6)
        .map(|_| mproc::spawn(locked, path_s.clone()))
        .collect();
    let n = sold(buyers)?;
    println!(
        "  sold {n} tickets out of 3; {} left. Never oversold.\n",
        doc.read()?.count
    );
    doc.remove()?;

    println!("Shared memory: 4 children each fill a quarter of one RawArray<u64>.");
    let squares = RawArray::<u64>::new(16)?;
    let mut kids = Vec::new();
    for part in 0..4 {
        let mut p = Process::new(fill, (squares.clone(), part));
        p.start()?;
        kids.push(p);
    }
    for p in &kids {
        p.join()?;
    }
    println!("  squares = {:?}\n", squares.to_vec());
    Ok(())
}

/// The buyers as a child runs them, their errors as text (a child's value
/// crosses the process boundary by serde).
fn naive(path: String, all_read: Barrier) -> std::result::Result<bool, String> {
    buy_naive(path, all_read).map_err(|e| e.to_string())
}

fn locked(path: String) -> std::result::Result<bool, String> {
    buy_locked(path).map_err(|e| e.to_string())
}
