//! The process pool across real processes: CPython's pool scenarios, the
//! crash cases CPython hangs on, and the exit rules.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mproc::pool::{PoolError, TaskError};
use mproc::sync::Event;
use mproc::{Pool, Process, Queue, StartMethod};
use mproc_tests::{returns_within, LeakCheck};

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn nap_then_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    x * x
}

fn panics(message: String) -> u64 {
    panic!("{message}")
}

fn fails(x: u64) -> Result<u64, String> {
    if x % 2 == 0 {
        Ok(x)
    } else {
        Err(format!("{x} is odd"))
    }
}

fn aborts(_: ()) {
    std::process::abort()
}

/// Tells the parent which worker runs it, then waits to be released (or
/// killed).
/// This worker's pid, once another worker has reached the barrier too.
fn pid_once_two_meet(both: mproc::sync::Barrier) -> u32 {
    both.wait_timeout(Duration::from_secs(30))
        .expect("two workers never met");
    std::process::id()
}

fn report_and_block(args: (Queue<u32>, Event)) -> u32 {
    let (q, ev) = args;
    q.put(std::process::id()).unwrap();
    ev.wait();
    std::process::id()
}

/// Waits up to `timeout` for process `pid` (not necessarily our child) to
/// be gone. Without pidfds, it checks every millisecond.
#[cfg(not(target_os = "linux"))]
fn gone_within(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while mproc_tests::is_running(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Waits up to `timeout` for process `pid` (not necessarily our child) to
/// be gone.
#[cfg(target_os = "linux")]
fn gone_within(pid: u32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return true; // no such process
    }
    let mut pfd = libc::pollfd {
        fd: fd as i32,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis() as i32;
    // SAFETY: one valid pollfd; the descriptor is ours and closed after.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    // SAFETY: we own the descriptor.
    unsafe { libc::close(fd as i32) };
    n == 1
}

#[test]
fn apply_and_apply_async_return_the_results() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(2).unwrap();
        assert_eq!(pool.apply(square, 12).unwrap(), 144);
        let rs: Vec<_> = (0..10)
            .map(|i| pool.apply_async(square, i).unwrap())
            .collect();
        let got: Vec<u64> = rs.into_iter().map(|r| r.get().unwrap()).collect();
        assert_eq!(got, (0..10).map(square).collect::<Vec<_>>());
        // A task's own Err is a value, not a pool error.
        assert_eq!(pool.apply(fails, 3).unwrap(), Err("3 is odd".to_string()));
        assert_eq!(pool.apply(fails, 4).unwrap(), Ok(4));
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn get_timeout_on_a_slow_task_times_out_and_a_later_get_succeeds() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(1).unwrap();
        let r = pool.apply_async(nap_then_square, 9).unwrap();
        assert!(!r.ready());
        assert_eq!(r.successful(), None, "not ready");
        assert_eq!(
            r.get_timeout(Duration::from_millis(20)),
            Err(PoolError::Timeout)
        );
        assert!(!r.wait_timeout(Duration::from_millis(1)));
        r.wait();
        assert!(r.ready());
        assert_eq!(r.successful(), Some(true));
        assert_eq!(r.get().unwrap(), 81);
    }
    leaks.assert_clean();
}

/// An argument whose decoding kills the worker that decodes it (at 13).
#[derive(serde::Serialize)]
struct Poison(u64);

