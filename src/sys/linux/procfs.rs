//! Parsers for the /proc files we read, and the few readers that feed them. The parsers are kept
//! free of I/O so they can be unit-tested and fuzzed on hostile input: a process can put anything
//! (spaces, parentheses, newlines) in its own `comm`. The readers (at the end) only read a file
//! and hand it to a parser.

use std::io;

use crate::model::DevId;

/// The fields of /proc/PID/stat we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub flags: u64,
    /// Clock ticks after boot: with the pid, it names one process for good.
    pub start_time: u64,
}

/// PF_KTHREAD from include/linux/sched.h.
pub const PF_KTHREAD: u64 = 0x0020_0000;

impl Stat {
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// Parses /proc/PID/stat. `comm` sits in parentheses and may itself contain `)`, so the fields
/// after it are found from the *last* `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = text[open + 1..close].to_string();
    let mut rest = text[close + 1..].split_ascii_whitespace();
    // fields 3.. : state ppid pgrp session tty_nr tpgid flags ... starttime is field 22
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let mut rest = rest.skip(4);
    let flags = rest.next()?.parse().ok()?;
    // field 9 was flags; starttime is field 22, 13 fields further
    let start_time = rest.nth(12)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        flags,
        start_time,
    })
}

/// The state letter of a stat line ('R', 'S', 'Z', ...): the first field after the *last* `)`.
/// Needs nothing after it, unlike [`parse_stat`].
pub fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// The value of `Key:` in /proc/PID/status (e.g. `TracerPid`, `SigIgn`), trimmed.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// `tty-index:` of a PTY master's /proc/PID/fdinfo/FD (drivers/tty/pty.c, since ~4.14).
/// The open flags in an fdinfo (`flags:`, octal).
pub fn parse_fd_flags(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
}

/// The open flags of `pid`'s `fd`, from its fdinfo.
pub fn fd_flags(pid: i32, fd: i32) -> Option<u32> {
    parse_fd_flags(&std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?)
}

pub fn parse_tty_index(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("tty-index:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The entries of an epoll fd's fdinfo: each `tfd:` number (the fd number it was registered
/// under) and its file's inode number (`ino:`, hex) (fs/eventpoll.c, `ep_show_fdinfo`).
pub fn parse_epoll_tfds(fdinfo: &str) -> Vec<(i32, Option<u64>)> {
    fdinfo
        .lines()
        .filter_map(|l| l.strip_prefix("tfd:"))
        .filter_map(|rest| {
            let tfd = rest.split_ascii_whitespace().next()?.parse().ok()?;
            let ino = rest
                .split_ascii_whitespace()
                .find_map(|w| w.strip_prefix("ino:"))
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            Some((tfd, ino))
        })
        .collect()
}

/// One line of /proc/PID/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: DevId,
    pub mount_point: String,
    pub fstype: String,
    pub super_options: String,
}

impl Mount {
    /// A `name=value` option of the superblock (e.g. devpts' `max=`).
    pub fn super_option(&self, name: &str) -> Option<&str> {
        self.super_options
            .split(',')
            .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
    }
}

/// Parses /proc/PID/mountinfo (proc(5)): `id parent major:minor root mount-point options
/// [optional fields...] - fstype source super-options`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mount_line).collect()
}

fn parse_mount_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mut f = left.split(' ');
    let dev = parse_dev(f.nth(2)?)?;
    let mount_point = unescape_octal(f.nth(1)?);
    let mut r = right.split(' ');
    let fstype = r.next()?.to_string();
    let super_options = r.nth(1).unwrap_or("").to_string();
    Some(Mount {
        dev,
        mount_point,
        fstype,
        super_options,
    })
}

