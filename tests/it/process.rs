//! mproc-process across real processes, for both start methods: targets,
//! exit codes, timeouts, reaping, isolation, daemons, and a killed parent.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mproc::process::{self, active_children, current_process, parent_process, ProcessError};
use mproc::shm::{transfer, RawArray, Segment};
use mproc::sync::Event;
use mproc::{Process, StartMethod, Target, Value};
use mproc_tests::{hex, LeakCheck, Lines};
use serde::{Deserialize, Serialize};

const METHODS: [StartMethod; 3] = [
    StartMethod::Fork,
    StartMethod::Forkserver,
    StartMethod::Spawn,
];

fn record_identity(out: Segment) {
    let me = current_process();
    let parent = parent_process().map(|p| p.pid).unwrap_or(0);
    let text = format!("{}|{}|{}", me.name, me.pid, parent);
    out.write(0, &(text.len() as u32).to_ne_bytes()).unwrap();
    out.write(4, text.as_bytes()).unwrap();
}

fn read_text(seg: &Segment) -> String {
    let mut len = [0u8; 4];
    seg.read(0, &mut len).unwrap();
    let mut buf = vec![0u8; u32::from_ne_bytes(len) as usize];
    seg.read(4, &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn args_and_name_arrive_in_the_child() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let seg = Segment::anonymous(4096).unwrap();
        let mut p = Process::new(record_identity, seg.clone())
            .name("worker-1")
            .start_method(method);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0), "{method:?}");
        let pid = p.pid().unwrap();
        assert_eq!(
            read_text(&seg),
            format!("worker-1|{pid}|{}", std::process::id()),
            "{method:?}"
        );
        assert!(parent_process().is_none());
        assert_eq!(current_process().name, "MainProcess");
    }
    leaks.assert_clean();
}

fn do_nothing(_: ()) {}

fn panics(message: String) {
    panic!("{message}");
}

fn fails(_: ()) -> Result<(), String> {
    Err("it went wrong".into())
}

fn exits_with(code: i32) {
    process::exit(code);
}

fn blocks(ev: Event) {
    ev.wait();
}

#[test]
fn exit_codes_follow_cpython() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let run = |mut p: Process| {
            p = p.start_method(method);
            p.start().unwrap();
            p.join().unwrap();
            p
        };
        assert_eq!(run(Process::new(do_nothing, ())).exitcode(), Some(0));
        let p = run(Process::new(panics, "boom 42".to_string()));
        assert_eq!(p.exitcode(), Some(1));
        assert_eq!(p.panic_message().as_deref(), Some("boom 42"), "{method:?}");
        assert_eq!(run(Process::new(fails, ())).exitcode(), Some(1));
        assert_eq!(run(Process::new(exits_with, 3)).exitcode(), Some(3));

        let ev = Event::new().unwrap();
        for (sig, code) in [(libc::SIGTERM, -15), (libc::SIGKILL, -9)] {
            let mut p = Process::new(blocks, ev.clone()).start_method(method);
            p.start().unwrap();
            assert!(p.is_alive());
            assert_eq!(p.exitcode(), None);
            if sig == libc::SIGTERM {
                p.terminate().unwrap()
            } else {
                p.kill().unwrap()
            }
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(code), "{method:?} signal {sig}");
            assert!(!p.is_alive());
        }
    }
    leaks.assert_clean();
}

#[test]
fn join_timeout_returns_with_the_child_still_running() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let ev = Event::new().unwrap();
        let mut p = Process::new(blocks, ev.clone()).start_method(method);
        p.start().unwrap();
        let start = Instant::now();
        p.join_timeout(Duration::from_millis(200)).unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(p.exitcode(), None);
        assert!(p.is_alive());
        ev.set();
        p.join_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    leaks.assert_clean();
}

/// A thread blocked in `join` must not hold the child hostage: another
/// thread can still signal it, and both see the same end.
#[test]
fn a_thread_blocked_in_join_does_not_block_kill() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let ev = Event::new().unwrap();
        let mut p = Process::new(blocks, ev.clone()).start_method(method);
        p.start().unwrap();
        let p = std::sync::Arc::new(p);
        let (joining, about_to_join) = std::sync::mpsc::channel();
        let joiner = {
            let p = p.clone();
            std::thread::spawn(move || {
                joining.send(()).unwrap();
                p.join().unwrap();
                p.exitcode()
            })
        };
        about_to_join.recv().unwrap();
        // The joiner is (almost always) blocked by now; kill goes through.
        assert!(p.is_alive());
        p.kill().unwrap();
        assert_eq!(joiner.join().unwrap(), Some(-9), "{method:?}");
        assert_eq!(p.exitcode(), Some(-9));
    }
    leaks.assert_clean();
}

