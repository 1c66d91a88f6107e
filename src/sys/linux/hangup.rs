//! `--include-stale`: hanging up an idle session, as a modem hang-up would.
//!
//! A stale master belongs to a live session (an ssh login, a screen window): the app holding the
//! master is using it, so closing its fd behind its back would hand the number to the next
//! `open()` while its event loop still polls it. A hang-up is the line dropping instead: the
//! slave is opened through the master (`TIOCGPTPEER`) and `TIOCVHANGUP` hangs it up (root:
//! CAP_SYS_ADMIN). Every open slave fd then reads end of file, the session leader and foreground
//! group get SIGHUP, the session loses its terminal, and the app sees its session end and closes
//! the master itself, as it does for every session. No thread of the app is stopped.
//!
//! A PTY is only freed when every fd on either end is closed. So after the hang-up we wait
//! (bounded) for the holders to let go and then look at the whole machine: the row is `closed`
//! only when no process holds either end any more; otherwise `hung_up`, naming who still holds it.

use super::pidfd::Pidfd;
use super::pty;
use crate::model::{MasterRow, Outcome, PtyId};
use crate::reap;
use crate::verdict::fd_list;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long the session's processes get to exit and the app to close its master.
const LET_GO: Duration = Duration::from_secs(3);

/// Hangs up the sessions of `rows[i]` for each `i` in `stale`, and settles each row.
pub fn hang_up(pidfd: &Pidfd, rows: &mut [MasterRow], stale: &[usize]) {
    let mut hung: Vec<(usize, PtyId)> = Vec::new();
    for &i in stale {
        // several fds on one PTY (sshd keeps three): one hang-up, after which the app may close
        // them all at once
        if let Some(&(_, pty)) = hung.iter().find(|(_, p)| Some(*p) == rows[i].evidence.pty) {
            hung.push((i, pty));
            continue;
        }
        match hang_up_one(pidfd, &rows[i]) {
            Ok(pty) => hung.push((i, pty)),
            Err((outcome, why)) => reap::settle(&mut rows[i], outcome, why),
        }
    }
    if hung.is_empty() {
        return;
    }
    let deadline = Instant::now() + LET_GO;
    let (mut holders, mut unseen) = still_held(&hung);
    while holders.iter().any(|h| !h.is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        (holders, unseen) = still_held(&hung);
    }
    for ((i, pty), held_by) in hung.into_iter().zip(holders) {
        let slave = format!("/dev/pts/{}", pty.index);
        if held_by.is_empty() {
            if let Some(gap) = &unseen {
                // nobody ptyreap can see holds it; one it cannot see may
                reap::settle(
                    &mut rows[i],
                    Outcome::HungUp,
                    format!("hung up; no process ptyreap can see holds {slave}, but {gap}"),
                );
                continue;
            }
            reap::settle(
                &mut rows[i],
                Outcome::Closed,
                format!("hung up; the session ended and {slave} was freed"),
            );
        } else {
            reap::settle(
                &mut rows[i],
                Outcome::HungUp,
                format!("hung up; freed when {}", held_by.join(" and ")),
            );
        }
    }
}

/// Re-verifies the row (the same PTY, still silent) and hangs its slave up.
fn hang_up_one(pidfd: &Pidfd, row: &MasterRow) -> Result<PtyId, (Outcome, String)> {
    let ev = &row.evidence;
    let changed = |why: String| (Outcome::Changed, why);
    let expected = ev
        .pty
        .ok_or_else(|| changed(format!("fd {}: PTY unknown", ev.fd)))?;
    let copy = pidfd
        .get_fd(ev.fd)
        .map_err(|e| changed(format!("fd {} is gone ({e})", ev.fd)))?;
    let node = pty::slave_node(copy.as_fd(), false)
        .map_err(|_| changed(format!("fd {} is no longer a PTY master", ev.fd)))?;
    if node.pty != expected {
        return Err(changed(format!("fd {} is now another PTY", ev.fd)));
    }
    if node.last_io > ev.last_io.unwrap_or(i64::MAX) {
        return Err(changed("the session spoke again".into()));
    }
    if is_our_terminal(expected) {
        return Err((
            Outcome::Failed,
            "it is ptyreap's own terminal: not hung up".to_string(),
        ));
    }
    // SAFETY: TIOCGPTPEER opens the slave and returns a new fd; O_NOCTTY so it never becomes
    // our controlling terminal.
    let slave = unsafe {
        libc::ioctl(
            copy.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        let e = std::io::Error::last_os_error();
        return Err((Outcome::Failed, format!("cannot open the slave: {e}")));
    }
    // SAFETY: a fresh fd from the kernel.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    // SAFETY: TIOCVHANGUP takes no argument.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCVHANGUP) } < 0 {
        let e = std::io::Error::last_os_error();
        let why = if e.raw_os_error() == Some(libc::EPERM) {
            "hanging up a terminal needs root (CAP_SYS_ADMIN); nothing was changed".to_string()
        } else {
            format!("TIOCVHANGUP failed: {e}; nothing was changed")
        };
        return Err((Outcome::Failed, why));
    }
    Ok(expected)
}

/// Whether `pty`'s slave is ptyreap's own stdin, stdout, stderr or controlling terminal (a run
/// inside the very session it would hang up).
fn is_our_terminal(pty: PtyId) -> bool {
    let ours = |fd: i32| {
        pty::fstat(fd)
            .ok()
            .and_then(|st| super::scan::slave_pty(&st))
            == Some(pty)
    };
    if (0..3).any(ours) {
        return true;
    }
    std::fs::File::open("/dev/tty").is_ok_and(|tty| ours(tty.as_raw_fd()))
}

/// For each hung-up PTY, who still holds either end ("1234 (sshd) closes its master fd 9"),
/// from one look at the whole machine (empty: freed), and who that look could not see.
fn still_held(hung: &[(usize, PtyId)]) -> (Vec<Vec<String>>, Option<String>) {
    let Ok(snapshot) = super::snapshot() else {
        let unknown = hung
            .iter()
            .map(|_| vec!["the machine could not be scanned to tell".into()])
            .collect();
        return (unknown, None);
    };
    let held = hung
        .iter()
        .map(|&(_, pty)| {
            let mut out: Vec<String> = snapshot
                .master_holders(pty)
                .into_iter()
                .map(|h| {
                    format!(
                        "{} ({}) closes its master fd {}",
                        h.pid,
                        h.name,
                        fd_list(&h.fds)
                    )
                })
                .collect();
            out.extend(snapshot.slave_holders(pty).into_iter().map(|h| {
                format!(
                    "{} ({}) closes /dev/pts/{} (fd {})",
                    h.pid,
                    h.name,
                    pty.index,
                    fd_list(&h.fds)
                )
            }));
            out
        })
        .collect();
    (held, snapshot.visibility.gap())
}
