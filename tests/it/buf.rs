//! Zero-copy buffers across real processes: a `Buf` handed to a spawned
//! child and to pool workers as an argument, and made by a worker and
//! returned as a result — the same pages, never a copy — and a worker
//! killed while it holds one.

use std::time::Duration;

use mproc::pool::PoolError;
use mproc::sync::Event;
use mproc::{Buf, BufMut, Pool, StartMethod};
use mproc_tests::{returns_within, LeakCheck};

/// A buffer of `len` bytes, byte `i` = `i * 7 + seed` (mod 256).
fn pattern(len: usize, seed: u8) -> Buf {
    let mut b = BufMut::zeroed(len).unwrap();
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(7).wrapping_add(seed);
    }
    b.freeze().unwrap()
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// What a child sees of a buffer: its length, checksum, and a word view.
fn look(buf: Buf) -> (usize, u64, u64) {
    let words = buf.slice(..buf.len() / 8 * 8).unwrap();
    let first = words.cast::<u64>().unwrap().first().copied().unwrap_or(0);
    (buf.len(), checksum(&buf), first)
}

/// A worker makes a buffer and returns it: the parent maps the same pages.
fn make(len: usize, seed: u8) -> Buf {
    pattern(len, seed)
}

#[test]
fn a_buf_reaches_a_spawned_child_by_every_start_method_and_comes_back() {
    let leaks = LeakCheck::start();
    check_spawned();
    leaks.assert_clean();
}

fn check_spawned() {
    let buf = pattern(3 << 20, 5);
    let want = (buf.len(), checksum(&buf), buf.cast::<u64>().unwrap()[0]);
    for method in [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::Forkserver,
    ] {
        let h = mproc::process::Builder::new()
            .start_method(method)
            .spawn(look, buf.clone())
            .unwrap();
        assert_eq!(h.join().unwrap(), want, "{method:?}");
        // A slice travels as its range of the same file.
        let h = mproc::process::Builder::new()
            .start_method(method)
            .spawn(look, buf.slice(8..4104).unwrap())
            .unwrap();
        let part = buf.slice(8..4104).unwrap();
        assert_eq!(h.join().unwrap().1, checksum(&part), "{method:?}");
        // Made in the child, returned with its descriptor.
        let h = mproc::process::Builder::new()
            .start_method(method)
            .spawn(make, (5000, 2))
            .unwrap();
        assert_eq!(h.join().unwrap(), pattern(5000, 2), "{method:?}");
    }
}

#[test]
fn pool_workers_take_bufs_as_arguments_and_return_them_as_results() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(2).unwrap();
        let bufs: Vec<Buf> = (0..6)
            .map(|i| pattern(100_000 + i * 4096, i as u8))
            .collect();
        let want: Vec<_> = bufs
            .iter()
            .map(|b| (b.len(), checksum(b), b.cast::<u64>().unwrap()[0]))
            .collect();
        assert_eq!(pool.map_chunked(look, bufs.clone(), 2).unwrap(), want);
        // Made in a worker, frozen there, read here.
        let made = pool.apply(make, (1 << 20, 9)).unwrap();
        assert_eq!(made, pattern(1 << 20, 9));
        // Many at once, some chunks of several, through imap too.
        let made: Vec<Buf> = pool
            .map_chunked(make, (0..20).map(|i| (4096 * (i + 1), i as u8)), 3)
            .unwrap();
        for (i, b) in made.iter().enumerate() {
            assert_eq!(*b, pattern(4096 * (i + 1), i as u8), "buffer {i}");
        }
        let lens: Vec<usize> = pool
            .imap(make, (0..10).map(|i| (1000 + i, 1u8)))
            .map(|b| b.unwrap().len())
            .collect();
        assert_eq!(lens, (1000..1010).collect::<Vec<_>>());
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

/// Holds a buffer until `go` is set (never, here: the worker is killed).
fn hold(buf: Buf, started: Event, go: Event) -> u64 {
    started.set();
    let _ = go.wait_timeout(Duration::from_secs(60));
    checksum(&buf)
}