/// A forkserver first used from a short-lived thread must outlive it (it
/// once died with it: Linux's parent-death signal follows the thread).
#[test]
fn a_forkserver_started_from_a_short_lived_thread_outlives_it() {
    let leaks = LeakCheck::start();
    {
        process::stop_forkserver();
        let server = std::thread::spawn(|| {
            let mut p = Process::new(do_nothing, ()).start_method(StartMethod::Forkserver);
            p.start().unwrap();
            p.join().unwrap();
            process::forkserver_pid().unwrap()
        })
        .join()
        .unwrap();
        let mut p = Process::new(do_nothing, ()).start_method(StartMethod::Forkserver);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(
            process::forkserver_pid(),
            Some(server),
            "the server was restarted"
        );
        assert!(mproc_tests::is_running(server));
    }
    leaks.assert_clean();
}

#[test]
fn misuse_is_a_distinct_error() {
    let mut p = Process::new(do_nothing, ());
    assert!(matches!(p.join(), Err(ProcessError::NotStarted)));
    assert!(matches!(p.terminate(), Err(ProcessError::NotStarted)));
    p.start().unwrap();
    assert!(matches!(p.start(), Err(ProcessError::AlreadyStarted)));
    assert!(matches!(
        p.set_daemon(true),
        Err(ProcessError::DaemonAfterStart)
    ));
    p.join().unwrap();
}

fn count_up(v: Value<u64>) {
    v.update(|x| *x += 1);
}

#[test]
fn many_children_started_then_joined() {
    let leaks = LeakCheck::start();
    for (method, n) in [
        (StartMethod::Fork, 100),
        (StartMethod::Forkserver, 100),
        (StartMethod::Spawn, 5),
    ] {
        let v = Value::new(0u64).unwrap();
        let mut kids: Vec<Process> = (0..n)
            .map(|_| Process::new(count_up, v.clone()).start_method(method))
            .collect();
        for k in &mut kids {
            k.start().unwrap();
        }
        for k in &kids {
            k.join().unwrap();
            assert_eq!(k.exitcode(), Some(0));
        }
        assert_eq!(v.get(), n as u64, "{method:?}");
    }
    leaks.assert_clean();
}

#[test]
fn active_children_lists_exactly_the_running_ones() {
    let leaks = LeakCheck::start();
    let ev = Event::new().unwrap();
    let mut running: Vec<Process> = (0..3)
        .map(|i| Process::new(blocks, ev.clone()).name(format!("blocked-{i}")))
        .collect();
    for p in &mut running {
        p.start().unwrap();
    }
    let mut quick = Process::new(do_nothing, ()).name("quick");
    quick.start().unwrap();
    quick.join().unwrap();
    let mut names: Vec<String> = active_children().into_iter().map(|c| c.name).collect();
    names.sort();
    assert_eq!(names, ["blocked-0", "blocked-1", "blocked-2"]);
    ev.set();
    for p in &running {
        p.join().unwrap();
    }
    assert!(active_children().is_empty());
    drop((running, quick, ev));
    leaks.assert_clean();
}

static GLOBAL: AtomicU32 = AtomicU32::new(1);

fn change_global(out: RawArray<u32>) {
    GLOBAL.store(100, Ordering::SeqCst);
    out.set(0, GLOBAL.load(Ordering::SeqCst)).unwrap();
}

#[test]
fn a_global_changed_in_the_child_is_unchanged_in_the_parent() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let out = RawArray::<u32>::new(1).unwrap();
        let mut p = Process::new(change_global, out.clone()).start_method(method);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(out.get(0), Some(100), "the child saw its own change");
        assert_eq!(
            GLOBAL.load(Ordering::SeqCst),
            1,
            "the parent's copy is untouched"
        );
    }
    leaks.assert_clean();
}

#[derive(Serialize, Deserialize)]
struct Adder {
    total: Value<u64>,
    by: u64,
}

impl Target for Adder {
    fn run(self) {
        self.total.update(|t| *t += self.by);
    }
}

#[test]
fn struct_targets_and_handles_arrive_working() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let total = Value::new(1u64).unwrap();
        let mut p = Process::from_target(Adder {
            total: total.clone(),
            by: 41,
        })
        .start_method(method);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(total.get(), 42, "{method:?}");
    }
    leaks.assert_clean();
}

fn try_to_start_a_child(out: RawArray<u32>) {
    let mut p = Process::new(do_nothing, ());
    let code = match p.start() {
        Err(ProcessError::DaemonCannotStart) => 1,
        Ok(()) => 2,
        Err(_) => 3,
    };
    out.set(0, code).unwrap();
}

#[test]
fn a_daemon_cannot_start_children() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let out = RawArray::<u32>::new(1).unwrap();
        let mut p = Process::new(try_to_start_a_child, out.clone())
            .daemon(true)
            .start_method(method);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(out.get(0), Some(1), "{method:?}");
    }
    leaks.assert_clean();
}

