//! Running syscalls inside a stopped target, on one of its threads, and putting it back exactly.
//!
//! The kernel facts this rests on:
//! - A thread stopped by `PTRACE_INTERRUPT` sits in the kernel's `get_signal`. What happens to an
//!   interrupted blocking call (restart it, or return EINTR, or switch to `restart_syscall` with
//!   the time left) is decided *after* `get_signal` returns, from the registers then in place
//!   (x86_64; aarch64 differs, see arch/aarch64.rs). So the registers are restored at a stop inside
//!   `get_signal` (an event stop or a signal-delivery stop), never at a syscall-exit stop, which
//!   comes after that decision: restoring there made an interrupted `clock_nanosleep` return 516
//!   (ERESTART_RESTARTBLOCK) to the program.
//! - One stop per call: the registers are set for the call with pc on a real syscall instruction
//!   and the thread is single-stepped over it. The kernel reports the step when the syscall
//!   returns (`syscall_exit_work`: a SIGTRAP the tracer sees as a signal-delivery stop, inside
//!   `get_signal` again), with the result in the return register. We suppress that SIGTRAP.
//!   The SIGTRAP is *forced*: if the target ignores SIGTRAP, forcing it would reset its
//!   disposition to the default, so for such a target each call takes the two syscall stops of
//!   `PTRACE_SYSCALL` instead (slower, harmless). SIGTRAP is never blocked by us for the same
//!   reason.
//! - While we work, the thread's signals are blocked with `PTRACE_SETSIGMASK` (all but the
//!   synchronous ones, which the kernel forces anyway), so a signal arriving meanwhile stays
//!   pending, untouched, until we restore the mask and let go. But `PTRACE_SETSIGMASK` also
//!   clears TIF_RESTORE_SIGMASK: for a thread interrupted in a call with a temporary mask (ppoll,
//!   epoll_pwait with a mask, ...) the real mask would never come back. Such a thread is avoided
//!   when another can be used; otherwise its mask is left alone and any signal that does reach
//!   it while we work is delivered right away, with its own registers and mask back in place,
//!   and the thread caught again at the handler's first instruction (nothing of its user code
//!   runs).
//! - A foreign signal that shows up as a signal-delivery stop is never dropped: it is delivered
//!   as above. Faults caused by our own instruction (impossible with a checked instruction, but
//!   handled) and a seccomp SIGSYS are suppressed and reported.
//! - Nothing is ever written into the target's code. Data (the path for `openat`) goes into its
//!   stack far below the stack pointer, where the stopped thread will not look, and the bytes that
//!   were there are put back before we let go.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::super::arch::{self, Extra, Regs, INSN_ALIGN, INSN_LEN, SYSCALL_INSN};
use super::super::gadget;
use super::super::procfs::ignored_signals;
use super::raw::{
    get_siginfo, get_sigmask, interrupt, resume, set_sigmask, wait_stop, wait_stop_blocking,
    wait_stop_until, Resume, Stop,
};
use super::stopped::{StoppedProcess, ThreadState};

