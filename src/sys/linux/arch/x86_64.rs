//! x86_64: `syscall` (`0f 05`), number in rax, arguments in rdi rsi rdx r10 r8 r9, result in rax.
//!
//! The kernel keeps the number of the syscall a thread is in as `orig_rax` (-1: none) and decides
//! on a restart *after* the tracer's stop, from the registers it then finds (`rax` holding
//! -ERESTARTSYS and friends, `orig_rax` the call): so saving and restoring the full register set,
//! `orig_rax` included, at a stop inside `get_signal` reproduces exactly what would have happened.
//! An injected call sets `orig_rax` to -1 so that restart logic never touches it.

use std::io;

pub mod nr {
    pub const CLOSE: i64 = 3;
    pub const OPENAT: i64 = 257;
    pub const DUP3: i64 = 292;
    pub const CLOSE_RANGE: i64 = 436;
    #[cfg(test)]
    pub const GETPID: i64 = 39;
    pub const FUTEX: i64 = 202;
    pub const RT_SIGSUSPEND: i64 = 130;
    pub const PSELECT6: i64 = 270;
    pub const PPOLL: i64 = 271;
    pub const EPOLL_PWAIT: i64 = 281;
    pub const IO_PGETEVENTS: i64 = 333;
    pub const IO_URING_ENTER: i64 = 426;
    pub const EPOLL_PWAIT2: i64 = 441;
}

pub const SYSCALL_INSN: &[u8] = &[0x0f, 0x05];
/// `int 0x80`: a 64-bit thread can make 32-bit system calls with it. Its restart after our stop
/// would use the 64-bit restart number (TS_COMPAT is gone by then): such a thread is not used.
pub const COMPAT_SYSCALL_INSN: Option<&[u8]> = Some(&[0xcd, 0x80]);
/// Instructions may start at any byte.
pub const INSN_ALIGN: u64 = 1;

pub fn insn_aligned(_addr: u64) -> bool {
    true
}
/// The ABI lets leaf functions use 128 bytes below rsp without moving it.
pub const RED_ZONE: u64 = 128;
/// x86_64 rewinds an interrupted syscall after the tracer's stop (see the module doc).
pub const REWINDS_BEFORE_STOP: bool = false;

const WORDS: usize = std::mem::size_of::<libc::user_regs_struct>() / 8;

/// The general registers, as `PTRACE_GETREGS` gives them.
#[derive(Clone, Copy)]
pub struct Regs(libc::user_regs_struct);

impl Regs {
    fn words(&self) -> [u64; WORDS] {
        // SAFETY: user_regs_struct is repr(C) and made of WORDS u64 fields, no padding.
        unsafe { std::mem::transmute::<libc::user_regs_struct, [u64; WORDS]>(self.0) }
    }

    pub fn pc(&self) -> u64 {
        self.0.rip
    }

    pub fn set_pc(&mut self, pc: u64) {
        self.0.rip = pc;
    }

    pub fn sp(&self) -> u64 {
        self.0.rsp
    }

    /// A 64-bit task (the `syscall` instruction and these numbers do not apply to ia32 ones).
    pub fn is_native(&self) -> bool {
        self.0.cs == 0x33
    }

    /// The syscall the thread is in (interrupted or finished but not yet returned to user mode).
    pub fn current_syscall(&self) -> Option<u64> {
        ((self.0.orig_rax as i64) >= 0).then_some(self.0.orig_rax)
    }

    pub fn syscall_arg(&self, i: usize) -> u64 {
        let r = &self.0;
        [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9][i]
    }

    /// Where the thread's own syscall instruction would be: it is in a syscall, so it got there
    /// through the instruction just before rip (to be checked by reading the bytes: `int 0x80`
    /// also enters the kernel).
    pub fn own_insn_candidate(&self) -> Option<u64> {
        self.current_syscall().map(|_| self.0.rip.wrapping_sub(2))
    }

    /// Registers for running `nr(args)` at `insn`; everything else as it is.
    pub fn prepare_call(&mut self, insn: u64, nr: u64, args: [u64; 6]) {
        let r = &mut self.0;
        r.rip = insn;
        r.rax = nr;
        r.orig_rax = u64::MAX;
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.r9 = args[5];
    }
}

#[cfg(test)]
impl Regs {
    /// The same state as `before`: on x86_64 nothing may differ (see aarch64's).
    pub fn same_state_as(&self, before: &Regs) -> bool {
        self == before
    }
}

impl PartialEq for Regs {
    fn eq(&self, other: &Regs) -> bool {
        self.words() == other.words()
    }
}

impl std::fmt::Debug for Regs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.0;
        write!(
            f,
            "rip={:#x} rsp={:#x} rax={:#x} orig_rax={:#x} rdi={:#x} rsi={:#x} rdx={:#x} r10={:#x} \
             eflags={:#x} cs={:#x}",
            r.rip, r.rsp, r.rax, r.orig_rax, r.rdi, r.rsi, r.rdx, r.r10, r.eflags, r.cs
        )
    }
}

pub fn get_regs(tid: i32) -> io::Result<Regs> {
    // SAFETY: an all-zero user_regs_struct is valid (plain integers).
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS writes one user_regs_struct to the pointer we pass.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            0usize,
            &mut r as *mut libc::user_regs_struct,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(Regs(r))
}

pub fn set_regs(tid: i32, regs: &Regs) -> io::Result<()> {
    // SAFETY: PTRACE_SETREGS reads one user_regs_struct from the pointer we pass.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            tid,
            0usize,
            &regs.0 as *const libc::user_regs_struct,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// State outside the general registers that an injected call changes: none on x86_64
/// (`orig_rax` is one of the registers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Extra;

pub fn get_extra(_tid: i32) -> io::Result<Extra> {
    Ok(Extra)
}

pub fn set_extra(_tid: i32, _extra: &Extra) -> io::Result<()> {
    Ok(())
}

/// At a syscall-entry stop: make the kernel skip the call. Not needed on x86_64 (see
/// `REWINDS_BEFORE_STOP`), but kept for symmetry.
pub fn skip_syscall(tid: i32) -> io::Result<()> {
    let mut r = get_regs(tid)?;
    r.0.orig_rax = u64::MAX;
    set_regs(tid, &r)
}
