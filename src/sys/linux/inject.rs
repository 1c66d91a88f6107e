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

use super::arch::{self, Extra, Regs, INSN_ALIGN, INSN_LEN, SYSCALL_INSN};
use super::gadget;
use super::ptrace::{
    get_siginfo, get_sigmask, ignored_signals, interrupt, resume, set_sigmask, wait_stop,
    wait_stop_blocking, wait_stop_until, Resume, Stop, StoppedProcess, ThreadState,
};

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

/// The state of one injection, kept in the [`StoppedProcess`] so that dropping either restores.
pub(crate) struct Session {
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
/// [`Injector::finish`]) restores the thread's registers, signal mask and scratch memory.
pub struct Injector<'a> {
    p: &'a mut StoppedProcess,
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
    pub(crate) fn new(
        p: &'a mut StoppedProcess,
        only: Option<i32>,
    ) -> Result<Injector<'a>, InjectError> {
        if p.injection.is_some() {
            return Err(InjectError::Unexpected(
                "an injection is already under way".into(),
            ));
        }
        let pid = p.pid();
        let mem = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|source| InjectError::Memory { addr: 0, source })?;
        let idx = choose_thread(p, &mem, only)?;
        let sigtrap_ignored =
            ignored_signals(pid).map_err(|_| InjectError::Exited)? & bit(libc::SIGTRAP) != 0;
        p.injection = Some(Session {
            idx,
            tid: p.threads[idx].tid,
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
            may_block: false,
            mem,
            scratch_top: None,
            scratch_used: 0,
            saved_mem: Vec::new(),
            calls: 0,
        });
        // A killed group leader's exit is not reported while siblings are unreaped: a blocking
        // wait on it could hang. Any other thread (or a lone leader) is reported at once.
        let tid = p.threads[idx].tid;
        let live = p
            .threads
            .iter()
            .filter(|t| t.state != ThreadState::Gone)
            .count();
        if let Some(s) = p.injection.as_mut() {
            s.may_block = tid != pid || live == 1;
        }
        let mut inj = Injector { p };
        // On error, dropping `inj` restores whatever was changed.
        inj.prepare()?;
        Ok(inj)
    }

    fn session(&mut self) -> Result<&mut Session, InjectError> {
        self.p.injection.as_mut().ok_or(InjectError::Finished)
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
        self.p.injection.as_ref().map_or(0, |s| s.tid)
    }

    /// Address of the syscall instruction used.
    pub fn syscall_insn(&self) -> u64 {
        self.p.injection.as_ref().map_or(0, |s| s.insn)
    }

    /// Whether each call takes a single stop (false: two, for targets that ignore SIGTRAP).
    pub fn single_stop(&self) -> bool {
        self.p
            .injection
            .as_ref()
            .is_some_and(|s| s.mode == Mode::Step)
    }

    /// Run one syscall in the target; the raw kernel result (-errno on error). Only calls that
    /// do not block (close, close_range, dup3, openat of a device such as /dev/null).
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<i64, InjectError> {
        let s = self.session()?;
        let r = run_call(s, nr, args);
        if let Err(InjectError::Exited) = r {
            let idx = s.idx;
            self.p.threads[idx].state = ThreadState::Gone;
            self.p.injection = None;
            self.p.refresh_tids();
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
        let s = self.p.injection.as_ref().ok_or(InjectError::Finished)?;
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
        self.p
            .injection
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
        self.p.injection.as_ref().map_or(0, |s| s.calls)
    }

    /// Restore the thread now, reporting problems (dropping does the same silently).
    pub fn finish(self) -> Result<(), InjectError> {
        let mut me = std::mem::ManuallyDrop::new(self);
        restore(me.p)
    }
}

