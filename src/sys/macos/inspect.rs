//! Per-fd evidence for one target on macOS, from libproc alone (no task port, so it works for
//! same-user targets without root): a fresh look at each master fd (still the same PTY? guarded?
//! shared?), the slave node's times for the last I/O, the machine-wide scan for the other
//! holders, and the target's kqueues (fd kqueues, the workqueue kqueue, the workloops) for
//! whether its event loop still watches the fd. With the task port (root), also the threads
//! waiting in select()/poll(), read from their registers and memory (`watchers.rs`).
//!
//! What macOS cannot tell from outside: the unread bytes and POLLHUP (both need the fd itself),
//! so `unread_bytes` and `hung_up` stay unknown.

use super::devices;
use super::ffi;
use super::libproc;
use super::scan::Devfs;
use super::target::{self, Target};
use super::task::ports;
use super::watchers;
use crate::exit_code::UserError;
use crate::model::{Evidence, Holder, Snapshot};
use crate::sys::checks::FdProbe;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;

pub fn inspect(target: &Target, snapshot: &Snapshot) -> Result<Vec<Evidence>, UserError> {
    let pid = target.pid;
    let Some(own) = snapshot.process(pid) else {
        return Ok(Vec::new());
    };
    let devfs = Devfs::read();
    // for `opened_by`: the process's fork (or spawn) time and whether it exec'd since
    let started = libproc::bsd_info(pid).ok().map(|i| {
        let exec = i.pbi_flags & ffi::PROC_FLAG_EXEC != 0;
        (
            i.pbi_start_tvsec as f64 + i.pbi_start_tvusec as f64 / 1e6,
            exec,
        )
    });
    let master_fds: BTreeSet<i32> = own.masters.iter().map(|m| m.fd).collect();
    let watch = watchers(pid, &master_fds);
    let mut out = Vec::with_capacity(own.masters.len());
    for m in &own.masters {
        let mut ev = Evidence {
            fd: m.fd,
            pty: m.pty,
            session: m.session,
            watched_by: watch.by_fd.get(&m.fd).cloned().unwrap_or_default(),
            ..Evidence::default()
        };
        let mut shared = false;
        let mut cloexec = false;
        match libproc::vnode_path_info(pid, m.fd) {
            Ok(v) => {
                let st = v.pvip.vip_vi.vi_stat;
                let kind =
                    devices::classify_vnode(&v.path(), st.vst_mode, st.vst_rdev, devfs.slave_major);
                match kind {
                    devices::VnodeKind::Master { index } if Some(devfs.pty(index)) == m.pty => {}
                    _ => {
                        ev.missing = Some(format!(
                            "fd {} is no longer the PTY master the scan saw",
                            m.fd
                        ))
                    }
                }
                ev.guarded = v.pfi.fi_status & ffi::PROC_FP_GUARDED != 0;
                shared = v.pfi.fi_status & ffi::PROC_FP_SHARED != 0;
                cloexec = v.pfi.fi_status & ffi::PROC_FP_CLEXEC != 0;
            }
            Err(e) => {
                match FdProbe::failed(&e, (pid, &target.name), m.fd, "read", target::not_permitted)
                {
                    FdProbe::Gone => continue,
                    FdProbe::Fatal(err) => return Err(err),
                    FdProbe::Missing(why) => ev.missing = Some(why),
                }
            }
        }
        if let Some(pty) = ev.pty {
            let path = devices::slave_path(pty.index);
            match slave_last_io(&path, devfs.slave_rdev(pty.index)) {
                Some(t) => ev.last_io = Some(t),
                None if ev.missing.is_none() => {
                    ev.missing = Some(format!("cannot stat {path}, the master's slave node"))
                }
                None => {}
            }
            if let (Some((started, exec)), Some(ctime), None) = (
                started,
                slave_changed(&path, devfs.slave_rdev(pty.index)),
                &ev.missing,
            ) {
                ev.opened_by = devices::opened_by(ctime, started, cloexec, exec);
            }
            ev.slave_path = Some(path);
            if ev.session.is_some() {
                ev.foreground_pgrp = foreground_pgrp(ev.session, devfs.slave_rdev(pty.index));
            }
            snapshot.join(pid, &mut ev);
            // The kernel says another fd shares this open file, but we saw none: its holder is
            // out of our sight (another user's process without root, a descriptor in flight).
            if shared && ev.aliases.is_empty() && ev.other_master_holders.is_empty() {
                ev.other_master_holders.push(Holder {
                    pid: -1,
                    name: if target::is_root() {
                        "unseen holder (the open file is shared)".into()
                    } else {
                        "unseen holder (the open file is shared; run as root to see it)".into()
                    },
                    fds: Vec::new(),
                });
            }
        }
        // Whether the app still watches it matters only when nothing else keeps it alive.
        let deciding = ev.slave_holders.is_empty() && ev.session.is_none();
        if deciding && ev.watched_by.is_empty() && ev.missing.is_none() {
            if let Some(why) = &watch.unreadable {
                ev.missing = Some(why.clone());
            }
        }
        out.push(ev);
    }
    Ok(out)
}

