//! Holding a whole process still: every thread seized and stopped, and always let go again.
//!
//! Why it is done this way (kernel behaviour we rely on; for how one thread is seized and
//! stopped without a signal, see [`seize`] and [`interrupt`]):
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

use super::super::pidfd::Pidfd;
use super::super::procfs::{list_tasks, read_status_field, start_time, thread_state};
use super::attach_error::{eperm_error, tracer_of_thread, AttachError};
use super::raw::{detach, interrupt, seize, wait_stop_until, waitpid, Stop};

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

/// Every thread of a process, seized and stopped. Dropping it detaches every thread, on every path
/// (errors, panics); [`StoppedProcess::resume`] does the same and reports. An injector borrows it
/// mutably, so it is dropped (and its thread restored) first. Never `Send`: see the module doc.
pub struct StoppedProcess {
    pid: i32,
    threads: Vec<Thread>,
    /// Just before the first interrupt: the start of the stop, conservatively.
    since: Option<Instant>,
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
            since: None,
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
        // seizing itself is bounded by the listing rounds; `timeout` bounds the wait that
        // follows each round (thousands of threads take a while to seize, not to stop)
        let mut deadline = Instant::now() + timeout;
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
                        if tid == pid
                            && tracer_of_thread(pid, pid).is_none()
                            && seize_retry(pid, deadline)
                        {
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
                        return Err(eperm_error(pid, tid));
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
            deadline = Instant::now() + timeout;
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
                // a freezer landing after the pre-flight holds every thread short of a stop
                return Err(AttachError::Timeout {
                    pid,
                    tid,
                    waited: timeout,
                    held: crate::sys::linux::preflight::held_by(pid, tid),
                });
            }
            if now >= next_look {
                next_look = now + Duration::from_millis(20);
                // After an execve by a thread we had not seized, the leader we seized is
                // replaced, under the same pid, by that thread, not traced by us: to a parent
                // (tests) waitpid just shows a running child.
                // SAFETY: gettid cannot fail.
                let me = unsafe { libc::gettid() };
                let tracer =
                    read_status_field(pid, Some(pid), "TracerPid").and_then(|v| v.parse().ok());
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

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The threads held stopped.
    #[cfg(test)]
    pub(crate) fn tids(&self) -> Vec<i32> {
        self.threads
            .iter()
            .filter(|t| matches!(t.state, ThreadState::Stopped { .. }))
            .map(|t| t.tid)
            .collect()
    }

    /// Every thread seized, in the order seized, with where it is.
    pub(crate) fn threads(&self) -> &[Thread] {
        &self.threads
    }

    /// Record where thread `idx` (of [`StoppedProcess::threads`]) is after something else worked
    /// on it (an injection); [`StoppedProcess::tids`] follows.
    pub(crate) fn set_thread_state(&mut self, idx: usize, state: ThreadState) {
        self.threads[idx].state = state;
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
                    problem.get_or_insert(never_stopped(self.pid, t.tid));
                }
            }
        }
        self.reap_zombies();
        // An execve in the target renames threads (the one that ran it takes the leader's
        // pid): let go of whatever is still traced by us, whatever we called it.
        if let Some(tid) = sweep_traced(self.pid) {
            problem.get_or_insert(never_stopped(self.pid, tid));
        }
        match problem {
            None => Ok(()),
            Some(p) => Err(p),
        }
    }
}

/// A thread let go while not in a stop: it has its own registers and mask (a thread that had
/// ours is waited for however long it takes, see inject.rs), and the kernel detaches it when the
/// tracing thread ends.
fn never_stopped(pid: i32, tid: i32) -> String {
    format!(
        "thread {tid} never came back to a stop ({}); it has its own registers and signal mask, \
         and the kernel lets go of it as the tracer ends",
        crate::sys::linux::preflight::held_by(pid, tid)
    )
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
                read_status_field(pid, Some(t), "TracerPid").and_then(|v| v.parse().ok())
                    == Some(me)
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
/// [`SignalDeferral`](crate::sys::deferral::SignalDeferral) before calling this: the new thread inherits the
/// blocked signals.
pub fn in_tracer_thread<R: Send, F: FnOnce() -> R + Send>(f: F) -> R {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}