/// Why an injected call could not be made. The target is restored regardless (on drop).
#[derive(Debug)]
pub enum InjectError {
    /// The target (or the thread we were using) is gone: it exited or was killed.
    Exited,
    /// It ran a new program.
    Exec,
    /// No thread is stopped at a place where we can work (all are gone or in odd stops).
    NoUsableThread,
    /// A 32-bit (compat) target.
    Unsupported(&'static str),
    /// No syscall instruction found anywhere in the target's executable memory.
    NoSyscallInstruction,
    /// A seccomp filter refused the call (SIGSYS).
    Seccomp {
        nr: i64,
    },
    /// Our instruction faulted (suppressed).
    Fault {
        signal: i32,
        addr: u64,
    },
    /// No room for scratch data on the thread's stack.
    NoScratch,
    Ptrace {
        what: &'static str,
        source: io::Error,
    },
    Memory {
        addr: u64,
        source: io::Error,
    },
    Unexpected(String),
    /// `syscall` after the injector was finished.
    Finished,
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InjectError::Exited => write!(f, "the process exited"),
            InjectError::Exec => write!(f, "the process ran a new program"),
            InjectError::NoUsableThread => write!(f, "no thread stopped at a usable place"),
            InjectError::Unsupported(what) => write!(f, "unsupported target: {what}"),
            InjectError::NoSyscallInstruction => {
                write!(f, "no syscall instruction found in the process")
            }
            InjectError::Seccomp { nr } => {
                write!(f, "a seccomp filter in the process refused syscall {nr}")
            }
            InjectError::Fault { signal, addr } => {
                write!(
                    f,
                    "the injected instruction at {addr:#x} faulted (signal {signal})"
                )
            }
            InjectError::NoScratch => write!(f, "no room on the thread's stack for scratch data"),
            InjectError::Ptrace { what, source } => write!(f, "ptrace {what}: {source}"),
            InjectError::Memory { addr, source } => {
                write!(f, "target memory at {addr:#x}: {source}")
            }
            InjectError::Unexpected(what) => write!(f, "unexpected: {what}"),
            InjectError::Finished => write!(f, "the injector was already finished"),
        }
    }
}

impl std::error::Error for InjectError {}

/// A ptrace failure; ESRCH means the thread is no longer stopped for us: it was killed.
fn pt(what: &'static str) -> impl Fn(io::Error) -> InjectError {
    move |source| {
        if source.raw_os_error() == Some(libc::ESRCH) {
            InjectError::Exited
        } else {
            InjectError::Ptrace { what, source }
        }
    }
}

/// The errno of a raw kernel result (-4095..-1), if it is one.
pub fn errno_of(ret: i64) -> Option<i32> {
    (-4095..0).contains(&ret).then_some(-ret as i32)
}

const fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// Signals the kernel may force on the thread (a fault of our instruction, a seccomp trap, our
/// single-step trap). Never blocked by us: forcing a blocked signal resets its handler.
const SYNCHRONOUS: u64 = bit(libc::SIGTRAP)
    | bit(libc::SIGSEGV)
    | bit(libc::SIGBUS)
    | bit(libc::SIGILL)
    | bit(libc::SIGFPE)
    | bit(libc::SIGSYS);

const SYS_SECCOMP: i32 = 1;

/// Our single-step report: SIGTRAP from the kernel (x86_64: TRAP_BRKPT; aarch64's generic
/// report: SI_USER with no sender), never from another process (which has a pid or SI_TKILL).
fn is_own_trap(info: &libc::siginfo_t) -> bool {
    // SAFETY: si_pid is meaningful for SI_USER, the only case where it is read.
    info.si_signo == libc::SIGTRAP
        && (info.si_code > 0 || (info.si_code == 0 && unsafe { info.si_pid() } == 0))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// One single-step stop per call.
    Step,
    /// Syscall-entry and -exit stops (for targets that ignore SIGTRAP).
    SyscallStops,
}

/// Room for scratch data: this far below the red zone (a signal frame written meanwhile, even
/// with large vector state, stays above it), at most this much.
const SCRATCH_GAP: u64 = 32 * 1024;
const SCRATCH_SIZE: u64 = 4096;

/// The state of one injection, owned by its [`Injector`].
struct Session {
    idx: usize,
    tid: i32,
    /// The thread's own registers: what it gets back.
    base: Option<Regs>,
    extra: Option<Extra>,
    /// Its own signal mask, when we replaced it.
    orig_mask: Option<u64>,
    /// Whether to block signals (false for threads with a temporary mask, see the module doc).
    may_mask: bool,
    insn: u64,
    mode: Mode,
    /// Registers or mask differ from the thread's own.
    dirty: bool,
    /// The thread is at a stop inside get_signal (event or signal-delivery stop).
    in_get_signal: bool,
    /// One of our SIGTRAPs is still queued (a foreign signal was dequeued before it).
    stale_trap: bool,
    /// The thread was single-stepped since its registers were last put back.
    stepped: bool,
    /// A blocking waitpid cannot hang on this thread (see `wait`).
    may_block: bool,
    mem: File,
    scratch_top: Option<u64>,
    scratch_used: u64,
    saved_mem: Vec<(u64, Vec<u8>)>,
    calls: u64,
}

