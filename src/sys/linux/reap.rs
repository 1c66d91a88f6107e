//! Reaping on Linux: the protocol of docs/DESIGN.md ("Reaping"), with its step numbers.
//!
//! 1. Refused up front: a frozen cgroup, strict seccomp, a process sharing the fd table
//!    (`preflight.rs`); signals that would kill us (SIGINT, SIGTERM, SIGHUP, ...) are deferred
//!    until the target is restored: dying inside the window could leave its registers changed.
//! 2. The target is pinned by its pidfd and start time; every planned fd is copied (pinned) and
//!    checked before the stop, and its slave locked inside it.
//! 3. The work runs in the tracer, a child process of ours (below).
//! 4. Every thread is stopped (ptrace seize + interrupt).
//! 5. Every planned fd is re-verified *inside* the stop: still the same PTY master (index and
//!    devpts instance), still no session, and a slave that was closed by everyone has not been
//!    opened again (POLLHUP would have cleared). A pair's slave fds must still be that PTY's slave.
//!    Anything else is `changed` and left alone.
//! 6. The releases run as system calls on one stopped thread: `close_range` over runs of
//!    consecutive verified fds (one call instead of hundreds), `dup3` for merge and devnull.
//! 7. Registers and the interrupted system call are restored, every thread resumed and detached
//!    (the guard does this on every path), and the result is checked from outside.
//!
//! Everything after step 1 runs in a child process of ours, the tracer (`ptyreap-tracer`, in a
//! session of its own): a `kill -9` of ptyreap itself or of its process group cannot interrupt
//! it, because the tracer finishes, restores and detaches on its own and only then exits. Only
//! SIGKILL of the tracer itself, inside the window, leaves the target as the kernel leaves a dead
//! tracer's tracees: detached and running with whatever
//! registers were set at that instant (README "What SIGKILL can do" has the measurements).

use super::arch::nr;
use super::pidfd::Pidfd;
use super::preflight;
use super::ptrace::{in_tracer_thread, AttachError, Injector, StoppedProcess};
use super::pty;
use super::target::Target;
use crate::exit_code::UserError;
use crate::model::{Action, MasterRow, Method, Outcome, PtyId};
use crate::reap;
use crate::sys::deferral::SignalDeferral;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// How long the whole process may be held waiting for a thread that does not reach its ptrace
/// stop (a hung file system, a freezer landing meanwhile) before every thread is let go again
/// and the reap backs out: the README's stop-time promise. A thread that is merely running
/// stops within microseconds; a vfork parent is refused before the stop (`preflight.rs`).
pub const STOP_TIMEOUT: Duration = Duration::from_millis(100);

/// How long the tracer process may take to begin injecting before we end it (see
/// `in_tracer_process`).
const TRACER_DEADLINE: Duration = Duration::from_secs(20);

/// How long a tracer that began injecting is waited for. It is never killed: every wait of its
/// own is bounded, so it ends well before this unless the kernel holds a thread it changed.
const TRACER_HARD_DEADLINE: Duration = Duration::from_secs(120);

/// How the tracer's pipe ended.
enum TracerOutput {
    /// EOF: the report (phase bytes stripped).
    Done(Vec<u8>),
    /// Not done by the deadline, and it never began to change the target.
    StuckAttaching,
    /// Not done by the hard deadline, after it began changing the target: left running.
    StuckRestoring,
}

/// Everything the tracer writes. A tracer that has not begun injecting by `deadline` may be
/// stuck attaching (and safe to end); one that has is waited for until `hard_deadline`: its own
/// waits are bounded, and ending it could leave a thread with our registers.
fn read_tracer(fd: OwnedFd, deadline: Duration, hard_deadline: Duration) -> TracerOutput {
    let start = std::time::Instant::now();
    let mut text = Vec::new();
    let mut file = std::fs::File::from(fd);
    let strip = |text: Vec<u8>| -> Vec<u8> {
        text.into_iter()
            .filter(|&b| b != PHASE_INJECTING && b != PHASE_RESTORED)
            .collect()
    };
    loop {
        // Once it began, never ended: it restores, then unlocks and closes its pins.
        let injecting = text.contains(&PHASE_INJECTING);
        let end = start + if injecting { hard_deadline } else { deadline };
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return if injecting {
                TracerOutput::StuckRestoring
            } else {
                TracerOutput::StuckAttaching
            };
        }
        let left = left.min(Duration::from_millis(200));
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return TracerOutput::Done(strip(text));
        }
        if r > 0 {
            let mut buf = [0u8; 65536];
            match file.read(&mut buf) {
                Ok(0) => return TracerOutput::Done(strip(text)),
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return TracerOutput::Done(strip(text)),
            }
        }
    }
}

