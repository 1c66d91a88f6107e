//! Which fds a thread blocked in select()/poll() waits on, decoded from its saved user registers
//! and the target's memory. Pure: the registers come in as a `Syscall` (see `arch`), the memory
//! through a reader closure, so every hostile case is tested on Linux.
//!
//! Why this is needed: a select() or poll() loop (tmux on macOS uses select()) registers nothing
//! that outlives the call. poll() builds a private kqueue that no fd and no libproc listing
//! names (bsd/kern/sys_generic.c `poll_nocancel`: `kqueue_alloc`), select() keeps its bits in the
//! thread's uthread. So the only trace of such a loop is the waiting thread itself.
//!
//! Why the registers still tell the call: a BSD system call enters the kernel with its number and
//! arguments in registers (arm64: number in x16, arguments in x0..; x86_64: `0x2000000 | number`
//! in rax, arguments in rdi, rsi, rdx, r10, r8, r9), the kernel saves the user state on entry and
//! rewrites it only on the way back (x0/rax = result, carry = error, pc wound back on ERESTART:
//! bsd/dev/arm/systemcalls.c `arm_prepare_u64_syscall_return`, bsd/dev/i386/systemcalls.c
//! `unix_syscall64`), and `thread_get_state` returns that saved user state
//! (osfmk/arm64/status.c `saved_state_to_thread_state64`, osfmk/i386/pcb.c
//! `get_thread_state64`). While a thread waits, its saved pc sits just past the trap
//! instruction (`svc #0x80`, `syscall`): a register that merely happens to hold select's number in
//! user code is told apart by that instruction.
//!
//! Why the user memory still tells the sets: the kernel copies the sets in when the call starts
//! and writes the results back only when it returns, so while it waits the user buffers hold what
//! the app asked for (unless another thread of the app rewrites them meanwhile, which no event
//! loop does).
//!
//! Conservative on every doubt: a set that cannot be read is an error (the caller makes it
//! `unknown`, or `changed` in the reaper), never an empty set; a trap instruction that cannot be
//! read counts as a trap. A thread held just after the call returned (suspended on its way back
//! to user space) is an error too, never "waits on nothing": the kernel has written the results
//! over its sets (a subset of what it waited on), and it is about to act on them. On arm64 its
//! registers keep the number and rewrite x0/x1 (`Syscall::maybe_returned`); on x86_64 rax becomes
//! the result and the number is read back from libsystem's stub before the trap
//! (`x86_returned_from`). A thread whose call is to be restarted (ERESTART winds its pc back onto
//! the trap) still holds its arguments and is read like one inside the call.

use super::ffi;

/// A system call as the kernel sees it in a thread's saved user state: its BSD number and its
/// first six arguments (indirect `syscall(2)` already unwrapped), and where the trap instruction
/// must be if the thread is inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    pub number: u64,
    pub args: [u64; 6],
    /// The address just before the saved pc, where the trap instruction sits.
    pub trap_at: u64,
    /// The registers have the shape the kernel leaves when the call has returned (see `arch`):
    /// past the trap, such a thread cannot be told from one inside the call.
    pub maybe_returned: bool,
}

/// The calls that wait on fd sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCall {
    Select,
    Poll,
}

impl WaitCall {
    /// select, pselect and poll, and their _nocancel variants (what cancellation-point-free
    /// callers and libsystem's own code use).
    pub fn of(number: u64) -> Option<WaitCall> {
        let n = u32::try_from(number).ok()?;
        match n {
            ffi::SYS_SELECT
            | ffi::SYS_SELECT_NOCANCEL
            | ffi::SYS_PSELECT
            | ffi::SYS_PSELECT_NOCANCEL => Some(WaitCall::Select),
            ffi::SYS_POLL | ffi::SYS_POLL_NOCANCEL => Some(WaitCall::Poll),
            _ => None,
        }
    }