/// Runs syscalls in a stopped target. Made by [`StoppedProcess::injector`]; dropping it (or
/// [`Injector::finish`]) restores the thread's registers, signal mask and scratch memory. It
/// borrows the [`StoppedProcess`] mutably, so it is always dropped, and the thread restored,
/// before the process is resumed.
pub struct Injector<'a> {
    p: &'a mut StoppedProcess,
    /// None once restored, or once the thread is gone.
    s: Option<Session>,
}

impl StoppedProcess {
    /// Prepare to run syscalls in the target: picks a thread stopped at a clean place, saves its
    /// state, finds a syscall instruction. Dropping the injector restores the thread.
    pub fn injector(&mut self) -> Result<Injector<'_>, InjectError> {
        Injector::new(self, None)
    }

    /// The same, on thread `tid` (which must be stopped by our interrupt or a group stop).
    pub fn injector_on(&mut self, tid: i32) -> Result<Injector<'_>, InjectError> {
        Injector::new(self, Some(tid))
    }
}

fn read_word(mem: &File, addr: u64) -> Option<Vec<u8>> {
    let mut b = vec![0u8; SYSCALL_INSN.len()];
    mem.read_exact_at(&mut b, addr).ok()?;
    Some(b)
}

fn is_insn(mem: &File, addr: u64) -> bool {
    arch::insn_aligned(addr) && read_word(mem, addr).as_deref() == Some(SYSCALL_INSN)
}

impl<'a> Injector<'a> {
    fn new(p: &'a mut StoppedProcess, only: Option<i32>) -> Result<Injector<'a>, InjectError> {
        let pid = p.pid();
        let mem = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|source| InjectError::Memory { addr: 0, source })?;
        let idx = choose_thread(p, &mem, only)?;
        let sigtrap_ignored =
            ignored_signals(pid).map_err(|_| InjectError::Exited)? & bit(libc::SIGTRAP) != 0;
        // A killed group leader's exit is not reported while siblings are unreaped: a blocking
        // wait on it could hang. Any other thread (or a lone leader) is reported at once.
        let tid = p.threads()[idx].tid;
        let live = p
            .threads()
            .iter()
            .filter(|t| t.state != ThreadState::Gone)
            .count();
        let session = Session {
            idx,
            tid,
            base: None,
            extra: None,
            orig_mask: None,
            may_mask: true,
            insn: 0,
            mode: if sigtrap_ignored {
                Mode::SyscallStops
            } else {
                Mode::Step
            },
            dirty: false,
            in_get_signal: true,
            stale_trap: false,
            stepped: false,
            may_block: tid != pid || live == 1,
            mem,
            scratch_top: None,
            scratch_used: 0,
            saved_mem: Vec::new(),
            calls: 0,
        };
        let mut inj = Injector {
            p,
            s: Some(session),
        };
        // On error, dropping `inj` restores whatever was changed.
        inj.prepare()?;
        Ok(inj)
    }

    fn session(&mut self) -> Result<&mut Session, InjectError> {
        self.s.as_mut().ok_or(InjectError::Finished)
    }

    fn prepare(&mut self) -> Result<(), InjectError> {
        let pid = self.p.pid();
        let s = self.session()?;
        let own = capture(s)?;
        s.insn = match own {
            Some(a) => a,
            None => find_gadget(pid, &s.mem)?,
        };
        Ok(())
    }

    /// The thread the calls run on.
    pub fn tid(&self) -> i32 {
        self.s.as_ref().map_or(0, |s| s.tid)
    }