pub fn reap(target: &Target, rows: &mut [MasterRow]) -> Result<Duration, UserError> {
    // Stale sessions are hung up from outside, without stopping the app (hangup.rs).
    let (stale, planned): (Vec<usize>, Vec<usize>) = reap::planned(rows)
        .into_iter()
        .partition(|&i| rows[i].judgement.verdict == crate::model::Verdict::Stale);
    if !stale.is_empty() {
        super::hangup::hang_up(&target.pidfd, rows, &stale);
    }
    if planned.is_empty() {
        reap::finish_kept(rows);
        return Ok(Duration::ZERO);
    }
    preflight_checks(target, rows)?;
    // Deferred from here until the target is restored; the tracer inherits the mask, and should
    // anything go wrong there, its exit makes the kernel let go of every tracee.
    let _deferred = SignalDeferral::new().map_err(|e| {
        UserError::failure(format!("cannot defer signals: {e}; nothing was changed"))
    })?;
    in_tracer_process(target, rows, &planned)
}

/// The refusals made before anything is touched (see `preflight.rs`).
fn preflight_checks(target: &Target, rows: &[MasterRow]) -> Result<(), UserError> {
    let (pid, name) = (target.pid, &target.name);
    // checked when the plan was made too; looked at again, as the prompt may have taken minutes
    if let Some(why) = preflight::release_refusal(pid, name, &preflight::CgroupMounts::read()) {
        return Err(UserError::failure(why));
    }
    let mut sharers: Vec<(i32, String)> = rows
        .iter()
        .flat_map(|r| r.evidence.fd_table_shared_with.iter())
        .filter(|h| preflight::share_fd_table(pid, h.pid) != Some(false))
        .map(|h| (h.pid, h.name.clone()))
        .collect();
    sharers.sort();
    sharers.dedup();
    if !sharers.is_empty() {
        return Err(UserError::failure(preflight::shared_table_message(
            pid, name, &sharers,
        )));
    }
    Ok(())
}

/// What the tracer tells the parent before its report, one byte each, so that the parent knows
/// whether ending a tracer that takes too long is safe. Control bytes: serde_json escapes them
/// in strings, so they never occur in the report itself.
const PHASE_INJECTING: u8 = 0x01;
const PHASE_RESTORED: u8 = 0x02;

/// What the tracer process reports back through its pipe.
#[derive(serde::Serialize, serde::Deserialize)]
struct TracerReport {
    stopped_us: Option<u64>,
    error: Option<String>,
    results: Vec<(Option<Outcome>, Option<String>)>,
}

