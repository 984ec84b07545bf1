//! mproc-queue across real processes: every message exactly once and in
//! order per producer, CPython's queue scenarios, pipes, and processes
//! killed in the middle of puts and gets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mproc::queue::{
    BadMessage, GetError, GetTimeoutError, PutError, RecvError, RecvTimeoutError, SendError,
    TryGetError, TryPutError,
};
use mproc::shm::{transfer, Segment};
use mproc::sync::Event;
use mproc::{JoinableQueue, Pipe, Process, Queue, SimpleQueue};
use mproc_tests::LeakCheck;
use serde::{Deserialize, Serialize};

/// A message that proves its own integrity.
#[derive(Serialize, Deserialize, Debug)]
struct Msg {
    producer: u32,
    seq: u32,
    data: Vec<u8>,
    sum: u64,
}

fn checksum(producer: u32, seq: u32, data: &[u8]) -> u64 {
    data.iter()
        .fold(u64::from(producer) << 32 | u64::from(seq), |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

fn make(producer: u32, seq: u32, size: usize) -> Msg {
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq ^ producer) as u8)
        .collect();
    let sum = checksum(producer, seq, &data);
    Msg {
        producer,
        seq,
        data,
        sum,
    }
}

fn produce(args: (Queue<Msg>, u32, u32, usize)) {
    let (q, producer, count, size) = args;
    for seq in 0..count {
        q.put(make(producer, seq, size)).expect("put");
    }
}

/// What a consumer saw: (producer, seq, intact) of every message, in the
/// order it got them.
type Seen = Vec<(u32, u32, bool)>;

/// Drains until the queue is closed; reports what it saw.
fn consume(args: (Queue<Msg>, Queue<Seen>)) {
    let (q, results) = args;
    let mut got = Vec::new();
    loop {
        match q.get() {
            Ok(m) => {
                let intact = m.sum == checksum(m.producer, m.seq, &m.data);
                got.push((m.producer, m.seq, intact));
            }
            Err(GetError::Closed) => break,
            Err(e) => panic!("get: {e}"),
        }
    }
    results.put(got).expect("report");
}

/// `producers` × `consumers` over a 4 KiB ring, items from 0 B to 4 × the
/// ring: every message arrives exactly once, in order per producer.
fn exactly_once_in_order_per_producer(producers: u32, consumers: u32) {
    let leaks = LeakCheck::start();
    {
        const RING: usize = 4096;
        for size in [0, 8, 1024, RING - 1, RING, 4 * RING] {
            let count = if size > RING { 20 } else { 100 };
            let q: Queue<Msg> = Queue::with_capacity_bytes(RING).unwrap();
            let results: Queue<Seen> = Queue::new().unwrap();
            let mut cs: Vec<Process> = (0..consumers)
                .map(|_| Process::new(consume, (q.clone(), results.clone())))
                .collect();
            let mut ps: Vec<Process> = (0..producers)
                .map(|id| Process::new(produce, (q.clone(), id, count, size)))
                .collect();
            for p in cs.iter_mut().chain(ps.iter_mut()) {
                p.start().unwrap();
            }
            for p in &ps {
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(0));
            }
            q.close();
            let mut seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for _ in 0..consumers {
                for (producer, seq, intact) in results.get().unwrap() {
                    assert!(
                        intact,
                        "{producers}x{consumers} size {size}: corrupt message"
                    );
                    seen.entry(producer).or_default().push(seq);
                }
            }
            for c in &cs {
                c.join().unwrap();
                assert_eq!(c.exitcode(), Some(0));
            }
            assert_eq!(seen.len(), producers as usize);
            for (producer, mut seqs) in seen {
                // Each consumer saw one producer's items in order; together
                // they saw each exactly once.
                let n = seqs.len();
                seqs.sort_unstable();
                seqs.dedup();
                assert_eq!(seqs.len(), n, "producer {producer}: a duplicate");
                assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "producer {producer}");
            }
            assert_eq!(q.stats().abandoned, 0);
        }
    }
    leaks.assert_clean();
}

#[test]
fn every_message_arrives_exactly_once_in_order_1_producer_1_consumer() {
    exactly_once_in_order_per_producer(1, 1);
}

