//! `spawn(f, args).join()` across real processes, for every start method:
//! values of any size and with handles come back; panics, exits, signals,
//! bad results and failed starts are told apart; n-ary targets; and a
//! function named by another binary is refused.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use mproc::call::{CallError, RemoteFn};
use mproc::process::{self, Builder, JoinError, ProcessError};
use mproc::sync::Event;
use mproc::{Process, Queue, StartMethod};
use mproc_tests::LeakCheck;
use serde::{Deserialize, Serialize};

const METHODS: [StartMethod; 3] = [
    StartMethod::Fork,
    StartMethod::Forkserver,
    StartMethod::Spawn,
];

fn on(method: StartMethod) -> Builder {
    Builder::new().start_method(method)
}

fn describe(name: String, n: u32, scale: f64) -> (String, u32, f64, u32) {
    (
        format!("{name}!"),
        n * 2,
        scale * n as f64,
        std::process::id(),
    )
}

fn nothing() -> u8 {
    42
}

#[allow(clippy::too_many_arguments)]
fn eight(a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: String) -> String {
    format!("{a} {b} {c} {d} {e} {f} {g} {h}")
}

#[test]
fn a_child_returns_its_value_with_any_number_of_arguments() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let h = on(method)
            .spawn(describe, ("bob".to_string(), 21, 0.5))
            .unwrap();
        let child = h.pid().unwrap();
        let (name, n, scaled, pid) = h.join().unwrap();
        assert_eq!((name.as_str(), n, scaled), ("bob!", 42, 10.5), "{method:?}");
        assert_eq!(pid, child, "the value was computed in the child");
        assert_eq!(on(method).spawn(nothing, ()).unwrap().join().unwrap(), 42);
        let all = (1, 2, 3, 4, -5, -6, -7, "eight".to_string());
        assert_eq!(
            on(method).spawn(eight, all).unwrap().join().unwrap(),
            "1 2 3 4 -5 -6 -7 eight"
        );
    }
    // The plain form uses the default method.
    fn add(a: u64, b: u64) -> u64 {
        a + b
    }
    assert_eq!(mproc::spawn(add, (2, 3)).join().unwrap(), 5);
    leaks.assert_clean();
}

fn big(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn a_large_value_comes_back_whole_without_the_child_waiting_for_the_parent() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        // Around the inline limit, and far past any socket buffer.
        for len in [0, 2000, 2100, 4 << 20] {
            let got = on(method).spawn(big, len).unwrap().join().unwrap();
            assert!(got == big(len), "{method:?} {len}");
        }
    }
    leaks.assert_clean();
}

fn make_queue(items: Vec<u32>) -> Queue<u32> {
    let q = Queue::new().unwrap();
    for i in items {
        q.put(i).unwrap();
    }
    q
}

#[test]
fn a_returned_handle_arrives_working() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let q = on(method)
            .spawn(make_queue, vec![7, 8, 9])
            .unwrap()
            .join()
            .unwrap();
        assert_eq!((q.get().unwrap(), q.get().unwrap()), (7, 8), "{method:?}");
        q.put(10).unwrap();
        assert_eq!((q.get().unwrap(), q.get().unwrap()), (9, 10));
    }
    leaks.assert_clean();
}

fn explode(n: u32) -> u32 {
    panic!("exploded at {n}")
}

fn leave(code: i32) -> u32 {
    process::exit(code)
}

fn wait_forever((ready, never): (Event, Event)) -> u32 {
    ready.set();
    never.wait();
    0
}

#[test]
fn panics_exits_and_signals_are_told_apart() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        match on(method).spawn(explode, 3).unwrap().join() {
            Err(JoinError::Panicked { message }) => assert_eq!(message, "exploded at 3"),
            other => panic!("{method:?}: {other:?}"),
        }
        match on(method).spawn(leave, 5).unwrap().join() {
            Err(JoinError::Exited { code: 5 }) => {}
            other => panic!("{method:?}: {other:?}"),
        }
        // A function that exits 0 without returning has no value either.
        match on(method).spawn(leave, 0).unwrap().join() {
            Err(JoinError::Exited { code: 0 }) => {}
            other => panic!("{method:?}: {other:?}"),
        }
        let (ready, never) = (Event::new().unwrap(), Event::new().unwrap());
        let h = on(method)
            .spawn(wait_forever, (ready.clone(), never.clone()))
            .unwrap();
        ready.wait();
        assert!(!h.is_finished());
        h.kill().unwrap();
        match h.join() {
            Err(JoinError::Signaled { signal: 9 }) => {}
            other => panic!("{method:?}: {other:?}"),
        }
    }
    leaks.assert_clean();
}

