//! arm64 (AAPCS64 as Apple uses it): arguments in x0.., return value in x0, return address in
//! lr, sp 16-byte aligned. A plain `ret` to the sentinel faults with pc = sentinel.

use super::MAX_ARGS;
use crate::sys::macos::ffi::{self, ArmThreadState64};
use crate::sys::macos::waits::Syscall;

/// The state that calls `func(args…)` on a stack ending at `stack_top` and returns to
/// `sentinel`. Starts from the new thread's own state so cpsr (user mode, flags) stays valid.
pub fn call_state(
    initial: &ArmThreadState64,
    func: u64,
    args: &[u64],
    stack_top: u64,
    sentinel: u64,
) -> ArmThreadState64 {
    assert!(args.len() <= MAX_ARGS, "too many arguments");
    let mut s = *initial;
    s.x = [0; 29];
    s.x[..args.len()].copy_from_slice(args);
    s.fp = 0;
    s.lr = sentinel;
    s.sp = stack_top & !0xf;
    s.pc = func;
    s
}

/// x0 when the call returned to the sentinel; None when it faulted anywhere else.
pub fn returned(state: &ArmThreadState64, sentinel: u64) -> Option<u64> {
    (state.pc == sentinel).then_some(state.x[0])
}

/// The BSD call a thread is in, if it is in one, as the kernel read it on entry
/// (bsd/dev/arm/systemcalls.c `arm_get_syscall_number`, `arm_get_u64_syscall_args`): the number
/// is the low 16 bits of x16, arguments from x0; x16 = 0 is the indirect syscall(2), number in x0
/// and arguments from x1. The trap (`svc #0x80`) is the instruction before the saved pc.
///
/// On its way back the kernel rewrites x0 and x1 (`arm_prepare_u64_syscall_return`: the result,
/// and `uu_rval[1]`, which starts each call at 0, or 0 on an error), but not x16 or the pc: a
/// thread held just after its select() or poll() returned looks like one inside it. x1 = 0 is
/// that shape (select's read set, poll's nfds, an indirect call's first argument), and rare
/// inside a real wait: such a thread is `maybe_returned`.
pub fn syscall(state: &ArmThreadState64) -> Syscall {
    let code = state.x[ffi::ARM64_SYSCALL_CODE_REG];
    let (number, first) = if code != 0 {
        (code as u16, 0)
    } else {
        (state.x[0] as u16, 1)
    };
    let mut args = [0u64; 6];
    args.copy_from_slice(&state.x[first..first + 6]);
    Syscall {
        number: number as u64,
        args,
        trap_at: state.pc.wrapping_sub(4),
        maybe_returned: state.x[1] == 0,
    }
}

/// `svc #0x80` as it sits in memory.
pub const TRAP: [u8; 4] = ffi::ARM64_SVC_SYSCALL.to_le_bytes();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syscall_is_read_from_x16_and_x0_on() {
        let mut s = ArmThreadState64 {
            pc: 0x1_8000_1008,
            ..Default::default()
        };
        s.x[16] = 93;
        s.x[..7].copy_from_slice(&[10, 11, 12, 13, 14, 15, 16]);
        let c = syscall(&s);
        assert_eq!(c.number, 93);
        assert_eq!(c.args, [10, 11, 12, 13, 14, 15]);
        assert_eq!(c.trap_at, 0x1_8000_1004);
        assert!(!c.maybe_returned);
        // the kernel keeps only the low 16 bits of x16
        s.x[16] = 0xdead_0000_0000_00e6;
        assert_eq!(syscall(&s).number, 230);
        // indirect: number in x0, arguments from x1
        s.x[16] = 0;
        s.x[0] = 417;
        let c = syscall(&s);
        assert_eq!(c.number, 417);
        assert_eq!(c.args, [11, 12, 13, 14, 15, 16]);
        // x1 rewritten to 0 on the way back: it may have returned already
        s.x[1] = 0;
        assert!(syscall(&s).maybe_returned);
        // a pc of 0 does not underflow
        s.pc = 0;
        assert_eq!(syscall(&s).trap_at, u64::MAX - 3);
    }

    #[test]
    fn a_call_is_set_up_in_registers() {
        let mut initial = ArmThreadState64 {
            cpsr: 0x1000_0000,
            ..Default::default()
        };
        initial.x[5] = 99;
        let s = call_state(&initial, 0x1_8000_1234, &[37, 12], 0x7000_1008, 0x5eed_0000);
        assert_eq!(s.pc, 0x1_8000_1234);
        assert_eq!(&s.x[..3], &[37, 12, 0]);
        assert_eq!(s.x[5], 0, "stale registers are cleared");
        assert_eq!(s.lr, 0x5eed_0000);
        assert_eq!(s.sp, 0x7000_1000, "16-byte aligned");
        assert_eq!(s.fp, 0);
        assert_eq!(s.cpsr, 0x1000_0000, "kept from the thread's own state");
    }

    #[test]
    fn only_a_return_to_the_sentinel_counts() {
        let mut s = ArmThreadState64 {
            pc: 0x5eed_0000,
            ..Default::default()
        };
        s.x[0] = 0;
        assert_eq!(returned(&s, 0x5eed_0000), Some(0));
        s.x[0] = 37;
        assert_eq!(returned(&s, 0x5eed_0000), Some(37));
        s.pc = 0x1_8000_2000; // faulted inside libc's error path
        assert_eq!(returned(&s, 0x5eed_0000), None);
    }
}
