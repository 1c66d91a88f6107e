//! Per-fd evidence for one target: the PTY ioctls on pidfd copies, joined with the machine-wide
//! scan (who holds the slave, who else holds the master) and the event-loop watchers.

use super::pty;
use super::target::{self, Target};
use super::watchers;
use crate::exit_code::UserError;
use crate::model::{Evidence, Snapshot};
use std::collections::BTreeSet;
use std::os::fd::AsFd;

pub fn inspect(target: &Target, snapshot: &Snapshot) -> Result<Vec<Evidence>, UserError> {
    let pid = target.pid;
    let Some(own) = snapshot.process(pid) else {
        return Ok(Vec::new());
    };
    let master_fds: BTreeSet<i32> = own.masters.iter().map(|m| m.fd).collect();
    let watched = watchers::watchers(pid, &master_fds, &own.event_queues);
    let mut out = Vec::with_capacity(own.masters.len());
    for m in &own.masters {
        let mut ev = Evidence {
            fd: m.fd,
            pty: m.pty,
            session: m.session,
            watched_by: watched.get(&m.fd).cloned().unwrap_or_default(),
            ..Evidence::default()
        };
        match target.pidfd.get_fd(m.fd) {
            Ok(copy) => match pty::slave_node(copy.as_fd(), true) {
                Ok(node) => {
                    ev.pty = Some(node.pty);
                    ev.slave_path = node.path;
                    ev.last_io = Some(node.last_io);
                    ev.session = pty::session(copy.as_fd());
                    ev.foreground_pgrp = pty::foreground_pgrp(copy.as_fd());
                    ev.unread_bytes = pty::unread_bytes(copy.as_fd());
                    ev.hung_up = pty::hung_up(copy.as_fd());
                }
                Err(e) => ev.missing = Some(format!("fd {} is no longer a PTY master ({e})", m.fd)),
            },
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => continue, // closed since the scan
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(crate::sys::checks::exited_while_inspected(
                    pid,
                    &target.name,
                ))
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                return Err(target::not_permitted(pid, &target.name))
            }
            Err(e) => ev.missing = Some(format!("cannot copy fd {}: {e}", m.fd)),
        }
        snapshot.join(pid, &mut ev);
        out.push(ev);
    }
    Ok(out)
}
