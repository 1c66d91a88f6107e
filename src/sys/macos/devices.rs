//! What an fd of a macOS process is, from libproc's answers alone: device numbers, slave
//! names, the vnode classification, the PTYs-in-use counting rule, which knotes watch a master,
//! and who opened a master. Pure, so it is unit-tested on Linux.

use super::ffi;
use crate::model::{OpenedBy, Provenance};

/// A macOS `dev_t` (32 bits): major in the top 8 bits, minor in the low 24 (bsd/sys/types.h).
pub fn major(dev: u32) -> u32 {
    (dev >> 24) & 0xff
}

pub fn minor(dev: u32) -> u32 {
    dev & 0x00ff_ffff
}

pub fn makedev(major: u32, minor: u32) -> u32 {
    (major << 24) | (minor & 0x00ff_ffff)
}

/// The slave node of PTY `index`: `/dev/ttys%03d` (xnu bsd/kern/tty_ptmx.c names them so; the
/// limit is at most 999, so three digits always suffice).
pub fn slave_path(index: u32) -> String {
    format!("/dev/ttys{index:03}")
}

/// A master fd is a vnode whose path is the clone device; its rdev's minor is the PTY index.
pub fn is_master_path(path: &str) -> bool {
    path == "/dev/ptmx"
}

/// A PTY slave node's name in /dev: `ttys` and exactly three digits. The legacy BSD ptys
/// (`ttys0`–`ttysf`, `ttyp*`…) are a different, fixed pool and are not counted.
pub fn is_slave_name(name: &str) -> bool {
    name.strip_prefix("ttys")
        .is_some_and(|d| d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// What a vnode fd is, for the census.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VnodeKind {
    /// A PTY master (opened through /dev/ptmx): its index.
    Master {
        index: u32,
    },
    /// A PTY slave node: its index.
    Slave {
        index: u32,
    },
    Other,
}

const S_IFMT: u16 = 0o170_000;
const S_IFCHR: u16 = 0o020_000;

/// Who opened a master, from what macOS shows, with the rule both systems share
/// (`OpenedBy::judge`: `inherited` only when the PTY is older than the process, the fd is not
/// close-on-exec, and the process exec'd since its fork).
///
/// - The process's start (`proc_bsdinfo` `pbi_start_tvsec`/`_tvusec`) is its fork (or spawn):
///   an exec keeps it (bsd/kern/kern_fork.c `forkproc`: "Keep the original start time for
///   exec'ed proc").
/// - The exec: `PROC_FLAG_EXEC`, the process's `P_EXEC`, set by every exec
///   (bsd/kern/kern_exec.c) and never passed on by a fork (`forkproc` copies only P_LP64,
///   P_TRANSLATED, P_DISABLE_ASLR, P_DELAYIDLESLEEP, P_SUGID and P_AFFINITY).
/// - The PTY's creation: devfs keeps no birth time for the slave node (bsd/miscfs/devfs
///   `devfs_getattr` returns no create time). The node is made with the master
///   (bsd/kern/tty_ptmx.c `devfs_make_node`), with its times set to that second
///   (devfs_tree.c), and its change time only grows after (chown, chmod, every write:
///   `devfs_consider_time_update(DEVFS_UPDATE_CHANGE | ...)`), and cannot be set. So the PTY was
///   made before `ctime + 1 s`: enough to prove "older than the process", never "younger" —
///   hence `inherited` or nothing, and a session written to after the process started is no
///   proof (its master stays `merge` by default, which costs at most that one PTY).
pub fn opened_by(
    node_ctime_s: i64,
    started_s: f64,
    cloexec: bool,
    exec_since_fork: bool,
) -> Option<OpenedBy> {
    let provenance = Provenance {
        created: Some(node_ctime_s as f64 + 1.0),
        started: Some(started_s),
        cloexec,
        exec_since_fork,
    };
    OpenedBy::judge(&provenance, OPENED_BY_MARGIN).filter(|o| *o == OpenedBy::Inherited)
}

/// Doubt around the two times: the start is known to the microsecond, the bound on the PTY's
/// creation is already a second wide.
const OPENED_BY_MARGIN: f64 = 0.05;

pub fn classify_vnode(path: &str, mode: u16, rdev: u32, slave_major: Option<u32>) -> VnodeKind {
    if mode & S_IFMT != S_IFCHR {
        return VnodeKind::Other;
    }
    if is_master_path(path) {
        return VnodeKind::Master { index: minor(rdev) };
    }
    let by_major = slave_major.is_some_and(|m| m == major(rdev));
    let by_path = slave_major.is_none() && path.strip_prefix("/dev/").is_some_and(is_slave_name);
    if by_major || by_path {
        return VnodeKind::Slave { index: minor(rdev) };
    }
    VnodeKind::Other
}

/// PTYs in use: no sysctl counts them, but a slave node exists from the master's open until both
/// ends are closed, so the number of `ttysNNN` nodes is the number of allocated PTYs.
pub fn count_in_use<'a>(dev_names: impl IntoIterator<Item = &'a str>) -> u64 {
    dev_names.into_iter().filter(|n| is_slave_name(n)).count() as u64
}

