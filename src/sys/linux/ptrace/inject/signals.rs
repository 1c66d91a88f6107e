//! The thread's signals while we work: blocked around our calls, a foreign one delivered as the
//! kernel would and the thread caught again, and the traps our calls queued taken out before we
//! let go (see the module doc of inject).

use super::*;

pub(super) const fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// Signals the kernel may force on the thread (a fault of our instruction, a seccomp trap, our
/// single-step trap). Never blocked by us: forcing a blocked signal resets its handler.
pub(super) const SYNCHRONOUS: u64 = bit(libc::SIGTRAP)
    | bit(libc::SIGSEGV)
    | bit(libc::SIGBUS)
    | bit(libc::SIGILL)
    | bit(libc::SIGFPE)
    | bit(libc::SIGSYS);

/// A thread that first stopped on its way to a signal: let it take the signal (as it would have
/// once let go) and catch it at an event stop at the handler's entry. True when one is ready.
pub(super) fn retrap_signalled(p: &mut StoppedProcess) -> bool {
    let Some(idx) = p
        .threads()
        .iter()
        .position(|t| matches!(t.state, ThreadState::Stopped { event: false, pass } if pass != 0))
    else {
        return false;
    };
    let (tid, ThreadState::Stopped { mut pass, .. }) =
        (p.threads()[idx].tid, p.threads()[idx].state)
    else {
        return false;
    };
    for _ in 0..16 {
        if interrupt(tid).is_err() || resume(tid, Resume::Cont, pass).is_err() {
            return false;
        }
        match wait_stop_until(tid, Instant::now() + STOP_DEADLINE) {
            Ok(Some(Stop::Event(_))) => {
                let event = ThreadState::Stopped {
                    event: true,
                    pass: 0,
                };
                p.set_thread_state(idx, event);
                return true;
            }
            Ok(Some(Stop::Signal(next))) => pass = next,
            Ok(Some(Stop::Syscall | Stop::OtherEvent(_))) => pass = 0,
            Ok(Some(Stop::Gone(_))) => {
                p.set_thread_state(idx, ThreadState::Gone);
                return false;
            }
            _ => {
                // Not stopped (yet): the release waits for it like any thread never seen stopped.
                p.set_thread_state(idx, ThreadState::Running);
                return false;
            }
        }
    }
    let held = ThreadState::Stopped { event: false, pass };
    p.set_thread_state(idx, held);
    false
}

/// Block the thread's signals for a call (see the module doc), keeping its own mask to put back.
pub(super) fn block_signals(s: &mut Session) -> Result<(), InjectError> {
    if !s.may_mask || s.orig_mask.is_some() {
        return Ok(());
    }
    let mask = get_sigmask(s.tid).map_err(pt("GETSIGMASK"))?;
    s.orig_mask = Some(mask);
    s.dirty = true;
    // The synchronous signals keep the app's own setting: forcing one the app blocks would reset
    // its handler, and one it blocks must not be dequeued while we work.
    set_sigmask(s.tid, call_mask(s, mask)).map_err(pt("SETSIGMASK"))
}

/// The mask our calls run with, from the thread's own.
pub(super) fn call_mask(s: &Session, own: u64) -> u64 {
    let block = !SYNCHRONOUS | (own & SYNCHRONOUS);
    if s.sud_unknown {
        block & !bit(libc::SIGSYS)
    } else {
        block
    }
}

/// From a signal-delivery stop with the thread's own registers and mask in place: hand it `sig`
/// (delivered as the kernel would: handler frame, default action) and catch the thread at an event
/// stop before it runs any user instruction. Signals met on the way are delivered likewise.
pub(super) fn pass_and_retrap(s: &mut Session, mut sig: i32) -> Result<(), InjectError> {
    let tid = s.tid;
    loop {
        interrupt(tid).map_err(pt("INTERRUPT"))?;
        resume(tid, Resume::Cont, sig).map_err(pt("CONT"))?;
        match wait(s)? {
            Stop::Event(_) => {
                s.in_get_signal = true;
                return Ok(());
            }
            Stop::Signal(next) => sig = next,
            Stop::Syscall | Stop::OtherEvent(_) => sig = 0,
            other => return Err(unexpected(other)),
        }
    }
}

/// How many foreign signals one call may deliver before it gives up (see `run_call`).
pub(super) const MAX_SIGNAL_ROUNDS: usize = 64;

/// SIGTRAP or SIGSYS queued on the thread by the kernel since we took it: ours (a trapped call,
/// a trap of our making), never the app's. Its own and other senders' signals are not counted.
pub(crate) fn own_signals(before: &[Pending], now: &[Pending]) -> Vec<Pending> {
    let mut left: Vec<Pending> = before.to_vec();
    let mut ours = Vec::new();
    for &p in now {
        if let Some(i) = left.iter().position(|&b| b == p) {
            left.remove(i);
        } else if matches!(p.0, libc::SIGTRAP | libc::SIGSYS) && p.1 > 0 {
            ours.push(p);
        }
    }
    ours
}

/// Take out of the thread's queue what [`own_signals`] finds, with the thread's own state in
/// place: everything but that signal blocked, let the thread dequeue it, drop it, catch the
/// thread again before any user instruction; the thread's own mask comes back on every path.
pub(super) fn drain_own_signals(s: &mut Session, pass: &mut i32) -> Result<(), InjectError> {
    let tid = s.tid;
    let now = raw::pending_signals(tid).map_err(pt("PEEKSIGINFO"))?;
    let ours = own_signals(&s.pending_before, &now);
    if ours.is_empty() {
        return Ok(());
    }
    if *pass != 0 {
        // At a signal-delivery stop for a foreign signal: deliver it first, then drain.
        pass_and_retrap(s, *pass)?;
        *pass = 0;
    }
    let own_mask = get_sigmask(tid).map_err(pt("GETSIGMASK"))?;
    let drained = (|| {
        for (sig, _) in ours {
            // A few rounds: a blocked synchronous signal of the app's may be dequeued first
            // (dequeue_synchronous_signal does not look at the mask); it is handed back.
            for _ in 0..8 {
                set_sigmask(tid, !bit(sig)).map_err(pt("SETSIGMASK"))?;
                // No interrupt pending: get_signal dequeues the signal we saw queued.
                resume(tid, Resume::Cont, 0).map_err(pt("CONT"))?;
                let (got, deliver) = match wait(s)? {
                    Stop::Signal(got) if got == sig => (true, 0),
                    Stop::Signal(other) => (false, other),
                    Stop::Event(_) => (false, 0),
                    other => return Err(unexpected(other)),
                };
                // Ours is dropped; the app's is handed back (blocked, the kernel queues it
                // again); and the thread is caught before it runs any user instruction.
                interrupt(tid).map_err(pt("INTERRUPT"))?;
                resume(tid, Resume::Cont, deliver).map_err(pt("CONT"))?;
                match wait(s)? {
                    Stop::Event(_) => {}
                    other => return Err(unexpected(other)),
                }
                if got {
                    break;
                }
            }
        }
        Ok(())
    })();
    let restored = set_sigmask(tid, own_mask).map_err(pt("SETSIGMASK"));
    drained.and(restored)
}
