//! Forwarded output: children's stdout and stderr lines and tracing events
//! reach the parent whole, tagged with the child's name, before `join`
//! returns — whichever way the child ends — and a slow parent never blocks
//! a child: what does not fit is dropped and counted.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use mproc::process::{self, OutputKind, OutputLine};
use mproc::sync::Event;
use mproc::{Pool, Process, StartMethod};
use mproc_tests::LeakCheck;

/// What the sink got: (name, pid, kind, text).
static GOT: Mutex<Vec<(String, u32, OutputKind, String)>> = Mutex::new(Vec::new());
static CHANGED: Condvar = Condvar::new();

fn record(line: &OutputLine<'_>) {
    GOT.lock().unwrap().push((
        line.name.to_string(),
        line.pid,
        line.kind,
        line.text.to_string(),
    ));
    CHANGED.notify_all();
}

/// The lines `name` sent on `kind`, in order.
fn lines_of(name: &str, kind: OutputKind) -> Vec<String> {
    GOT.lock()
        .unwrap()
        .iter()
        .filter(|(n, _, k, _)| n == name && *k == kind)
        .map(|(_, _, _, t)| t.clone())
        .collect()
}

fn talk(how: u8) {
    use std::io::Write;
    println!("one");
    eprintln!("warning: two");
    print!("three, ");
    println!("and a half");
    let mut long = "x".repeat(70_000);
    long.push('!');
    println!("{long}");
    print!("no newline at the end");
    match how {
        0 => {}
        1 => panic!("the child gave up"),
        2 => process::exit(3),
        _ => {
            let _ = std::io::stdout().flush();
            std::process::exit(0)
        }
    }
}

#[test]
fn forwarded_lines_arrive_whole_and_tagged_before_join_returns() {
    let leaks = LeakCheck::start();
    process::set_output_sink(Some(record));
    let methods = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::Forkserver,
    ];
    for (i, method) in methods.into_iter().enumerate() {
        for how in 0..4u8 {
            let name = format!("talker-{i}-{how}");
            let mut p = Process::new(talk, how)
                .name(name.clone())
                .start_method(method)
                .forward_output(true);
            p.start().unwrap();
            let pid = p.pid().unwrap();
            p.join().unwrap();
            // Everything is there once join has returned.
            let out = lines_of(&name, OutputKind::Stdout);
            assert_eq!(out.len(), 5, "{method:?} {how}: {out:?}");
            assert_eq!(out[..2], ["one", "three, and a half"], "{method:?} {how}");
            // A line longer than a frame comes in pieces, in order.
            assert_eq!(out[2].len() + out[3].len(), 70_001);
            assert!(out[3].ends_with('!'));
            assert_eq!(out[4], "no newline at the end", "{method:?} {how}");
            let err = lines_of(&name, OutputKind::Stderr);
            assert_eq!(err[0], "warning: two", "{method:?} {how}");
            if how == 1 {
                // The panic message is forwarded too, under the name.
                assert!(
                    err.iter().any(|l| l.contains("the child gave up")),
                    "{method:?}: {err:?}"
                );
            }
            let ours = GOT.lock().unwrap();
            assert!(ours.iter().filter(|g| g.0 == name).all(|g| g.1 == pid));
            let code = [0, 1, 3, 0][usize::from(how)];
            assert_eq!(p.exitcode(), Some(code), "{method:?} {how}");
        }
    }
    process::set_output_sink(None);
    leaks.assert_clean();
}

/// Stops the sink until released: a parent that does not keep up.
static HELD: Mutex<bool> = Mutex::new(false);
static RELEASED: Condvar = Condvar::new();

fn slow(line: &OutputLine<'_>) {
    let mut held = HELD.lock().unwrap();
    while *held {
        held = RELEASED.wait(held).unwrap();
    }
    drop(held);
    record(line);
}

const FLOOD: u64 = 400_000;

fn flood(written: Event) {
    for i in 0..FLOOD {
        println!("line {i:07} of the flood");
    }
    written.set();
}

