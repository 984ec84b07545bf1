//! Every system call of this crate, wrapped once: the wait/wake primitive
//! per platform, process identity, and the liveness probe.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

#[cfg(all(target_os = "linux", not(feature = "portable-wait")))]
mod linux;
#[cfg(all(target_os = "linux", not(feature = "portable-wait")))]
pub(crate) use linux::{wait_on, wake};

#[cfg(all(target_os = "macos", not(feature = "portable-wait")))]
mod macos;
#[cfg(all(target_os = "macos", not(feature = "portable-wait")))]
pub(crate) use macos::{wait_on, wake};

#[cfg(feature = "portable-wait")]
mod poll;
#[cfg(feature = "portable-wait")]
pub(crate) use poll::{wait_on, wake};

/// The longest single sleep of any wait: a sleeper re-checks its condition
/// (and its peer's liveness) at least this often, so a process killed
/// between publishing a change and waking the sleepers costs them at most
/// this long, never a hang.
pub(crate) const SLICE: std::time::Duration = std::time::Duration::from_millis(100);

/// What a sleeping wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sleep {
    /// Woken, or the word no longer held the expected value, or spurious.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// The bounded sleep-poll wait that every platform can do: sleeps in growing
/// steps (50 µs up to 2 ms) until the word changes or the deadline passes.
/// Wakes are not needed: the sleeper notices the change by itself.
#[allow(dead_code)]
pub(crate) fn poll_wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Sleep {
    let mut step = std::time::Duration::from_micros(50);
    loop {
        if word.load(Ordering::Acquire) != expected {
            return Sleep::Woken;
        }
        let mut nap = step;
        if let Some(d) = deadline {
            let now = Instant::now();
            if now >= d {
                return Sleep::TimedOut;
            }
            nap = nap.min(d - now);
        }
        std::thread::sleep(nap);
        step = (step * 2).min(std::time::Duration::from_millis(2));
    }
}

/// Who is calling: this process (pid and start time) and this thread,
/// cached per thread and refreshed in the child after `fork`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Me {
    /// The pid and an 8-bit tag of the start time, as a lock's state word
    /// names its holder (see `lock.rs`).
    pub(crate) hid: u32,
    /// The thread and a 22-bit hash of the start time, as a lock's owner
    /// record names its holding thread (see `lock.rs`).
    pub(crate) owner: u64,
    /// `ProcessIdent::to_bits` of this process.
    pub(crate) ident: u64,
}

/// Bits of a holder id that hold the pid (Linux's `PID_MAX_LIMIT` is 2^22).
pub(crate) const PID_BITS: u32 = 22;
pub(crate) const PID_MASK: u32 = (1 << PID_BITS) - 1;
/// A holder id: pid in bits 0–21, start-time tag in bits 22–29.
pub(crate) const HID_MASK: u32 = (1 << 30) - 1;

/// Bits of an owner record that hold the start-time hash.
pub(crate) const HASH_BITS: u32 = 22;
pub(crate) const HASH_MASK: u64 = (1 << HASH_BITS) - 1;

fn mix(start: u64) -> u64 {
    start.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The 8-bit tag of a start time that a holder id carries next to the pid.
pub(crate) fn start_tag(start: u64) -> u32 {
    (mix(start) >> 56) as u32
}

/// The 22-bit hash of a start time that an owner record carries next to
/// the thread (other bits of the mix than the tag's).
pub(crate) fn start_hash(start: u64) -> u64 {
    (mix(start) >> 34) & HASH_MASK
}

/// The holder id of process `pid` started at `start`.
pub(crate) fn holder_id(pid: u32, start: u64) -> u32 {
    (pid & PID_MASK) | (start_tag(start) << PID_BITS)
}

/// The owner record of thread `tid` of a process started at `start`.
pub(crate) fn owner_record(tid: u64, start: u64) -> u64 {
    (tid << HASH_BITS) | start_hash(start)
}

static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    static ME: std::cell::Cell<(u32, Me)> = const {
        std::cell::Cell::new((u32::MAX, Me { hid: 0, owner: 0, ident: 0 }))
    };
}

/// Who is calling.
pub(crate) fn me() -> Me {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a child-side fork handler; the handler only does
        // an atomic add, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    ME.with(|c| {
        let (g, me) = c.get();
        if g == generation {
            return me;
        }
        let ident = mproc_shm::ProcessIdent::current();
        let me = Me {
            hid: holder_id(ident.pid(), ident.start()),
            owner: owner_record(thread_id(), ident.start()),
            ident: ident.to_bits(),
        };
        c.set((generation, me));
        me
    })
}

/// This thread's system-wide id, unique among live threads: Linux's tid
/// (below 2^22, like pids), macOS's 64-bit thread id (42 bits kept: a
/// counter since boot that never gets there).
#[cfg(target_os = "linux")]
fn thread_id() -> u64 {
    // SAFETY: gettid has no arguments and cannot fail.
    (unsafe { libc::gettid() }) as u64
}

#[cfg(target_os = "macos")]
fn thread_id() -> u64 {
    let mut id: u64 = 0;
    // SAFETY: a null thread means the calling thread; `id` is a valid out
    // pointer for the call.
    unsafe { libc::pthread_threadid_np(0, &mut id) };
    id & ((1 << (64 - HASH_BITS)) - 1)
}

/// The start time of the live process that has pid `pid` now (0 when it
/// cannot be read), or `None` when no live process has it (zombies are
/// dead). The liveness probe of locks, barriers and rings.
pub(crate) fn start_of(pid: u32) -> Option<u64> {
    mproc_shm::ProcessIdent::of(pid).map(mproc_shm::ProcessIdent::start)
}
