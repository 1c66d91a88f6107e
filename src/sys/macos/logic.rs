//! The macOS backend's decisions that need no kernel: device numbers and slave names, the
//! PTYs-in-use counting rule, which knotes watch a master, whether a target's architecture lets
//! us run a call in it, and the plain words for every way macOS refuses. Pure, so it is
//! unit-tested on Linux.

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

/// Classifies a vnode fd by its path, mode and rdev. A slave is a character device with the
/// slaves' major (learned from a /dev/ttysNNN node; when none is known, by its path).
/// Where the reaper's calls return to: inside __PAGEZERO (the first 4 GiB of every 64-bit Mac
/// process, mapped with no access), canonical on x86_64, 4-byte aligned on arm64. Checked per
/// target. Also how `ptyreap resume` knows a thread the reaper left behind.
pub const SENTINEL: u64 = 0x5eed_0000;

/// Why a task suspended as a whole (a debugger's stop, `pid_suspend`, with no SSTOP) is refused:
/// a thread created in it is held too (`ffi::MachTaskBasicInfo`), so the first call would only
/// time out and be misreported. `count`: MACH_TASK_BASIC_INFO's, None when unreadable.
pub fn task_suspended_refusal(count: Option<i32>) -> Option<String> {
    match count {
        Some(0) => None,
        Some(n) => Some(format!(
            "it is suspended as a whole ({n} task suspension{}: a debugger, or pid_suspend), so \
             no thread can run in it: resume it first",
            if n == 1 { "" } else { "s" }
        )),
        None => Some("cannot read whether it is suspended as a whole".into()),
    }
}

/// What `ptyreap resume` does with one thread of an app left suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeStep {
    /// A thread of the reaper's, left behind: parked at the sentinel, faulting there, or held
    /// inside a call that returns there. Resumed, it would fault with no handler of ours (and
    /// spin, its signals blocked): it is terminated instead.
    Terminate,
    /// Suspended: one suspension is dropped (the one ptyreap would have dropped; a debugger's
    /// own holds stay).
    Resume,
    /// Not suspended: left alone.
    Leave,
}

/// `pc`: the thread's pc; `returns_to`: its return address (arm64 lr; x86_64 the word at rsp).
pub fn resume_step(suspend_count: i32, pc: u64, returns_to: Option<u64>) -> ResumeStep {
    if pc == SENTINEL || returns_to == Some(SENTINEL) {
        ResumeStep::Terminate
    } else if suspend_count > 0 {
        ResumeStep::Resume
    } else {
        ResumeStep::Leave
    }
}

/// What `ptyreap resume` says it did.
pub fn resume_summary(pid: i32, name: &str, resumed: usize, terminated: usize) -> String {
    let who = format!("pid {pid} ({name})");
    match (resumed, terminated) {
        (0, 0) => format!("no thread of {who} is suspended: nothing to do"),
        (r, 0) => format!(
            "resumed {r} thread{} of {who} (one suspension each)",
            plural(r)
        ),
        (0, t) => format!("removed {t} thread{} ptyreap had left in {who}", plural(t)),
        (r, t) => format!(
            "removed {t} thread{} ptyreap had left in {who}, and resumed {r} thread{} (one \
             suspension each)",
            plural(t),
            plural(r)
        ),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

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

/// The two instruction sets a Mac runs natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Arm64,
    X86_64,
}

impl Arch {
    pub fn ours() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }
}

/// What we know about a target's code, for deciding whether a call can be run in it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetCode {
    pub cputype: i32,
    pub cpusubtype: i32,
    /// PROC_FLAG_ROSETTA: translated x86_64 code on an Apple-silicon kernel.
    pub rosetta: bool,
    /// ptyreap itself runs translated.
    pub self_translated: bool,
}