    /// Address of the syscall instruction used.
    pub fn syscall_insn(&self) -> u64 {
        self.s.as_ref().map_or(0, |s| s.insn)
    }

    /// Whether each call takes a single stop (false: two, for targets that ignore SIGTRAP).
    pub fn single_stop(&self) -> bool {
        self.s.as_ref().is_some_and(|s| s.mode == Mode::Step)
    }

    /// Run one syscall in the target; the raw kernel result (-errno on error). Only calls that
    /// do not block (close, close_range, dup3, openat of a device such as /dev/null).
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<i64, InjectError> {
        let s = self.session()?;
        let r = run_call(s, nr, args);
        if let Err(InjectError::Exited) = r {
            let idx = s.idx;
            self.s = None;
            self.p.set_thread_state(idx, ThreadState::Gone);
        }
        r
    }

    pub fn close(&mut self, fd: i32) -> Result<i64, InjectError> {
        self.syscall(arch::nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0])
    }

    /// close_range(first, last, flags): every fd from `first` to `last` inclusive.
    pub fn close_range(&mut self, first: u32, last: u32, flags: u32) -> Result<i64, InjectError> {
        self.syscall(
            arch::nr::CLOSE_RANGE,
            [first.into(), last.into(), flags.into(), 0, 0, 0],
        )
    }

    /// dup3(old, new, flags). Note: EINVAL when `old == new` (dup2 would succeed).
    pub fn dup3(&mut self, old: i32, new: i32, flags: i32) -> Result<i64, InjectError> {
        self.syscall(
            arch::nr::DUP3,
            [old as u64, new as u64, flags as u64, 0, 0, 0],
        )
    }

    /// openat(AT_FDCWD, path, flags, mode), the path placed in scratch memory (restored later).
    pub fn open(&mut self, path: &str, flags: i32, mode: u32) -> Result<i64, InjectError> {
        let mut bytes = path.as_bytes().to_vec();
        if bytes.contains(&0) {
            return Err(InjectError::Unexpected("NUL in path".into()));
        }
        bytes.push(0);
        let addr = self.push_scratch(&bytes)?;
        let at_fdcwd = libc::AT_FDCWD as i64 as u64;
        self.syscall(
            arch::nr::OPENAT,
            [at_fdcwd, addr, flags as u64, mode.into(), 0, 0],
        )
    }

    pub fn read_memory(&self, addr: u64, buf: &mut [u8]) -> Result<(), InjectError> {
        let s = self.s.as_ref().ok_or(InjectError::Finished)?;
        s.mem
            .read_exact_at(buf, addr)
            .map_err(|source| InjectError::Memory { addr, source })
    }

    /// Write target memory. The caller restores it; [`Injector::push_scratch`] does that itself.
    pub fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), InjectError> {
        let s = self.session()?;
        s.mem
            .write_all_at(data, addr)
            .map_err(|source| InjectError::Memory { addr, source })
    }

    /// The top of the scratch area: an address on the injecting thread's stack, far below its
    /// stack pointer, that nothing uses while the thread is stopped. Data goes *below* it.
    pub fn stack_scratch(&self) -> u64 {
        self.s
            .as_ref()
            .and_then(|s| s.base)
            .map_or(0, |b| scratch_top_for(b.sp()))
    }

    /// Copy `data` into scratch memory in the target and return its address; the bytes it
    /// replaced are put back when the injector finishes. At most 4 KiB in all.
    pub fn push_scratch(&mut self, data: &[u8]) -> Result<u64, InjectError> {
        let pid = self.p.pid();
        let s = self.session()?;
        let top = match s.scratch_top {
            Some(t) => t,
            None => {
                let sp = s.base.map(|b| b.sp()).ok_or(InjectError::NoScratch)?;
                let maps = gadget::read_maps(pid).map_err(|_| InjectError::Exited)?;
                let t = scratch_area(&maps, sp).ok_or(InjectError::NoScratch)?;
                s.scratch_top = Some(t);
                t
            }
        };
        let len = data.len() as u64;
        let used = (s.scratch_used + len).next_multiple_of(16);
        if used > SCRATCH_SIZE {
            return Err(InjectError::NoScratch);
        }
        let addr = top - used;
        let mut old = vec![0u8; data.len()];
        s.mem
            .read_exact_at(&mut old, addr)
            .map_err(|source| InjectError::Memory { addr, source })?;
        s.saved_mem.push((addr, old));
        s.mem
            .write_all_at(data, addr)
            .map_err(|source| InjectError::Memory { addr, source })?;
        s.scratch_used = used;
        Ok(addr)
    }

    /// How many calls ran.
    pub fn calls(&self) -> u64 {
        self.s.as_ref().map_or(0, |s| s.calls)
    }

    /// Restore the thread now, reporting problems (dropping does the same silently).
    pub fn finish(mut self) -> Result<(), InjectError> {
        // Drop then finds nothing left to restore.
        restore(self.p, &mut self.s)
    }
}

