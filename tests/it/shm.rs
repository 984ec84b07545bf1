//! mproc-shm across real processes: handle transfer by inheritance and by
//! SCM_RIGHTS, file-backed and named segments, and the ticket office.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use mproc::shm::{transfer, DocError, FileDoc, RawArray, RawValue, Segment, SharedMemory};
use mproc_tests::{hex, signal, unique_name, LeakCheck, Lines, TempDir};
use serde::{Deserialize, Serialize};

const CHILD: &str = env!("CARGO_BIN_EXE_shm-child");

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Office {
    count: i64,
}

fn child(args: &[&str]) -> Command {
    let mut c = Command::new(CHILD);
    c.args(args);
    c
}

#[test]
fn segment_and_value_reach_a_spawned_child_by_inheritance() {
    let leaks = LeakCheck::start();
    let seg = Segment::anonymous(4096).unwrap();
    let counter = RawValue::new(0u64).unwrap();
    let msg = transfer::encode(&(seg.clone(), counter.clone())).unwrap();
    assert_eq!(msg.fds.len(), 2);
    let mut kid =
        transfer::spawn_inheriting(&mut child(&["segment-write", &hex(&msg.bytes)]), &msg.fds)
            .unwrap();
    drop(msg);
    let status = kid.wait().unwrap();
    assert!(status.success(), "{status}");

    let expected = format!("hello from {}", kid.id());
    let mut buf = vec![0u8; expected.len()];
    seg.read(0, &mut buf).unwrap();
    assert_eq!(String::from_utf8(buf).unwrap(), expected);
    assert_eq!(counter.get(), 1000);
    drop((seg, counter));
    leaks.assert_clean();
}

/// The inode behind one of our descriptors.
#[cfg(target_os = "linux")]
fn inode(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .ino()
}

#[cfg(target_os = "linux")]
#[test]
fn only_the_named_descriptors_are_inherited() {
    let leaks = LeakCheck::start();
    // A segment we do NOT hand over must stay close-on-exec.
    let private = Segment::anonymous(64).unwrap();
    let handed = Segment::anonymous(64).unwrap();
    let msg = transfer::encode(&handed).unwrap();
    let mut c = child(&["list-inodes"]);
    c.stdout(Stdio::piped());
    let kid = transfer::spawn_inheriting(&mut c, &msg.fds).unwrap();
    let out = kid.wait_with_output().unwrap();
    assert!(out.status.success());
    let seen: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        seen.contains(&inode(handed.as_fd())),
        "the handed segment is missing"
    );
    assert!(
        !seen.contains(&inode(private.as_fd())),
        "the private segment leaked into the child"
    );
    drop((msg, private, handed));
    leaks.assert_clean();
}

#[test]
fn handles_travel_to_a_running_child_over_scm_rights() {
    let leaks = LeakCheck::start();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let boot = transfer::encode(&SocketRef(&theirs)).unwrap();
    let mut kid =
        transfer::spawn_inheriting(&mut child(&["scm-serve", &hex(&boot.bytes)]), &boot.fds)
            .unwrap();
    drop((boot, theirs));

    // The child is running now; hand it an array and a named block.
    let arr = RawArray::<u32>::from_slice(&[1, 2, 3, 4]).unwrap();
    let shm = SharedMemory::create(&unique_name("mpt"), 64).unwrap();
    transfer::send(
        &ours,
        &transfer::encode(&(arr.clone(), shm.clone())).unwrap(),
    )
    .unwrap();
    let sum: u64 = transfer::decode(transfer::recv(&ours).unwrap()).unwrap();
    assert!(kid.wait().unwrap().success());

    assert_eq!(sum, 20);
    assert_eq!(arr.to_vec(), [2, 4, 6, 8]);
    let mut buf = [0u8; 7];
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"stamped");
    // The child's received copy did not unlink our name.
    assert!(SharedMemory::open(shm.name()).is_ok());
    drop((shm, arr, ours));
    leaks.assert_clean();
}