/// The knotes of one kqueue that watch `fd`: fd-keyed filters with that ident.
pub fn knote_watches(kn: &ffi::KeventExtinfo, fd: i32) -> bool {
    let ev = kn.kqext_kev;
    matches!(
        ev.filter,
        ffi::EVFILT_READ | ffi::EVFILT_WRITE | ffi::EVFILT_VNODE | ffi::EVFILT_EXCEPT
    ) && fd >= 0
        && ev.ident == fd as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_only_with_an_older_pty_no_cloexec_and_an_exec() {
        use crate::model::OpenedBy;
        let started = 1_000.5;
        // (ctime of the slave node, cloexec, exec since the fork) -> opened_by
        let cases = [
            (990, false, true, Some(OpenedBy::Inherited)),
            (999, false, true, Some(OpenedBy::Inherited)), // made before 1000.0 < 1000.5
            (1000, false, true, None), // made before 1001.0: could be after the start
            (990, true, true, None),   // close-on-exec: it never crossed an exec
            (990, false, false, None), // a fork without exec keeps the program's numbers
            (2000, false, true, None), // written to since: no proof either way, never "self"
            (2000, true, false, None),
        ];
        for (ctime, cloexec, exec, want) in cases {
            assert_eq!(
                super::opened_by(ctime, started, cloexec, exec),
                want,
                "{ctime} {cloexec} {exec}"
            );
        }
    }

    #[test]
    fn device_numbers_split_8_24() {
        let dev = makedev(16, 12);
        assert_eq!(dev, 0x1000_000c);
        assert_eq!(major(dev), 16);
        assert_eq!(minor(dev), 12);
        assert_eq!(minor(0x0f00_03e7), 999);
        assert_eq!(major(0xff12_3456), 0xff);
        assert_eq!(minor(0xff12_3456), 0x12_3456);
    }

    #[test]
    fn rdev_to_index_to_slave_path() {
        let master_rdev = makedev(15, 7);
        assert_eq!(slave_path(minor(master_rdev)), "/dev/ttys007");
        assert_eq!(slave_path(0), "/dev/ttys000");
        assert_eq!(slave_path(998), "/dev/ttys998");
        assert!(is_slave_name(&slave_path(123)["/dev/".len()..]));
        assert!(is_master_path("/dev/ptmx"));
        assert!(!is_master_path("/dev/ttys000"));
    }

    #[test]
    fn only_numbered_ttys_nodes_count_as_ptys_in_use() {
        let dev = [
            "ttys000",
            "ttys001",
            "ttys010",
            "ttys999", // counted
            "ttys0",
            "ttys9",
            "ttysf",
            "ttysa", // legacy BSD slaves
            "ttyp0",
            "ttypf",
            "ptyp0",
            "ptys0", // legacy masters/slaves
            "ttys0000",
            "ttys01",
            "ttys00a",
            "ttys", // not three digits
            "tty",
            "ttyS000",
            "ptmx",
            "null",
            "console",
            "cu.Bluetooth",
            "tty.Bluetooth",
        ];
        assert_eq!(count_in_use(dev), 4);
        assert_eq!(count_in_use([]), 0);
    }

    #[test]
    fn vnodes_are_classified_by_path_mode_and_major() {
        let chr = 0o020_620;
        let master = classify_vnode("/dev/ptmx", chr, makedev(15, 7), Some(16));
        assert_eq!(master, VnodeKind::Master { index: 7 });
        let slave = classify_vnode("/dev/ttys007", chr, makedev(16, 7), Some(16));
        assert_eq!(slave, VnodeKind::Slave { index: 7 });
        // opened under another name (a hard link, a chroot): the major decides
        let other_path = classify_vnode("/private/x/ttys", chr, makedev(16, 9), Some(16));
        assert_eq!(other_path, VnodeKind::Slave { index: 9 });
        // the controlling-terminal alias /dev/tty and the legacy ttyp0 are other majors
        assert_eq!(
            classify_vnode("/dev/tty", chr, makedev(2, 0), Some(16)),
            VnodeKind::Other
        );
        assert_eq!(
            classify_vnode("/dev/ttyp0", chr, makedev(4, 0), Some(16)),
            VnodeKind::Other
        );
        // no slave node seen yet: fall back on the path
        assert_eq!(
            classify_vnode("/dev/ttys003", chr, makedev(16, 3), None),
            VnodeKind::Slave { index: 3 }
        );
        // a regular file is never a PTY, whatever its name
        assert_eq!(
            classify_vnode("/dev/ptmx", 0o100_644, 0, Some(16)),
            VnodeKind::Other
        );
    }

    fn knote(filter: i16, ident: u64) -> ffi::KeventExtinfo {
        let mut kn = ffi::KeventExtinfo::default();
        kn.kqext_kev.filter = filter;
        kn.kqext_kev.ident = ident;
        kn
    }

    #[test]
    fn fd_keyed_knotes_watch_a_master() {
        assert!(knote_watches(&knote(ffi::EVFILT_READ, 37), 37));
        assert!(knote_watches(&knote(ffi::EVFILT_WRITE, 37), 37));
        assert!(knote_watches(&knote(ffi::EVFILT_EXCEPT, 37), 37));
        assert!(!knote_watches(&knote(ffi::EVFILT_READ, 38), 37));
        // EVFILT_PROC (-5), EVFILT_TIMER (-7), EVFILT_USER (-10) idents are not fds
        assert!(!knote_watches(&knote(-5, 37), 37));
        assert!(!knote_watches(&knote(-7, 37), 37));
        assert!(!knote_watches(&knote(-10, 37), 37));
    }
}