/// Why a call cannot be run in this target, or None when its code is plain arm64 or x86_64 like
/// ours. arm64e processes refuse foreign thread states (pointer authentication:
/// KERN_PROTECTION_FAILURE); Rosetta-translated ones have no x86 thread state we could set on an
/// arm64 kernel.
pub fn arch_refusal(ours: Arch, code: &TargetCode, pid: i32, name: &str) -> Option<String> {
    let who = format!("pid {pid} ({name})");
    if code.self_translated {
        return Some(format!(
            "ptyreap itself runs under Rosetta: it cannot run calls in {who}; \
             use the native arm64 build of ptyreap"
        ));
    }
    if code.rosetta {
        return Some(format!(
            "{who} runs translated by Rosetta: macOS gives no thread state of it that ptyreap \
             could set, so its PTYs cannot be released from outside; quitting it frees them"
        ));
    }
    let subtype = (code.cpusubtype as u32 & !ffi::CPU_SUBTYPE_MASK) as i32;
    match code.cputype {
        ffi::CPU_TYPE_ARM64 if subtype == ffi::CPU_SUBTYPE_ARM64E => Some(format!(
            "{who} is an arm64e process (pointer authentication): macOS refuses thread states \
             from other processes for it, so its PTYs cannot be released from outside; \
             quitting it frees them"
        )),
        ffi::CPU_TYPE_ARM64 if ours == Arch::Arm64 => None,
        ffi::CPU_TYPE_X86_64 if ours == Arch::X86_64 => None,
        ffi::CPU_TYPE_ARM64 | ffi::CPU_TYPE_X86_64 => {
            let theirs = if code.cputype == ffi::CPU_TYPE_ARM64 {
                Arch::Arm64
            } else {
                Arch::X86_64
            };
            Some(format!(
                "{who} is {} code and this ptyreap is {}: use a ptyreap built for {}",
                theirs.name(),
                ours.name(),
                theirs.name()
            ))
        }
        other => Some(format!(
            "{who} has an unsupported cpu type {other:#x}: ptyreap runs calls only in arm64 and \
             x86_64 processes"
        )),
    }
}

/// `kern_return_t` values the messages name (osfmk/mach/kern_return.h).
pub const KERN_SUCCESS: i32 = 0;
pub const KERN_INVALID_ADDRESS: i32 = 1;
pub const KERN_PROTECTION_FAILURE: i32 = 2;
pub const KERN_INVALID_ARGUMENT: i32 = 4;
pub const KERN_FAILURE: i32 = 5;
pub const KERN_NO_ACCESS: i32 = 8;
pub const KERN_ABORTED: i32 = 14;
pub const KERN_INVALID_NAME: i32 = 15;
pub const KERN_INVALID_TASK: i32 = 16;
pub const KERN_TERMINATED: i32 = 37;
pub const KERN_OPERATION_TIMED_OUT: i32 = 49;

/// A kern_return_t as `NAME (n)`.
pub fn kern_name(kr: i32) -> String {
    let name = match kr {
        KERN_SUCCESS => "KERN_SUCCESS",
        KERN_INVALID_ADDRESS => "KERN_INVALID_ADDRESS",
        KERN_PROTECTION_FAILURE => "KERN_PROTECTION_FAILURE",
        3 => "KERN_NO_SPACE",
        KERN_INVALID_ARGUMENT => "KERN_INVALID_ARGUMENT",
        KERN_FAILURE => "KERN_FAILURE",
        6 => "KERN_RESOURCE_SHORTAGE",
        KERN_NO_ACCESS => "KERN_NO_ACCESS",
        KERN_ABORTED => "KERN_ABORTED",
        KERN_INVALID_NAME => "KERN_INVALID_NAME",
        KERN_INVALID_TASK => "KERN_INVALID_TASK",
        KERN_TERMINATED => "KERN_TERMINATED",
        KERN_OPERATION_TIMED_OUT => "KERN_OPERATION_TIMED_OUT",
        _ => return format!("kern_return_t {kr}"),
    };
    format!("{name} ({kr})")
}

/// Who the refusal is about, and how ptyreap was run (for the commands it suggests).
#[derive(Debug, Clone)]
pub struct RefusalContext<'a> {
    pub pid: i32,
    pub name: &'a str,
    /// ptyreap's own path, for the suggested commands.
    pub exe: &'a str,
    /// The target is an Apple platform binary (CS_PLATFORM_BINARY).
    pub platform_binary: bool,
}

