//! Holding a whole process still: every thread seized and stopped, and always let go again.
//!
//! Why it is done this way (kernel behaviour we rely on):
//! - `PTRACE_SEIZE` attaches without sending a signal (unlike `PTRACE_ATTACH`'s SIGSTOP, which a
//!   program could see), and `PTRACE_INTERRUPT` then stops the thread with a
//!   `PTRACE_EVENT_STOP`, from inside the kernel's signal handling (`get_signal`). A thread in an
//!   interruptible sleep (read, nanosleep, futex, epoll) is woken for that; what it was doing is
//!   left for the kernel to restart or finish once we let go.
//! - ptrace works on threads, so each thread in `/proc/PID/task` is seized and stopped, and the
//!   directory is listed again until a listing shows none we do not hold: a thread can only be
//!   created by a running one, so once a full listing is taken while all known ones are stopped,
//!   there are no others. Threads that exit meanwhile are dropped.
//! - A thread in an uninterruptible or killable sleep (a vfork parent, D state) does not stop;
//!   after the time-out we let go of all others. `PTRACE_DETACH` needs a stopped tracee, so such a
//!   thread stays attached (it stops when it wakes) until it can be detached or until the tracing
//!   *thread* exits, which detaches everything it traced: run the whole session in
//!   [`in_tracer_thread`].
//! - The pid is pinned by a pidfd, and the process's start time (field 22 of /proc/PID/stat) is
//!   checked against the caller's, so a reused pid is never touched: while the pidfd's process is
//!   alive, nobody else can have its pid.
//! - ptrace requests and `waitpid` on a tracee must come from the thread that attached:
//!   `StoppedProcess` is neither `Send` nor `Sync`.
//! - A thread may report a signal-delivery-stop instead of our interrupt (a signal was on its way
//!   in); that signal is kept and passed on when the thread is detached, so nothing is lost.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use super::inject::{self, InjectError, Injector};
use super::pidfd::Pidfd;

// Constants that not every libc version exports on every target.
pub(crate) const PTRACE_EVENT_EXEC: i32 = 4;
pub(crate) const PTRACE_EVENT_STOP: i32 = 128;
const PTRACE_O_TRACESYSGOOD: usize = 1;
const PTRACE_O_TRACEEXEC: usize = 0x10;
const PTRACE_SYSEMU: libc::c_uint = 31;
const CAP_SYS_PTRACE: u32 = 19;

fn ptrace(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: only requests whose addr/data are integers or point to memory owned by the caller
    // for the duration of the call are passed through here.
    let rc = unsafe { libc::ptrace(req, tid, addr, data) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

pub(crate) fn seize(tid: i32) -> io::Result<()> {
    ptrace(
        libc::PTRACE_SEIZE,
        tid,
        0,
        PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC,
    )
    .map(drop)
}

pub(crate) fn interrupt(tid: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

pub(crate) fn detach(tid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

/// How to let a stopped thread run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    Cont,
    /// One instruction, then a SIGTRAP stop. Over a syscall instruction: after the syscall.
    SingleStep,
    /// Until the next syscall entry or exit.
    Syscall,
    /// Until the next syscall entry, which is then skipped.
    Sysemu,
}

pub(crate) fn resume(tid: i32, how: Resume, sig: i32) -> io::Result<()> {
    let req = match how {
        Resume::Cont => libc::PTRACE_CONT,
        Resume::SingleStep => libc::PTRACE_SINGLESTEP,
        Resume::Syscall => libc::PTRACE_SYSCALL,
        Resume::Sysemu => PTRACE_SYSEMU,
    };
    ptrace(req, tid, 0, sig as usize).map(drop)
}

pub(crate) fn get_sigmask(tid: i32) -> io::Result<u64> {
    let mut mask: u64 = 0;
    ptrace(
        libc::PTRACE_GETSIGMASK,
        tid,
        8,
        &mut mask as *mut u64 as usize,
    )?;
    Ok(mask)
}

pub(crate) fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    ptrace(
        libc::PTRACE_SETSIGMASK,
        tid,
        8,
        &mask as *const u64 as usize,
    )
    .map(drop)
}

pub(crate) fn get_siginfo(tid: i32) -> io::Result<libc::siginfo_t> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    ptrace(
        libc::PTRACE_GETSIGINFO,
        tid,
        0,
        &mut info as *mut libc::siginfo_t as usize,
    )?;
    Ok(info)
}

/// What `waitpid` told about one traced thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `PTRACE_EVENT_STOP`: our interrupt (SIGTRAP) or a group-stop (the stop signal).
    Event(i32),
    /// Signal-delivery-stop: the thread is about to get this signal.
    Signal(i32),
    /// Syscall-entry or -exit stop.
    Syscall,
    /// After a successful execve.
    Exec,
    /// Some other ptrace event.
    OtherEvent(i32),
    /// The thread is gone (exit status or killing signal, as waitpid's raw status).
    Gone(i32),
}

