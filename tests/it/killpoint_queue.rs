//! Kill points of the ring: a child process SIGKILLs itself at a named step
//! of a put, a get or a close (`mproc::shm::fault::die_at`), and the test
//! checks that every survivor's blocking call returns within a second of
//! the death, that nothing published is lost, that nothing half-written is
//! delivered, and that the queue stays usable. `cargo xtask test` runs this
//! module on both wait layers (futex and portable).

use std::time::{Duration, Instant};

use mproc::queue::{GetError, PutError};
use mproc::shm::{fault, ProcessIdent, RawValue};
use mproc::sync::Event;
use mproc::{Process, Queue};
use mproc_tests::{blocked, dies, LeakCheck};

/// How soon after a death every survivor's blocking call must return.
const BOUND: Duration = Duration::from_secs(1);

type Q = Queue<Vec<u8>>;

fn msg(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag ^ (i as u8).wrapping_mul(7)).collect()
}

fn put_and_die((point, q, m): (String, Q, Vec<u8>)) {
    fault::die_at(&point).unwrap();
    q.put(m).unwrap();
}

fn get_and_die((point, q): (String, Q)) {
    fault::die_at(&point).unwrap();
    let _ = q.get();
}

fn close_and_die((point, q): (String, Q)) {
    fault::die_at(&point).unwrap();
    q.close();
}

/// Takes the put lock (announcing it on `taken`), waits for room, and dies
/// at `point`.
fn put_announced_and_die((point, q, m, taken): (String, Q, Vec<u8>, Event)) {
    fault::on("lock.taken", move || taken.set()).unwrap();
    fault::die_at(&point).unwrap();
    q.put(m).unwrap();
}

fn within_bound(returned: Instant, death: Instant, what: &str) {
    let late = returned.saturating_duration_since(death);
    assert!(late <= BOUND, "{what} returned {late:?} after the death");
}