impl Drop for Injector<'_> {
    fn drop(&mut self) {
        let _ = restore(self.p, &mut self.s);
    }
}

fn scratch_top_for(sp: u64) -> u64 {
    (sp - arch::RED_ZONE - SCRATCH_GAP) & !15
}

/// The scratch area's top for a thread whose stack pointer is `sp`: SCRATCH_GAP below the red
/// zone if the stack mapping reaches that far (a main stack grows on demand: we do not make it),
/// else as low in the mapping as there is room for.
fn scratch_area(maps: &[gadget::Mapping], sp: u64) -> Option<u64> {
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
/// whose mask we may replace, then one sitting after its own syscall instruction.
fn choose_thread(p: &StoppedProcess, mem: &File, only: Option<i32>) -> Result<usize, InjectError> {
    let mut best: Option<(u32, usize)> = None;
    let mut compat = false;
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
        let rewound = arch::REWINDS_BEFORE_STOP && is_insn(mem, regs.pc());
        let mask_ok = rewound || !arch::may_have_temporary_mask(&regs);
        let own = rewound || regs.own_insn_candidate().is_some_and(|a| is_insn(mem, a));
        let score = 4 * u32::from(mask_ok) + 2 * u32::from(own) + u32::from(t.tid != p.pid());
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, i));
        }
    }
    match best {
        Some((_, i)) => Ok(i),
        None if compat => Err(InjectError::Unsupported("32-bit process")),
        None => Err(InjectError::NoUsableThread),
    }
}

fn find_gadget(pid: i32, mem: &File) -> Result<u64, InjectError> {
    if let Ok(found) = gadget::find_in_vdso(pid, mem, SYSCALL_INSN, INSN_ALIGN) {
        if let Some(&a) = found.first() {
            return Ok(a);
        }
    }
    let maps = gadget::read_maps(pid).map_err(|_| InjectError::Exited)?;
    gadget::find_in_text(&maps, mem, SYSCALL_INSN, INSN_ALIGN)
        .ok_or(InjectError::NoSyscallInstruction)
}

/// Take the thread's own state as the one to restore, and block its signals if allowed. The
/// thread is at an event stop. Returns the thread's own syscall instruction, if usable.
fn capture(s: &mut Session) -> Result<Option<u64>, InjectError> {
    let tid = s.tid;
    let mut regs = arch::get_regs(tid).map_err(pt("GETREGS"))?;
    let mut own = regs.own_insn_candidate().filter(|&a| is_insn(&s.mem, a));
    let temporary_mask = arch::may_have_temporary_mask(&regs);
    s.orig_mask = None;
    if !temporary_mask {
        // Before anything runs (the settling below does), so that a signal arriving now waits.
        block_signals(s)?;
    }
    if arch::REWINDS_BEFORE_STOP && is_insn(&s.mem, regs.pc()) {
        match settle(s)? {
            Some(r) => {
                regs = r;
                own = Some(regs.pc());
            }
            // A signal was delivered on the way: start over from the handler's entry.
            None => return capture(s),
        }
        // Settling ran the kernel's signal-return path, which put any temporary mask away.
        if temporary_mask {
            block_signals(s)?;
        }
    }
    s.may_mask = s.orig_mask.is_some();
    s.base = Some(regs);
    s.extra = Some(arch::get_extra(tid).map_err(pt("GETREGSET"))?);
    Ok(own)
}

