//! Reaping on macOS with the Mach task APIs: the protocol of docs/DESIGN.md ("Reaping"), with
//! its step numbers:
//!
//! 1. Up front (preflight.rs): platform binaries and hardened tasks are refused, since setting a
//!    thread state in them is fatal to ptyreap; then signals that would end us are blocked.
//! 2. The task port (`task_for_pid`; refusals explained by `refusals::task_port_refusal`), checked to
//!    still be our pid with the same start time. The target must be plain arm64/x86_64 like us
//!    (not arm64e, not Rosetta), map the same dyld shared cache at the same slide, and hold
//!    libsystem's close/dup2 at our addresses with our bytes.
//! 3. The guardian (task/guardian.rs, its own executable `ptyreap-guardian`), a process that removes
//!    our thread and resumes the app should ptyreap die inside the window; then our one thread,
//!    created held and announced to the guardian at once (with its stack), its exception port
//!    and a parked state set — all before anything of the app's is suspended. A task suspended
//!    as a whole (a debugger, `pid_suspend`) is refused: it would hold our thread too.
//! 4. Every thread of the app but ours is suspended with `thread_suspend`, each announced to the
//!    guardian first (re-listing until no new one appears); `task_suspend` would hold ours too.
//! 5. Inside the suspension every planned fd is re-verified with libproc: still the same PTY
//!    master, not guarded; a stale one still silent; a pair's slave fds still that PTY's slave;
//!    the merge keeper and the /dev/null source still what they were; no kqueue, workloop or
//!    select()/poll() thread of the app watching it. Anything else: `changed`.
//! 6. Each release is one call on our thread (`task/thread.rs`), with a time-out, after re-listing
//!    the app's threads (the kernel starts workqueue threads unsuspended). A time-out stops the
//!    remaining calls; a close() left waiting behind the app's own reader is re-checked after.
//! 7. The app's threads are resumed (the guard does it on every path), our thread terminated,
//!    every port released, the guardian told, and each result checked again from outside.
//!
//! A thread that was inside a system call when suspended finishes it in the kernel and is held
//! on its way back to user space: the app runs none of its own code while we work.

use super::devices;
use super::ffi;
use super::inspect::slave_last_io;
use super::libproc;
use super::refusals::{self, Arch, TargetCode};
use super::scan::Devfs;
use super::target::{self, Target};
use super::task::guardian::Guardian;
use super::task::guardian_log::Record;
use super::task::ports;
use super::task::suspension::Suspension;
use super::task::thread::{CallError, Function, Injector};
use crate::exit_code::UserError;
use crate::model::{Action, MasterRow, Method, Outcome, Verdict};
use crate::reap;
use crate::sys::deferral::SignalDeferral;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

/// How long one call may take before we give up on it (a close returns in microseconds).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long suspending every thread may take.
const SUSPEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The protocol, one call per step (the module doc has the steps).
pub fn reap(target: &Target, rows: &mut [MasterRow]) -> Result<Duration, UserError> {
    let planned = reap::planned(rows);
    if planned.is_empty() {
        reap::finish_kept(rows);
        return Ok(Duration::ZERO);
    }
    // 1.
    if let Some(why) = target::refused_now(target) {
        return Err(UserError::failure(why));
    }
    let _deferred = SignalDeferral::new().map_err(|e| {
        UserError::failure(format!("cannot defer signals: {e}; nothing was changed"))
    })?;
    // 2.
    let task = target.task_port()?;
    let calls = calls_possible(target, &task)?;
    let sources = Sources::find(target.pid, rows, &planned);
    let planned: Vec<usize> = planned
        .into_iter()
        .filter(|&i| rows[i].result.is_none())
        .collect();
    if planned.is_empty() {
        reap::finish_kept(rows);
        return Ok(Duration::ZERO);
    }
    // 3. the guardian first (it outlives us: dropped last, it is told all was put back)
    let mut guardian = Guardian::start(target.pid).map_err(|why| nothing(target, why))?;
    let mut injector = our_thread(target, &task, &calls, &mut guardian)?;
    let devfs = Devfs::read();
    // 4.
    let mut suspension = Suspension::all(
        &task,
        injector.thread().name(),
        &mut guardian,
        SUSPEND_TIMEOUT,
    )
    .map_err(|why| nothing(target, why))?;
    if !target.still_alive() {
        drop(suspension);
        return Err(target::no_such(target.pid));
    }
    test_hooks::suspended();
    // 5.
    let go = reverify(
        target.pid, &task, &injector, rows, &planned, &sources, &devfs,
    );
    test_hooks::close_invalid_fd(&mut injector, calls.close);
    // 6.
    let mut window = Window {
        task: &task,
        injector: &mut injector,
        suspension: &mut suspension,
        guardian: &mut guardian,
    };
    let may_complete = release(&mut window, rows, &go, &calls, &sources);
    // 7. resume (after a last re-listing), release every port, check from outside
    let _ = suspension.catch_up(&task, &mut guardian);
    let stopped_for = suspension.resume();
    drop(injector);
    drop(guardian);
    drop(task);
    verify_after(target.pid, rows, &sources, &devfs);
    recheck_pending(target.pid, rows, &may_complete, &devfs);
    reap::finish_kept(rows);
    Ok(stopped_for)
}

