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
//!
//! This file holds steps 1 and 4 and the order of the rest (`reap_stopped`); `tracer.rs` is
//! step 3, `pin.rs` steps 2 and 5, `release.rs` step 6 and the check of step 7.

mod pin;
mod release;
mod tracer;

use pin::*;
use release::*;
use tracer::*;

use super::arch::nr;
use super::pidfd::Pidfd;
use super::preflight;
use super::ptrace::{in_tracer_thread, AttachError, Injector, StoppedProcess};
use super::pty;
use super::target::Target;
use crate::exit_code::UserError;
use crate::model::{MasterRow, Method, Outcome, PtyId};
use crate::reap;
use crate::sys::deferral::SignalDeferral;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

/// How long the whole process may be held waiting for a thread that does not reach its ptrace
/// stop (a hung file system, a freezer landing meanwhile) before every thread is let go again
/// and the reap backs out: the README's stop-time promise. A thread that is merely running
/// stops within microseconds; a vfork parent is refused before the stop (`preflight.rs`).
pub const STOP_TIMEOUT: Duration = Duration::from_millis(100);

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
    let stopped_for = resumed.map_err(|e| {
        UserError::failure(format!(
            "pid {}: resuming failed after {} ms stopped: {e}",
            target.pid,
            e.stopped.as_millis()
        ))
    })?;
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

fn attach_error(target: &Target, e: AttachError) -> UserError {
    UserError::failure(format!(
        "pid {} ({}): {e}; nothing was changed",
        target.pid, target.name
    ))
}