impl Drop for Injector<'_> {
    fn drop(&mut self) {
        let _ = restore(self.p);
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
    for (i, t) in p.threads.iter().enumerate() {
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
/// get_signal, with none of our SIGTRAPs left queued; then it can be detached. Ends the session.
pub(crate) fn restore(p: &mut StoppedProcess) -> Result<(), InjectError> {
    let Some(mut s) = p.injection.take() else {
        return Ok(());
    };
    let result = restore_session(&mut s);
    let t = &mut p.threads[s.idx];
    t.state = match &result {
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
    p.refresh_tids();
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

/// Real processes, real ptrace. The targets are this test binary run again with
/// `PTYREAP_INJECT_ROLE` set (see `inject_target_role`), so they run in the aarch64 VM too.
#[cfg(test)]
mod tests {
    use super::super::arch::{self, Regs};
    use super::super::pidfd::Pidfd;
    use super::super::ptrace::{self, in_tracer_thread, AttachError, StoppedProcess};
    use super::{errno_of, InjectError};
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc::{channel, Receiver};
    use std::time::{Duration, Instant};

    const ROLE: &str = "PTYREAP_INJECT_ROLE";
    const ENTRY: &str = "sys::linux::inject::tests::inject_target_role";
    /// Only a guard against hangs, never an assertion about speed.
    const PATIENCE: Duration = Duration::from_secs(120);
    const STOP_TIMEOUT: Duration = Duration::from_secs(10);
    const SLEEP_MS: u64 = 3000;

    /// The entry point of the target processes; a no-op in a normal test run.
    #[test]
    fn inject_target_role() {
        if let Ok(role) = std::env::var(ROLE) {
            target::run(&role);
            std::process::exit(0);
        }
    }

    struct Target {
        child: Child,
        pid: i32,
        stdin: Option<ChildStdin>,
        lines: Receiver<String>,
        seen: Vec<String>,
    }

    impl Target {
        fn spawn(role: &str) -> Target {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([ENTRY, "--exact", "--nocapture", "--test-threads=1", "-q"])
                .env(ROLE, role)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let (tx, rx) = channel();
            let err = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Some(l) = line.strip_prefix("@@ ") {
                        if tx.send(l.to_string()).is_err() {
                            break;
                        }
                    } else if !line.trim().is_empty() {
                        eprintln!("target: {line}");
                    }
                }
            });
            let pid = child.id() as i32;
            let stdin = child.stdin.take();
            Target {
                child,
                pid,
                stdin,
                lines: rx,
                seen: Vec::new(),
            }
        }

        /// The next report starting with `prefix` (others are kept for `seen`).
        fn expect(&mut self, prefix: &str) -> String {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok(l) => {
                        self.seen.push(l.clone());
                        if l.starts_with(prefix) {
                            return l;
                        }
                    }
                    Err(_) => panic!("no '{prefix}' from the target; it said {:?}", self.seen),
                }
            }
        }

        fn send(&mut self, cmd: &str) {
            let w = self.stdin.as_mut().unwrap();
            writeln!(w, "{cmd}").unwrap();
            w.flush().unwrap();
        }

        fn pidfd(&self) -> (Pidfd, u64) {
            (
                Pidfd::open(self.pid).unwrap(),
                ptrace::start_time(self.pid).unwrap(),
            )
        }

        fn stop(&self) -> StoppedProcess {
            let (fd, st) = self.pidfd();
            StoppedProcess::stop(&fd, st, STOP_TIMEOUT).unwrap()
        }
    }

    impl Drop for Target {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// `key=value` fields of a report line.
    fn fields(line: &str) -> HashMap<String, String> {
        line.split_whitespace()
            .filter_map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    fn nums(v: &str) -> Vec<i32> {
        v.split(',').map(|n| n.parse().unwrap()).collect()
    }

    fn read_proc(path: String) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// (tid, name, state letter) of every thread.
    fn threads(pid: i32) -> Vec<(i32, String, char)> {
        let mut v: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                    .collect()
            })
            .unwrap_or_else(|_| Vec::new())
            .into_iter()
            .map(|tid| {
                let stat = read_proc(format!("/proc/{pid}/task/{tid}/stat"));
                let state = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].trim_start().chars().next())
                    .unwrap_or('?');
                let name = read_proc(format!("/proc/{pid}/task/{tid}/comm"))
                    .trim()
                    .to_string();
                (tid, name, state)
            })
            .collect();
        v.sort();
        v
    }

    fn tid_of(pid: i32, name: &str) -> i32 {
        threads(pid).into_iter().find(|t| t.1 == name).unwrap().0
    }

    /// Wait until the threads named are asleep (in their blocking calls).
    fn wait_asleep(pid: i32, names: &[&str]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let t = threads(pid);
            let asleep = |n: &&str| t.iter().any(|(_, name, st)| name == n && *st == 'S');
            // The leader (libtest's main thread, joining the test thread) always counts.
            let watched = |x: &&(i32, String, char)| x.0 == pid || names.contains(&x.1.as_str());
            let leader_asleep = t.iter().any(|x| x.0 == pid && x.2 == 'S');
            if names.iter().all(asleep) && leader_asleep {
                // Asleep in the kernel, not just preempted: the syscall file says which call.
                let in_call = t.iter().filter(watched).all(|x| {
                    let sc = read_proc(format!("/proc/{pid}/task/{}/syscall", x.0));
                    !sc.is_empty() && !sc.starts_with("running") && !sc.starts_with("-1")
                });
                if in_call {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "threads never fell asleep: {t:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn tracer_pid(pid: i32, tid: i32) -> i32 {
        read_proc(format!("/proc/{pid}/task/{tid}/status"))
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    fn status_mask(pid: i32, key: &str) -> u64 {
        read_proc(format!("/proc/{pid}/status"))
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| u64::from_str_radix(v.trim_start_matches(':').trim(), 16).unwrap())
            .unwrap()
    }

    /// Every thread let go and running on: none traced, none in a tracing stop.
    fn assert_untouched(pid: i32) {
        for (tid, name, st) in threads(pid) {
            assert_eq!(
                tracer_pid(pid, tid),
                0,
                "thread {tid} ({name}) still traced"
            );
            assert_ne!(st, 't', "thread {tid} ({name}) still stopped");
        }
    }

    fn tty_index(pid: i32, fd: i32) -> Option<u32> {
        read_proc(format!("/proc/{pid}/fdinfo/{fd}"))
            .lines()
            .find_map(|l| l.strip_prefix("tty-index:"))
            .map(|v| v.trim().parse().unwrap())
    }

    fn fd_path(pid: i32, fd: i32) -> Option<String> {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn snapshot(p: &StoppedProcess) -> Vec<(i32, Regs, u64)> {
        p.tids()
            .iter()
            .map(|&t| {
                (
                    t,
                    arch::get_regs(t).unwrap(),
                    ptrace::get_sigmask(t).unwrap(),
                )
            })
            .collect()
    }

    const WORKERS: [&str; 6] = [
        "t-read",
        "t-sleep",
        "t-futex",
        "t-futex-to",
        "t-epoll",
        "t-spin",
    ];

    /// The main scenario: a target with threads blocked in read, nanosleep, futex (with and
    /// without a time-out) and epoll_wait, one spinning in user code, plus plain fds. One stop:
    /// a call injected on *each* thread, single closes, close_range, dup3, openat; a signal sent
    /// meanwhile. Then, from outside and from inside, everything is as it should be.
    #[test]
    fn inject_blocked_threads_resume_exactly() {
        let mut t = Target::spawn("blocked");
        let ready = fields(&t.expect("ready"));
        let null = nums(&ready["null"]);
        let run = nums(&ready["run"]);
        let pty = nums(&ready["pty"]);
        let pid = t.pid;
        let mut names = WORKERS[..5].to_vec();
        names.push("main");
        wait_asleep(pid, &names);
        let keep: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .map(|fd| (fd, fd_path(pid, fd).unwrap_or_default()))
            .collect();

        let mut p = t.stop();
        // SAFETY: plain kill(2) of our child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
        let all: Vec<i32> = threads(pid).iter().map(|x| x.0).collect();
        assert_eq!(p.tids(), &all[..], "every thread held");
        for (tid, name, st) in threads(pid) {
            assert_eq!(st, 't', "thread {tid} ({name}) not in a tracing stop");
        }
        let before = snapshot(&p);

        // One call on each thread, by name; the read-blocked main thread gets the real work.
        for name in WORKERS {
            let tid = tid_of(pid, name);
            let mut inj = p.injector_on(tid).unwrap();
            assert_eq!(
                inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(),
                pid as i64,
                "{name}"
            );
            inj.finish().unwrap();
        }
        let mut inj = p.injector_on(tid_of(pid, "main")).unwrap();
        assert!(inj.single_stop());
        assert_eq!(inj.close(null[0]).unwrap(), 0);
        assert_eq!(errno_of(inj.close(null[0]).unwrap()), Some(libc::EBADF));
        assert_eq!(inj.close_range(run[0] as u32, run[1] as u32, 0).unwrap(), 0);
        assert_eq!(inj.dup3(pty[0], pty[1], 0).unwrap(), pty[1] as i64);
        assert_eq!(
            errno_of(inj.dup3(pty[2], pty[2], 0).unwrap()),
            Some(libc::EINVAL)
        );
        let opened = inj.open("/dev/null", libc::O_RDWR, 0).unwrap();
        assert!(opened >= 0, "openat: {opened}");
        let opened = opened as i32;
        // Scratch memory is put back: read it now, compare after finish.
        let top = inj.stack_scratch();
        assert!(top != 0);
        inj.finish().unwrap();

        let after = snapshot(&p);
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.0, a.0);
            assert!(
                a.1.same_state_as(&b.1),
                "thread {}: {:?} -> {:?}",
                b.0,
                b.1,
                a.1
            );
            assert_eq!(b.2, a.2, "signal mask of thread {} changed", b.0);
        }
        let stopped = p.resume().unwrap();
        eprintln!("inject: blocked-threads scenario stopped {stopped:?}");
        assert_untouched(pid);

        // From outside: exactly the intended fds changed.
        let closed: Vec<i32> = [null[0]].into_iter().chain(run[0]..=run[1]).collect();
        for (fd, path) in keep {
            if fd == opened {
                // openat took the lowest free number, one we had just closed.
                assert!(closed.contains(&fd), "openat gave {fd}");
            } else if closed.contains(&fd) {
                assert_eq!(fd_path(pid, fd), None, "fd {fd} still open");
            } else if fd == pty[1] {
                assert_eq!(
                    tty_index(pid, fd),
                    tty_index(pid, pty[0]),
                    "dup3 over fd {fd}"
                );
            } else {
                assert_eq!(fd_path(pid, fd), Some(path), "fd {fd} changed");
            }
        }
        assert_eq!(fd_path(pid, opened).as_deref(), Some("/dev/null"));

        // From inside: every blocked call went on as if nothing had happened.
        t.send("data hello");
        let r = fields(&t.expect("read"));
        assert_eq!((r["n"].as_str(), r["data"].as_str()), ("5", "hello"));
        let s = fields(&t.expect("slept"));
        assert_eq!(s["ret"], "0", "nanosleep: {s:?}");
        assert!(
            s["ms"].parse::<u64>().unwrap() >= SLEEP_MS,
            "nanosleep cut short: {s:?}"
        );
        t.send("status");
        let st = fields(&t.expect("status"));
        assert_eq!(
            st["usr1"], "1",
            "the signal sent during the stop was delivered once"
        );
        assert_eq!(
            st["futex_early"], "0",
            "futex waiters woke without being woken"
        );
        t.send("wake");
        for _ in 0..2 {
            let f = fields(&t.expect("futex"));
            assert_eq!(
                (f["early"].as_str(), f["woken"].as_str()),
                ("0", "1"),
                "{f:?}"
            );
        }
        t.send("event");
        let e = fields(&t.expect("epoll"));
        // Documented: any ptrace stop makes a blocked epoll_wait return EINTR (signal(7)).
        assert!(e["eintr"].parse::<u32>().unwrap() >= 1, "{e:?}");
        assert_eq!(e["events"], "1");
        t.send("status");
        let st = fields(&t.expect("status"));
        assert_eq!(
            st["spin_ok"], "1",
            "the spinning thread's registers were disturbed"
        );
    }

    /// Registers of threads blocked in restartable calls are identical in a second stop: the
    /// kernel's restart went exactly as without us.
    #[test]
    fn inject_registers_identical_across_stops() {
        let t = Target::spawn("blocked");
        let pid = t.pid;
        let mut t = t;
        t.expect("ready");
        wait_asleep(pid, &["t-read", "t-futex", "main"]);
        let main = tid_of(pid, "main");
        let watched = [tid_of(pid, "t-read"), tid_of(pid, "t-futex"), main, pid];
        let regs = |p: &StoppedProcess| -> Vec<Regs> {
            watched
                .iter()
                .map(|&w| {
                    assert!(p.tids().contains(&w));
                    arch::get_regs(w).unwrap()
                })
                .collect()
        };
        let mut p = t.stop();
        let first = regs(&p);
        {
            let mut inj = p.injector_on(main).unwrap();
            assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
        }
        p.resume().unwrap();
        wait_asleep(pid, &["t-read", "t-futex", "main"]);
        let p = t.stop();
        assert_eq!(regs(&p), first);
        drop(p);
        assert_untouched(pid);
    }

    /// Many PTY masters closed in one stop, one call each, then with close_range: prints the
    /// cost (asserts only the result).
    #[test]
    fn inject_many_closes_timing() {
        let mut t = Target::spawn("many");
        let r = fields(&t.expect("ready"));
        let (a, b) = (nums(&r["a"]), nums(&r["b"]));
        let pid = t.pid;
        wait_asleep(pid, &["main"]);
        let before = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();

        let t0 = Instant::now();
        let mut p = t.stop();
        let attach = t0.elapsed();
        let mut inj = p.injector().unwrap();
        // The bare cost of one injected call, without the kernel's work for a close.
        let t0 = Instant::now();
        for _ in 0..490 {
            assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
        }
        let bare = t0.elapsed() / 490;
        let t1 = Instant::now();
        for fd in a[0]..=a[1] {
            assert_eq!(inj.close(fd).unwrap(), 0);
        }
        let singles = t1.elapsed();
        inj.finish().unwrap();
        let stopped_singles = p.resume().unwrap();

        let mut p = t.stop();
        let mut inj = p.injector().unwrap();
        let t2 = Instant::now();
        assert_eq!(inj.close_range(b[0] as u32, b[1] as u32, 0).unwrap(), 0);
        let ranged = t2.elapsed();
        inj.finish().unwrap();
        let stopped_range = p.resume().unwrap();

        let n = (a[1] - a[0] + 1) as u32;
        let m = (b[1] - b[0] + 1) as u32;
        let after = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        assert_eq!(before - after, (n + m) as usize);
        eprintln!(
            "inject timing: attach {attach:?}; one injected getpid {bare:?}; {n} single closes {singles:?} ({:?} each), \
             target stopped {stopped_singles:?}; close_range of {m} {ranged:?}, target stopped \
             {stopped_range:?}",
            singles / n
        );
        assert_untouched(pid);
    }

    /// Threads that create threads all the time: every stop holds every thread, and the target
    /// runs on.
    #[test]
    fn inject_threads_created_while_attaching() {
        let mut t = Target::spawn("spawner");
        t.expect("ready");
        let pid = t.pid;
        for _ in 0..20 {
            let mut p = t.stop();
            let held = p.tids().to_vec();
            for (tid, name, st) in threads(pid) {
                // A thread exiting at that moment is a zombie until reaped, never running.
                assert!(
                    (held.contains(&tid) && st == 't') || st == 'Z' || st == 'X',
                    "thread {tid} ({name}, {st}) not held: {held:?}"
                );
            }
            let mut inj = p.injector().unwrap();
            assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
            drop(inj);
            p.resume().unwrap();
        }
        assert_untouched(pid);
        t.send("status");
        let n1: u64 = fields(&t.expect("status"))["spawned"].parse().unwrap();
        loop {
            t.send("status");
            let n2: u64 = fields(&t.expect("status"))["spawned"].parse().unwrap();
            if n2 > n1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A start time that does not match: nothing is touched.
    #[test]
    fn inject_pid_reuse_refused() {
        let mut t = Target::spawn("blocked");
        t.expect("ready");
        let (fd, st) = t.pidfd();
        match StoppedProcess::stop(&fd, st + 1, STOP_TIMEOUT) {
            Err(AttachError::PidReused { found, .. }) => assert_eq!(found, st),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("stopped a process with another start time"),
        }
        assert_untouched(t.pid);
        let me = Pidfd::open(std::process::id() as i32).unwrap();
        let own = StoppedProcess::stop(&me, 0, STOP_TIMEOUT);
        assert!(matches!(own, Err(AttachError::OwnProcess { .. })));
    }

    /// A panic in the middle of an injection (registers changed, mask blocked, scratch written):
    /// unwinding restores and detaches everything, and the target behaves.
    #[test]
    fn inject_drop_guard_on_panic() {
        let mut t = Target::spawn("blocked");
        let ready = fields(&t.expect("ready"));
        let null = nums(&ready["null"]);
        let pid = t.pid;
        wait_asleep(pid, &["t-read", "t-sleep", "main"]);
        let mut p = t.stop();
        let before = snapshot(&p);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut inj = p.injector_on(tid_of(pid, "main")).unwrap();
            inj.push_scratch(b"/dev/null\0").unwrap();
            assert_eq!(inj.close(null[1]).unwrap(), 0);
            panic!("injected failure");
        }));
        assert!(r.is_err());
        let after = snapshot(&p);
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((b.0, b.2), (a.0, a.2), "thread {} mask not restored", b.0);
            assert!(
                a.1.same_state_as(&b.1),
                "thread {}: {:?} -> {:?}",
                b.0,
                b.1,
                a.1
            );
        }
        drop(p);
        assert_untouched(pid);
        assert_eq!(fd_path(pid, null[1]), None);
        t.send("data x");
        assert_eq!(fields(&t.expect("read"))["data"], "x");
        assert_eq!(fields(&t.expect("slept"))["ret"], "0");
    }

    /// The target is killed while we hold it: a clear error, no hang, no panic.
    #[test]
    fn inject_target_killed_midway() {
        let mut t = Target::spawn("blocked");
        t.expect("ready");
        let pid = t.pid;
        let mut p = t.stop();
        let mut inj = p.injector().unwrap();
        assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
        // SAFETY: plain kill(2) of our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut r = Ok(0);
        for _ in 0..1000 {
            r = inj.syscall(arch::nr::GETPID, [0; 6]);
            if r.is_err() {
                break;
            }
        }
        assert!(matches!(r, Err(InjectError::Exited)), "{r:?}");
        drop(inj);
        let _ = p.resume();
        let (_, _) = (t.child.kill(), t.child.wait());
    }

    /// A thread that cannot stop (a vfork parent waits killably, which PTRACE_INTERRUPT does not
    /// wake): a time-out, everything let go, the target runs on once the child is done.
    #[test]
    fn inject_timeout_backs_out() {
        let mut t = Target::spawn("vfork");
        t.expect("vforking");
        let pid = t.pid;
        wait_asleep(pid, &["t-sleep"]);
        // The vfork parent is in D state (killable).
        let deadline = Instant::now() + PATIENCE;
        let main = tid_of(pid, "main");
        while !threads(pid).iter().any(|x| x.0 == main && x.2 == 'D') {
            assert!(Instant::now() < deadline, "{:?}", threads(pid));
            std::thread::sleep(Duration::from_millis(5));
        }
        let (fd, st) = t.pidfd();
        let r = in_tracer_thread(|| {
            StoppedProcess::stop(&fd, st, Duration::from_millis(300)).map(drop)
        });
        match r {
            Err(AttachError::Timeout { tid, .. }) => assert_eq!(tid, main),
            other => panic!("{other:?}"),
        }
        t.expect("vfork done");
        assert_untouched(pid);
        t.send("status");
        t.expect("status");
    }

    /// A single thread in ppoll / epoll_pwait with a temporary signal mask: its real mask must
    /// come back afterwards (PTRACE_SETSIGMASK would have lost it).
    #[test]
    fn inject_keeps_temporary_signal_masks() {
        for call in ["ppoll", "epoll"] {
            let mut t = Target::spawn(&format!("tempmask:{call}"));
            let ready = fields(&t.expect("ready"));
            let pid = t.pid;
            wait_asleep(pid, &["main"]);
            let mut p = t.stop();
            let mut inj = p.injector().unwrap();
            assert_eq!(inj.close(nums(&ready["null"])[0]).unwrap(), 0, "{call}");
            drop(inj);
            p.resume().unwrap();
            t.send("mask");
            let m = fields(&t.expect("mask"));
            assert_eq!(
                m["now"], ready["mask"],
                "{call}: the thread's signal mask changed"
            );
        }
    }

    /// SIGTRAP ignored: each call takes syscall stops instead of a step, and the disposition
    /// stays. SIGTRAP handled: single steps, the handler neither reset nor run.
    #[test]
    fn inject_sigtrap_dispositions_kept() {
        for how in ["ignore", "handler"] {
            let mut t = Target::spawn(&format!("sigtrap:{how}"));
            let ready = fields(&t.expect("ready"));
            let pid = t.pid;
            wait_asleep(pid, &["main"]);
            let trap = 1u64 << (libc::SIGTRAP - 1);
            let key = if how == "ignore" { "SigIgn" } else { "SigCgt" };
            assert_ne!(status_mask(pid, key) & trap, 0);
            let mut p = t.stop();
            let mut inj = p.injector().unwrap();
            assert_eq!(inj.single_stop(), how == "handler");
            assert_eq!(inj.close(nums(&ready["null"])[0]).unwrap(), 0);
            assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
            drop(inj);
            p.resume().unwrap();
            assert_ne!(
                status_mask(pid, key) & trap,
                0,
                "{how}: SIGTRAP disposition changed"
            );
            t.send("status");
            assert_eq!(fields(&t.expect("status"))["traps"], "0", "{how}");
        }
    }

    /// A target that runs a new program again and again (from a side thread, so the exec can
    /// come from a thread not yet seized): every attempt ends, in a stop or a clear error, and
    /// nothing stays traced.
    ///
    /// Ignored: about one run in thirty hits the kernel's exec/ptrace deadlock. The execve holds
    /// the target's cred_guard_mutex in de_thread while it waits for a thread we traced (and it
    /// killed) to be reaped by us, and our PTRACE_SEIZE of another thread of it blocks on that
    /// mutex. gdb and strace share it; the way out is a second ptyreap thread reaping our dead
    /// tracees while an attach is under way (waitpid works from any thread of the tracer's
    /// process). Run with --ignored.
    #[test]
    #[ignore]
    fn inject_exec_during_attach() {
        let mut t = Target::spawn("exec");
        t.expect("ready");
        let pid = t.pid;
        let (mut held, mut execs) = (0, 0);
        for _ in 0..40 {
            let Ok(fd) = Pidfd::open(pid) else { break };
            let Ok(st) = ptrace::start_time(pid) else {
                break;
            };
            match StoppedProcess::stop(&fd, st, STOP_TIMEOUT) {
                Ok(mut p) => {
                    held += 1;
                    if let Ok(mut inj) = p.injector() {
                        assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
                    }
                    p.resume().unwrap();
                }
                Err(AttachError::Exec { .. }) => execs += 1,
                Err(e) => panic!("{e}"),
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        eprintln!("inject: exec loop: {held} stops, {execs} exec refusals");
        // SAFETY: stopping our child for a consistent look.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert_untouched(pid);
    }

    /// The target processes. Each reports on stderr with lines starting "@@ ".
    mod target {
        use super::*;
        use std::os::fd::AsRawFd;

        static USR1: AtomicU32 = AtomicU32::new(0);
        static TRAPS: AtomicU32 = AtomicU32::new(0);
        static WORD: AtomicU32 = AtomicU32::new(0);
        static FUTEX_EARLY: AtomicU32 = AtomicU32::new(0);
        static SPIN_OK: AtomicU32 = AtomicU32::new(1);
        static SPAWNED: AtomicU32 = AtomicU32::new(0);

        fn report(s: String) {
            eprintln!("@@ {s}");
        }

        fn errno() -> i32 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        }

        extern "C" fn on_usr1(_: libc::c_int) {
            USR1.fetch_add(1, Ordering::SeqCst);
        }

        extern "C" fn on_trap(_: libc::c_int) {
            TRAPS.fetch_add(1, Ordering::SeqCst);
        }

        fn handle(sig: i32, f: extern "C" fn(libc::c_int)) {
            // SAFETY: a valid sigaction with an async-signal-safe handler.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = f as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }

        fn block(sigs: &[i32]) {
            // SAFETY: plain sigset manipulation on this thread.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for &s in sigs {
                    libc::sigaddset(&mut set, s);
                }
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
        }

        fn current_mask() -> u64 {
            // SAFETY: query only.
            unsafe {
                let mut cur: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
                (1..64)
                    .filter(|&s| libc::sigismember(&cur, s) == 1)
                    .map(|s| 1u64 << (s - 1))
                    .sum()
            }
        }

        fn open_null() -> i32 {
            // SAFETY: plain open(2).
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) }
        }

        fn worker(name: &str, f: impl FnOnce() + Send + 'static) {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    block(&[libc::SIGUSR1]);
                    f()
                })
                .unwrap();
        }

        fn futex_wait(timeout: Option<libc::timespec>) {
            let mut early = 0;
            while WORD.load(Ordering::SeqCst) == 0 {
                let ts = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const _);
                // SAFETY: FUTEX_WAIT on a live word.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        WORD.as_ptr(),
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        0,
                        ts,
                    )
                };
                if WORD.load(Ordering::SeqCst) == 0 {
                    early += 1;
                    FUTEX_EARLY.fetch_add(1, Ordering::SeqCst);
                }
            }
            report(format!("futex early={early} woken=1"));
        }

        /// Busy in user code: callee-saved registers must survive being stopped.
        fn spin() {
            loop {
                let mut acc = 0u64;
                for i in 0..1_000_000u64 {
                    acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
                }
                let mut check = 0u64;
                for i in 0..1_000_000u64 {
                    check = check.wrapping_mul(31).wrapping_add(i);
                }
                if acc != check {
                    SPIN_OK.store(0, Ordering::SeqCst);
                }
            }
        }

        fn commands(mut on: impl FnMut(&str, &str)) {
            let stdin = std::io::stdin();
            let mut line = String::new();
            while stdin.lock().read_line(&mut line).unwrap_or(0) > 0 {
                let l = line.trim_end().to_string();
                let (cmd, arg) = l.split_once(' ').unwrap_or((&l, ""));
                on(cmd, arg);
                line.clear();
            }
        }

        pub fn run(role: &str) {
            // libtest runs this on a thread named after the test: call it "main".
            // SAFETY: PR_SET_NAME with a NUL-terminated string.
            unsafe { libc::prctl(libc::PR_SET_NAME, c"main".as_ptr()) };
            let (kind, arg) = role.split_once(':').unwrap_or((role, ""));
            match kind {
                "blocked" => blocked(),
                "many" => many(),
                "spawner" => spawner(),
                "vfork" => vfork(),
                "tempmask" => tempmask(arg),
                "sigtrap" => sigtrap(arg),
                "exec" => exec_loop(),
                other => panic!("unknown role {other}"),
            }
        }

        fn blocked() {
            handle(libc::SIGUSR1, on_usr1);
            let null: Vec<i32> = (0..2).map(|_| open_null()).collect();
            let run: Vec<i32> = (0..3).map(|_| open_null()).collect();
            assert!(run[2] == run[0] + 2, "not consecutive: {run:?}");
            // SAFETY: posix_openpt returns a new fd or -1.
            let pty: Vec<i32> = (0..3)
                .map(|_| unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) })
                .collect();
            let mut pipe = [0i32; 2];
            // SAFETY: pipe(2) into a 2-int array.
            assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
            // SAFETY: plain syscalls creating fds.
            let (ep, ev) = unsafe { (libc::epoll_create1(0), libc::eventfd(0, 0)) };
            let mut e = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 1,
            };
            // SAFETY: registering a live eventfd.
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev, &mut e) };

            let rd = pipe[0];
            worker("t-read", move || {
                let mut buf = [0u8; 64];
                // SAFETY: reading into our buffer.
                let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
                let data = String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned();
                report(format!("read n={n} data={data} errno={}", errno()));
            });
            worker("t-sleep", || {
                let ts = libc::timespec {
                    tv_sec: (SLEEP_MS / 1000) as _,
                    tv_nsec: 0,
                };
                let t0 = Instant::now();
                // SAFETY: nanosleep with valid pointers.
                let r = unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
                let e = errno();
                report(format!(
                    "slept ret={r} errno={e} ms={}",
                    t0.elapsed().as_millis()
                ));
            });
            worker("t-futex", || futex_wait(None));
            worker("t-futex-to", || {
                futex_wait(Some(libc::timespec {
                    tv_sec: 600,
                    tv_nsec: 0,
                }))
            });
            worker("t-epoll", move || {
                let (mut eintr, mut events) = (0, 0);
                let mut out = [libc::epoll_event { events: 0, u64: 0 }; 1];
                loop {
                    // SAFETY: one output slot.
                    let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 1, -1) };
                    if n < 0 && errno() == libc::EINTR {
                        eintr += 1;
                        continue;
                    }
                    if n > 0 {
                        events += n;
                        break;
                    }
                }
                report(format!("epoll eintr={eintr} events={events}"));
            });
            worker("t-spin", spin);
            let list = |v: &[i32]| {
                v.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            report(format!(
                "ready null={} run={},{} pty={}",
                list(&null),
                run[0],
                run[2],
                list(&pty)
            ));
            let w = pipe[1];
            commands(|cmd, arg| match cmd {
                "data" => {
                    // SAFETY: writing our bytes to our pipe.
                    unsafe { libc::write(w, arg.as_ptr().cast(), arg.len()) };
                }
                "status" => report(format!(
                    "status usr1={} futex_early={} spin_ok={}",
                    USR1.load(Ordering::SeqCst),
                    FUTEX_EARLY.load(Ordering::SeqCst),
                    SPIN_OK.load(Ordering::SeqCst)
                )),
                "wake" => {
                    WORD.store(1, Ordering::SeqCst);
                    // SAFETY: FUTEX_WAKE on a live word.
                    unsafe {
                        libc::syscall(
                            libc::SYS_futex,
                            WORD.as_ptr(),
                            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                            i32::MAX,
                        )
                    };
                }
                "event" => {
                    let one = 1u64;
                    // SAFETY: 8 bytes to an eventfd.
                    unsafe { libc::write(ev, (&one as *const u64).cast(), 8) };
                }
                _ => {}
            });
        }

        /// 2 x 490 PTY masters in two runs of consecutive fds, 8 idle threads.
        fn many() {
            // SAFETY: raising our own soft fd limit to the hard one.
            unsafe {
                let mut l: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
                l.rlim_cur = l.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            }
            // At fixed numbers, so that each run is consecutive whatever else is open.
            let open = |base: i32| {
                for fd in base..base + 490 {
                    // SAFETY: a new master, moved to `fd`.
                    unsafe {
                        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
                        assert!(m >= 0 && libc::dup2(m, fd) == fd);
                        libc::close(m);
                    }
                }
                (base, base + 489)
            };
            let (a, b) = (open(100), open(600));
            for i in 0..8 {
                worker(&format!("t-idle{i}"), || futex_wait(None));
            }
            report(format!("ready a={},{} b={},{}", a.0, a.1, b.0, b.1));
            commands(|_, _| {});
        }

        fn spawner() {
            for i in 0..4 {
                worker(&format!("t-spawner{i}"), || loop {
                    std::thread::spawn(|| {
                        SPAWNED.fetch_add(1, Ordering::SeqCst);
                    })
                    .join()
                    .unwrap();
                });
            }
            report("ready".into());
            commands(|cmd, _| {
                if cmd == "status" {
                    report(format!("status spawned={}", SPAWNED.load(Ordering::SeqCst)));
                }
            });
        }

        extern "C" fn vfork_child(_: *mut libc::c_void) -> libc::c_int {
            // SAFETY: sleeping then leaving without touching the parent's state.
            unsafe {
                libc::usleep(1_500_000);
                libc::_exit(0)
            }
        }

        fn vfork() {
            worker("t-sleep", || loop {
                std::thread::sleep(Duration::from_secs(100));
            });
            report("vforking".into());
            let mut stack = vec![0u8; 64 * 1024];
            // SAFETY: the child runs on its own stack and only sleeps and _exits; CLONE_VFORK
            // holds this thread until then.
            let r = unsafe {
                let top = stack.as_mut_ptr().add(stack.len()).cast();
                libc::clone(
                    vfork_child,
                    top,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    std::ptr::null_mut(),
                )
            };
            assert!(r > 0);
            // SAFETY: reaping our child.
            unsafe { libc::waitpid(r, std::ptr::null_mut(), 0) };
            report("vfork done".into());
            commands(|cmd, _| {
                if cmd == "status" {
                    report("status ok=1".into());
                }
            });
        }

        /// One thread, its real mask blocking SIGUSR2, waiting on stdin in ppoll or
        /// epoll_pwait with a temporary mask that blocks nothing.
        fn tempmask(call: &str) {
            block(&[libc::SIGUSR2]);
            let null = open_null();
            let mask = current_mask();
            report(format!("ready null={null} mask={mask:x}"));
            // SAFETY: an empty sigset.
            let empty: libc::sigset_t = unsafe {
                let mut s = std::mem::zeroed();
                libc::sigemptyset(&mut s);
                s
            };
            let fd0 = std::io::stdin().as_raw_fd();
            loop {
                let r = if call == "ppoll" {
                    let mut pfd = libc::pollfd {
                        fd: fd0,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd, no time-out, a valid mask.
                    unsafe { libc::ppoll(&mut pfd, 1, std::ptr::null(), &empty) }
                } else {
                    // SAFETY: as in `blocked`.
                    let ep = unsafe { libc::epoll_create1(0) };
                    let mut e = libc::epoll_event {
                        events: libc::EPOLLIN as u32,
                        u64: 0,
                    };
                    let mut out = [libc::epoll_event { events: 0, u64: 0 }; 1];
                    // SAFETY: registering stdin; one output slot; a valid mask.
                    let n = unsafe {
                        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd0, &mut e);
                        libc::epoll_pwait(ep, out.as_mut_ptr(), 1, -1, &empty)
                    };
                    // SAFETY: closing our epoll fd.
                    unsafe { libc::close(ep) };
                    n
                };
                if r > 0 {
                    break;
                }
            }
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).unwrap();
            report(format!("mask now={:x}", current_mask()));
        }

        fn exec_loop() {
            worker("t-idle", || futex_wait(None));
            if std::env::var_os("PTYREAP_EXEC_AGAIN").is_none() {
                report("ready".into());
            }
            let t = std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(2));
                use std::os::unix::process::CommandExt;
                let e = Command::new(std::env::current_exe().unwrap())
                    .args([ENTRY, "--exact", "--nocapture", "--test-threads=1", "-q"])
                    .env("PTYREAP_EXEC_AGAIN", "1")
                    .exec();
                panic!("exec: {e}");
            });
            let _ = t.join();
        }

        fn sigtrap(how: &str) {
            if how == "ignore" {
                // SAFETY: ignoring a signal.
                unsafe { libc::signal(libc::SIGTRAP, libc::SIG_IGN) };
            } else {
                handle(libc::SIGTRAP, on_trap);
            }
            let null = open_null();
            report(format!("ready null={null}"));
            commands(|cmd, _| {
                if cmd == "status" {
                    report(format!("status traps={}", TRAPS.load(Ordering::SeqCst)));
                }
            });
        }
    }
}
