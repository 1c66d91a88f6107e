//! Syscall User Dispatch (SUD): a thread that turned it on (`PR_SET_SYSCALL_USER_DISPATCH`, as
//! Wine and Proton do for Windows code that makes raw system calls) has every system call made
//! outside an allowed range, while a byte in its memory (the selector) says BLOCK, turned by the
//! kernel into a SIGSYS for its own handler. The check comes in `syscall_trace_enter` *before*
//! ptrace's syscall-entry stop: our call would never be seen, and the SIGSYS it caused would
//! reach the app, whose handler then emulates a "Windows" call we made (or, with SIGSYS blocked,
//! the kernel resets it to the default action and the process dies).
//!
//! So before each call the thread's configuration is read (`PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG`,
//! Linux 6.2, which CRIU uses to checkpoint it). A call that would be dispatched (its instruction
//! outside the allowed range and the selector not ALLOW) runs with SUD switched off for that thread
//! alone, from just before the call to its exit stop, and the configuration is put back exactly —
//! the same window in which our registers are in place. A configuration that could not be put back
//! exactly is never switched off: the thread is not used.
//!
//! The kernel's rules (kernel/entry/syscall_user_dispatch.c):
//! - dispatched unless `ip - offset < len` (unsigned, ip just after the syscall instruction),
//!   or the call is the vDSO's sigreturn; then, with a selector, its byte decides: 0 ALLOW, 1
//!   BLOCK, any other value kills the thread with SIGSYS, an unreadable byte with SIGSEGV.
//! - GET reports mode 1 for any armed configuration and the stored offset and len; a range given
//!   with `PR_SYS_DISPATCH_INCLUSIVE_ON` (6.17) is stored as its complement (offset at its end,
//!   len negated), which SET accepts back only as mode 2 with the range re-encoded.

use super::raw::SudConfig;

/// `PR_SYS_DISPATCH_OFF`; SET with it needs offset, len and selector all zero.
pub(crate) const OFF: SudConfig = SudConfig {
    mode: 0,
    selector: 0,
    offset: 0,
    len: 0,
};
const EXCLUSIVE_ON: u64 = 1;
const INCLUSIVE_ON: u64 = 2;
const SELECTOR_ALLOW: u8 = 0;

/// Whether a call whose syscall instruction ends at `after_insn` would be dispatched to the
/// thread's SIGSYS handler instead of running; `selector_byte` is the selector's value (None:
/// unreadable). A selector that is neither ALLOW nor BLOCK counts as dispatching: the kernel
/// would kill the thread.
pub(crate) fn dispatches(c: &SudConfig, after_insn: u64, selector_byte: Option<u8>) -> bool {
    if c.mode == 0 || after_insn.wrapping_sub(c.offset) < c.len {
        return false;
    }
    c.selector == 0 || selector_byte != Some(SELECTOR_ALLOW)
}

/// The SET request that puts `c` (as GET reported it) back exactly, if the kernel would accept
/// one: the stored range as an exclusive one, or a stored complement re-encoded as inclusive.
pub(crate) fn restoring(c: &SudConfig) -> Option<SudConfig> {
    if c.mode == 0 {
        return Some(OFF);
    }
    let (o, l) = (c.offset, c.len);
    if o == 0 || o.wrapping_add(l) > o {
        return Some(SudConfig {
            mode: EXCLUSIVE_ON,
            ..*c
        });
    }
    // stored complement: the kernel sets offset = o' + l', len = -l' from (o', l')
    let (o2, l2) = (o.wrapping_add(l), l.wrapping_neg());
    (l2 != 0 && o2.wrapping_add(l2) > o2).then_some(SudConfig {
        mode: INCLUSIVE_ON,
        selector: c.selector,
        offset: o2,
        len: l2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(offset: u64, len: u64, selector: u64) -> SudConfig {
        SudConfig {
            mode: 1,
            selector,
            offset,
            len,
        }
    }

    #[test]
    fn off_never_dispatches() {
        assert!(!dispatches(&OFF, 0x1000, None));
    }

    #[test]
    fn the_selector_decides_outside_the_range() {
        // Wine: no range, a selector
        let c = on(0, 0, 0x5000);
        assert!(!dispatches(&c, 0x7000, Some(0)));
        assert!(dispatches(&c, 0x7000, Some(1)));
        assert!(dispatches(&c, 0x7000, Some(7)), "an invalid value kills");
        assert!(dispatches(&c, 0x7000, None), "an unreadable selector kills");
        // no selector: everything outside the range is dispatched
        assert!(dispatches(&on(0, 0, 0), 0x7000, None));
    }

    #[test]
    fn the_allowed_range_always_runs() {
        let c = on(0x7000, 0x100, 0);
        assert!(!dispatches(&c, 0x7000, None));
        assert!(!dispatches(&c, 0x70ff, None));
        assert!(dispatches(&c, 0x7100, None));
        assert!(dispatches(&c, 0x6fff, None));
    }

    #[test]
    fn an_inclusive_range_is_stored_as_its_complement() {
        // PR_SYS_DISPATCH_INCLUSIVE_ON over [0x7000, 0x7100): stored as offset 0x7100, len -0x100
        let stored = on(0x7100, 0x100u64.wrapping_neg(), 0);
        assert!(dispatches(&stored, 0x7000, None), "inside: dispatched");
        assert!(!dispatches(&stored, 0x8000, None), "outside: runs");
        assert_eq!(
            restoring(&stored),
            Some(SudConfig {
                mode: 2,
                selector: 0,
                offset: 0x7000,
                len: 0x100
            })
        );
    }

    #[test]
    fn an_exclusive_range_goes_back_as_it_was() {
        let c = on(0x7000, 0x100, 0x5000);
        assert_eq!(restoring(&c), Some(c));
        assert_eq!(restoring(&on(0, 0, 0x5000)), Some(on(0, 0, 0x5000)));
        assert_eq!(restoring(&OFF), Some(OFF));
    }
}
