//! The machine-wide scan on macOS: every process's PTY masters and slaves from libproc, the
//! sessions whose controlling terminal is a PTY slave, and the system's usage.
//!
//! Per process: one PROC_PIDTBSDINFO (name, controlling terminal), one PROC_PIDLISTFDS, and one
//! PROC_PIDFDVNODEPATHINFO per vnode fd — the same calls `lsof` makes, shared out over a few
//! threads. Without root, other users' processes are skipped (libproc says EPERM): their fds
//! cannot be seen, which the census cannot help.

use super::devices::{self, VnodeKind};
use super::ffi;
use super::libproc;
use crate::model::{DevId, MasterRef, ProcessPtys, PtyId, SlaveRef, Snapshot, SystemUsage};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

pub const LIMIT_SOURCE: &str = "kern.tty.ptmx_max";
/// xnu's default when the sysctl cannot be read (bsd/kern/tty_ptmx.c).
const DEFAULT_PTMX_MAX: u64 = 511;

/// What /dev tells: the PTYs in use, the slaves' major, and devfs's own device (the one "devpts
/// instance" of a Mac, so that PtyIds compare equal everywhere).
#[derive(Debug, Clone, Copy)]
pub struct Devfs {
    pub in_use: u64,
    pub slave_major: Option<u32>,
    pub dev: DevId,
}

impl Devfs {
    pub fn read() -> Devfs {
        let dev = std::fs::metadata("/dev")
            .map(|m| dev_id(m.dev() as u32))
            .unwrap_or(DevId { major: 0, minor: 0 });
        let names: Vec<String> = std::fs::read_dir("/dev")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let slave_major = names
            .iter()
            .filter(|n| devices::is_slave_name(n))
            .find_map(|n| std::fs::metadata(format!("/dev/{n}")).ok())
            .map(|m| devices::major(m.rdev() as u32));
        Devfs {
            in_use: devices::count_in_use(names.iter().map(String::as_str)),
            slave_major,
            dev,
        }
    }

    pub fn pty(&self, index: u32) -> PtyId {
        PtyId {
            devpts: self.dev,
            index,
        }
    }

    /// The rdev of PTY `index`'s slave, when the slaves' major is known.
    pub fn slave_rdev(&self, index: u32) -> Option<u32> {
        self.slave_major.map(|m| devices::makedev(m, index))
    }
}

pub fn dev_id(dev: u32) -> DevId {
    DevId {
        major: devices::major(dev),
        minor: devices::minor(dev),
    }
}

/// Every PTY fd on the machine (that we may see) and the system's usage.
pub fn snapshot() -> anyhow::Result<Snapshot> {
    let devfs = Devfs::read();
    let (processes, _) = scan(&devfs)?;
    Ok(Snapshot {
        processes,
        system: usage(&devfs),
        visibility: Default::default(),
        polls: Default::default(),
    })
}

pub fn usage(devfs: &Devfs) -> SystemUsage {
    SystemUsage {
        in_use: devfs.in_use,
        limit: libproc::sysctl_int(c"kern.tty.ptmx_max")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(DEFAULT_PTMX_MAX),
        limit_source: LIMIT_SOURCE.into(),
        reserve: None,
        instances: None,
        unreadable_processes: 0,
        exhausted_in_s: None,
        exhausted_first: None,
        leak_per_hour: None,
    }
}

/// A process's PTY fds, before sessions are joined in.
struct Found {
    pid: i32,
    name: String,
    masters: Vec<(i32, u32)>,
    slaves: Vec<(i32, u32)>,
}

/// Controlling terminals: slave rdev → (session id, foreground process group).
pub type Ctty = HashMap<u32, (i32, Option<i32>)>;

/// Every process (but ourselves) holding a PTY master or slave, sorted by pid; and the
/// controlling terminals seen.
pub fn scan(devfs: &Devfs) -> anyhow::Result<(Vec<ProcessPtys>, Ctty)> {
    let pids = libproc::all_pids()?;
    let own = std::process::id() as i32;
    let states = crate::parallel::for_each_shared(
        &pids,
        || (Vec::new(), Ctty::new()),
        |(out, ctty): &mut (Vec<Found>, Ctty), &pid| {
            if pid == own {
                return;
            }
            let info = libproc::bsd_info(pid).ok();
            if let Some(info) = &info {
                if info.e_tdev != ffi::NODEV {
                    // SAFETY: getsid has no memory arguments.
                    let sid = unsafe { libc::getsid(pid) };
                    // the session exists either way; its id is only for showing
                    let sid = if sid > 0 { sid } else { info.pbi_pgid as i32 };
                    let fg = (info.e_tpgid > 0).then_some(info.e_tpgid as i32);
                    ctty.entry(info.e_tdev).or_insert((sid, fg));
                }
            }
            out.extend(scan_process(pid, info.as_ref(), devfs));
        },
    );
    let mut found: Vec<Found> = Vec::new();
    let mut ctty = Ctty::new();
    for (f, c) in states {
        found.extend(f);
        ctty.extend(c);
    }
    let mut processes: Vec<ProcessPtys> = found
        .into_iter()
        .map(|f| ProcessPtys {
            pid: f.pid,
            name: f.name,
            masters: f
                .masters
                .iter()
                .map(|&(fd, index)| MasterRef {
                    fd,
                    pty: Some(devfs.pty(index)),
                    session: devfs
                        .slave_rdev(index)
                        .and_then(|rdev| ctty.get(&rdev))
                        .map(|&(sid, _)| sid),
                    created: None,
                })
                .collect(),
            slaves: f
                .slaves
                .iter()
                .map(|&(fd, index)| SlaveRef {
                    fd,
                    pty: devfs.pty(index),
                    via_io_uring: false,
                })
                .collect(),
            // inspect lists the target's kqueues itself (with their knotes)
            event_queues: Vec::new(),
            started: None,
            unlisted_rings: Vec::new(),
        })
        .collect();
    processes.sort_by_key(|p| p.pid);
    Ok((processes, ctty))
}

fn scan_process(pid: i32, info: Option<&ffi::ProcBsdInfo>, devfs: &Devfs) -> Option<Found> {
    let fds = libproc::list_fds(pid).ok()?;
    let mut masters = Vec::new();
    let mut slaves = Vec::new();
    for fd in fds
        .iter()
        .filter(|f| f.proc_fdtype == ffi::PROX_FDTYPE_VNODE)
    {
        let Ok(v) = libproc::vnode_path_info(pid, fd.proc_fd) else {
            continue; // closed meanwhile
        };
        let st = v.pvip.vip_vi.vi_stat;
        match devices::classify_vnode(&v.path(), st.vst_mode, st.vst_rdev, devfs.slave_major) {
            VnodeKind::Master { index } => masters.push((fd.proc_fd, index)),
            VnodeKind::Slave { index } => slaves.push((fd.proc_fd, index)),
            VnodeKind::Other => {}
        }
    }
    if masters.is_empty() && slaves.is_empty() {
        return None;
    }
    // printed as itself: a process names itself, control characters and all
    let name = info
        .map(ffi::ProcBsdInfo::name)
        .or_else(|| libproc::exe_path(pid).map(|p| file_name(&p)))
        .map_or_else(|| "?".into(), |n| crate::output::escaped(&n));
    Some(Found {
        pid,
        name,
        masters,
        slaves,
    })
}

pub fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}
