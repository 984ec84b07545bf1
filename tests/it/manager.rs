//! The Manager: shared dicts, lists and values in a server process, used
//! from real child processes; atomic updates under contention; TCP with an
//! authkey; the server killed while clients call.

use std::collections::BTreeMap;
use std::time::Duration;

use mproc::manager::{task, Client, Dict, List, Manager, ManagerError, Registry, SharedValue};
use mproc::sync::Barrier;
use mproc_tests::{returns_within, LeakCheck};

fn add(count: Option<u64>, by: u64) -> Option<u64> {
    Some(count.unwrap_or(0) + by)
}

fn drop_if_zero(count: Option<u64>, _: ()) -> Option<u64> {
    count.filter(|&n| n != 0)
}

fn boom(_: Option<u64>, _: ()) -> Option<u64> {
    panic!("the update task blew up")
}

fn double(x: u64, _: ()) -> u64 {
    x * 2
}

fn suffix(mut s: String, tail: String) -> String {
    s.push_str(&tail);
    s
}

fn not_registered(_: Option<u64>, _: ()) -> Option<u64> {
    None
}

fn tasks() -> Registry {
    Registry::new()
        .with(task!(add))
        .with(task!(drop_if_zero))
        .with(task!(boom))
        .with(task!(double))
        .with(task!(suffix))
}

fn fill(id: u32, d: Dict<u32, String>, l: List<u32>) {
    d.insert(id, format!("from {}", std::process::id()))
        .unwrap();
    l.push(id).unwrap();
}

/// Opens the objects by name, as a process that was handed only the
/// client would.
fn by_name(client: Client) -> (Option<String>, usize, u64) {
    let d = client.named_dict::<u32, String>("results").unwrap();
    let l = client.named_list::<u32>("order").unwrap();
    let v = client.named_value::<u64>("counter", &0).unwrap();
    (d.get(&2).unwrap(), l.len().unwrap(), v.get().unwrap())
}

#[test]
fn manager_objects_are_shared_with_child_processes() {
    let leaks = LeakCheck::start();
    let m = Manager::new().unwrap();
    let d = m.client().named_dict::<u32, String>("results").unwrap();
    let l = m.client().named_list::<u32>("order").unwrap();
    let v = m.client().named_value::<u64>("counter", &41).unwrap();
    let children: Vec<_> = (0..4)
        .map(|id| mproc::spawn(fill, (id, d.clone(), l.clone())))
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.pid().unwrap()).collect();
    for c in children {
        c.join().unwrap();
    }
    // Every child's write is there, under its own pid.
    assert_eq!(d.len().unwrap(), 4);
    for (id, pid) in pids.iter().enumerate() {
        assert_eq!(d.get(&(id as u32)).unwrap(), Some(format!("from {pid}")));
    }
    let mut order = l.to_vec().unwrap();
    order.sort_unstable();
    assert_eq!(order, [0, 1, 2, 3]);
    // A child with only the client finds the same objects by name; a
    // named value that exists keeps its value.
    assert_eq!(v.set(&42).unwrap(), 41);
    let seen = mproc::spawn(by_name, m.client().clone()).join().unwrap();
    assert_eq!(seen, (Some(format!("from {}", pids[2])), 4, 42));

    // The rest of the dict's surface.
    let snapshot: BTreeMap<u32, String> = d.iter().unwrap().collect();
    assert_eq!(snapshot.len(), 4);
    let mut keys = d.keys().unwrap();
    keys.sort_unstable();
    assert_eq!(keys, [0, 1, 2, 3]);
    assert!(d.contains_key(&3).unwrap());
    assert_eq!(d.remove(&3).unwrap(), Some(format!("from {}", pids[3])));
    assert!(!d.contains_key(&3).unwrap());
    assert_eq!(d.remove(&3).unwrap(), None);
    assert_eq!(
        d.insert(0, "new".into()).unwrap(),
        Some(format!("from {}", pids[0]))
    );
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());

    // And the list's: positions, out of range, snapshot order.
    let l = m.list::<String>().unwrap();
    assert_eq!(l.push("b".into()).unwrap(), 1);
    assert_eq!(l.insert(0, "a".into()).unwrap(), 2);
    assert_eq!(l.insert(2, "d".into()).unwrap(), 3);
    assert_eq!(l.set(2, "c".into()).unwrap(), "d");
    assert_eq!(l.to_vec().unwrap(), ["a", "b", "c"]);
    assert_eq!(l.get(5).unwrap(), None);
    assert!(matches!(
        l.set(5, "x".into()),
        Err(ManagerError::IndexOutOfRange { index: 5, len: 3 })
    ));
    assert!(matches!(
        l.insert(4, "x".into()),
        Err(ManagerError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        l.remove(3),
        Err(ManagerError::IndexOutOfRange { .. })
    ));
    assert_eq!(l.remove(0).unwrap(), "a");
    assert_eq!(l.pop().unwrap(), Some("c".into()));
    assert_eq!(l.iter().unwrap().collect::<Vec<_>>(), ["b"]);
    l.clear().unwrap();
    assert_eq!(l.pop().unwrap(), None);

    // A named object of other types is refused, not misread.
    assert!(matches!(
        m.client().named_dict::<u32, u64>("results"),
        Err(ManagerError::WrongType(_))
    ));
    assert!(matches!(
        m.client().named_list::<u32>("results"),
        Err(ManagerError::WrongType(_))
    ));
    let pid = m.pid().unwrap();
    m.shutdown().unwrap();
    // The server is reaped and every proxy reports it gone.
    assert!(!mproc_tests::is_running(pid));
    assert!(matches!(d.len(), Err(ManagerError::ServerGone)));
    assert!(matches!(v.get(), Err(ManagerError::ServerGone)));
    leaks.assert_clean();
}