/// A refusal before anything of the app's was touched.
fn nothing(target: &Target, why: String) -> UserError {
    UserError::failure(format!(
        "pid {} ({}): {why}; nothing was changed",
        target.pid, target.name
    ))
}

/// libsystem's functions our thread calls, at our addresses (the same in the target: step 2).
struct Calls {
    close: Function,
    dup2: Function,
}

/// Step 2: whether a call can run in the task at all: not stopped or suspended as a whole, plain
/// arm64/x86_64 like us, the same dyld shared cache at the same slide; then libsystem's close
/// and dup2 as ours.
fn calls_possible(target: &Target, task: &ports::Port) -> Result<Calls, UserError> {
    let info = libproc::bsd_info(target.pid).map_err(|_| target::no_such(target.pid))?;
    if info.pbi_status == 4 {
        // SSTOP: the task is suspended as a whole, so a thread of ours would never run
        return Err(nothing(
            target,
            "it is stopped (SIGSTOP or a debugger): continue it first (kill -CONT)".into(),
        ));
    }
    // suspended as a task (a debugger, pid_suspend, App Nap's freezer) without SSTOP: a thread
    // created in it is held too, and the first call would only time out
    if let Some(why) = refusals::task_suspended_refusal(ports::task_suspend_count(task)) {
        return Err(nothing(target, why));
    }
    let arch = libproc::arch_info(target.pid)
        .map_err(|e| nothing(target, format!("cannot read its architecture: {e}")))?;
    let code = TargetCode {
        cputype: arch.p_cputype,
        cpusubtype: arch.p_cpusubtype,
        rosetta: info.pbi_flags & ffi::PROC_FLAG_ROSETTA != 0,
        self_translated: libproc::self_translated(),
    };
    if let Some(why) = refusals::arch_refusal(Arch::ours(), &code, target.pid, &target.name) {
        return Err(UserError::failure(why));
    }
    // SAFETY: reads our own task port's name (not a right we must release).
    let ours = ports::shared_cache(unsafe { mach2::traps::mach_task_self() });
    let theirs = ports::shared_cache(task.name());
    if let Some(why) = refusals::shared_cache_mismatch(ours, theirs, target.pid, &target.name) {
        return Err(UserError::failure(why));
    }
    Ok(Calls {
        close: Function::ours(&[c"close$NOCANCEL", c"close"]).map_err(|w| nothing(target, w))?,
        dup2: Function::ours(&[c"dup2"]).map_err(|w| nothing(target, w))?,
    })
}

/// The sources of dup2: the merge target the plan named, and a /dev/null the target already
/// has open (ptyreap writes no memory in it to open one).
struct Sources {
    merge_onto: Option<i32>,
    devnull: Option<i32>,
    devnull_rdev: Option<u32>,
}