/// A worker SIGKILLed while it holds a buffer: the task fails, the buffer
/// is still whole here, and nothing is left behind (the pages go with the
/// last holder; no name, no descriptor, no process remains).
#[test]
fn a_worker_killed_while_holding_a_buf_leaks_nothing() {
    let leaks = LeakCheck::start();
    {
        let pool = Pool::new(1).unwrap();
        let buf = pattern(8 << 20, 3);
        let (started, go) = (Event::new().unwrap(), Event::new().unwrap());
        let r = pool
            .apply_async(hold, (buf.clone(), started.clone(), go.clone()))
            .unwrap();
        assert!(started.wait_timeout(Duration::from_secs(30)));
        let pid = pool.worker_pids()[0];
        assert!(r.cancel_even_if_running());
        assert_eq!(
            r.get_timeout(Duration::from_secs(30)),
            Err(PoolError::Cancelled)
        );
        assert_eq!(buf, pattern(8 << 20, 3));
        assert_eq!(pool.apply(look, buf.clone()).unwrap().1, checksum(&buf));
        assert!(!pool.worker_pids().contains(&pid));
        pool.close();
        returns_within("join", Duration::from_secs(20), move || pool.join()).unwrap();
    }
    leaks.assert_clean();
}

/// A child takes buffers from a queue (the parent's, and one whose
/// sender is the child itself), checks them, and sends a buffer of its own
/// back over a pipe together with a shared counter it was handed through
/// the same queue: handles travel through queues and pipes like values.
fn relay(
    q: mproc::Queue<(Buf, mproc::Value<u64>)>,
    back: mproc::Connection<Buf>,
    taken: Event,
) -> Result<u64, String> {
    let (buf, counter) = q.get().map_err(|e| e.to_string())?;
    counter.update(|c| *c += 1);
    let sum = checksum(&buf);
    back.send(pattern(3 << 20, 9)).map_err(|e| e.to_string())?;
    // The parent takes the buffer from this process: stay until it has.
    if !taken.wait_timeout(Duration::from_secs(60)) {
        return Err("the parent never took the buffer".into());
    }
    Ok(sum)
}

#[test]
fn bufs_and_handles_travel_through_queues_and_pipes() {
    let leaks = LeakCheck::start();
    {
        let q = mproc::Queue::new().unwrap();
        let (rx, tx) = mproc::Pipe::<Buf>::simplex().unwrap();
        let counter = mproc::Value::new(0u64).unwrap();
        let taken = Event::new().unwrap();
        let sent = pattern(5 << 20, 3);
        q.put((sent.clone(), counter.clone())).unwrap();
        assert_eq!(mproc::shm::handoff::pending(), 1);
        let child = mproc::spawn(relay, (q.clone(), tx, taken.clone()));
        let back = rx.recv().unwrap();
        taken.set();
        assert_eq!(child.join().unwrap(), Ok(checksum(&sent)));
        assert_eq!(counter.get(), 1, "the counter that crossed is the same");
        assert_eq!(
            (back.len(), checksum(&back)),
            (3 << 20, checksum(&pattern(3 << 20, 9)))
        );
        // Taken: the parent holds nothing for anyone any more.
        assert_eq!(mproc::shm::handoff::pending(), 0);

        // An item that is not put (the queue is closed) is not held either.
        q.close();
        assert!(q.put((sent.clone(), counter.clone())).is_err());
        assert_eq!(mproc::shm::handoff::pending(), 0);
    }
    leaks.assert_clean();
}

fn put_and_wait(q: mproc::Queue<Buf>, put: Event) {
    q.put(pattern(1 << 20, 5)).unwrap();
    put.set();
    loop {
        std::thread::park();
    }
}

/// The process that put a buffer is SIGKILLed before anyone takes it: the
/// taker gets a clear error (its handles went with their sender), within a
/// bound, and the queue goes on.
#[test]
fn a_buf_whose_sender_was_killed_is_a_clear_error_and_the_queue_goes_on() {
    let leaks = LeakCheck::start();
    {
        let q = mproc::Queue::<Buf>::new().unwrap();
        let put = Event::new().unwrap();
        let mut p = mproc::Process::new(put_and_wait, (q.clone(), put.clone()));
        p.start().unwrap();
        assert!(put.wait_timeout(Duration::from_secs(30)));
        p.kill().unwrap();
        p.join().unwrap();
        let q2 = q.clone();
        let got = returns_within("get", Duration::from_secs(20), move || q2.get());
        match got {
            Err(mproc::queue::GetError::Bad(mproc::queue::BadMessage::Handles(why))) => {
                assert!(why.contains("has ended"), "{why}")
            }
            other => panic!("{:?}", other.map(|b| b.len())),
        }
        q.put(pattern(100, 1)).unwrap();
        assert_eq!(checksum(&q.get().unwrap()), checksum(&pattern(100, 1)));
    }
    leaks.assert_clean();
}
