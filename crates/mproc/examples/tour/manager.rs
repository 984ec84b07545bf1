//! Chapter 6 — mproc-manager: a dict and a list in a server
//! process, as with Python's `multiprocessing.Manager()`.

use crate::common::Result;
use mproc::manager::{task, Dict, List, Manager, ManagerError, Registry};

/// Adds `by` to a count (a missing count is 0): registered with the
/// manager, run in the server under the entry's lock.
fn add(count: Option<u64>, by: u64) -> Option<u64> {
    Some(count.unwrap_or(0) + by)
}

fn tasks() -> Registry {
    Registry::new().with(task!(add))
}

/// Counts the words of `text` into the shared dict, one atomic update per
/// word, and logs that it is done.
/// (Its error travels back to the parent as text.)
fn count(
    text: String,
    words: Dict<String, u64>,
    log: List<String>,
) -> std::result::Result<(), String> {
    let n = text.split_whitespace().count();
    for w in text.split_whitespace() {
        words
            .update(&task!(add), w.to_lowercase(), 1u64)
            .map_err(|e| e.to_string())?;
    }
    log.push(format!("{n} words from {}", std::process::id()))
        .map(drop)
        .map_err(|e| e.to_string())
}

pub(crate) fn chapter() -> Result<()> {
    println!("== Chapter 6: shared objects in a server process (mproc::manager) ==\n");
    let m = Manager::builder().tasks(tasks).start()?;
    let words = m.dict::<String, u64>()?;
    let log = m.list::<String>()?;
    let lines = [
        "the quick brown fox",
        "jumps over the lazy dog",
        "The dog sleeps",
    ];
    let kids: Vec<_> = lines
        .iter()
        .map(|l| mproc::spawn(count, (l.to_string(), words.clone(), log.clone())))
        .collect();
    for k in kids {
        k.join()??;
    }
    let mut counts: Vec<(String, u64)> = words.iter()?.collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("  three children counted into one dict: {:?}", &counts[..3]);
    println!("  their log: {:?}", log.to_vec()?);
    assert_eq!(words.get("the")?, Some(3));
    let pid = m.pid();
    m.shutdown()?;
    // The objects end with the server; a proxy says so, it does not hang.
    assert!(matches!(words.len(), Err(ManagerError::ServerGone)));
    println!(
        "  server {pid:?} shut down; a proxy now says: {}",
        ManagerError::ServerGone
    );
    Ok(())
}