impl Sources {
    /// Found before the window; devnull rows fail here when the target has no /dev/null open.
    fn find(pid: i32, rows: &mut [MasterRow], planned: &[usize]) -> Sources {
        let devnull_rdev = std::fs::metadata("/dev/null").map(|m| m.rdev() as u32).ok();
        let is_devnull_row = |r: &MasterRow| r.action == Action::Close(Method::Devnull);
        let wants_devnull = planned.iter().any(|&i| is_devnull_row(&rows[i]));
        let devnull = wants_devnull
            .then(|| find_devnull(pid, devnull_rdev))
            .flatten();
        if wants_devnull && devnull.is_none() {
            for &i in planned {
                if !is_devnull_row(&rows[i]) {
                    continue;
                }
                reap::settle(
                    &mut rows[i],
                    Outcome::Failed,
                    "the target has no /dev/null open to dup2 from, and ptyreap writes no \
                     memory in it to open one: use --method close or merge",
                );
            }
        }
        Sources {
            merge_onto: reap::merge_target(rows),
            devnull,
            devnull_rdev,
        }
    }
}

/// Step 3, after the guardian: our one thread, created held with its exception port and a
/// parked state and announced to the guardian at once, before anything of the app's is
/// suspended.
fn our_thread<'t>(
    target: &Target,
    task: &'t ports::Port,
    calls: &Calls,
    guardian: &mut Guardian,
) -> Result<Injector<'t>, UserError> {
    Injector::new(
        task,
        (target.pid, &target.name),
        &[calls.close, calls.dup2],
        CALL_TIMEOUT,
        &mut |thread_id, stack| guardian.announce(Record::Ours { thread_id, stack }),
    )
    .map_err(|why| nothing(target, why))
}

/// Step 5, inside the suspension: the planned rows still as planned (the rest settled
/// `changed`), then the merge target and the /dev/null source still what they were.
fn reverify(
    pid: i32,
    task: &ports::Port,
    injector: &Injector<'_>,
    rows: &mut [MasterRow],
    planned: &[usize],
    sources: &Sources,
    devfs: &Devfs,
) -> Vec<usize> {
    let mut go: Vec<usize> = Vec::new();
    for &i in planned {
        match verify(pid, &rows[i], devfs) {
            Ok(()) => go.push(i),
            Err(why) => reap::settle(&mut rows[i], Outcome::Changed, why),
        }
    }
    hold_back_watched(pid, rows, &mut go);
    super::watchers::hold_back_waited(task, injector.thread().name(), rows, &mut go);
    if let Some(fd) = sources.merge_onto {
        if let Err(why) = verify_keeper(pid, fd, rows, devfs) {
            reap::withdraw(rows, &mut go, Method::Merge, &why);
        }
    }
    if let Some(fd) = sources.devnull {
        if !is_devnull(pid, fd, sources.devnull_rdev) {
            let why = format!("fd {fd} of the target is no longer /dev/null");
            reap::withdraw(rows, &mut go, Method::Devnull, &why);
        }
    }
    go
}

/// What steps 6 and 7 work with while the app is suspended.
struct Window<'w, 't> {
    task: &'w ports::Port,
    injector: &'w mut Injector<'t>,
    suspension: &'w mut Suspension,
    guardian: &'w mut Guardian,
}

/// Step 6: one call per fd (and per slave fd of a pair) on our one thread, after re-listing the
/// app's threads each time; the first call that times out or is refused stops the rest. Returns
/// the rows whose close() may still complete once the app runs (it waited behind the app's own
/// call on the fd).
fn release(
    w: &mut Window<'_, '_>,
    rows: &mut [MasterRow],
    go: &[usize],
    calls: &Calls,
    sources: &Sources,
) -> Vec<usize> {
    let mut stop_all: Option<String> = None;
    let mut may_complete: Vec<usize> = Vec::new();
    for &i in go {
        if stop_all.is_none() {
            // threads the kernel started meanwhile (workqueue threads appear unsuspended)
            if let Err(why) = w.suspension.catch_up(w.task, w.guardian) {
                stop_all = Some(why);
            }
        }
        if let Some(why) = &stop_all {
            reap::settle(
                &mut rows[i],
                Outcome::Failed,
                format!("not attempted: {why}"),
            );
            continue;
        }
        let method = rows[i].action.method().unwrap_or(Method::Close);
        let failure = release_row(w.injector, &rows[i], method, calls, sources);
        if let Some((why, stops)) = &failure {
            match stops {
                Stops::TimedOut => {
                    may_complete.push(i);
                    stop_all = Some(why.clone());
                }
                Stops::All => stop_all = Some(why.clone()),
                Stops::ThisRow => {}
            }
        }
        match failure {
            None => rows[i].result = Some(Outcome::Closed),
            Some((why, _)) => reap::settle(&mut rows[i], Outcome::Failed, why),
        }
    }
    may_complete
}