/// Meets the other children at `all` (all of them must be alive at once),
/// or, with no barrier, records how many children are inside at once.
fn overlap((all, inside, most): (Option<mproc::sync::Barrier>, Value<u32>, Value<u32>)) {
    if let Some(all) = all {
        all.wait().expect("every child reaches the barrier");
    }
    let now = {
        let mut n = inside.lock();
        let now = n.get() + 1;
        n.set(now);
        now
    };
    {
        let mut m = most.lock();
        let seen = m.get().max(now);
        m.set(seen);
    }
    let mut n = inside.lock();
    let left = n.get() - 1;
    n.set(left);
}

#[test]
fn starting_all_then_joining_runs_them_at_once() {
    // The tutorial's lesson, without a clock: started together, five
    // children are all alive at once (they meet at a barrier of five);
    // started and joined one by one, never two are.
    let leaks = LeakCheck::start();
    {
        let all = mproc::sync::Barrier::new(5).unwrap();
        let (inside, most) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
        let mut kids: Vec<Process> = (0..5)
            .map(|_| {
                Process::new(overlap, (Some(all.clone()), inside.clone(), most.clone()))
                    .start_method(StartMethod::Fork)
            })
            .collect();
        for k in &mut kids {
            k.start().unwrap();
        }
        for k in &kids {
            k.join().unwrap();
            assert_eq!(k.exitcode(), Some(0), "a child did not pass the barrier");
        }
        let (inside, most) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
        for _ in 0..5 {
            let mut k = Process::new(overlap, (None, inside.clone(), most.clone()))
                .start_method(StartMethod::Fork);
            k.start().unwrap();
            k.join().unwrap();
            assert_eq!(k.exitcode(), Some(0));
        }
        assert_eq!(most.get(), 1, "one by one, two children overlapped");
    }
    leaks.assert_clean();
}

const PARENT: &str = env!("CARGO_BIN_EXE_process-parent");

#[cfg(target_os = "linux")]
fn take_stderr(_: ()) {
    // Waits for ever if this copy of stderr's lock was held at the fork.
    drop(std::io::stderr().lock());
}

/// The scheduling state of thread `tid` of this process ('R', 'S', ...).
#[cfg(target_os = "linux")]
fn thread_state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// A thread in the middle of a print at the moment of a fork must not leave
/// the child's copy of stdio's locks held: the child could never print, nor
/// flush at its end. The start waits for the print to end instead. (Linux:
/// it reads the starting thread's state in `/proc`.)
#[cfg(target_os = "linux")]
#[test]
fn a_print_on_another_thread_during_a_fork_does_not_hang_the_child() {
    let leaks = LeakCheck::start();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let lock = std::io::stderr().lock();
        held_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        drop(lock);
    });
    held_rx.recv().unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let starter = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let mut p = Process::new(take_stderr, ()).start_method(StartMethod::Fork);
        p.start().unwrap();
        started_tx.send(()).unwrap();
        p
    });
    let tid = tid_rx.recv().unwrap();
    // The print ends once the start has forked (as it would have, before
    // the start waited for stdio's locks) or is waiting for the lock.
    wait_until("the start forked or waits", Duration::from_secs(20), || {
        started_rx.try_recv().is_ok() || thread_state(tid) == Some('S')
    });
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let p = starter.join().unwrap();
    p.join_timeout(Duration::from_secs(20)).unwrap();
    let code = p.exitcode();
    if code.is_none() {
        p.kill().unwrap();
        p.join().unwrap();
    }
    assert_eq!(code, Some(0), "the child hung on its copy of stderr's lock");
    leaks.assert_clean();
}

const PARTIAL_LINE: &str = env!("CARGO_BIN_EXE_partial-line");

/// A forked child flushes its copy of stdout when it ends: what the parent
/// printed without a newline before the start must come out once, and
/// before what the child prints — whatever the start method.
#[test]
fn a_half_line_printed_before_a_start_comes_out_once() {
    for method in ["fork", "forkserver", "spawn"] {
        let out = Command::new(PARTIAL_LINE).arg(method).output().unwrap();
        assert!(
            out.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "parent; child; end\n",
            "{method}"
        );
    }
}

/// Gone, or a zombie its new parent has not reaped yet.
fn is_gone(pid: u32) -> bool {
    !mproc_tests::is_running(pid)
}

pub(crate) fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::yield_now();
    }
}

/// Starts the fixture parent in `role` with (go, done) handed over.
fn fixture_parent(
    role: &str,
    method: &str,
    go: &Event,
    done: &Value<u64>,
) -> (std::process::Child, Lines) {
    let msg = transfer::encode(&(go.clone(), done.clone())).unwrap();
    let mut c = Command::new(PARENT);
    c.args([role, method, &hex(&msg.bytes)])
        .stdout(Stdio::piped());
    let mut child = transfer::spawn_inheriting(&mut c, &msg.fds).unwrap();
    let lines = Lines::of(&mut child);
    (child, lines)
}