/// The plain message for a failed `task_for_pid`, or None on success.
///
/// As root, KERN_FAILURE means System Integrity Protection and the target's hardened runtime
/// forbid debugging it (every notarized app, unless it carries get-task-allow); root does not
/// help, so say what does. Not root: task ports of other processes need root.
pub fn task_port_refusal(kr: i32, is_root: bool, ctx: &RefusalContext<'_>) -> Option<String> {
    if kr == KERN_SUCCESS {
        return None;
    }
    let who = format!("pid {} ({})", ctx.pid, ctx.name);
    let census = "`ptyreap` (the census) still shows the leak";
    if !is_root {
        let cmd = format!("{} --pid {} --yes", ctx.exe, ctx.pid);
        return Some(format!(
            "releasing PTYs inside {who} needs root ({}): run `sudo {cmd}`. If sudo itself fails \
             because no PTY is left (\"Device not configured\"), run it without a terminal: \
             osascript -e 'do shell script \"{cmd}\" with administrator privileges'",
            kern_name(kr)
        ));
    }
    if kr == KERN_FAILURE && ctx.platform_binary {
        return Some(format!(
            "macOS refuses to let any process, even root, control {who}: it is an Apple platform \
             binary, protected by System Integrity Protection. Nothing was changed; {census}, \
             and quitting it frees its PTYs; `sudo sysctl kern.tty.ptmx_max=999` raises the PTY \
             limit (511 by default, 999 at most) to buy time"
        ));
    }
    if kr == KERN_FAILURE {
        return Some(format!(
            "macOS refuses to let any process, even root, control {who}: System Integrity \
             Protection forbids debugging apps built with the hardened runtime (every notarized \
             app) unless they allow it (get-task-allow). Nothing was changed. What you can do: \
             {census}; quitting {} frees every PTY it holds; to lift the restriction, start up \
             in Recovery and run `csrutil enable --without debug` (undo it later with \
             `csrutil enable`); meanwhile `sudo sysctl kern.tty.ptmx_max=999` raises the PTY \
             limit (511 by default, 999 at most) to buy time",
            ctx.name
        ));
    }
    Some(format!(
        "cannot control {who}: task_for_pid failed with {}; nothing was changed ({census})",
        kern_name(kr)
    ))
}

/// The plain message when a thread state is refused (arm64e slips through the cpu subtype check
/// only if macOS reports it differently; say what it means anyway).
pub fn thread_state_refusal(kr: i32, pid: i32, name: &str) -> String {
    match kr {
        KERN_PROTECTION_FAILURE => format!(
            "macOS refused ptyreap's thread state for pid {pid} ({name}): it is an arm64e \
             (pointer-authenticated) process, whose PTYs cannot be released from outside; \
             quitting it frees them"
        ),
        KERN_NO_ACCESS => format!(
            "macOS refused ptyreap's thread state for pid {pid} ({name}): it is a hardened \
             process whose registers only Apple's tools may set; quitting it frees its PTYs"
        ),
        _ => format!(
            "cannot set up a call in pid {pid} ({name}): thread_set_state failed with {}",
            kern_name(kr)
        ),
    }
}

/// The shared cache as one process sees it: one slide per boot, so when the UUID and slide
/// match ours, every libsystem address of ours is valid in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCache {
    pub uuid: [u8; 16],
    pub slide: u64,
    pub base: u64,
}

impl SharedCache {
    pub fn from_head(head: &ffi::DyldAllImageInfosHead) -> Option<SharedCache> {
        if head.version < ffi::DYLD_ALL_IMAGE_INFOS_MIN_VERSION
            || head.shared_cache_base_address == 0
            || head.process_detached_from_shared_region != 0
        {
            return None;
        }
        Some(SharedCache {
            uuid: head.shared_cache_uuid,
            slide: head.shared_cache_slide,
            base: head.shared_cache_base_address,
        })
    }
}