/// Serializes a socket's descriptor like any handle.
struct SocketRef<'a>(&'a UnixStream);

impl Serialize for SocketRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        transfer::FdRef::export(self.0.as_fd())
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

#[test]
fn file_backed_segment_is_shared_by_path() {
    let leaks = LeakCheck::start();
    let dir = TempDir::new("mpt-file");
    let path = dir.path().join("seg.bin");
    let seg = Segment::create_file(&path, 8192).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
    assert_eq!(
        Segment::create_file(&path, 10).unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );
    seg.atomic_u64(8)
        .unwrap()
        .store(10, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        assert!(child(&["file-segment-write", path.to_str().unwrap()])
            .status()
            .unwrap()
            .success());
    }
    assert_eq!(
        seg.atomic_u64(8)
            .unwrap()
            .load(std::sync::atomic::Ordering::SeqCst),
        25
    );
    seg.flush().unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(u64::from_ne_bytes(on_disk[8..16].try_into().unwrap()), 25);
    drop(seg);
    drop(dir);
    leaks.assert_clean();
}

#[test]
fn impossible_sizes_fail_at_creation_and_leave_nothing() {
    let leaks = LeakCheck::start();
    let dir = TempDir::new("mpt-big");
    let path = dir.path().join("huge.bin");
    // Far more than any disk or tmpfs here: an error now, never a SIGBUS later.
    assert!(Segment::create_file(&path, 1 << 52).is_err());
    assert!(!path.exists(), "a failed create must not leave the file");
    assert!(Segment::anonymous(1 << 52).is_err());
    drop(dir);
    leaks.assert_clean();
}

#[test]
fn named_block_is_unlinked_only_by_its_creator() {
    let leaks = LeakCheck::start();
    let name = unique_name("mpt");
    let created = SharedMemory::create(&name, 100).unwrap();
    assert_eq!(created.len(), 100);
    assert_eq!(
        SharedMemory::create(&name, 100).unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );

    let status = child(&["shm-open-write", &name]).status().unwrap();
    assert!(status.success(), "{status}");
    let mut buf = [0u8; 5];
    created.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"child");
    // The child's handle closed without unlinking.
    let reopened = SharedMemory::open(&name).unwrap();
    drop(reopened);

    let clone = created.clone();
    drop(created);
    assert!(
        SharedMemory::open(&name).is_ok(),
        "a live clone keeps the name"
    );
    drop(clone);
    assert_eq!(
        SharedMemory::open(&name).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    // A child that fails to open changes nothing.
    assert_eq!(
        child(&["shm-open-write", &name]).status().unwrap().code(),
        Some(2)
    );
    leaks.assert_clean();
}