#[test]
fn parent_killed_daemon_dies_and_non_daemon_finishes() {
    let leaks = LeakCheck::start();
    for method in ["fork", "forkserver", "spawn"] {
        let (go, done) = (Event::new().unwrap(), Value::new(0u64).unwrap());
        let (mut parent, mut lines) = fixture_parent("start-and-wait", method, &go, &done);
        let daemon: u32 = lines.next_line().unwrap().parse().unwrap();
        let worker: u32 = lines.next_line().unwrap().parse().unwrap();
        parent.kill().unwrap(); // SIGKILL, our own child
        parent.wait().unwrap();
        wait_until("the daemon's death", Duration::from_secs(1), || {
            is_gone(daemon)
        });
        assert!(
            !is_gone(worker),
            "{method}: the non-daemon child must live on"
        );
        go.set();
        wait_until("the orphan's work", Duration::from_secs(20), || {
            done.get() == 1
        });
        drop((parent, lines));
    }
    leaks.assert_clean();
}

#[test]
fn normal_exit_joins_children_and_terminates_daemons() {
    let leaks = LeakCheck::start();
    for method in ["fork", "forkserver", "spawn"] {
        let (go, done) = (Event::new().unwrap(), Value::new(0u64).unwrap());
        let (mut parent, mut lines) = fixture_parent("start-and-return", method, &go, &done);
        let daemon: u32 = lines.next_line().unwrap().parse().unwrap();
        let _worker: u32 = lines.next_line().unwrap().parse().unwrap();
        // main has returned; the exit rules hold the parent for its worker.
        assert_eq!(lines.next_line().as_deref(), Some("main returned"));
        assert!(
            parent.try_wait().unwrap().is_none(),
            "the parent must wait for its non-daemon child"
        );
        go.set();
        let status = parent.wait().unwrap();
        assert!(status.success(), "{status}");
        assert_eq!(
            done.get(),
            1,
            "the worker finished before its parent exited"
        );
        assert!(is_gone(daemon), "the daemon was terminated and reaped");
        drop((parent, lines));
    }
    leaks.assert_clean();
}

/// Starts a forked grandchild that idles on `never`, publishes its pid in
/// `out`, then idles too.
fn start_grandchild(args: (Event, Value<u64>)) {
    let (never, out) = args;
    let mut g = Process::new(idle, never.clone()).start_method(StartMethod::Fork);
    g.start().unwrap();
    out.set(u64::from(g.pid().unwrap()));
    never.wait();
}

fn idle(never: Event) {
    never.wait();
}

#[test]
fn terminate_reaches_the_whole_group_only_when_asked() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        for own_group in [true, false] {
            let (never, out) = (Event::new().unwrap(), Value::new(0u64).unwrap());
            let mut p = Process::new(start_grandchild, (never, out.clone()))
                .start_method(method)
                .process_group(own_group);
            p.start().unwrap();
            wait_until("the grandchild's pid", Duration::from_secs(20), || {
                out.get() != 0
            });
            let grandchild = out.get() as u32;
            p.terminate().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(-libc::SIGTERM), "{method:?}");
            if own_group {
                wait_until("the grandchild's death", Duration::from_secs(1), || {
                    is_gone(grandchild)
                });
            } else {
                assert!(
                    !is_gone(grandchild),
                    "{method:?}: without its own group only the child is signalled"
                );
                // Our grandchild, by its pid: end it so nothing is left.
                // SAFETY: kill touches no memory.
                unsafe { libc::kill(grandchild as libc::pid_t, libc::SIGKILL) };
                wait_until("the grandchild's death", Duration::from_secs(1), || {
                    is_gone(grandchild)
                });
            }
        }
    }
    leaks.assert_clean();
}

// ---------------------------------------------------------------------------
// Issue 11: joins that race, daemons and threads, children like a `main`,
// what children inherit, the forkserver's bookkeeping, exit and fork safety.

/// Many threads join forkserver children while another thread keeps asking
/// for their exit codes: every join returns (a report taken by one caller is
/// never waited for again by another).
#[test]
fn joins_racing_with_exitcode_calls_all_return() {
    let leaks = LeakCheck::start();
    {
        let ev = Event::new().unwrap();
        let kids: Vec<std::sync::Arc<Process>> = (0..40)
            .map(|_| {
                let mut p = Process::new(blocks, ev.clone()).start_method(StartMethod::Forkserver);
                p.start().unwrap();
                std::sync::Arc::new(p)
            })
            .collect();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let joiners: Vec<_> = kids
            .iter()
            .map(|p| {
                let (p, tx) = (p.clone(), done_tx.clone());
                std::thread::spawn(move || {
                    p.join().unwrap();
                    let _ = tx.send(p.exitcode());
                })
            })
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pollers: Vec<_> = (0..2)
            .map(|_| {
                let (kids, stop) = (kids.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        for p in &kids {
                            let _ = p.exitcode();
                        }
                        let _ = active_children();
                    }
                })
            })
            .collect();
        ev.set();
        for i in 0..kids.len() {
            let code = done_rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("join {i} of {} never returned", kids.len()));
            assert_eq!(code, Some(0));
        }
        stop.store(true, Ordering::Relaxed);
        for t in joiners.into_iter().chain(pollers) {
            t.join().unwrap();
        }
    }
    leaks.assert_clean();
}

