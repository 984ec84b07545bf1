//! Kill points of the process and pool layers (`failpoints` feature): the
//! forkserver killed in the middle of a request, a parent killed while it
//! starts a child, a pool worker killed around the job it takes, a pool
//! whose result thread fails, a pool dispatcher held with a job in hand.
//! Nobody hangs, nothing runs twice or half, nothing overtakes, nothing is
//! left behind.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use mproc::pool::{PoolError, TaskError};
use mproc::process::{self, ProcessError, DIE_AT_ENV};
use mproc::shm::{fault, transfer};
use mproc::sync::Event;
use mproc::{Pool, Process, StartMethod, Value};
use mproc_tests::{hex, returns_within, LeakCheck, Lines};

use crate::pool::{pid_and_square, shorts_taken_back_from_a_held_worker};

fn count_up(v: Value<u64>) {
    v.update(|x| *x += 1);
}

/// The steps of a forkserver request where it can be made to die.
const FORKSERVER_POINTS: [&str; 3] = [
    "forkserver.request-read",
    "forkserver.forked",
    "forkserver.started-sent",
];

/// The forkserver SIGKILLs itself at each step of a request. Before
/// `Started` reaches the client the child never runs (the gate stays shut)
/// and `start` fails cleanly after one retry; after it, the child is known,
/// never runs either, and its join returns.
#[test]
fn killpoint_forkserver_killed_mid_request() {
    let leaks = LeakCheck::start();
    for point in FORKSERVER_POINTS {
        process::stop_forkserver();
        std::env::set_var(DIE_AT_ENV, point);
        let ran = Value::new(0u64).unwrap();
        let r = ran.clone();
        let p = returns_within(point, Duration::from_secs(20), move || {
            let mut p = Process::new(count_up, r).start_method(StartMethod::Forkserver);
            let started = p.start();
            (p, started)
        });
        std::env::remove_var(DIE_AT_ENV);
        match p {
            (p, Ok(())) => {
                assert_eq!(point, "forkserver.started-sent", "started despite {point}");
                let p = returns_within("join", Duration::from_secs(20), move || {
                    p.join().unwrap();
                    p
                });
                assert_eq!(p.exitcode(), Some(-libc::SIGKILL), "{point}");
            }
            (_, Err(e)) => {
                assert_ne!(point, "forkserver.started-sent", "{e}");
                assert!(matches!(e, ProcessError::Io(_)), "{point}: {e}");
            }
        }
        assert_eq!(ran.get(), 0, "{point}: the target ran");
        // A fresh server takes over.
        let mut p = Process::new(count_up, ran.clone()).start_method(StartMethod::Forkserver);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!((p.exitcode(), ran.get()), (Some(0), 1), "{point}");
    }
    leaks.assert_clean();
}