    /// The name people know (the same words the Linux backend uses).
    pub fn name(self) -> &'static str {
        match self {
            WaitCall::Select => "select",
            WaitCall::Poll => "poll",
        }
    }
}

/// Reads `buf.len()` bytes of the target at an address, or says why not.
pub type Reader<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), String> + 'a;

/// What a thread waits on: None when it is not in a select/poll-family call; else the call and
/// its fds below `below` (the caller's highest fd of interest + 1). `trap`: this architecture's
/// trap instruction bytes.
pub fn thread_waits_on(
    call: &Syscall,
    trap: &[u8],
    below: i32,
    read: &mut Reader<'_>,
) -> Result<Option<(WaitCall, Vec<i32>)>, String> {
    let Some(kind) = WaitCall::of(call.number) else {
        return Ok(None);
    };
    let mut insn = vec![0u8; trap.len()];
    // an unreadable instruction proves nothing: treat the thread as past the trap
    let past_trap = read(call.trap_at, &mut insn).is_err() || insn == trap;
    if past_trap {
        if call.maybe_returned {
            return Err(returned(kind));
        }
    } else {
        // to be restarted: its pc wound back onto the trap, its arguments as they were
        let at_pc = call.trap_at.wrapping_add(trap.len() as u64);
        if read(at_pc, &mut insn).is_err() || insn != trap {
            return Ok(None);
        }
    }
    waits_on(kind, &call.args, below, read).map(|fds| Some((kind, fds)))
}

fn returned(kind: WaitCall) -> String {
    format!(
        "it may have just returned from {}(), and its sets now hold the results",
        kind.name()
    )
}

/// x86_64: a thread held just past `syscall` with a result in rax (no class bits) returned from
/// the call whose number libsystem's stub loaded before the trap (libsyscall/custom/SYS.h:
/// `movl $(0x2000000 | number), %eax; movq %rcx, %r10; syscall`). `code`: the 10 bytes before
/// the saved rip; `rdi`: the number of an indirect syscall(2) (the kernel leaves rdi alone).
/// Err when that call waits on fd sets; Ok otherwise (another call, or code that is no stub).
#[cfg(any(target_arch = "x86_64", test))]
pub fn x86_returned_from(code: &[u8; 10], rdi: u64) -> Result<(), String> {
    let [0xb8, n0, n1, n2, n3, 0x49, 0x89, 0xca, 0x0f, 0x05] = *code else {
        return Ok(());
    };
    let loaded = u32::from_le_bytes([n0, n1, n2, n3]);
    if loaded >> ffi::SYSCALL_CLASS_SHIFT != ffi::SYSCALL_CLASS_UNIX as u32 {
        return Ok(());
    }
    let number = match (loaded as u64) & ffi::SYSCALL_NUMBER_MASK {
        n if n == ffi::SYS_SYSCALL as u64 => rdi,
        n => n,
    };
    match WaitCall::of(number) {
        Some(kind) => Err(returned(kind)),
        None => Ok(()),
    }
}

