//! aarch64: `svc #0` (`d4000001`), number in x8, arguments in x0..x5, result in x0.
//!
//! Unlike x86_64, the kernel rewinds an interrupted syscall *before* the tracer sees the stop
//! (arch/arm64/kernel/signal.c, `do_signal`): pc is moved back onto the `svc`, x0 gets the first
//! argument back, and the number is forgotten; the switch to `restart_syscall` for
//! -ERESTART_RESTARTBLOCK (nanosleep, poll, futex with a timeout) happens only *after* the stop,
//! and only if pc is still the `svc` it rewound to, using values it kept on its own stack. Any
//! register state we restore later runs through a different `do_signal`, which no longer knows.
//! So a thread found sitting on a `svc` is first "settled" (see inject.rs): we let that
//! `do_signal` finish, catch the thread at the `svc` with `PTRACE_SYSEMU`, and take the
//! registers there (x8 now holding `restart_syscall` when due) as the state to restore.
//!
//! Registers come through `PTRACE_GETREGSET`/`NT_PRSTATUS` (`user_pt_regs`); the kernel's own
//! record of the current syscall number (`syscallno`) through `NT_ARM_SYSTEM_CALL`.

use std::io;

pub mod nr {
    pub const CLOSE: i64 = 57;
    pub const OPENAT: i64 = 56;
    pub const DUP3: i64 = 24;
    pub const CLOSE_RANGE: i64 = 436;
    #[cfg(test)]
    pub const GETPID: i64 = 172;
    pub const FUTEX: i64 = 98;
    pub const RT_SIGSUSPEND: i64 = 133;
    pub const PSELECT6: i64 = 72;
    pub const PPOLL: i64 = 73;
    pub const EPOLL_PWAIT: i64 = 22;
    pub const IO_PGETEVENTS: i64 = 292;
    pub const IO_URING_ENTER: i64 = 426;
    pub const EPOLL_PWAIT2: i64 = 441;
}

/// `svc #0`, little-endian.
/// No second system-call instruction for another ABI here.
pub const COMPAT_SYSCALL_INSN: Option<&[u8]> = None;
pub const SYSCALL_INSN: &[u8] = &[0x01, 0x00, 0x00, 0xd4];
pub const INSN_ALIGN: u64 = 4;

pub fn insn_aligned(addr: u64) -> bool {
    addr.is_multiple_of(4)
}
/// AAPCS64 has no red zone.
pub const RED_ZONE: u64 = 0;
/// See the module doc.
pub const REWINDS_BEFORE_STOP: bool = true;

const NT_PRSTATUS: libc::c_int = 1;
const NT_ARM_SYSTEM_CALL: libc::c_int = 0x404;
/// PSR_MODE32_BIT: an AArch32 task.
const PSR_MODE32: u64 = 0x10;

/// `user_pt_regs`: x0..x30, sp, pc, pstate.
#[derive(Clone, Copy)]
pub struct Regs(libc::user_regs_struct);

impl Regs {
    pub fn pc(&self) -> u64 {
        self.0.pc
    }

    pub fn set_pc(&mut self, pc: u64) {
        self.0.pc = pc;
    }

    pub fn sp(&self) -> u64 {
        self.0.sp
    }

    pub fn is_native(&self) -> bool {
        self.0.pstate & PSR_MODE32 == 0
    }

    /// The kernel forgets the number before the stop, so this is x8, the number the thread last
    /// loaded: a guess that may name a call the thread is not in (callers only use it to be
    /// careful).
    pub fn current_syscall(&self) -> Option<u64> {
        Some(self.0.regs[8])
    }

    pub fn syscall_arg(&self, i: usize) -> u64 {
        self.0.regs[i]
    }

    /// The `svc` just before pc, when the thread has returned from a call it completed. Only
    /// within pc's own page, which is executable since the thread runs there.
    pub fn own_insn_candidate(&self) -> Option<u64> {
        (self.0.pc & 0xfff >= 4).then(|| self.0.pc - 4)
    }

    pub fn prepare_call(&mut self, insn: u64, nr: u64, args: [u64; 6]) {
        let r = &mut self.0;
        r.pc = insn;
        r.regs[8] = nr;
        r.regs[..6].copy_from_slice(&args);
    }
}

#[cfg(test)]
const NR_RESTART_SYSCALL: u64 = 128;

#[cfg(test)]
impl Regs {
    /// The same state as `before` (taken at the stop), counting as unchanged the one difference
    /// settling makes: x8 switched to `restart_syscall` on a rewound call (the kernel would have
    /// done it on resume, for an interrupted nanosleep, poll or timed futex).
    pub fn same_state_as(&self, before: &Regs) -> bool {
        let mut b = *before;
        if self.0.regs[8] == NR_RESTART_SYSCALL && self.0.pc == b.0.pc {
            b.0.regs[8] = NR_RESTART_SYSCALL;
        }
        *self == b
    }
}

impl PartialEq for Regs {
    fn eq(&self, other: &Regs) -> bool {
        let (a, b) = (&self.0, &other.0);
        a.regs == b.regs && a.sp == b.sp && a.pc == b.pc && a.pstate == b.pstate
    }
}

impl std::fmt::Debug for Regs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.0;
        write!(
            f,
            "pc={:#x} sp={:#x} x0={:#x} x1={:#x} x2={:#x} x7={:#x} x8={:#x} pstate={:#x}",
            r.pc, r.sp, r.regs[0], r.regs[1], r.regs[2], r.regs[7], r.regs[8], r.pstate
        )
    }
}

fn getregset<T>(tid: i32, note: libc::c_int, val: &mut T) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: val as *mut T as *mut libc::c_void,
        iov_len: std::mem::size_of::<T>(),
    };
    // SAFETY: the kernel writes at most iov_len bytes to iov_base, which is `val`.
    let rc = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, tid, note as usize, &mut iov) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(iov.iov_len)
}

fn setregset<T>(tid: i32, note: libc::c_int, val: &T) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: val as *const T as *mut libc::c_void,
        iov_len: std::mem::size_of::<T>(),
    };
    // SAFETY: the kernel reads iov_len bytes from iov_base, which is `val`.
    let rc = unsafe { libc::ptrace(libc::PTRACE_SETREGSET, tid, note as usize, &mut iov) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn get_regs(tid: i32) -> io::Result<Regs> {
    // SAFETY: an all-zero user_regs_struct is valid (plain integers).
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    let len = getregset(tid, NT_PRSTATUS, &mut r)?;
    if len != std::mem::size_of::<libc::user_regs_struct>() {
        // An AArch32 task gets the compat layout.
        r.pstate |= PSR_MODE32;
    }
    Ok(Regs(r))
}

pub fn set_regs(tid: i32, regs: &Regs) -> io::Result<()> {
    setregset(tid, NT_PRSTATUS, &regs.0)
}

/// The kernel's `syscallno`, which an injected `svc` overwrites.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Extra {
    syscallno: i32,
}

pub fn get_extra(tid: i32) -> io::Result<Extra> {
    let mut syscallno: i32 = -1;
    getregset(tid, NT_ARM_SYSTEM_CALL, &mut syscallno)?;
    Ok(Extra { syscallno })
}

pub fn set_extra(tid: i32, extra: &Extra) -> io::Result<()> {
    setregset(tid, NT_ARM_SYSTEM_CALL, &extra.syscallno)
}

/// At a syscall-entry stop: make the kernel skip the call and treat the thread as not in one
/// (no restart logic afterwards).
pub fn skip_syscall(tid: i32) -> io::Result<()> {
    set_extra(tid, &Extra { syscallno: -1 })
}