fn hammer(hits: Dict<String, u64>, total: SharedValue<u64>, n: u64) {
    for _ in 0..n {
        hits.update(&task!(add), "home".to_string(), 1u64).unwrap();
        total.update(&task!(double), ()).unwrap();
        total.set(&1).unwrap();
    }
}

/// Four processes update one entry 300 times each, at once: no update is
/// lost (a get-then-insert would lose many).
#[test]
fn manager_updates_are_atomic_under_contention() {
    let leaks = LeakCheck::start();
    let m = Manager::builder().tasks(tasks).start().unwrap();
    let hits = m.dict::<String, u64>().unwrap();
    let total = m.value(&1u64).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| mproc::spawn(hammer, (hits.clone(), total.clone(), 300)))
        .collect();
    for c in children {
        c.join().unwrap();
    }
    assert_eq!(hits.get("home").unwrap(), Some(1200));

    // None out removes the entry; None in is a missing entry.
    hits.insert("zero".into(), 0).unwrap();
    assert_eq!(
        hits.update(&task!(drop_if_zero), "zero".into(), ())
            .unwrap(),
        None
    );
    assert!(!hits.contains_key("zero").unwrap());
    assert_eq!(
        hits.update(&task!(add), "new".into(), 5u64).unwrap(),
        Some(5)
    );

    // A list item and a value of another type.
    let l = m.list::<u64>().unwrap();
    l.push(21).unwrap();
    assert_eq!(l.update(&task!(double), 0, ()).unwrap(), 42);
    assert!(matches!(
        l.update(&task!(double), 1, ()),
        Err(ManagerError::IndexOutOfRange { .. })
    ));
    let s = m.value(&"busy".to_string()).unwrap();
    assert_eq!(
        s.update(&task!(suffix), " (2/3)".to_string()).unwrap(),
        "busy (2/3)"
    );

    // A task that panics leaves the entry as it was; an unregistered one
    // and one of other types are refused.
    let e = hits.update(&task!(boom), "home".into(), ()).unwrap_err();
    assert!(
        matches!(&e, ManagerError::TaskFailed(msg) if msg.contains("blew up")),
        "{e}"
    );
    assert_eq!(hits.get("home").unwrap(), Some(1200));
    assert!(matches!(
        hits.update(&task!(not_registered), "home".into(), ()),
        Err(ManagerError::UnknownTask(_))
    ));
    assert!(matches!(
        hits.update(&task!(double), "home".into(), ()),
        Err(ManagerError::TaskTypes(_))
    ));
    drop((m, hits, total, l, s));
    leaks.assert_clean();
}

fn call_until_gone(d: Dict<u64, u64>, ready: Barrier) -> String {
    d.insert(std::process::id().into(), 0).unwrap();
    ready.wait().unwrap();
    let mut n = 0u64;
    loop {
        if let Err(e) = d.insert(std::process::id().into(), n) {
            return format!("{e:?}");
        }
        n += 1;
    }
}