/// How far a failed call's consequences reach.
enum Stops {
    /// This row only (the call returned something else).
    ThisRow,
    /// Every call after it (our thread or its port cannot be trusted to serve another).
    All,
    /// Every call after it, and this row's call may still complete once the app runs.
    TimedOut,
}

/// The calls for one row; None when each returned what it should.
fn release_row(
    injector: &mut Injector<'_>,
    row: &MasterRow,
    method: Method,
    calls: &Calls,
    sources: &Sources,
) -> Option<(String, Stops)> {
    for fd in released_fds(row) {
        let result = match method {
            Method::Close => injector.call(calls.close, &[fd as u64]),
            Method::Merge => match sources.merge_onto {
                Some(k) => injector.call(calls.dup2, &[k as u64, fd as u64]),
                None => Err(CallError::Mach("no keeper to merge onto".into())),
            },
            Method::Devnull => match sources.devnull {
                Some(n) => injector.call(calls.dup2, &[n as u64, fd as u64]),
                None => Err(CallError::Mach("no /dev/null source".into())),
            },
        };
        // close returns 0, dup2 the new fd (the int in the low 32 bits of the register)
        let expected = if method == Method::Close { 0 } else { fd };
        let name = fn_name(method);
        match result {
            Ok(v) if v as i32 == expected => {}
            Ok(v) => {
                return Some((
                    format!("{name}({fd}) returned {}", v as i32),
                    Stops::ThisRow,
                ))
            }
            // close() waits in fileproc_drain for a thread of the app inside a read or ioctl
            // on this fd: it finishes by itself once that returns
            Err(CallError::TimedOut) => {
                let why = format!(
                    "{name}({fd}) was still waiting for a thread of the app inside a call on \
                     this fd when ptyreap's time ran out"
                );
                return Some((why, Stops::TimedOut));
            }
            Err(e @ (CallError::Refused(_) | CallError::Mach(_))) => {
                return Some((format!("{name}({fd}): {e}"), Stops::All))
            }
            Err(e) => return Some((format!("{name}({fd}): {e}"), Stops::ThisRow)),
        }
    }
    None
}

/// Inside the suspension: a planned fd (or a slave fd released with it) that a kqueue or
/// workloop of the app now watches leaves `go` as `changed` — a source registered between the
/// plan and the suspension (the look is libproc's, cheap); all of them when some kqueue could
/// not be read.
fn hold_back_watched(pid: i32, rows: &mut [MasterRow], go: &mut Vec<usize>) {
    let fds: std::collections::BTreeSet<i32> =
        go.iter().flat_map(|&i| released_fds(&rows[i])).collect();
    let now = super::inspect::kqueue_watchers(pid, &fds);
    hold_back(rows, go, |row| {
        if !row.evidence.watched_by.is_empty() {
            return None; // planned though watched: --include-tracked asked for it
        }
        match &now.unreadable {
            Some(why) => Some(why.clone()),
            None => released_fds(row).iter().find_map(|fd| {
                now.by_fd
                    .get(fd)
                    .map(|by| format!("the app watches it now ({})", by.join(", ")))
            }),
        }
    });
}

/// The fds releasing a row closes or replaces: its master, and a pair's slave fds with it.
pub(super) fn released_fds(row: &MasterRow) -> Vec<i32> {
    std::iter::once(row.evidence.fd)
        .chain(row.evidence.target_slave_fds.iter().copied())
        .collect()
}

/// Inside the suspension: the rows of `go` that `why` has something against leave it, settled
/// `changed` with that reason.
pub(super) fn hold_back(
    rows: &mut [MasterRow],
    go: &mut Vec<usize>,
    mut why: impl FnMut(&MasterRow) -> Option<String>,
) {
    go.retain(|&i| match why(&rows[i]) {
        Some(why) => {
            reap::settle(&mut rows[i], Outcome::Changed, why);
            false
        }
        None => true,
    });
}

