//! Step 3: the tracer, a child process of ours that does the work from the stop on, and what
//! the parent does while it waits (phase bytes, deadlines, the report it reads back).

use super::*;

/// How long the tracer process may take to begin injecting before we end it (see
/// `in_tracer_process`).
pub(super) const TRACER_DEADLINE: Duration = Duration::from_secs(20);

/// How long a tracer that began injecting is waited for. It is never killed: every wait of its
/// own is bounded, so it ends well before this unless the kernel holds a thread it changed.
pub(super) const TRACER_HARD_DEADLINE: Duration = Duration::from_secs(120);

/// How the tracer's pipe ended.
pub(super) enum TracerOutput {
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
pub(super) fn read_tracer(
    fd: OwnedFd,
    deadline: Duration,
    hard_deadline: Duration,
) -> TracerOutput {
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

/// What the tracer tells the parent before its report, one byte each, so that the parent knows
/// whether ending a tracer that takes too long is safe. Control bytes: serde_json escapes them
/// in strings, so they never occur in the report itself.
pub(super) const PHASE_INJECTING: u8 = 0x01;
pub(super) const PHASE_RESTORED: u8 = 0x02;

/// What the tracer process reports back through its pipe.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct TracerReport {
    stopped_us: Option<u64>,
    error: Option<String>,
    results: Vec<(Option<Outcome>, Option<String>)>,
}

/// Forks the tracer, which runs [`reap_stopped`] and writes a [`TracerReport`] to a pipe; we wait
/// for it and copy the results into `rows`. The tracer is not tied to our life: killed, we leave
/// it to finish and restore the target.
pub(super) fn in_tracer_process(
    target: &Target,
    rows: &mut [MasterRow],
    planned: &[usize],
) -> Result<Duration, UserError> {
    let (read_end, write_end) = super::super::child::pipe().map_err(|e| {
        UserError::failure(format!("cannot create a pipe: {e}; nothing was changed"))
    })?;
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
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(child, libc::SIGKILL) };
                    super::super::child::reap(child);
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
            let status = super::super::child::reap(child);
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