/// Forks the tracer, which runs [`reap_stopped`] and writes a [`TracerReport`] to a pipe; we wait
/// for it and copy the results into `rows`. The tracer is not tied to our life: killed, we leave
/// it to finish and restore the target.
fn in_tracer_process(
    target: &Target,
    rows: &mut [MasterRow],
    planned: &[usize],
) -> Result<Duration, UserError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(UserError::failure(format!(
            "cannot create a pipe: {}; nothing was changed",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fresh fds from pipe2.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fork; the child only runs our code and leaves with _exit. Called while ptyreap is
    // single-threaded (the scan's threads have ended), so no lock is held by a vanished thread.
    match unsafe { libc::fork() } {
        -1 => Err(UserError::failure(format!(
            "cannot start the tracer: {}; nothing was changed",
            std::io::Error::last_os_error()
        ))),
        0 => {
            drop(read_end);
            // Its own session and name: a kill of ptyreap's process group (a terminal's job
            // control, `kill -9 -PGID`) or `pkill -x ptyreap` does not reach the tracer.
            // SAFETY: setsid and prctl on ourselves.
            unsafe {
                libc::setsid();
                libc::prctl(libc::PR_SET_NAME, c"ptyreap-tracer".as_ptr());
            }
            // room for the pinned copies, while this process still has one thread
            let copies: usize = planned
                .iter()
                .map(|&i| 1 + rows[i].evidence.target_slave_fds.len())
                .sum();
            reserve_fd_slots(copies + 64, &target.pidfd);
            let out = std::fs::File::from(write_end);
            let phase = |b: u8| {
                let _ = (&out).write_all(&[b]);
            };
            let outcome = in_tracer_thread(|| reap_stopped(target, rows, planned, &phase));
            let report = TracerReport {
                stopped_us: outcome.as_ref().ok().map(|d| d.as_micros() as u64),
                error: outcome.err().map(|e| e.message),
                results: rows.iter().map(|r| (r.result, r.detail.clone())).collect(),
            };
            let text = serde_json::to_vec(&report).unwrap_or_default();
            let _ = (&out).write_all(&text);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        child => {
            drop(write_end);
            let text = match read_tracer(read_end, TRACER_DEADLINE, TRACER_HARD_DEADLINE) {
                TracerOutput::Done(text) => text,
                TracerOutput::StuckRestoring => {
                    // Never killed: it holds registers of the target's that it has to put back.
                    return Err(UserError::failure(format!(
                        "pid {}: the tracer (pid {child}) is still restoring the target after {} \
                         s; it was left running to finish (ending it could leave a thread of \
                         the target with changed registers); check it later with `ptyreap \
                         --pid {} --dry-run`",
                        target.pid,
                        TRACER_HARD_DEADLINE.as_secs(),
                        target.pid
                    )));
                }
                TracerOutput::StuckAttaching => {
                    // A kernel deadlock can hold the tracer forever: an exec in the target waits
                    // for a thread we traced to be reaped while our PTRACE_SEIZE of another waits
                    // for the exec (cred_guard_mutex; gdb and strace share it). It happens while
                    // attaching: the tracer has not begun injecting (it says so first), so no
                    // register was changed; SIGKILL ends the wait, and the kernel lets go of
                    // the tracees.
                    // SAFETY: signalling and reaping our own child.
                    unsafe {
                        libc::kill(child, libc::SIGKILL);
                        libc::waitpid(child, std::ptr::null_mut(), 0);
                    }
                    return Err(UserError::failure(format!(
                        "pid {}: the tracer did not finish attaching within {} s (as when the \
                         target execs at that moment) and was stopped before it changed anything; \
                         the kernel let go of the target; check it with `ptyreap --pid {} \
                         --dry-run`",
                        target.pid,
                        TRACER_DEADLINE.as_secs(),
                        target.pid
                    )));
                }
            };
            let mut status = 0;
            // SAFETY: waiting for our own child.
            while unsafe { libc::waitpid(child, &mut status, 0) } < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
            }
            let report: TracerReport = serde_json::from_slice(&text).map_err(|_| {
                UserError::failure(format!(
                    "pid {}: the tracer process died (wait status {status:#x}); the kernel \
                     detached the target; check it with `ptyreap --pid {} --dry-run`",
                    target.pid, target.pid
                ))
            })?;
            for (row, (result, detail)) in rows.iter_mut().zip(report.results) {
                row.result = result;
                row.detail = detail;
            }
            match (report.stopped_us, report.error) {
                (Some(us), _) => Ok(Duration::from_micros(us)),
                (None, error) => Err(UserError::failure(
                    error.unwrap_or_else(|| "the tracer failed".into()),
                )),
            }
        }
    }
}

fn reap_stopped(
    target: &Target,
    rows: &mut [MasterRow],
    planned: &[usize],
    phase: &dyn Fn(u8),
) -> Result<Duration, UserError> {
    let keeper = reap::merge_target(rows);
    // Copies of every planned fd, checked now; inside the stop one kcmp per fd proves the target
    // still has the very same open file. They are closed only after the target is resumed: the
    // last close of a PTY does the kernel's release work, which need not happen inside the stop.
    let mut pins: Vec<(usize, Pinned)> = Vec::new();
    for &i in planned {
        match pin(&target.pidfd, &rows[i]) {
            Ok(p) => pins.push((i, p)),
            Err(why) => reap::settle(&mut rows[i], Outcome::Changed, why),
        }
    }
    if let Some(why) = preflight::vfork_refusal(target.pid, &target.name) {
        return Err(UserError::failure(why));
    }
    // the epoll sets to look into again inside the stop (one readlink per fd: not in the stop)
    let epoll_sets = super::scan::fds_linked_to(target.pid, b"anon_inode:[eventpoll]");
    // the inodes of the planned masters' files, from our copies (an fstat each, not in the stop)
    let master_inodes: std::collections::BTreeSet<u64> = pins
        .iter()
        .filter_map(|(_, p)| pty::fstat(p.master.as_raw_fd()).ok())
        .map(|st| st.st_ino)
        .collect();
    before_stop_hook();
    let mut stopped = StoppedProcess::stop(&target.pidfd, target.start_time, STOP_TIMEOUT)
        .map_err(|e| attach_error(target, e))?;
    // Inside the stop (so a tracer ended while attaching can never leave a slave locked): from
    // here to the end nobody can open these slaves.
    phase(PHASE_INJECTING);
    for (_, p) in &mut pins {
        p.lock();
    }

    // 5. re-verify inside the stop
    let mut go: Vec<usize> = Vec::new();
    // one poll for every pinned master's hang-up state, rather than one call each
    let hung_up = pty::hung_up_all(pins.iter().map(|(_, p)| p.master.as_fd()));
    for ((i, pinned), hung_up) in pins.iter().zip(hung_up) {
        match verify_pinned(&target.pidfd, pinned, hung_up, &rows[*i]) {
            Ok(()) => go.push(*i),
            Err(why) => reap::settle(&mut rows[*i], Outcome::Changed, why),
        }
    }
    go.sort_unstable();
    for (i, by) in watched_since_the_look(target.pid, &epoll_sets, &master_inodes, rows, &go) {
        reap::settle(
            &mut rows[i],
            Outcome::Changed,
            format!("watched since the look: {}", by.join(", ")),
        );
        go.retain(|&g| g != i);
    }
    let keeper_ok = match keeper {
        Some(fd) => verify_keeper(&target.pidfd, fd, rows),
        None => Ok(()),
    };
    if let Err(why) = &keeper_ok {
        reap::withdraw(rows, &mut go, Method::Merge, why);
    }

    // 6. release
    // A problem putting the injecting thread back is said, even when every row is settled.
    let mut restore_problem = None;
    let run = match stopped.injector() {
        Ok(mut inj) => {
            let released = release(&mut inj, rows, &go, keeper, &target.pidfd);
            if let Err(e) = inj.finish() {
                restore_problem = Some(format!("restoring the injecting thread: {e}"));
            }
            released
        }
        Err(e) => Err(format!("cannot run a system call in the target: {e}")),
    };
    // After any failure, what the kernel did, read inside the stop whatever the calls reported;
    // when every call did what it said, one look from outside afterwards (below) suffices.
    let failed = run.is_err() || go.iter().any(|&i| rows[i].result != Some(Outcome::Closed));
    if failed {
        reconcile(&target.pidfd, &pins, &go, rows);
    }
    if let Err(why) = run {
        reap::fail_unsettled(rows, &go, &why);
    }

    // 7. restore, resume, detach
    let resumed = stopped.resume();
    phase(PHASE_RESTORED);
    if !failed {
        verify_after(&target.pidfd, &pins, rows);
    }
    drop(pins);
    let stopped_for = resumed
        .map_err(|e| UserError::failure(format!("pid {}: resuming failed: {e}", target.pid)))?;
    if let Some(problem) = restore_problem {
        return Err(UserError::failure(format!(
            "pid {}: the results below are what the kernel did, but {problem}",
            target.pid
        )));
    }
    reap::finish_kept(rows);
    Ok(stopped_for)
}

/// Inside the stop: rows of `go` planned as unwatched that a watcher took up since the look
/// (an entry in one of the target's epoll sets, a thread now waiting in poll/select or read on
/// it), each with what watches it. With every thread stopped this is exact and cheap: the epoll
/// sets' fdinfo and each thread's /proc syscall file. Rows planned with --include-tracked were
/// watched already and are not looked at.
fn watched_since_the_look(
    pid: i32,
    epoll_sets: &[i32],
    master_inodes: &std::collections::BTreeSet<u64>,
    rows: &[MasterRow],
    go: &[usize],
) -> Vec<(usize, Vec<String>)> {
    let unwatched: Vec<usize> = go
        .iter()
        .copied()
        .filter(|&i| rows[i].judgement.verdict != crate::model::Verdict::Tracked)
        .collect();
    if unwatched.is_empty() {
        return Vec::new();
    }
    let fds: std::collections::BTreeSet<i32> =
        unwatched.iter().map(|&i| rows[i].evidence.fd).collect();
    let now = super::watchers::watchers(pid, &fds, epoll_sets, Some(master_inodes));
    unwatched
        .into_iter()
        .filter_map(|i| Some((i, now.get(&rows[i].evidence.fd)?.clone())))
        .collect()
}

/// Test hook: with `PTYREAP_TEST_BEFORE_STOP=PATH`, the tracer creates PATH just before it stops
/// the target and waits (at most 10 s) for PATH.done, so that a test can change the target
/// between the last look and the stop.
fn before_stop_hook() {
    let Some(path) = std::env::var_os("PTYREAP_TEST_BEFORE_STOP") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let _ = std::fs::write(&path, "");
    let mut done = path.into_os_string();
    done.push(".done");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&done).is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Makes room in our own fd table for `n` more fds now, while we are single-threaded. Growing the
/// table of a multi-threaded process waits for an RCU grace period at every doubling
/// (`expand_fdtable`), which made pinning 490 copies take 20 ms instead of 3. Raises the soft
/// RLIMIT_NOFILE toward the hard one if needed.
fn reserve_fd_slots(n: usize, any_fd: &Pidfd) {
    // SAFETY: getrlimit/setrlimit on a valid struct; fcntl/close on fds we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && (lim.rlim_cur as usize) < 2 * n {
            lim.rlim_cur = lim.rlim_max.min((2 * n) as libc::rlim_t).max(lim.rlim_cur);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        let high = libc::fcntl(
            any_fd.as_fd().as_raw_fd(),
            libc::F_DUPFD_CLOEXEC,
            n as libc::c_int,
        );
        if high >= 0 {
            libc::close(high);
        }
    }
}

/// Still the same PTY master, still no live slave (see the module doc).
fn verify(pidfd: &Pidfd, row: &MasterRow) -> Result<(), String> {
    let ev = &row.evidence;
    let fd = ev.fd;
    let expected = ev.pty.ok_or_else(|| format!("fd {fd}: PTY unknown"))?;
    let (copy, node) = copy_master(pidfd, "fd", fd, Some(expected))?;
    if let Some(sid) = pty::session(copy.as_fd()) {
        return Err(format!("its slave is now the terminal of session {sid}"));
    }
    if ev.hung_up == Some(true) && pty::hung_up(copy.as_fd()) == Some(false) {
        return Err("its slave was opened again".into());
    }
    if row.judgement.verdict == crate::model::Verdict::Stale
        && node.last_io > ev.last_io.unwrap_or(i64::MAX)
    {
        return Err("the session spoke again".into());
    }
    for &sfd in &ev.target_slave_fds {
        copy_slave(pidfd, sfd, Some(expected))?;
    }
    Ok(())
}

/// Our copy of the target's master `fd` (`what` names it in errors: "fd", "merge keeper fd"),
/// still the master of `expected`: the check every look at a master inside the reap makes.
fn copy_master(
    pidfd: &Pidfd,
    what: &str,
    fd: i32,
    expected: Option<PtyId>,
) -> Result<(OwnedFd, pty::SlaveNode), String> {
    let copy = pidfd
        .get_fd(fd)
        .map_err(|e| format!("{what} {fd} is gone ({e})"))?;
    let node = pty::slave_node(copy.as_fd(), false)
        .map_err(|_| format!("{what} {fd} is no longer a PTY master"))?;
    if Some(node.pty) != expected {
        return Err(format!(
            "{what} {fd} is now PTY {} of devpts {}",
            node.pty.index, node.pty.devpts
        ));
    }
    Ok((copy, node))
}

/// Our copy of the target's slave fd `sfd`, still the slave of `expected`.
fn copy_slave(pidfd: &Pidfd, sfd: i32, expected: Option<PtyId>) -> Result<OwnedFd, String> {
    let slave = pidfd
        .get_fd(sfd)
        .map_err(|e| format!("slave fd {sfd} is gone ({e})"))?;
    let st = pty::fstat(slave.as_raw_fd()).map_err(|e| format!("slave fd {sfd}: {e}"))?;
    if super::scan::slave_pty(&st) != expected {
        return Err(format!("slave fd {sfd} is no longer this PTY's slave"));
    }
    Ok(slave)
}

/// Our copies of a planned row's fds: the master's, and a pair's slave fds'. While pinned, the
/// slave is locked against opening (`TIOCSPTLCK`), so nobody can begin to use the PTY between
/// its verification and its release; the lock state it had comes back when the pin is dropped,
/// on every path.
struct Pinned {
    master: OwnedFd,
    slaves: Vec<(i32, OwnedFd)>,
    /// The lock state to put back (None: we did not change it).
    was_locked: Option<bool>,
}

impl Pinned {
    fn lock(&mut self) {
        let m = self.master.as_fd();
        if let Some(prev) = pty::slave_locked(m) {
            if prev || pty::lock_slave(m, true).is_ok() {
                self.was_locked = Some(prev);
            }
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if self.was_locked == Some(false) {
            let _ = pty::lock_slave(self.master.as_fd(), false);
        }
    }
}

/// Copies the row's fds, checking that the master still is the PTY the evidence describes (the
/// rest — session, hang-up, a pair's slaves — is checked inside the stop, on these copies).
fn pin(pidfd: &Pidfd, row: &MasterRow) -> Result<Pinned, String> {
    let pty = row.evidence.pty;
    let (master, _) = copy_master(pidfd, "fd", row.evidence.fd, pty)?;
    let mut slaves = Vec::new();
    for &sfd in &row.evidence.target_slave_fds {
        slaves.push((sfd, copy_slave(pidfd, sfd, pty)?));
    }
    Ok(Pinned {
        master,
        slaves,
        was_locked: None,
    })
}

/// Some(true) when the target's `fd` is the very open file of our `copy`; None when kcmp is not
/// available (no CONFIG_KCMP), and the caller must check the long way.
fn same_file(own: i32, pid: i32, copy: &OwnedFd, fd: i32) -> Option<bool> {
    let (ours, theirs) = (copy.as_raw_fd() as libc::c_ulong, fd as libc::c_ulong);
    match super::kcmp::same(own, pid, super::kcmp::KCMP_FILE, ours, theirs) {
        Ok(same) => Some(same),
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Some(false), // the target's fd is closed
        Err(_) => None,
    }
}

/// Inside the stop: the same open files as pinned, still no session, a hung-up slave not reopened
/// (and for a stale session, still silent). One kcmp per fd instead of a fresh copy and probe.
fn verify_pinned(
    pidfd: &Pidfd,
    pinned: &Pinned,
    hung_up_now: Option<bool>,
    row: &MasterRow,
) -> Result<(), String> {
    let (own, pid) = (std::process::id() as i32, pidfd.pid());
    let ev = &row.evidence;
    let fds = std::iter::once((ev.fd, &pinned.master))
        .chain(pinned.slaves.iter().map(|(fd, c)| (*fd, c)));
    for (fd, copy) in fds {
        match same_file(own, pid, copy, fd) {
            Some(true) => {}
            Some(false) => return Err(format!("fd {fd} is no longer the file it was")),
            None => return verify(pidfd, row),
        }
    }
    let master = pinned.master.as_fd();
    if let Some(sid) = pty::session(master) {
        return Err(format!("its slave is now the terminal of session {sid}"));
    }
    if ev.hung_up == Some(true) && hung_up_now == Some(false) {
        return Err("its slave was opened again".into());
    }
    if row.judgement.verdict == crate::model::Verdict::Stale {
        let node = pty::slave_node(master, false).map_err(|e| format!("fd {}: {e}", ev.fd))?;
        if node.last_io > ev.last_io.unwrap_or(i64::MAX) {
            return Err("the session spoke again".into());
        }
    }
    Ok(())
}

/// The merge keeper must still be a PTY master (its own PTY stays allocated).
fn verify_keeper(pidfd: &Pidfd, fd: i32, rows: &[MasterRow]) -> Result<(), String> {
    let expected: Option<PtyId> = rows
        .iter()
        .find(|r| r.evidence.fd == fd)
        .and_then(|r| r.evidence.pty);
    copy_master(pidfd, "merge keeper fd", fd, expected).map(drop)
}

/// The fds a row releases: the master and, for a pair, the target's slave fds.
fn fds_of(row: &MasterRow) -> impl Iterator<Item = i32> + '_ {
    std::iter::once(row.evidence.fd).chain(row.evidence.target_slave_fds.iter().copied())
}

/// Runs the releases. Each row's result is recorded as soon as its own calls have returned; the
/// first call that fails as a whole (the thread could not be used, a deadline) ends the run and
/// is returned: rows not reached are left unsettled, and `reconcile` then reads what the kernel
/// really did to each.
fn release(
    inj: &mut Injector<'_>,
    rows: &mut [MasterRow],
    go: &[usize],
    keeper: Option<i32>,
    pidfd: &Pidfd,
) -> Result<(), String> {
    // close: runs of consecutive fds, one close_range each
    let closing: Vec<usize> = go
        .iter()
        .copied()
        .filter(|&i| rows[i].action.method().unwrap_or(Method::Close) == Method::Close)
        .collect();
    let mut fds: Vec<i32> = closing.iter().flat_map(|&i| fds_of(&rows[i])).collect();
    fds.sort_unstable();
    fds.dedup();
    let mut failed: Vec<(i32, String)> = Vec::new();
    // fds whose calls returned (whatever they returned)
    let mut done: std::collections::HashSet<i32> = std::collections::HashSet::new();
    let mut aborted: Option<String> = None;
    'runs: for (first, last) in runs(&fds) {
        let range = [first as u64, last as u64, 0, 0, 0, 0];
        if first != last && inj.permits(nr::CLOSE_RANGE, range).is_ok() {
            match syscall(inj, nr::CLOSE_RANGE, range) {
                Ok(r) if r >= 0 => {
                    done.extend(first..=last);
                    continue;
                }
                // ENOSYS before Linux 5.9; EPERM or another errno from a seccomp filter that
                // lists close but not close_range: one close each, below.
                Ok(_) => {}
                Err(why) => {
                    aborted = Some(why);
                    break 'runs;
                }
            }
        }
        // One close each; a call the thread's seccomp filters would not let run is not made.
        for fd in first..=last {
            let args = [fd as u64, 0, 0, 0, 0, 0];
            if let Err(denied) = inj.permits(nr::CLOSE, args) {
                failed.push((fd, denied.to_string()));
                done.insert(fd);
                continue;
            }
            match syscall(inj, nr::CLOSE, args) {
                Ok(r) => {
                    if r < 0 {
                        failed.push((fd, errno_text(r)));
                    }
                    done.insert(fd);
                }
                Err(why) => {
                    aborted = Some(why);
                    break 'runs;
                }
            }
        }
    }
    for &i in &closing {
        if !fds_of(&rows[i]).all(|fd| done.contains(&fd)) {
            continue; // not reached: reconciled from the fd table
        }
        let errs: Vec<String> = fds_of(&rows[i])
            .filter_map(|fd| {
                failed
                    .iter()
                    .find(|(f, _)| *f == fd)
                    .map(|(f, e)| format!("close({f}): {e}"))
            })
            .collect();
        set_result(&mut rows[i], errs);
    }
    if let Some(why) = aborted {
        return Err(why);
    }

    // merge: dup3(keeper, fd)
    let merging: Vec<usize> = go
        .iter()
        .copied()
        .filter(|&i| rows[i].action == Action::Close(Method::Merge))
        .collect();
    if !merging.is_empty() {
        let keeper = keeper.ok_or("merge without a keeper")?;
        for &i in &merging {
            let errs = dup_over(inj, pidfd.pid(), keeper, &rows[i])?;
            set_result(&mut rows[i], errs);
        }
    }

    // devnull: dup3(a /dev/null of the target, fd)
    let nulling: Vec<usize> = go
        .iter()
        .copied()
        .filter(|&i| rows[i].action == Action::Close(Method::Devnull))
        .collect();
    if !nulling.is_empty() {
        let (null_fd, opened) = match existing_devnull(pidfd) {
            Some(fd) => (fd, false),
            None => (open_devnull(inj, pidfd)?, true),
        };
        for &i in &nulling {
            match dup_over(inj, pidfd.pid(), null_fd, &rows[i]) {
                Ok(errs) => set_result(&mut rows[i], errs),
                Err(why) => {
                    if opened {
                        let _ = syscall(inj, nr::CLOSE, [null_fd as u64, 0, 0, 0, 0, 0]);
                    }
                    return Err(why);
                }
            }
        }
        if opened {
            syscall(inj, nr::CLOSE, [null_fd as u64, 0, 0, 0, 0, 0])?;
        }
    }
    Ok(())
}