#[test]
fn every_message_arrives_exactly_once_in_order_2_producers_2_consumers() {
    exactly_once_in_order_per_producer(2, 2);
}

#[test]
fn every_message_arrives_exactly_once_in_order_4_producers_1_consumer() {
    exactly_once_in_order_per_producer(4, 1);
}

#[test]
fn every_message_arrives_exactly_once_in_order_1_producer_4_consumers() {
    exactly_once_in_order_per_producer(1, 4);
}

#[test]
fn every_message_arrives_exactly_once_in_order_4_producers_4_consumers() {
    exactly_once_in_order_per_producer(4, 4);
}

#[test]
fn one_consumer_sees_each_producer_in_order() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<Msg> = Queue::with_capacity_bytes(1024).unwrap();
        let mut ps: Vec<Process> = (0..3)
            .map(|id| Process::new(produce, (q.clone(), id, 300, 24)))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        let mut next = [0u32; 3];
        for _ in 0..900 {
            let m = q.get().unwrap();
            assert_eq!(m.seq, next[m.producer as usize], "FIFO per producer");
            next[m.producer as usize] += 1;
        }
        for p in &ps {
            p.join().unwrap();
        }
        assert!(q.is_empty());
    }
    leaks.assert_clean();
}

#[test]
fn timeouts_len_and_close_follow_cpython() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<u32> = Queue::bounded(2).unwrap();
        let start = Instant::now();
        assert_eq!(
            q.get_timeout(Duration::from_millis(100)),
            Err(GetTimeoutError::Timeout)
        );
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(q.try_get(), Err(TryGetError::Empty));

        q.put(1).unwrap();
        q.put(2).unwrap();
        assert_eq!((q.len(), q.is_full()), (2, true));
        let start = Instant::now();
        assert_eq!(
            q.put_timeout(3, Duration::from_millis(100)),
            Err(TryPutError::Full(3))
        );
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(q.try_put(3), Err(TryPutError::Full(3)));
        assert_eq!(q.get().unwrap(), 1);
        assert_eq!(q.len(), 1);

        q.close();
        q.close(); // idempotent
        assert!(matches!(q.put(4), Err(PutError::Closed(4))));
        assert_eq!(q.get().unwrap(), 2, "a closed queue drains first");
        assert_eq!(q.get(), Err(GetError::Closed));
        assert_eq!(
            q.get_timeout(Duration::from_secs(10)),
            Err(GetTimeoutError::Closed)
        );
        assert!(Queue::<u32>::bounded(0).is_err());
    }
    leaks.assert_clean();
}

fn wait_then_close(args: (Event, Queue<u32>)) {
    args.0.wait();
    args.1.close();
}

#[test]
fn close_wakes_a_blocked_get_in_another_process() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<u32> = Queue::new().unwrap();
        let go = Event::new().unwrap();
        let mut p = Process::new(wait_then_close, (go.clone(), q.clone()));
        p.start().unwrap();
        go.set();
        assert_eq!(q.get(), Err(GetError::Closed));
        p.join().unwrap();
    }
    leaks.assert_clean();
}

fn put_many(q: Queue<Vec<u8>>) {
    for i in 0..10_000u32 {
        let mut item = vec![0u8; 1024];
        item[..4].copy_from_slice(&i.to_le_bytes());
        q.put(item).unwrap();
    }
}

#[test]
fn a_child_that_puts_and_returns_loses_nothing() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        let mut p = Process::new(put_many, q.clone());
        p.start().unwrap();
        for i in 0..10_000u32 {
            let item = q.get().unwrap();
            assert_eq!((item.len(), &item[..4]), (1024, &i.to_le_bytes()[..]));
        }
        // No feeder thread to flush: the child is done once its last put is.
        p.join_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(q.is_empty());
    }
    leaks.assert_clean();
}

fn put_huge(args: (Queue<Vec<u8>>, usize)) {
    let (q, size) = args;
    let item: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    q.put(item).unwrap();
}

