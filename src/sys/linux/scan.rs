//! The machine-wide scan: every process's PTY masters and slaves, as fast as /proc allows.
//!
//! `lsof /dev/ptmx` stats every fd of every process. We read only what we need: one `getdents64`
//! per /proc/PID/fd directory and one `readlinkat` per fd relative to that directory (no path walk
//! from the root each time), `fstatat` only for the few links that look like a PTY slave, and the
//! PTY ioctls only for masters. The pids are shared out over the cores with an atomic counter.
//! Our own process is skipped: its transient `pidfd_getfd` copies and O_PATH slave nodes would
//! otherwise show up as holders.

use super::pidfd::Pidfd;
use super::pty::{self, PTY_SLAVE_MAJOR};
use crate::model::{MasterRef, ProcessPtys, PtyId, SlaveRef, Visibility};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Every process (but ourselves) that holds a PTY master or slave, sorted by pid; and who
/// could not be seen (a process whose fds are unreadable is recorded, never taken for one that
/// holds nothing).
pub fn scan() -> io::Result<(Vec<ProcessPtys>, Visibility)> {
    let proc_dir = open_dir(c"/proc", None)?;
    let pids = list_pids(&proc_dir)?;
    let own = std::process::id() as i32;
    let states = crate::parallel::for_each_shared(
        &pids,
        || (Scratch::new(), Vec::new(), Vec::new()),
        |(scratch, out, unreadable), &pid| {
            if pid == own {
                return;
            }
            match scan_process(&proc_dir, pid, scratch) {
                Ok(found) => out.extend(found),
                Err(why) => unreadable.push((pid, why)),
            }
        },
    );
    let mut found = Vec::new();
    let mut visibility = Visibility::default();
    for (_, out, unreadable) in states {
        found.extend(out);
        visibility.unreadable.extend(unreadable);
    }
    found.sort_by_key(|p| p.pid);
    visibility.unreadable.sort_unstable();
    visibility.hidden = hidden_processes();
    Ok((found, visibility))
}

/// `PROC_PID_INIT_INO` (include/linux/proc_ns.h): the inode of the initial pid namespace.
const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;

/// Processes /proc does not even list for us: those outside our pid namespace when it is not
/// the initial one, or other users' under `hidepid=invisible`.
fn hidden_processes() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
    if ns != INITIAL_PID_NS {
        return Some("processes outside ptyreap's pid namespace cannot be seen".into());
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let hides = super::procfs::parse_mountinfo(&mounts).iter().any(|m| {
            m.mount_point == "/proc"
                && m.fstype == "proc"
                && matches!(
                    m.super_option("hidepid"),
                    Some("2" | "invisible" | "4" | "ptraceable")
                )
        });
        if hides {
            return Some("/proc is mounted with hidepid: other users' processes are hidden".into());
        }
    }
    None
}

/// Buffers reused across processes by one worker.
struct Scratch {
    dents: Vec<u8>,
    link: Vec<u8>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dents: vec![0; 64 * 1024],
            link: vec![0; libc::PATH_MAX as usize],
        }
    }
}

/// The fds of `pid` whose /proc/PID/fd link is exactly `target` (e.g. `anon_inode:[eventpoll]`),
/// sorted; with the scan's raw getdents64 and readlinkat, which matters for 10,000-fd targets.
pub fn fds_linked_to(pid: i32, target: &[u8]) -> Vec<i32> {
    let Ok(path) = std::ffi::CString::new(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let Ok(dir) = open_dir(&path, None) else {
        return Vec::new();
    };
    let mut scratch = Scratch::new();
    let mut out = Vec::new();
    let link = &mut scratch.link;
    for_each_dirent(&dir, &mut scratch.dents, |name| {
        let Some(fd) = parse_fd(name.to_bytes()) else {
            return;
        };
        // SAFETY: name is NUL-terminated, link is a valid buffer of its length.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                link.as_mut_ptr().cast(),
                link.len(),
            )
        };
        if n > 0 && &link[..n as usize] == target {
            out.push(fd);
        }
    });
    out.sort_unstable();
    out
}

/// What a link in /proc/PID/fd says about the fd.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// /dev/ptmx, or /dev/pts/ptmx (then the link's own node is on the devpts instance).
    Master {
        on_devpts: bool,
    },
    /// Could be a devpts slave (a path ending in a number): confirm with fstatat.
    MaybeSlave,
    /// An epoll instance (for the watched check).
    EventPoll,
    /// An io_uring instance: files registered with it stay held after their fds are closed.
    IoUring,
    Other,
}

