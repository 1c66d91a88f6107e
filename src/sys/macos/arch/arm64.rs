//! arm64 (AAPCS64 as Apple uses it): arguments in x0.., return value in x0, return address in
//! lr, sp 16-byte aligned. A plain `ret` to the sentinel faults with pc = sentinel.

use super::MAX_ARGS;
use crate::sys::macos::ffi::ArmThreadState64;

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

#[cfg(test)]
mod tests {
    use super::*;

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
