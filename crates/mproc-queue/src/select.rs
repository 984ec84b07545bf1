//! `wait`: block until any of several queues or pipe ends has something to
//! read (CPython's `multiprocessing.connection.wait`).

use std::time::{Duration, Instant};

use crate::queue::{JoinableQueue, Queue, SimpleQueue};
use crate::ring::Wait;

mod sealed {
    pub trait Sealed {}
    impl<T> Sealed for crate::Queue<T> {}
    impl<T> Sealed for crate::SimpleQueue<T> {}
    impl<T> Sealed for crate::JoinableQueue<T> {}
    impl<T> Sealed for crate::Connection<T> {}
}

/// Something [`wait`] can watch: a queue or a receiving pipe end.
pub trait Waitable: sealed::Sealed {
    /// Whether a get or recv would return at once: an item is there, the
    /// queue is closed, or the pipe's peer is gone.
    fn ready(&self) -> bool;
}

impl<T> Waitable for Queue<T> {
    fn ready(&self) -> bool {
        self.ring().poll(Wait::No, None)
    }
}

impl<T> Waitable for SimpleQueue<T> {
    fn ready(&self) -> bool {
        self.inner().ready()
    }
}

impl<T> Waitable for JoinableQueue<T> {
    fn ready(&self) -> bool {
        (**self).ready()
    }
}

/// The longest nap between two looks at the ends.
const MAX_NAP: Duration = Duration::from_millis(2);

/// Waits until at least one of `ends` is ready (an item to get, a closed
/// queue, a gone peer) or `timeout` passes (`None`: for ever); returns the
/// indices of the ready ones, in order — empty on timeout.
///
/// The rings' wake-ups are per ring, so this looks at every end in turn:
/// briefly spinning, then napping from 20 µs up to 2 ms between looks. A
/// ready end is seen within about 2 ms.
///
/// # Examples
///
/// ```
/// use mproc_queue::{wait, Pipe, Queue, Waitable};
/// use std::time::Duration;
///
/// let jobs: Queue<u32> = Queue::new()?;
/// let (rx, tx) = Pipe::<String>::simplex()?;
/// tx.send("hello".into())?;
/// let ends: [&dyn Waitable; 2] = [&jobs, &rx];
/// assert_eq!(wait(&ends, Some(Duration::from_secs(1))), [1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait(ends: &[&dyn Waitable], timeout: Option<Duration>) -> Vec<usize> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let look = || -> Vec<usize> {
        ends.iter()
            .enumerate()
            .filter(|(_, e)| e.ready())
            .map(|(i, _)| i)
            .collect()
    };
    let mut nap = Duration::from_micros(20);
    for spin in 0.. {
        let ready = look();
        if !ready.is_empty() || ends.is_empty() {
            return ready;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return ready;
        }
        if spin < 64 {
            std::hint::spin_loop();
            continue;
        }
        let remaining = deadline.map_or(nap, |d| d - now);
        std::thread::sleep(nap.min(remaining));
        nap = (nap * 2).min(MAX_NAP);
    }
    Vec::new()
}
