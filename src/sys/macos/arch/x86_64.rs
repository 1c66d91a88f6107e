//! x86_64 (System V, as macOS uses it): arguments in rdi, rsi, rdx, rcx, r8, r9; return value in
//! rax; the return address on the stack, with rsp ≡ 8 (mod 16) at the function's first
//! instruction. The sentinel must be a canonical address: a `ret` to a non-canonical one faults
//! on the `ret` itself, with rip unchanged.

use super::MAX_ARGS;
use crate::sys::macos::ffi::{self, X86ThreadState64};
use crate::sys::macos::waits::Syscall;

/// One 8-byte value the caller must write into the target's stack before starting the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackWord {
    pub addr: u64,
    pub value: u64,
}

/// The state that calls `func(args…)` and returns to `sentinel`, and the return address to
/// place at the top of the stack.
pub fn call_state(
    initial: &X86ThreadState64,
    func: u64,
    args: &[u64],
    stack_top: u64,
    sentinel: u64,
) -> (X86ThreadState64, StackWord) {
    assert!(args.len() <= MAX_ARGS, "too many arguments");
    let mut s = X86ThreadState64 {
        // segment registers and flags from the thread's own state
        rflags: initial.rflags,
        cs: initial.cs,
        fs: initial.fs,
        gs: initial.gs,
        ..Default::default()
    };
    let regs: [&mut u64; MAX_ARGS] = [
        &mut s.rdi, &mut s.rsi, &mut s.rdx, &mut s.rcx, &mut s.r8, &mut s.r9,
    ];
    for (reg, &arg) in regs.into_iter().zip(args) {
        *reg = arg;
    }
    // as if `call` had just pushed the return address from a 16-byte aligned rsp
    s.rsp = (stack_top & !0xf) - 8;
    s.rip = func;
    let word = StackWord {
        addr: s.rsp,
        value: sentinel,
    };
    (s, word)
}

/// rax when the call returned to the sentinel; None when it faulted anywhere else.
pub fn returned(state: &X86ThreadState64, sentinel: u64) -> Option<u64> {
    (state.rip == sentinel).then_some(state.rax)
}

/// The BSD call a thread is in, if it is in one, as the kernel read it on entry
/// (bsd/dev/i386/systemcalls.c `unix_syscall64`): rax = `0x2000000 | number` (another class is a
/// Mach trap or machine-dependent call: None), arguments in rdi, rsi, rdx, r10, r8, r9 (r10:
/// `syscall` clobbers rcx); number 0 is the indirect syscall(2), number in rdi and arguments from
/// rsi. The trap (`syscall`, two bytes) is just before the saved rip.
pub fn syscall(state: &X86ThreadState64) -> Option<Syscall> {
    let class = (state.rax as u32 >> ffi::SYSCALL_CLASS_SHIFT) as u64;
    if class != ffi::SYSCALL_CLASS_UNIX {
        return None;
    }
    let regs = [
        state.rdi, state.rsi, state.rdx, state.r10, state.r8, state.r9,
    ];
    let code = state.rax & ffi::SYSCALL_NUMBER_MASK;
    let (number, args) = if code == ffi::SYS_SYSCALL as u64 {
        let mut args = [0u64; 6];
        args[..5].copy_from_slice(&regs[1..]);
        (state.rdi, args)
    } else {
        (code, regs)
    };
    Some(Syscall {
        number,
        args,
        trap_at: state.rip.wrapping_sub(2),
        // rax still holds the class and number: the kernel has not written a result yet
        maybe_returned: false,
    })
}

/// `syscall` as it sits in memory.
pub const TRAP: [u8; 2] = ffi::X86_SYSCALL_INSN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syscall_is_read_from_rax_and_the_argument_registers() {
        let mut s = X86ThreadState64 {
            rax: 0x200_005d,
            rdi: 10,
            rsi: 11,
            rdx: 12,
            rcx: 99, // clobbered by `syscall`: not an argument
            r10: 13,
            r8: 14,
            r9: 15,
            rip: 0x7ff8_1000,
            ..Default::default()
        };
        let c = syscall(&s).unwrap();
        assert_eq!(c.number, 93);
        assert_eq!(c.args, [10, 11, 12, 13, 14, 15]);
        assert_eq!(c.trap_at, 0x7ff8_0ffe);
        // indirect: number in rdi, arguments from rsi
        s.rax = 0x200_0000;
        s.rdi = 230;
        let c = syscall(&s).unwrap();
        assert_eq!(c.number, 230);
        assert_eq!(c.args, [11, 12, 13, 14, 15, 0]);
        // a Mach trap (class 1) or a plain value is no BSD call
        s.rax = 0x100_001f;
        assert_eq!(syscall(&s), None);
        s.rax = 93;
        assert_eq!(syscall(&s), None);
        // the class is read from the low 32 bits, as the trap handler does
        s.rax = 0xffff_ffff_0200_01a0;
        assert_eq!(syscall(&s).map(|c| c.number), Some(416));
    }

    #[test]
    fn a_call_is_set_up_in_registers_and_one_stack_word() {
        let initial = X86ThreadState64 {
            rflags: 0x202,
            cs: 0x2b,
            rbx: 77,
            ..Default::default()
        };
        let (s, word) = call_state(&initial, 0x7ff8_1234, &[37, 12], 0x7000_1008, 0x5eed_0000);
        assert_eq!(s.rip, 0x7ff8_1234);
        assert_eq!((s.rdi, s.rsi, s.rdx), (37, 12, 0));
        assert_eq!(s.rsp, 0x7000_0ff8);
        assert_eq!(s.rsp % 16, 8, "rsp ≡ 8 (mod 16) at entry");
        assert_eq!(s.rbx, 0, "stale registers are cleared");
        assert_eq!((s.rflags, s.cs), (0x202, 0x2b));
        assert_eq!(
            word,
            StackWord {
                addr: 0x7000_0ff8,
                value: 0x5eed_0000
            }
        );
    }

    #[test]
    fn only_a_return_to_the_sentinel_counts() {
        let mut s = X86ThreadState64 {
            rip: 0x5eed_0000,
            rax: 0,
            ..Default::default()
        };
        assert_eq!(returned(&s, 0x5eed_0000), Some(0));
        s.rip = 0x7ff8_0000;
        assert_eq!(returned(&s, 0x5eed_0000), None);
    }
}