impl<'de> serde::Deserialize<'de> for Poison {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Poison, D::Error> {
        let x = u64::deserialize(d)?;
        if x == 13 {
            // SAFETY: kill takes a pid and a signal; this is the worker itself.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        Ok(Poison(x))
    }
}

fn unwrap_poison(p: Poison) -> u64 {
    p.0
}

/// A run whose input kills every worker that decodes it — before any of its
/// tasks starts — does not go round for ever: each death fails the task the
/// run would have started with (its first task counts as started from the
/// claim), so the run ends, its tasks failed with `WorkerDied`, and the
/// tasks of the other runs come back. (It went round for ever once.)
#[test]
fn a_run_whose_input_kills_its_worker_fails_and_ends() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder().processes(2).run_length(8).build().unwrap();
        let pool = Arc::new(pool);
        let p = pool.clone();
        let got: Vec<Result<u64, PoolError>> = returns_within(
            "imap over a poisoned run",
            Duration::from_secs(30),
            move || p.imap(unwrap_poison, (0..24).map(Poison)).collect(),
        );
        assert_eq!(got.len(), 24);
        for (x, r) in got.iter().enumerate() {
            if (8..16).contains(&x) {
                // Runs are [0, 8), [8, 16), [16, 24): the poisoned one's.
                assert!(
                    matches!(
                        r,
                        Err(PoolError::Task(TaskError::WorkerDied {
                            signal: Some(libc::SIGKILL),
                            ..
                        }))
                    ),
                    "item {x}: {r:?}"
                );
            } else {
                assert_eq!(r, &Ok(x as u64), "item {x}");
            }
        }
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

/// Segments in a result: one of `4096 × (x + 1)` bytes, except item 1,
/// whose result holds more than a message can carry.
fn segments(x: u64) -> Vec<mproc::Segment> {
    let n = if x == 1 {
        mproc::shm::transfer::MAX_FDS + 1
    } else {
        1
    };
    (0..n)
        .map(|_| mproc::Segment::anonymous(4096 * (x as usize + 1)).unwrap())
        .collect()
}

/// Handles in a run's results are numbered across the run; a task whose
/// handles cannot be sent (more than a message carries) fails alone, and
/// the later tasks' handles are still theirs — not their neighbours', not
/// an undecodable chunk.
#[test]
fn a_task_whose_handles_cannot_be_sent_fails_alone_in_its_run() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder().processes(1).run_length(6).build().unwrap();
        let got: Vec<Result<Vec<mproc::Segment>, PoolError>> =
            pool.imap(segments, 0..6u64).collect();
        for (x, r) in got.iter().enumerate() {
            if x == 1 {
                assert!(
                    matches!(r, Err(PoolError::Task(TaskError::Refused(_)))),
                    "item 1: {r:?}"
                );
            } else {
                let segs = r.as_ref().unwrap_or_else(|e| panic!("item {x}: {e:?}"));
                assert_eq!(segs.len(), 1, "item {x}");
                assert_eq!(segs[0].len(), 4096 * (x + 1), "item {x}");
            }
        }
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

fn set_then_square(args: (Event, u64)) -> u64 {
    args.0.set();
    args.1 * args.1
}

/// `imap` sends each item it pulls before it pulls the next (while tasks are
/// not known to be short): an input that waits until the first item has run
/// does not wait for ever. The input here waits for the task's event before
/// it gives its second item.
#[test]
fn imap_sends_an_item_before_it_pulls_the_next() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(2).unwrap();
        let ran = Event::new().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let (ev, saw) = (ran.clone(), seen.clone());
        let input = (0..5u64).map(move |x| {
            if x == 1 {
                // Set by the worker that runs item 0; not set means item 0
                // was held back until this item came.
                if ev.wait_timeout(Duration::from_secs(30)) {
                    saw.store(1, Ordering::SeqCst);
                }
            }
            (ev.clone(), x)
        });
        let got: Vec<u64> = pool
            .imap(set_then_square, input)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, [0, 1, 4, 9, 16]);
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "item 0 ran while the input waited"
        );
        drop(ran);
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

/// A result of 8 bytes or 12 KiB, by item: the small ones go back through
/// the worker's item log, the large ones as messages.
fn small_or_large(x: u64) -> Vec<u8> {
    let len = if x % 3 == 1 { 12 << 10 } else { 8 };
    vec![(x % 251) as u8; len]
}

/// A run's results that come back by two ways — the worker's item log and,
/// for those too large for it (or when it is full), the result queue — are
/// put back in order: every item's own result, at its own place.
#[test]
fn imap_results_of_a_run_come_back_in_order_whatever_way_they_took() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder().processes(2).run_length(32).build().unwrap();
        for round in 0..3 {
            let got: Vec<Vec<u8>> = pool
                .imap(small_or_large, 0..2_000u64)
                .map(Result::unwrap)
                .collect();
            assert_eq!(got.len(), 2_000, "round {round}");
            for (x, v) in got.iter().enumerate() {
                assert_eq!(v, &small_or_large(x as u64), "round {round}, item {x}");
            }
        }
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

/// The words of one text, counted.
fn count_words(text: String) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for w in text.split_whitespace() {
        *m.entry(w.to_owned()).or_default() += 1;
    }
    m
}

fn merge_counts(
    mut a: std::collections::BTreeMap<String, u64>,
    b: std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    for (w, n) in b {
        *a.entry(w).or_default() += n;
    }
    a
}

/// Associative, not commutative: the order of the parts shows.
fn concat(a: String, b: String) -> String {
    a + &b
}

fn digit(x: u64) -> String {
    if x == 7_777 {
        panic!("no sevens");
    }
    (x % 10).to_string()
}

/// `map_reduce` gives the serial fold's result: word counts over many
/// texts (many chunks, reduced in the workers and then here), a
/// non-commutative reduce kept in input order, `None` for no items, and a
/// panicking item as that item's error — and the pool goes on.
#[test]
fn map_reduce_matches_the_serial_fold_in_input_order() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(3).unwrap();
        let texts: Vec<String> = (0..500u64)
            .map(|i| format!("w{} w{} common w{}", i % 7, i % 13, i % 50))
            .collect();
        let want = texts
            .iter()
            .cloned()
            .map(count_words)
            .fold(std::collections::BTreeMap::new(), merge_counts);
        let got = pool.map_reduce(count_words, merge_counts, texts).unwrap();
        assert_eq!(got, Some(want));
        let got = pool.map_reduce(digit, concat, 0..5_000u64).unwrap();
        let want: String = (0..5_000u64).map(|x| (x % 10).to_string()).collect();
        assert_eq!(got.as_deref(), Some(want.as_str()));
        assert_eq!(pool.map_reduce(digit, concat, 0..0u64), Ok(None));
        assert_eq!(
            pool.map_reduce(digit, concat, 0..10_000u64),
            Err(PoolError::Task(TaskError::Panicked {
                message: "no sevens".into()
            }))
        );
        assert_eq!(
            pool.map_reduce(digit, concat, 0..3u64),
            Ok(Some("012".into()))
        );
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn map_imap_and_starmap_match_the_serial_results() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(3).unwrap();
        let serial: Vec<u64> = (0..100).map(square).collect();
        assert_eq!(pool.map(square, 0..100).unwrap(), serial);
        for chunksize in [1, 7, 100, 1000] {
            assert_eq!(pool.map_chunked(square, 0..100, chunksize).unwrap(), serial);
        }
        assert_eq!(pool.map(square, Vec::new()).unwrap(), Vec::<u64>::new());
        assert_eq!(
            pool.map_chunked(square, 0..3, 0),
            Err(PoolError::ZeroChunksize)
        );

        let ordered: Vec<u64> = pool.imap(square, 0..100).map(Result::unwrap).collect();
        assert_eq!(ordered, serial);
        let chunked: Vec<u64> = pool
            .imap(square, 0..100)
            .chunksize(9)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(chunked, serial);
        let mut unordered: Vec<u64> = pool
            .imap_unordered(square, 0..100)
            .map(Result::unwrap)
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, serial);

        let pairs: Vec<(u64, u64)> = (0..50).map(|i| (i, 2 * i)).collect();
        assert_eq!(
            pool.starmap(add, pairs.clone()).unwrap(),
            pairs.iter().map(|&(a, b)| a + b).collect::<Vec<_>>()
        );
    }
    leaks.assert_clean();
}