#[test]
fn an_item_a_thousand_rings_long_streams_through() {
    let leaks = LeakCheck::start();
    {
        // 16 MiB through a 16 KiB ring: a thousand laps, and seconds even in
        // an unoptimised build on a loaded machine.
        let q: Queue<Vec<u8>> = Queue::with_capacity_bytes(16 << 10).unwrap();
        let size = 16 << 20;
        let mut p = Process::new(put_huge, (q.clone(), size));
        p.start().unwrap();
        let item = q.get().unwrap();
        assert_eq!(item.len(), size);
        assert!(item.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    leaks.assert_clean();
}

fn worker(args: (JoinableQueue<u64>, Queue<u64>)) {
    let (jobs, done) = args;
    loop {
        let n = jobs.get().unwrap();
        done.put(n * n).unwrap();
        jobs.task_done().unwrap();
    }
}

#[test]
fn joinable_queue_join_waits_for_every_task_done() {
    let leaks = LeakCheck::start();
    {
        let jobs: JoinableQueue<u64> = JoinableQueue::new().unwrap();
        let done: Queue<u64> = Queue::new().unwrap();
        let mut workers: Vec<Process> = (0..2)
            .map(|_| Process::new(worker, (jobs.clone(), done.clone())).daemon(true))
            .collect();
        for w in &mut workers {
            w.start().unwrap();
        }
        for n in 0..50 {
            jobs.put(n).unwrap();
        }
        jobs.join();
        // Every task was marked done after its result was put.
        assert_eq!(done.len(), 50);
        assert_eq!(jobs.unfinished(), 0);
        let mut squares: Vec<u64> = (0..50).map(|_| done.get().unwrap()).collect();
        squares.sort_unstable();
        assert_eq!(squares, (0..50u64).map(|n| n * n).collect::<Vec<_>>());
        assert!(jobs.task_done().is_err(), "more task_done than items");
        assert_eq!(jobs.unfinished(), 0, "the count never underflows");
        for w in &workers {
            w.terminate().unwrap();
            w.join().unwrap();
        }
    }
    leaks.assert_clean();
}

#[test]
fn attaching_as_the_wrong_type_or_kind_is_an_error() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<u32> = Queue::new().unwrap();
        let err = transfer::decode::<Queue<String>>(transfer::encode(&q).unwrap()).unwrap_err();
        assert!(err.to_string().contains("another item type"), "{err}");
        let jq: JoinableQueue<u32> = JoinableQueue::new().unwrap();
        let err = transfer::decode::<Queue<u32>>(transfer::encode(&jq).unwrap()).unwrap_err();
        assert!(err.to_string().contains("JoinableQueue"), "{err}");
        let seg = Segment::anonymous(8192).unwrap();
        let err = transfer::decode::<Queue<u32>>(transfer::encode(&seg).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("does not hold an mproc queue"),
            "{err}"
        );
        // The right type attaches and works.
        let again: Queue<u32> = transfer::decode(transfer::encode(&q).unwrap()).unwrap();
        again.put(5).unwrap();
        assert_eq!(q.get().unwrap(), 5);
    }
    leaks.assert_clean();
}

/// The queue's segment, seen raw (a Queue serializes as its segment).
fn raw_segment<T>(q: &Queue<T>) -> Segment {
    transfer::decode(transfer::encode(q).unwrap()).unwrap()
}

#[test]
fn corrupt_frames_are_reported_and_the_queue_goes_on() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<u64> = Queue::new().unwrap();
        let raw = raw_segment(&q);
        let flip = |at: usize, bit: u8| {
            let mut b = [0u8];
            raw.read(at, &mut b).unwrap();
            raw.write(at, &[b[0] ^ (1 << bit)]).unwrap();
        };
        // Each round: a 16-byte chunk (8-byte header, a 1-byte item, padding)
        // with one header bit flipped, then a good one: 32 bytes of ring.
        for (round, bit) in [0usize, 3, 17, 30, 45, 63].into_iter().enumerate() {
            q.put(7).unwrap();
            flip(4096 + 32 * round + bit / 8, (bit % 8) as u8);
            assert!(
                matches!(q.get(), Err(GetError::Bad(BadMessage::Corrupt(_)))),
                "bit {bit}"
            );
            q.put(8).unwrap();
            assert_eq!(q.get().unwrap(), 8, "the queue goes on");
        }
        assert_eq!(q.stats().abandoned, 6);

        // A payload that is not the item type is a decode error, not a panic.
        let q: Queue<bool> = Queue::new().unwrap();
        let raw = raw_segment(&q);
        q.put(true).unwrap();
        raw.write(4096 + 8, &[5]).unwrap();
        assert!(matches!(q.get(), Err(GetError::Bad(BadMessage::Decode(_)))));
        q.put(false).unwrap();
        assert!(!q.get().unwrap());
    }
    leaks.assert_clean();
}