/// The parent's sink is stuck while a child writes 400,000 lines (10 MB):
/// the child writes them all anyway (its writes never wait for the
/// parent), the lines that did not fit are dropped, and the parent is told
/// how many — so what arrived plus what was dropped is everything, and
/// what arrived is whole and in order.
#[test]
fn a_stuck_parent_never_blocks_a_child_and_drops_are_counted() {
    let leaks = LeakCheck::start();
    process::set_output_sink(Some(slow));
    *HELD.lock().unwrap() = true;
    let written = Event::new().unwrap();
    let mut p = Process::new(flood, written.clone())
        .name("flood")
        .forward_output(true);
    p.start().unwrap();
    assert!(
        written.wait_timeout(Duration::from_secs(60)),
        "the child's writes waited for its stuck parent"
    );
    *HELD.lock().unwrap() = false;
    RELEASED.notify_all();
    p.join().unwrap();
    process::set_output_sink(None);
    let got = GOT.lock().unwrap();
    let mut seen = 0u64;
    let mut dropped = 0u64;
    let mut last: Option<u64> = None;
    for (_, _, kind, text) in got.iter().filter(|g| g.0 == "flood") {
        match kind {
            OutputKind::Stdout => {
                let n: u64 = text
                    .strip_prefix("line ")
                    .and_then(|t| t.strip_suffix(" of the flood"))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("a torn line: {text:?}"));
                assert!(
                    last.is_none_or(|l| n > l),
                    "out of order: {n} after {last:?}"
                );
                last = Some(n);
                seen += 1;
            }
            OutputKind::Dropped(n) => dropped += n,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        dropped > 0,
        "nothing was dropped: the test did not fill the queue"
    );
    assert_eq!(seen + dropped, FLOOD, "{seen} seen, {dropped} dropped");
    drop(got);
    drop(written);
    leaks.assert_clean();
}

fn shout(x: u32) -> u32 {
    println!("worker says {x}");
    x
}

fn traced(x: u32) {
    tracing::info!(answer = x, "hello from the child");
    tracing::warn!("careful");
}

fn wait_for(what: impl Fn(&[(String, u32, OutputKind, String)]) -> bool) {
    let got = GOT.lock().unwrap();
    let (_got, timeout) = CHANGED
        .wait_timeout_while(got, Duration::from_secs(30), |g| !what(g))
        .unwrap();
    assert!(!timeout.timed_out(), "the forwarded lines did not come");
}

/// Pool workers forward too, tagged with their names; a spawned child's
/// tracing events arrive as events with their level and fields.
#[test]
fn pool_workers_lines_and_a_childs_tracing_events_are_forwarded() {
    let leaks = LeakCheck::start();
    process::set_output_sink(Some(record));
    let pool = Pool::builder()
        .processes(2)
        .forward_output(true)
        .build()
        .unwrap();
    assert_eq!(
        pool.map(shout, 0..6u32).unwrap(),
        (0..6).collect::<Vec<_>>()
    );
    wait_for(|g| {
        (0..6).all(|x| {
            g.iter().any(|(n, _, k, t)| {
                n.starts_with("PoolWorker-")
                    && *k == OutputKind::Stdout
                    && *t == format!("worker says {x}")
            })
        })
    });
    drop(pool);

    let mut p = Process::new(traced, 42)
        .name("tracer")
        .start_method(StartMethod::Spawn)
        .forward_output(true);
    p.start().unwrap();
    p.join().unwrap();
    let got = GOT.lock().unwrap();
    let events: Vec<_> = got
        .iter()
        .filter(|g| g.0 == "tracer")
        .map(|g| (g.2, g.3.clone()))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, OutputKind::Event(3));
    assert!(
        events[0].1.contains("hello from the child") && events[0].1.contains("answer=42"),
        "{events:?}"
    );
    assert_eq!(events[1].0, OutputKind::Event(2));
    drop(got);
    process::set_output_sink(None);
    leaks.assert_clean();
}

fn chatter(started: Event) {
    println!("first");
    started.set();
    let mut i = 0u64;
    loop {
        println!("chatter {i:09}");
        i += 1;
    }
}

/// A forwarding child SIGKILLed in the middle of its output: `join`
/// returns (the reader stops at the end of the stream), every line that
/// arrived is whole, and nothing is left behind.
#[test]
fn a_forwarding_child_killed_mid_line_leaves_whole_lines_and_no_hang() {
    let leaks = LeakCheck::start();
    process::set_output_sink(Some(record));
    let started = Event::new().unwrap();
    let mut p = Process::new(chatter, started.clone())
        .name("chatter")
        .forward_output(true);
    p.start().unwrap();
    assert!(started.wait_timeout(Duration::from_secs(30)));
    // Killed once its output is flowing (what its forwarder had not sent
    // yet is lost with it).
    wait_for(|g| g.iter().filter(|l| l.0 == "chatter").count() > 10);
    p.kill().unwrap();
    let p = mproc_tests::returns_within("join", Duration::from_secs(20), move || {
        p.join().unwrap();
        p
    });
    assert_eq!(p.exitcode(), Some(-9));
    let lines = lines_of("chatter", OutputKind::Stdout);
    assert_eq!(lines[0], "first");
    for l in &lines[1..] {
        assert!(
            l.len() == 17 && l.starts_with("chatter ") && l[8..].parse::<u64>().is_ok(),
            "a torn line: {l:?}"
        );
    }
    process::set_output_sink(None);
    drop((p, started));
    leaks.assert_clean();
}
