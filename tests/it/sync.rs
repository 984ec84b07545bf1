//! mproc-sync across real processes: counts under a lock, concurrency under a
//! semaphore, barrier generations, wake-up storms, and killed holders.
//! `cargo xtask test` runs this module a second time with the portable
//! (sleep-poll) wait layer.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mproc::shm::{transfer, RawValue, Segment};
use mproc::sync::{
    Barrier, BoundedSemaphore, BrokenBarrier, Condition, Event, Lock, LockTimeoutError, NotOwner,
    Semaphore, TryLockError, Value,
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
    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    signal(&holder, libc::SIGKILL).unwrap();
    // Not reaped yet: the holder is a zombie, which still counts as dead.
    let start = Instant::now();
    let guard = match lock.lock_timeout(Duration::from_secs(1)) {
        Err(LockTimeoutError::OwnerDied(d)) => d.into_inner(),
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
        Err(LockTimeoutError::Timeout)
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

/// The state letter of process `pid` (`S` sleeping, `R` running, …).
#[cfg(target_os = "linux")]
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
}

/// Starts `role` so that it is handed the pid of `dead` (a process that
/// ended), by writing `pid - 1` to `/proc/sys/kernel/ns_last_pid` just
/// before, as a pid wrap-around would hand it out. Other processes may take
/// the pid first, and a process started within the same clock tick as the
/// dead one (10 ms) has the same start time — which a real wrap-around,
/// `pid_max` process creations later, never has: either way the child is
/// killed and reaped, and we try again. `None` when the kernel does not let
/// us choose (not root, no such file).
#[cfg(target_os = "linux")]
fn spawn_with_pid<T: Serialize>(
    role: &str,
    handles: &T,
    dead: mproc::shm::ProcessIdent,
) -> Option<Child> {
    let pid = dead.pid();
    for _ in 0..2000 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).is_err() {
            return None;
        }
        let mut child = spawn(role, handles, 0);
        let start = mproc::shm::ProcessIdent::of(child.id()).map(|p| p.start());
        if child.id() == pid && start != Some(dead.start()) {
            return Some(child);
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    panic!("pid {pid} was never handed to our child");
}

#[cfg(target_os = "linux")]
#[test]
fn a_new_process_with_a_dead_holders_pid_is_not_the_holder() {
    use std::io::Write;
    let leaks = LeakCheck::start();
    let (lock, rlock) = (Lock::new().unwrap(), mproc::sync::RLock::new().unwrap());
    let handles = (lock.clone(), rlock.clone());
    let mut holder = spawn("hold-both-and-die", &handles, 0);
    let mut lines = Lines::of(&mut holder);
    assert_eq!(lines.next_line().as_deref(), Some("locked"));
    let dead = mproc::shm::ProcessIdent::of(holder.id()).unwrap();
    let dead_pid = dead.pid();
    holder.stdin.take().unwrap().write_all(b"die\n").unwrap();
    holder.wait().unwrap();
    drop(lines);
    let Some(mut newcomer) = spawn_with_pid("reused-pid-probe", &handles, dead) else {
        eprintln!("skipped: cannot choose pids here (needs root on Linux)");
        return;
    };
    let mut out = Lines::of(&mut newcomer);
    assert_eq!(out.next_line(), Some(dead_pid.to_string()));
    // Before identity carried the start time, the newcomer re-entered the
    // RLock cleanly (count 2) and timed out on the Lock.
    assert_eq!(out.next_line().as_deref(), Some("rlock owner-died count 1"));
    assert_eq!(out.next_line().as_deref(), Some("lock owner-died"));
    assert!(newcomer.wait().unwrap().success());
    // And here, the locks are usable (still flagged until repaired).
    let g = lock.lock().unwrap_err().into_inner();
    g.mark_consistent();
    drop(g);
    assert!(lock.try_lock().is_ok());
    drop((out, handles, lock, rlock));
    leaks.assert_clean();
}

#[test]
fn short_lock_timeout_still_takes_over_from_a_dead_holder() {
    let leaks = LeakCheck::start();
    let lock = Lock::new().unwrap();
    let mut holder = spawn("hold-lock", &lock, 0);
    let mut lines = Lines::of(&mut holder);
    assert_eq!(lines.next_line().as_deref(), Some("locked"));
    signal(&holder, libc::SIGKILL).unwrap();
    holder.wait().unwrap();
    // Far shorter than the 10 ms probe interval: before the fix the deadline
    // was checked before the probe, so this was `Timeout` for ever.
    match lock.lock_timeout(Duration::from_micros(50)) {
        Err(LockTimeoutError::OwnerDied(d)) => drop(d),
        Err(LockTimeoutError::Timeout) => panic!("a dead holder's lock timed out"),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    drop((lines, lock));
    leaks.assert_clean();
}

#[test]
fn forged_handle_reaching_past_its_segment_is_refused() {
    // A segment of one page with a Lock's kind tag in its last 8 bytes, and
    // a handle that claims a 1-word Lock there: decoding it must fail (it
    // used to decode, and `lock()` then touched memory past the mapping).
    let seg = Segment::anonymous(4096).unwrap();
    seg.write(4088, b"LOCK").unwrap();
    for (offset, words) in [(4088u64, 1u32), (4088, 6), (4092, 1), (u64::MAX - 3, 6)] {
        let msg = transfer::encode(&(seg.clone(), offset, words)).unwrap();
        let err = transfer::decode::<Lock>(msg).unwrap_err().to_string();
        assert!(
            err.contains("not its layout") || err.contains("does not fit"),
            "offset {offset}, {words} words: {err}"
        );
    }
    // A barrier whose parties word disagrees with its length.
    let b = Barrier::new(2).unwrap();
    let (bseg, boff, bwords) = {
        let msg = transfer::encode(&b).unwrap();
        transfer::decode::<(Segment, u64, u32)>(msg).unwrap()
    };
    let msg = transfer::encode(&(bseg, boff, bwords + 2)).unwrap();
    assert!(transfer::decode::<Barrier>(msg).is_err());
}

#[test]
fn notify_one_ends_exactly_one_of_three_waits() {
    let leaks = LeakCheck::start();
    let cond = Condition::new().unwrap();
    let ready = RawValue::new(0u32).unwrap();
    // Each waiter waits at most 1.5 s; only a notification ends it sooner.
    let mut kids: Vec<Child> = (0..3)
        .map(|_| spawn("condition-wait-once", &(cond.clone(), ready.clone()), 1500))
        .collect();
    // `ready` is counted under the lock right before each waiter waits, so
    // holding the lock with ready == 3 means all three have enlisted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let g = cond.get_lock().lock().unwrap();
        if ready.get() == 3 {
            cond.notify(1).unwrap();
            drop(g);
            break;
        }
        drop(g);
        assert!(Instant::now() < deadline, "waiters never enlisted");
        std::thread::yield_now();
    }
    let mut outcomes: Vec<String> = kids
        .iter_mut()
        .map(|k| Lines::of(k).next_line().unwrap_or_default())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["notified", "timed-out", "timed-out"]);
    reap_ok(kids);
    drop((cond, ready));
    leaks.assert_clean();
}

#[cfg(target_os = "linux")]
#[test]
fn set_then_clear_still_releases_waiters_already_blocked() {
    let leaks = LeakCheck::start();
    let ev = Event::new().unwrap();
    let mut kids: Vec<Child> = (0..3).map(|_| spawn("event-wait", &ev, 20)).collect();
    let mut outs: Vec<Lines> = kids.iter_mut().map(Lines::of).collect();
    for (k, out) in kids.iter().zip(&mut outs) {
        assert_eq!(out.next_line().as_deref(), Some("waiting"));
        // Asleep inside `wait` (it sleeps in slices, so it is seen asleep
        // again and again; "S" right after "waiting" is inside the wait).
        let deadline = Instant::now() + Duration::from_secs(20);
        while state_of(k.id()) != Some('S') {
            assert!(Instant::now() < deadline, "waiter never slept");
            std::thread::yield_now();
        }
    }
    ev.set();
    ev.clear();
    // CPython returns True to every waiter blocked when `set` was called;
    // before the fix they went back to sleep until their timeout.
    for out in &mut outs {
        assert_eq!(out.next_line().as_deref(), Some("set"));
    }
    reap_ok(kids);
    drop((outs, ev));
    leaks.assert_clean();
}
