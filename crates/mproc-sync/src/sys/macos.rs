//! macOS: `os_sync_wait_on_address` with the shared flag (macOS 14.4+),
//! looked up at run time; older systems fall back to the bounded
//! sleep-poll wait.

use std::sync::atomic::AtomicU32;
use std::sync::OnceLock;
use std::time::Instant;

use super::Sleep;

const OS_SYNC_WAIT_ON_ADDRESS_SHARED: u32 = 1;
const OS_SYNC_WAKE_BY_ADDRESS_SHARED: u32 = 1;
const OS_CLOCK_MACH_ABSOLUTE_TIME: u32 = 32;

type WaitFn = unsafe extern "C" fn(*mut libc::c_void, u64, usize, u32, u32, u64) -> libc::c_int;
type WakeFn = unsafe extern "C" fn(*mut libc::c_void, usize, u32) -> libc::c_int;

struct Api {
    wait: WaitFn,
    wake_any: WakeFn,
    wake_all: WakeFn,
}

fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| {
        let find = |name: &[u8]| {
            // SAFETY: `name` is a nul-terminated symbol name; RTLD_DEFAULT
            // searches the loaded images.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast()) };
            (!p.is_null()).then_some(p)
        };
        let wait = find(b"os_sync_wait_on_address_with_timeout\0")?;
        let wake_any = find(b"os_sync_wake_by_address_any\0")?;
        let wake_all = find(b"os_sync_wake_by_address_all\0")?;
        // SAFETY: the symbols are libSystem's functions with exactly these C
        // signatures (os/os_sync_wait_on_address.h).
        unsafe {
            Some(Api {
                wait: std::mem::transmute::<*mut libc::c_void, WaitFn>(wait),
                wake_any: std::mem::transmute::<*mut libc::c_void, WakeFn>(wake_any),
                wake_all: std::mem::transmute::<*mut libc::c_void, WakeFn>(wake_all),
            })
        }
    })
    .as_ref()
}

/// Sleeps while `*word == expected`, until woken or `deadline`.
pub(crate) fn wait_on(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Sleep {
    let Some(api) = api() else {
        return super::poll_wait(word, expected, deadline);
    };
    loop {
        let timeout_ns = match deadline {
            None => 0,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Sleep::TimedOut;
                }
                u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)
            }
        };
        // SAFETY: `word` is a live, aligned u32 for the call; the shared flag
        // makes the wait visible to wakers in other processes.
        let r = unsafe {
            if timeout_ns == 0 {
                (api.wait)(
                    word.as_ptr().cast(),
                    u64::from(expected),
                    4,
                    OS_SYNC_WAIT_ON_ADDRESS_SHARED,
                    OS_CLOCK_MACH_ABSOLUTE_TIME,
                    u64::MAX,
                )
            } else {
                (api.wait)(
                    word.as_ptr().cast(),
                    u64::from(expected),
                    4,
                    OS_SYNC_WAIT_ON_ADDRESS_SHARED,
                    OS_CLOCK_MACH_ABSOLUTE_TIME,
                    timeout_ns,
                )
            }
        };
        if r >= 0 {
            return Sleep::Woken;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) | Some(libc::EFAULT) => continue,
            Some(libc::ETIMEDOUT) => return Sleep::TimedOut,
            _ => return Sleep::Woken,
        }
    }
}

/// Wakes up to `n` waiters on `word` (in any process).
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    let Some(api) = api() else { return };
    // SAFETY: the wake calls only use the address as a key; `word` is live.
    unsafe {
        if n == 1 {
            (api.wake_any)(word.as_ptr().cast(), 4, OS_SYNC_WAKE_BY_ADDRESS_SHARED);
        } else {
            (api.wake_all)(word.as_ptr().cast(), 4, OS_SYNC_WAKE_BY_ADDRESS_SHARED);
        }
    }
}
