//! Linux: futex on a word in shared memory, without `FUTEX_PRIVATE_FLAG`,
//! so that waiters and wakers in different processes meet. Deadlines are
//! absolute on `CLOCK_MONOTONIC` (`FUTEX_WAIT_BITSET`), so `EINTR` simply
//! retries with the same deadline.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use super::Sleep;

fn monotonic_now() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: CLOCK_MONOTONIC is always available; `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts
}

/// The absolute CLOCK_MONOTONIC time of `deadline`, or `None` when it is so
/// far away that it does not fit (an infinite wait).
fn absolute(deadline: Instant) -> Option<libc::timespec> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let now = monotonic_now();
    let nanos = now.tv_nsec as u64 + u64::from(remaining.subsec_nanos());
    let secs = (now.tv_sec as u64)
        .checked_add(remaining.as_secs())?
        .checked_add(nanos / 1_000_000_000)?;
    Some(libc::timespec {
        tv_sec: libc::time_t::try_from(secs).ok()?,
        tv_nsec: (nanos % 1_000_000_000) as _,
    })
}

/// Sleeps while `*word == expected`, until woken or `deadline`.
pub(crate) fn wait_on(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Sleep {
    let ts = deadline.and_then(absolute);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: (1) `word` is a live, aligned u32 (an AtomicU32) for the
        // call; (2) `ts_ptr` is null or points at `ts` on our stack; (3) the
        // non-private op works on shared mappings across processes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                ts_ptr,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if r == 0 {
            return Sleep::Woken;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ETIMEDOUT) => return Sleep::TimedOut,
            // EAGAIN: the word had already changed.
            _ => return Sleep::Woken,
        }
    }
}

/// Wakes up to `n` waiters on `word` (in any process).
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    // SAFETY: FUTEX_WAKE only reads the address as a key; `word` is live.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
}