fn block_signals(s: &mut Session) -> Result<(), InjectError> {
    let mask = get_sigmask(s.tid).map_err(pt("GETSIGMASK"))?;
    s.orig_mask = Some(mask);
    s.dirty = true;
    let block = !SYNCHRONOUS | (mask & SYNCHRONOUS & !bit(libc::SIGTRAP));
    set_sigmask(s.tid, block).map_err(pt("SETSIGMASK"))
}

/// aarch64: the thread sits on a `svc` the kernel rewound, in a `do_signal` that will decide on
/// `restart_syscall` only after we let it go (see arch/aarch64.rs). Let that decision happen:
/// resume with PTRACE_SYSEMU, which stops at the `svc`'s entry before the call runs (and before
/// seccomp), skip the call, and stop again at an event stop. The registers then, with pc back on
/// the `svc`, are the thread's real state. None: a pending signal was delivered first (the thread
/// is at an event stop again, at the handler's entry).
fn settle(s: &mut Session) -> Result<Option<Regs>, InjectError> {
    let tid = s.tid;
    resume(tid, Resume::Sysemu, 0).map_err(pt("SYSEMU"))?;
    loop {
        match wait(s).map_err(pt("wait"))? {
            Stop::Syscall => break,
            Stop::Event(_) => resume(tid, Resume::Sysemu, 0).map_err(pt("SYSEMU"))?,
            Stop::Signal(sig) => {
                // Still the thread's own registers: with its own mask back, deliver it as the
                // kernel would.
                if let Some(m) = s.orig_mask.take() {
                    set_sigmask(tid, m).map_err(pt("SETSIGMASK"))?;
                }
                pass_and_retrap(s, sig)?;
                return Ok(None);
            }
            other => return Err(unexpected(other)),
        }
    }
    arch::skip_syscall(tid).map_err(pt("skip syscall"))?;
    interrupt(tid).map_err(pt("INTERRUPT"))?;
    resume(tid, Resume::Cont, 0).map_err(pt("CONT"))?;
    match wait(s).map_err(pt("wait"))? {
        Stop::Event(_) => {}
        other => return Err(unexpected(other)),
    }
    let mut regs = arch::get_regs(tid).map_err(pt("GETREGS"))?;
    regs.set_pc(regs.pc() - INSN_LEN);
    // Until the end the thread is "past" its svc: restoring `regs` puts it back before it.
    s.dirty = true;
    Ok(Some(regs))
}

/// The injecting thread's next stop.
fn wait(s: &Session) -> io::Result<Stop> {
    if s.may_block {
        wait_stop_blocking(s.tid)
    } else {
        wait_stop(s.tid)
    }
}

fn unexpected(stop: Stop) -> InjectError {
    match stop {
        Stop::Gone(_) => InjectError::Exited,
        Stop::Exec => InjectError::Exec,
        other => InjectError::Unexpected(format!("stop {other:?}")),
    }
}

/// From a signal-delivery stop with the thread's own registers and mask in place: hand it `sig`
/// (delivered as the kernel would: handler frame, default action) and catch the thread at an event
/// stop before it runs any user instruction. Signals met on the way are delivered likewise; our
/// own stale SIGTRAP is dropped.
fn pass_and_retrap(s: &mut Session, mut sig: i32) -> Result<(), InjectError> {
    let tid = s.tid;
    loop {
        interrupt(tid).map_err(pt("INTERRUPT"))?;
        resume(tid, Resume::Cont, sig).map_err(pt("CONT"))?;
        match wait(s).map_err(pt("wait"))? {
            Stop::Event(_) => {
                s.in_get_signal = true;
                return Ok(());
            }
            Stop::Signal(next) => {
                let info = get_siginfo(tid).map_err(pt("GETSIGINFO"))?;
                sig = if is_own_trap(&info) {
                    s.stale_trap = false;
                    0
                } else {
                    next
                };
            }
            Stop::Syscall | Stop::OtherEvent(_) => sig = 0,
            other => return Err(unexpected(other)),
        }
    }
}