fn dup_over(
    inj: &mut Injector<'_>,
    pid: i32,
    source: i32,
    row: &MasterRow,
) -> Result<Vec<String>, String> {
    let mut errs = Vec::new();
    for fd in fds_of(row).filter(|&fd| fd != source) {
        // dup3 gives the new fd the flags we pass, not the old fd's: keep its close-on-exec.
        let flags = match close_on_exec(pid, fd) {
            Some(true) => libc::O_CLOEXEC as u64,
            Some(false) => 0,
            None => {
                errs.push(format!("fd {fd}: cannot read its flags; left alone"));
                continue;
            }
        };
        let args = [source as u64, fd as u64, flags, 0, 0, 0];
        if let Err(denied) = inj.permits(nr::DUP3, args) {
            errs.push(format!("dup3({source}, {fd}): {denied}"));
            continue;
        }
        let r = syscall(inj, nr::DUP3, args)?;
        if r != fd as i64 {
            errs.push(format!("dup3({source}, {fd}): {}", errno_text(r)));
        }
    }
    Ok(errs)
}

fn set_result(row: &mut MasterRow, errs: Vec<String>) {
    if errs.is_empty() {
        row.result = Some(Outcome::Closed);
    } else {
        reap::settle(row, Outcome::Failed, errs.join("; "));
    }
}

