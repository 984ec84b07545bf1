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

/// This process's id and this thread's system-wide id, cached per thread
/// and refreshed in the child after `fork`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Me {
    pub(crate) pid: u32,
    pub(crate) tid: u32,
}

static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    static ME: std::cell::Cell<(u32, Me)> = const { std::cell::Cell::new((u32::MAX, Me { pid: 0, tid: 0 })) };
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
        let me = Me {
            pid: std::process::id(),
            tid: thread_id(),
        };
        c.set((generation, me));
        me
    })
}

#[cfg(target_os = "linux")]
fn thread_id() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    (unsafe { libc::gettid() }) as u32
}

#[cfg(target_os = "macos")]
fn thread_id() -> u32 {
    let mut id: u64 = 0;
    // SAFETY: a null thread means the calling thread; `id` is a valid out
    // pointer for the call.
    unsafe { libc::pthread_threadid_np(0, &mut id) };
    id as u32
}

/// Whether process `pid` has ended: it does not exist, or it is a zombie
/// waiting to be reaped. A stopped process is alive.
pub(crate) fn is_dead(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if p <= 0 {
        return true;
    }
    // SAFETY: signal 0 performs only the existence and permission checks.
    if unsafe { libc::kill(p, 0) } == -1 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    is_zombie(p)
}

#[cfg(target_os = "linux")]
fn is_zombie(pid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        // Gone between the two checks.
        return true;
    };
    // The state follows the command name, which is in parentheses.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
        .is_some_and(|state| state == 'Z' || state == 'X')
}

#[cfg(target_os = "macos")]
fn is_zombie(pid: libc::pid_t) -> bool {
    // SAFETY: an all-zero proc_bsdinfo is a valid buffer for the kernel.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    // SAFETY: `info` is a writable buffer of `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            (&mut info as *mut libc::proc_bsdinfo).cast(),
            size,
        )
    };
    if n != size {
        // No such process any more (or no permission: assume alive).
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    info.pbi_status == libc::SZOMB as u32
}