/// Put the thread's own registers, syscall number and mask back, at the current stop.
fn put_back(s: &mut Session) -> Result<(), InjectError> {
    let tid = s.tid;
    if let Some(b) = &s.base {
        arch::set_regs(tid, b).map_err(pt("SETREGS"))?;
    }
    if let Some(e) = &s.extra {
        arch::set_extra(tid, e).map_err(pt("SETREGSET"))?;
    }
    if let Some(m) = s.orig_mask {
        set_sigmask(tid, m).map_err(pt("SETSIGMASK"))?;
    }
    s.dirty = false;
    Ok(())
}

fn run_call(s: &mut Session, nr: i64, args: [u64; 6]) -> Result<i64, InjectError> {
    let tid = s.tid;
    let how = match s.mode {
        Mode::Step => Resume::SingleStep,
        Mode::SyscallStops => Resume::Syscall,
    };
    'call: loop {
        let mut regs = s.base.ok_or(InjectError::Finished)?;
        regs.prepare_call(s.insn, nr as u64, args);
        s.dirty = true;
        arch::set_regs(tid, &regs).map_err(pt("SETREGS"))?;
        resume(tid, how, 0).map_err(pt("resume"))?;
        s.stepped |= how == Resume::SingleStep;
        let mut entered = false;
        loop {
            match wait(s).map_err(pt("wait"))? {
                Stop::Syscall if s.mode == Mode::SyscallStops => {
                    s.in_get_signal = false;
                    if !entered {
                        entered = true;
                        resume(tid, Resume::Syscall, 0).map_err(pt("SYSCALL"))?;
                        continue;
                    }
                    s.calls += 1;
                    return Ok(arch::get_regs(tid).map_err(pt("GETREGS"))?.ret());
                }
                Stop::Signal(sig) => {
                    s.in_get_signal = true;
                    let info = get_siginfo(tid).map_err(pt("GETSIGINFO"))?;
                    let now = arch::get_regs(tid).map_err(pt("GETREGS"))?;
                    let executed = now.pc() == s.insn + INSN_LEN;
                    if is_own_trap(&info) {
                        s.stale_trap = false;
                        if executed {
                            s.calls += 1;
                            return Ok(now.ret());
                        }
                        if now.pc() == s.insn {
                            // A stale trap from earlier, consumed; now run the call.
                            resume(tid, how, 0).map_err(pt("resume"))?;
                            continue;
                        }
                        return Err(InjectError::Unexpected(format!("step ended at {now:?}")));
                    }
                    if sig == libc::SIGSYS && info.si_code == SYS_SECCOMP {
                        return Err(InjectError::Seccomp { nr });
                    }
                    if SYNCHRONOUS & bit(sig) != 0 && info.si_code > 0 && now.pc() == s.insn {
                        return Err(InjectError::Fault {
                            signal: sig,
                            addr: s.insn,
                        });
                    }
                    // Someone else's signal: deliver it with the thread's own state in place.
                    // (On aarch64 the frame then records pstate with the step bit set, which
                    // does nothing once stepping is off: the price of not losing the signal.)
                    if executed && s.mode == Mode::Step {
                        s.stale_trap = true;
                    }
                    put_back(s)?;
                    pass_and_retrap(s, sig)?;
                    let _ = capture(s)?;
                    if executed {
                        s.calls += 1;
                        return Ok(now.ret());
                    }
                    continue 'call;
                }
                Stop::Event(_) | Stop::Syscall | Stop::OtherEvent(_) => {
                    // A group stop or an earlier interrupt before the call ran: run it.
                    s.in_get_signal = true;
                    resume(tid, how, 0).map_err(pt("resume"))?;
                }
                other => return Err(unexpected(other)),
            }
        }
    }
}