/// Whether the target's `fd` is close-on-exec (fdinfo shows O_CLOEXEC for FD_CLOEXEC).
fn close_on_exec(pid: i32, fd: i32) -> Option<bool> {
    super::procfs::fd_flags(pid, fd).map(|f| f & libc::O_CLOEXEC as u32 != 0)
}

/// Whether our copy is the null device itself (character device 1:3), whatever its path says.
fn is_null_device(copy: &OwnedFd) -> bool {
    pty::fstat(copy.as_raw_fd()).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && libc::major(st.st_rdev) == 1
            && libc::minor(st.st_rdev) == 3
    })
}

/// A /dev/null the target already has open read-write, if any: named /dev/null and, on a copy,
/// really the null device.
fn existing_devnull(pidfd: &Pidfd) -> Option<i32> {
    let pid = pidfd.pid();
    super::scan::fds_linked_to(pid, b"/dev/null")
        .into_iter()
        .find(|&fd| {
            super::procfs::fd_flags(pid, fd).is_some_and(|flags| flags & 3 == libc::O_RDWR as u32)
                && pidfd.get_fd(fd).is_ok_and(|c| is_null_device(&c))
        })
}

/// Opens /dev/null in the target (the path goes in scratch memory, restored by the injector),
/// and checks that what it opened is the null device (the target's /dev may be its own).
fn open_devnull(inj: &mut Injector<'_>, pidfd: &Pidfd) -> Result<i32, String> {
    let r = inj
        .open("/dev/null", libc::O_RDWR | libc::O_CLOEXEC, 0)
        .map_err(|e| e.to_string())?;
    if r < 0 {
        return Err(format!(
            "opening /dev/null in the target: {}",
            errno_text(r)
        ));
    }
    let fd = r as i32;
    if !pidfd.get_fd(fd).is_ok_and(|c| is_null_device(&c)) {
        syscall(inj, nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0])?;
        return Err("the target's /dev/null is not the null device".into());
    }
    Ok(fd)
}

