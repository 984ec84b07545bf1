//! Cross-process wait and wake on a 32-bit word in shared memory.
//!
//! Every blocking primitive of mproc sleeps here: Linux uses a futex without
//! `FUTEX_PRIVATE_FLAG`, macOS `os_sync_wait_on_address` with the shared flag
//! (14.4+) or, below that, a bounded sleep-poll (also forced everywhere by
//! the `portable-wait` feature, so the fallback is tested on Linux).
//!
//! [`wait`] first spins briefly: on virtual machines a wake-up across cores
//! costs 50–100 µs, so a peer that answers within a few microseconds is
//! caught without a sleep. The spin is adaptive and bounded: its length
//! doubles (up to [`MAX_SPIN`] iterations) each time spinning caught the
//! change or a sleep ended within 200 µs, and halves each time a spin
//! missed. A thread whose spins should not keep a core from a runnable
//! thread asks them to give way now and then ([`yield_while_spinning`]: a
//! pool's workers do) or to end after about a microsecond and a half
//! ([`spin_briefly`]: a pool's result thread does).
//!
//! **No wait sleeps for ever.** A single sleep in the kernel lasts at most
//! [`SLICE`] (100 ms); when it ends the wait returns as a spurious wake-up
//! and its caller re-checks its condition (every caller loops on one) and,
//! where it has one, its peer's liveness. So a process killed between
//! publishing a change and waking the sleepers costs them at most one slice,
//! never a hang.
//!
//! Deadlines are `Option<Instant>` on the monotonic clock; `None` waits for
//! ever. [`deadline`] turns a timeout into one and saturates, so
//! `Duration::MAX` is simply "for ever". Interrupted sleeps (`EINTR`) retry
//! with the same deadline.
//!
//! # Examples
//!
//! ```
//! use mproc_shm::Segment;
//! use mproc_sync::wait::{self, WaitResult};
//! use std::sync::atomic::Ordering;
//! use std::time::Duration;
//!
//! let seg = Segment::anonymous(64)?;
//! let word = seg.atomic_u32(0).unwrap();
//! // Nobody changes the word: the wait times out.
//! let r = wait::wait(word, 0, wait::deadline(Duration::from_millis(5)));
//! assert_eq!(r, WaitResult::TimedOut);
//! // The word differs from `expected`: it returns at once.
//! word.store(1, Ordering::Release);
//! assert_eq!(wait::wait(word, 0, None), WaitResult::Woken);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys::{self, Sleep};

/// The longest single sleep of any wait (100 ms): see the module docs.
pub const SLICE: Duration = sys::SLICE;

/// The longest spin, in iterations of `spin_loop` (tens of µs).
pub const MAX_SPIN: u32 = 2000;
const MIN_SPIN: u32 = 16;

static SPIN: AtomicU32 = AtomicU32::new(200);

/// How a [`wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    /// The word changed, a waker woke us, or the wake-up was spurious:
    /// look at the word again.
    Woken,
    /// The deadline passed with the word unchanged.
    TimedOut,
}

/// The deadline `timeout` from now, or `None` (for ever) when that instant
/// cannot be represented.
pub fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Spins while `*word == expected`, at most the adaptive spin length.
/// Returns `true` when the word changed.
pub(crate) fn spin(word: &AtomicU32, expected: u32) -> bool {
    spin_until(|| word.load(Ordering::Acquire) != expected)
}

/// Blocks while `*word == expected`, until a [`wake_one`] / [`wake_all`] on
/// the same word (from any process), or `deadline`.
///
/// Spurious returns are possible — at the latest after [`SLICE`], even
/// without a wake — so callers re-check their condition.
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitResult {
    if spin(word, expected) {
        return WaitResult::Woken;
    }
    sleep(word, expected, deadline)
}

/// A sleep that ended sooner than this was a missed chance to spin.
const SHORT_SLEEP: Duration = Duration::from_micros(200);

