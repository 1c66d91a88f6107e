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
//! - Each call runs between the two syscall stops of `PTRACE_SYSCALL`: the registers are set
//!   with pc on a real syscall instruction, the entry stop confirms it is our call, and the exit
//!   stop gives its own result (`PTRACE_GET_SYSCALL_INFO`, never a register a seccomp rollback
//!   may have rewritten). Not single steps, although they take one stop less: a step's trap is a
//!   real SIGTRAP queued on the thread (to be consumed, or it kills the target once detached),
//!   forcing it resets an ignored SIGTRAP's disposition, and the trap flag outlives a tracer
//!   killed mid-step, which then kills the target. Syscall tracing queues nothing and ends with
//!   the tracer. The releases come in few calls (`close_range` over runs), so the second stop
//!   costs microseconds.
//! - Every call has a deadline ([`CALL_DEADLINE`]): a thread that does not come back (a frozen
//!   cgroup, a seccomp supervisor that is itself stopped) is pulled back with
//!   `PTRACE_INTERRUPT`, which ends an interruptible wait, and restored. Only a thread held in an
//!   unkillable kernel wait cannot be restored; that is reported as it is.
//! - Seccomp: see seccomp.rs. Filters are suspended for the injecting thread alone
//!   (`PTRACE_O_SUSPEND_SECCOMP`, cleared before it is let go) or evaluated over each call before
//!   it is made; a thread whose filters can be neither is not used.
//! - rseq: a thread stopped inside a restartable sequence would, on its way back to user mode,
//!   have been moved to the sequence's abort handler by the kernel (it was preempted). Our first
//!   return to user mode, at the syscall instruction, makes the kernel clear the thread's
//!   `rseq_cs` instead, so the registers given back are the kernel's own fix-up: pc at the abort
//!   handler (what CRIU does when it dumps such a thread).
//! - While one of our calls runs, the thread's signals are blocked with `PTRACE_SETSIGMASK` (all
//!   but the synchronous ones, which the kernel forces anyway), so a signal arriving meanwhile
//!   stays pending, untouched; its own mask goes back with its registers. Between calls, the
//!   pending interrupt is taken before any signal is dequeued, so such a signal waits until we
//!   let go. But `PTRACE_SETSIGMASK` also clears TIF_RESTORE_SIGMASK: for a thread interrupted in
//!   a call with a temporary mask (ppoll, epoll_pwait with a mask, ...) the real mask would never
//!   come back. Such a thread is avoided when another can be used; otherwise its mask is left
//!   alone and any signal that does reach it while we work is delivered right away, with its own
//!   registers and mask back in place, and the thread caught again at the handler's first
//!   instruction (nothing of its user code runs).
//! - x86_64 decides on restarting an interrupted call after the stop inside `get_signal`, so the
//!   thread's own registers can go back at our call's exit stop, with an interrupt pending that
//!   brings it to an event stop on the way out, before any user instruction: our registers are
//!   in place only from the start of each call to its exit stop, the only moment a tracer killed
//!   by SIGKILL can leave them behind. (aarch64 decides before, see arch/aarch64.rs: there they
//!   go back at an event stop.)
//! - A foreign signal that shows up as a signal-delivery stop is never dropped: it is delivered
//!   as above. A fault caused by our own instruction (impossible with a checked instruction, but
//!   handled) is suppressed and reported. Before the thread is let go, its own signal queue
//!   (`PTRACE_PEEKSIGINFO`) is compared with what was queued when we took it: any SIGTRAP or
//!   SIGSYS the kernel queued meanwhile is ours and is taken out; the app's own signals stay.
//! - Nothing is ever written into the target's code. Data (the path for `openat`) goes into its
//!   stack far below the stack pointer, where the stopped thread will not look, and the bytes that
//!   were there are put back before we let go.
//!
//! This file holds the session: taking the thread's state, one call between its syscall stops,
//! and putting the thread back. The other concerns are in the files beside it (ptrace/mod.rs
//! lists them).

mod error;
mod filters;
mod rseq;
mod signals;
mod thread;
mod user_dispatch;