#[test]
fn killpoint_producer_dead_after_publishing_before_waking() {
    let leaks = LeakCheck::start();
    {
        let q: Q = Queue::with_capacity_bytes(4096).unwrap();
        let getter = {
            let q = q.clone();
            blocked(move || q.get())
        };
        getter.asleep();
        let m = msg(1, 100);
        let death = dies(
            put_and_die,
            ("ring.tail-stored".into(), q.clone(), m.clone()),
        );
        let (got, at) = getter.finish();
        assert_eq!(got.unwrap(), m, "the published message is delivered");
        within_bound(at, death, "a get blocked before the death");
        // The dead producer held the put lock: the next put takes it over.
        q.put(msg(2, 10)).unwrap();
        assert_eq!(q.get().unwrap(), msg(2, 10));
        assert_eq!(q.stats().abandoned, 0);
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_producer_dead_half_way_through_a_streamed_message() {
    let leaks = LeakCheck::start();
    {
        let q: Q = Queue::with_capacity_bytes(4096).unwrap();
        let getter = {
            let q = q.clone();
            blocked(move || q.get())
        };
        getter.asleep();
        // 10 KiB through a 4 KiB ring: the first chunk is published, then
        // its writer dies. The reader waiting for the rest must give up on
        // it (never deliver it in part) and go on with the next message.
        let death = dies(
            put_and_die,
            ("ring.tail-stored".into(), q.clone(), msg(3, 10 << 10)),
        );
        let next = msg(4, 20);
        q.put(next.clone()).unwrap();
        let put_at = Instant::now();
        let (got, at) = getter.finish();
        assert_eq!(got.unwrap(), next, "nothing half-written is delivered");
        within_bound(at, death.max(put_at), "the blocked get");
        assert_eq!(q.stats().abandoned, 1);
        assert!(q.is_empty());
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_producer_dead_with_a_chunk_written_but_not_published() {
    let leaks = LeakCheck::start();
    {
        for len in [100, 10 << 10] {
            let q: Q = Queue::with_capacity_bytes(4096).unwrap();
            let getter = {
                let q = q.clone();
                blocked(move || q.get())
            };
            getter.asleep();
            dies(
                put_and_die,
                ("ring.chunk-written".into(), q.clone(), msg(5, len)),
            );
            assert_eq!(q.stats().bytes_queued, 0, "nothing was published");
            // The put lock is taken over from the dead producer.
            let next = msg(6, 30);
            q.put(next.clone()).unwrap();
            let put_at = Instant::now();
            let (got, at) = getter.finish();
            assert_eq!(got.unwrap(), next);
            within_bound(at, put_at, "the blocked get");
        }
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_consumer_dead_after_consuming_before_waking_producers() {
    let leaks = LeakCheck::start();
    {
        let q: Q = Queue::with_capacity_bytes(4096).unwrap();
        // Three 1 KiB messages fill the ring; a fourth put waits for room.
        let ms: Vec<Vec<u8>> = (0..4).map(|i| msg(10 + i, 1024)).collect();
        for m in &ms[..3] {
            q.put(m.clone()).unwrap();
        }
        let putter = {
            let (q, m) = (q.clone(), ms[3].clone());
            blocked(move || q.put(m))
        };
        putter.asleep();
        let death = dies(get_and_die, ("ring.head-stored".into(), q.clone()));
        let (put, at) = putter.finish();
        put.unwrap();
        within_bound(at, death, "the put waiting for room");
        // The dead consumer took the first message; the rest come in order.
        for m in &ms[1..] {
            assert_eq!(&q.get_timeout(BOUND).unwrap(), m);
        }
        assert_eq!(q.stats().abandoned, 0);
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_closer_dead_before_waking() {
    let leaks = LeakCheck::start();
    {
        let q: Q = Queue::with_capacity_bytes(4096).unwrap();
        let getter = {
            let q = q.clone();
            blocked(move || q.get())
        };
        getter.asleep();
        let full: Q = Queue::with_capacity_bytes(64).unwrap();
        full.put(msg(1, 40)).unwrap();
        let putter = {
            let full = full.clone();
            blocked(move || full.put(msg(2, 40)))
        };
        putter.asleep();
        let death = dies(close_and_die, ("ring.closed".into(), q.clone()));
        let death2 = dies(close_and_die, ("ring.closed".into(), full.clone()));
        let (got, at) = getter.finish();
        assert_eq!(got, Err(GetError::Closed));
        within_bound(at, death, "a get blocked before the close");
        let (put, at) = putter.finish();
        assert!(matches!(put, Err(PutError::Closed(_))));
        within_bound(at, death2, "a put blocked before the close");
        // A closed queue drains first.
        assert_eq!(full.get().unwrap(), msg(1, 40));
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_consumer_dead_holding_the_get_lock() {
    let leaks = LeakCheck::start();
    {
        let q: Q = Queue::with_capacity_bytes(4096).unwrap();
        dies(get_and_die, ("lock.taken".into(), q.clone()));
        // A timeout far below the lock's probe interval still takes over.
        q.put(msg(7, 8)).unwrap();
        assert_eq!(q.get_timeout(Duration::from_millis(1)).unwrap(), msg(7, 8));
        // And a get blocked on the dead holder's lock is released.
        dies(get_and_die, ("lock.taken".into(), q.clone()));
        let getter = {
            let q = q.clone();
            blocked(move || q.get())
        };
        getter.asleep();
        q.put(msg(8, 8)).unwrap();
        let put_at = Instant::now();
        let (got, at) = getter.finish();
        assert_eq!(got.unwrap(), msg(8, 8));
        within_bound(at, put_at, "a get waiting for a dead holder's lock");
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_producer_dead_before_releasing_the_put_lock() {
    let leaks = LeakCheck::start();
    {
        let q: Q = Queue::with_capacity_bytes(4096).unwrap();
        let m = msg(9, 500);
        let death = dies(
            put_and_die,
            ("lock.before-release".into(), q.clone(), m.clone()),
        );
        // Published before the death: delivered.
        assert_eq!(q.get_timeout(BOUND).unwrap(), m);
        let putter = {
            let q = q.clone();
            blocked(move || q.put(msg(10, 5)))
        };
        let (put, at) = putter.finish();
        put.unwrap();
        within_bound(at, death, "the next put");
        assert_eq!(q.get().unwrap(), msg(10, 5));
    }
    leaks.assert_clean();
}

#[test]
fn killpoint_producer_dead_before_waking_the_next_producer() {
    let leaks = LeakCheck::start();
    {
        let q: Q = Queue::with_capacity_bytes(4096).unwrap();
        let ms: Vec<Vec<u8>> = (0..5).map(|i| msg(20 + i, 1024)).collect();
        for m in &ms[..3] {
            q.put(m.clone()).unwrap();
        }
        // The child takes the put lock and waits for room for the fourth.
        let taken = Event::new().unwrap();
        let mut child = Process::new(
            put_announced_and_die,
            (
                "lock.before-wake".to_string(),
                q.clone(),
                ms[3].clone(),
                taken.clone(),
            ),
        );
        child.start().unwrap();
        assert!(taken.wait_timeout(Duration::from_secs(20)));
        // We wait for the put lock behind it.
        let putter = {
            let (q, m) = (q.clone(), ms[4].clone());
            blocked(move || q.put(m))
        };
        putter.asleep();
        // Room for the child's message: it puts, releases the lock, and
        // dies before waking us.
        assert_eq!(q.get().unwrap(), ms[0]);
        child.join().unwrap();
        assert_eq!(child.exitcode(), Some(-9));
        let death = Instant::now();
        // Room for ours too, once we hold the lock.
        assert_eq!(q.get_timeout(BOUND).unwrap(), ms[1]);
        let (put, at) = putter.finish();
        put.unwrap();
        within_bound(at, death, "the put waiting for the lock");
        for m in &ms[2..] {
            assert_eq!(&q.get_timeout(BOUND).unwrap(), m);
        }
    }
    leaks.assert_clean();
}

/// The producer of the wave-1 loss: announces its pid, publishes its first
/// chunk, and with its second (last) chunk written but not yet published
/// waits until the consumer is inside its writer probe.
fn stream_then_exit((q, m, pid, probing): (Q, Vec<u8>, RawValue<u32>, Event)) {
    pid.set(std::process::id());
    let chunks = std::sync::atomic::AtomicU32::new(0);
    fault::on("ring.chunk-written", move || {
        if chunks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            probing.wait_timeout(Duration::from_secs(5));
        }
    })
    .unwrap();
    q.put(m).unwrap();
}

/// The consumer of the wave-1 loss: inside its writer probe, it waits until
/// the producer has published the rest and exited.
fn get_slowly_probing((q, pid, probing, out): (Q, RawValue<u32>, Event, Queue<Option<Vec<u8>>>)) {
    fault::on("ring.writer-probed", move || {
        probing.set();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ProcessIdent::of(pid.get()).is_some() && Instant::now() < deadline {
            std::thread::yield_now();
        }
    })
    .unwrap();
    out.put(q.get().ok()).unwrap();
}

#[test]
fn killpoint_last_message_of_a_producer_that_exits_at_once_is_not_lost() {
    let leaks = LeakCheck::start();
    {
        // A 3 KiB message through a 4 KiB ring: two chunks. The consumer
        // reads the first, finds the ring empty, and probes the writer; in
        // that moment the writer publishes the last chunk and exits. Wave 1
        // looked for more chunks *before* probing the writer, found it dead,
        // and dropped the message.
        let q: Q = Queue::with_capacity_bytes(4096).unwrap();
        let out: Queue<Option<Vec<u8>>> = Queue::new().unwrap();
        let pid = RawValue::new(0u32).unwrap();
        let probing = Event::new().unwrap();
        let mut consumer = Process::new(
            get_slowly_probing,
            (q.clone(), pid.clone(), probing.clone(), out.clone()),
        );
        consumer.start().unwrap();
        let m = msg(30, 3 << 10);
        let mut producer = Process::new(stream_then_exit, (q.clone(), m.clone(), pid, probing));
        producer.start().unwrap();
        producer.join().unwrap();
        assert_eq!(producer.exitcode(), Some(0));
        // Unblocks a consumer that lost the message (so the test fails
        // instead of hanging).
        let got = out.get_timeout(Duration::from_secs(10)).ok().flatten();
        q.close();
        consumer.join().unwrap();
        assert!(
            got.as_ref() == Some(&m),
            "the producer's last message was lost (got {:?} bytes)",
            got.map(|g| g.len())
        );
        assert_eq!(q.stats().abandoned, 0);
    }
    leaks.assert_clean();
}
