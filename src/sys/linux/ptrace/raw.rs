//! The ptrace requests and waits themselves, one small function each: no policy, and nothing of
//! which threads are held or what is injected into them. Every request and `waitpid` on a tracee
//! must come from the thread that attached (see stopped.rs).

use std::io;
use std::time::{Duration, Instant};

// Constants that not every libc version exports on every target.
pub(crate) const PTRACE_EVENT_EXEC: i32 = 4;
pub(crate) const PTRACE_EVENT_STOP: i32 = 128;
const PTRACE_O_TRACESYSGOOD: usize = 1;
const PTRACE_O_TRACEEXEC: usize = 0x10;
/// The options every thread is seized with.
pub(crate) const SEIZE_OPTIONS: usize = PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC;
/// The tracee's seccomp filters do not run while set (include/uapi/linux/ptrace.h).
pub(crate) const PTRACE_O_SUSPEND_SECCOMP: usize = 1 << 21;
/// ptrace's request type: glibc declares `c_uint` (and its PTRACE_* constants so), musl `c_int`.
#[cfg(target_env = "gnu")]
pub(crate) type Request = libc::c_uint;
#[cfg(not(target_env = "gnu"))]
pub(crate) type Request = libc::c_int;

const PTRACE_SYSEMU: Request = 31;
// libc's musl module types these two c_uint, unlike its other PTRACE_* constants there
const PTRACE_GETSIGMASK: Request = 0x420a;
const PTRACE_SETSIGMASK: Request = 0x420b;
const PTRACE_SETOPTIONS: Request = 0x4200;
const PTRACE_PEEKSIGINFO: Request = 0x4209;
const PTRACE_GET_SYSCALL_INFO: Request = 0x420e;
const PTRACE_GET_RSEQ_CONFIGURATION: Request = 0x420f;
const PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG: Request = 0x4210;
const PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG: Request = 0x4211;

fn ptrace(req: Request, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
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
    ptrace(libc::PTRACE_SEIZE, tid, 0, SEIZE_OPTIONS).map(drop)
}

/// Replace a stopped tracee's ptrace options (`SEIZE_OPTIONS` plus or minus others).
pub(crate) fn set_options(tid: i32, options: usize) -> io::Result<()> {
    ptrace(PTRACE_SETOPTIONS, tid, 0, options).map(drop)
}

/// Where a thread at a syscall stop is (`PTRACE_GET_SYSCALL_INFO`, Linux 5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyscallStop {
    Entry {
        nr: u64,
        args: [u64; 6],
    },
    /// The call's own result, as it will reach the program (not a rolled-back register).
    Exit {
        rval: i64,
    },
    Other,
}

/// `struct ptrace_syscall_info` (include/uapi/linux/ptrace.h): op, pad, arch, pc, sp, union.
#[repr(C)]
struct SyscallInfo {
    op: u8,
    pad: [u8; 3],
    arch: u32,
    instruction_pointer: u64,
    stack_pointer: u64,
    data: [u64; 8],
}

pub(crate) fn syscall_info(tid: i32) -> io::Result<SyscallStop> {
    // SAFETY: plain data; all-zero is valid.
    let mut info: SyscallInfo = unsafe { std::mem::zeroed() };
    ptrace(
        PTRACE_GET_SYSCALL_INFO,
        tid,
        std::mem::size_of::<SyscallInfo>(),
        &mut info as *mut SyscallInfo as usize,
    )?;
    Ok(match info.op {
        1 => SyscallStop::Entry {
            nr: info.data[0],
            args: [
                info.data[1],
                info.data[2],
                info.data[3],
                info.data[4],
                info.data[5],
                info.data[6],
            ],
        },
        2 => SyscallStop::Exit {
            rval: info.data[0] as i64,
        },
        _ => SyscallStop::Other,
    })
}

/// One signal waiting in a thread's own queue: (signo, si_code).
pub(crate) type Pending = (i32, i32);