fn decode(status: i32) -> Stop {
    if libc::WIFSTOPPED(status) {
        let sig = libc::WSTOPSIG(status);
        match status >> 16 {
            0 if sig == libc::SIGTRAP | 0x80 => Stop::Syscall,
            0 => Stop::Signal(sig),
            PTRACE_EVENT_STOP => Stop::Event(sig),
            PTRACE_EVENT_EXEC => Stop::Exec,
            ev => Stop::OtherEvent(ev),
        }
    } else {
        Stop::Gone(status)
    }
}

fn waitpid(tid: i32, nohang: bool) -> io::Result<Option<Stop>> {
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes one int to `status`.
        let r = unsafe { libc::waitpid(tid, &mut status, flags) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if e.raw_os_error() == Some(libc::ECHILD) {
                // Already reaped, or no longer ours: it is gone as far as we are concerned.
                return Ok(Some(Stop::Gone(0)));
            }
            return Err(e);
        }
        return Ok((r != 0).then(|| decode(status)));
    }
}

/// The next stop of `tid`, blocking. Only for a thread that is about to stop and is not a group
/// leader with siblings: a killed leader's exit is not reported while traced sibling threads
/// wait, as zombies, for us to reap them, so this could hang on it; use [`wait_stop`] there.
pub(crate) fn wait_stop_blocking(tid: i32) -> io::Result<Stop> {
    waitpid(tid, false).map(|s| s.unwrap_or(Stop::Gone(0)))
}

/// The next stop of `tid`, waiting as long as it takes but noticing when it died (see
/// [`wait_stop_blocking`]): polls, briskly for a while (a stop usually arrives within
/// microseconds), then sleeping between looks.
pub(crate) fn wait_stop(tid: i32) -> io::Result<Stop> {
    let start = Instant::now();
    let spin = Duration::from_millis(2);
    let mut next_check = spin;
    loop {
        if let Some(s) = waitpid(tid, true)? {
            return Ok(s);
        }
        let waited = start.elapsed();
        if waited < spin {
            std::thread::yield_now();
            continue;
        }
        std::thread::sleep(Duration::from_micros(50));
        if waited >= next_check {
            next_check += Duration::from_millis(2);
            if is_dead(tid) {
                return Ok(Stop::Gone(0));
            }
        }
    }
}

/// Whether a thread has exited (a zombie, or gone from /proc).
pub(crate) fn is_dead(tid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(stat) => matches!(
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].trim_start().chars().next()),
            Some('Z') | Some('X') | None
        ),
        Err(_) => true,
    }
}