pub fn classify_link(link: &[u8]) -> LinkKind {
    if link == b"/dev/ptmx" {
        return LinkKind::Master { on_devpts: false };
    }
    if link.ends_with(b"/ptmx") {
        return LinkKind::Master {
            on_devpts: link.ends_with(b"pts/ptmx"),
        };
    }
    if link == b"anon_inode:[eventpoll]" {
        return LinkKind::EventPoll;
    }
    if link == b"anon_inode:[io_uring]" {
        return LinkKind::IoUring;
    }
    let last = link.rsplit(|&b| b == b'/').next().unwrap_or(b"");
    if link.first() == Some(&b'/') && !last.is_empty() && last.iter().all(u8::is_ascii_digit) {
        return LinkKind::MaybeSlave;
    }
    // a slave bind-mounted under another name (a container's /dev/console, /dev/tty1): the
    // device says, not the name; the devices every process has open are not worth a stat
    const COMMON: [&[u8]; 6] = [
        b"/dev/null",
        b"/dev/zero",
        b"/dev/urandom",
        b"/dev/random",
        b"/dev/full",
        b"/dev/tty",
    ];
    if link.starts_with(b"/dev/") && !COMMON.contains(&link) {
        return LinkKind::MaybeSlave;
    }
    LinkKind::Other
}

/// One process's PTY fds (None: it holds none); Err(why) when its fds cannot be read and it may
/// hold some (kernel threads, zombies and processes gone meanwhile hold none).
fn scan_process(
    proc_dir: &OwnedFd,
    pid: i32,
    scratch: &mut Scratch,
) -> Result<Option<ProcessPtys>, String> {
    let mut path = itoa_path(pid, b"/fd");
    let mut fd_dir = match open_dir(cstr(&mut path), Some(proc_dir)) {
        Ok(dir) => dir,
        Err(e) => return unreadable(pid, &e),
    };
    let mut found = read_fds(&fd_dir, scratch);
    if found.entries == 0 {
        // A main thread that exited (pthread_exit) leaves /proc/PID/fd empty while the other
        // threads still hold the process's fds: read them through one of those.
        if let Some(dir) = live_thread_fd_dir(proc_dir, pid) {
            found = read_fds(&dir, scratch);
            fd_dir = dir;
        }
    }
    let Found {
        masters,
        mut slaves,
        event_queues,
        rings,
        ..
    } = found;
    let mut unlisted_rings = Vec::new();
    for ring in rings {
        match slaves_in_ring(proc_dir, pid, ring) {
            Some(held) => slaves.extend(held),
            None => unlisted_rings.push(ring),
        }
    }
    if masters.is_empty() && slaves.is_empty() && unlisted_rings.is_empty() {
        return Ok(None);
    }
    let masters = identify_masters(proc_dir, &fd_dir, pid, &masters);
    // its start, for its leak rate (only for holders of masters: one small read each)
    let started = (!masters.is_empty())
        .then(|| read_small(proc_dir, &format!("{pid}/stat")))
        .flatten()
        .and_then(|s| super::procfs::parse_stat(&s))
        .and_then(|s| super::info::started_at_precise(s.start_time));
    Ok(Some(ProcessPtys {
        pid,
        name: read_comm(proc_dir, pid).unwrap_or_else(|| "?".into()),
        masters,
        slaves,
        event_queues,
        started,
        unlisted_rings,
    }))
}

/// What one fd directory holds of interest.
struct Found {
    masters: Vec<(RawFd, bool)>,
    slaves: Vec<SlaveRef>,
    event_queues: Vec<i32>,
    rings: Vec<i32>,
    /// Every fd listed, of any kind.
    entries: usize,
}

