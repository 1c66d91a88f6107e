//! The ptrace requests and waits themselves, one small function each: no policy, and nothing of
//! which threads are held or what is injected into them. Every request and `waitpid` on a tracee
//! must come from the thread that attached (see stopped.rs).

use std::io;
use std::time::{Duration, Instant};

use super::super::procfs;

// Constants that not every libc version exports on every target.
pub(crate) const PTRACE_EVENT_EXEC: i32 = 4;
pub(crate) const PTRACE_EVENT_STOP: i32 = 128;
const PTRACE_O_TRACESYSGOOD: usize = 1;
const PTRACE_O_TRACEEXEC: usize = 0x10;
const PTRACE_SYSEMU: libc::c_uint = 31;

fn ptrace(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: only requests whose addr/data are integers or point to memory owned by the caller
    // for the duration of the call are passed through here.
    let rc = unsafe { libc::ptrace(req, tid, addr, data) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// Attach without a signal: unlike `PTRACE_ATTACH`'s SIGSTOP, which a program could see,
/// `PTRACE_SEIZE` leaves the thread running, untouched, until we [`interrupt`] it.
pub(crate) fn seize(tid: i32) -> io::Result<()> {
    ptrace(
        libc::PTRACE_SEIZE,
        tid,
        0,
        PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC,
    )
    .map(drop)
}

/// Stop a seized thread with a `PTRACE_EVENT_STOP`, from inside the kernel's signal handling
/// (`get_signal`). A thread in an interruptible sleep (read, nanosleep, futex, epoll) is woken for
/// that; what it was doing is left for the kernel to restart or finish once we let go.
pub(crate) fn interrupt(tid: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

pub(crate) fn detach(tid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

/// How to let a stopped thread run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    Cont,
    /// One instruction, then a SIGTRAP stop. Over a syscall instruction: after the syscall.
    SingleStep,
    /// Until the next syscall entry or exit.
    Syscall,
    /// Until the next syscall entry, which is then skipped.
    Sysemu,
}

pub(crate) fn resume(tid: i32, how: Resume, sig: i32) -> io::Result<()> {
    let req = match how {
        Resume::Cont => libc::PTRACE_CONT,
        Resume::SingleStep => libc::PTRACE_SINGLESTEP,
        Resume::Syscall => libc::PTRACE_SYSCALL,
        Resume::Sysemu => PTRACE_SYSEMU,
    };
    ptrace(req, tid, 0, sig as usize).map(drop)
}

pub(crate) fn get_sigmask(tid: i32) -> io::Result<u64> {
    let mut mask: u64 = 0;
    ptrace(
        libc::PTRACE_GETSIGMASK,
        tid,
        8,
        &mut mask as *mut u64 as usize,
    )?;
    Ok(mask)
}

pub(crate) fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    ptrace(
        libc::PTRACE_SETSIGMASK,
        tid,
        8,
        &mask as *const u64 as usize,
    )
    .map(drop)
}

pub(crate) fn get_siginfo(tid: i32) -> io::Result<libc::siginfo_t> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    ptrace(
        libc::PTRACE_GETSIGINFO,
        tid,
        0,
        &mut info as *mut libc::siginfo_t as usize,
    )?;
    Ok(info)
}

/// What `waitpid` told about one traced thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `PTRACE_EVENT_STOP`: our interrupt (SIGTRAP) or a group-stop (the stop signal).
    Event(i32),
    /// Signal-delivery-stop: the thread is about to get this signal.
    Signal(i32),
    /// Syscall-entry or -exit stop.
    Syscall,
    /// After a successful execve.
    Exec,
    /// Some other ptrace event.
    OtherEvent(i32),
    /// The thread is gone (exit status or killing signal, as waitpid's raw status).
    Gone(i32),
}

fn decode(status: i32) -> Stop {
    if libc::WIFSTOPPED(status) {
        let sig = libc::WSTOPSIG(status);
        match status >> 16 {
            0 if sig == libc::SIGTRAP | 0x80 => Stop::Syscall,
            0 => Stop::Signal(sig),
            PTRACE_EVENT_STOP => Stop::Event(sig),
            PTRACE_EVENT_EXEC => Stop::Exec,
            ev => Stop::OtherEvent(ev),
        }
    } else {
        Stop::Gone(status)
    }
}

pub(crate) fn waitpid(tid: i32, nohang: bool) -> io::Result<Option<Stop>> {
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes one int to `status`.
        let r = unsafe { libc::waitpid(tid, &mut status, flags) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if e.raw_os_error() == Some(libc::ECHILD) {
                // Already reaped, or no longer ours: it is gone as far as we are concerned.
                return Ok(Some(Stop::Gone(0)));
            }
            return Err(e);
        }
        return Ok((r != 0).then(|| decode(status)));
    }
}

/// The next stop of `tid`, blocking. Only for a thread that is about to stop and is not a group
/// leader with siblings: a killed leader's exit is not reported while traced sibling threads
/// wait, as zombies, for us to reap them, so this could hang on it; use [`wait_stop`] there.
pub(crate) fn wait_stop_blocking(tid: i32) -> io::Result<Stop> {
    waitpid(tid, false).map(|s| s.unwrap_or(Stop::Gone(0)))
}

/// The next stop of `tid`, waiting as long as it takes but noticing when it died (see
/// [`wait_stop_blocking`]): polls, briskly for a while (a stop usually arrives within
/// microseconds), then sleeping between looks.
pub(crate) fn wait_stop(tid: i32) -> io::Result<Stop> {
    let start = Instant::now();
    let spin = Duration::from_millis(2);
    let mut next_check = spin;
    loop {
        if let Some(s) = waitpid(tid, true)? {
            return Ok(s);
        }
        let waited = start.elapsed();
        if waited < spin {
            std::thread::yield_now();
            continue;
        }
        std::thread::sleep(Duration::from_micros(50));
        if waited >= next_check {
            next_check += Duration::from_millis(2);
            if is_dead(tid) {
                return Ok(Stop::Gone(0));
            }
        }
    }
}

/// Whether a thread has exited (a zombie, or gone from /proc).
pub(crate) fn is_dead(tid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(stat) => matches!(procfs::parse_state(&stat), Some('Z') | Some('X') | None),
        Err(_) => true,
    }
}

/// The next stop of `tid`, or None at `deadline`. waitpid has no time-out: poll, briskly for
/// the first half millisecond (a stop usually arrives within tens of microseconds), then backing
/// off to a millisecond.
pub(crate) fn wait_stop_until(tid: i32, deadline: Instant) -> io::Result<Option<Stop>> {
    let start = Instant::now();
    let mut nap = Duration::from_micros(20);
    loop {
        if let Some(s) = waitpid(tid, true)? {
            return Ok(Some(s));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        if now - start < Duration::from_micros(500) {
            std::thread::yield_now();
            continue;
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(1));
    }
}