/// The slave node's last I/O: max(atime, mtime, ctime) — tty reads and writes update atime and
/// mtime (what `w` shows as idle time); a node never used keeps the time it was created at.
/// `rdev`: the node must be that device (a node of another PTY must not answer for it).
pub fn slave_last_io(path: &str, rdev: Option<u32>) -> Option<i64> {
    let m = std::fs::metadata(path).ok()?;
    if rdev.is_some_and(|r| r != m.rdev() as u32) {
        return None;
    }
    Some(m.atime().max(m.mtime()).max(m.ctime()))
}

/// The slave node's change time (see `devices::opened_by`); `rdev` as for `slave_last_io`.
fn slave_changed(path: &str, rdev: Option<u32>) -> Option<i64> {
    let m = std::fs::metadata(path).ok()?;
    if rdev.is_some_and(|r| r != m.rdev() as u32) {
        return None;
    }
    Some(m.ctime())
}

/// The foreground process group of the terminal, from the session leader's view.
fn foreground_pgrp(session: Option<i32>, rdev: Option<u32>) -> Option<i32> {
    let info = libproc::bsd_info(session?).ok()?;
    (Some(info.e_tdev) == rdev && info.e_tpgid > 0).then_some(info.e_tpgid as i32)
}

/// Who in the target watches which master.
pub struct Watchers {
    pub by_fd: BTreeMap<i32, Vec<String>>,
    /// Why some kqueue or some waiting thread's set could not be read (then an unwatched-looking
    /// fd is not proof).
    pub unreadable: Option<String>,
}

/// A kqueue of the target, as libproc names it.
enum Kqueue {
    /// An fd from kqueue().
    Fd(i32),
    /// The process's workqueue kqueue (`proc_pidfdinfo` fd -1): where libdispatch registers the
    /// sources of queues not bound to a workloop.
    Workqueue,
    /// A dynamic kqueue (no fd): a libdispatch workloop, where the sources of a serial queue
    /// hierarchy and of `dispatch_workloop`s live (kevent_id with KEVENT_FLAG_WORKLOOP).
    Workloop(u64),
}

impl Kqueue {
    fn label(&self) -> String {
        match self {
            Kqueue::Fd(fd) => format!("kqueue fd {fd}"),
            Kqueue::Workqueue => "the libdispatch kqueue".into(),
            Kqueue::Workloop(id) => format!("workloop kqueue {id:#x}"),
        }
    }

    fn knotes(&self, pid: i32) -> std::io::Result<Vec<ffi::KeventExtinfo>> {
        match *self {
            Kqueue::Fd(fd) => libproc::kqueue_knotes(pid, fd),
            Kqueue::Workqueue => libproc::kqueue_knotes(pid, -1),
            Kqueue::Workloop(id) => libproc::dynamic_kqueue_knotes(pid, id),
        }
    }