fn read_fds(fd_dir: &OwnedFd, scratch: &mut Scratch) -> Found {
    let mut f = Found {
        masters: Vec::new(),
        slaves: Vec::new(),
        event_queues: Vec::new(),
        rings: Vec::new(),
        entries: 0,
    };
    let link = &mut scratch.link;
    for_each_dirent(fd_dir, &mut scratch.dents, |name| {
        let Some(fd) = parse_fd(name.to_bytes()) else {
            return;
        };
        f.entries += 1;
        // SAFETY: name is NUL-terminated, link is a valid buffer of its length.
        let n = unsafe {
            libc::readlinkat(
                fd_dir.as_raw_fd(),
                name.as_ptr(),
                link.as_mut_ptr().cast(),
                link.len(),
            )
        };
        if n <= 0 {
            return; // closed meanwhile
        }
        match classify_link(&link[..n as usize]) {
            LinkKind::Master { on_devpts } => f.masters.push((fd, on_devpts)),
            LinkKind::MaybeSlave => {
                if let Some(pty) = stat_slave(fd_dir, name) {
                    f.slaves.push(SlaveRef {
                        fd,
                        pty,
                        via_io_uring: false,
                    });
                }
            }
            LinkKind::EventPoll => f.event_queues.push(fd),
            LinkKind::IoUring => f.rings.push(fd),
            LinkKind::Other => {}
        }
    });
    f
}

/// The PTY slaves registered with `pid`'s io_uring instance `ring` (`UserFiles:` in its fdinfo
/// lists each registered file by path; the device found there says which PTY and devpts
/// instance). A
/// slave registered there is held even after its fd was closed. None when the kernel would not
/// list the files: it lists them only when it gets the ring's lock at once, and a submission or
/// another reader of the fdinfo may hold it; read again a few times, a millisecond apart, then
/// say so (the caller must not take it for "no slave").
fn slaves_in_ring(proc_dir: &OwnedFd, pid: i32, ring: i32) -> Option<Vec<SlaveRef>> {
    let mut tries = 0;
    let paths = loop {
        let info = read_small(proc_dir, &format!("{pid}/fdinfo/{ring}"))?; // gone: nothing held
        match listed_paths(&info) {
            Some(paths) => break paths,
            None if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            None => return None,
        }
    };
    let held = paths
        .into_iter()
        .filter(|path| classify_link(path.as_bytes()) == LinkKind::MaybeSlave)
        .flat_map(|path| {
            // fdinfo's path is resolved against ptyreap's root, which for a process with a root
            // of its own (a container) may not be where it is: both readings count (keeping
            // one PTY too many is the safe error)
            let theirs = fstatat(proc_dir, &format!("{pid}/root{path}")).ok();
            let ours = fstatat(proc_dir, &path).ok();
            let mut ptys: Vec<PtyId> = [theirs, ours]
                .iter()
                .flatten()
                .filter_map(slave_pty)
                .collect();
            ptys.dedup();
            ptys.into_iter().map(move |pty| SlaveRef {
                fd: ring,
                pty,
                via_io_uring: true,
            })
        })
        .collect();
    Some(held)
}

/// The registered files' paths, or None when the fdinfo counts files it does not list (the
/// kernel did not get the ring's lock).
pub fn listed_paths(fdinfo: &str) -> Option<Vec<String>> {
    let paths = registered_paths(fdinfo);
    let count = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("UserFiles:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (paths.len() >= count).then_some(paths)
}

/// The paths an io_uring fdinfo lists under `UserFiles:` (`  N: PATH` lines).
pub fn registered_paths(fdinfo: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_files = false;
    for line in fdinfo.lines() {
        if line.starts_with("UserFiles:") {
            in_files = true;
            continue;
        }
        if in_files {
            let Some((index, path)) = line.trim_start().split_once(": ") else {
                break;
            };
            if index.parse::<u32>().is_err() {
                break;
            }
            out.push(path.to_string());
        }
    }
    out
}

/// The fd directory of a live thread of `pid` whose leader is a zombie (None otherwise).
fn live_thread_fd_dir(proc_dir: &OwnedFd, pid: i32) -> Option<OwnedFd> {
    let stat = read_small(proc_dir, &format!("{pid}/stat"))?;
    if super::procfs::parse_stat(&stat)?.state != 'Z' {
        return None;
    }
    let live = *super::procfs::live_threads(pid).first()?;
    let path = std::ffi::CString::new(format!("{pid}/task/{live}/fd")).ok()?;
    open_dir(&path, Some(proc_dir)).ok()
}

/// Why `pid`'s fds could not be read, if it may hold any.
fn unreadable(pid: i32, e: &io::Error) -> Result<Option<ProcessPtys>, String> {
    if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) {
        return Ok(None); // gone meanwhile
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    match stat.as_deref().and_then(super::procfs::parse_stat) {
        None => Ok(None), // gone meanwhile
        Some(s) if s.is_kernel_thread() || matches!(s.state, 'Z' | 'X') => Ok(None),
        Some(_) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            Err("permission".into())
        }
        Some(_) => Err(format!("{e}")),
    }
}