fn announce_and_put_huge(args: (Event, Queue<Vec<u8>>)) {
    let (ready, q) = args;
    ready.set();
    // 4 MiB through a 64 KiB ring with nobody reading: blocks mid-put.
    q.put(vec![1u8; 4 << 20]).unwrap();
}

fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill touches no memory; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} never happened"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_producer_killed_mid_put_exposes_nothing_and_blocks_nobody() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<Vec<u8>> = Queue::with_capacity_bytes(64 << 10).unwrap();
        let ready = Event::new().unwrap();
        let mut p = Process::new(announce_and_put_huge, (ready.clone(), q.clone()));
        p.start().unwrap();
        ready.wait();
        // Chunks of the item are in the ring: the producer is mid-put.
        wait_until("the first chunk", || q.stats().bytes_queued > 0);
        p.kill().unwrap();
        p.join().unwrap();
        // A consumer reads what was published, finds the writer dead, drops
        // the partial item and waits for the next whole one...
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || q.get())
        };
        // ...which another producer puts: it takes over the put lock of the
        // dead one.
        q.put(b"after".to_vec()).unwrap();
        assert_eq!(consumer.join().unwrap().unwrap(), b"after");
        assert_eq!(q.stats().abandoned, 1);
        assert!(q.is_empty());
    }
    leaks.assert_clean();
}

fn announce_and_get(args: (Event, Queue<Vec<u8>>)) {
    let (ready, q) = args;
    ready.set();
    let _ = q.get();
}

#[test]
fn a_consumer_killed_while_blocked_in_get_leaves_the_queue_usable() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        let ready = Event::new().unwrap();
        let mut c = Process::new(announce_and_get, (ready.clone(), q.clone()));
        c.start().unwrap();
        ready.wait();
        c.kill().unwrap();
        c.join().unwrap();
        q.put(b"x".to_vec()).unwrap();
        assert_eq!(
            q.get_timeout(Duration::from_secs(10)).unwrap(),
            b"x",
            "the get lock of the dead consumer is taken over"
        );
    }
    leaks.assert_clean();
}

fn put_huge_then(args: (Queue<Vec<u8>>, usize)) {
    let (q, size) = args;
    q.put(vec![2u8; size]).unwrap();
    q.put(b"next".to_vec()).unwrap();
}

#[test]
fn a_consumer_killed_mid_get_loses_that_item_counted_and_nothing_else() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<Vec<u8>> = Queue::with_capacity_bytes(64 << 10).unwrap();
        let ready = Event::new().unwrap();
        let mut producer = Process::new(put_huge_then, (q.clone(), 4 << 20));
        let mut consumer = Process::new(announce_and_get, (ready.clone(), q.clone()));
        // With nobody reading, the producer fills the ring and waits for
        // room in the middle of its 4 MiB item; freeze it there.
        producer.start().unwrap();
        let pid = producer.pid().unwrap();
        wait_until("a full ring", || q.stats().bytes_queued > 60 << 10);
        mproc_tests::stop_process(pid);
        // The consumer takes everything published: it is now in the middle
        // of its get, waiting for the rest.
        consumer.start().unwrap();
        ready.wait();
        wait_until("the consumer to drain", || q.stats().bytes_queued == 0);
        consumer.kill().unwrap();
        consumer.join().unwrap();
        kill(pid, libc::SIGCONT);
        // The rest of the item is skipped; the next item arrives whole.
        assert_eq!(q.get().unwrap(), b"next");
        assert_eq!(q.stats().abandoned, 1);
        producer.join().unwrap();
        assert_eq!(producer.exitcode(), Some(0));
    }
    leaks.assert_clean();
}

