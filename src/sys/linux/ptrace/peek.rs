//! Catching one thread's next system call of a kind, with that thread alone traced and nothing
//! of it changed: how a poll() loop that is busy at the instant of the scan (it never waits: a
//! hung-up master makes every poll return at once) is seen.
//!
//! The thread is seized alone (`PTRACE_SEIZE`), interrupted once to take it into a stop, and
//! resumed with `PTRACE_SYSCALL` until it enters a wanted call or the bound passes; the
//! arguments are read at the syscall-entry stop, where its memory is as the call will see it,
//! and the thread is detached there (the call then runs as it would have). No register, mask or
//! memory is written. A signal met on the way is passed on as it arrived; a group stop (the
//! process was stopped) ends the look at once, leaving it stopped. The other threads run on
//! untouched. Should ptyreap die meanwhile, the kernel ends syscall tracing with the tracer:
//! nothing is left behind.
//!
//! Each thread is traced by a thread of ours made for it, which detaches it; a thread that could
//! not be detached (it never stopped again within the bound) is let go by the kernel when that
//! thread of ours exits.

use std::time::{Duration, Instant};

use super::raw::{self, interrupt, resume, wait_stop_until, Resume, Stop, SyscallStop};

/// How long a thread is watched for its next call of interest.
pub const BUSY_BOUND: Duration = Duration::from_millis(200);

/// For each of `tids` (threads of one process), at the entry of its next system call whose
/// number `wanted` accepts, within `bound`: what `read` makes of (number, arguments) while the
/// thread is stopped there. All threads are watched at once, each on a thread of ours.
pub fn next_calls<T: Send>(
    tids: &[i32],
    bound: Duration,
    wanted: &(dyn Fn(u64) -> bool + Sync),
    read: &(dyn Fn(i32, u64, [u64; 6]) -> Option<T> + Sync),
) -> Vec<(i32, T)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = tids
            .iter()
            .map(|&tid| scope.spawn(move || (tid, next_call(tid, bound, wanted, read))))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .filter_map(|(tid, found)| found.map(|f| (tid, f)))
            .collect()
    })
}

fn next_call<T>(
    tid: i32,
    bound: Duration,
    wanted: &dyn Fn(u64) -> bool,
    read: &dyn Fn(i32, u64, [u64; 6]) -> Option<T>,
) -> Option<T> {
    raw::seize(tid).ok()?;
    let deadline = Instant::now() + bound;
    if interrupt(tid).is_err() {
        let _ = raw::detach(tid, 0);
        return None;
    }
    let mut found = None;
    let mut giving_up = false;
    loop {
        let limit = if giving_up {
            Instant::now() + Duration::from_millis(500)
        } else {
            deadline
        };
        let stop = match wait_stop_until(tid, limit) {
            Ok(Some(stop)) => stop,
            Ok(None) if !giving_up => {
                // Bound reached: take it into a stop to let go of it.
                giving_up = true;
                let _ = interrupt(tid);
                continue;
            }
            // Never stopped again: let go when this thread of ours exits (module doc).
            _ => return found,
        };
        let pass = match stop {
            Stop::Gone(_) => return found,
            // A group stop: the process was stopped by a signal; leave it so.
            Stop::Event(sig) if sig != libc::SIGTRAP => {
                let _ = raw::detach(tid, 0);
                return found;
            }
            Stop::Signal(sig) => sig,
            Stop::Syscall if !giving_up => {
                if let Ok(SyscallStop::Entry { nr, args }) = raw::syscall_info(tid) {
                    if wanted(nr) {
                        found = read(tid, nr, args);
                        let _ = raw::detach(tid, 0);
                        return found;
                    }
                }
                0
            }
            _ => 0,
        };
        if giving_up {
            let _ = raw::detach(tid, pass);
            return found;
        }
        if resume(tid, Resume::Syscall, pass).is_err() {
            return found;
        }
    }
}
