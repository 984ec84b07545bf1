//! `ProcessIdent`: a process told apart from every other process that ever
//! had, or will have, its pid.
//!
//! See [`ProcessIdent`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys;

/// Bits of the pid in a packed identity.
const PID_BITS: u32 = 22;
const PID_MASK: u64 = (1 << PID_BITS) - 1;
/// Bits of the start time kept in a packed identity.
const START_MASK: u64 = (1 << (64 - PID_BITS)) - 1;

/// A process told apart from every other process that ever had, or will
/// have, its pid.
///
/// A pid alone names a process only while it lives: the kernel hands a freed
/// pid to a new process (`pid_max` is 32768 on many machines, so it wraps
/// within minutes on a busy one). Anything kept in shared memory that names
/// a process — a lock's holder, a ring's writer, a barrier's parties — names
/// it by pid *and* start time, which the kernel never gives two processes
/// with the same pid: on Linux the `starttime` field of `/proc/<pid>/stat`
/// (clock ticks since boot), on macOS `proc_pidinfo`'s start time (µs since
/// the epoch). Every liveness probe compares both, so a new process that
/// reuses a dead holder's pid is never taken for the holder.
///
/// An identity packs into one `u64` ([`ProcessIdent::to_bits`]): the pid in
/// the low 22 bits (Linux's `PID_MAX_LIMIT` is 2^22; macOS pids stay below
/// 100,000) and the start time's low 42 bits above it (42 bits of clock
/// ticks last 1,400 years; of microseconds, 50 days, after which a reused
/// pid would also have to start in the same microsecond). Zero is "nobody".
///
/// The limit: Linux gives start times in clock ticks (10 ms), so a pid
/// handed out again *within the same tick* would pass for the dead process.
/// The kernel reuses a pid only after handing out the others (`pid_max` of
/// them, 32,768 at least) — not within 10 ms.
///
/// # Examples
///
/// ```
/// use mproc_shm::ProcessIdent;
///
/// let me = ProcessIdent::current();
/// assert_eq!(me.pid(), std::process::id());
/// assert!(!me.has_ended());
/// assert_eq!(ProcessIdent::from_bits(me.to_bits()), Some(me));
/// assert_eq!(ProcessIdent::from_bits(0), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessIdent {
    pid: u32,
    /// Start time, masked to 42 bits; 0 when the platform could not say.
    start: u64,
}

/// This process's packed identity, or 0 until first asked (and again in a
/// child right after `fork`).
static CURRENT: AtomicU64 = AtomicU64::new(0);

extern "C" fn forget_current_in_child() {
    // An atomic store: async-signal-safe, as a fork handler must be.
    CURRENT.store(0, Ordering::Relaxed);
}

impl ProcessIdent {
    /// The calling process. Cached; a child made by `fork` gets its own.
    pub fn current() -> ProcessIdent {
        let bits = CURRENT.load(Ordering::Relaxed);
        if let Some(me) = ProcessIdent::from_bits(bits) {
            return me;
        }
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| sys::at_fork_in_child(forget_current_in_child));
        let pid = std::process::id();
        let me = ProcessIdent::new(pid, sys::process_start(pid).unwrap_or(0));
        CURRENT.store(me.to_bits(), Ordering::Relaxed);
        me
    }

    /// The process that has pid `pid` now, if one does and has not ended
    /// (a zombie has).
    pub fn of(pid: u32) -> Option<ProcessIdent> {
        if pid == 0 || u64::from(pid) > PID_MASK {
            return None;
        }
        match sys::process_state(pid) {
            sys::ProcState::Running { start } => Some(ProcessIdent::new(pid, start)),
            sys::ProcState::Gone => None,
        }
    }

    fn new(pid: u32, start: u64) -> ProcessIdent {
        ProcessIdent {
            pid,
            start: start & START_MASK,
        }
    }

    /// An identity made up from its parts, for models and tests that play
    /// processes which do not exist.
    #[doc(hidden)]
    pub fn from_parts(pid: u32, start: u64) -> ProcessIdent {
        ProcessIdent::new(pid & PID_MASK as u32, start)
    }

    /// The pid.
    pub fn pid(self) -> u32 {
        self.pid
    }

    /// The start time as kept (42 bits; 0 when unknown).
    pub fn start(self) -> u64 {
        self.start
    }

    /// Whether this process has ended: no process has its pid, the one that
    /// has it is a zombie, or it is another process (a reused pid). A
    /// stopped process has not ended.
    pub fn has_ended(self) -> bool {
        match ProcessIdent::of(self.pid) {
            None => true,
            Some(now) => self.start != 0 && now.start != 0 && now.start != self.start,
        }
    }

    /// The identity packed in a `u64`, never 0.
    pub fn to_bits(self) -> u64 {
        (self.start << PID_BITS) | (u64::from(self.pid) & PID_MASK)
    }

    /// The identity packed by [`to_bits`](ProcessIdent::to_bits); `None`
    /// for 0 (nobody) and for bits without a pid. Bits read from shared
    /// memory are untrusted: any other value decodes to *some* identity,
    /// which at worst names a process that does not exist.
    pub fn from_bits(bits: u64) -> Option<ProcessIdent> {
        let pid = (bits & PID_MASK) as u32;
        (pid != 0).then_some(ProcessIdent {
            pid,
            start: bits >> PID_BITS,
        })
    }
}

impl fmt::Debug for ProcessIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessIdent({}@{})", self.pid, self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_child_has_ended_and_a_live_one_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let ident = ProcessIdent::of(child.id()).expect("the child runs");
        assert!(!ident.has_ended());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(ident.has_ended());
    }

    #[test]
    fn another_start_time_is_another_process() {
        let me = ProcessIdent::current();
        assert_ne!(me.start(), 0, "the start time is readable here");
        let impostor = ProcessIdent::new(me.pid(), me.start() + 1);
        assert!(impostor.has_ended(), "a reused pid is not the old process");
        assert!(!me.has_ended());
    }

    #[test]
    fn bits_round_trip_and_zero_is_nobody() {
        let me = ProcessIdent::current();
        assert_eq!(ProcessIdent::from_bits(me.to_bits()), Some(me));
        assert_eq!(ProcessIdent::from_bits(0), None);
        assert_eq!(ProcessIdent::from_bits(1 << 40), None, "no pid");
        assert!(ProcessIdent::of(0).is_none());
        assert!(ProcessIdent::of(u32::MAX).is_none());
    }
}
