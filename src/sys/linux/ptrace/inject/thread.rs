//! Where to work: which stopped thread runs our calls, the syscall instruction it runs them
//! on, and the scratch room below its stack.

use super::*;

pub(super) fn scratch_top_for(sp: u64) -> u64 {
    (sp - arch::RED_ZONE - SCRATCH_GAP) & !15
}

/// The scratch area's top for a thread whose stack pointer is `sp`: SCRATCH_GAP below the red
/// zone if the stack mapping reaches that far (a main stack grows on demand: we do not make it),
/// else as low in the mapping as there is room for.
pub(super) fn scratch_area(maps: &[gadget::Mapping], sp: u64) -> Option<u64> {
    let stack = maps.iter().find(|m| m.contains(sp - 1) && m.writable)?;
    let want = scratch_top_for(sp);
    let top = if want - SCRATCH_SIZE >= stack.start {
        want
    } else {
        stack.start + SCRATCH_SIZE
    };
    // Keep clear of the red zone and whatever a signal frame would need.
    (top + 1024 <= sp - arch::RED_ZONE).then_some(top)
}

/// Pick the thread to work on: stopped by our interrupt (or a group stop), 64-bit; preferably one
/// whose mask we may replace, then one sitting after its own syscall instruction, then one
/// waiting on a futex.
pub(super) fn choose_thread(
    p: &StoppedProcess,
    mem: &File,
    only: Option<i32>,
) -> Result<usize, InjectError> {
    let mut best: Option<(u32, usize)> = None;
    let (mut compat, mut strict) = (false, false);
    for (i, t) in p.threads().iter().enumerate() {
        if t.state
            != (ThreadState::Stopped {
                event: true,
                pass: 0,
            })
            || only.is_some_and(|o| o != t.tid)
        {
            continue;
        }
        let Ok(regs) = arch::get_regs(t.tid) else {
            continue;
        };
        if !regs.is_native() {
            compat = true;
            continue;
        }
        if seccomp::mode(p.pid(), t.tid).ok() == Some(seccomp::Mode::Strict) {
            strict = true;
            continue;
        }
        if in_compat_call(mem, &regs) {
            compat = true;
            continue;
        }
        let rewound = arch::REWINDS_BEFORE_STOP && is_insn(mem, regs.pc());
        let mask_ok = rewound || !arch::may_have_temporary_mask(&regs);
        let own = rewound || regs.own_insn_candidate().is_some_and(|a| is_insn(mem, a));
        // Should ptyreap's tracer be killed during a call, the thread returns from its own
        // syscall with our call's result: harmless for a futex wait (spurious wake-ups are part
        // of its contract; every waiter checks again), not for a read (a 0 reads as EOF).
        let forgiving = regs.current_syscall() == Some(arch::nr::FUTEX as u64);
        // A thread whose Syscall User Dispatch is off (nearly all) needs no switching.
        let undispatched = sud_config(t.tid).map_or(true, |c| c.mode == 0);
        let score = 16 * u32::from(undispatched)
            + 8 * u32::from(mask_ok)
            + 4 * u32::from(own)
            + 2 * u32::from(forgiving)
            + u32::from(t.tid != p.pid());
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, i));
        }
    }
    match best {
        Some((_, i)) => Ok(i),
        None if compat => Err(InjectError::Unsupported(
            "32-bit process, or a thread in a 32-bit system call",
        )),
        None if strict => Err(InjectError::SeccompStrict),
        None => Err(InjectError::NoUsableThread),
    }
}

/// A thread inside a system call it made with the other ABI's instruction (x86_64 `int 0x80`).
pub(super) fn in_compat_call(mem: &File, regs: &Regs) -> bool {
    let Some(insn) = arch::COMPAT_SYSCALL_INSN else {
        return false;
    };
    let mut b = vec![0u8; insn.len()];
    regs.current_syscall().is_some()
        && mem
            .read_exact_at(&mut b, regs.pc().wrapping_sub(insn.len() as u64))
            .is_ok()
        && b == insn
}

pub(super) fn find_gadget(pid: i32, mem: &File) -> Result<u64, InjectError> {
    if let Ok(found) = gadget::find_in_vdso(pid, mem, SYSCALL_INSN, INSN_ALIGN) {
        if let Some(&a) = found.first() {
            return Ok(a);
        }
    }
    let maps = gadget::read_maps(pid).map_err(|_| InjectError::Exited)?;
    gadget::find_in_text(&maps, mem, SYSCALL_INSN, INSN_ALIGN)
        .ok_or(InjectError::NoSyscallInstruction)
}