/// A value whose serialization fails (postcard keeps no custom message:
/// the error says the value cannot be encoded).
#[derive(Debug, Deserialize)]
struct Unsendable;

impl Serialize for Unsendable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Unsendable"))
    }
}

fn unsendable(_: ()) -> Unsendable {
    Unsendable
}

fn takes_unsendable(_: Unsendable) -> u8 {
    0
}

#[test]
fn a_value_or_arguments_that_cannot_cross_are_clear_errors() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        match on(method).spawn(unsendable, ()).unwrap().join() {
            Err(JoinError::Result(e)) => assert!(e.contains("cannot encode"), "{e}"),
            other => panic!("{method:?}: {other:?}"),
        }
    }
    // Arguments are encoded at start (by every method but fork, which
    // needs no encoding and runs the function as it is).
    for method in [StartMethod::Forkserver, StartMethod::Spawn] {
        match on(method).spawn(takes_unsendable, Unsendable) {
            Err(ProcessError::Encode(e)) => assert!(e.to_string().contains("cannot encode"), "{e}"),
            other => panic!("{method:?}: {other:?}"),
        }
    }
    // The plain form reports it at join.
    let h = mproc::spawn(takes_unsendable, Unsendable);
    if process::get_start_method() != StartMethod::Fork {
        match h.join() {
            Err(e @ JoinError::Start(_)) => {
                let source = std::error::Error::source(&e).unwrap().to_string();
                assert!(source.contains("cannot encode"), "{source}");
            }
            other => panic!("{other:?}"),
        }
    }
    leaks.assert_clean();
}

fn sum_three(a: u64, b: u64, out: mproc::Value<u64>) {
    out.set(a + b);
}

#[test]
fn process_targets_take_several_arguments_without_a_tuple() {
    let leaks = LeakCheck::start();
    for method in METHODS {
        let out = mproc::Value::new(0u64).unwrap();
        let mut p = Process::new(sum_three, (40, 2, out.clone())).start_method(method);
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(out.get(), 42, "{method:?}");
    }
    leaks.assert_clean();
}

fn triple(x: u64) -> u64 {
    x * 3
}

#[test]
fn a_function_named_by_another_binary_is_refused() {
    let f = RemoteFn::new(triple);
    let bytes = postcard::to_allocvec(&f).unwrap();
    // Here, the same build: it resolves.
    let back: RemoteFn<u64, u64> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.call(5).unwrap(), 15);
    // Another binary refuses it, and says why.
    let mut peer = Command::new(env!("CARGO_BIN_EXE_call-peer"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    peer.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = peer.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.starts_with("refused:"), "{text}");
    assert!(text.contains("another build"), "{text}");
    // And the error is the one a caller matches on.
    let other = f.with_build_id(mproc::call::BuildId::from_bytes([9; 16]));
    assert!(matches!(other.call(1), Err(CallError::OtherBuild { .. })));
}

#[test]
fn a_dropped_handle_detaches_and_the_child_is_reaped_when_it_ends() {
    let leaks = LeakCheck::start();
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let (ready, go) = (Event::new().unwrap(), Event::new().unwrap());
        let h = on(method)
            .spawn(wait_forever, (ready.clone(), go.clone()))
            .unwrap();
        let pid = h.pid().unwrap();
        ready.wait();
        drop(h);
        let mine = || {
            mproc_tests::children_of(std::process::id())
                .into_iter()
                .any(|(p, _)| p == pid)
        };
        assert!(
            mine(),
            "{method:?}: a dropped handle does not end the child"
        );
        go.set();
        // Nobody joins it: the reaper does, zombie included.
        crate::process::wait_until(
            "the detached child's reaping",
            Duration::from_secs(20),
            || !mine(),
        );
    }
    leaks.assert_clean();
}
