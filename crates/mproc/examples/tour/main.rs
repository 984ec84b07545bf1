//! A guided tour of mproc, one chapter per crate.
//!
//! ```text
//! cargo run --release --example tour
//! ```
//!
//! The children in these chapters are this same program started again in a
//! child role (`tour child …`), with handles passed by `mproc::shm::transfer`.

#[path = "../common/mod.rs"]
mod common;
mod pool;
mod process;
mod queue;
mod sync;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};

use common::{child_command, reap, Result};
use mproc::shm::{FileDoc, RawArray};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct Office {
    count: i64,
}

fn main() -> Result<()> {
    if let Some(args) = common::child_role() {
        return child(&args);
    }
    let dir = std::env::temp_dir().join(format!("mproc-tour-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = chapter_shm(&dir);
    std::fs::remove_dir_all(&dir)?;
    result?;
    sync::chapter()?;
    process::chapter()?;
    queue::chapter()?;
    pool::chapter()
}

/// Chapter 1 — mproc-shm: documents and memory shared between processes.
fn chapter_shm(dir: &Path) -> Result<()> {
    println!("== Chapter 1: file-backed IPC (mproc::shm) ==\n");

    println!("The ticket office has 3 tickets and 6 buyers, each a process.");
    println!("First, done wrong: every buyer reads the count, then writes count - 1.");
    let path = dir.join("tickets.json");
    std::fs::write(&path, serde_json::to_vec(&Office { count: 3 })?)?;
    let mut buyers: Vec<Child> = (0..6)
        .map(|_| spawn_child(&["buy-naive", path_str(&path)?]))
        .collect::<Result<_>>()?;
    let mut outs: Vec<_> = buyers
        .iter_mut()
        .map(|b| BufReader::new(b.stdout.take().expect("piped")))
        .collect();
    // Let every buyer query before any buys: the race, made certain.
    for out in &mut outs {
        read_line(out)?;
    }
    for b in &mut buyers {
        b.stdin.take().expect("piped").write_all(b"go\n")?;
    }
    let sold = outs
        .iter_mut()
        .map(read_line)
        .filter(|l| matches!(l.as_deref(), Ok("bought")))
        .count();
    reap(buyers)?;
    let left: Office = serde_json::from_slice(&std::fs::read(&path)?)?;
    println!(
        "  sold {sold} tickets out of 3; the file says {} left. Oversold!\n",
        left.count
    );
    std::fs::remove_file(&path)?;

    println!(
        "Now with FileDoc::update: query and buy under one lock, replace the file atomically."
    );
    let doc = FileDoc::create(&path, &Office { count: 3 })?;
    let buyers: Vec<Child> = (0..6)
        .map(|_| spawn_child(&["buy-locked", path_str(&path)?]))
        .collect::<Result<_>>()?;
    let mut sold = 0;
    for b in buyers {
        let out = b.wait_with_output()?;
        if String::from_utf8_lossy(&out.stdout).trim() == "bought" {
            sold += 1;
        }
    }
    println!(
        "  sold {sold} tickets out of 3; {} left. Never oversold.\n",
        doc.read()?.count
    );
    doc.remove()?;

    println!("Shared memory: 4 children each fill a quarter of one RawArray<u64>.");
    let squares = RawArray::<u64>::new(16)?;
    let kids: Vec<Child> = (0..4)
        .map(|part| common::spawn_with("fill", &squares, &[&part.to_string()], Stdio::null()))
        .collect::<Result<_>>()?;
    reap(kids)?;
    println!("  squares = {:?}\n", squares.to_vec());
    Ok(())
}

/// The roles this program plays as a child.
fn child(args: &[String]) -> Result<()> {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "buy-naive" => {
            let office: Office = serde_json::from_slice(&std::fs::read(arg(1))?)?;
            println!("read {}", office.count);
            std::io::stdin().lock().read_line(&mut String::new())?;
            if office.count > 0 {
                std::fs::write(
                    arg(1),
                    serde_json::to_vec(&Office {
                        count: office.count - 1,
                    })?,
                )?;
                println!("bought");
            } else {
                println!("sold out");
            }
        }
        "buy-locked" => {
            let doc = FileDoc::<Office>::open(arg(1))?;
            let bought = doc.update(|o| {
                let ok = o.count > 0;
                if ok {
                    o.count -= 1;
                }
                ok
            })?;
            println!("{}", if bought { "bought" } else { "sold out" });
        }
        "fill" => {
            let squares: RawArray<u64> = common::handles(arg(1))?;
            let part: usize = arg(2).parse()?;
            for i in part * 4..part * 4 + 4 {
                squares.set(i, (i * i) as u64)?;
            }
        }
        role if role.starts_with("sync-") => sync::child(args)?,
        other => return Err(format!("unknown child role {other:?}").into()),
    }
    Ok(())
}

fn spawn_child(args: &[&str]) -> Result<Child> {
    Ok(child_command(args)?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?)
}

fn read_line(r: &mut BufReader<std::process::ChildStdout>) -> Result<String> {
    let mut s = String::new();
    r.read_line(&mut s)?;
    Ok(s.trim().to_owned())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| "temp path is not UTF-8".into())
}
