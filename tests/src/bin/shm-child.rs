//! Child roles for the mproc-shm cross-process tests. Each role is a
//! subcommand; handles arrive by inheritance (`MPROC_INHERITED_FDS` plus hex
//! transfer bytes in argv) or over an inherited socket with `SCM_RIGHTS`.

use std::io::BufRead;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use mproc::shm::{transfer, FileDoc, RawArray, RawValue, Segment, SharedMemory};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct Office {
    count: i64,
}

use mproc_tests::say as line;

fn wait_for_stdin_line() -> String {
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s).unwrap();
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        // Inherited (Segment, RawValue<u64>): write a greeting, count to 1000.
        "segment-write" => {
            let (seg, counter): (Segment, RawValue<u64>) = mproc_tests::inherited(arg(1));
            seg.write(0, format!("hello from {}", std::process::id()).as_bytes())
                .unwrap();
            for _ in 0..1000 {
                counter.set(counter.get() + 1);
            }
        }
        // An inherited socket; receive (RawArray<u32>, SharedMemory) over it,
        // double the array, stamp the block, reply with the sum.
        "scm-serve" => {
            let sock: UnixStream = {
                let SocketFd(fd) = mproc_tests::inherited(arg(1));
                UnixStream::from(fd)
            };
            let (arr, shm): (RawArray<u32>, SharedMemory) =
                transfer::decode(transfer::recv(&sock).unwrap()).unwrap();
            for i in 0..arr.len() {
                arr.set(i, arr.get(i).unwrap() * 2).unwrap();
            }
            shm.write(0, b"stamped").unwrap();
            let sum: u64 = arr.to_vec().iter().map(|&x| u64::from(x)).sum();
            transfer::send(&sock, &transfer::encode(&sum).unwrap()).unwrap();
        }
        "file-segment-write" => {
            let seg = Segment::open_file(arg(1)).unwrap();
            seg.atomic_u64(8)
                .unwrap()
                .fetch_add(5, std::sync::atomic::Ordering::SeqCst);
        }
        // Opens a named block, writes to it, drops it; exit 2 if it is absent.
        "shm-open-write" => match SharedMemory::open(arg(1)) {
            Ok(shm) => shm.write(0, b"child").unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ExitCode::from(2),
            Err(e) => panic!("open: {e}"),
        },
        // The ticket office, done right: query and buy under the lock.
        "buy-locked" => {
            let doc = FileDoc::<Office>::open(arg(1)).unwrap();
            let bought = doc
                .update(|o| {
                    if o.count > 0 {
                        o.count -= 1;
                        true
                    } else {
                        false
                    }
                })
                .unwrap();
            line(if bought { "bought" } else { "sold out" });
        }
        // The ticket office, done wrong: read, wait for the parent, write.
        "buy-naive" => {
            let path = arg(1);
            let office: Office = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            line(format!("read {}", office.count));
            wait_for_stdin_line();
            if office.count > 0 {
                let new = Office {
                    count: office.count - 1,
                };
                std::fs::write(path, serde_json::to_vec(&new).unwrap()).unwrap();
                line("bought");
            } else {
                line("sold out");
            }
        }
        // Blocks inside an update, holding the exclusive lock, until killed.
        "hang-in-update" => {
            let doc = FileDoc::<Office>::open(arg(1)).unwrap();
            doc.update(|o| {
                o.count = -1000;
                line("inside");
                wait_for_stdin_line();
            })
            .unwrap();
        }
        // Updates for ever, reporting each committed value, until killed.
        "update-forever" => {
            let doc = FileDoc::<Office>::open(arg(1)).unwrap();
            loop {
                let n = doc
                    .update(|o| {
                        o.count += 1;
                        o.count
                    })
                    .unwrap();
                line(n);
            }
        }
        // Prints the inode of every descriptor this process holds.
        "list-inodes" => {
            use std::os::unix::fs::MetadataExt;
            for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
                if let Ok(m) = std::fs::metadata(e.path()) {
                    line(m.ino());
                }
            }
        }
        other => {
            eprintln!("shm-child: unknown role {other:?}");
            return ExitCode::from(64);
        }
    }
    ExitCode::SUCCESS
}

/// A bare socket descriptor, carried like any handle.
struct SocketFd(OwnedFd);

impl<'de> Deserialize<'de> for SocketFd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SocketFd, D::Error> {
        let r = transfer::FdRef::deserialize(d)?;
        r.import().map(SocketFd).map_err(serde::de::Error::custom)
    }
}