fn bad_item_in_child(q: Queue<Unencodable>) -> Result<(), String> {
    match q.put(Unencodable) {
        Err(PutError::Encode(e)) => Err(e.message),
        other => Err(format!("unexpected {other:?}")),
    }
}

/// An item whose serialization always fails.
#[derive(Debug, Deserialize, PartialEq)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this item refuses"))
    }
}

#[test]
fn a_serialization_error_reaches_the_putter() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<Unencodable> = Queue::new().unwrap();
        match q.put(Unencodable) {
            Err(PutError::Encode(e)) => assert_eq!(e.value, Unencodable),
            other => panic!("{other:?}"),
        }
        // In a child too: its exit code says the put failed.
        let mut p = Process::new(bad_item_in_child, q.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(1));
        assert!(q.is_empty());
        // A handle inside an item travels (its descriptor handed off by
        // the sender): the segment taken maps the same memory.
        let segs: Queue<Segment> = Queue::new().unwrap();
        let seg = Segment::anonymous(64).unwrap();
        segs.put(seg.clone()).unwrap();
        let got = segs.get().unwrap();
        seg.write(8, b"shared").unwrap();
        let mut back = [0u8; 6];
        got.read(8, &mut back).unwrap();
        assert_eq!(&back, b"shared");
    }
    leaks.assert_clean();
}

#[test]
fn simple_queue_between_processes() {
    let leaks = LeakCheck::start();
    {
        let q: SimpleQueue<String> = SimpleQueue::new().unwrap();
        let mut p = Process::new(greet_back, q.clone());
        p.start().unwrap();
        p.join().unwrap();
        assert!(!q.is_empty());
        assert_eq!(q.get().unwrap(), "hello from a child");
        q.close();
        assert_eq!(q.get(), Err(GetError::Closed));
    }
    leaks.assert_clean();
}

fn greet_back(q: SimpleQueue<String>) {
    q.put("hello from a child".into()).unwrap();
}

fn echo(conn: mproc::Connection<u64>) {
    while let Ok(n) = conn.recv() {
        if conn.send(n + 1).is_err() {
            break;
        }
    }
}

#[test]
fn pipe_round_trips_and_sees_its_peer_go() {
    let leaks = LeakCheck::start();
    {
        let (ours, theirs) = Pipe::<u64>::duplex().unwrap();
        let mut p = Process::new(echo, theirs);
        p.start().unwrap(); // our copy of their end is gone with the target
        for n in 0..1000 {
            ours.send(n).unwrap();
            assert_eq!(ours.recv().unwrap(), n + 1);
        }
        assert!(!ours.poll(Duration::ZERO));
        p.kill().unwrap();
        p.join().unwrap();
        // Its process died: recv reports it instead of hanging.
        assert_eq!(ours.recv(), Err(RecvError::Disconnected));
        assert_eq!(
            ours.recv_timeout(Duration::from_secs(10)),
            Err(RecvTimeoutError::Disconnected)
        );
        assert!(ours.poll(Duration::ZERO), "poll says recv would not block");
        assert!(matches!(ours.send(1), Err(SendError::Disconnected(1))));
    }
    leaks.assert_clean();
}

fn send_then_close(args: (mproc::Connection<String>, usize)) {
    let (conn, n) = args;
    for i in 0..n {
        conn.send(format!("message {i}")).unwrap();
    }
    conn.close();
}

#[test]
fn a_simplex_pipe_drains_before_it_reports_disconnected() {
    let leaks = LeakCheck::start();
    {
        let (rx, tx) = Pipe::<String>::simplex().unwrap();
        let mut p = Process::new(send_then_close, (tx, 3));
        p.start().unwrap();
        p.join().unwrap();
        for i in 0..3 {
            assert_eq!(rx.recv().unwrap(), format!("message {i}"));
        }
        assert_eq!(rx.recv(), Err(RecvError::Disconnected));
        assert!(matches!(
            rx.send("no".into()),
            Err(SendError::NotWritable(_))
        ));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(RecvTimeoutError::Disconnected)
        );
    }
    leaks.assert_clean();
}