#[cfg(test)]
pub(crate) use error::errno_of;
use error::pt;
pub use error::InjectError;
use filters::*;
use rseq::rseq_abort_target;
#[cfg(test)]
pub(crate) use rseq::RseqCs;
#[cfg(test)]
pub(crate) use signals::own_signals;
use signals::*;
use thread::*;
use user_dispatch::*;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::super::arch::{self, Extra, Regs, INSN_ALIGN, INSN_LEN, SYSCALL_INSN};
use super::super::gadget;
use super::super::seccomp;
use super::dispatch;
use super::raw::{
    self, get_siginfo, get_sigmask, interrupt, resume, set_sigmask, wait_stop_until, Pending,
    Resume, Stop, SudConfig, SyscallStop,
};
use super::stopped::{StoppedProcess, ThreadState};

/// How long one injected call may take, from the registers set to its exit stop. The calls made
/// are close, close_range, dup3 and openat of /dev/null: microseconds (the last close of each
/// PTY, with its release work, happens in ptyreap after the stop: it holds a copy). A thread
/// that does not come back by then (a freezer landed) is pulled back, and the process is let
/// go: the whole stop stays within a few hundred ms.
pub const CALL_DEADLINE: Duration = Duration::from_millis(200);

/// How long a thread may take to reach a stop we asked for (after an interrupt, or on its way
/// back from a call): it is not blocked then, so this is only ever reached by a kernel that
/// holds it.
const STOP_DEADLINE: Duration = Duration::from_secs(2);

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
    /// Its own signal mask, while we replaced it.
    orig_mask: Option<u64>,
    /// Whether to block signals (false for threads with a temporary mask, see the module doc).
    may_mask: bool,
    insn: u64,
    filters: Filters,
    /// The thread's Syscall User Dispatch configuration, when it would take our calls: switched
    /// off around each call and put back at its exit stop (dispatch.rs).
    sud: Option<SudConfig>,
    /// SUD is switched off right now.
    sud_off: bool,
    /// The kernel could not report the thread's SUD configuration: SIGSYS stays unblocked while
    /// our calls run, so that a dispatch of one is queued and dropped rather than forced onto a
    /// handler the app blocks (which would reset it to the default action).
    sud_unknown: bool,
    /// Set when, after a call returned, the thread did not come back to a stop: why.
    adrift: Option<String>,
    /// The thread's own signal queue when we took it.
    pending_before: Vec<Pending>,
    /// Registers or mask differ from the thread's own.
    dirty: bool,
    /// The thread is at a stop inside get_signal (event or signal-delivery stop).
    in_get_signal: bool,
    mem: File,
    scratch_top: Option<u64>,
    scratch_used: u64,
    saved_mem: Vec<(u64, Vec<u8>)>,
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
    #[cfg(test)]
    pub(crate) fn injector_on(&mut self, tid: i32) -> Result<Injector<'_>, InjectError> {
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
        let idx = match choose_thread(p, &mem, only) {
            // Every thread stopped on its way to a signal: let one take it, as it would have
            // without us, and catch it again at the handler's entry (CRIU does the same).
            Err(InjectError::NoUsableThread) if only.is_none() && retrap_signalled(p) => {
                choose_thread(p, &mem, only)?
            }
            other => other?,
        };
        let tid = p.threads()[idx].tid;
        // Before any change to the thread: what its seccomp filters mean for our calls.
        let filters = seccomp_filters(pid, tid)?;
        let session = Session {
            idx,
            tid,
            base: None,
            extra: None,
            orig_mask: None,
            may_mask: false,
            insn: 0,
            filters,
            sud: None,
            sud_off: false,
            sud_unknown: false,
            adrift: None,
            pending_before: Vec::new(),
            dirty: false,
            in_get_signal: true,
            mem,
            scratch_top: None,
            scratch_used: 0,
            saved_mem: Vec::new(),
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
        s.sud = user_dispatch(s)?;
        Ok(())
    }

    /// Whether the thread's seccomp filters are suspended for our calls.
    #[cfg(test)]
    pub(crate) fn seccomp_suspended(&self) -> bool {
        self.s
            .as_ref()
            .is_some_and(|s| matches!(s.filters, Filters::Suspended))
    }

    /// Whether the thread's seccomp filters would let `nr(args)` run as made (always, when it has
    /// none or they are suspended). Nothing is run.
    pub(crate) fn permits(&self, nr: i64, args: [u64; 6]) -> Result<(), InjectError> {
        let s = self.s.as_ref().ok_or(InjectError::Finished)?;
        permits(s, nr, args)
    }

    /// Run one syscall in the target; the raw kernel result (-errno on error). Only calls that
    /// do not block (close, close_range, dup3, openat of a device such as /dev/null); each is
    /// bounded by [`CALL_DEADLINE`], and refused unless the thread's seccomp filters permit it.
    pub(crate) fn syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<i64, InjectError> {
        let pid = self.p.pid();
        let s = self.session()?;
        if let Some(why) = &s.adrift {
            return Err(InjectError::Adrift {
                tid: s.tid,
                why: why.clone(),
            });
        }
        permits(s, nr, args)?;
        let r = run_call(s, nr, args);
        if let Err(InjectError::Exited) = r {
            if !thread_gone(pid, s.tid) {
                // ESRCH from a thread that lives: it is not in a stop. It is put back when it
                // stops (restore waits for it if it has our registers); no further call.
                s.in_get_signal = false;
                s.adrift = Some("it left its stop".into());
                return Err(InjectError::NotStopped { tid: s.tid });
            }
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
    #[cfg(test)]
    pub(crate) fn close_range(
        &mut self,
        first: u32,
        last: u32,
        flags: u32,
    ) -> Result<i64, InjectError> {
        self.syscall(
            arch::nr::CLOSE_RANGE,
            [first.into(), last.into(), flags.into(), 0, 0, 0],
        )
    }

    /// dup3(old, new, flags). Note: EINVAL when `old == new` (dup2 would succeed).
    #[cfg(test)]
    pub(crate) fn dup3(&mut self, old: i32, new: i32, flags: i32) -> Result<i64, InjectError> {
        self.syscall(
            arch::nr::DUP3,
            [old as u64, new as u64, flags as u64, 0, 0, 0],
        )
    }

    /// openat(AT_FDCWD, path, flags, mode). The path is taken from where the target's libraries
    /// already carry it (read-only memory: glibc has "/dev/null"), so nothing is written; only
    /// where none does is it placed in scratch memory (restored later).
    pub(crate) fn open(&mut self, path: &str, flags: i32, mode: u32) -> Result<i64, InjectError> {
        let mut bytes = path.as_bytes().to_vec();
        if bytes.contains(&0) {
            return Err(InjectError::Unexpected("NUL in path".into()));
        }
        bytes.push(0);
        let pid = self.p.pid();
        let found = {
            let s = self.session()?;
            gadget::read_maps(pid)
                .ok()
                .and_then(|maps| gadget::find_in_read_only(&maps, &s.mem, &bytes))
        };
        let addr = match found {
            Some(at) => at,
            None => self.push_scratch(&bytes)?,
        };
        let at_fdcwd = libc::AT_FDCWD as i64 as u64;
        self.syscall(
            arch::nr::OPENAT,
            [at_fdcwd, addr, flags as u64, mode.into(), 0, 0],
        )
    }

    /// The top of the scratch area: an address on the injecting thread's stack, far below its
    /// stack pointer, that nothing uses while the thread is stopped. Data goes *below* it.
    #[cfg(test)]
    pub(crate) fn stack_scratch(&self) -> u64 {
        self.s
            .as_ref()
            .and_then(|s| s.base)
            .map_or(0, |b| scratch_top_for(b.sp()))
    }

    /// Copy `data` into scratch memory in the target and return its address; the bytes it
    /// replaced are put back when the injector finishes. At most 4 KiB in all.
    pub(crate) fn push_scratch(&mut self, data: &[u8]) -> Result<u64, InjectError> {
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

/// Take the thread's own state as the one to restore. The thread is at an event stop. Returns
/// the thread's own syscall instruction, if usable.
fn capture(s: &mut Session) -> Result<Option<u64>, InjectError> {
    let tid = s.tid;
    s.pending_before = raw::pending_signals(tid).map_err(pt("PEEKSIGINFO"))?;
    let mut regs = arch::get_regs(tid).map_err(pt("GETREGS"))?;
    let mut own = regs.own_insn_candidate().filter(|&a| is_insn(&s.mem, a));
    // Settling (below) runs the kernel's signal-return path, which puts a temporary mask away.
    s.may_mask = !arch::may_have_temporary_mask(&regs);
    if arch::REWINDS_BEFORE_STOP && is_insn(&s.mem, regs.pc()) {
        // Before the settling runs the thread, so that a signal arriving now waits.
        block_signals(s)?;
        match settle(s)? {
            Some(r) => {
                regs = r;
                own = Some(regs.pc());
            }
            // A signal was delivered on the way: start over from the handler's entry.
            None => return capture(s),
        }
        s.may_mask = true;
    }
    if let Some(abort) = rseq_abort_target(s, &regs)? {
        regs.set_pc(abort);
        s.dirty = true;
    }
    s.base = Some(regs);
    s.extra = Some(arch::get_extra(tid).map_err(pt("GETREGSET"))?);
    Ok(own)
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
        match wait(s)? {
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
    match wait(s)? {
        Stop::Event(_) => {}
        other => return Err(unexpected(other)),
    }
    let mut regs = arch::get_regs(tid).map_err(pt("GETREGS"))?;
    regs.set_pc(regs.pc() - INSN_LEN);
    // Until the end the thread is "past" its svc: restoring `regs` puts it back before it.
    s.dirty = true;
    Ok(Some(regs))
}

/// The injecting thread's next stop, which it is on its way to (not blocked): bounded by
/// [`STOP_DEADLINE`], interrupting it once on the way.
fn wait(s: &Session) -> Result<Stop, InjectError> {
    wait_within(s.tid, STOP_DEADLINE)
}

fn wait_within(tid: i32, limit: Duration) -> Result<Stop, InjectError> {
    let first = Instant::now() + limit / 2;
    if let Some(stop) = wait_stop_until(tid, first).map_err(pt("wait"))? {
        return Ok(stop);
    }
    interrupt(tid).map_err(pt("INTERRUPT"))?;
    wait_stop_until(tid, first + limit / 2)
        .map_err(pt("wait"))?
        .ok_or(InjectError::Stuck { tid })
}

fn unexpected(stop: Stop) -> InjectError {
    match stop {
        Stop::Gone(_) => InjectError::Exited,
        Stop::Exec => InjectError::Exec,
        other => InjectError::Unexpected(format!("stop {other:?}")),
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
        s.orig_mask = None;
    }
    s.dirty = false;
    Ok(())
}

/// The kernel's restart codes: an interrupted call that did not complete (include/linux/errno.h).
fn is_restart(ret: i64) -> bool {
    matches!(-ret, 512 | 513 | 514 | 516)
}

/// One call, between its syscall-entry and -exit stops, within [`CALL_DEADLINE`].
fn run_call(s: &mut Session, nr: i64, args: [u64; 6]) -> Result<i64, InjectError> {
    let tid = s.tid;
    // Each round delivers one foreign signal first: bounded, so a flood cannot hold the target.
    'call: for _round in 0..MAX_SIGNAL_ROUNDS {
        let mut regs = s.base.ok_or(InjectError::Finished)?;
        regs.prepare_call(s.insn, nr as u64, args);
        block_signals(s)?;
        s.dirty = true;
        arch::set_regs(tid, &regs).map_err(pt("SETREGS"))?;
        dispatch_off(s)?;
        resume(tid, Resume::Syscall, 0).map_err(pt("SYSCALL"))?;
        s.in_get_signal = false;
        let start = Instant::now();
        let mut deadline = start + CALL_DEADLINE;
        let (mut began, mut interrupted) = (false, false);
        let mut result: Option<i64> = None;
        loop {
            let Some(stop) = wait_stop_until(tid, deadline).map_err(pt("wait"))? else {
                if interrupted {
                    return Err(InjectError::Stuck { tid });
                }
                // Pull it back: an interruptible wait (a freezer, a supervisor) ends for this.
                interrupt(tid).map_err(pt("INTERRUPT"))?;
                interrupted = true;
                deadline = Instant::now() + STOP_DEADLINE;
                continue;
            };
            match stop {
                Stop::Syscall => match raw::syscall_info(tid).map_err(pt("GET_SYSCALL_INFO"))? {
                    SyscallStop::Entry { nr: entered, .. } => {
                        if entered != nr as u64 {
                            return Err(InjectError::Unexpected(format!(
                                "entered syscall {entered} instead of {nr}"
                            )));
                        }
                        began = true;
                        resume(tid, Resume::Syscall, 0).map_err(pt("SYSCALL"))?;
                    }
                    SyscallStop::Exit { rval } if began => {
                        dispatch_back(s)?;
                        if !interrupted && !arch::REWINDS_BEFORE_STOP {
                            // The call ran: its result stands whatever happens next. A thread
                            // that does not come back to a stop is caught (or let go) by restore.
                            if let Err(e) = back_to_own_registers(s) {
                                s.in_get_signal = false;
                                s.adrift = Some(e.to_string());
                            }
                            return Ok(rval);
                        }
                        if !interrupted {
                            return Ok(rval);
                        }
                        // Our interrupt is still to be taken: go on to its event stop.
                        result = Some(rval);
                        resume(tid, Resume::Cont, 0).map_err(pt("CONT"))?;
                    }
                    _ => resume(tid, Resume::Syscall, 0).map_err(pt("SYSCALL"))?,
                },
                Stop::Event(_) if interrupted => {
                    s.in_get_signal = true;
                    return match result {
                        Some(r) if !is_restart(r) => Ok(r),
                        _ => Err(InjectError::Timeout {
                            nr,
                            waited: CALL_DEADLINE,
                            began,
                        }),
                    };
                }
                Stop::Event(_) | Stop::OtherEvent(_) => {
                    // A group stop or an earlier interrupt before the call ran: run it.
                    s.in_get_signal = true;
                    resume(tid, Resume::Syscall, 0).map_err(pt("SYSCALL"))?;
                }
                Stop::Signal(sig) => {
                    s.in_get_signal = true;
                    let info = get_siginfo(tid).map_err(pt("GETSIGINFO"))?;
                    let now = arch::get_regs(tid).map_err(pt("GETREGS"))?;
                    // A fault of our instruction: synchronous, from the kernel, at our pc, and not
                    // one that was already queued for the app before we took the thread.
                    let queued_before = s.pending_before.contains(&(sig, info.si_code));
                    // Syscall User Dispatch took our call (a kernel that hides the configuration):
                    // the call was rolled back, pc just after our instruction. Dropped here, never
                    // delivered: the app's handler would emulate a call it never made.
                    if !began
                        && sig == libc::SIGSYS
                        && info.si_code == SYS_USER_DISPATCH
                        && now.pc() == s.insn + INSN_LEN
                        && !queued_before
                    {
                        return Err(InjectError::Dispatched { nr });
                    }
                    if !began
                        && SYNCHRONOUS & bit(sig) != 0
                        && info.si_code > 0
                        && now.pc() == s.insn
                        && !queued_before
                    {
                        return Err(InjectError::Fault {
                            signal: sig,
                            addr: s.insn,
                        });
                    }
                    // Someone else's signal: deliver it with the thread's own state in place,
                    // catch the thread again at the handler's entry, and start over from there.
                    dispatch_back(s)?;
                    put_back(s)?;
                    pass_and_retrap(s, sig)?;
                    let _ = capture(s)?;
                    if began {
                        // Delivered on the way out of our call, which ran: its result stands.
                        if let Some(r) = result {
                            return Ok(r);
                        }
                    }
                    continue 'call;
                }
                other => return Err(unexpected(other)),
            }
        }
    }
    Err(InjectError::Unexpected(format!(
        "signals kept arriving: syscall {nr} not made after {MAX_SIGNAL_ROUNDS} deliveries"
    )))
}

/// x86_64, at our call's exit stop: the thread's own registers back at once, and on to an event
/// stop before it runs any user instruction (see the module doc). A signal met on the way is
/// delivered as the kernel would, the thread caught again at the handler's entry.
fn back_to_own_registers(s: &mut Session) -> Result<(), InjectError> {
    let tid = s.tid;
    interrupt(tid).map_err(pt("INTERRUPT"))?;
    put_back(s)?;
    loop {
        resume(tid, Resume::Cont, 0).map_err(pt("CONT"))?;
        match wait(s)? {
            Stop::Event(_) => break,
            Stop::Signal(sig) => {
                s.in_get_signal = true;
                pass_and_retrap(s, sig)?;
                let _ = capture(s)?;
                break;
            }
            Stop::Syscall | Stop::OtherEvent(_) => interrupt(tid).map_err(pt("INTERRUPT"))?,
            other => return Err(unexpected(other)),
        }
    }
    s.in_get_signal = true;
    Ok(())
}

/// Give the injecting thread back its own registers, mask and memory, at a stop inside
/// get_signal, with no signal of ours left queued; then it can be detached. Ends the session,
/// and records in `p` where the thread is now.
fn restore(p: &mut StoppedProcess, session: &mut Option<Session>) -> Result<(), InjectError> {
    let Some(mut s) = session.take() else {
        return Ok(());
    };
    let (mut pass, mut result) = restore_session(&mut s);
    // Our registers still in it, and alive: never let it go like that (see restore_session).
    while s.dirty
        && matches!(
            result,
            Err(InjectError::Exited | InjectError::NotStopped { .. } | InjectError::Stuck { .. })
        )
        && !thread_gone(p.pid(), s.tid)
    {
        std::thread::sleep(Duration::from_millis(10));
        s.in_get_signal = false;
        (pass, result) = restore_session(&mut s);
    }
    let state = match &result {
        Err(InjectError::Exited) if thread_gone(p.pid(), s.tid) => ThreadState::Gone,
        // not in a stop, with its own registers: the release waits for it, or lets it go
        Err(InjectError::Exited | InjectError::NotStopped { .. }) => ThreadState::Running,
        // At a stop in get_signal with its own registers (or as near as could be): detach it
        // with the signal it was about to take, whatever else went wrong.
        _ => ThreadState::Stopped {
            event: pass == 0 && result.is_ok(),
            pass,
        },
    };
    p.set_thread_state(s.idx, state);
    result
}

/// Puts the thread back (see [`restore`]). Returns the signal to pass on when detaching (the
/// thread is then at that signal's delivery stop), and the first problem met.
///
/// A thread that does not come back to a stop (held by the kernel: a cgroup v1 freezer, an
/// unkillable wait) still has our registers: it is waited for, however long it takes, and put
/// back when it stops. Letting go of it, or letting the tracing thread end, would run it on with
/// them; the tracer's parent never ends a tracer in this state.
fn restore_session(s: &mut Session) -> (i32, Result<(), InjectError>) {
    let tid = s.tid;
    let mut problem = None;
    for (addr, old) in s.saved_mem.drain(..).rev() {
        if let Err(source) = s.mem.write_all_at(&old, addr) {
            problem.get_or_insert(InjectError::Memory { addr, source });
        }
    }
    let mut pass = 0;
    if !s.dirty && !s.in_get_signal {
        // Its own registers are back, but it left its stop (a freezer held it on the way):
        // catch it for a little while; otherwise it runs on as it is, which is its own state.
        match catch_up(tid) {
            Ok(sig) => {
                pass = sig;
                s.in_get_signal = true;
            }
            Err(e) => return (0, Err(e)),
        }
    }
    if s.dirty {
        if !s.in_get_signal {
            // At a syscall-exit stop, or not stopped at all (stuck): continue into an event
            // stop first. The pending interrupt traps before any signal is dequeued.
            match stop_in_get_signal(tid) {
                Ok(sig) => pass = sig,
                Err(e) => return (0, Err(e)),
            }
            s.in_get_signal = true;
        }
        if let Err(e) = put_back(s) {
            let _ = dispatch_back(s);
            return (pass, Err(e));
        }
    }
    if let Err(e) = dispatch_back(s) {
        problem.get_or_insert(e);
    }
    if let Err(e) = drain_own_signals(s, &mut pass) {
        problem.get_or_insert(e);
    }
    if matches!(s.filters, Filters::Suspended) {
        if let Err(source) = raw::set_options(tid, raw::SEIZE_OPTIONS) {
            problem.get_or_insert(InjectError::Ptrace {
                what: "SETOPTIONS",
                source,
            });
        }
    }
    (pass, problem.map_or(Ok(()), Err))
}

/// Whether thread `tid` of `pid` has exited or is on its way out: no longer listed, a zombie,
/// in `do_exit` (PF_EXITING), or with a SIGKILL pending. ESRCH from ptrace means that only
/// then; otherwise the thread just is not in a stop. A SIGKILL wakes a traced thread before it
/// shows any of these for a moment (dequeued, not yet in `do_exit`), so a live-looking thread
/// is looked at again a few times within a few milliseconds.
fn thread_gone(pid: i32, tid: i32) -> bool {
    for _ in 0..5 {
        if super::super::procfs::thread_exiting(pid, tid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// How long `catch_up` waits for a thread with its own registers to reach a stop.
const CATCH_UP: Duration = Duration::from_millis(100);

/// A thread with its own registers back that is not in a stop: interrupt it and wait a little
/// for a stop inside get_signal. Returns the signal of a signal-delivery stop.
fn catch_up(tid: i32) -> Result<i32, InjectError> {
    let deadline = Instant::now() + CATCH_UP;
    interrupt(tid).map_err(|_| InjectError::NotStopped { tid })?;
    loop {
        match wait_stop_until(tid, deadline).map_err(pt("wait"))? {
            Some(Stop::Event(_)) => return Ok(0),
            Some(Stop::Signal(sig)) => return Ok(sig),
            Some(Stop::Syscall | Stop::OtherEvent(_)) => {
                interrupt(tid).map_err(pt("INTERRUPT"))?;
                resume(tid, Resume::Cont, 0).map_err(pt("CONT"))?;
            }
            Some(other) => return Err(unexpected(other)),
            None => return Err(InjectError::NotStopped { tid }),
        }
    }
}

/// From a syscall-exit stop, or from no stop at all: on to a stop inside get_signal, waiting as
/// long as it takes (see [`restore_session`]). Returns the signal of a signal-delivery stop.
fn stop_in_get_signal(tid: i32) -> Result<i32, InjectError> {
    interrupt(tid).map_err(pt("INTERRUPT"))?;
    // Only a tracee in a stop answers ptrace requests: at a syscall-exit stop, or stuck.
    let mut stopped = raw::syscall_info(tid).is_ok();
    loop {
        if stopped {
            match resume(tid, Resume::Cont, 0) {
                // not in a stop after all (woken meanwhile): wait for the one asked for
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                other => other.map_err(pt("CONT"))?,
            }
        }
        let stop = loop {
            if let Some(stop) =
                wait_stop_until(tid, Instant::now() + Duration::from_secs(1)).map_err(pt("wait"))?
            {
                break stop;
            }
            // Still held by the kernel: ask again (an interrupt that found it unwakeable may
            // take once it can be woken).
            interrupt(tid).map_err(pt("INTERRUPT"))?;
        };
        stopped = true;
        match stop {
            Stop::Event(_) => return Ok(0),
            Stop::Signal(sig) => return Ok(sig),
            Stop::Syscall | Stop::OtherEvent(_) => interrupt(tid).map_err(pt("INTERRUPT"))?,
            other => return Err(unexpected(other)),
        }
    }
}
