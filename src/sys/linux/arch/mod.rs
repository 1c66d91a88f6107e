//! What differs between the CPUs we inject on: register layout and how to read and write it, the
//! syscall instruction, the syscall numbers, where the syscall number and arguments go.
//!
//! Each module exports the same names (`Regs`, `get_regs`, `set_regs`, `Extra`, `get_extra`,
//! `set_extra`, `skip_syscall`, `SYSCALL_INSN`, `INSN_ALIGN`, `RED_ZONE`, `REWINDS_BEFORE_STOP`,
//! `nr`); everything above this module is written once against them.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("ptyreap injects on x86_64 and aarch64 only");

/// Length of the syscall instruction in bytes.
pub const INSN_LEN: u64 = SYSCALL_INSN.len() as u64;

/// Syscalls that install a temporary signal mask (`set_user_sigmask`, `sigsuspend`) and, when
/// interrupted, leave the kernel's TIF_RESTORE_SIGMASK set until the signal-return path puts the
/// real mask back. `PTRACE_SETSIGMASK` clears that flag (kernel/ptrace.c), so the temporary mask
/// would stay for good: a thread stopped in one of these (with a mask argument) is injected on
/// without touching its mask. Each entry: the number and the index of the mask argument (`None`:
/// the call always has one).
pub const TEMPORARY_MASK_SYSCALLS: [(u64, Option<usize>); 7] = [
    (nr::PPOLL as u64, Some(3)),
    (nr::PSELECT6 as u64, Some(5)),
    (nr::EPOLL_PWAIT as u64, Some(4)),
    (nr::EPOLL_PWAIT2 as u64, Some(4)),
    (nr::IO_PGETEVENTS as u64, Some(5)),
    (nr::IO_URING_ENTER as u64, Some(4)),
    (nr::RT_SIGSUSPEND as u64, None),
];

/// Whether a thread stopped with these registers may have a temporary signal mask pending
/// restoration (see [`TEMPORARY_MASK_SYSCALLS`]). Errs on the side of "yes".
pub fn may_have_temporary_mask(regs: &Regs) -> bool {
    let Some(call) = regs.current_syscall() else {
        return false;
    };
    TEMPORARY_MASK_SYSCALLS.iter().any(|&(n, arg)| {
        n == call
            && match arg {
                None => true,
                Some(i) => regs.syscall_arg(i) != 0,
            }
    })
}