/// The next stop of `tid`, or None at `deadline`. waitpid has no time-out: poll, briskly for
/// the first half millisecond (a stop usually arrives within tens of microseconds), then backing
/// off to a millisecond.
pub(crate) fn wait_stop_until(tid: i32, deadline: Instant) -> io::Result<Option<Stop>> {
    let start = Instant::now();
    let mut nap = Duration::from_micros(20);
    loop {
        if let Some(s) = waitpid(tid, true)? {
            return Ok(Some(s));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        if now - start < Duration::from_micros(500) {
            std::thread::yield_now();
            continue;
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(1));
    }
}

/// Why a process could not be stopped. Each has one plain message (Display).
#[derive(Debug)]
pub enum AttachError {
    NoSuchProcess {
        pid: i32,
    },
    /// The process exited (before or while we attached).
    Exited {
        pid: i32,
    },
    /// The process called execve while we attached.
    Exec {
        pid: i32,
    },
    /// The pid now names another process than the one inspected.
    PidReused {
        pid: i32,
        expected: u64,
        found: u64,
    },
    /// ptyreap's own process.
    OwnProcess {
        pid: i32,
    },
    AlreadyTraced {
        pid: i32,
        tracer_pid: i32,
        tracer_name: String,
    },
    NotPermitted {
        pid: i32,
        yama_scope: Option<u32>,
        is_root: bool,
        has_cap_sys_ptrace: bool,
    },
    /// This thread did not stop in time (an uninterruptible sleep, a vfork parent).
    Timeout {
        pid: i32,
        tid: i32,
        waited: Duration,
    },
    Other {
        pid: i32,
        what: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::NoSuchProcess { pid } => write!(f, "no process with pid {pid}"),
            AttachError::Exited { pid } => write!(f, "process {pid} exited"),
            AttachError::Exec { pid } => {
                write!(f, "process {pid} ran a new program while being stopped")
            }
            AttachError::PidReused { pid, .. } => write!(
                f,
                "pid {pid} now belongs to another process than the one inspected"
            ),
            AttachError::OwnProcess { pid } => write!(f, "pid {pid} is ptyreap itself"),
            AttachError::AlreadyTraced {
                pid,
                tracer_pid,
                tracer_name,
            } => {
                let msg = diagnose_eperm(None, true, true, Some((*tracer_pid, tracer_name)));
                write!(f, "cannot attach to process {pid}: {msg}")
            }
            AttachError::NotPermitted {
                pid,
                yama_scope,
                is_root,
                has_cap_sys_ptrace,
            } => {
                let msg = diagnose_eperm(*yama_scope, *is_root, *has_cap_sys_ptrace, None);
                write!(f, "cannot attach to process {pid}: {msg}")
            }
            AttachError::Timeout { pid, tid, waited } => write!(
                f,
                "thread {tid} of process {pid} did not stop within {} ms (it is in an \
                 uninterruptible wait, e.g. a vfork or a hung file system)",
                waited.as_millis()
            ),
            AttachError::Other { pid, what, source } => {
                write!(f, "cannot stop process {pid}: {what}: {source}")
            }
        }
    }
}

impl std::error::Error for AttachError {}

/// Why `PTRACE_SEIZE` said EPERM, in one sentence that says what to do. Pure, so it can be
/// tested for the cases this machine cannot produce (Yama, missing capability).
pub fn diagnose_eperm(
    yama_scope: Option<u32>,
    is_root: bool,
    has_cap_sys_ptrace: bool,
    tracer: Option<(i32, &str)>,
) -> String {
    if let Some((tpid, name)) = tracer {
        return format!(
            "it is already being traced by process {tpid} ({name}), a debugger or tracer; \
             detach or quit it and try again"
        );
    }
    match yama_scope {
        Some(3) => {
            return "kernel.yama.ptrace_scope is 3: no process may attach with ptrace until the \
                    next reboot (the setting cannot be lowered); reboot with a lower value"
                .to_string()
        }
        Some(2) if !has_cap_sys_ptrace => {
            return "kernel.yama.ptrace_scope is 2: only processes with CAP_SYS_PTRACE may attach; \
                    run ptyreap as root (sudo ptyreap ...)"
                .to_string()
        }
        Some(1) if !has_cap_sys_ptrace => {
            return "kernel.yama.ptrace_scope is 1: only a process's ancestors may attach to it; \
                    run ptyreap as root (sudo ptyreap ...), or allow it for now with \
                    'sudo sysctl kernel.yama.ptrace_scope=0'"
                .to_string()
        }
        _ => {}
    }
    if is_root && !has_cap_sys_ptrace {
        "ptyreap runs as root but without the CAP_SYS_PTRACE capability (a container or a \
         restricted service?); grant it (e.g. docker run --cap-add=SYS_PTRACE, or \
         AmbientCapabilities=CAP_SYS_PTRACE)"
            .to_string()
    } else if !has_cap_sys_ptrace {
        "not permitted to trace it (it belongs to another user, or changed its credentials); \
         run ptyreap as root (sudo ptyreap ...)"
            .to_string()
    } else {
        "denied although ptyreap has CAP_SYS_PTRACE: a security module (SELinux, AppArmor, \
         lockdown) or a protected process; see the kernel log (dmesg) or the audit log"
            .to_string()
    }
}