fn bytes_back(conn: mproc::Connection<()>) {
    let mut buf = Vec::new();
    while let Ok(n) = conn.recv_bytes_into(&mut buf) {
        assert_eq!(n, buf.len());
        if conn.send_bytes(&buf).is_err() {
            break;
        }
    }
}

#[test]
fn pipe_bytes_of_any_size_including_zero_and_64_mib() {
    let leaks = LeakCheck::start();
    {
        let (ours, theirs) = Pipe::<()>::duplex().unwrap();
        let mut p = Process::new(bytes_back, theirs);
        p.start().unwrap();
        for size in [0, 1, 1000, mproc::queue::PIPE_CAPACITY, 64 << 20] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            ours.send_bytes(&data).unwrap();
            assert!(ours.poll(Duration::from_secs(20)));
            assert_eq!(ours.recv_bytes().unwrap(), data, "size {size}");
        }
        drop(ours);
        p.join().unwrap();
        assert_eq!(
            p.exitcode(),
            Some(0),
            "the child saw Disconnected and returned"
        );
    }
    leaks.assert_clean();
}

fn put_tagged(args: (Queue<Vec<u8>>, Vec<u8>)) {
    args.0.put(args.1).unwrap();
}

#[test]
fn a_reader_past_its_deadline_gives_a_stopped_writers_message_back_and_loses_nothing() {
    let leaks = LeakCheck::start();
    {
        // 64 KiB through a 4 KiB ring. The writer fills the ring and is
        // stopped (SIGSTOP) waiting for room, mid-message.
        let q: Queue<Vec<u8>> = Queue::with_capacity_bytes(4096).unwrap();
        let big: Vec<u8> = (0..64 << 10).map(|i| (i * 13 % 251) as u8).collect();
        let mut writer = Process::new(put_tagged, (q.clone(), big.clone()));
        writer.start().unwrap();
        let pid = writer.pid().unwrap();
        wait_until("a full ring", || q.stats().bytes_queued > 3000);
        mproc_tests::stop_process(pid);
        // The reader takes the first chunks, then waits for the rest. Its
        // deadline holds (wave 1 waited for as long as the writer lived,
        // holding the get lock, so every other reader timed out too).
        let start = Instant::now();
        assert_eq!(
            q.get_timeout(Duration::from_millis(200)),
            Err(GetTimeoutError::Timeout)
        );
        let waited = start.elapsed();
        assert!(waited < Duration::from_secs(3), "waited {waited:?}");
        let other = {
            let q = q.clone();
            std::thread::spawn(move || q.get_timeout(Duration::from_millis(50)))
        };
        assert_eq!(other.join().unwrap(), Err(GetTimeoutError::Timeout));
        // The writer goes on, sees the message given back, and sends it
        // again from its start: it arrives whole, once.
        kill(pid, libc::SIGCONT);
        assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap(), big);
        writer.join().unwrap();
        assert_eq!(writer.exitcode(), Some(0));
        assert_eq!(q.try_get(), Err(TryGetError::Empty));
        assert_eq!(q.stats().abandoned, 0);
    }
    leaks.assert_clean();
}

fn send_count(args: (mproc::Connection<u64>, u64)) {
    for i in 0..args.1 {
        args.0.send(i).unwrap();
    }
}

#[test]
fn pollers_racing_recv_on_one_end_never_make_it_read_a_stale_lap() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let leaks = LeakCheck::start();
    {
        // Small items through the 256 KiB ring: it wraps every 16,384 items,
        // so a chunk one lap old is always there to be misread.
        const N: u64 = 200_000;
        let (rx, tx) = Pipe::<u64>::simplex().unwrap();
        let mut sender = Process::new(send_count, (tx.clone(), N));
        sender.start().unwrap();
        drop(tx);
        let stop = Arc::new(AtomicBool::new(false));
        let pollers: Vec<_> = (0..3)
            .map(|_| {
                let (rx, stop) = (rx.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        rx.poll(Duration::ZERO);
                    }
                })
            })
            .collect();
        for i in 0..N {
            assert_eq!(rx.recv().unwrap(), i, "a stale or lost item");
        }
        stop.store(true, Ordering::Relaxed);
        for p in pollers {
            p.join().unwrap();
        }
        sender.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    }
    leaks.assert_clean();
}

