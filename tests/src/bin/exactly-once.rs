//! The standalone exactly-once checker that `cargo xtask stress` runs while
//! every core is kept busy.
//!
//! Each round puts items through a small queue (a 4 KiB ring by default)
//! with producers × consumers in {1, 2, 4}², for item sizes 0 B, 8 B, 1 KiB,
//! ring − 1, ring and 4 × ring; the queue is closed once every producer is
//! joined and consumers read until `Closed`. Every item carries its
//! producer, sequence number and a checksum; the checker counts items lost,
//! delivered twice, corrupt or out of order (per producer, per consumer),
//! and rounds that hung (a bound of 60 s per step, after which the children
//! are killed and reaped).
//!
//! ```text
//! exactly-once [--seconds S | --rounds N] [--ring BYTES]
//! ```
//!
//! Prints one line per round and a final tally; exits 1 when anything was
//! lost, duplicated, corrupt, reordered or hung.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mproc::queue::GetError;
use mproc::{Process, Queue};
use serde::{Deserialize, Serialize};

/// How long any step of a round may take before it counts as hung.
const STEP: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct Item {
    producer: u32,
    seq: u32,
    data: Vec<u8>,
    sum: u64,
}

fn checksum(producer: u32, seq: u32, data: &[u8]) -> u64 {
    data.iter()
        .fold((u64::from(producer) << 32) | u64::from(seq), |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

fn produce((q, producer, count, size): (Queue<Item>, u32, u32, usize)) {
    for seq in 0..count {
        let data: Vec<u8> = (0..size)
            .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq ^ producer) as u8)
            .collect();
        let sum = checksum(producer, seq, &data);
        q.put(Item {
            producer,
            seq,
            data,
            sum,
        })
        .expect("put");
    }
}

/// What one consumer saw: (producer, seq, intact), in the order it got them.
type Seen = Vec<(u32, u32, bool)>;

fn consume((q, out): (Queue<Item>, Queue<Seen>)) {
    let mut seen = Seen::new();
    loop {
        match q.get() {
            Ok(m) => {
                let intact = m.sum == checksum(m.producer, m.seq, &m.data);
                seen.push((m.producer, m.seq, intact));
            }
            Err(GetError::Closed) => break,
            // A message that cannot be read is corrupt: count it.
            Err(_) => seen.push((u32::MAX, 0, false)),
        }
    }
    out.put(seen).expect("report");
}

#[derive(Default, Clone, Copy)]
struct Tally {
    items: u64,
    lost: u64,
    duplicated: u64,
    corrupt: u64,
    reordered: u64,
    hung: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.items += o.items;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.corrupt += o.corrupt;
        self.reordered += o.reordered;
        self.hung += o.hung;
    }

    fn bad(&self) -> u64 {
        self.lost + self.duplicated + self.corrupt + self.reordered + self.hung
    }
}

/// Joins `p` within [`STEP`], killing it otherwise; `false` when it hung.
fn join_bounded(p: &mut Process) -> bool {
    let _ = p.join_timeout(STEP);
    if p.exitcode().is_some() {
        return true;
    }
    let _ = p.kill();
    let _ = p.join();
    false
}

fn one(producers: u32, consumers: u32, size: usize, ring: usize) -> Tally {
    let count: u32 = if size > ring { 20 } else { 100 };
    let mut t = Tally {
        items: u64::from(producers * count),
        ..Tally::default()
    };
    let q: Queue<Item> = Queue::with_capacity_bytes(ring).expect("queue");
    let out: Queue<Seen> = Queue::new().expect("report queue");
    let mut cs: Vec<Process> = (0..consumers)
        .map(|_| Process::new(consume, (q.clone(), out.clone())))
        .collect();
    let mut ps: Vec<Process> = (0..producers)
        .map(|id| Process::new(produce, (q.clone(), id, count, size)))
        .collect();
    for p in cs.iter_mut().chain(ps.iter_mut()) {
        p.start().expect("start");
    }
    for p in &mut ps {
        if !join_bounded(p) || p.exitcode() != Some(0) {
            t.hung += 1;
        }
    }
    q.close();
    let mut seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for _ in 0..consumers {
        let Ok(report) = out.get_timeout(STEP) else {
            t.hung += 1;
            continue;
        };
        let mut last: BTreeMap<u32, u32> = BTreeMap::new();
        for (producer, seq, intact) in report {
            if !intact {
                t.corrupt += 1;
                continue;
            }
            if last.get(&producer).is_some_and(|&l| seq <= l) {
                t.reordered += 1;
            }
            last.insert(producer, seq);
            seen.entry(producer).or_default().push(seq);
        }
    }
    for c in &mut cs {
        if !join_bounded(c) {
            t.hung += 1;
        }
    }
    for id in 0..producers {
        let mut seqs = seen.remove(&id).unwrap_or_default();
        let n = seqs.len() as u64;
        seqs.sort_unstable();
        seqs.dedup();
        t.duplicated += n - seqs.len() as u64;
        t.lost += u64::from(count) - seqs.iter().filter(|&&s| s < count).count() as u64;
    }
    // Anything from a producer that does not exist is corrupt.
    t.corrupt += seen.values().map(|v| v.len() as u64).sum::<u64>();
    if t.bad() > 0 {
        eprintln!(
            "exactly-once: {producers}x{consumers}, {size} B items: lost {} duplicated {} corrupt {} reordered {} hung {}",
            t.lost, t.duplicated, t.corrupt, t.reordered, t.hung
        );
    }
    t
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let ring = value("--ring").unwrap_or(4096) as usize;
    let rounds = value("--rounds");
    let seconds = value("--seconds");
    let until = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let sizes = [0, 8, 1024, ring - 1, ring, 4 * ring];
    let mut total = Tally::default();
    let mut round = 0u64;
    loop {
        if rounds.is_some_and(|n| round >= n) || until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        if rounds.is_none() && until.is_none() && round == 1 {
            break;
        }
        let start = Instant::now();
        let mut t = Tally::default();
        for producers in [1, 2, 4] {
            for consumers in [1, 2, 4] {
                for size in sizes {
                    t.add(one(producers, consumers, size, ring));
                }
            }
        }
        round += 1;
        println!(
            "round {round}: {} items in {:.1?}: {} lost, {} duplicated, {} corrupt, {} reordered, {} hung",
            t.items,
            start.elapsed(),
            t.lost,
            t.duplicated,
            t.corrupt,
            t.reordered,
            t.hung
        );
        total.add(t);
    }
    println!(
        "exactly-once: {round} rounds, {} items: {} lost, {} duplicated, {} corrupt, {} reordered, {} hung",
        total.items, total.lost, total.duplicated, total.corrupt, total.reordered, total.hung
    );
    if total.bad() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