/// Test-only hooks of the macOS workflow (.github/workflows/macos.yml), inert unless their
/// variables are set: a marker file written once the app's threads are all suspended, and a
/// hold inside the window, so that its kill test can kill ptyreap there for certain; a close of
/// an invalid fd before the releases.
mod test_hooks {
    pub fn suspended() {
        if let Some(path) = std::env::var_os("PTYREAP_TEST_SUSPENDED_MARKER") {
            let _ = std::fs::write(path, b"");
            let hold = std::env::var("PTYREAP_TEST_HOLD_SUSPENDED_MS")
                .ok()
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(0)
                .min(10_000);
            std::thread::sleep(std::time::Duration::from_millis(hold));
        }
    }

    /// The workflow's check of the error path: a close that fails faults inside libc, and the
    /// same thread must then serve the real calls.
    pub fn close_invalid_fd(injector: &mut super::Injector<'_>, close: super::Function) {
        if std::env::var_os("PTYREAP_TEST_CLOSE_INVALID_FD").is_none() {
            return;
        }
        let bad = i32::MAX;
        let r = injector.call(close, &[bad as u64]);
        let what = match r {
            Ok(v) => format!("returned {}", v as i32),
            Err(e) => e.to_string(),
        };
        crate::output::message(format_args!("test: close({bad}) in the target: {what}"));
    }
}

/// How long a close() left waiting behind a reader is watched for, after the window.
const PENDING_RECHECK: Duration = Duration::from_secs(1);

/// A call that was still waiting in the kernel when its time ran out may complete once the app
/// runs again: look again for a while, and say which way it went.
fn recheck_pending(pid: i32, rows: &mut [MasterRow], pending: &[usize], devfs: &Devfs) {
    if pending.is_empty() {
        return;
    }
    let deadline = std::time::Instant::now() + PENDING_RECHECK;
    let mut open: Vec<usize> = pending.to_vec();
    loop {
        open.retain(|&i| {
            let row = &rows[i];
            master_index(pid, row.evidence.fd, devfs).ok() == row.evidence.pty.map(|p| p.index)
        });
        for &i in pending.iter().filter(|i| !open.contains(i)) {
            reap::settle(
                &mut rows[i],
                Outcome::Closed,
                "the call completed after the window, once the app's own call on this fd \
                 returned",
            );
        }
        if open.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for &i in &open {
        let fd = rows[i].evidence.fd;
        let detail = rows[i].detail.take().unwrap_or_default();
        rows[i].detail = Some(format!(
            "{detail}; it may still complete when that call returns: check again with \
             `ptyreap --pid {pid} --fd {fd} --dry-run`"
        ));
    }
}

fn fn_name(method: Method) -> &'static str {
    match method {
        Method::Close => "close",
        Method::Merge | Method::Devnull => "dup2",
    }
}

/// What fd `fd` of `pid` is now: the PTY master index, unguarded.
fn master_index(pid: i32, fd: i32, devfs: &Devfs) -> Result<u32, String> {
    let v = libproc::vnode_path_info(pid, fd).map_err(|e| format!("fd {fd} is gone ({e})"))?;
    if v.pfi.fi_status & ffi::PROC_FP_GUARDED != 0 {
        return Err(format!("fd {fd} is now guarded"));
    }
    let st = v.pvip.vip_vi.vi_stat;
    match devices::classify_vnode(&v.path(), st.vst_mode, st.vst_rdev, devfs.slave_major) {
        devices::VnodeKind::Master { index } => Ok(index),
        _ => Err(format!("fd {fd} is no longer a PTY master")),
    }
}