/// Echoes every number it gets until the queue closes.
fn pong(args: (mproc::Queue<u32>, mproc::Queue<u32>)) {
    let (rx, tx) = args;
    while let Ok(x) = rx.get() {
        if tx.put(x).is_err() {
            return;
        }
    }
}

/// A daemon is tied to its parent *process*: the end of the thread that
/// started it changes nothing (Linux's parent-death signal follows threads).
/// A non-daemon child outlives any thread too.
#[test]
fn a_child_started_from_a_short_lived_thread_outlives_the_thread() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        for daemon in [true, false] {
            let (rx, tx) = (
                mproc::Queue::<u32>::new().unwrap(),
                mproc::Queue::<u32>::new().unwrap(),
            );
            let args = (rx.clone(), tx.clone());
            let p = std::thread::spawn(move || {
                let mut p = Process::new(pong, args).daemon(daemon).start_method(method);
                p.start().unwrap();
                p
            })
            .join()
            .unwrap();
            for i in 0..3 {
                rx.put(i).unwrap();
                assert_eq!(
                    tx.get_timeout(Duration::from_secs(10)).ok(),
                    Some(i),
                    "{method:?} daemon={daemon}: the child died with its starter thread ({:?})",
                    p.exitcode()
                );
            }
            // Where the timing is the behaviour: still alive a while later.
            p.join_timeout(Duration::from_millis(300)).unwrap();
            assert!(
                p.is_alive(),
                "{method:?} daemon={daemon}: {:?}",
                p.exitcode()
            );
            rx.close();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0), "{method:?} daemon={daemon}");
        }
    }
    leaks.assert_clean();
}

#[test]
fn a_daemon_started_from_a_thread_dies_with_its_parent_process() {
    let leaks = LeakCheck::start();
    for method in ["fork", "forkserver", "spawn"] {
        let (go, done) = (Event::new().unwrap(), Value::new(0u64).unwrap());
        let (mut parent, mut lines) = fixture_parent("thread-start-and-wait", method, &go, &done);
        let daemon: u32 = lines.next_line().unwrap().parse().unwrap();
        let worker: u32 = lines.next_line().unwrap().parse().unwrap();
        assert_eq!(lines.next_line().as_deref(), Some("thread ended"));
        assert!(
            !is_gone(daemon),
            "{method}: the daemon died with its thread"
        );
        parent.kill().unwrap(); // SIGKILL, our own child
        parent.wait().unwrap();
        wait_until("the daemon's death", Duration::from_secs(2), || {
            is_gone(daemon)
        });
        assert!(
            !is_gone(worker),
            "{method}: the non-daemon child must live on"
        );
        go.set();
        wait_until("the orphan's work", Duration::from_secs(20), || {
            done.get() == 1
        });
        drop((parent, lines));
    }
    leaks.assert_clean();
}

/// A pipe whose read end is closed: like an ordinary Rust `main`, the write
/// fails with `EPIPE` instead of killing the process with SIGPIPE.
fn write_to_a_closed_pipe(_: ()) -> Result<(), String> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are new and ours alone.
    let (r, mut w) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    drop(r);
    match w.write_all(b"x") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn children_ignore_sigpipe_like_a_rust_main() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let mut p = Process::new(write_to_a_closed_pipe, ()).start_method(method);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0), "{method:?}");
    }
    leaks.assert_clean();
}

/// Points this process's stderr at `to`.
fn stderr_to(to: &transfer::SharedFd) {
    use std::os::fd::{AsFd, AsRawFd};
    // SAFETY: dup2 onto fd 2; both descriptors are open.
    assert_eq!(unsafe { libc::dup2(to.as_fd().as_raw_fd(), 2) }, 2);
}

/// Recurses until the stack runs out (`u64::MAX` levels never fit).
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 1024]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(frame[7])
}

fn overflow_the_stack(err: transfer::SharedFd) {
    stderr_to(&err);
    std::hint::black_box(recurse(0));
}

fn panic_loudly(err: transfer::SharedFd) {
    stderr_to(&err);
    panic!("boom from the child");
}

/// A file under `dir` opened for appending, as a handle for a child.
fn capture_file(
    dir: &mproc_tests::TempDir,
    name: &str,
) -> (std::path::PathBuf, transfer::SharedFd) {
    let path = dir.path().join(name);
    let f = std::fs::File::create(&path).unwrap();
    (path, transfer::SharedFd::new(f))
}

const BOOTED: [StartMethod; 2] = [StartMethod::Forkserver, StartMethod::Spawn];