#[test]
fn callbacks_get_the_whole_list_once_and_the_task_error() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(2).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(parking_lot_free::Slot::default());
        let (c, s) = (calls.clone(), seen.clone());
        let r = pool
            .map_async_with(
                square,
                0..40,
                move |v: &Vec<u64>| {
                    c.fetch_add(1, Ordering::SeqCst);
                    s.put(v.clone());
                },
                |e| panic!("no error expected: {e}"),
            )
            .unwrap();
        assert_eq!(r.get().unwrap(), (0..40).map(square).collect::<Vec<_>>());
        // The callback ran before the result was ready, exactly once.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(seen.take(), Some((0..40).map(square).collect::<Vec<_>>()));

        let errors = Arc::new(parking_lot_free::Slot::default());
        let e2 = errors.clone();
        let r = pool
            .apply_async_with(
                panics,
                "boom 7".to_string(),
                |_| panic!("no result expected"),
                move |e| e2.put(e.clone()),
            )
            .unwrap();
        let expected = PoolError::Task(TaskError::Panicked {
            message: "boom 7".into(),
        });
        assert_eq!(r.get(), Err(expected.clone()));
        assert_eq!(errors.take(), Some(expected));
    }
    leaks.assert_clean();
}

/// A tiny Mutex<Option<T>> for the callbacks above.
mod parking_lot_free {
    pub(super) struct Slot<T>(std::sync::Mutex<Option<T>>);

    impl<T> Default for Slot<T> {
        fn default() -> Self {
            Slot(std::sync::Mutex::new(None))
        }
    }

    impl<T> Slot<T> {
        pub(super) fn put(&self, v: T) {
            *self.0.lock().unwrap() = Some(v);
        }
        pub(super) fn take(&self) -> Option<T> {
            self.0.lock().unwrap().take()
        }
    }
}

#[test]
fn maxtasksperchild_gives_a_new_worker_every_two_tasks() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder()
            .processes(1)
            .maxtasksperchild(2)
            .build()
            .unwrap();
        let rs: Vec<_> = (0..6).map(|_| pool.apply_async(pid, ()).unwrap()).collect();
        let pids: Vec<u32> = rs.into_iter().map(|r| r.get().unwrap()).collect();
        for pair in pids.chunks(2) {
            assert_eq!(pair[0], pair[1], "two tasks per worker: {pids:?}");
        }
        let distinct: BTreeSet<u32> = pids.iter().copied().collect();
        assert_eq!(distinct.len(), 3, "a new pid every two tasks: {pids:?}");
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn misuse_is_a_distinct_error() {
    let leaks = LeakCheck::start();
    {
        let e = Pool::new(0).unwrap_err();
        assert_eq!(e.to_string(), "a pool needs at least one process");
        let pool = Pool::new(1).unwrap();
        assert_eq!(pool.join(), Err(PoolError::StillRunning));
        pool.close();
        assert_eq!(pool.apply_async(square, 1).err(), Some(PoolError::Closed));
        assert_eq!(pool.map(square, 0..3), Err(PoolError::Closed));
        let mut it = pool.imap(square, 0..3);
        assert_eq!(it.next(), Some(Err(PoolError::Closed)));
        assert_eq!(it.next(), None);
        pool.close(); // idempotent
        pool.join().unwrap();
        assert!(pool.worker_pids().is_empty());
    }
    leaks.assert_clean();
}

