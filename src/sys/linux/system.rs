//! System PTY usage: the global counters in /proc/sys/kernel/pty and every devpts instance seen,
//! each with its own `max=` (a private instance can be exhausted while the global count is low).

use super::procfs::{self, Mount};
use super::scan;
use crate::model::{DevId, DevptsInstance, ProcessPtys, SystemUsage};
use std::collections::BTreeMap;

pub const LIMIT_SOURCE: &str = "/proc/sys/kernel/pty/max";

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `seen`: the processes of a scan; instances they use but that are not mounted in our namespace
/// are looked up in a holder's own mountinfo and counted through its /proc/PID/root. `also`:
/// processes whose own devpts mounts are listed even when nobody holds a PTY there (a target in
/// a container whose PTYs were all just released).
pub fn usage(seen: &[ProcessPtys], also: &[i32]) -> SystemUsage {
    let mut instances: BTreeMap<DevId, DevptsInstance> = BTreeMap::new();
    let own = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in devpts_mounts(&own) {
        let inst = instance(&m, &m.mount_point);
        // an instance hidden under a later mount on the same path is listed only if used
        if inst.in_use.is_some() {
            instances.insert(m.dev, inst);
        }
    }
    let mut holders: BTreeMap<DevId, i32> = BTreeMap::new();
    for p in seen {
        let ptys = p
            .masters
            .iter()
            .filter_map(|m| m.pty)
            .chain(p.slaves.iter().map(|s| s.pty));
        for pty in ptys {
            holders.entry(pty.devpts).or_insert(p.pid);
        }
    }
    for &pid in also {
        let theirs = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        for m in devpts_mounts(&theirs) {
            let inst = instance(&m, &format!("/proc/{pid}/root{}", m.mount_point));
            if inst.in_use.is_some() && !instances.contains_key(&m.dev) {
                instances.insert(m.dev, inst);
            }
        }
    }
    for (dev, pid) in holders {
        if instances.contains_key(&dev) {
            continue;
        }
        let theirs = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        let found = devpts_mounts(&theirs).into_iter().find(|m| m.dev == dev);
        let entry = match found {
            Some(m) => instance(&m, &format!("/proc/{pid}/root{}", m.mount_point)),
            None => DevptsInstance {
                devpts: dev,
                mount: None,
                in_use: None,
                max: None,
                leak_per_hour: None,
                exhausted_in_s: None,
            },
        };
        instances.insert(dev, entry);
    }
    SystemUsage {
        in_use: read_u64("/proc/sys/kernel/pty/nr").unwrap_or(0),
        limit: read_u64(LIMIT_SOURCE).unwrap_or(4096),
        limit_source: LIMIT_SOURCE.into(),
        reserve: read_u64("/proc/sys/kernel/pty/reserve"),
        instances: Some(instances.into_values().collect()),
        unreadable_processes: 0,
        exhausted_in_s: None,
        exhausted_first: None,
        leak_per_hour: None,
    }
}

fn devpts_mounts(mountinfo: &str) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = procfs::parse_mountinfo(mountinfo)
        .into_iter()
        .filter(|m| m.fstype == "devpts")
        .collect();
    // one instance can be mounted (or bind-mounted) several times: keep its conventional path
    mounts.sort_by_key(|m| (m.dev, m.mount_point != "/dev/pts", m.mount_point.len()));
    mounts.dedup_by_key(|m| m.dev);
    mounts
}

fn instance(m: &Mount, reachable_at: &str) -> DevptsInstance {
    DevptsInstance {
        devpts: m.dev,
        // a path a holder's namespace chose: escaped before it can reach a terminal
        mount: Some(crate::output::escaped(&m.mount_point)),
        in_use: count_ptys(reachable_at, m.dev),
        max: m.super_option("max").and_then(|v| v.parse().ok()),
        leak_per_hour: None,
        exhausted_in_s: None,
    }
}

/// PTYs allocated in an instance: its numbered nodes (a node exists from the master's open
/// until both ends are closed). None when the path leads to another filesystem (overmounted).
fn count_ptys(dir: &str, dev: DevId) -> Option<u64> {
    let path = std::ffi::CString::new(dir).ok()?;
    let fd = scan::open_dir(&path, None).ok()?;
    let st = super::pty::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?;
    if super::pty::dev_id(st.st_dev) != dev {
        return None;
    }
    let mut buf = vec![0u8; 32 * 1024];
    let mut n = 0;
    scan::for_each_dirent(&fd, &mut buf, |name| {
        if scan::parse_fd(name.to_bytes()).is_some() {
            n += 1;
        }
    });
    Some(n)
}