#[test]
fn a_stack_overflow_in_a_child_is_reported_like_main() {
    let leaks = LeakCheck::start();
    {
        let dir = mproc_tests::TempDir::new("so");
        for method in BOOTED {
            let (path, err) = capture_file(&dir, &format!("{method:?}"));
            let mut p = Process::new(overflow_the_stack, err).start_method(method);
            p.start().unwrap();
            p.join().unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(p.exitcode(), Some(-libc::SIGABRT), "{method:?}: {text}");
            assert!(
                text.contains("has overflowed its stack"),
                "{method:?}: {text:?}"
            );
        }
    }
    leaks.assert_clean();
}

#[test]
fn a_child_panic_names_the_process() {
    let leaks = LeakCheck::start();
    {
        let dir = mproc_tests::TempDir::new("pn");
        for method in BOOTED {
            let (path, err) = capture_file(&dir, &format!("{method:?}"));
            let mut p = Process::new(panic_loudly, err)
                .name("named-child")
                .start_method(method);
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(1));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains("thread 'named-child' (")
                    && text.contains(") panicked at")
                    && text.contains("boom from the child"),
                "{method:?}: {text:?}"
            );
        }
    }
    leaks.assert_clean();
}

/// Whether descriptor `fd` is open in this process.
fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn report_fd_300(out: RawArray<u32>) {
    out.set(0, u32::from(fd_is_open(300)) + 1).unwrap();
}

/// Spawn and forkserver children get stdio and the descriptors of their
/// handles, nothing else — not even one the parent opened without
/// close-on-exec.
#[test]
fn children_inherit_no_stray_descriptor() {
    let leaks = LeakCheck::start();
    {
        let dir = mproc_tests::TempDir::new("fd");
        let file = std::fs::File::create(dir.path().join("stray")).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto a free number; the copy has no close-on-exec.
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), 300) }, 300);
        // A forkserver launched now would inherit it too.
        process::stop_forkserver();
        for method in BOOTED {
            let out = RawArray::<u32>::new(1).unwrap();
            let mut p = Process::new(report_fd_300, out.clone()).start_method(method);
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
            assert_eq!(out.get(0), Some(1), "{method:?}: fd 300 reached the child");
        }
        process::stop_forkserver();
        // SAFETY: closes the copy this test made.
        unsafe { libc::close(300) };
    }
    leaks.assert_clean();
}

#[test]
fn a_killed_forkserver_is_reaped_and_replaced() {
    let leaks = LeakCheck::start();
    {
        let mut p = Process::new(do_nothing, ()).start_method(StartMethod::Forkserver);
        p.start().unwrap();
        p.join().unwrap();
        let old = process::forkserver_pid().unwrap();
        // SAFETY: kill touches no memory; `old` is our own child.
        assert_eq!(unsafe { libc::kill(old as libc::pid_t, libc::SIGKILL) }, 0);
        wait_until(
            "the killed server's reaping",
            Duration::from_secs(5),
            || {
                !mproc_tests::children_of(std::process::id())
                    .iter()
                    .any(|&(pid, _)| pid == old)
            },
        );
        let mut p = Process::new(do_nothing, ()).start_method(StartMethod::Forkserver);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_ne!(process::forkserver_pid(), Some(old));
    }
    leaks.assert_clean();
}

fn report_cwd_and_env(out: Segment) {
    let cwd = std::env::current_dir().unwrap();
    let var = std::env::var("MPROC_TEST_AT_START").unwrap_or_default();
    let gone = std::env::var_os("MPROC_TEST_REMOVED").is_none();
    let text = format!("{}|{var}|{gone}", cwd.display());
    out.write(0, &(text.len() as u32).to_ne_bytes()).unwrap();
    out.write(4, text.as_bytes()).unwrap();
}

/// A child starts with its parent's working directory and environment as
/// they are at `start()`, whichever method starts it (the forkserver was
/// launched earlier, with the old ones).
#[test]
fn children_get_the_cwd_and_environment_of_start() {
    let leaks = LeakCheck::start();
    {
        std::env::set_var("MPROC_TEST_REMOVED", "1");
        let mut p = Process::new(do_nothing, ()).start_method(StartMethod::Forkserver);
        p.start().unwrap();
        p.join().unwrap();
        let dir = mproc_tests::TempDir::new("cwd");
        let before = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir.path()).unwrap();
        std::env::set_var("MPROC_TEST_AT_START", "yes");
        std::env::remove_var("MPROC_TEST_REMOVED");
        let expected = format!("{}|yes|true", std::env::current_dir().unwrap().display());
        for method in METHODS {
            let out = Segment::anonymous(4096).unwrap();
            let mut p = Process::new(report_cwd_and_env, out.clone()).start_method(method);
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
            assert_eq!(read_text(&out), expected, "{method:?}");
        }
        std::env::set_current_dir(before).unwrap();
        std::env::remove_var("MPROC_TEST_AT_START");
    }
    leaks.assert_clean();
}

