//! Steps 2 and 5: each planned fd copied (pinned) before the stop and verified inside it: still
//! the same PTY master, its slave still unopened, a merge target still what the plan named.

use super::*;

/// Still the same PTY master, still no live slave (see the module doc).
pub(super) fn verify(pidfd: &Pidfd, row: &MasterRow) -> Result<(), String> {
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
pub(super) fn copy_master(
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
pub(super) fn copy_slave(
    pidfd: &Pidfd,
    sfd: i32,
    expected: Option<PtyId>,
) -> Result<OwnedFd, String> {
    let slave = pidfd
        .get_fd(sfd)
        .map_err(|e| format!("slave fd {sfd} is gone ({e})"))?;
    let st = pty::fstat(slave.as_raw_fd()).map_err(|e| format!("slave fd {sfd}: {e}"))?;
    if super::super::scan::slave_pty(&st) != expected {
        return Err(format!("slave fd {sfd} is no longer this PTY's slave"));
    }
    Ok(slave)
}

/// Our copies of a planned row's fds: the master's, and a pair's slave fds'. While pinned, the
/// slave is locked against opening (`TIOCSPTLCK`), so nobody can begin to use the PTY between
/// its verification and its release; the lock state it had comes back when the pin is dropped,
/// on every path.
pub(super) struct Pinned {
    pub(super) master: OwnedFd,
    pub(super) slaves: Vec<(i32, OwnedFd)>,
    /// The lock state to put back (None: we did not change it).
    was_locked: Option<bool>,
}

impl Pinned {
    pub(super) fn lock(&mut self) {
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
pub(super) fn pin(pidfd: &Pidfd, row: &MasterRow) -> Result<Pinned, String> {
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
pub(super) fn same_file(own: i32, pid: i32, copy: &OwnedFd, fd: i32) -> Option<bool> {
    let (ours, theirs) = (copy.as_raw_fd() as libc::c_ulong, fd as libc::c_ulong);
    match super::super::kcmp::same(own, pid, super::super::kcmp::KCMP_FILE, ours, theirs) {
        Ok(same) => Some(same),
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Some(false), // the target's fd is closed
        Err(_) => None,
    }
}

/// Inside the stop: the same open files as pinned, still no session, a hung-up slave not reopened
/// (and for a stale session, still silent). One kcmp per fd instead of a fresh copy and probe.
pub(super) fn verify_pinned(
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
pub(super) fn verify_keeper(pidfd: &Pidfd, fd: i32, rows: &[MasterRow]) -> Result<(), String> {
    let expected: Option<PtyId> = rows
        .iter()
        .find(|r| r.evidence.fd == fd)
        .and_then(|r| r.evidence.pty);
    copy_master(pidfd, "merge keeper fd", fd, expected).map(drop)
}

/// The fds a row releases: the master and, for a pair, the target's slave fds.
pub(super) fn fds_of(row: &MasterRow) -> impl Iterator<Item = i32> + '_ {
    std::iter::once(row.evidence.fd).chain(row.evidence.target_slave_fds.iter().copied())
}