/// Several threads start children through the forkserver at once, so
/// several requests are in flight when it SIGKILLs itself at a step of one
/// of them: every caller gets an answer (no hang), a start that reports
/// success has a child that is joined, no target runs unless its start
/// succeeded, and none runs twice. Then a fresh server takes them all.
#[test]
fn killpoint_forkserver_killed_with_several_requests_in_flight() {
    let leaks = LeakCheck::start();
    for point in FORKSERVER_POINTS {
        process::stop_forkserver();
        std::env::set_var(DIE_AT_ENV, point);
        let ran = Value::new(0u64).unwrap();
        let r = ran.clone();
        let outcomes = returns_within(point, Duration::from_secs(30), move || {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let r = r.clone();
                    std::thread::spawn(move || {
                        let mut p = Process::new(count_up, r).start_method(StartMethod::Forkserver);
                        let started = p.start().map_err(|e| e.to_string());
                        let code = started.as_ref().ok().map(|()| {
                            p.join().unwrap();
                            p.exitcode()
                        });
                        (started, code)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        std::env::remove_var(DIE_AT_ENV);
        let mut succeeded = 0;
        for (started, code) in &outcomes {
            match (started, code) {
                (Ok(()), Some(Some(0))) => succeeded += 1,
                // Started, then its server died before its gate opened.
                (Ok(()), Some(Some(c))) => assert_eq!(*c, -libc::SIGKILL, "{point}"),
                (Err(_), None) => {}
                other => panic!("{point}: {other:?}"),
            }
        }
        assert_eq!(
            ran.get(),
            succeeded,
            "{point}: targets run vs starts that ran"
        );
        // A fresh server takes six at once.
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let r = ran.clone();
                std::thread::spawn(move || {
                    let mut p = Process::new(count_up, r).start_method(StartMethod::Forkserver);
                    p.start().unwrap();
                    p.join().unwrap();
                    p.exitcode()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), Some(0), "{point}");
        }
        assert_eq!(ran.get(), succeeded + 6, "{point}");
    }
    leaks.assert_clean();
}

const PARENT: &str = env!("CARGO_BIN_EXE_process-parent");

/// The processes (pid, state) whose process group is `group`.
fn group_members(group: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        let state = f.first().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(group) && state != 'Z' {
            out.push((pid, state));
        }
    }
    out
}

/// A parent SIGKILLed at each step of starting a child, with each start
/// method: its daemon child dies with it (or never runs), its non-daemon
/// child finishes its work (or never runs), and every process it made —
/// the forkserver included — is gone in the end.
#[test]
fn killpoint_parent_killed_while_starting_a_child() {
    let leaks = LeakCheck::start();
    for (method, point) in [
        ("fork", "process.forked"),
        ("spawn", "process.spawned"),
        ("forkserver", "forkserver.request-sent"),
    ] {
        for daemon in [false, true] {
            let (go, done) = (Event::new().unwrap(), Value::new(0u64).unwrap());
            let msg = transfer::encode(&(go.clone(), done.clone())).unwrap();
            let mut c = Command::new(PARENT);
            c.args([
                "die-while-starting",
                method,
                &hex(&msg.bytes),
                point,
                if daemon { "1" } else { "0" },
            ])
            .stdout(Stdio::piped());
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            let mut parent = transfer::spawn_inheriting(&mut c, &msg.fds).unwrap();
            let group = parent.id();
            let mut lines = Lines::of(&mut parent);
            let status = returns_within("the parent's death", Duration::from_secs(20), move || {
                parent.wait().unwrap()
            });
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{method} at {point}");
            go.set();
            // Not a speed bound: the orphans need only be scheduled to end,
            // which on a machine under a CPU hog can take seconds.
            // One scan of /proc can miss a process (a reader racing the
            // processes that come and go): the group is gone when two scans
            // in a row find nobody, and a third must agree.
            let start = Instant::now();
            let mut empty_scans = 0;
            while empty_scans < 2 && start.elapsed() < Duration::from_secs(30) {
                if group_members(group).is_empty() {
                    empty_scans += 1;
                } else {
                    empty_scans = 0;
                    std::thread::yield_now();
                }
            }
            let left = group_members(group);
            for &(pid, _) in &left {
                // SAFETY: kill touches no memory; these are our descendants.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            assert!(
                left.is_empty(),
                "{method} at {point}, daemon {daemon}: left {left:?}"
            );
            // A daemon never does its work: it died with its parent (`go`
            // is set only after that), or never ran. A non-daemon does it
            // exactly once — except through the forkserver, where it runs
            // only if the server's `Started` went out before the parent died
            // (else the gate keeps it from running at all).
            if daemon {
                assert_eq!(done.get(), 0, "{method} at {point}: the daemon worked");
            } else if method == "forkserver" {
                assert!(done.get() <= 1, "{method} at {point}: ran twice");
            } else {
                assert_eq!(done.get(), 1, "{method} at {point}: the orphan's work");
            }
            assert_eq!(lines.next_line(), None);
        }
    }
    leaks.assert_clean();
}

fn square(x: u64) -> u64 {
    x * x
}

/// A `spawn`ed child SIGKILLed around sending its value: before, the join
/// reports the signal (no value, no hang); after, the value stands.
#[test]
fn killpoint_spawned_child_killed_around_its_result() {
    use mproc::process::{Builder, JoinError};
    let leaks = LeakCheck::start();
    for point in ["spawn.returned", "spawn.result-sent"] {
        for method in [StartMethod::Fork, StartMethod::Spawn] {
            // A forked child inherits the kill point; a spawned one reads
            // it from its environment.
            fault::die_at(point).unwrap();
            std::env::set_var(DIE_AT_ENV, point);
            let h = Builder::new().start_method(method).spawn(square, 12);
            fault::clear(point);
            std::env::remove_var(DIE_AT_ENV);
            let got = returns_within("join", Duration::from_secs(20), move || h.unwrap().join());
            match (point, got) {
                ("spawn.returned", Err(JoinError::Signaled { signal: 9 })) => {}
                ("spawn.result-sent", Ok(144)) => {}
                (_, got) => panic!("{point} {method:?}: {got:?}"),
            }
        }
    }
    leaks.assert_clean();
}

/// A worker SIGKILLed as it takes a job: before it records the job as
/// started, the job never ran and goes to the replacement; after, the job
/// fails with `WorkerDied`; after it sent the result, the result stands.
/// Either way the pool is replaced and usable.
#[test]
fn killpoint_pool_worker_killed_around_its_job() {
    let leaks = LeakCheck::start();
    for point in ["pool.job-received", "pool.job-recorded", "pool.result-sent"] {
        // Forked workers inherit the kill point; their replacements, forked
        // after it is cleared, do not.
        fault::die_at(point).unwrap();
        let pool = Pool::builder()
            .processes(1)
            .start_method(StartMethod::Fork)
            .build()
            .unwrap();
        fault::clear(point);
        let first = pool.worker_pids()[0];
        let r = pool.apply_async(square, 7).unwrap();
        let got = r.get_timeout(Duration::from_secs(20));
        match point {
            "pool.job-recorded" => assert_eq!(
                got,
                Err(PoolError::Task(TaskError::WorkerDied {
                    pid: first,
                    signal: Some(libc::SIGKILL)
                })),
                "{point}"
            ),
            _ => assert_eq!(got, Ok(49), "{point}"),
        }
        assert_eq!(pool.apply(square, 3), Ok(9), "{point}");
        assert!(!pool.worker_pids().contains(&first), "{point}");
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

/// A worker SIGKILLed in the middle of a run (`imap` at chunk size 1 sends
/// several tasks as one job): as it starts a task, or as it takes the run
/// (its first task counts as started from then on), that task fails with
/// `WorkerDied` and the rest of the run goes to the replacement; just after
/// it reported a task, that task's result stands and the rest go to the
/// replacement. Every other task's result comes back, in order.
#[test]
fn killpoint_pool_worker_killed_in_the_middle_of_a_run() {
    let leaks = LeakCheck::start();
    for point in ["pool.item-started", "pool.item-sent", "pool.job-recorded"] {
        fault::die_at(point).unwrap();
        let pool = Pool::builder()
            .processes(1)
            .run_length(8)
            .start_method(StartMethod::Fork)
            .build()
            .unwrap();
        fault::clear(point);
        let first = pool.worker_pids()[0];
        let got: Vec<Result<u64, PoolError>> = pool.imap(square, 0..20u64).collect();
        for (x, r) in got.iter().enumerate() {
            let x = x as u64;
            if x == 0 && point != "pool.item-sent" {
                assert_eq!(
                    r,
                    &Err(PoolError::Task(TaskError::WorkerDied {
                        pid: first,
                        signal: Some(libc::SIGKILL)
                    })),
                    "{point}"
                );
            } else {
                assert_eq!(r, &Ok(x * x), "{point}: item {x}");
            }
        }
        assert!(!pool.worker_pids().contains(&first), "{point}");
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

/// The result thread panics (a kill point's callback): the pool is broken —
/// pending and later calls fail with `Broken`, nothing waits for ever, and
/// terminate + join still reap everything.
#[test]
fn killpoint_a_failing_result_thread_breaks_the_pool() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(2).unwrap();
        let r = pool.apply_async(square, 2);
        fault::on("pool.result-received", || panic!("injected failure")).unwrap();
        let r2 = pool.apply_async(square, 3);
        for r in [r, r2] {
            let got = match r {
                Ok(r) => r.get_timeout(Duration::from_secs(20)),
                Err(e) => Err(e),
            };
            // The first may have finished before the failure.
            assert!(matches!(got, Ok(4) | Err(PoolError::Broken(_))), "{got:?}");
        }
        fault::clear("pool.result-received");
        let later = pool.map(square, 0..10);
        assert!(matches!(later, Err(PoolError::Broken(_))), "{later:?}");
        returns_within("drop", Duration::from_secs(20), move || drop(pool));
    }
    leaks.assert_clean();
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

/// Jobs go to workers in the order they were submitted, even while the
/// dispatcher holds one it took from the backlog. Pool(1) with
/// `maxtasksperchild(2)`: the third job waits for the replacement worker;
/// the dispatcher is held at `pool.backlog-taken` with it while the caller
/// submits the fourth and fifth. They used to overtake it, straight to the
/// replacement, which ran jobs 4 and 5 while 3 waited for the next worker
/// (pids a a c b b c: seen once under the stress hog).
#[test]
fn killpoint_jobs_submitted_while_the_dispatcher_holds_one_do_not_overtake_it() {
    let leaks = LeakCheck::start();
    {
        let (taken_tx, taken) = mpsc::channel::<()>();
        let (go, go_rx) = mpsc::channel::<()>();
        let hold = Mutex::new(Some((taken_tx, go_rx)));
        fault::on("pool.backlog-taken", move || {
            // The first job the dispatcher takes waits for the test; later
            // ones pass, and so do those the caller's thread sends itself.
            if std::thread::current().name() != Some("mproc-pool-dispatch") {
                return;
            }
            let first = hold.lock().map(|mut h| h.take()).ok().flatten();
            if let Some((taken, go)) = first {
                let _ = taken.send(());
                let _ = go.recv();
            }
        })
        .unwrap();
        let pool = Pool::builder()
            .processes(1)
            .maxtasksperchild(2)
            .build()
            .unwrap();
        let mut rs: Vec<_> = (0..3).map(|_| pool.apply_async(pid, ()).unwrap()).collect();
        taken
            .recv_timeout(Duration::from_secs(20))
            .expect("the dispatcher to take the third job");
        rs.extend((0..2).map(|_| pool.apply_async(pid, ()).unwrap()));
        go.send(()).unwrap();
        rs.push(pool.apply_async(pid, ()).unwrap());
        let pids: Vec<u32> = rs
            .into_iter()
            .map(|r| r.get_timeout(Duration::from_secs(20)).unwrap())
            .collect();
        fault::clear("pool.backlog-taken");
        for pair in pids.chunks(2) {
            assert_eq!(pair[0], pair[1], "two jobs per worker, in order: {pids:?}");
        }
        let distinct: BTreeSet<u32> = pids.iter().copied().collect();
        assert_eq!(distinct.len(), 3, "a new worker every two jobs: {pids:?}");
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

/// A worker SIGKILLed as it skips a job that was taken back from it (kill
/// point `pool.job-skipped`): the job already ran on the idle worker it was
/// given to, exactly once; the long job before it stands; the dead worker
/// is replaced. Two workers with a fixed depth of 4 are held in long tasks
/// while short ones queue behind both; one is released, runs dry and gets
/// the jobs queued behind the other, which skips them once released.
#[test]
fn killpoint_a_worker_killed_as_it_skips_a_job_taken_back_loses_nothing() {
    let leaks = LeakCheck::start();
    {
        // Forked workers inherit the kill point; their replacements, forked
        // after it is cleared, do not.
        fault::die_at("pool.job-skipped").unwrap();
        let pool = Pool::builder()
            .processes(2)
            .prefetch(4)
            .start_method(StartMethod::Fork)
            .build()
            .unwrap();
        fault::clear("pool.job-skipped");
        let (a, go_a, _) = shorts_taken_back_from_a_held_worker(&pool);
        go_a.set();
        let a_pid = a.get_timeout(Duration::from_secs(30)).unwrap();
        // It skips the first job taken back from it, and dies there; it is
        // replaced, and the pool goes on.
        let pool = std::sync::Arc::new(pool);
        let watch = pool.clone();
        returns_within("the replacement", Duration::from_secs(30), move || {
            while watch.worker_pids().contains(&a_pid) {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        assert_eq!(pool.worker_pids().len(), 2);
        let out = pool.map_chunked(pid_and_square, 0..100u64, 1).unwrap();
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, &(_, sq))| sq == (i * i) as u64));
        let pool = std::sync::Arc::into_inner(pool).expect("the only handle");
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}