/// The server is SIGKILLed while three processes (and this one) call it in
/// a loop: every one of them gets `ServerGone` promptly, none hangs.
#[test]
fn manager_server_killed_while_clients_call_fails_every_client() {
    let leaks = LeakCheck::start();
    let m = Manager::new().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let ready = Barrier::new(4).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| mproc::spawn(call_until_gone, (d.clone(), ready.clone())))
        .collect();
    ready.wait().unwrap();
    let pid = m.pid().unwrap();
    // SAFETY: kill(2) of the server this test started, by its pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let errors = returns_within("the clients", Duration::from_secs(20), move || {
        children
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(errors, ["ServerGone"; 3]);
    assert!(matches!(d.get(&1), Err(ManagerError::ServerGone)));
    // The owner reaps its dead server.
    assert!(matches!(m.shutdown(), Err(ManagerError::ServerGone)));
    drop(ready);
    leaks.assert_clean();
}

fn over_tcp(addr: String, key: Vec<u8>) -> Result<Option<u64>, String> {
    let client = Client::connect_tcp(addr.as_str(), key).map_err(|e| format!("{e:?}"))?;
    let d = client
        .named_dict::<String, u64>("remote")
        .map_err(|e| e.to_string())?;
    d.update(&task!(add), "calls".into(), 10u64)
        .map_err(|e| e.to_string())
}

/// A client that connects over TCP with the authkey (here from a child
/// process, as from another machine) works; a wrong key is refused both
/// ways and leaves the server serving.
#[test]
fn manager_over_tcp_needs_the_authkey() {
    let leaks = LeakCheck::start();
    let m = Manager::builder()
        .tasks(tasks)
        .tcp("127.0.0.1:0", b"sesame")
        .start()
        .unwrap();
    let addr = m.tcp_address().unwrap().to_string();
    let remote = m.client().named_dict::<String, u64>("remote").unwrap();
    let got = mproc::spawn(over_tcp, (addr.clone(), b"sesame".to_vec()))
        .join()
        .unwrap();
    assert_eq!(got, Ok(Some(10)));
    let wrong = mproc::spawn(over_tcp, (addr.clone(), b"guess".to_vec()))
        .join()
        .unwrap();
    assert!(
        matches!(&wrong, Err(e) if e.starts_with("Auth(")),
        "{wrong:?}"
    );
    // A TCP client handed to a child travels with its key.
    let client = Client::connect_tcp(addr.as_str(), b"sesame").unwrap();
    let d = client.named_dict::<String, u64>("remote").unwrap();
    let n = mproc::spawn(bump_calls, d).join().unwrap();
    assert_eq!(n, Some(11));
    assert_eq!(remote.get("calls").unwrap(), Some(11));
    // A peer that sends garbage instead of answering the challenge is
    // dropped; the server goes on.
    let mut junk = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut junk, &[0xff; 64]).unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut junk, &mut rest);
    assert!(rest.len() <= 41, "the server said more than its challenge");
    assert_eq!(remote.get("calls").unwrap(), Some(11));
    drop((m, remote, client, junk));
    leaks.assert_clean();
}

fn bump_calls(d: Dict<String, u64>) -> Option<u64> {
    d.update(&task!(add), "calls".into(), 1u64).unwrap()
}

/// A call bounded by a timeout on a server that does not answer (stopped)
/// returns `Timeout`, and the client works again once it answers.
#[test]
fn manager_call_timeout_bounds_a_call_to_a_stopped_server() {
    let leaks = LeakCheck::start();
    // Spawned, so that the server is our child and we can wait for its stop.
    let m = Manager::builder()
        .start_method(mproc::StartMethod::Spawn)
        .start()
        .unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    let pid = m.pid().unwrap() as i32;
    let quick = m.client().with_timeout(Duration::from_millis(300));
    let q = quick.named_dict::<u8, u8>("q").unwrap();
    // SAFETY: kill(2) of the server this test started, by its pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // The stop lands asynchronously: wait until the server has stopped
    // (waitid reports it without reaping).
    // SAFETY: waitid writes only the siginfo we pass; the pid is our child.
    let stopped = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WSTOPPED)
    };
    assert_eq!(stopped, 0, "{}", std::io::Error::last_os_error());
    let r = returns_within("a bounded call", Duration::from_secs(20), move || {
        let r = q.len();
        (r, q)
    });
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert!(matches!(r.0, Err(ManagerError::Timeout(_))), "{:?}", r.0);
    assert_eq!(r.1.len().unwrap(), 0);
    assert_eq!(d.len().unwrap(), 0);
    drop((m, d, quick, r));
    leaks.assert_clean();
}