/// The PTY of each master: exactly, on a pidfd copy; else (not permitted) from fdinfo's
/// `tty-index` and, for masters opened through a devpts instance's own ptmx node, that node's
/// device. A master opened through /dev/ptmx on devtmpfs cannot be placed without a copy.
fn identify_masters(
    proc_dir: &OwnedFd,
    fd_dir: &OwnedFd,
    pid: i32,
    masters: &[(RawFd, bool)],
) -> Vec<MasterRef> {
    let pidfd = Pidfd::open(pid).ok();
    masters
        .iter()
        .map(|&(fd, on_devpts)| {
            if let Some(copy) = pidfd.as_ref().and_then(|p| p.get_fd(fd).ok()) {
                if let Ok(node) = pty::slave_node(copy.as_fd(), false) {
                    return MasterRef {
                        fd,
                        pty: Some(node.pty),
                        session: pty::session(copy.as_fd()),
                        created: Some(node.created),
                    };
                }
            }
            let index = read_tty_index(proc_dir, pid, fd);
            let devpts = on_devpts
                .then(|| fstatat(fd_dir, &fd.to_string()).ok())
                .flatten()
                .map(|st| pty::dev_id(st.st_dev));
            let pty = index
                .zip(devpts)
                .map(|(index, devpts)| PtyId { devpts, index });
            MasterRef {
                fd,
                pty,
                session: None,
                created: None,
            }
        })
        .collect()
}

fn stat_slave(fd_dir: &OwnedFd, name: &CStr) -> Option<PtyId> {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid dirfd, NUL-terminated name, valid out pointer; follows the magic link.
    if unsafe { libc::fstatat(fd_dir.as_raw_fd(), name.as_ptr(), &mut st, 0) } < 0 {
        return None;
    }
    slave_pty(&st)
}

/// A devpts slave node: a character device with the PTY slave major. Its instance is `st_dev`.
pub fn slave_pty(st: &libc::stat) -> Option<PtyId> {
    let is_chr = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    (is_chr && libc::major(st.st_rdev) == PTY_SLAVE_MAJOR).then(|| PtyId {
        devpts: pty::dev_id(st.st_dev),
        index: libc::minor(st.st_rdev),
    })
}