#[test]
fn a_pool_of_two_hundred_works_on_any_machine() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(200).unwrap();
        assert_eq!(pool.worker_pids().len(), 200);
        assert_eq!(
            pool.map_chunked(square, 0..400, 1).unwrap(),
            (0..400).map(square).collect::<Vec<_>>()
        );
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn a_worker_killed_mid_task_fails_only_that_task() {
    let leaks = LeakCheck::start();
    for method in [
        StartMethod::Forkserver,
        StartMethod::Fork,
        StartMethod::Spawn,
    ] {
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .build()
            .unwrap();
        let (q, ev) = (Queue::<u32>::new().unwrap(), Event::new().unwrap());
        let victim = pool
            .apply_async(report_and_block, (q.clone(), ev.clone()))
            .unwrap();
        let others: Vec<_> = (0..20)
            .map(|i| pool.apply_async(square, i).unwrap())
            .collect();
        let pid = q.get().unwrap();
        let killed = Instant::now();
        // SAFETY: kill takes a pid and a signal; `pid` is our pool's worker.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
        assert_eq!(
            victim.get_timeout(Duration::from_secs(1)),
            Err(PoolError::Task(TaskError::WorkerDied {
                pid,
                signal: Some(libc::SIGKILL)
            })),
            "{method:?}"
        );
        assert!(killed.elapsed() < Duration::from_secs(1));
        let got: Vec<u64> = others.into_iter().map(|r| r.get().unwrap()).collect();
        assert_eq!(got, (0..20).map(square).collect::<Vec<_>>(), "{method:?}");
        // Replaced (the dispatcher starts the replacement after the death
        // is reported: wait until two workers meet at a barrier), and
        // usable.
        let both = mproc::sync::Barrier::new(2).unwrap();
        let met = pool
            .map_chunked(pid_once_two_meet, vec![both.clone(), both.clone()], 1)
            .unwrap();
        drop(both);
        assert!(
            met[0] != met[1] && !met.contains(&pid),
            "{method:?}: {met:?} {pid}"
        );
        assert!(!pool.worker_pids().contains(&pid));
        assert_eq!(pool.worker_pids().len(), 2);
        assert_eq!(
            pool.map(square, 0..10).unwrap(),
            (0..10).map(square).collect::<Vec<_>>()
        );
        ev.set();
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

/// How many times each item ran, shared with every worker by the
/// initializer.
static RUNS: std::sync::OnceLock<mproc::Array<u64>> = std::sync::OnceLock::new();

fn share_runs(runs: mproc::Array<u64>) {
    let _ = RUNS.set(runs);
}

/// The item that kills its own worker.
const DOOMED: u64 = 1_000;

/// Counts that item `x` ran, kills its own worker at [`DOOMED`], doubles.
fn count_or_die(x: u64) -> u64 {
    let runs = RUNS.get().expect("the initializer shares the counts");
    {
        let mut g = runs.lock();
        let n = g.get(x as usize).expect("an item in range");
        g.set(x as usize, n + 1).expect("an item in range");
    }
    if x == DOOMED {
        // SAFETY: kill takes a pid and a signal; this is the worker itself.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    x * 2
}

/// `imap` at chunk size 1 sends its tasks to workers in runs; a worker that
/// dies in the middle of one fails only the task it was running: the
/// tasks of the run it had finished keep their results, the rest run on
/// another worker — every task exactly once, in order, and the pool goes
/// on. (Both iterators, a fixed run of 16 so that runs are sure.)
#[test]
fn imap_at_chunksize_1_in_runs_fails_only_the_task_whose_worker_died() {
    let leaks = LeakCheck::start();
    for ordered in [true, false] {
        let n = 2_000usize;
        let runs = mproc::Array::<u64>::new(n).unwrap();
        let pool = Pool::builder()
            .processes(2)
            .run_length(16)
            .initializer(share_runs, runs.clone())
            .build()
            .unwrap();
        let items = 0..n as u64;
        let mut got: Vec<(u64, Result<u64, PoolError>)> = if ordered {
            items.clone().zip(pool.imap(count_or_die, items)).collect()
        } else {
            // In completion order: each result names its item.
            let results: Vec<_> = pool.imap_unordered(count_or_die, items).collect();
            let mut out: Vec<_> = results
                .into_iter()
                .map(|r| match r {
                    Ok(v) => (v / 2, Ok(v)),
                    Err(e) => (DOOMED, Err(e)),
                })
                .collect();
            out.sort_by_key(|(x, _)| *x);
            out
        };
        assert_eq!(got.len(), n, "ordered: {ordered}");
        let (_, doomed) = got.remove(DOOMED as usize);
        assert!(
            matches!(
                doomed,
                Err(PoolError::Task(TaskError::WorkerDied {
                    signal: Some(libc::SIGKILL),
                    ..
                }))
            ),
            "ordered: {ordered}: {doomed:?}"
        );
        for (x, r) in got {
            assert_eq!(r, Ok(x * 2), "ordered: {ordered}, item {x}");
        }
        let counts = runs.to_vec();
        let wrong: Vec<_> = (0..n)
            .filter(|&i| counts[i] != 1)
            .map(|i| (i, counts[i]))
            .collect();
        assert!(
            wrong.is_empty(),
            "ordered: {ordered}: items not run once: {wrong:?}"
        );
        // The pool goes on.
        let more: Vec<_> = pool
            .imap(count_or_die, 0..10u64)
            .map(Result::unwrap)
            .collect();
        assert_eq!(more, (0..10).map(|x| x * 2).collect::<Vec<_>>());
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn an_aborting_task_and_a_panicking_task_fail_alone() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(1).unwrap();
        let before = pool.apply(pid, ()).unwrap();
        assert_eq!(
            pool.apply(panics, "oops".to_string()),
            Err(PoolError::Task(TaskError::Panicked {
                message: "oops".into()
            }))
        );
        // The worker caught the panic and lives on.
        assert_eq!(pool.apply(pid, ()).unwrap(), before);

        assert_eq!(
            pool.apply(aborts, ()),
            Err(PoolError::Task(TaskError::WorkerDied {
                pid: before,
                signal: Some(libc::SIGABRT)
            }))
        );
        let after = pool.apply(pid, ()).unwrap();
        assert_ne!(after, before);

        // In a map, the error is the first failing item's.
        match pool.map(panic_on_five, 0..10) {
            Err(PoolError::Task(TaskError::Panicked { message })) => {
                assert!(message.contains("five"))
            }
            other => panic!("expected the panic of item 5, got {other:?}"),
        }
        // In imap, each item gets its own outcome, in place.
        let items: Vec<_> = pool.imap(panic_on_five, 0..10).collect();
        for (i, item) in items.iter().enumerate() {
            match i {
                5 => assert!(matches!(
                    item,
                    Err(PoolError::Task(TaskError::Panicked { .. }))
                )),
                _ => assert_eq!(item, &Ok(i as u64)),
            }
        }
    }
    leaks.assert_clean();
}

fn panic_on_five(x: u64) -> u64 {
    assert_ne!(x, 5, "five");
    x
}

fn bad_init(_: ()) {
    panic!("cannot initialize")
}

fn good_init(tag: u64) {
    INIT_TAG.store(tag, Ordering::SeqCst);
}

static INIT_TAG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn read_tag(_: ()) -> u64 {
    INIT_TAG.load(Ordering::SeqCst)
}

#[test]
fn an_initializer_runs_in_each_worker_and_one_that_keeps_crashing_breaks_the_pool() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder()
            .processes(2)
            .initializer(good_init, 42)
            .build()
            .unwrap();
        assert_eq!(
            pool.map_chunked(read_tag, vec![(); 8], 1).unwrap(),
            vec![42; 8]
        );
        drop(pool);

        let pool = Pool::builder()
            .processes(2)
            .initializer(bad_init, ())
            .build()
            .unwrap();
        match pool.apply(square, 3) {
            Err(PoolError::Broken(why)) => assert!(why.contains("cannot initialize"), "{why}"),
            other => panic!("expected a broken pool, got {other:?}"),
        }
        assert!(matches!(
            pool.apply_async(square, 3),
            Err(PoolError::Broken(_))
        ));
        pool.terminate();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn terminate_fails_what_is_left_and_drop_reaps_the_workers() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(2).unwrap();
        let (q, ev) = (Queue::<u32>::new().unwrap(), Event::new().unwrap());
        let blocked = pool.apply_async(report_and_block, (q.clone(), ev)).unwrap();
        let pid = q.get().unwrap();
        pool.terminate();
        assert_eq!(blocked.get(), Err(PoolError::Terminated));
        pool.join().unwrap();
        assert!(gone_within(pid, Duration::from_secs(5)));

        let pool = Pool::new(2).unwrap();
        let pids = pool.worker_pids();
        drop(pool);
        for pid in pids {
            assert!(
                gone_within(pid, Duration::from_secs(5)),
                "worker {pid} survived drop"
            );
        }
    }
    leaks.assert_clean();
}

/// A parent with a pool, blocked on a task, as a user's program would be
/// when Ctrl-C arrives.
fn pool_parent(report: Queue<Vec<u32>>) {
    let pool = Pool::new(2).unwrap();
    let mut pids = pool.worker_pids();
    pids.extend(mproc::process::forkserver_pid());
    report.put(pids).unwrap();
    let ev = Event::new().unwrap();
    let q = Queue::<u32>::new().unwrap();
    let _ = pool.apply(report_and_block, (q, ev));
}

#[test]
fn ctrl_c_ends_the_parent_and_its_workers() {
    let leaks = LeakCheck::start();
    {
        let report = Queue::<Vec<u32>>::new().unwrap();
        let mut parent = Process::new(pool_parent, report.clone())
            .start_method(StartMethod::Fork)
            .process_group(true);
        parent.start().unwrap();
        let pids = report.get().unwrap();
        assert!(pids.len() >= 2, "{pids:?}");
        let group = parent.pid().unwrap() as libc::pid_t;
        // What the terminal does on Ctrl-C: SIGINT to the whole group.
        // SAFETY: kill takes a pid and a signal; the group is our child's.
        assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);
        parent.join().unwrap();
        assert_eq!(parent.exitcode(), Some(-libc::SIGINT));
        for pid in pids {
            assert!(
                gone_within(pid, Duration::from_secs(2)),
                "{pid} outlived Ctrl-C"
            );
        }
    }
    leaks.assert_clean();
}