/// Give the injecting thread back its own registers, mask and memory, at a stop inside
/// get_signal, with none of our SIGTRAPs left queued; then it can be detached. Ends the session,
/// and records in `p` where the thread is now.
fn restore(p: &mut StoppedProcess, session: &mut Option<Session>) -> Result<(), InjectError> {
    let Some(mut s) = session.take() else {
        return Ok(());
    };
    let result = restore_session(&mut s);
    let state = match &result {
        Err(InjectError::Exited) => ThreadState::Gone,
        Ok(pass) => ThreadState::Stopped {
            event: *pass == 0,
            pass: *pass,
        },
        // Best effort done; detach it as it is.
        Err(_) => ThreadState::Stopped {
            event: false,
            pass: 0,
        },
    };
    p.set_thread_state(s.idx, state);
    result.map(drop)
}

/// Returns the signal to pass on when detaching (the thread is at its signal-delivery stop).
fn restore_session(s: &mut Session) -> Result<i32, InjectError> {
    let tid = s.tid;
    let mut problem = None;
    for (addr, old) in s.saved_mem.drain(..).rev() {
        if let Err(source) = s.mem.write_all_at(&old, addr) {
            problem.get_or_insert(InjectError::Memory { addr, source });
        }
    }
    let mut pass = 0;
    if s.dirty {
        if !s.in_get_signal || s.stepped {
            // At a syscall-exit stop, or single-stepping (while TIF_SINGLESTEP is set, aarch64
            // forces the step bit into the pstate we write): continue into an event stop first.
            // The pending interrupt traps before any signal is dequeued, and PTRACE_CONT ends
            // the single-stepping.
            interrupt(tid).map_err(pt("INTERRUPT"))?;
            resume(tid, Resume::Cont, 0).map_err(pt("CONT"))?;
            loop {
                match wait(s).map_err(pt("wait"))? {
                    Stop::Event(_) => break,
                    Stop::Signal(sig) => {
                        let info = get_siginfo(tid).map_err(pt("GETSIGINFO"))?;
                        if !is_own_trap(&info) {
                            pass = sig;
                        }
                        break;
                    }
                    Stop::Syscall | Stop::OtherEvent(_) => {
                        interrupt(tid).map_err(pt("INTERRUPT"))?;
                        resume(tid, Resume::Cont, 0).map_err(pt("CONT"))?;
                    }
                    other => return Err(unexpected(other)),
                }
            }
            s.in_get_signal = true;
            s.stepped = false;
        }
        put_back(s)?;
    }
    // A SIGTRAP of ours still queued would kill the target once detached: take it out, with the
    // thread's own state in place, delivering anything else met on the way.
    while s.stale_trap {
        if pass != 0 {
            interrupt(tid).map_err(pt("INTERRUPT"))?;
        }
        resume(tid, Resume::Cont, pass).map_err(pt("CONT"))?;
        pass = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        match wait_stop_until(tid, deadline).map_err(pt("wait"))? {
            Some(Stop::Signal(sig)) => {
                let info = get_siginfo(tid).map_err(pt("GETSIGINFO"))?;
                if is_own_trap(&info) {
                    s.stale_trap = false;
                } else {
                    pass = sig;
                }
            }
            Some(Stop::Event(_)) | Some(Stop::Syscall) | Some(Stop::OtherEvent(_)) => {}
            Some(other) => return Err(unexpected(other)),
            None => {
                // It was not queued after all and the thread ran on: stop it again.
                interrupt(tid).map_err(pt("INTERRUPT"))?;
                let _ = wait(s).map_err(pt("wait"))?;
                s.stale_trap = false;
            }
        }
    }
    match problem {
        Some(e) => Err(e),
        None => Ok(pass),
    }
}
