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

/// Linux sends the parent-death signal when the *thread* that forked ends:
/// a forkserver first used from a short-lived thread must outlive it.
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
        Err(ProcessError::AlreadyStarted)
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

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn starting_all_then_joining_runs_them_at_once() {
    // The tutorial's lesson; the sleep is the behaviour being timed.
    let leaks = LeakCheck::start();
    let start = Instant::now();
    let mut kids: Vec<Process> = (0..5)
        .map(|_| Process::new(nap, 1000).start_method(StartMethod::Fork))
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    for k in &kids {
        k.join().unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "together: {:?}",
        start.elapsed()
    );
    drop(kids);
    let start = Instant::now();
    for _ in 0..5 {
        let mut k = Process::new(nap, 1000).start_method(StartMethod::Fork);
        k.start().unwrap();
        k.join().unwrap();
    }
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "one by one: {:?}",
        start.elapsed()
    );
    leaks.assert_clean();
}

const PARENT: &str = env!("CARGO_BIN_EXE_process-parent");

/// Gone, or a zombie its new parent has not reaped yet.
fn is_gone(pid: u32) -> bool {
    !mproc_tests::is_running(pid)
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
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
        assert!(!is_gone(worker), "the non-daemon child must live on");
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