/// [`wait`] without the spin, for callers that spun already.
///
/// A wake-up that comes within [`SHORT_SLEEP`] doubles the spin length: the
/// peer answered fast, so a longer spin would have caught it without the
/// kernel round trip. (Failed spins halve it; without this rule the length
/// could collapse to the minimum and stay there.)
pub(crate) fn sleep(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitResult {
    let start = Instant::now();
    if deadline.is_some_and(|d| start >= d) {
        return WaitResult::TimedOut;
    }
    // Never one sleep longer than a slice: see `SLICE`.
    let slice_end = start + SLICE;
    let until = deadline.map_or(slice_end, |d| d.min(slice_end));
    match sys::wait_on(word, expected, Some(until)) {
        Sleep::Woken => {
            // A brief spinner's sleeps say nothing of how long the others
            // should spin.
            if start.elapsed() < SHORT_SLEEP && MANNER.with(Cell::get) & BRIEF == 0 {
                let limit = SPIN.load(Ordering::Relaxed);
                let _ = SPIN.compare_exchange(
                    limit,
                    (limit * 2).min(MAX_SPIN),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            WaitResult::Woken
        }
        // The deadline passed, or only the slice ended: a spurious wake-up
        // after which the caller re-checks its condition.
        Sleep::TimedOut if deadline.is_some_and(|d| Instant::now() >= d) => WaitResult::TimedOut,
        Sleep::TimedOut => WaitResult::Woken,
    }
}

/// Spins until `ready()` holds, at most the adaptive spin length (shared
/// with [`wait`]). Returns whether it holds. For structures whose condition
/// is not the futex word itself (a ring's positions, say).
pub fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    let limit = SPIN.load(Ordering::Relaxed);
    // Read only by a spin that lasts: short ones, the most, never ask.
    let mut manner = None;
    for i in 0..limit {
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            let m = *manner.get_or_insert_with(|| MANNER.with(Cell::get));
            if m & BRIEF != 0 {
                // Nor does a brief spin that ends here train the length.
                return ready();
            }
            if m & YIELDS != 0 {
                std::thread::yield_now();
            }
        }
        if ready() {
            let _ = SPIN.compare_exchange(
                limit,
                (limit * 2).min(MAX_SPIN),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return true;
        }
        std::hint::spin_loop();
    }
    let _ = SPIN.compare_exchange(
        limit,
        (limit / 2).max(MIN_SPIN),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    ready()
}

/// How many spin iterations a yielding thread spins between yields, and a
/// brief one spins in all.
const YIELD_EVERY: u32 = 64;

/// A thread's manner of spinning: bits of [`YIELDS`] and [`BRIEF`].
const YIELDS: u8 = 1;
const BRIEF: u8 = 2;

thread_local! {
    static MANNER: Cell<u8> = const { Cell::new(0) };
}

fn set_manner(bit: u8, on: bool) {
    MANNER.with(|m| m.set(if on { m.get() | bit } else { m.get() & !bit }));
}

/// Whether the calling thread's spins give way to other runnable threads
/// (a `sched_yield` every 64 iterations, about 1.5 µs) — off by default.
///
/// For a thread whose spins are likely to keep a core from a thread that
/// has work — a pool's worker waiting for its next job while the caller
/// that will send it waits for a core. The yield costs about half a
/// microsecond, so a pair of threads that answer each other within a few
/// microseconds (an `Event` ping-pong) is faster without it.
///
/// ```
/// use mproc_sync::wait;
///
/// // This thread's spins now give way; a spin still sees its condition.
/// wait::yield_while_spinning(true);
/// let mut polls = 0;
/// assert!(wait::spin_until(|| {
///     polls += 1;
///     polls > 10
/// }));
/// wait::yield_while_spinning(false);
/// ```
pub fn yield_while_spinning(on: bool) {
    set_manner(YIELDS, on);
}

/// Whether the calling thread's spins end after 64 iterations (about
/// 1.5 µs), however long the adaptive length has grown — off by default.
///
/// For a thread that is better asleep than holding a core, because the
/// thread it is about to wake needs that core to run: a pool's result
/// thread, which wakes the caller waiting for a result and would otherwise
/// spin for the next one beside it. (`apply_async` + `get` on 2 cores:
/// 10.2 → 8.7 µs, median of 8 runs.) A brief thread's sleeps, and its
/// spins cut short at 64 iterations, leave the adaptive length, which other
/// threads go by, alone.
///
/// ```
/// use mproc_sync::wait;
///
/// wait::spin_briefly(true);
/// // A spin now ends after 64 looks, whatever the adaptive length.
/// let mut polls = 0;
/// assert!(!wait::spin_until(|| {
///     polls += 1;
///     false
/// }));
/// assert!(polls <= 65);
/// // It still sees a condition that holds.
/// assert!(wait::spin_until(|| true));
/// wait::spin_briefly(false);
/// ```
pub fn spin_briefly(on: bool) {
    set_manner(BRIEF, on);
}

/// Sleeps while `*word == expected` (no spin), counted in `sleepers` so that
/// wakers may skip the wake call when the count is zero. The count goes up
/// before the word is re-checked (both `SeqCst`): a waker that changes the
/// word and then reads a zero count knows every counted sleeper will see the
/// new value.
pub fn sleep_counted(
    word: &AtomicU32,
    sleepers: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
) -> WaitResult {
    sleepers.fetch_add(1, Ordering::SeqCst);
    let r = if word.load(Ordering::SeqCst) == expected {
        sleep(word, expected, deadline)
    } else {
        WaitResult::Woken
    };
    sleepers.fetch_sub(1, Ordering::Relaxed);
    r
}

/// [`wait`] without the spin: sleeps while `*word == expected`, until a
/// wake or `deadline`, for callers that spun on their own condition (with
/// [`spin_until`]) and count their sleepers themselves.
pub fn park(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitResult {
    sleep(word, expected, deadline)
}

/// Wakes one waiter on `word`, in any process.
pub fn wake_one(word: &AtomicU32) {
    sys::wake(word, 1);
}

/// Wakes every waiter on `word`, in any process.
pub fn wake_all(word: &AtomicU32) {
    sys::wake(word, u32::MAX);
}

/// Wakes up to `n` waiters on `word`.
pub fn wake(word: &AtomicU32, n: u32) {
    if n > 0 {
        sys::wake(word, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_saturate_to_forever() {
        assert_eq!(deadline(Duration::MAX), None);
        assert!(deadline(Duration::from_secs(1)).is_some());
    }

    #[test]
    fn wake_reaches_a_sleeper_in_another_thread() {
        let seg = mproc_shm::Segment::anonymous(64).unwrap();
        let seg2 = seg.clone();
        let t = std::thread::spawn(move || {
            let w = seg2.atomic_u32(0).unwrap();
            while w.load(Ordering::Acquire) == 0 {
                wait(w, 0, None);
            }
        });
        let w = seg.atomic_u32(0).unwrap();
        w.store(1, Ordering::Release);
        wake_all(w);
        t.join().unwrap();
    }

    #[test]
    fn timeout_is_honoured() {
        let seg = mproc_shm::Segment::anonymous(64).unwrap();
        let start = Instant::now();
        assert_eq!(
            wait(
                seg.atomic_u32(0).unwrap(),
                0,
                deadline(Duration::from_millis(30))
            ),
            WaitResult::TimedOut
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
