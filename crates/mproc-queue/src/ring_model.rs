//! loom models of the ring protocol: the production `Ring` code over
//! model-checked memory ([`Mem`]), explored under every interleaving
//! (bounded), with several producers, consumers, pollers and a closer.
//!
//! The data area is loom `UnsafeCell`s, so a consumer that reads bytes a
//! producer has not published (or a producer that overwrites bytes a
//! consumer has not released) is a reported race, not a silent stale read.
//! Sleeps really block (a loom mutex and condvar, a futex's contract), so a
//! lost wake-up shows up as a deadlock; the side locks are loom mutexes (the
//! robust lock has models of its own in mproc-sync). Nobody dies here: kill
//! points are tested with real processes.
//!
//! loom treats a `SeqCst` access as `AcqRel`, which cannot express the
//! ring's store-then-load handshakes (a producer stores the tail and then
//! reads the sleeper count; a sleeper counts itself and then reads the
//! tail); it does model `SeqCst` fences. So the model memory puts a
//! `SeqCst` fence on both sides of every `SeqCst` access, which is what the
//! hardware gives those accesses.
//!
//! They take seconds in release and many minutes unoptimised, so they are
//! ignored in debug builds; `cargo xtask test` runs them in release:
//! `cargo test -p mproc-queue --release ring_model`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
use loom::thread;

use crate::mem::{Mem, Side};
use crate::ring::{GetFail, Kind, Ring, Wait, DATA, MIN_CAPACITY};
use mproc_sync::wait::WaitResult;

const CAP: usize = MIN_CAPACITY;
const HEADER_BYTES: usize = 512;

struct Shared {
    u32s: Vec<AtomicU32>,
    u64s: Vec<AtomicU64>,
    data: Vec<UnsafeCell<u8>>,
    locks: [Mutex<()>; 2],
    park: (Mutex<()>, Condvar),
}

/// One thread's view of the model memory (its identity differs).
#[derive(Clone)]
struct ModelMem {
    s: Arc<Shared>,
    me: u64,
}

impl ModelMem {
    fn new() -> ModelMem {
        ModelMem {
            s: Arc::new(Shared {
                u32s: (0..HEADER_BYTES / 4).map(|_| AtomicU32::new(0)).collect(),
                u64s: (0..HEADER_BYTES / 8).map(|_| AtomicU64::new(0)).collect(),
                data: (0..CAP).map(|_| UnsafeCell::new(0)).collect(),
                locks: [Mutex::new(()), Mutex::new(())],
                park: (Mutex::new(()), Condvar::new()),
            }),
            me: 1,
        }
    }

    fn as_process(&self, n: u64) -> ModelMem {
        ModelMem {
            s: self.s.clone(),
            me: n,
        }
    }

    fn w32(&self, off: usize) -> &AtomicU32 {
        &self.s.u32s[off / 4]
    }

    fn w64(&self, off: usize) -> &AtomicU64 {
        &self.s.u64s[off / 8]
    }
}

/// Runs `op` as a `SeqCst` access is on hardware (see the module docs).
fn sc<R>(order: Ordering, op: impl FnOnce() -> R) -> R {
    if order == Ordering::SeqCst {
        fence(Ordering::SeqCst);
        let r = op();
        fence(Ordering::SeqCst);
        r
    } else {
        op()
    }
}

impl Mem for ModelMem {
    type Guard<'a> = MutexGuard<'a, ()>;

    fn load32(&self, off: usize, order: Ordering) -> u32 {
        sc(order, || self.w32(off).load(order))
    }

    fn store32(&self, off: usize, value: u32, order: Ordering) {
        sc(order, || self.w32(off).store(value, order))
    }

    fn add32(&self, off: usize, value: u32, order: Ordering) -> u32 {
        sc(order, || self.w32(off).fetch_add(value, order))
    }

    fn sub32(&self, off: usize, value: u32, order: Ordering) -> u32 {
        sc(order, || self.w32(off).fetch_sub(value, order))
    }

    fn load64(&self, off: usize, order: Ordering) -> u64 {
        sc(order, || self.w64(off).load(order))
    }

    fn store64(&self, off: usize, value: u64, order: Ordering) {
        sc(order, || self.w64(off).store(value, order))
    }

    fn add64(&self, off: usize, value: u64, order: Ordering) -> u64 {
        sc(order, || self.w64(off).fetch_add(value, order))
    }

    fn cas64(&self, off: usize, current: u64, new: u64) -> Result<u64, u64> {
        sc(Ordering::SeqCst, || {
            self.w64(off)
                .compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
        })
    }