fn syscall(inj: &mut Injector<'_>, nr: i64, args: [u64; 6]) -> Result<i64, String> {
    inj.syscall(nr, args).map_err(|e| e.to_string())
}

fn errno_text(r: i64) -> String {
    std::io::Error::from_raw_os_error((-r) as i32).to_string()
}

/// Consecutive runs of sorted, distinct fds: [3,4,5,9] → (3,5), (9,9).
pub fn runs(fds: &[i32]) -> Vec<(i32, i32)> {
    let mut out: Vec<(i32, i32)> = Vec::new();
    for &fd in fds {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == fd => *last = fd,
            _ => out.push((fd, fd)),
        }
    }
    out
}

/// From outside, after detaching, when every call reported success: a master reported released
/// must no longer be the open file we pinned (the app may already have reused the number).
fn verify_after(pidfd: &Pidfd, pins: &[(usize, Pinned)], rows: &mut [MasterRow]) {
    let own = std::process::id() as i32;
    for (i, pinned) in pins {
        let r = &mut rows[*i];
        if r.result == Some(Outcome::Closed)
            && same_file(own, pidfd.pid(), &pinned.master, r.evidence.fd) == Some(true)
        {
            reap::settle(r, Outcome::Failed, "still open after the reap");
        }
    }
}