fn status_field(pid: i32, tid: Option<i32>, key: &str) -> Option<String> {
    let path = match tid {
        Some(t) => format!("/proc/{pid}/task/{t}/status"),
        None => format!("/proc/{pid}/status"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    super::procfs::status_field(&text, key).map(str::to_string)
}

/// Signals the process ignores (SigIgn), as a mask with bit `n-1` for signal `n`.
pub(crate) fn ignored_signals(pid: i32) -> io::Result<u64> {
    let v = status_field(pid, None, "SigIgn")
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no SigIgn"))?;
    u64::from_str_radix(&v, 16).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn tracer_of(pid: i32) -> Option<(i32, String)> {
    let tpid: i32 = status_field(pid, None, "TracerPid")?.parse().ok()?;
    if tpid == 0 {
        return None;
    }
    let name = std::fs::read_to_string(format!("/proc/{tpid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".to_string());
    Some((tpid, name))
}

fn eperm_error(pid: i32) -> AttachError {
    if let Some((tracer_pid, tracer_name)) = tracer_of(pid) {
        return AttachError::AlreadyTraced {
            pid,
            tracer_pid,
            tracer_name,
        };
    }
    let yama_scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let cap_eff = status_field(std::process::id() as i32, None, "CapEff")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0);
    AttachError::NotPermitted {
        pid,
        yama_scope,
        // SAFETY: geteuid cannot fail.
        is_root: unsafe { libc::geteuid() } == 0,
        has_cap_sys_ptrace: cap_eff & (1 << CAP_SYS_PTRACE) != 0,
    }
}

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot.
pub fn start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

fn parse_start_time(stat: &str) -> Option<u64> {
    super::procfs::parse_stat(stat).map(|s| s.start_time)
}

/// The state field of a thread's stat line ('R', 'S', 'Z', ...).
fn thread_state(pid: i32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

fn list_tasks(pid: i32) -> io::Result<Vec<i32>> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Where one seized thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThreadState {
    /// Seized and interrupted; its stop not seen yet.
    Running,
    /// In a ptrace-stop; `pass` is the signal to hand on when letting go (0: none).
    Stopped { event: bool, pass: i32 },
    /// Exited, or already let go.
    Gone,
}

#[derive(Debug)]
pub(crate) struct Thread {
    pub(crate) tid: i32,
    pub(crate) state: ThreadState,
}

/// Every thread of a process, seized and stopped. Dropping it restores whatever was injected and
/// detaches every thread, on every path (errors, panics); [`StoppedProcess::resume`] does the same
/// and reports. Never `Send`: see the module doc.
pub struct StoppedProcess {
    pid: i32,
    pub(crate) threads: Vec<Thread>,
    stopped_tids: Vec<i32>,
    /// Just before the first interrupt: the start of the stop, conservatively.
    since: Option<Instant>,
    pub(crate) injection: Option<inject::Session>,
    /// When the last held thread was let go.
    resumed: Option<Instant>,
    released: bool,
    _not_send: PhantomData<*const ()>,
}

/// What went wrong while letting go. The target was let go as far as possible; `stopped` is how
/// long it was held.
#[derive(Debug)]
pub struct ResumeError {
    pub stopped: Duration,
    pub message: String,
}

impl fmt::Display for ResumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ResumeError {}

impl StoppedProcess {
    /// Seize and stop every thread of the process behind `pidfd`, which must have started at
    /// `expected_start_time` (field 22 of /proc/PID/stat, as inspected). `timeout` bounds the
    /// wait for threads to stop.
    pub fn stop(
        pidfd: &Pidfd,
        expected_start_time: u64,
        timeout: Duration,
    ) -> Result<StoppedProcess, AttachError> {
        let pid = pidfd.pid();
        if pid == std::process::id() as i32 {
            return Err(AttachError::OwnProcess { pid });
        }
        let found = match start_time(pid) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if pidfd.has_exited() {
                    AttachError::Exited { pid }
                } else {
                    AttachError::NoSuchProcess { pid }
                })
            }
            Err(source) => {
                return Err(AttachError::Other {
                    pid,
                    what: "reading its stat",
                    source,
                })
            }
        };
        // Alive now means the stat we read was its own (see the module doc).
        if pidfd.has_exited() {
            return Err(AttachError::Exited { pid });
        }
        if found != expected_start_time {
            return Err(AttachError::PidReused {
                pid,
                expected: expected_start_time,
                found,
            });
        }
        let mut p = StoppedProcess {
            pid,
            threads: Vec::new(),
            stopped_tids: Vec::new(),
            since: None,
            injection: None,
            resumed: None,
            released: false,
            _not_send: PhantomData,
        };
        // Any error below drops `p`, which detaches whatever was seized.
        p.seize_all(pidfd, timeout)?;
        Ok(p)
    }

    fn seize_all(&mut self, pidfd: &Pidfd, timeout: Duration) -> Result<(), AttachError> {
        let pid = self.pid;
        let deadline = Instant::now() + timeout;
        loop {
            let listed = match list_tasks(pid) {
                Ok(t) => t,
                Err(_) if pidfd.has_exited() => return Err(AttachError::Exited { pid }),
                Err(source) => {
                    return Err(AttachError::Other {
                        pid,
                        what: "listing its threads",
                        source,
                    })
                }
            };
            let first = self.threads.len();
            // The leader first: its seizing is what pins the pid (see below).
            let leader = listed.iter().position(|&t| t == pid);
            let ordered = leader
                .into_iter()
                .map(|i| listed[i])
                .chain(listed.iter().copied().filter(|&t| t != pid));
            for tid in ordered {
                if self.threads.iter().any(|t| t.tid == tid) {
                    continue;
                }
                match seize(tid) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        // An exiting thread (or a zombie leader) cannot be seized; it does not
                        // run user code any more either.
                        if tid != pid
                            && matches!(thread_state(pid, tid), None | Some('Z') | Some('X'))
                        {
                            continue;
                        }
                        if tid == pid && tracer_of(pid).is_none() && seize_retry(pid, deadline) {
                            // The old leader was on its way out while another thread ran
                            // execve and took its pid: the process now runs a new program.
                            // Stop it, so that it can be detached again at once.
                            self.threads.push(Thread {
                                tid,
                                state: ThreadState::Running,
                            });
                            let _ = interrupt(tid);
                            return Err(AttachError::Exec { pid });
                        }
                        return Err(eperm_error(pid));
                    }
                    Err(source) => {
                        return Err(AttachError::Other {
                            pid,
                            what: "seizing",
                            source,
                        })
                    }
                }
                self.threads.push(Thread {
                    tid,
                    state: ThreadState::Running,
                });
                if self.threads.len() == 1 && pidfd.has_exited() {
                    // The pid was recycled between our checks and the seize.
                    return Err(AttachError::Exited { pid });
                }
                self.since.get_or_insert_with(Instant::now);
                if let Err(e) = interrupt(tid) {
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        return Err(AttachError::Other {
                            pid,
                            what: "interrupting",
                            source: e,
                        });
                    }
                }
            }
            if self.threads.len() == first {
                break;
            }
            self.wait_seized(deadline, timeout)?;
        }
        if pidfd.has_exited() || self.threads.iter().all(|t| t.state == ThreadState::Gone) {
            return Err(AttachError::Exited { pid });
        }
        // The leader cannot be reported gone while its process lives, except when another
        // thread (one not yet seized, so no PTRACE_EVENT_EXEC) ran execve and took its place.
        if self
            .threads
            .iter()
            .any(|t| t.tid == pid && t.state == ThreadState::Gone)
        {
            return Err(AttachError::Exec { pid });
        }
        self.refresh_tids();
        Ok(())
    }

    /// Wait for the first stop of every thread seized but not yet seen stopped, all at once: an
    /// execve in the target waits (killably, so it does not stop) for its other threads to be
    /// released, and those we traced are released only when we reap them, so waiting for one
    /// thread after another could deadlock until the time-out.
    fn wait_seized(&mut self, deadline: Instant, timeout: Duration) -> Result<(), AttachError> {
        let pid = self.pid;
        let start = Instant::now();
        let mut nap = Duration::from_micros(20);
        let mut next_look = start + Duration::from_millis(20);
        loop {
            let mut waiting = None;
            for i in 0..self.threads.len() {
                let tid = self.threads[i].tid;
                match self.threads[i].state {
                    ThreadState::Running => {}
                    ThreadState::Gone => continue,
                    ThreadState::Stopped { .. } => {
                        // Already held: only its death can be reported (killed by an execve
                        // elsewhere, which waits for us to reap it).
                        if let Ok(Some(Stop::Gone(_))) = waitpid(tid, true) {
                            self.threads[i].state = ThreadState::Gone;
                        }
                        continue;
                    }
                }
                let stop = waitpid(tid, true).map_err(|source| AttachError::Other {
                    pid,
                    what: "waiting",
                    source,
                })?;
                self.threads[i].state = match stop {
                    None => {
                        waiting.get_or_insert(tid);
                        continue;
                    }
                    Some(Stop::Event(_)) => ThreadState::Stopped {
                        event: true,
                        pass: 0,
                    },
                    Some(Stop::Signal(sig)) => ThreadState::Stopped {
                        event: false,
                        pass: sig,
                    },
                    // Not requested before our interrupt, but harmless stops to hold it in.
                    Some(Stop::Syscall) | Some(Stop::OtherEvent(_)) => ThreadState::Stopped {
                        event: false,
                        pass: 0,
                    },
                    Some(Stop::Exec) => {
                        self.threads[i].state = ThreadState::Stopped {
                            event: false,
                            pass: 0,
                        };
                        return Err(AttachError::Exec { pid });
                    }
                    Some(Stop::Gone(_)) => ThreadState::Gone,
                };
            }
            let Some(tid) = waiting else {
                return Ok(());
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(AttachError::Timeout {
                    pid,
                    tid,
                    waited: timeout,
                });
            }
            if now >= next_look {
                next_look = now + Duration::from_millis(20);
                // After an execve by a thread we had not seized, the leader we seized is
                // replaced, under the same pid, by that thread, not traced by us: to a parent
                // (tests) waitpid just shows a running child.
                // SAFETY: gettid cannot fail.
                let me = unsafe { libc::gettid() };
                let tracer = status_field(pid, Some(pid), "TracerPid").and_then(|v| v.parse().ok());
                let leader_held = self.threads.iter().any(|t| t.tid == pid);
                if leader_held && tracer.is_some_and(|t: i32| t != me) {
                    return Err(AttachError::Exec { pid });
                }
            }
            if now - start < Duration::from_micros(500) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(nap.min(deadline - now));
                nap = (nap * 2).min(Duration::from_millis(1));
            }
        }
    }

    pub(crate) fn refresh_tids(&mut self) {
        self.stopped_tids = self
            .threads
            .iter()
            .filter(|t| matches!(t.state, ThreadState::Stopped { .. }))
            .map(|t| t.tid)
            .collect();
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The threads held stopped.
    pub fn tids(&self) -> &[i32] {
        &self.stopped_tids
    }

    /// When the stop began (just before the first thread was interrupted).
    pub fn stopped_since(&self) -> Option<Instant> {
        self.since
    }

    /// Prepare to run syscalls in the target: picks a thread stopped at a clean place, saves its
    /// state, finds a syscall instruction. Dropping the injector restores the thread.
    pub fn injector(&mut self) -> Result<Injector<'_>, InjectError> {
        Injector::new(self, None)
    }

    /// The same, on thread `tid` (which must be stopped by our interrupt or a group stop).
    pub fn injector_on(&mut self, tid: i32) -> Result<Injector<'_>, InjectError> {
        Injector::new(self, Some(tid))
    }

    /// Restore, resume and detach every thread. Returns how long the target was stopped, from the
    /// first thread stopped to the last resumed.
    pub fn resume(mut self) -> Result<Duration, ResumeError> {
        let result = self.release();
        let stopped = match (self.since, self.resumed) {
            (Some(a), Some(b)) => b - a,
            (Some(a), None) => a.elapsed(),
            _ => Duration::ZERO,
        };
        result
            .map(|()| stopped)
            .map_err(|message| ResumeError { stopped, message })
    }

    /// Reap threads of ours that died (zombies wait for their tracer); the leader last, as it
    /// can only be reaped after the others.
    fn reap_zombies(&self) {
        let pid = self.pid;
        let others = self.threads.iter().filter(|t| t.tid != pid);
        for t in others.chain(self.threads.iter().filter(|t| t.tid == pid)) {
            let _ = waitpid(t.tid, true);
        }
    }

    /// Let go of everything; the first problem met, as a message. Idempotent.
    fn release(&mut self) -> Result<(), String> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let mut problem: Option<String> = None;
        if self.injection.is_some() {
            if let Err(e) = inject::restore(self) {
                problem.get_or_insert(format!("restoring the injected thread: {e}"));
            }
        }
        // Stopped threads first, then zombies reaped: an execve in the target may be waiting
        // for both before the threads still on their way to a stop can get there.
        for t in &mut self.threads {
            if let ThreadState::Stopped { pass, .. } = t.state {
                detach_or_reap(t, pass, &mut problem);
            }
        }
        self.resumed = Some(Instant::now());
        self.reap_zombies();
        // Interrupted but never seen stopped (the time-out case, or an exec under way): they
        // may stop any moment. Give them a little while; otherwise they stay attached until the
        // tracing thread exits (see the module doc).
        let grace = Instant::now() + Duration::from_millis(500);
        for t in &mut self.threads {
            if t.state != ThreadState::Running {
                continue;
            }
            match wait_stop_until(t.tid, grace) {
                Ok(Some(Stop::Gone(_))) => t.state = ThreadState::Gone,
                Ok(Some(Stop::Signal(sig))) => detach_or_reap(t, sig, &mut problem),
                Ok(Some(_)) => detach_or_reap(t, 0, &mut problem),
                _ => {
                    problem.get_or_insert(format!(
                        "thread {} never stopped; it stays attached until the tracing thread \
                         exits",
                        t.tid
                    ));
                }
            }
        }
        self.reap_zombies();
        // An execve in the target renames threads (the one that ran it takes the leader's
        // pid): let go of whatever is still traced by us, whatever we called it.
        if let Some(tid) = sweep_traced(self.pid) {
            problem.get_or_insert(format!(
                "thread {tid} never stopped; it stays attached until the tracing thread exits"
            ));
        }
        self.stopped_tids.clear();
        match problem {
            None => Ok(()),
            Some(p) => Err(p),
        }
    }
}