    fn read(&self, off: usize, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: loom's cell checks the access against every
            // concurrent one; the byte is plain data.
            *b = self.s.data[off - DATA + i].with(|p| unsafe { *p });
        }
    }

    fn write(&self, off: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: as in `read`.
            self.s.data[off - DATA + i].with_mut(|p| unsafe { *p = b });
        }
    }

    fn spin_until(&self, ready: &mut dyn FnMut() -> bool) -> bool {
        ready()
    }

    fn park(&self, off: usize, expected: u32, _deadline: Option<Instant>) -> WaitResult {
        let guard = self.s.park.0.lock().unwrap();
        if sc(Ordering::SeqCst, || self.w32(off).load(Ordering::SeqCst)) == expected {
            drop(self.s.park.1.wait(guard).unwrap());
        }
        WaitResult::Woken
    }

    fn wake_all(&self, _off: usize) {
        let _guard = self.s.park.0.lock().unwrap();
        self.s.park.1.notify_all();
    }

    fn lock(&self, side: Side, how: Wait) -> Option<MutexGuard<'_, ()>> {
        let lock = &self.s.locks[side as usize];
        match how {
            Wait::No => lock.try_lock().ok(),
            Wait::Until(_) => Some(lock.lock().unwrap()),
        }
    }

    fn me(&self) -> u64 {
        self.me
    }

    fn has_ended(&self, _ident: u64) -> bool {
        false
    }
}

fn ring(mem: &ModelMem, n: u64) -> Ring<ModelMem> {
    Ring::from_mem(mem.as_process(n), CAP, 0, Kind::Queue)
}

fn message(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn bounded(preemptions: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b
}

/// A consumer and a poller on the same end, over a ring that wraps: the
/// consumer gets every message in order and intact (a poll must never make
/// it read a chunk a lap old).
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow unoptimised; cargo xtask test runs it in release"
)]
fn ring_model_poll_racing_get_never_serves_a_stale_lap() {
    bounded(2).check(|| {
        let mem = ModelMem::new();
        // 5 messages of 8 bytes: 16 bytes each in a 64-byte ring, so the
        // positions wrap and old chunks stay in the data area.
        const N: u8 = 5;
        let producer = {
            let r = ring(&mem, 1);
            thread::spawn(move || {
                for tag in 0..N {
                    r.put(&message(tag, 8), Wait::FOREVER, None).unwrap();
                }
            })
        };
        let poller = {
            let r = ring(&mem, 2);
            thread::spawn(move || {
                for _ in 0..2 {
                    let _ = r.poll(Wait::No, None);
                    assert!(r.len() <= u64::from(N));
                }
            })
        };
        let r = ring(&mem, 3);
        let mut buf = Vec::new();
        for tag in 0..N {
            r.get(&mut buf, Wait::FOREVER, None).unwrap();
            assert_eq!(buf, message(tag, 8), "message {tag}");
        }
        producer.join().unwrap();
        poller.join().unwrap();
        assert_eq!(r.len(), 0);
    });
}

/// Two producers (one message of two chunks, one of one chunk) and two
/// consumers: each message arrives exactly once, whole.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow unoptimised; cargo xtask test runs it in release"
)]
fn ring_model_two_by_two_with_a_message_of_two_chunks() {
    bounded(2).check(|| {
        let mem = ModelMem::new();
        let big = message(7, 40); // max chunk is 24 bytes in a 64-byte ring
        let small = message(9, 8);
        let producers: Vec<_> = [(1, big.clone()), (2, small.clone())]
            .into_iter()
            .map(|(n, m)| {
                let r = ring(&mem, n);
                thread::spawn(move || r.put(&m, Wait::FOREVER, None).unwrap())
            })
            .collect();
        let consumers: Vec<_> = [3, 4]
            .into_iter()
            .map(|n| {
                let r = ring(&mem, n);
                thread::spawn(move || {
                    let mut buf = Vec::new();
                    r.get(&mut buf, Wait::FOREVER, None).unwrap();
                    buf
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut got: Vec<Vec<u8>> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
        got.sort();
        let mut want = vec![big, small];
        want.sort();
        assert_eq!(got, want);
        let r = ring(&mem, 5);
        assert_eq!((r.len(), r.abandoned()), (0, 0));
    });
}

/// A producer that puts and then closes, and a consumer that drains until
/// `Closed`: nothing put before the close is lost, and the consumer ends.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow unoptimised; cargo xtask test runs it in release"
)]
fn ring_model_close_after_put_loses_nothing() {
    bounded(3).check(|| {
        let mem = ModelMem::new();
        let producer = {
            let r = ring(&mem, 1);
            thread::spawn(move || {
                r.put(&message(1, 40), Wait::FOREVER, None).unwrap();
                r.put(&message(2, 8), Wait::FOREVER, None).unwrap();
                r.close();
            })
        };
        let r = ring(&mem, 2);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match r.get(&mut buf, Wait::FOREVER, None) {
                Ok(()) => got.push(buf.clone()),
                Err(GetFail::Closed) => break,
                Err(e) => panic!("get: {e:?}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, vec![message(1, 40), message(2, 8)]);
    });
}