/// The fds below `below` that a thread in `kind` with these arguments waits on, sorted.
pub fn waits_on(
    kind: WaitCall,
    args: &[u64; 6],
    below: i32,
    read: &mut Reader<'_>,
) -> Result<Vec<i32>, String> {
    let below = usize::try_from(below).unwrap_or(0);
    let mut out = match kind {
        WaitCall::Select => select_fds(args, below, read)?,
        WaitCall::Poll => poll_fds(args, below, read)?,
    };
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// select(nd, in, ou, ex, tv) and pselect(nd, in, ou, ex, ts, mask): three optional bitmaps of
/// howmany(nd, 32) 32-bit words. The kernel clamps nd to the fd table's size (`select_internal`:
/// "forgiving"), so a huge nd is legal; we read only the words that cover fds below `below`,
/// which the kernel read too (our fds are open, so below the table's size).
fn select_fds(args: &[u64; 6], below: usize, read: &mut Reader<'_>) -> Result<Vec<i32>, String> {
    // nd is an int: the low 32 bits of its register; a negative one fails with EINVAL at once
    let nd = args[0] as u32 as i32;
    let Ok(nd) = usize::try_from(nd) else {
        return Ok(Vec::new());
    };
    let n = nd.min(below);
    if n == 0 {
        return Ok(Vec::new());
    }
    let words = n.div_ceil(ffi::NFDBITS);
    let mut raw = vec![0u8; words * 4];
    let mut out = Vec::new();
    for (which, &addr) in ["read", "write", "error"].iter().zip(&args[1..4]) {
        if addr == 0 {
            continue; // a null set is no set
        }
        if addr.checked_add(raw.len() as u64).is_none() {
            return Err(format!(
                "its {which} set's address {addr:#x} is out of range"
            ));
        }
        read(addr, &mut raw)
            .map_err(|e| format!("cannot read its {which} set at {addr:#x}: {e}"))?;
        for (w, word) in raw.chunks_exact(4).enumerate() {
            let bits = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            for b in 0..ffi::NFDBITS {
                let fd = w * ffi::NFDBITS + b;
                if fd < n && bits & (1 << b) != 0 {
                    out.push(fd as i32);
                }
            }
        }
    }
    Ok(out)
}

/// poll(fds, nfds, timeout): an array of nfds `struct pollfd`. Every entry with fd >= 0 counts,
/// whatever its events (the Linux backend counts the same); the kernel ignores negative ones.
/// More than OPEN_MAX entries fail with EINVAL before any wait, so registers saying so are not
/// a waiting poll we understand: an error, not a guess.
fn poll_fds(args: &[u64; 6], below: usize, read: &mut Reader<'_>) -> Result<Vec<i32>, String> {
    let addr = args[0];
    // nfds is a u_int: the low 32 bits of its register
    let nfds = args[1] as u32 as usize;
    if nfds == 0 || below == 0 {
        return Ok(Vec::new());
    }
    if nfds > ffi::OPEN_MAX {
        return Err(format!(
            "its poll() array has {nfds} entries, more than the kernel accepts ({})",
            ffi::OPEN_MAX
        ));
    }
    let entry = std::mem::size_of::<ffi::PollFd>();
    let mut raw = vec![0u8; nfds * entry];
    if addr == 0 || addr.checked_add(raw.len() as u64).is_none() {
        return Err(format!("its poll() array's address {addr:#x} is invalid"));
    }
    read(addr, &mut raw).map_err(|e| format!("cannot read its poll() array at {addr:#x}: {e}"))?;
    Ok(raw
        .chunks_exact(entry)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .filter(|&fd| fd >= 0 && (fd as usize) < below)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A fake address space: regions of bytes at addresses; anything else is unreadable.
    struct Memory(BTreeMap<u64, Vec<u8>>);

    impl Memory {
        fn new() -> Memory {
            Memory(BTreeMap::new())
        }
        fn map(mut self, addr: u64, bytes: Vec<u8>) -> Memory {
            self.0.insert(addr, bytes);
            self
        }
        fn reader(&self) -> impl FnMut(u64, &mut [u8]) -> Result<(), String> + '_ {
            move |addr, buf| {
                for (&start, bytes) in &self.0 {
                    let end = start + bytes.len() as u64;
                    if addr >= start && addr.checked_add(buf.len() as u64).is_some_and(|e| e <= end)
                    {
                        let off = (addr - start) as usize;
                        buf.copy_from_slice(&bytes[off..off + buf.len()]);
                        return Ok(());
                    }
                }
                Err("(os/kern) invalid address".into())
            }
        }
    }

    fn fd_set(fds: &[usize], words: usize) -> Vec<u8> {
        let mut w = vec![0u32; words];
        for &fd in fds {
            w[fd / 32] |= 1 << (fd % 32);
        }
        w.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn pollfds(entries: &[(i32, i16)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|&(fd, ev)| {
                let mut e = fd.to_le_bytes().to_vec();
                e.extend_from_slice(&ev.to_le_bytes());
                e.extend_from_slice(&0i16.to_le_bytes());
                e
            })
            .collect()
    }

    const SVC: [u8; 4] = ffi::ARM64_SVC_SYSCALL.to_le_bytes();

    fn select_call(number: u32, nd: u64, sets: [u64; 3]) -> Syscall {
        Syscall {
            number: number as u64,
            args: [nd, sets[0], sets[1], sets[2], 0, 0],
            trap_at: 0x1000,
            maybe_returned: false,
        }
    }

    #[test]
    fn the_wait_calls_are_known_by_number() {
        for n in [93, 407, 394, 395] {
            assert_eq!(WaitCall::of(n), Some(WaitCall::Select), "{n}");
        }
        for n in [230, 417] {
            assert_eq!(WaitCall::of(n), Some(WaitCall::Poll), "{n}");
        }
        for n in [0, 3, 4, 363, 369, 93 + (1 << 32)] {
            assert_eq!(WaitCall::of(n), None, "{n}");
        }
    }

    #[test]
    fn a_select_waits_on_the_bits_of_its_three_sets() {
        let mem = Memory::new()
            .map(0x1000, SVC.to_vec())
            .map(0x2000, fd_set(&[0, 5, 33], 32))
            .map(0x3000, fd_set(&[7], 32))
            .map(0x4000, fd_set(&[5, 40], 32));
        let call = select_call(93, 1024, [0x2000, 0x3000, 0x4000]);
        let got = thread_waits_on(&call, &SVC, 100, &mut mem.reader()).unwrap();
        assert_eq!(got, Some((WaitCall::Select, vec![0, 5, 7, 33, 40])));
        // only fds below `below` are read and reported
        let got = thread_waits_on(&call, &SVC, 8, &mut mem.reader()).unwrap();
        assert_eq!(got, Some((WaitCall::Select, vec![0, 5, 7])));
        // nd bounds the bits too: fd 33 and 40 are beyond nd 33
        let call = select_call(407, 33, [0x2000, 0, 0x4000]);
        let got = thread_waits_on(&call, &SVC, 100, &mut mem.reader()).unwrap();
        assert_eq!(got, Some((WaitCall::Select, vec![0, 5])));
    }

    #[test]
    fn a_select_reads_only_the_words_it_needs() {
        // a one-word set (nd 10) at the very end of a mapping: a read of more would fail
        let mem = Memory::new().map(0x2000, fd_set(&[3, 9], 1));
        let call = select_call(93, 10, [0x2000, 0, 0]);
        let got = waits_on(WaitCall::Select, &call.args, 64, &mut mem.reader()).unwrap();
        assert_eq!(got, vec![3, 9]);
    }

    #[test]
    fn hostile_select_arguments_never_panic_and_never_look_empty() {
        let mem = Memory::new().map(0x2000, fd_set(&[3], 2));
        let read = &mut mem.reader();
        // a huge nd (legal: the kernel clamps it) is clamped to what we care about; only the
        // low 32 bits of the register are the int
        for nd in [0xffff_ffff_7fff_ffff, 0x7fff_ffff, 1 << 40 | 64] {
            let got = waits_on(WaitCall::Select, &[nd, 0x2000, 0, 0, 0, 0], 64, read);
            assert_eq!(got.unwrap(), vec![3], "nd {nd:#x}");
        }
        // negative or zero nd: the kernel refuses it, nothing is waited on
        for nd in [0, u64::MAX, 0x8000_0000, 1 << 32] {
            let got = waits_on(WaitCall::Select, &[nd, 0x2000, 0, 0, 0, 0], 64, read);
            assert_eq!(got.unwrap(), Vec::<i32>::new(), "nd {nd:#x}");
        }
        // null sets are no sets
        let got = waits_on(WaitCall::Select, &[64, 0, 0, 0, 0, 0], 64, read);
        assert_eq!(got.unwrap(), Vec::<i32>::new());
        // an unreadable set, or one whose end wraps around, is an error
        for addr in [0x9000, 0x2004, u64::MAX - 3] {
            let got = waits_on(WaitCall::Select, &[64, 0x2000, addr, 0, 0, 0], 64, read);
            assert!(got.is_err(), "{addr:#x}: {got:?}");
        }
        // nothing of interest: nothing read
        let got = waits_on(WaitCall::Select, &[64, 0x9000, 0, 0, 0, 0], 0, read);
        assert_eq!(got.unwrap(), Vec::<i32>::new());
        let got = waits_on(WaitCall::Select, &[64, 0x9000, 0, 0, 0, 0], -5, read);
        assert_eq!(got.unwrap(), Vec::<i32>::new());
    }

    #[test]
    fn a_poll_waits_on_every_entry_with_an_fd() {
        let mem = Memory::new().map(
            0x5000,
            pollfds(&[(4, 1), (-1, 1), (12, 0), (4, 4), (200, 1)]),
        );
        let read = &mut mem.reader();
        let got = waits_on(WaitCall::Poll, &[0x5000, 5, 0, 0, 0, 0], 100, read);
        assert_eq!(got.unwrap(), vec![4, 12]);
        // only nfds entries count (the upper half of the register is not part of a u_int)
        let got = waits_on(
            WaitCall::Poll,
            &[0x5000, 1 << 32 | 1, 0, 0, 0, 0],
            100,
            read,
        );
        assert_eq!(got.unwrap(), vec![4]);
        let got = waits_on(WaitCall::Poll, &[0x5000, 0, 0, 0, 0, 0], 100, read);
        assert_eq!(got.unwrap(), Vec::<i32>::new());
    }

    #[test]
    fn hostile_poll_arguments_are_errors() {
        let mem = Memory::new().map(0x5000, pollfds(&[(4, 1); 4]));
        let read = &mut mem.reader();
        for (addr, nfds) in [
            (0x5000, 5),               // longer than the mapping
            (0, 1),                    // null array
            (0x9000, 1),               // unmapped
            (u64::MAX - 4, 1),         // wraps around
            (0x5000, 10241),           // more than OPEN_MAX
            (0x5000, u32::MAX as u64), // huge
        ] {
            let got = waits_on(WaitCall::Poll, &[addr, nfds, 0, 0, 0, 0], 100, read);
            assert!(got.is_err(), "{addr:#x} x {nfds}: {got:?}");
        }
        // the most the kernel accepts is read as such
        let big = Memory::new().map(0x5000, pollfds(&vec![(7, 1); ffi::OPEN_MAX]));
        let got = waits_on(
            WaitCall::Poll,
            &[0x5000, ffi::OPEN_MAX as u64, 0, 0, 0, 0],
            100,
            &mut big.reader(),
        );
        assert_eq!(got.unwrap(), vec![7]);
    }

    #[test]
    fn a_thread_that_may_have_returned_is_unreadable_not_idle() {
        // arm64: past the trap, x1 rewritten to 0 by the return (read set / nfds)
        let mem = Memory::new()
            .map(0x1000, SVC.to_vec())
            .map(0x2000, fd_set(&[3], 1));
        for number in [93, 230] {
            let mut call = select_call(number, 1, [0, 0, 0]);
            call.maybe_returned = true;
            let got = thread_waits_on(&call, &SVC, 64, &mut mem.reader());
            assert!(got.unwrap_err().contains("just returned"), "{number}");
        }
        // the same registers in a call that is not a wait: nothing to say
        let mut call = select_call(3, 1, [0, 0, 0]);
        call.maybe_returned = true;
        assert_eq!(
            thread_waits_on(&call, &SVC, 64, &mut mem.reader()),
            Ok(None)
        );
    }

    #[test]
    fn a_call_to_be_restarted_is_read_like_one_inside() {
        // ERESTART: pc wound back onto the svc, so the svc is at pc (trap_at + 4), and the
        // instruction before it is the stub's `mov x16`; x1 may be anything
        let mem = Memory::new()
            .map(0x1000, 0xd280_0bb0u32.to_le_bytes().to_vec()) // mov x16, #93
            .map(0x1004, SVC.to_vec())
            .map(0x2000, fd_set(&[3, 6], 1));
        let mut call = select_call(93, 8, [0x2000, 0, 0]);
        call.maybe_returned = true;
        let got = thread_waits_on(&call, &SVC, 64, &mut mem.reader()).unwrap();
        assert_eq!(got, Some((WaitCall::Select, vec![3, 6])));
    }

    #[test]
    fn x86_stubs_tell_the_call_a_thread_returned_from() {
        let stub = |loaded: u32| -> [u8; 10] {
            let n = loaded.to_le_bytes();
            [0xb8, n[0], n[1], n[2], n[3], 0x49, 0x89, 0xca, 0x0f, 0x05]
        };
        for number in [93u32, 230, 407, 417, 394, 395] {
            let got = x86_returned_from(&stub(0x200_0000 | number), 0);
            assert!(got.unwrap_err().contains("just returned"), "{number}");
        }
        // read(), a Mach trap's class, code that is no stub: not a wait
        assert_eq!(x86_returned_from(&stub(0x200_0003), 0), Ok(()));
        assert_eq!(x86_returned_from(&stub(0x100_005d), 0), Ok(()));
        let mut other = stub(0x200_005d);
        other[5] = 0x90;
        assert_eq!(x86_returned_from(&other, 0), Ok(()));
        // the indirect syscall(2): the number is in rdi
        assert!(x86_returned_from(&stub(0x200_0000), 93).is_err());
        assert_eq!(x86_returned_from(&stub(0x200_0000), 3), Ok(()));
    }

    #[test]
    fn only_a_thread_inside_the_call_waits() {
        let sets = Memory::new().map(0x2000, fd_set(&[3], 1));
        // another call: not a waiter, nothing read
        let call = select_call(3, 1, [0x9000, 0, 0]);
        let mut never = |_: u64, _: &mut [u8]| -> Result<(), String> { panic!("read") };
        assert_eq!(thread_waits_on(&call, &SVC, 64, &mut never).unwrap(), None);
        // select's number in x16 but user code before pc (no trap): not inside the call
        let mem = Memory::new()
            .map(0x1000, 0xd503_201fu32.to_le_bytes().to_vec()) // nop
            .map(0x2000, fd_set(&[3], 1));
        let call = select_call(93, 4, [0x2000, 0, 0]);
        assert_eq!(
            thread_waits_on(&call, &SVC, 64, &mut mem.reader()).unwrap(),
            None
        );
        // an unreadable instruction counts as the trap
        let got = thread_waits_on(&call, &SVC, 64, &mut sets.reader()).unwrap();
        assert_eq!(got, Some((WaitCall::Select, vec![3])));
        // x86_64's two-byte trap
        let mem = Memory::new()
            .map(0x1000, ffi::X86_SYSCALL_INSN.to_vec())
            .map(0x2000, fd_set(&[3], 1));
        let got = thread_waits_on(&call, &ffi::X86_SYSCALL_INSN, 64, &mut mem.reader());
        assert_eq!(got.unwrap(), Some((WaitCall::Select, vec![3])));
        // inside the call with an unreadable set: an error, never "waits on nothing"
        let call = select_call(93, 4, [0x9000, 0, 0]);
        assert!(thread_waits_on(&call, &SVC, 64, &mut mem.reader()).is_err());
    }
}