/// Detach every thread of `pid` still traced by the calling thread; bounded. Returns one that
/// could not be (it never stopped).
fn sweep_traced(pid: i32) -> Option<i32> {
    // SAFETY: gettid cannot fail.
    let me = unsafe { libc::gettid() };
    let ours = || -> Vec<i32> {
        list_tasks(pid)
            .unwrap_or_default()
            .into_iter()
            .filter(|&t| {
                status_field(pid, Some(t), "TracerPid").and_then(|v| v.parse().ok()) == Some(me)
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut stuck = None;
    for tid in ours() {
        if detach(tid, 0).is_ok() {
            continue;
        }
        let _ = interrupt(tid);
        let mut t = Thread {
            tid,
            state: ThreadState::Running,
        };
        let mut problem = None;
        match wait_stop_until(tid, deadline) {
            Ok(Some(Stop::Signal(sig))) => detach_or_reap(&mut t, sig, &mut problem),
            Ok(Some(Stop::Gone(_))) => {}
            Ok(Some(_)) => detach_or_reap(&mut t, 0, &mut problem),
            _ => stuck = Some(tid),
        }
    }
    stuck
}

fn detach_or_reap(t: &mut Thread, pass: i32, problem: &mut Option<String>) {
    match detach(t.tid, pass) {
        Ok(()) => t.state = ThreadState::Gone,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            // Not in a stop: killed meanwhile. Its zombie waits for us, its tracer (and holds up
            // the report of the leader's exit to the parent): reap it.
            reap_dying(t.tid);
            t.state = ThreadState::Gone;
        }
        Err(e) => {
            problem.get_or_insert(format!("detaching thread {}: {e}", t.tid));
        }
    }
}

/// Seize `tid` again for a little while after an EPERM that may have been transient (an exec
/// replacing the leader). True once it worked.
fn seize_retry(tid: i32, deadline: Instant) -> bool {
    let until = deadline.min(Instant::now() + Duration::from_millis(50));
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
        if seize(tid).is_ok() {
            return true;
        }
    }
    false
}

/// Reap a traced thread that is exiting (or detach it, should it stop after all). Bounded.
fn reap_dying(tid: i32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match wait_stop_until(tid, deadline) {
            Ok(Some(Stop::Gone(_))) | Ok(None) | Err(_) => return,
            Ok(Some(Stop::Signal(sig))) => {
                if detach(tid, sig).is_ok() {
                    return;
                }
            }
            Ok(Some(_)) => {
                if detach(tid, 0).is_ok() {
                    return;
                }
            }
        }
    }
}

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// Run `f` on a new thread that ends when `f` returns: any thread that could not be detached
/// (one that never stopped) is let go by the kernel when its tracer thread exits. Create the
/// [`SignalDeferral`] before calling this: the new thread inherits the blocked signals.
pub fn in_tracer_thread<R: Send, F: FnOnce() -> R + Send>(f: F) -> R {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The signals that would kill or stop ptyreap from outside: blocked while a target is held, so
/// the target is always restored first; delivered when this is dropped.
pub const DEFERRED_SIGNALS: [i32; 17] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
];

