//! Per-fd evidence for one target: the PTY ioctls on pidfd copies, joined with the machine-wide
//! scan (who holds the slave, who else holds the master) and the event-loop watchers.

use super::preflight;
use super::pty;
use super::target::{self, Target};
use super::watchers;
use crate::exit_code::UserError;
use crate::model::{Evidence, OpenedBy, Provenance, Snapshot};
use crate::sys::checks::FdProbe;

/// How far apart a PTY's creation and the process's start must be to say who opened it: the
/// start is known to a clock tick (10 ms), a fork and the PTY's creation can be that close.
const OPENED_BY_MARGIN: f64 = 0.05;
use std::collections::{BTreeSet, HashMap};
use std::os::fd::AsFd;

/// What may use the PTY where ptyreap cannot look: registered with the target's io_uring, read
/// by another holder of the master (see `watchers`), or, for a slave nobody is seen to hold, an
/// io_uring anywhere whose files the kernel would not list (`unlisted`, read once per inspect).
/// `readers` remembers each holder's blocked readers: one look per holder, not one per master.
fn blind_spots(
    ev: &mut Evidence,
    uring: &[i32],
    unlisted: &[String],
    readers: &mut HashMap<i32, Vec<(i32, i32)>>,
) {
    if let Some(fd) = uring.first() {
        ev.blind_spots.push(format!(
            "the target's io_uring instance (fd {fd}) has PTY masters registered, and which ones \
             cannot be told"
        ));
    }
    for h in &ev.other_master_holders {
        let theirs = readers
            .entry(h.pid)
            .or_insert_with(|| watchers::blocked_readers(h.pid));
        for &(tid, fd) in theirs.iter() {
            if h.fds.contains(&fd) {
                ev.blind_spots.push(format!(
                    "pid {} ({}) thread {tid} blocks in read() on its copy (fd {fd})",
                    h.pid, h.name
                ));
            }
        }
    }
    if ev.slave_holders.is_empty() {
        ev.blind_spots.extend_from_slice(unlisted);
    }
}

/// Evidence that `pid` exec'd a new program after its parent forked it, so that fds it carried
/// over the fork crossed an exec too (`inherited`). Read from the live parent that forked it: the
/// process runs on a terminal whose master the parent holds (forkpty + exec, as node-pty starts
/// every shell), the parent is older than it, and the process's memory layout (where exec put its
/// code, stack and arguments, randomized per exec) differs from the parent's. A parent that may
/// only have adopted it — an init of some pid namespace, or a subreaper such as `systemd --user`
/// or a container shim after Tcl expect's `fork` + `disconnect` — holds no master of its terminal
/// and proves nothing, and neither do equal layouts: a fork without exec keeps its parent's.
fn exec_since_fork(pid: i32, snapshot: &Snapshot) -> bool {
    use super::procfs;
    let Ok(me) = procfs::read_stat(pid) else {
        return false;
    };
    let parent = me.ppid;
    if parent <= 1 {
        return false;
    }
    let Ok(their) = procfs::read_stat(parent) else {
        return false;
    };
    let adopter = procfs::read_status_field(parent, None, "NSpid")
        .is_some_and(|ns| ns.split_ascii_whitespace().any(|p| p == "1"));
    let its_terminal = match (snapshot.process(pid), snapshot.process(parent)) {
        (Some(me), Some(them)) => me
            .slaves
            .iter()
            .any(|s| them.masters.iter().any(|m| m.pty == Some(s.pty))),
        _ => false,
    };
    if adopter || !its_terminal || their.start_time > me.start_time {
        return false;
    }
    matches!((procfs::layout(pid), procfs::layout(parent)), (Some(a), Some(b)) if a != b)
}

/// Whether `fd` of `pid` is close-on-exec (fdinfo's `flags:` shows O_CLOEXEC for it).
fn cloexec(pid: i32, fd: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|t| {
            let flags = t.lines().find_map(|l| l.strip_prefix("flags:"))?;
            u64::from_str_radix(flags.trim(), 8).ok()
        })
        .is_some_and(|f| f & libc::O_CLOEXEC as u64 != 0)
}

pub fn inspect(target: &Target, snapshot: &Snapshot) -> Result<Vec<Evidence>, UserError> {
    let pid = target.pid;
    let Some(own) = snapshot.process(pid) else {
        return Ok(Vec::new());
    };
    let master_fds: BTreeSet<i32> = own.masters.iter().map(|m| m.fd).collect();
    let mut watched = watchers::watchers(pid, &master_fds, &own.event_queues, None);
    // A process sharing the fd table is part of the target for every purpose here: its waits
    // watch the same fds, and it is no "other holder" (closing in one closes in both).
    let uring = watchers::io_uring_with_masters(pid);
    let unlisted: Vec<String> = snapshot
        .processes
        .iter()
        .filter_map(|p| {
            let ring = p.unlisted_rings.first()?;
            Some(format!(
                "pid {} ({}) has an io_uring instance (fd {ring}) whose registered files the \
                 kernel would not list: this PTY's slave may be one of them",
                p.pid, p.name
            ))
        })
        .collect();
    let sharers = preflight::fd_table_sharers(pid, snapshot);
    for (sharer, name) in &sharers {
        for (fd, by) in watchers::watchers(*sharer, &master_fds, &[], None) {
            let list = watched.entry(fd).or_default();
            list.extend(
                by.into_iter()
                    .map(|w| format!("{w} of pid {sharer} ({name})")),
            );
        }
    }
    let started = super::info::started_at_precise(target.start_time);
    let exec_since_fork = exec_since_fork(pid, snapshot);
    let mut readers = HashMap::new();
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
                    let provenance = Provenance {
                        created: Some(node.created),
                        started,
                        cloexec: cloexec(pid, m.fd),
                        exec_since_fork,
                    };
                    ev.opened_by = OpenedBy::judge(&provenance, OPENED_BY_MARGIN);
                }
                Err(e) => ev.missing = Some(format!("fd {} is no longer a PTY master ({e})", m.fd)),
            },
            Err(e) => {
                match FdProbe::failed(&e, (pid, &target.name), m.fd, "copy", target::not_permitted)
                {
                    FdProbe::Gone => continue,
                    FdProbe::Fatal(err) => return Err(err),
                    FdProbe::Missing(why) => ev.missing = Some(why),
                }
            }
        }
        snapshot.join(pid, &mut ev);
        let (shared, others) = std::mem::take(&mut ev.other_master_holders)
            .into_iter()
            .partition(|h| sharers.iter().any(|(p, _)| *p == h.pid));
        ev.fd_table_shared_with = shared;
        ev.other_master_holders = others;
        blind_spots(&mut ev, &uring, &unlisted, &mut readers);
        out.push(ev);
    }
    Ok(out)
}