// ---------------------------------------------------------------------------
// Issue 11: drops and joins that return, a result thread that never wedges,
// initializer arguments that carry handles.

#[test]
fn dropping_a_pool_after_its_tasks_returns() {
    let leaks = LeakCheck::start();
    for method in [
        StartMethod::Forkserver,
        StartMethod::Fork,
        StartMethod::Spawn,
    ] {
        returns_within("tasks, then drop", Duration::from_secs(40), move || {
            for round in 0..4 {
                let pool = Pool::builder()
                    .processes(3)
                    .maxtasksperchild(2)
                    .start_method(method)
                    .build()
                    .unwrap();
                assert_eq!(pool.map_chunked(square, 0..30, 1).unwrap().len(), 30);
                // Half the rounds drop with tasks still queued.
                let _pending: Vec<_> = (0..10 * (round % 2))
                    .map(|i| pool.apply_async(square, i).unwrap())
                    .collect();
                drop(pool);
            }
        });
    }
    leaks.assert_clean();
}

#[test]
fn a_pool_with_maxtasksperchild_joins() {
    let leaks = LeakCheck::start();
    returns_within("close + join", Duration::from_secs(40), || {
        for _ in 0..3 {
            let pool = Pool::builder()
                .processes(4)
                .maxtasksperchild(1)
                .build()
                .unwrap();
            let rs: Vec<_> = (0..100)
                .map(|i| pool.apply_async(square, i).unwrap())
                .collect();
            for (i, r) in rs.into_iter().enumerate() {
                assert_eq!(r.get().unwrap(), (i * i) as u64);
            }
            pool.close();
            pool.join().unwrap();
        }
    });
    leaks.assert_clean();
}