fn fstatat(dir: &OwnedFd, name: &str) -> io::Result<libc::stat> {
    let name = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid dirfd, NUL-terminated name, valid out pointer.
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn read_tty_index(proc_dir: &OwnedFd, pid: i32, fd: RawFd) -> Option<u32> {
    let text = read_small(proc_dir, &format!("{pid}/fdinfo/{fd}"))?;
    super::procfs::parse_tty_index(&text)
}

fn read_comm(proc_dir: &OwnedFd, pid: i32) -> Option<String> {
    // A process names itself: escaped, so that printing it can never drive a terminal.
    read_small(proc_dir, &format!("{pid}/comm"))
        .map(|s| crate::output::escaped(s.trim_end_matches('\n')))
}

/// Reads a small /proc file relative to the /proc directory fd.
fn read_small(proc_dir: &OwnedFd, rel: &str) -> Option<String> {
    let rel = std::ffi::CString::new(rel).ok()?;
    // SAFETY: valid dirfd and path; the result is a new fd we own.
    let fd = unsafe {
        libc::openat(
            proc_dir.as_raw_fd(),
            rel.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fresh fd.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::read_to_string(file).ok()
}

pub fn open_dir(path: &CStr, at: Option<&OwnedFd>) -> io::Result<OwnedFd> {
    let dirfd = at.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: NUL-terminated path; the result is a new fd we own.
    let fd = unsafe {
        libc::openat(
            dirfd,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn list_pids(proc_dir: &OwnedFd) -> io::Result<Vec<i32>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pids = Vec::with_capacity(1024);
    for_each_dirent(proc_dir, &mut buf, |name| {
        if let Some(pid) = parse_fd(name.to_bytes()) {
            pids.push(pid);
        }
    });
    Ok(pids)
}

/// Calls `f` with each entry name of a freshly opened directory, via raw getdents64 into a
/// reused buffer.
pub fn for_each_dirent(dir: &OwnedFd, buf: &mut [u8], mut f: impl FnMut(&CStr)) {
    loop {
        // SAFETY: buf is valid for its length; the kernel writes linux_dirent64 records.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n <= 0 {
            return;
        }
        let n = n as usize;
        let mut off = 0usize;
        while off < n {
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 || off + reclen > n {
                return;
            }
            let name = &buf[off + 19..off + reclen];
            if let Ok(name) = CStr::from_bytes_until_nul(name) {
                f(name);
            }
            off += reclen;
        }
        // procfs fills the buffer as far as the directory goes: room left over for another
        // record (a name is at most 255 bytes) means this was the end, and one call is saved
        if n + 19 + 256 + 8 <= buf.len() {
            return;
        }
    }
}

/// A decimal fd or pid name; "." and ".." and anything else give None.
pub fn parse_fd(name: &[u8]) -> Option<i32> {
    if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// "PID" + suffix + NUL, without allocating.
fn itoa_path(pid: i32, suffix: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let digits = pid.to_string();
    out[..digits.len()].copy_from_slice(digits.as_bytes());
    out[digits.len()..digits.len() + suffix.len()].copy_from_slice(suffix);
    out
}

fn cstr(buf: &mut [u8; 32]) -> &CStr {
    CStr::from_bytes_until_nul(buf).unwrap_or(c"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_classified() {
        assert_eq!(
            classify_link(b"/dev/ptmx"),
            LinkKind::Master { on_devpts: false }
        );
        assert_eq!(
            classify_link(b"/dev/pts/ptmx"),
            LinkKind::Master { on_devpts: true }
        );
        assert_eq!(classify_link(b"/dev/pts/12"), LinkKind::MaybeSlave);
        assert_eq!(classify_link(b"/12"), LinkKind::MaybeSlave);
        assert_eq!(classify_link(b"socket:[1234]"), LinkKind::Other);
        assert_eq!(
            classify_link(b"anon_inode:[eventpoll]"),
            LinkKind::EventPoll
        );
        assert_eq!(classify_link(b"/dev/null"), LinkKind::Other);
        assert_eq!(classify_link(b"/dev/console"), LinkKind::MaybeSlave);
        assert_eq!(classify_link(b"/tmp/x (deleted)"), LinkKind::Other);
        assert_eq!(classify_link(b""), LinkKind::Other);
    }

    #[test]
    fn names() {
        assert_eq!(parse_fd(b"17"), Some(17));
        assert_eq!(parse_fd(b"."), None);
        assert_eq!(parse_fd(b"99999999999"), None);
        assert_eq!(cstr(&mut itoa_path(4242, b"/fd")).to_bytes(), b"4242/fd");
    }

    #[test]
    fn finds_our_own_child_holding_a_master() {
        // A real PTY pair, held by a child so our own pid (skipped) is not the holder.
        // SAFETY: posix_openpt returns a new fd or -1.
        let raw = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(raw >= 0, "posix_openpt: {}", io::Error::last_os_error());
        // SAFETY: a fresh fd.
        let master = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::from(master))
            .spawn()
            .unwrap();
        let (found, _) = scan().unwrap();
        child.kill().ok();
        child.wait().ok();
        let me = found
            .iter()
            .find(|p| p.pid == child.id() as i32)
            .expect("child found");
        assert_eq!(me.masters.len(), 1);
        assert_eq!(me.masters[0].fd, 0);
        assert!(me.masters[0].pty.is_some());
        assert!(found.iter().all(|p| p.pid != std::process::id() as i32));
    }

    #[test]
    fn io_uring_registered_files_are_read_from_fdinfo() {
        let info =
            "SqMask:\t0x3\nUserFiles:\t2\n    0: /dev/pts/7\n    1: /dev/ptmx\nUserBufs:\t0\n";
        assert_eq!(registered_paths(info), vec!["/dev/pts/7", "/dev/ptmx"]);
        assert_eq!(classify_link(b"anon_inode:[io_uring]"), LinkKind::IoUring);
        assert!(registered_paths("UserFiles:\t0\nUserBufs:\t0\n").is_empty());
        // counted but not listed: the kernel did not get the ring's lock
        assert_eq!(listed_paths("UserFiles:\t2\nUserBufs:\t0\n"), None);
        assert_eq!(listed_paths(info).map(|p| p.len()), Some(2));
    }
}