/// Why our libsystem addresses are not valid in the target, or None when they are.
pub fn shared_cache_mismatch(
    ours: Option<SharedCache>,
    theirs: Option<SharedCache>,
    pid: i32,
    name: &str,
) -> Option<String> {
    match (ours, theirs) {
        (Some(a), Some(b)) if a == b => None,
        (None, _) => Some(
            "ptyreap cannot read its own dyld shared cache information: it cannot locate \
             libsystem's close() in another process"
                .into(),
        ),
        (_, None) => Some(format!(
            "pid {pid} ({name}) does not use the system's dyld shared cache (or has not \
             finished starting): ptyreap cannot locate libsystem's close() in it"
        )),
        (Some(_), Some(_)) => Some(format!(
            "pid {pid} ({name}) maps a different dyld shared cache than ptyreap (another cache \
             or slide, e.g. started before a system update): ptyreap cannot locate libsystem's \
             close() in it; quitting and restarting it frees its PTYs"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resume_drops_one_suspension_and_removes_the_reapers_threads() {
        use super::{resume_step, resume_summary, ResumeStep, SENTINEL};
        assert_eq!(
            resume_step(1, 0x1_8000_0000, Some(0x1_8000_1000)),
            ResumeStep::Resume
        );
        assert_eq!(resume_step(3, 0x1_8000_0000, None), ResumeStep::Resume);
        assert_eq!(resume_step(0, 0x1_8000_0000, None), ResumeStep::Leave);
        // the reaper's thread: parked or faulting at the sentinel, or inside a call returning
        // there, whatever its count
        assert_eq!(resume_step(1, SENTINEL, None), ResumeStep::Terminate);
        assert_eq!(resume_step(0, SENTINEL, None), ResumeStep::Terminate);
        assert_eq!(
            resume_step(1, 0x1_8000_0000, Some(SENTINEL)),
            ResumeStep::Terminate
        );
        assert_eq!(
            resume_summary(7, "app", 0, 0),
            "no thread of pid 7 (app) is suspended: nothing to do"
        );
        assert_eq!(
            resume_summary(7, "app", 1, 0),
            "resumed 1 thread of pid 7 (app) (one suspension each)"
        );
        assert!(resume_summary(7, "app", 4, 1).starts_with("removed 1 thread ptyreap"));
    }

    #[test]
    fn a_task_suspended_as_a_whole_is_refused() {
        assert_eq!(super::task_suspended_refusal(Some(0)), None);
        let one = super::task_suspended_refusal(Some(1)).unwrap();
        assert!(one.contains("(1 task suspension:"), "{one}");
        assert!(super::task_suspended_refusal(Some(2))
            .unwrap()
            .contains("2 task suspensions"));
        assert!(
            super::task_suspended_refusal(None).is_some(),
            "unreadable is no go-ahead"
        );
    }

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

    use super::*;
    use crate::model::{DevId, Evidence, Holder, PtyId, Verdict};
    use crate::verdict::{judge, Policy};
    use std::time::Duration;

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

    fn code(cputype: i32, cpusubtype: i32) -> TargetCode {
        TargetCode {
            cputype,
            cpusubtype,
            ..TargetCode::default()
        }
    }

    #[test]
    fn only_plain_native_code_is_called_into() {
        let arm = Arch::Arm64;
        assert_eq!(
            arch_refusal(arm, &code(ffi::CPU_TYPE_ARM64, 0), 9, "x"),
            None
        );
        // CPU_SUBTYPE_PTRAUTH_ABI | arm64e
        let e = arch_refusal(
            arm,
            &code(ffi::CPU_TYPE_ARM64, 0x8000_0002u32 as i32),
            9,
            "x",
        );
        assert!(e.unwrap().contains("arm64e"));
        let e = arch_refusal(arm, &code(ffi::CPU_TYPE_ARM64, 2), 9, "x");
        assert!(e.unwrap().contains("arm64e"));
        let mut rosetta = code(ffi::CPU_TYPE_X86_64, 3);
        rosetta.rosetta = true;
        assert!(arch_refusal(arm, &rosetta, 9, "x")
            .unwrap()
            .contains("Rosetta"));
        let mut us = code(ffi::CPU_TYPE_X86_64, 3);
        us.self_translated = true;
        assert!(arch_refusal(Arch::X86_64, &us, 9, "x")
            .unwrap()
            .contains("ptyreap itself runs under Rosetta"));
        assert_eq!(
            arch_refusal(Arch::X86_64, &code(ffi::CPU_TYPE_X86_64, 3), 9, "x"),
            None
        );
        assert!(
            arch_refusal(Arch::X86_64, &code(ffi::CPU_TYPE_ARM64, 0), 9, "x")
                .unwrap()
                .contains("built for arm64")
        );
        assert!(arch_refusal(arm, &code(7, 3), 9, "x")
            .unwrap()
            .contains("unsupported cpu type"));
    }

    fn ctx(platform_binary: bool) -> RefusalContext<'static> {
        RefusalContext {
            pid: 1234,
            name: "Claude",
            exe: "/usr/local/bin/ptyreap",
            platform_binary,
        }
    }

    #[test]
    fn success_is_no_refusal() {
        assert_eq!(task_port_refusal(KERN_SUCCESS, true, &ctx(false)), None);
        assert_eq!(task_port_refusal(KERN_SUCCESS, false, &ctx(false)), None);
    }

    #[test]
    fn kern_failure_as_root_is_sip_and_the_hardened_runtime() {
        let m = task_port_refusal(KERN_FAILURE, true, &ctx(false)).unwrap();
        for needle in [
            "pid 1234 (Claude)",
            "even root",
            "System Integrity Protection",
            "hardened runtime",
            "census",
            "quitting Claude frees",
            "csrutil enable --without debug",
            "Recovery",
            "sudo sysctl kern.tty.ptmx_max=999",
            "Nothing was changed",
        ] {
            assert!(m.contains(needle), "missing {needle:?} in {m}");
        }
        assert!(!m.contains("sudo ptyreap"), "{m}");
    }

    #[test]
    fn kern_failure_for_a_platform_binary_says_so() {
        let m = task_port_refusal(KERN_FAILURE, true, &ctx(true)).unwrap();
        assert!(m.contains("Apple platform binary"), "{m}");
        assert!(m.contains("kern.tty.ptmx_max=999"), "{m}");
        assert!(!m.contains("csrutil"), "{m}");
    }

    #[test]
    fn not_root_is_told_to_use_sudo_and_the_no_pty_way() {
        for kr in [
            KERN_FAILURE,
            KERN_PROTECTION_FAILURE,
            KERN_INVALID_ARGUMENT,
            77,
        ] {
            let m = task_port_refusal(kr, false, &ctx(false)).unwrap();
            assert!(
                m.contains("sudo /usr/local/bin/ptyreap --pid 1234 --yes"),
                "{m}"
            );
            assert!(m.contains("osascript -e 'do shell script \"/usr/local/bin/ptyreap --pid 1234 --yes\" with administrator privileges'"), "{m}");
            assert!(m.contains(&kern_name(kr)), "{m}");
        }
    }

    #[test]
    fn other_failures_as_root_name_the_code() {
        for (kr, name) in [
            (KERN_PROTECTION_FAILURE, "KERN_PROTECTION_FAILURE (2)"),
            (KERN_INVALID_ARGUMENT, "KERN_INVALID_ARGUMENT (4)"),
            (KERN_NO_ACCESS, "KERN_NO_ACCESS (8)"),
            (KERN_INVALID_TASK, "KERN_INVALID_TASK (16)"),
            (4242, "kern_return_t 4242"),
        ] {
            let m = task_port_refusal(kr, true, &ctx(false)).unwrap();
            assert!(m.contains(name), "{m}");
            assert!(m.contains("nothing was changed"), "{m}");
            assert!(!m.contains("csrutil"), "{m}");
        }
    }

    #[test]
    fn thread_state_refusals() {
        assert!(thread_state_refusal(KERN_PROTECTION_FAILURE, 5, "a").contains("arm64e"));
        assert!(thread_state_refusal(KERN_NO_ACCESS, 5, "a").contains("hardened process"));
        assert!(thread_state_refusal(KERN_TERMINATED, 5, "a").contains("KERN_TERMINATED (37)"));
    }

    fn head(version: u32, slide: u64, uuid: u8) -> ffi::DyldAllImageInfosHead {
        ffi::DyldAllImageInfosHead {
            version,
            shared_cache_slide: slide,
            shared_cache_uuid: [uuid; 16],
            shared_cache_base_address: 0x1_8000_0000 + slide,
            ..Default::default()
        }
    }

    #[test]
    fn the_shared_cache_must_match_exactly() {
        let ours = SharedCache::from_head(&head(17, 0x1000, 7));
        assert!(ours.is_some());
        assert_eq!(
            shared_cache_mismatch(ours, SharedCache::from_head(&head(16, 0x1000, 7)), 1, "a"),
            None
        );
        let other_slide = SharedCache::from_head(&head(17, 0x2000, 7));
        assert!(shared_cache_mismatch(ours, other_slide, 1, "a")
            .unwrap()
            .contains("different dyld shared cache"));
        let other_uuid = SharedCache::from_head(&head(17, 0x1000, 8));
        assert!(shared_cache_mismatch(ours, other_uuid, 1, "a").is_some());
        // too old a layout, or detached from the shared region: no cache to trust
        assert_eq!(SharedCache::from_head(&head(14, 0x1000, 7)), None);
        let mut detached = head(17, 0x1000, 7);
        detached.process_detached_from_shared_region = 1;
        assert_eq!(SharedCache::from_head(&detached), None);
        assert!(shared_cache_mismatch(ours, None, 1, "a")
            .unwrap()
            .contains("does not use"));
        assert!(shared_cache_mismatch(None, ours, 1, "a").is_some());
    }

    // ---- the verdict engine fed with evidence shaped like the macOS backend's ----------------

    const NOW: i64 = 1_800_000_000;
    /// devfs, the one "devpts instance" of a Mac.
    const DEVFS: DevId = DevId {
        major: 16,
        minor: 0,
    };

    fn mac_orphan(index: u32, idle: i64) -> Evidence {
        Evidence {
            fd: 30 + index as i32,
            pty: Some(PtyId {
                devpts: DEVFS,
                index,
            }),
            slave_path: Some(slave_path(index)),
            last_io: Some(NOW - idle),
            // macOS has no POLLHUP probe without the fd, nor FIONREAD
            hung_up: None,
            unread_bytes: None,
            ..Evidence::default()
        }
    }

    fn policy(min_idle: u64) -> Policy {
        Policy {
            min_idle: Duration::from_secs(min_idle),
            include_stale: None,
        }
    }

    #[test]
    fn mac_evidence_orphaned_fresh_live_tracked() {
        let j = judge(&mac_orphan(7, 7200), &policy(600), NOW);
        assert_eq!(j.verdict, Verdict::Orphaned);
        assert_eq!(j.reason, "no process holds /dev/ttys007; idle 2h");

        assert_eq!(
            judge(&mac_orphan(7, 60), &policy(600), NOW).verdict,
            Verdict::Fresh
        );

        let mut live = mac_orphan(8, 99_999);
        live.slave_holders = vec![Holder {
            pid: 4000,
            name: "zsh".into(),
            fds: vec![0, 1, 2],
        }];
        let j = judge(&live, &policy(0), NOW);
        assert_eq!(j.verdict, Verdict::Live);
        assert!(j.reason.starts_with("/dev/ttys008 held by 4000 (zsh)"));

        let mut tracked = mac_orphan(9, 7200);
        tracked.watched_by = vec!["kqueue fd 5".into()];
        let j = judge(&tracked, &policy(600), NOW);
        assert_eq!(j.verdict, Verdict::Tracked);
        assert!(j.reason.contains("kqueue fd 5"), "{}", j.reason);
    }

    #[test]
    fn mac_guarded_and_unreadable_kqueues_are_never_reaped() {
        let mut guarded = mac_orphan(3, 99_999);
        guarded.guarded = true;
        let j = judge(&guarded, &policy(0), NOW);
        assert_eq!(j.verdict, Verdict::Unknown);
        assert!(j.reason.contains("guarded"));

        let mut unknown_watch = mac_orphan(4, 99_999);
        unknown_watch.missing = Some("cannot read kqueue fd 5".into());
        assert_eq!(
            judge(&unknown_watch, &policy(0), NOW).verdict,
            Verdict::Unknown
        );
    }

    #[test]
    fn mac_session_and_pairs() {
        let mut ctty = mac_orphan(5, 99_999);
        ctty.session = Some(812);
        assert_eq!(judge(&ctty, &policy(0), NOW).verdict, Verdict::Live);

        let mut pair = mac_orphan(6, 3600);
        pair.target_slave_fds = vec![12];
        let j = judge(&pair, &policy(0), NOW);
        assert_eq!(j.verdict, Verdict::Orphaned);
        assert!(j.reason.contains("/dev/ttys006"));
        assert!(j.reason.contains("slave fds 12"));

        // one devfs instance: the same index is the same PTY, so two fds on it are aliases
        let mut dup = mac_orphan(6, 3600);
        dup.aliases = vec![40];
        assert_eq!(judge(&dup, &policy(0), NOW).verdict, Verdict::Merged);
    }
}