fn parse_dev(text: &str) -> Option<DevId> {
    let (a, b) = text.split_once(':')?;
    Some(DevId {
        major: a.parse().ok()?,
        minor: b.parse().ok()?,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let oct = bytes.get(i + 1..i + 4);
        if let (b'\\', Some(oct)) = (bytes[i], oct) {
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = oct.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// /proc/PID/task/TID/syscall of a thread blocked in a syscall: its number and six arguments.
/// `running` (not blocked) and `-1 sp pc` (blocked outside a syscall) give None.
pub fn parse_syscall(text: &str) -> Option<(i64, [u64; 6])> {
    let mut f = text.split_ascii_whitespace();
    let nr: i64 = f.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = u64::from_str_radix(f.next()?.strip_prefix("0x")?, 16).ok()?;
    }
    Some((nr, args))
}

// The readers. Errors of the read itself (NotFound: the process is gone) reach the caller.

/// /proc/PID/stat, parsed.
pub fn read_stat(pid: i32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

/// Where exec laid out the process's memory: fields 26 (startcode), 28 (startstack) and 48
/// (arg_start) of /proc/PID/stat. A forked child keeps its parent's until it execs; each exec
/// picks new ones (address space randomization). None when unreadable or hidden (zeros: the
/// kernel shows them only to a reader allowed to ptrace the process).
pub fn layout(pid: i32) -> Option<[u64; 3]> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_layout(&text)
}

/// See [`layout`].
pub fn parse_layout(stat: &str) -> Option<[u64; 3]> {
    let field = |n: usize| stat_field(stat, n)?.parse::<u64>().ok();
    let out = [field(26)?, field(28)?, field(48)?];
    (out != [0; 3]).then_some(out)
}

/// Field `n` of a stat line, numbered as proc(5) does (1 is the pid, 2 the comm): the fields
/// after the *last* `)` start at 3, whatever the comm holds.
pub fn stat_field(stat: &str, n: usize) -> Option<&str> {
    stat[stat.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .nth(n.checked_sub(3)?)
}

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot.
pub fn start_time(pid: i32) -> io::Result<u64> {
    read_stat(pid).map(|s| s.start_time)
}

/// The state letter of one thread ('R', 'S', 'Z', ...), from /proc/PID/task/TID/stat.
pub fn thread_state(pid: i32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    parse_state(&stat)
}

/// Whether one thread has exited or is exiting: gone from /proc, a zombie, PF_EXITING in its
/// flags (field 9, set first thing in `do_exit`), or SIGKILL pending for it or its process.
pub fn thread_exiting(pid: i32, tid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
        return true;
    };
    const PF_EXITING: u64 = 0x4;
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    let flags = stat_field(&stat, 9).and_then(|f| f.parse::<u64>().ok());
    if matches!(parse_state(&stat), None | Some('Z' | 'X'))
        || flags.is_some_and(|f| f & PF_EXITING != 0)
    {
        return true;
    }
    ["SigPnd", "ShdPnd"].iter().any(|key| {
        read_status_field(pid, Some(tid), key)
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & SIGKILL_BIT != 0)
    })
}

/// The paths of the files mapped in a /proc/PID/maps text whose names end with `suffix`, each
/// once, in the order first seen. The path is everything after the fifth field (it may hold
/// spaces); a deleted file's ` (deleted)` stays on it.
pub fn parse_maps_paths(maps: &str, suffix: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines() {
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            rest = rest.find(' ').map_or("", |i| &rest[i..]);
        }
        let path = rest.trim_start();
        if path.starts_with('/') && path.ends_with(suffix) && !out.iter().any(|p| p == path) {
            out.push(path.to_string());
        }
    }
    out
}

/// The thread ids in /proc/PID/task, in ascending order.
pub fn list_tasks(pid: i32) -> io::Result<Vec<i32>> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// The threads of `pid` other than its leader that have not exited (not zombies).
pub fn live_threads(pid: i32) -> Vec<i32> {
    list_tasks(pid)
        .unwrap_or_default()
        .into_iter()
        .filter(|&tid| tid != pid && !matches!(thread_state(pid, tid), None | Some('Z' | 'X')))
        .collect()
}

/// (tid, call, arguments) of every thread of `pid` blocked in a system call
/// (/proc/PID/task/TID/syscall; running threads and those blocked outside a call are left out).
pub fn task_syscalls(pid: i32) -> Vec<(i32, i64, [u64; 6])> {
    list_tasks(pid)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|tid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
            let (nr, args) = parse_syscall(&text)?;
            Some((tid, nr, args))
        })
        .collect()
}

