//! The `tracing` feature: the events a subscriber receives for a process's
//! start and exit and a pool task's life, captured by a layer of our own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use mproc::{Pool, Process, StartMethod};
use mproc_tests::LeakCheck;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One captured event: its target, and its fields as text.
#[derive(Clone, Debug)]
struct Seen {
    target: String,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

struct Capture(Arc<Mutex<Vec<Seen>>>);

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().unwrap().push(Seen {
            target: event.metadata().target().into(),
            fields: fields.0,
        });
    }
}

/// The events of this test process (the subscriber is process-wide, as
/// events come from the pool's and the forkserver client's threads too).
fn captured() -> &'static Arc<Mutex<Vec<Seen>>> {
    static SEEN: OnceLock<Arc<Mutex<Vec<Seen>>>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(seen.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        seen
    })
}

fn events(target: &str, message: &str) -> Vec<Seen> {
    captured()
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.target == target && s.fields.get("message").is_some_and(|m| m == message))
        .cloned()
        .collect()
}

fn exits_with(code: i32) {
    mproc::process::exit(code)
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn start_and_exit_events_name_the_pid_name_method_and_code() {
    captured();
    let leaks = LeakCheck::start();
    for method in [
        StartMethod::Forkserver,
        StartMethod::Spawn,
        StartMethod::Fork,
    ] {
        let mut p = Process::new(exits_with, 3)
            .name("traced")
            .start_method(method);
        p.start().unwrap();
        p.join().unwrap();
        let pid = p.pid().unwrap().to_string();
        let of_pid = |s: &Seen| s.fields.get("pid") == Some(&pid);
        let started: Vec<_> = events("mproc::process", "process started")
            .into_iter()
            .filter(of_pid)
            .collect();
        let exited: Vec<_> = events("mproc::process", "process exited")
            .into_iter()
            .filter(of_pid)
            .collect();
        assert_eq!((started.len(), exited.len()), (1, 1), "{method:?}");
        let method = format!("{method:?}");
        for e in [&started[0], &exited[0]] {
            assert_eq!(e.fields.get("name").map(String::as_str), Some("traced"));
            assert_eq!(e.fields.get("method"), Some(&method));
        }
        assert_eq!(
            exited[0].fields.get("exit_code").map(String::as_str),
            Some("3")
        );
    }
    leaks.assert_clean();
}

#[test]
fn a_fork_start_beside_another_thread_warns_once() {
    captured();
    let leaks = LeakCheck::start();
    // Another thread of ours runs during both starts.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    for _ in 0..2 {
        let mut p = Process::new(exits_with, 0).start_method(StartMethod::Fork);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    drop(tx);
    other.join().unwrap();
    // Once per process, whichever test forked first once we listened.
    let warned: Vec<Seen> = captured()
        .lock()
        .unwrap()
        .iter()
        .filter(|s| {
            s.target == "mproc_process::method"
                && s.fields
                    .get("message")
                    .is_some_and(|m| m.starts_with("StartMethod::Fork in a multi-threaded process"))
        })
        .cloned()
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    let threads: usize = warned[0].fields["threads"].parse().unwrap();
    assert!(threads >= 2, "{warned:?}");
    leaks.assert_clean();
}

#[test]
fn a_pool_task_is_submitted_dispatched_and_done_on_started_workers() {
    captured();
    let leaks = LeakCheck::start();
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(square, 9), Ok(81));
    let pids = pool.worker_pids();
    pool.close();
    pool.join().unwrap();
    drop(pool);
    let job = |s: &Seen| s.fields.get("job").cloned();
    let submitted: Vec<_> = events("mproc::pool", "task submitted")
        .iter()
        .map(job)
        .collect();
    assert_eq!(submitted, [Some("0".to_string())]);
    assert_eq!(
        events("mproc::pool", "task dispatched")
            .iter()
            .map(job)
            .collect::<Vec<_>>(),
        submitted
    );
    assert_eq!(
        events("mproc::pool", "task done")
            .iter()
            .map(job)
            .collect::<Vec<_>>(),
        submitted
    );
    let mut started: Vec<String> = events("mproc::pool", "worker started")
        .iter()
        .filter_map(|s| s.fields.get("pid").cloned())
        .collect();
    started.sort();
    let mut pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    pids.sort();
    assert_eq!(started, pids);
    leaks.assert_clean();
}