/// A parent whose daemon child ignores SIGTERM still exits, in bounded
/// time: SIGTERM, a grace period, then SIGKILL.
#[test]
fn a_daemon_that_ignores_sigterm_does_not_hang_its_parents_exit() {
    let leaks = LeakCheck::start();
    for method in ["fork", "forkserver", "spawn"] {
        let (go, done) = (Event::new().unwrap(), Value::new(0u64).unwrap());
        go.set();
        let (mut parent, mut lines) =
            fixture_parent("stubborn-daemon-and-return", method, &go, &done);
        let daemon: u32 = lines.next_line().unwrap().parse().unwrap();
        let _worker: u32 = lines.next_line().unwrap().parse().unwrap();
        assert_eq!(lines.next_line().as_deref(), Some("main returned"));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = parent.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > Duration::from_secs(30) {
                break None;
            }
            std::thread::yield_now();
        };
        if status.is_none() {
            // Clean up before failing: our child, then the daemon, by pid.
            parent.kill().unwrap();
            parent.wait().unwrap();
            // SAFETY: kill touches no memory; the daemon is our grandchild.
            unsafe { libc::kill(daemon as libc::pid_t, libc::SIGKILL) };
            panic!("{method}: the parent's exit hung on a daemon that ignores SIGTERM");
        }
        assert!(status.unwrap().success(), "{method}: {status:?}");
        assert_eq!(done.get(), 1);
        wait_until("the daemon's death", Duration::from_secs(2), || {
            is_gone(daemon)
        });
        drop((parent, lines));
    }
    leaks.assert_clean();
}

fn touch_the_registry(out: RawArray<u32>) {
    let me = current_process();
    let parent = parent_process().map(|p| p.pid).unwrap_or(0);
    let kids = active_children().len() as u32;
    out.set(0, u32::from(me.pid != 0 && parent != 0) + kids)
        .unwrap();
}

/// `fork` while the library's own threads (a pool's watchers, a thread
/// listing children, forkserver starts) hold its locks: every child runs.
#[test]
fn forking_while_library_threads_churn_never_deadlocks_the_child() {
    let leaks = LeakCheck::start();
    {
        let ev = Event::new().unwrap();
        let mut blocked: Vec<Process> = (0..30)
            .map(|_| Process::new(blocks, ev.clone()).start_method(StartMethod::Fork))
            .collect();
        for p in &mut blocked {
            p.start().unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn: Vec<_> = (0..2)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if i == 0 {
                            let _ = active_children();
                        } else {
                            let mut p =
                                Process::new(do_nothing, ()).start_method(StartMethod::Forkserver);
                            p.start().unwrap();
                            p.join().unwrap();
                        }
                    }
                })
            })
            .collect();
        for i in 0..60 {
            let out = RawArray::<u32>::new(1).unwrap();
            let mut p =
                Process::new(touch_the_registry, out.clone()).start_method(StartMethod::Fork);
            p.start().unwrap();
            p.join_timeout(Duration::from_secs(10)).unwrap();
            if p.is_alive() {
                p.kill().unwrap();
                p.join().unwrap();
                stop.store(true, Ordering::Relaxed);
                ev.set();
                panic!("fork {i}: the child deadlocked");
            }
            assert_eq!(p.exitcode(), Some(0), "fork {i}");
            assert_eq!(out.get(0), Some(1), "fork {i}");
        }
        stop.store(true, Ordering::Relaxed);
        for t in churn {
            t.join().unwrap();
        }
        ev.set();
        for p in &blocked {
            p.join().unwrap();
        }
    }
    leaks.assert_clean();
}

/// A grandchild that reports whether its parent is alive, before and after
/// the parent dies (CPython's `test_parent_process`).
fn watch_my_parent(args: (Event, Value<u64>, Event, Value<u64>)) {
    let (started, before, go, after) = args;
    let alive = |p: Option<process::ProcessInfo>| match p {
        Some(p) if p.is_alive() => 1,
        Some(_) => 2,
        None => 3,
    };
    before.set(alive(parent_process()));
    started.set();
    go.wait();
    after.set(alive(parent_process()));
}

/// Starts `watch_my_parent` and waits to be killed.
fn start_a_watcher(args: (Event, Value<u64>, Event, Value<u64>, StartMethod)) {
    let (started, before, go, after, method) = args;
    let mut g = Process::new(watch_my_parent, (started, before, go, after)).start_method(method);
    g.start().unwrap();
    g.detach();
    // The test sets `go` only once we are dead.
    loop {
        std::thread::park();
    }
}

