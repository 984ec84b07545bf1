//! mproc-sync across real processes: counts under a lock, concurrency under a
//! semaphore, barrier generations, wake-up storms, and killed holders.
//! `cargo xtask test` runs this module a second time with the portable
//! (sleep-poll) wait layer.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mproc::shm::{transfer, RawValue, Segment};
use mproc::sync::{
    Barrier, BoundedSemaphore, BrokenBarrier, Condition, Event, Lock, LockError, NotOwner,
    Semaphore, Value,
};
use mproc_tests::{hex, signal, LeakCheck, Lines};
use serde::Serialize;

const CHILD: &str = env!("CARGO_BIN_EXE_sync-child");

/// Starts a fixture role with `handles` inherited, stdin and stdout piped.
fn spawn<T: Serialize>(role: &str, handles: &T, n: u64) -> Child {
    let msg = transfer::encode(handles).unwrap();
    let mut c = Command::new(CHILD);
    c.args([role, &hex(&msg.bytes), &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    transfer::spawn_inheriting(&mut c, &msg.fds).unwrap()
}

fn reap_ok(kids: Vec<Child>) {
    for mut k in kids {
        let status = k.wait().unwrap();
        assert!(status.success(), "child {} failed: {status}", k.id());
    }
}

#[test]
fn value_increments_under_its_lock_add_up_exactly() {
    let leaks = LeakCheck::start();
    let v = Value::new(0u64).unwrap();
    let (procs, k) = (4, 5_000);
    let kids = (0..procs).map(|_| spawn("value-update", &v, k)).collect();
    reap_ok(kids);
    assert_eq!(v.get(), procs * k);
    drop(v);
    leaks.assert_clean();
}

#[test]
fn lock_protects_a_raw_value_across_processes() {
    let leaks = LeakCheck::start();
    let lock = Lock::new().unwrap();
    let raw = RawValue::new(0u64).unwrap();
    let kids = (0..3)
        .map(|_| spawn("lock-increment", &(lock.clone(), raw.clone()), 5_000))
        .collect();
    for _ in 0..5_000 {
        let _g = lock.lock().unwrap();
        raw.set(raw.get() + 1);
    }
    reap_ok(kids);
    assert_eq!(raw.get(), 20_000);
    drop((lock, raw));
    leaks.assert_clean();
}

#[test]
fn semaphore_bounds_concurrency_and_reaches_the_bound() {
    let leaks = LeakCheck::start();
    let k = 3u32;
    let sem = Semaphore::new(k).unwrap();
    let seg = Segment::anonymous(64).unwrap();
    let full = Event::new().unwrap();
    let kids = (0..6)
        .map(|_| {
            spawn(
                "semaphore",
                &(sem.clone(), seg.clone(), full.clone(), k),
                200,
            )
        })
        .collect();
    reap_ok(kids);
    let max = seg.atomic_u32(4).unwrap().load(Ordering::SeqCst);
    assert_eq!(max, k, "the most holders at once must be exactly {k}");
    assert_eq!(sem.value(), k);
    drop((sem, seg, full));
    leaks.assert_clean();
}

#[test]
fn barrier_rounds_nobody_passes_early_and_indices_are_distinct() {
    let leaks = LeakCheck::start();
    let (parties, rounds) = (4u32, 50usize);
    let b = Barrier::new(parties).unwrap();
    let seg = Segment::anonymous(8 * rounds).unwrap();
    let kids = (0..parties)
        .map(|_| {
            spawn(
                "barrier-rounds",
                &(b.clone(), seg.clone(), parties),
                rounds as u64,
            )
        })
        .collect();
    reap_ok(kids);
    for r in 0..rounds {
        assert_eq!(
            seg.atomic_u32(4 * r).unwrap().load(Ordering::SeqCst),
            parties
        );
        let mask = seg
            .atomic_u32(4 * (rounds + r))
            .unwrap()
            .load(Ordering::SeqCst);
        assert_eq!(
            mask,
            (1 << parties) - 1,
            "round {r}: indices {mask:b} not distinct"
        );
    }
    drop((b, seg));
    leaks.assert_clean();
}

#[test]
fn condition_storm_loses_no_wakeup() {
    let leaks = LeakCheck::start();
    let cond = Condition::new().unwrap();
    let counter = RawValue::new(0u64).unwrap();
    let (procs, k) = (3u64, 2_000u64);
    let kids = (0..procs)
        .map(|_| spawn("condition-produce", &(cond.clone(), counter.clone()), k))
        .collect();
    {
        let mut g = cond.get_lock().lock().unwrap();
        let done = cond
            .wait_while_timeout(&mut g, Duration::from_secs(30), || {
                counter.get() < procs * k
            })
            .unwrap();
        assert!(done, "stuck at {} of {}", counter.get(), procs * k);
    }
    reap_ok(kids);
    drop((cond, counter));
    leaks.assert_clean();
}

#[test]
fn event_ping_pong_loses_no_wakeup() {
    let leaks = LeakCheck::start();
    let (ping, pong) = (Event::new().unwrap(), Event::new().unwrap());
    let rounds = 2_000;
    let kid = spawn("event-pong", &(ping.clone(), pong.clone()), rounds);
    for i in 0..rounds {
        ping.set();
        assert!(pong.wait_timeout(Duration::from_secs(20)), "round {i} lost");
        pong.clear();
    }
    reap_ok(vec![kid]);
    drop((ping, pong));
    leaks.assert_clean();
}

#[test]
fn holder_killed_next_locker_gets_owner_died_promptly() {
    let leaks = LeakCheck::start();
    let lock = Lock::new().unwrap();
    let mut holder = spawn("hold-lock", &lock, 0);
    let mut lines = Lines::of(&mut holder);
    assert_eq!(lines.next_line().as_deref(), Some("locked"));
    assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
    signal(&holder, libc::SIGKILL).unwrap();
    // Not reaped yet: the holder is a zombie, which still counts as dead.
    let start = Instant::now();
    let guard = match lock.lock_timeout(Duration::from_secs(1)) {
        Err(LockError::OwnerDied(g)) => g,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "took {:?}",
        start.elapsed()
    );
    guard.mark_consistent();
    drop(guard);
    assert!(lock.lock().is_ok());
    holder.wait().unwrap();
    drop(lines);
    drop(lock);
    leaks.assert_clean();
}

#[test]
fn waiter_already_blocked_is_released_when_the_holder_dies() {
    let leaks = LeakCheck::start();
    let lock = Lock::new().unwrap();
    let mut holder = spawn("hold-lock", &lock, 0);
    let mut held = Lines::of(&mut holder);
    assert_eq!(held.next_line().as_deref(), Some("locked"));
    let mut waiter = spawn("wait-lock", &lock, 0);
    let mut waiting = Lines::of(&mut waiter);
    assert_eq!(waiting.next_line().as_deref(), Some("waiting"));
    signal(&holder, libc::SIGKILL).unwrap();
    assert_eq!(waiting.next_line().as_deref(), Some("owner-died"));
    assert!(waiter.wait().unwrap().success());
    holder.wait().unwrap();
    drop((held, waiting, lock));
    leaks.assert_clean();
}

#[test]
fn stopped_holder_is_not_robbed() {
    let leaks = LeakCheck::start();
    let lock = Lock::new().unwrap();
    let mut holder = spawn("hold-lock", &lock, 0);
    let mut lines = Lines::of(&mut holder);
    assert_eq!(lines.next_line().as_deref(), Some("locked"));
    signal(&holder, libc::SIGSTOP).unwrap();
    // Several probe intervals pass; a stopped process is alive.
    assert!(matches!(
        lock.lock_timeout(Duration::from_millis(200)),
        Err(LockError::Timeout)
    ));
    signal(&holder, libc::SIGCONT).unwrap();
    use std::io::Write;
    holder
        .stdin
        .take()
        .unwrap()
        .write_all(b"release\n")
        .unwrap();
    assert_eq!(lines.next_line().as_deref(), Some("released"));
    assert!(
        lock.lock_timeout(Duration::from_secs(10)).is_ok(),
        "a clean handover, no OwnerDied"
    );
    assert!(holder.wait().unwrap().success());
    drop((lines, lock));
    leaks.assert_clean();
}

#[test]
fn party_killed_inside_wait_breaks_the_barrier_for_everyone() {
    let leaks = LeakCheck::start();
    let b = Barrier::new(3).unwrap();
    let victim = spawn("barrier-wait", &b, 0);
    let mut other = spawn("barrier-wait", &b, 0);
    let mut other_out = Lines::of(&mut other);
    // Observe, not sleep: both children are inside wait.
    let start = Instant::now();
    while b.n_waiting() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "children never arrived"
        );
        std::thread::yield_now();
    }
    signal(&victim, libc::SIGKILL).unwrap();
    assert_eq!(other_out.next_line().as_deref(), Some("broken"));
    assert_eq!(b.wait_timeout(Duration::from_secs(10)), Err(BrokenBarrier));
    assert!(b.is_broken());
    let mut victim = victim;
    victim.wait().unwrap();
    assert!(other.wait().unwrap().success());
    drop((victim, other, other_out, b));
    leaks.assert_clean();
}