/// Still the same PTY master, not guarded; a stale one still silent; a pair's slave fds still
/// that PTY's slave.
fn verify(pid: i32, row: &MasterRow, devfs: &Devfs) -> Result<(), String> {
    let ev = &row.evidence;
    let fd = ev.fd;
    let expected = ev.pty.ok_or_else(|| format!("fd {fd}: PTY unknown"))?;
    let index = master_index(pid, fd, devfs)?;
    if index != expected.index {
        return Err(format!("fd {fd} is now PTY {index}"));
    }
    if row.judgement.verdict == Verdict::Stale {
        let now = slave_last_io(&devices::slave_path(index), devfs.slave_rdev(index));
        if now.is_some_and(|t| Some(t) > ev.last_io) {
            return Err("its session is no longer silent".into());
        }
    }
    for &sfd in &ev.target_slave_fds {
        let v = libproc::vnode_path_info(pid, sfd)
            .map_err(|e| format!("slave fd {sfd} is gone ({e})"))?;
        let st = v.pvip.vip_vi.vi_stat;
        let kind = devices::classify_vnode(&v.path(), st.vst_mode, st.vst_rdev, devfs.slave_major);
        if kind != (devices::VnodeKind::Slave { index })
            || v.pfi.fi_status & ffi::PROC_FP_GUARDED != 0
        {
            return Err(format!("fd {sfd} is no longer this PTY's slave"));
        }
    }
    Ok(())
}

/// The keeper must still be one of the target's masters, and one being kept.
fn verify_keeper(pid: i32, keeper: i32, rows: &[MasterRow], devfs: &Devfs) -> Result<(), String> {
    let row = rows
        .iter()
        .find(|r| r.evidence.fd == keeper)
        .ok_or_else(|| format!("the merge keeper fd {keeper} is not among the target's masters"))?;
    let index =
        master_index(pid, keeper, devfs).map_err(|why| format!("the merge keeper: {why}"))?;
    if row.evidence.pty.map(|p| p.index) != Some(index) {
        return Err(format!("the merge keeper fd {keeper} is now PTY {index}"));
    }
    Ok(())
}

/// A /dev/null fd the target already has open (unguarded), to dup2 from.
fn find_devnull(pid: i32, rdev: Option<u32>) -> Option<i32> {
    libproc::list_fds(pid)
        .ok()?
        .into_iter()
        .filter(|f| f.proc_fdtype == ffi::PROX_FDTYPE_VNODE)
        .map(|f| f.proc_fd)
        .find(|&fd| is_devnull(pid, fd, rdev))
}

fn is_devnull(pid: i32, fd: i32, rdev: Option<u32>) -> bool {
    let Some(rdev) = rdev else { return false };
    libproc::vnode_path_info(pid, fd).is_ok_and(|v| {
        let st = v.pvip.vip_vi.vi_stat;
        v.path() == "/dev/null"
            && st.vst_rdev == rdev
            && v.pfi.fi_status & ffi::PROC_FP_GUARDED == 0
    })
}

/// From outside, after resuming: a closed fd must be gone (or no longer that PTY: the app may
/// already have reused the number), a merged one now the keeper's PTY, a devnull one /dev/null.
fn verify_after(pid: i32, rows: &mut [MasterRow], sources: &Sources, devfs: &Devfs) {
    let devnull_rdev = sources.devnull_rdev;
    let keeper_pty = sources.merge_onto.and_then(|k| {
        rows.iter()
            .find(|r| r.evidence.fd == k)
            .and_then(|r| r.evidence.pty)
    });
    for r in rows
        .iter_mut()
        .filter(|r| r.result == Some(Outcome::Closed))
    {
        let fd = r.evidence.fd;
        let now = libproc::vnode_path_info(pid, fd).ok();
        let now_index = now.as_ref().and_then(|v| {
            let st = v.pvip.vip_vi.vi_stat;
            match devices::classify_vnode(&v.path(), st.vst_mode, st.vst_rdev, devfs.slave_major) {
                devices::VnodeKind::Master { index } => Some(index),
                _ => None,
            }
        });
        let still_ours = now_index.is_some() && now_index == r.evidence.pty.map(|p| p.index);
        let ok = match r.action.method().unwrap_or(Method::Close) {
            Method::Close => !still_ours,
            Method::Merge => now_index.is_some() && now_index == keeper_pty.map(|p| p.index),
            Method::Devnull => now.as_ref().is_some_and(|v| {
                let st = v.pvip.vip_vi.vi_stat;
                Some(st.vst_rdev) == devnull_rdev
            }),
        };
        if !ok {
            let why = if still_ours {
                "still open after the reap"
            } else {
                "not what the call should have left after the reap"
            };
            reap::settle(r, Outcome::Failed, why);
        }
    }
}