/// A result callback submits a task to the same pool, whose only worker
/// retires after each task: the callback must not wait for the replacement
/// (only the result thread could start it).
#[test]
fn a_callback_may_submit_tasks_with_maxtasksperchild() {
    let leaks = LeakCheck::start();
    {
        let pool = Arc::new(
            Pool::builder()
                .processes(1)
                .maxtasksperchild(1)
                .build()
                .unwrap(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = pool.clone();
        let first = pool
            .apply_async_with(
                square,
                3,
                move |_| {
                    let _ = tx.send(inner.apply_async(square, 4));
                },
                |e| panic!("no error expected: {e}"),
            )
            .unwrap();
        assert_eq!(first.get_timeout(Duration::from_secs(20)), Ok(9));
        let second = rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
        assert_eq!(second.get_timeout(Duration::from_secs(20)), Ok(16));
        // Later submissions still work.
        let later = pool.apply_async(square, 5).unwrap();
        assert_eq!(later.get_timeout(Duration::from_secs(20)), Ok(25));
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

/// Byte payloads as one copy each (`serde_bytes`), not a serde element per
/// byte: megabytes of those take seconds in an unoptimised build on a
/// loaded machine, and this test is about sizes, not speed.
fn a_mebibyte(_: u64) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![7; 1 << 20])
}

fn length(v: serde_bytes::ByteBuf) -> usize {
    v.len()
}

/// A callback submits a job larger than the worker's job pipe while the
/// worker is busy filling the result queue: the result thread must keep
/// draining results (it never sends on a worker's pipe).
#[test]
fn a_callback_submitting_a_large_job_does_not_wedge_the_result_thread() {
    let leaks = LeakCheck::start();
    {
        let pool = Arc::new(Pool::new(1).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = pool.clone();
        let first = pool
            .apply_async_with(
                a_mebibyte,
                0,
                move |_| {
                    let _ = tx.send(
                        inner.apply_async(length, serde_bytes::ByteBuf::from(vec![1u8; 4 << 20])),
                    );
                },
                |e| panic!("no error expected: {e}"),
            )
            .unwrap();
        let rest: Vec<_> = (1..12)
            .map(|i| pool.apply_async(a_mebibyte, i).unwrap())
            .collect();
        assert_eq!(
            first.get_timeout(Duration::from_secs(20)).map(|v| v.len()),
            Ok(1 << 20)
        );
        for r in rest {
            assert_eq!(
                r.get_timeout(Duration::from_secs(20)).map(|v| v.len()),
                Ok(1 << 20)
            );
        }
        let big = rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
        assert_eq!(big.get_timeout(Duration::from_secs(20)), Ok(4 << 20));
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

/// CPython's usual `initargs`: a shared value (and a queue) handed to
/// every worker by the initializer.
fn count_workers(args: (mproc::Value<u64>, Queue<u32>)) {
    let (counter, q) = args;
    counter.update(|c| *c += 1);
    q.put(std::process::id()).unwrap();
}

#[test]
fn initializer_arguments_may_carry_handles() {
    let leaks = LeakCheck::start();
    for method in [
        StartMethod::Forkserver,
        StartMethod::Fork,
        StartMethod::Spawn,
    ] {
        let counter = mproc::Value::new(0u64).unwrap();
        let q = Queue::<u32>::new().unwrap();
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .initializer(count_workers, (counter.clone(), q.clone()))
            .build()
            .unwrap();
        let mut pids: BTreeSet<u32> = BTreeSet::new();
        for _ in 0..2 {
            pids.insert(q.get_timeout(Duration::from_secs(20)).unwrap());
        }
        assert_eq!(pids, pool.worker_pids().into_iter().collect(), "{method:?}");
        assert_eq!(counter.get(), 2, "{method:?}");
        pool.close();
        pool.join().unwrap();
    }
    leaks.assert_clean();
}

#[test]
fn maxtasksperchild_zero_is_an_error() {
    let e = Pool::builder()
        .processes(1)
        .maxtasksperchild(0)
        .build()
        .unwrap_err();
    assert_eq!(e.to_string(), "maxtasksperchild must be at least 1");
}

/// Uneven work balances: while one worker is held in a long task, every
/// short task submitted after it runs on the other worker — none waits
/// behind the long one, where a job used to go when it was submitted
/// (alternately to each worker). Queued jobs are taken back from a worker
/// whose job is overdue and given to the idle one.
#[test]
fn short_tasks_do_not_wait_behind_a_long_one_while_a_worker_is_idle() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(2).unwrap();
        let (started, go) = (Event::new().unwrap(), Event::new().unwrap());
        let long = pool
            .apply_async(announce_then_hold, (started.clone(), go.clone()))
            .unwrap();
        // It runs before the short ones come (one not yet started may be
        // taken back, and then run on the other worker).
        assert!(started.wait_timeout(Duration::from_secs(30)));
        let short: Vec<_> = (0..40)
            .map(|_| pool.apply_async(pid, ()).unwrap())
            .collect();
        // Every short task finishes while the long one is still held.
        let pids: Vec<u32> = short
            .into_iter()
            .map(|r| {
                r.get_timeout(Duration::from_secs(30))
                    .expect("a short task")
            })
            .collect();
        assert!(!go.is_set());
        go.set();
        let held_by = long.get_timeout(Duration::from_secs(30)).unwrap();
        assert!(
            pids.iter().all(|&p| p != held_by),
            "a short task ran on the held worker {held_by}: {pids:?}"
        );
        assert_eq!(pool.map(square, 0..100u64).unwrap()[99], 99 * 99);
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

pub(crate) fn pid_and_square(x: u64) -> (u32, u64) {
    (std::process::id(), x * x)
}

/// The scene of the take-back tests, on a pool of two workers with a fixed
/// depth of 4: both workers are held in long tasks (a, then b; both seen
/// running) while 20 short tasks queue behind both; b is released, and every short task must
/// come back from b's worker — the ones queued behind a are taken back —
/// while a is still held. Returns a's result, the event that releases it,
/// and b's pid.
pub(crate) fn shorts_taken_back_from_a_held_worker(
    pool: &Pool,
) -> (mproc::AsyncResult<u32>, Event, u32) {
    let (go_a, go_b) = (Event::new().unwrap(), Event::new().unwrap());
    let (started_a, started_b) = (Event::new().unwrap(), Event::new().unwrap());
    let a = pool
        .apply_async(announce_then_hold, (started_a.clone(), go_a.clone()))
        .unwrap();
    let b = pool
        .apply_async(announce_then_hold, (started_b.clone(), go_b.clone()))
        .unwrap();
    // Both run before anything queues: a job not yet started when jobs are
    // taken back goes back too (and may then run elsewhere).
    assert!(started_a.wait_timeout(Duration::from_secs(30)));
    assert!(started_b.wait_timeout(Duration::from_secs(30)));
    let short: Vec<_> = (0..20u64)
        .map(|i| pool.apply_async(pid_and_square, i).unwrap())
        .collect();
    go_b.set();
    let b_pid = b.get_timeout(Duration::from_secs(30)).unwrap();
    for (i, r) in short.into_iter().enumerate() {
        let (pid, sq) = r
            .get_timeout(Duration::from_secs(30))
            .expect("a short task");
        assert_eq!(sq, (i * i) as u64);
        assert_eq!(pid, b_pid, "short task {i} ran on the held worker");
    }
    assert!(!go_a.is_set());
    (a, go_a, b_pid)
}

/// Jobs queued behind a long job are taken back for a worker that has gone
/// idle. With a fixed depth of 4, the jobs alternate between two workers
/// held in long tasks and queue behind them; once one is released and runs
/// dry, the jobs still queued behind the other's long task are revoked and
/// run on the idle one — all of them while the long task is still held.
/// The revoked worker then takes up the jobs sent after its `Resume`.
#[test]
fn jobs_queued_behind_a_long_job_are_taken_back_for_an_idle_worker() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder().processes(2).prefetch(4).build().unwrap();
        let (a, go_a, b_pid) = shorts_taken_back_from_a_held_worker(&pool);
        go_a.set();
        let a_pid = a.get_timeout(Duration::from_secs(30)).unwrap();
        assert_ne!(a_pid, b_pid);
        // Both workers live on and take jobs.
        let out = pool.map_chunked(pid_and_square, 0..400u64, 1).unwrap();
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, &(_, sq))| sq == (i * i) as u64));
        let mut pids = pool.worker_pids();
        pids.sort_unstable();
        let mut both = vec![a_pid, b_pid];
        both.sort_unstable();
        assert_eq!(pids, both);
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

fn hang(_: ()) -> u32 {
    loop {
        std::thread::park();
    }
}

/// A task past its timeout has its worker killed and reaped; it resolves
/// `TimedOut` and the other tasks, on the other worker and after it, go on.
#[test]
fn a_task_past_its_timeout_is_killed_and_the_others_go_on() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(2).unwrap();
        let before = pool.worker_pids();
        let hung = pool
            .apply_async_timeout(hang, (), Duration::from_millis(200))
            .unwrap();
        let others: Vec<_> = (0..20u64)
            .map(|i| pool.apply_async(square, i).unwrap())
            .collect();
        match hung.get_timeout(Duration::from_secs(30)) {
            Err(PoolError::Task(TaskError::TimedOut { after, pid })) => {
                assert_eq!(after, Duration::from_millis(200));
                assert!(before.contains(&pid), "{pid} not in {before:?}");
                assert!(!pool.worker_pids().contains(&pid));
            }
            other => panic!("expected TimedOut, got {other:?}"),
        }
        for (i, r) in others.into_iter().enumerate() {
            assert_eq!(r.get_timeout(Duration::from_secs(30)), Ok((i * i) as u64));
        }
        assert_eq!(pool.apply(square, 9), Ok(81));
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

/// The pool-wide timeout applies to every task (a `map` chunk included);
/// tasks within it are untouched.
#[test]
fn the_pool_wide_task_timeout_applies_to_every_task() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder()
            .processes(2)
            .task_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        assert_eq!(pool.map(square, 0..50u64).unwrap()[7], 49);
        let r = pool.map_async(hang, vec![(); 1]).unwrap();
        assert!(matches!(
            r.get_timeout(Duration::from_secs(30)),
            Err(PoolError::Task(TaskError::TimedOut { .. }))
        ));
        assert_eq!(pool.apply(square, 4), Ok(16));
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

/// Says it started, then runs until `go` is set (or a minute passes); says
/// which worker ran it.
pub(crate) fn announce_then_hold(started: Event, go: Event) -> u32 {
    started.set();
    let _ = go.wait_timeout(Duration::from_secs(60));
    std::process::id()
}

fn count_and_square(counter: mproc::Value<u64>, x: u64) -> u64 {
    counter.update(|c| *c += 1);
    x * x
}

/// A task not yet started is cancelled: it never runs and resolves
/// `Cancelled` — whether it waits in the pool's backlog (adaptive depth) or
/// is queued on a worker's pipe behind a long task (fixed depth 4: it is
/// taken back). A running task is not stopped unless the caller opts in.
#[test]
fn cancelling_drops_a_queued_task_and_stops_a_running_one_only_on_request() {
    let leaks = LeakCheck::start();
    for prefetch in [None, Some(4)] {
        let mut b = Pool::builder().processes(1);
        if let Some(n) = prefetch {
            b = b.prefetch(n);
        }
        let pool = b.build().unwrap();
        let counter = mproc::Value::new(0u64).unwrap();
        let (started, go) = (Event::new().unwrap(), Event::new().unwrap());
        let long = pool
            .apply_async(announce_then_hold, (started.clone(), go.clone()))
            .unwrap();
        let queued = pool
            .apply_async(count_and_square, (counter.clone(), 3))
            .unwrap();
        let after = pool
            .apply_async(count_and_square, (counter.clone(), 4))
            .unwrap();
        assert!(queued.cancel(), "{prefetch:?}");
        assert!(!queued.cancel(), "{prefetch:?}: a second cancel");
        assert_eq!(
            queued.get_timeout(Duration::from_secs(30)),
            Err(PoolError::Cancelled)
        );
        // The running one is not stopped without the opt-in.
        assert!(started.wait_timeout(Duration::from_secs(30)));
        assert!(!long.cancel(), "{prefetch:?}");
        go.set();
        let pid = long.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(after.get_timeout(Duration::from_secs(30)), Ok(16));
        assert_eq!(counter.get(), 1, "{prefetch:?}: the cancelled task ran");
        // With the opt-in, a running task is stopped: its worker is killed.
        let (started, go) = (Event::new().unwrap(), Event::new().unwrap());
        let hung = pool
            .apply_async(announce_then_hold, (started.clone(), go.clone()))
            .unwrap();
        let next = pool.apply_async(square, 5).unwrap();
        assert!(started.wait_timeout(Duration::from_secs(30)));
        assert!(!hung.cancel(), "{prefetch:?}: running, no opt-in");
        assert!(hung.cancel_even_if_running(), "{prefetch:?}");
        assert_eq!(
            hung.get_timeout(Duration::from_secs(30)),
            Err(PoolError::Cancelled)
        );
        assert_eq!(next.get_timeout(Duration::from_secs(30)), Ok(25));
        assert!(!pool.worker_pids().contains(&pid));
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

/// Leaks `mib` MiB, touched, and says which worker it ran on.
fn grow(mib: usize) -> u32 {
    let v = vec![1u8; mib << 20];
    std::mem::forget(v);
    std::process::id()
}

/// A worker whose resident memory passes the limit after a task retires
/// and is replaced: the task's result stands; a worker under it stays.
#[test]
fn a_worker_over_max_memory_per_child_is_recycled_after_its_task() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder()
            .processes(1)
            .max_memory_per_child(256 << 20)
            .build()
            .unwrap();
        let small = pool.apply(grow, 1).unwrap();
        assert_eq!(
            pool.apply(grow, 1).unwrap(),
            small,
            "under the limit: same worker"
        );
        let big = pool.apply(grow, 300).unwrap();
        assert_eq!(big, small, "the task that grows it still ran there");
        let next = pool.apply(grow, 1).unwrap();
        assert_ne!(next, big, "over the limit: a new worker");
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

/// A slow initializer (its whole work is to take a while).
fn slow_init(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A task's timeout counts from when its worker starts it, not from when
/// it was sent: a worker that spends longer than the timeout in its
/// initializer runs its first task to the end (the clock used to start at
/// the send, and that task failed with `TimedOut`).
#[test]
fn a_task_timeout_does_not_count_the_workers_initializer() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::builder()
            .processes(1)
            .initializer(slow_init, 600)
            .task_timeout(Duration::from_millis(400))
            .build()
            .unwrap();
        // A task that takes a while, well within its timeout.
        assert_eq!(pool.apply(slow_init, 100), Ok(()));
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}