/// `Key:` of /proc/PID/status, or of /proc/PID/task/TID/status with a `tid`.
pub fn read_status_field(pid: i32, tid: Option<i32>, key: &str) -> Option<String> {
    let path = match tid {
        Some(t) => format!("/proc/{pid}/task/{t}/status"),
        None => format!("/proc/{pid}/status"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    status_field(&text, key).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_flags_are_octal_and_optional() {
        let info = "pos:\t0\nflags:\t02100002\nmnt_id:\t26\ntty-index:\t4\n";
        assert_eq!(parse_fd_flags(info), Some(0o2100002));
        assert_eq!(parse_fd_flags("pos:\t0\n"), None);
        assert_eq!(parse_fd_flags("flags:\t9x\n"), None);
    }

    #[test]
    fn stat_fields_count_from_after_the_comm() {
        let rest: Vec<String> = (4..=52).map(|n| n.to_string()).collect();
        let stat = format!("42 (we) ird) S {}", rest.join(" "));
        assert_eq!(stat_field(&stat, 3), Some("S"));
        assert_eq!(stat_field(&stat, 39), Some("39"));
        assert_eq!(stat_field(&stat, 53), None);
        assert_eq!(stat_field(&stat, 2), None);
        assert_eq!(parse_layout(&stat), Some([26, 28, 48]));
    }

    #[test]
    fn ptrace_start_time_survives_odd_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 \
                    10 18446744073709551615";
        assert_eq!(parse_stat(stat).map(|s| s.start_time), Some(98765));
        let me = std::process::id() as i32;
        assert!(start_time(me).unwrap() > 0);
    }

    #[test]
    fn stat_with_a_hostile_comm() {
        let text =
            "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 200";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.comm, "a) b) (c");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.flags, 4_194_560);
        assert_eq!(s.start_time, 987_654);
        assert!(!s.is_kernel_thread());
        assert!(parse_stat("12 (x").is_none());
        assert!(parse_stat("").is_none());
    }

    #[test]
    fn kernel_threads_are_flagged() {
        let text = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 7 0 0";
        assert!(parse_stat(text).unwrap().is_kernel_thread());
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tx\nTracerPid:\t812\nSigIgn:\t0000000000001000\n";
        assert_eq!(status_field(text, "TracerPid"), Some("812"));
        assert_eq!(status_field(text, "SigIgn"), Some("0000000000001000"));
        assert_eq!(status_field(text, "Tracer"), None);
        assert_eq!(status_field(text, "Uid"), None);
    }

    #[test]
    fn fdinfo_fields() {
        let master = "pos:\t0\nflags:\t02\nmnt_id:\t26\nino:\t5\ntty-index:\t12\n";
        assert_eq!(parse_tty_index(master), Some(12));
        assert_eq!(parse_tty_index("pos:\t0\n"), None);
        let ep = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n\
                  tfd:        5 events:       19 data:                5  pos:0 ino:5 sdev:6\n\
                  tfd:       12 events:       19 data:                c  pos:0 ino:1a sdev:6\n";
        assert_eq!(parse_epoll_tfds(ep), vec![(5, Some(5)), (12, Some(0x1a))]);
    }

    #[test]
    fn mountinfo_devpts() {
        let text = "25 30 0:23 / /dev/pts rw,nosuid,noexec,relatime shared:3 - devpts devpts rw,gid=5,mode=620,ptmxmode=000\n\
                    90 25 0:51 / /tmp/my\\040pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=666,max=16\n\
                    garbage line\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].dev,
            DevId {
                major: 0,
                minor: 23
            }
        );
        assert_eq!(m[0].mount_point, "/dev/pts");
        assert_eq!(m[0].fstype, "devpts");
        assert_eq!(m[0].super_option("max"), None);
        assert_eq!(m[1].mount_point, "/tmp/my pts");
        assert_eq!(m[1].super_option("max"), Some("16"));
        assert_eq!(m[1].super_option("ptmxmode"), Some("666"));
    }

    #[test]
    fn syscall_lines() {
        let poll = "7 0x7ffd1000 0x3 0xffffffffffffffff 0x0 0x0 0x0 0x7ffd0ff0 0x7f00aa";
        assert_eq!(
            parse_syscall(poll),
            Some((7, [0x7ffd1000, 3, u64::MAX, 0, 0, 0]))
        );
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd0ff0 0x7f00aa\n"), None);
        assert_eq!(parse_syscall("7 0x1"), None);
    }
}