#[test]
fn a_grandchild_sees_its_parent_die() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let (started, before, go, after) = (
            Event::new().unwrap(),
            Value::new(0u64).unwrap(),
            Event::new().unwrap(),
            Value::new(0u64).unwrap(),
        );
        let mut p = Process::new(
            start_a_watcher,
            (
                started.clone(),
                before.clone(),
                go.clone(),
                after.clone(),
                method,
            ),
        )
        .start_method(method);
        p.start().unwrap();
        assert!(started.wait_timeout(Duration::from_secs(20)), "{method:?}");
        assert_eq!(before.get(), 1, "{method:?}: the parent is alive");
        p.kill().unwrap();
        p.join().unwrap();
        go.set();
        wait_until("the grandchild's report", Duration::from_secs(20), || {
            after.get() != 0
        });
        assert_eq!(after.get(), 2, "{method:?}: the parent is gone");
    }
    leaks.assert_clean();
}

/// Detached children are reaped in the background as soon as they end: no
/// zombie waits for a later `start` or for the exit rules.
#[test]
fn detached_children_are_reaped_as_they_end() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let (ev, quick) = (Event::new().unwrap(), Value::new(0u64).unwrap());
        let mut pids = Vec::new();
        for i in 0..6 {
            let mut p = if i % 2 == 0 {
                Process::new(count_up, quick.clone())
            } else {
                Process::new(blocks, ev.clone())
            }
            .start_method(method);
            p.start().unwrap();
            pids.push(p.pid().unwrap());
            p.detach();
        }
        let ours = |state: Option<char>| {
            mproc_tests::children_of(std::process::id())
                .into_iter()
                .filter(|&(pid, s)| pids.contains(&pid) && state.is_none_or(|x| x == s))
                .count()
        };
        let running = if method == StartMethod::Forkserver {
            0 // the server's children, not ours
        } else {
            3
        };
        wait_until("the quick ones' work", Duration::from_secs(20), || {
            quick.get() == 3
        });
        wait_until("the quick ones' reaping", Duration::from_secs(10), || {
            ours(None) == running && ours(Some('Z')) == 0
        });
        ev.set();
        wait_until("the others' reaping", Duration::from_secs(10), || {
            ours(None) == 0
        });
    }
    leaks.assert_clean();
}

/// The pipe inodes this process holds (`pipe:[N]` in `/proc/self/fd`).
#[cfg(target_os = "linux")]
fn pipe_inodes(pid: u32) -> std::collections::HashSet<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Default::default();
    };
    dir.flatten()
        .filter(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) > Some(2))
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| l.to_str().map(str::to_owned))
        .filter(|l| l.starts_with("pipe:"))
        .collect()
}

/// A pipe's lifelines are close-on-exec from the moment they exist: a
/// program that another thread starts at the same time never inherits one
/// (it could between `pipe` and `fcntl`, and then held it as long as it
/// ran). Checked without a clock: after a batch of pipes is made while
/// programs are being started, no program whose start has returned (so it
/// has exec'd and closed its close-on-exec copies) holds any of this
/// process's pipes past its stdio.
#[cfg(target_os = "linux")]
#[test]
fn a_program_started_concurrently_never_inherits_a_pipe_lifeline() {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    let leaks = LeakCheck::start();
    {
        // Pipes this process had before (a jobserver's, say) are inherited
        // on purpose: only those made here count.
        let before = pipe_inodes(std::process::id());
        let stop = Arc::new(AtomicBool::new(false));
        // Programs whose start has returned, ours to end by pid.
        let started: Arc<Mutex<Vec<std::process::Child>>> = Default::default();
        let spawner = {
            let (stop, started) = (stop.clone(), started.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let child = Command::new("sleep")
                        .arg("30")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn();
                    if let Ok(c) = child {
                        let mut started = started.lock().unwrap();
                        started.push(c);
                        // Ours, by pid: keep the newest 100 (those are the
                        // ones looked at after each batch).
                        if started.len() > 100 {
                            let mut old = started.remove(0);
                            let _ = old.kill();
                            let _ = old.wait();
                        }
                    }
                }
            })
        };
        let mut held = Vec::new();
        for _ in 0..20 {
            let pairs: Vec<_> = (0..100)
                .map(|_| mproc::Pipe::<u8>::duplex().unwrap())
                .collect();
            let ours: std::collections::HashSet<String> = pipe_inodes(std::process::id())
                .difference(&before)
                .cloned()
                .collect();
            let kids: Vec<u32> = started.lock().unwrap().iter().map(|c| c.id()).collect();
            for pid in kids {
                held.extend(
                    pipe_inodes(pid)
                        .intersection(&ours)
                        .map(|p| (pid, p.clone())),
                );
            }
            drop(pairs);
        }
        stop.store(true, Ordering::Relaxed);
        spawner.join().unwrap();
        let mut kids = std::mem::take(&mut *started.lock().unwrap());
        assert!(!kids.is_empty(), "no program was started");
        for c in &mut kids {
            let _ = c.kill();
            let _ = c.wait();
        }
        held.truncate(10);
        assert!(
            held.is_empty(),
            "programs held this process's pipes: {held:?}"
        );
    }
    leaks.assert_clean();
}