/// Inside the stop, after the calls: what the kernel really did to each row of `go`, read from the
/// target's fd table with one kcmp per fd against our pinned copies (the stopped target cannot
/// have changed it; only our calls did). A row is released when none of its fds is the file it
/// was; one reported released that is still open, or reported failed (a later call failed, a
/// deadline was met after its call returned) that is gone, is corrected here. Without kcmp the
/// reported result stands.
fn reconcile(pidfd: &Pidfd, pins: &[(usize, Pinned)], go: &[usize], rows: &mut [MasterRow]) {
    let own = std::process::id() as i32;
    let pid = pidfd.pid();
    for (i, pinned) in pins.iter().filter(|(i, _)| go.contains(i)) {
        let r = &mut rows[*i];
        let copies = std::iter::once((r.evidence.fd, &pinned.master))
            .chain(pinned.slaves.iter().map(|(fd, c)| (*fd, c)));
        let mut still_open = Vec::new();
        for (fd, copy) in copies {
            match same_file(own, pid, copy, fd) {
                Some(true) => still_open.push(fd),
                Some(false) => {}
                None => return,
            }
        }
        let released = still_open.is_empty();
        match (r.result, released) {
            (Some(Outcome::Closed), true) => {}
            (Some(Outcome::Closed), false) => {
                let open: Vec<String> = still_open.iter().map(i32::to_string).collect();
                reap::settle(
                    r,
                    Outcome::Failed,
                    format!("fd {} still open after the reap", open.join(", ")),
                )
            }
            (_, true) => {
                r.result = Some(Outcome::Closed);
                r.detail = None;
            }
            (_, false) if still_open.len() < 1 + pinned.slaves.len() => {
                let open: Vec<String> = still_open.iter().map(i32::to_string).collect();
                let was = r.detail.take().unwrap_or_default();
                reap::settle(
                    r,
                    Outcome::Failed,
                    format!(
                        "only partly released: fd {} still open ({was})",
                        open.join(", ")
                    ),
                );
            }
            // not released: its own failure, or (not reached) the run's error
            (_, false) => {}
        }
    }
}

fn attach_error(target: &Target, e: AttachError) -> UserError {
    UserError::failure(format!(
        "pid {} ({}): {e}; nothing was changed",
        target.pid, target.name
    ))
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn consecutive_runs() {
        assert_eq!(runs(&[3, 4, 5, 9, 11, 12]), vec![(3, 5), (9, 9), (11, 12)]);
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[7]), vec![(7, 7)]);
    }
}