/// Blocks [`DEFERRED_SIGNALS`] in the calling thread (`pthread_sigmask`) for its lifetime; the
/// old mask comes back on drop, and with it any signal that arrived meanwhile. Create it before
/// [`StoppedProcess::stop`], drop it after [`StoppedProcess::resume`]. SIGKILL cannot be
/// deferred.
pub struct SignalDeferral {
    old: libc::sigset_t,
    _not_send: PhantomData<*const ()>,
}

impl SignalDeferral {
    pub fn new() -> io::Result<SignalDeferral> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to sigset_t values we own.
        unsafe {
            libc::sigemptyset(&mut set);
            for sig in DEFERRED_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
        }
        // SAFETY: valid pointers; pthread_sigmask changes only this thread's mask.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(SignalDeferral {
            old,
            _not_send: PhantomData,
        })
    }
}

impl Drop for SignalDeferral {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in new(), on the same thread (not Send).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptrace_start_time_survives_odd_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 \
                    10 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(98765));
        let me = std::process::id() as i32;
        assert!(start_time(me).unwrap() > 0);
    }

    #[test]
    fn ptrace_eperm_diagnosis() {
        let traced = diagnose_eperm(Some(1), false, false, Some((77, "gdb")));
        assert!(traced.contains("process 77 (gdb)"), "{traced}");
        let y1 = diagnose_eperm(Some(1), false, false, None);
        assert!(
            y1.contains("ptrace_scope is 1") && y1.contains("sudo"),
            "{y1}"
        );
        assert!(y1.contains("sysctl kernel.yama.ptrace_scope=0"), "{y1}");
        // Root with the capability passes Yama 1 and 2: then it must be something else.
        let lsm = diagnose_eperm(Some(1), true, true, None);
        assert!(lsm.contains("security module"), "{lsm}");
        assert_eq!(lsm, diagnose_eperm(Some(2), true, true, None));
        let y2 = diagnose_eperm(Some(2), false, false, None);
        assert!(
            y2.contains("ptrace_scope is 2") && y2.contains("CAP_SYS_PTRACE"),
            "{y2}"
        );
        let y3 = diagnose_eperm(Some(3), true, true, None);
        assert!(
            y3.contains("ptrace_scope is 3") && y3.contains("reboot"),
            "{y3}"
        );
        let nocap = diagnose_eperm(None, true, false, None);
        assert!(nocap.contains("without the CAP_SYS_PTRACE"), "{nocap}");
        let user = diagnose_eperm(Some(0), false, false, None);
        assert!(
            user.contains("another user") && user.contains("sudo"),
            "{user}"
        );
        let e = AttachError::NotPermitted {
            pid: 5,
            yama_scope: Some(2),
            is_root: false,
            has_cap_sys_ptrace: false,
        };
        assert!(
            e.to_string()
                .starts_with("cannot attach to process 5: kernel.yama"),
            "{e}"
        );
    }

    #[test]
    fn ptrace_signal_deferral_blocks_and_restores() {
        let mask = || {
            // SAFETY: plain data; pthread_sigmask with a null new set only reads.
            let mut cur: libc::sigset_t = unsafe { std::mem::zeroed() };
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur) };
            DEFERRED_SIGNALS
                .iter()
                // SAFETY: valid sigset.
                .map(|&s| unsafe { libc::sigismember(&cur, s) } == 1)
                .collect::<Vec<_>>()
        };
        let before = mask();
        {
            let _d = SignalDeferral::new().unwrap();
            assert!(mask().iter().all(|&b| b));
        }
        assert_eq!(mask(), before);
    }
}