#[test]
fn printer_lines_pair_up_with_the_lock() {
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    let leaks = LeakCheck::start();
    let lock = Lock::new().unwrap();
    // One stdout shared by the three printers, as a terminal would be.
    let (mut reader, writer) = UnixStream::pair().unwrap();
    let msg = transfer::encode(&lock).unwrap();
    let kids: Vec<Child> = (0..3)
        .map(|_| {
            let mut c = Command::new(CHILD);
            c.args(["print-with-lock", &hex(&msg.bytes)])
                .stdout(Stdio::from(OwnedFd::from(writer.try_clone().unwrap())));
            transfer::spawn_inheriting(&mut c, &msg.fds).unwrap()
        })
        .collect();
    drop((writer, msg));
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    reap_ok(kids);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    for pair in lines.chunks(2) {
        let (start, end) = (pair[0].strip_prefix("start "), pair[1].strip_prefix("end "));
        assert!(start.is_some() && start == end, "interleaved: {text}");
    }
    drop((reader, lock));
    leaks.assert_clean();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let lock = Lock::new().unwrap();
    assert_eq!(lock.release(), Err(NotOwner));
    let s = BoundedSemaphore::new(2).unwrap();
    let e = s.release().unwrap_err();
    assert_eq!(e.to_string(), "semaphore released too many times (bound 2)");
    assert_eq!(s.value(), 2);
    let e = Barrier::new(0).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let cond = Condition::new().unwrap();
    assert_eq!(cond.notify_all(), Err(NotOwner));
    // A handle decoded as the wrong primitive.
    let msg = transfer::encode(&Semaphore::new(1).unwrap()).unwrap();
    let err = transfer::decode::<Barrier>(msg).unwrap_err().to_string();
    assert!(
        err.contains("holds a Semaphore where a Barrier was expected"),
        "{err}"
    );
}