fn forward_until_closed(args: (Queue<u64>, Queue<Option<u64>>)) {
    let (q, out) = args;
    for item in &q {
        out.put(item.ok()).unwrap();
    }
    out.close();
}

#[test]
fn a_consumer_iterates_until_close_and_a_corrupt_message_is_an_item_not_the_end() {
    let leaks = LeakCheck::start();
    {
        let q: Queue<u64> = Queue::new().unwrap();
        let out: Queue<Option<u64>> = Queue::new().unwrap();
        q.put(1).unwrap();
        q.put(1000).unwrap();
        // Flip a bit of the second message's header check word.
        let seg = raw_segment(&q);
        let mut b = [0u8; 1];
        seg.read(4096 + 16 + 4, &mut b).unwrap();
        seg.write(4096 + 16 + 4, &[b[0] ^ 1]).unwrap();
        let mut consumer = Process::new(forward_until_closed, (q.clone(), out.clone()));
        consumer.start().unwrap();
        assert_eq!(out.get().unwrap(), Some(1));
        assert_eq!(out.get().unwrap(), None, "the corrupt message is an item");
        // The iteration went on past it.
        q.put(41).unwrap();
        assert_eq!(out.get().unwrap(), Some(41));
        q.close();
        consumer.join().unwrap();
        assert_eq!(out.get(), Err(GetError::Closed), "it ended at the close");
    }
    leaks.assert_clean();
}

fn send_after_event(args: (Event, mproc::Connection<String>)) {
    args.0.wait();
    args.1.send("late".into()).unwrap();
}

#[test]
fn wait_returns_the_ends_that_became_ready_across_processes() {
    use mproc::queue::{wait, Waitable};
    let leaks = LeakCheck::start();
    {
        let jobs: Queue<u32> = Queue::new().unwrap();
        let (rx, tx) = Pipe::<String>::simplex().unwrap();
        let go = Event::new().unwrap();
        let mut sender = Process::new(send_after_event, (go.clone(), tx.clone()));
        sender.start().unwrap();
        drop(tx);
        let ends: [&dyn Waitable; 2] = [&jobs, &rx];
        assert!(wait(&ends, Some(Duration::from_millis(50))).is_empty());
        go.set();
        assert_eq!(wait(&ends, Some(Duration::from_secs(20))), [1]);
        assert_eq!(rx.recv().unwrap(), "late");
        sender.join().unwrap();
        // The sender is gone: its end is ready (recv says Disconnected).
        assert_eq!(wait(&ends, Some(Duration::from_secs(20))), [1]);
        jobs.close();
        assert_eq!(wait(&ends, None), [0, 1]);
    }
    leaks.assert_clean();
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Sometimes {
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    n: u32,
}

#[test]
fn values_postcard_cannot_read_back_are_refused_with_a_clear_reason() {
    // Debug builds refuse them at the sender; release builds send them and
    // the receiver's error names the type and the reason.
    let reason = |q: &Queue<serde_json::Value>, v| -> String {
        match q.put(v) {
            Err(PutError::Encode(e)) => e.to_string(),
            Ok(()) if !cfg!(debug_assertions) => q.get().unwrap_err().to_string(),
            other => panic!("expected an error, got {other:?}"),
        }
    };
    let q: Queue<serde_json::Value> = Queue::new().unwrap();
    let err = reason(&q, serde_json::json!({"a": 1}));
    assert!(err.contains("serde_json::value::Value"), "{err}");
    assert!(err.contains("not self-describing"), "{err}");
    let q: Queue<Sometimes> = Queue::new().unwrap();
    q.put(Sometimes {
        note: Some("x".into()),
        n: 1,
    })
    .unwrap();
    assert!(q.get().is_ok());
    let err = match q.put(Sometimes { note: None, n: 7 }) {
        Err(e) => e.to_string(),
        Ok(()) if !cfg!(debug_assertions) => q.get().unwrap_err().to_string(),
        Ok(()) => panic!("a value that does not read back was accepted"),
    };
    assert!(err.contains("Sometimes"), "{err}");
    assert!(err.contains("skip_serializing_if"), "{err}");
}