/// The signals queued for this thread alone (not the process-wide queue), oldest first
/// (`PTRACE_PEEKSIGINFO`).
pub(crate) fn pending_signals(tid: i32) -> io::Result<Vec<Pending>> {
    #[repr(C)]
    struct Args {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let args = Args {
            off: out.len() as u64,
            flags: 0,
            nr: BATCH as i32,
        };
        // SAFETY: plain data; all-zero is valid.
        let mut buf: [libc::siginfo_t; BATCH] = unsafe { std::mem::zeroed() };
        let n = ptrace(
            PTRACE_PEEKSIGINFO,
            tid,
            &args as *const Args as usize,
            buf.as_mut_ptr() as usize,
        )? as usize;
        out.extend(buf[..n.min(BATCH)].iter().map(|i| (i.si_signo, i.si_code)));
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// A thread's rseq registration (`PTRACE_GET_RSEQ_CONFIGURATION`, Linux 5.13): the address of
/// its `struct rseq` and the signature that must precede every abort handler. None: none.
pub(crate) fn rseq_configuration(tid: i32) -> io::Result<Option<(u64, u32)>> {
    #[repr(C)]
    struct Conf {
        rseq_abi_pointer: u64,
        rseq_abi_size: u32,
        signature: u32,
        flags: u32,
        pad: u32,
    }
    // SAFETY: plain data; all-zero is valid.
    let mut conf: Conf = unsafe { std::mem::zeroed() };
    ptrace(
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        std::mem::size_of::<Conf>(),
        &mut conf as *mut Conf as usize,
    )?;
    Ok((conf.rseq_abi_pointer != 0).then_some((conf.rseq_abi_pointer, conf.signature)))
}

/// A thread's Syscall User Dispatch configuration (`struct ptrace_sud_config`,
/// include/uapi/linux/ptrace.h, Linux 6.2): `mode` 0 off, 1 on; `offset` and `len` as the kernel
/// keeps them (for a range given with `PR_SYS_DISPATCH_INCLUSIVE_ON` the kernel stores the
/// complement: `offset` at its end, `len` negated, and reports mode 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SudConfig {
    pub mode: u64,
    pub selector: u64,
    pub offset: u64,
    pub len: u64,
}

/// `PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG`; EIO before Linux 6.2, EINVAL where the kernel has
/// no Syscall User Dispatch at all.
pub(crate) fn sud_config(tid: i32) -> io::Result<SudConfig> {
    let mut c = SudConfig::default();
    ptrace(
        PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG,
        tid,
        std::mem::size_of::<SudConfig>(),
        &mut c as *mut SudConfig as usize,
    )?;
    Ok(c)
}

/// `PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG`, validated by the kernel as prctl's arguments are.
pub(crate) fn set_sud_config(tid: i32, c: &SudConfig) -> io::Result<()> {
    ptrace(
        PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG,
        tid,
        std::mem::size_of::<SudConfig>(),
        c as *const SudConfig as usize,
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
    /// Until the next syscall entry or exit.
    Syscall,
    /// Until the next syscall entry, which is then skipped.
    Sysemu,
}

pub(crate) fn resume(tid: i32, how: Resume, sig: i32) -> io::Result<()> {
    let req = match how {
        Resume::Cont => libc::PTRACE_CONT,
        Resume::Syscall => libc::PTRACE_SYSCALL,
        Resume::Sysemu => PTRACE_SYSEMU,
    };
    ptrace(req, tid, 0, sig as usize).map(drop)
}

pub(crate) fn get_sigmask(tid: i32) -> io::Result<u64> {
    let mut mask: u64 = 0;
    ptrace(PTRACE_GETSIGMASK, tid, 8, &mut mask as *mut u64 as usize)?;
    Ok(mask)
}

pub(crate) fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    ptrace(PTRACE_SETSIGMASK, tid, 8, &mask as *const u64 as usize).map(drop)
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
