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
//! Each thread is traced by a thread of ours made for it, which detaches it; a thread that does
//! not come to a stop within the bound (asleep in another call) is not interrupted again — that
//! would end its sleep, and an `epoll_wait` would return EINTR — but let go by the kernel when
//! that thread of ours exits. Only a thread running at the instant of the look is interrupted at
//! all.

use std::time::{Duration, Instant};

use super::super::procfs;
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
    let (found, seized): (Vec<(i32, Option<T>)>, Vec<i32>) = std::thread::scope(|scope| {
        let handles: Vec<_> = tids
            .iter()
            .map(|&tid| scope.spawn(move || (tid, next_call(tid, bound, wanted, read))))
            .collect();
        let done: Vec<(i32, (Option<T>, bool))> =
            handles.into_iter().filter_map(|h| h.join().ok()).collect();
        let seized = done
            .iter()
            .filter(|(_, (_, s))| *s)
            .map(|(t, _)| *t)
            .collect();
        (done.into_iter().map(|(t, (f, _))| (t, f)).collect(), seized)
    });
    // A thread of ours lets go of its tracee when it exits, a little after `join` returns: wait
    // (bounded) until none is traced any more, so that a reap right after finds it free.
    let deadline = Instant::now() + Duration::from_secs(1);
    for tid in seized {
        while traced(tid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    found
        .into_iter()
        .filter_map(|(tid, f)| f.map(|f| (tid, f)))
        .collect()
}

/// Whether `tid` is still traced by anyone (TracerPid in its status).
fn traced(tid: i32) -> bool {
    procfs::read_status_field(tid, None, "TracerPid").is_some_and(|v| v.trim() != "0")
}

/// Whether the thread is running now (not asleep in a call, which an interrupt would end).
fn running(tid: i32) -> bool {
    procfs::thread_state(tid, tid) == Some('R')
}

/// The thread's next wanted call, and whether it was seized (and so must be let go).
fn next_call<T>(
    tid: i32,
    bound: Duration,
    wanted: &dyn Fn(u64) -> bool,
    read: &dyn Fn(i32, u64, [u64; 6]) -> Option<T>,
) -> (Option<T>, bool) {
    if raw::seize(tid).is_err() {
        return (None, false);
    }
    let deadline = Instant::now() + bound;
    // An interrupt ends an interruptible sleep (epoll_wait would return EINTR): only a thread
    // that is running at this instant is taken into a stop.
    if !running(tid) || interrupt(tid).is_err() {
        let _ = raw::detach(tid, 0);
        return (None, true);
    }
    loop {
        let stop = match wait_stop_until(tid, deadline) {
            Ok(Some(stop)) => stop,
            // Bound reached with the thread running or asleep in some call: it is not
            // interrupted again (that would end its sleep); it is let go when this thread of
            // ours exits, which takes it out of any traced stop it reaches meanwhile.
            _ => return (None, true),
        };
        let pass = match stop {
            Stop::Gone(_) => return (None, true),
            // A group stop: the process was stopped by a signal; leave it so.
            Stop::Event(sig) if sig != libc::SIGTRAP => {
                let _ = raw::detach(tid, 0);
                return (None, true);
            }
            Stop::Signal(sig) => sig,
            Stop::Syscall => {
                if let Ok(SyscallStop::Entry { nr, args }) = raw::syscall_info(tid) {
                    if wanted(nr) {
                        let found = read(tid, nr, args);
                        let _ = raw::detach(tid, 0);
                        return (found, true);
                    }
                }
                0
            }
            _ => 0,
        };
        if Instant::now() >= deadline {
            // at a stop, past the bound: let go here, with the signal it was about to take
            let _ = raw::detach(tid, pass);
            return (None, true);
        }
        if resume(tid, Resume::Syscall, pass).is_err() {
            return (None, true);
        }
    }
}