    /// The error that means it went away between the listing and the read: a closed fd is EBADF
    /// (`fp_get_ftype`), a freed workloop ESRCH (`kevent_copyout_dynkqextinfo`: the id is no
    /// longer in the process's kqueue hash). The workqueue kqueue is made on demand and never
    /// goes away (a process without one reads as empty); EBADF for it is kept as "none".
    fn vanished(&self, e: &std::io::Error) -> bool {
        let errno = e.raw_os_error();
        match self {
            Kqueue::Fd(_) | Kqueue::Workqueue => errno == Some(libc::EBADF),
            Kqueue::Workloop(_) => errno == Some(libc::ESRCH),
        }
    }
}

/// Every knote on one of `fds` in the target's kqueues (`kqueue_watchers`); then, when we can
/// have its task port (as root, and macOS grants it), the threads waiting in select()/poll() on
/// them (`watchers.rs`). Without the task port those are silently out of sight, as on a system
/// that cannot show them.
pub fn watchers(pid: i32, fds: &BTreeSet<i32>) -> Watchers {
    let mut w = kqueue_watchers(pid, fds);
    // only root gets task ports of other processes; a refusal is no news (SIP, platform binary)
    let task = target::is_root()
        .then(|| ports::task_for_pid(pid).ok())
        .flatten();
    if let Some(task) = task {
        if ports::pid_of(&task) == Some(pid) {
            let waits = watchers::waits(&task, fds, None);
            for (fd, labels) in waits.by_fd {
                w.by_fd.entry(fd).or_default().extend(labels);
            }
            if let Some(why) = waits.unreadable {
                w.unreadable.get_or_insert_with(|| {
                    format!("{why}, so whether its event loop still watches this master is unknown")
                });
            }
        }
    }
    w
}

/// Every knote on one of `fds` in the target's kqueues: its fd kqueues, its libdispatch
/// workqueue kqueue and its workloop kqueues. libproc alone: also what the reaper re-reads
/// inside its suspension.
pub fn kqueue_watchers(pid: i32, fds: &BTreeSet<i32>) -> Watchers {
    let mut w = Watchers {
        by_fd: BTreeMap::new(),
        unreadable: None,
    };
    let hint = if target::is_root() {
        ""
    } else {
        "; run as root"
    };
    let mut unreadable = |what: String, e: &dyn std::fmt::Display| {
        w.unreadable.get_or_insert_with(|| {
            format!(
                "cannot read {what} of the target ({e}), so whether its event loop still \
                 watches this master is unknown{hint}"
            )
        });
    };
    let mut kqueues: Vec<Kqueue> = Vec::new();
    match libproc::list_fds(pid) {
        Ok(list) => kqueues.extend(
            list.into_iter()
                .filter(|f| f.proc_fdtype == ffi::PROX_FDTYPE_KQUEUE)
                .map(|f| Kqueue::Fd(f.proc_fd)),
        ),
        Err(e) => unreadable("the fd list".into(), &e),
    }
    kqueues.push(Kqueue::Workqueue);
    match libproc::dynamic_kqueue_ids(pid) {
        Ok(ids) => kqueues.extend(ids.into_iter().map(Kqueue::Workloop)),
        Err(e) => unreadable("the workloop kqueue list".into(), &e),
    }
    let mut found: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for kq in &kqueues {
        match kq.knotes(pid) {
            Ok(knotes) => {
                for &fd in fds {
                    if knotes.iter().any(|kn| devices::knote_watches(kn, fd)) {
                        found.entry(fd).or_default().push(kq.label());
                    }
                }
            }
            Err(e) if kq.vanished(&e) => {}
            Err(e) => unreadable(kq.label(), &e),
        }
    }
    w.by_fd = found;
    w
}
