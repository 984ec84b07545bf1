//! Child roles for the mproc-sync cross-process tests. Handles arrive by
//! inheritance: `MPROC_INHERITED_FDS` plus hex transfer bytes in `argv[2]`.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mproc::shm::{RawValue, Segment};
use mproc::sync::{
    Barrier, Condition, Event, Lock, LockTimeoutError, RLock, Semaphore, TryLockError, Value,
};
use serde::de::DeserializeOwned;

fn handles<T: DeserializeOwned>(hex: &str) -> T {
    mproc_tests::inherited(hex)
}

use mproc_tests::say as line;

fn stdin_line() -> String {
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s).unwrap();
    s.trim().to_owned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let n = || arg(2).parse::<u64>().unwrap();
    let role = arg(0);
    let hex = arg(1);
    match role {
        "value-update" => {
            let v: Value<u64> = handles(hex);
            for _ in 0..n() {
                v.update(|x| *x += 1);
            }
        }
        "lock-increment" => {
            let (lock, raw): (Lock, RawValue<u64>) = handles(hex);
            for _ in 0..n() {
                let _g = lock.lock().unwrap();
                raw.set(raw.get() + 1);
            }
        }
        "semaphore" => {
            let (sem, seg, full, k): (Semaphore, Segment, Event, u32) = handles(hex);
            let (cur, max) = (seg.atomic_u32(0).unwrap(), seg.atomic_u32(4).unwrap());
            for round in 0..n() {
                sem.acquire();
                let now = cur.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                if now == k {
                    full.set();
                }
                if round == 0 && !full.wait_timeout(Duration::from_secs(20)) {
                    return ExitCode::from(4);
                }
                cur.fetch_sub(1, Ordering::SeqCst);
                sem.release().unwrap();
            }
        }
        "barrier-rounds" => {
            let (b, seg, parties): (Barrier, Segment, u32) = handles(hex);
            let rounds = n() as usize;
            for r in 0..rounds {
                seg.atomic_u32(4 * r)
                    .unwrap()
                    .fetch_add(1, Ordering::SeqCst);
                let idx = b.wait().unwrap();
                if seg.atomic_u32(4 * r).unwrap().load(Ordering::SeqCst) < parties {
                    line(format!("passed round {r} early"));
                    return ExitCode::from(3);
                }
                seg.atomic_u32(4 * (rounds + r))
                    .unwrap()
                    .fetch_or(1 << idx, Ordering::SeqCst);
            }
        }
        "condition-produce" => {
            let (cond, counter): (Condition, RawValue<u64>) = handles(hex);
            for _ in 0..n() {
                let _g = cond.get_lock().lock().unwrap();
                counter.set(counter.get() + 1);
                cond.notify_all().unwrap();
            }
        }
        "event-pong" => {
            let (ping, pong): (Event, Event) = handles(hex);
            for _ in 0..n() {
                if !ping.wait_timeout(Duration::from_secs(20)) {
                    return ExitCode::from(5);
                }
                ping.clear();
                pong.set();
            }
        }
        "hold-lock" => {
            let lock: Lock = handles(hex);
            let g = lock.lock().unwrap();
            line("locked");
            if stdin_line() == "release" {
                drop(g);
                line("released");
            }
        }
        "wait-lock" => {
            let lock: Lock = handles(hex);
            line("waiting");
            match lock.lock_timeout(Duration::from_secs(20)) {
                Ok(_) => line("ok"),
                Err(LockTimeoutError::OwnerDied(_)) => line("owner-died"),
                Err(e) => line(e),
            };
        }
        "barrier-wait" => {
            let b: Barrier = handles(hex);
            match b.wait_timeout(Duration::from_secs(20)) {
                Ok(i) => line(format!("ok {i}")),
                Err(_) => line("broken"),
            }
        }
        "print-with-lock" | "print-without-lock" => {
            let lock: Lock = handles(hex);
            let g = if role == "print-with-lock" {
                Some(lock.lock().unwrap())
            } else {
                None
            };
            let me = std::process::id();
            let mut out = std::io::stdout().lock();
            writeln!(out, "start {me}").unwrap();
            out.flush().unwrap();
            drop(out);
            // Give the others a chance to print in between.
            for _ in 0..50 {
                std::thread::yield_now();
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "end {me}").unwrap();
            out.flush().unwrap();
            drop(g);
        }
        "hold-both-and-die" => {
            // Takes a Lock and an RLock, leaks both guards, and dies.
            let (lock, rlock): (Lock, RLock) = handles(hex);
            std::mem::forget(lock.lock().unwrap());
            std::mem::forget(rlock.lock().unwrap());
            line("locked");
            let _ = stdin_line();
            // SAFETY: kill on our own pid; no memory is touched.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        "reused-pid-probe" => {
            // A new process that may have been handed a dead holder's pid:
            // neither lock may pass for ours, and both are taken over.
            let (lock, rlock): (Lock, RLock) = handles(hex);
            line(std::process::id());
            let r = match rlock.try_lock() {
                Ok(g) => format!("rlock ok count {}", g.lock().count()),
                Err(TryLockError::OwnerDied(d)) => {
                    format!("rlock owner-died count {}", d.get_ref().lock().count())
                }
                Err(e) => format!("rlock {e}"),
            };
            line(r);
            let l = match lock.lock_timeout(Duration::from_secs(2)) {
                Ok(_) => "lock ok".to_string(),
                Err(LockTimeoutError::OwnerDied(_)) => "lock owner-died".to_string(),
                Err(e) => format!("lock {e}"),
            };
            line(l);
        }
        "condition-wait-once" => {
            // Enlists under the lock (counted in `ready`), waits once.
            let (cond, ready): (Condition, RawValue<u32>) = handles(hex);
            let mut g = cond.get_lock().lock().unwrap();
            ready.set(ready.get() + 1);
            let notified = cond
                .wait_timeout(&mut g, Duration::from_millis(n()))
                .unwrap();
            line(if notified { "notified" } else { "timed-out" });
        }
        "event-wait" => {
            let ev: Event = handles(hex);
            line("waiting");
            let set = ev.wait_timeout(Duration::from_secs(n()));
            line(if set { "set" } else { "timed-out" });
        }
        other => {
            eprintln!("sync-child: unknown role {other:?}");
            return ExitCode::from(64);
        }
    }
    ExitCode::SUCCESS
}