#[test]
fn untracked_block_outlives_its_creator_until_unlinked() {
    let leaks = LeakCheck::start();
    let name = unique_name("mpt");
    let shm = SharedMemory::options()
        .track(false)
        .create(&name, 10)
        .unwrap();
    drop(shm);
    let again = SharedMemory::open(&name).unwrap();
    again.unlink().unwrap();
    again.unlink().unwrap();
    assert_eq!(
        SharedMemory::open(&name).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    drop(again);
    leaks.assert_clean();
}

fn office(dir: &TempDir, count: i64) -> (std::path::PathBuf, FileDoc<Office>) {
    let path = dir.path().join("tickets.json");
    let doc = FileDoc::create(&path, &Office { count }).unwrap();
    (path, doc)
}

#[test]
fn ticket_office_never_oversells_with_update() {
    let leaks = LeakCheck::start();
    let dir = TempDir::new("mpt-office");
    let (path, doc) = office(&dir, 3);
    let kids: Vec<_> = (0..6)
        .map(|_| {
            child(&["buy-locked", path.to_str().unwrap()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outcomes: Vec<String> = kids
        .into_iter()
        .map(|k| {
            let out = k.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "bought").count(),
        3,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "sold out").count(),
        3,
        "{outcomes:?}"
    );
    assert_eq!(doc.read().unwrap(), Office { count: 0 });
    doc.remove().unwrap();
    assert!(dir.entries().is_empty());
    drop(dir);
    leaks.assert_clean();
}

#[test]
fn ticket_office_oversells_without_the_lock() {
    let leaks = LeakCheck::start();
    let dir = TempDir::new("mpt-naive");
    let (path, doc) = office(&dir, 3);
    let mut kids: Vec<_> = (0..6)
        .map(|_| {
            child(&["buy-naive", path.to_str().unwrap()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut lines: Vec<Lines> = kids.iter_mut().map(Lines::of).collect();
    // Every buyer has queried the count before any of them buys.
    for l in &mut lines {
        assert_eq!(l.next_line().as_deref(), Some("read 3"));
    }
    for k in &mut kids {
        k.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let bought = lines
        .iter_mut()
        .map(|l| l.next_line())
        .filter(|l| l.as_deref() == Some("bought"))
        .count();
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    assert_eq!(
        bought, 6,
        "all six buyers think they bought one of three tickets"
    );
    assert_eq!(doc.read().unwrap(), Office { count: 2 });
    drop(lines);
    doc.remove().unwrap();
    drop(dir);
    leaks.assert_clean();
}

#[test]
fn buyer_killed_inside_update_leaves_the_old_document() {
    let leaks = LeakCheck::start();
    let dir = TempDir::new("mpt-kill");
    let (path, doc) = office(&dir, 3);
    let mut kid = child(&["hang-in-update", path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut kid);
    assert_eq!(lines.next_line().as_deref(), Some("inside"));
    signal(&kid, libc::SIGKILL).unwrap();
    let status = kid.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // The kernel released the dead writer's lock; its half-made change is gone.
    assert_eq!(doc.read().unwrap(), Office { count: 3 });
    assert!(doc.update(|o| o.count -= 1).is_ok());
    assert_eq!(doc.read().unwrap(), Office { count: 2 });
    drop(lines);
    doc.remove().unwrap();
    drop(dir);
    leaks.assert_clean();
}

#[test]
fn writer_killed_at_an_arbitrary_moment_never_tears_the_document() {
    let leaks = LeakCheck::start();
    let dir = TempDir::new("mpt-tear");
    let (path, doc) = office(&dir, 0);
    for round in 0..3 {
        let mut kid = child(&["update-forever", path.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Lines::of(&mut kid);
        let mut last = 0;
        for _ in 0..(50 + round * 37) {
            last = lines.next_line().unwrap().parse::<i64>().unwrap();
        }
        signal(&kid, libc::SIGKILL).unwrap();
        kid.wait().unwrap();
        // Whatever moment the kill hit, the file is a whole document: the last
        // reported one or at most a few commits later (output is behind).
        let now = FileDoc::<Office>::open(&path).unwrap().read().unwrap();
        assert!(now.count >= last, "{now:?} went back past {last}");
        let raw = std::fs::read(&path).unwrap();
        let parsed: Office = serde_json::from_slice(&raw).expect("document parses as whole JSON");
        assert_eq!(parsed, now);
    }
    doc.remove().unwrap();
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    drop(dir);
    leaks.assert_clean();
}

#[test]
fn corrupt_document_is_reported_and_kept() {
    let leaks = LeakCheck::start();
    let dir = TempDir::new("mpt-bad");
    let (path, doc) = office(&dir, 1);
    std::fs::write(&path, b"{\"count\": ").unwrap();
    match doc.read() {
        Err(DocError::Corrupt { message, .. }) => assert!(!message.is_empty()),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(doc.update(|o| o.count = 7).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"count\": ");
    doc.remove().unwrap();
    drop(dir);
    leaks.assert_clean();
}
