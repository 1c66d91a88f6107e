//! Does the target's event loop still watch a master? (the `tracked` verdict)
//!
//! Two kinds of loop leave traces we can read without stopping anything:
//! - epoll: every entry of an epoll set shows as a `tfd:` line in the epoll fd's fdinfo. The
//!   number is the one the fd had when registered; `kcmp(KCMP_EPOLL_TFD)` confirms the entry's
//!   file is the very file of our master fd (all masters share the /dev/ptmx inode, so `ino:`
//!   cannot tell them apart).
//! - poll/ppoll/select/pselect6: nothing persists, but a thread *waiting* in one shows the call
//!   and its arguments in /proc/PID/task/TID/syscall; the pollfd array or fd_sets are then read
//!   from the target's memory (process_vm_readv).
//!
//!
//! A loop that polls only now and then, or spins (a hung-up master makes every poll return at
//! once), is seen over a window by observe.rs, from the syscall tracepoints: nothing here stops
//! or traces a thread, so a dry run changes nothing the target can observe.

use super::kcmp;
use super::procfs;
use std::collections::{BTreeMap, BTreeSet};
use std::io::IoSliceMut;

/// `epoll_fds`: the target's epoll fds. Returns, for each watched master fd, what watches it.
/// `master_inodes`, when known (the inode numbers of the masters' files: the ptmx nodes they
/// were opened through), lets an epoll entry of any other file be passed over without the kcmp
/// against every master that finding a renumbered entry takes.
pub fn watchers(
    pid: i32,
    masters: &BTreeSet<i32>,
    epoll_fds: &[i32],
    master_inodes: Option<&BTreeSet<u64>>,
) -> BTreeMap<i32, Vec<String>> {
    let mut found: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for &epfd in epoll_fds {
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{epfd}")) else {
            continue;
        };
        for (tfd, ino) in procfs::parse_epoll_tfds(&info) {
            if let (Some(inodes), Some(ino)) = (master_inodes, ino) {
                if !inodes.contains(&ino) {
                    continue;
                }
            }
            if let Some(fd) = epoll_entry_master(pid, epfd, tfd, masters) {
                found
                    .entry(fd)
                    .or_default()
                    .push(format!("epoll fd {epfd}"));
            }
        }
    }
    // one look at every thread's current call serves the poll sets and the readers
    let calls = procfs::task_syscalls(pid);
    // a thread blocked in read() on a master is the app using it
    for (tid, fd) in readers_in(&calls) {
        if masters.contains(&fd) {
            found
                .entry(fd)
                .or_default()
                .push(format!("read() in thread {tid}"));
        }
    }
    let waiting = waiting_poll_sets(pid, &calls);
    for (tid, call, fds) in &waiting {
        for fd in fds.intersection(masters) {
            found
                .entry(*fd)
                .or_default()
                .push(format!("{call}() in thread {tid}"));
        }
    }
    for list in found.values_mut() {
        list.dedup();
    }
    found
}

/// Which master (if any) an epoll entry registered as `tfd` is. Usually the fd of that number;
/// if it was renumbered (dup2, close and reuse), any master whose file matches.
fn epoll_entry_master(pid: i32, epfd: i32, tfd: i32, masters: &BTreeSet<i32>) -> Option<i32> {
    let slot = kcmp::EpollSlot {
        efd: epfd as u32,
        tfd: tfd as u32,
        toff: 0,
    };
    let same = |fd: i32| -> Option<bool> {
        let at = &slot as *const kcmp::EpollSlot as libc::c_ulong;
        kcmp::same(pid, pid, kcmp::KCMP_EPOLL_TFD, fd as libc::c_ulong, at).ok()
    };
    match same(tfd) {
        // the file still at that number: a planned master or not
        Some(true) => return masters.contains(&tfd).then_some(tfd),
        // kcmp unavailable (no CONFIG_KCMP, or not permitted): trust the number
        None => return masters.contains(&tfd).then_some(tfd),
        Some(false) => {}
    }
    // renumbered (dup2, close and reuse): any master whose file it is
    masters.iter().copied().find(|&fd| same(fd) == Some(true))
}

/// (tid, call name, fds) for every thread of `pid` waiting in a poll-family call.
fn waiting_poll_sets(
    pid: i32,
    calls: &[(i32, i64, [u64; 6])],
) -> Vec<(i32, &'static str, BTreeSet<i32>)> {
    calls
        .iter()
        .filter_map(|&(tid, nr, args)| {
            let call = PollCall::from_nr(nr)?;
            Some((tid, call.name(), call.read_fds(pid, &args)?))
        })
        .collect()
}

/// (tid, fd) for every thread of `pid` blocked in `read()`/`readv()` on an fd: a reader of a
/// master uses the PTY however idle it looks.
pub fn blocked_readers(pid: i32) -> Vec<(i32, i32)> {
    readers_in(&procfs::task_syscalls(pid))
}

fn readers_in(calls: &[(i32, i64, [u64; 6])]) -> Vec<(i32, i32)> {
    let read_calls = [libc::SYS_read, libc::SYS_readv];
    calls
        .iter()
        .filter(|(_, nr, _)| read_calls.contains(nr))
        .map(|&(tid, _, args)| (tid, args[0] as i32))
        .collect()
}

/// PTY masters registered with one of the target's io_uring instances (`UserFiles:` in its
/// fdinfo lists each registered file's path): requests on them are invisible to every other
/// check, and which master a registration is cannot be told from the path. The io_uring fds
/// that have any.
pub fn io_uring_with_masters(pid: i32) -> Vec<i32> {
    super::scan::fds_linked_to(pid, b"anon_inode:[io_uring]")
        .into_iter()
        .filter(|fd| {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            registered_masters(&info)
        })
        .collect()
}

/// Whether an io_uring fdinfo's `UserFiles:` list holds a PTY master (`/dev/ptmx`,
/// `/dev/pts/ptmx`).
pub fn registered_masters(fdinfo: &str) -> bool {
    // The kernel lists the files only when it gets the ring's lock at once (a submission under
    // way, an SQPOLL thread): files registered but not listed may be masters.
    super::scan::listed_paths(fdinfo).is_none_or(|paths| paths.iter().any(|p| p.ends_with("ptmx")))
}

/// poll and select exist as system calls on x86_64 only; aarch64 has just ppoll and pselect6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub enum PollCall {
    Poll,
    Ppoll,
    Select,
    Pselect6,
}

/// More than any real poll set; bounds what we read from a hostile or corrupt argument.
const MAX_POLL_FDS: u64 = 1 << 20;

impl PollCall {
    /// The system call numbers of the poll family on this architecture (observe.rs watches them).
    pub fn numbers() -> Vec<i64> {
        let both = [libc::SYS_ppoll, libc::SYS_pselect6];
        #[cfg(target_arch = "x86_64")]
        return [&both[..], &[libc::SYS_poll, libc::SYS_select]].concat();
        #[cfg(not(target_arch = "x86_64"))]
        both.to_vec()
    }

    pub fn from_nr(nr: i64) -> Option<PollCall> {
        #[cfg(target_arch = "x86_64")]
        {
            if nr == libc::SYS_poll {
                return Some(PollCall::Poll);
            }
            if nr == libc::SYS_select {
                return Some(PollCall::Select);
            }
        }
        if nr == libc::SYS_ppoll {
            return Some(PollCall::Ppoll);
        }
        if nr == libc::SYS_pselect6 {
            return Some(PollCall::Pselect6);
        }
        None
    }

    /// select() and pselect6() write their results over the fd sets they were given.
    pub fn overwrites_its_sets(self) -> bool {
        matches!(self, PollCall::Select | PollCall::Pselect6)
    }

    /// The name people know: glibc's poll() and select() may be ppoll/pselect6 underneath.
    pub fn name(self) -> &'static str {
        match self {
            PollCall::Poll | PollCall::Ppoll => "poll",
            PollCall::Select | PollCall::Pselect6 => "select",
        }
    }

    pub fn read_fds(self, pid: i32, args: &[u64; 6]) -> Option<BTreeSet<i32>> {
        match self {
            // poll(fds, nfds, timeout), ppoll(fds, nfds, tsp, sigmask, size)
            PollCall::Poll | PollCall::Ppoll => {
                let n = args[1].min(MAX_POLL_FDS) as usize;
                let mut raw = vec![0u8; n * std::mem::size_of::<libc::pollfd>()];
                read_memory(pid, args[0], &mut raw)?;
                Some(pollfds_from_bytes(&raw))
            }
            // select(nfds, readfds, writefds, exceptfds, timeout), pselect6 the same first four
            PollCall::Select | PollCall::Pselect6 => {
                let nfds = args[0].min(MAX_POLL_FDS) as usize;
                let mut fds = BTreeSet::new();
                for &addr in &args[1..4] {
                    if addr == 0 {
                        continue;
                    }
                    let mut raw = vec![0u8; nfds.div_ceil(64) * 8];
                    read_memory(pid, addr, &mut raw)?;
                    fds.extend(fd_set_from_bytes(&raw, nfds));
                }
                Some(fds)
            }
        }
    }
}

/// The fds of an array of `struct pollfd { int fd; short events, revents; }`; negative fds are
/// ignored by the kernel, and so by us.
pub fn pollfds_from_bytes(raw: &[u8]) -> BTreeSet<i32> {
    raw.chunks_exact(8)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .filter(|&fd| fd >= 0)
        .collect()
}

/// The fds set in an fd_set bitmap of `nfds` bits (an array of longs, little bit first).
pub fn fd_set_from_bytes(raw: &[u8], nfds: usize) -> Vec<i32> {
    let mut out = Vec::new();
    for (w, word) in raw.chunks_exact(8).enumerate() {
        let bits = u64::from_ne_bytes(word.try_into().unwrap_or([0; 8]));
        for b in 0..64 {
            let fd = w * 64 + b;
            if fd < nfds && bits & (1 << b) != 0 {
                out.push(fd as i32);
            }
        }
    }
    out
}

pub fn read_memory(pid: i32, addr: u64, buf: &mut [u8]) -> Option<()> {
    if buf.is_empty() {
        return Some(());
    }
    let len = buf.len();
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let mut local = [IoSliceMut::new(buf)];
    let n = nix::sys::uio::process_vm_readv(nix::unistd::Pid::from_raw(pid), &mut local, &remote)
        .ok()?;
    (n == len).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pollfd_arrays() {
        let mut raw = Vec::new();
        for (fd, ev) in [(5i32, 1i16), (-1, 1), (12, 4)] {
            raw.extend_from_slice(&fd.to_ne_bytes());
            raw.extend_from_slice(&ev.to_ne_bytes());
            raw.extend_from_slice(&0i16.to_ne_bytes());
        }
        assert_eq!(pollfds_from_bytes(&raw), [5, 12].into());
    }

    #[test]
    fn io_uring_registered_files() {
        let info =
            "pos:\t0\nflags:\t02\nUserFiles:\t2\n    0: /tmp/x\n    1: /dev/ptmx\nUserBufs:\t0\n";
        assert!(registered_masters(info));
        let none = "UserFiles:\t1\n    0: /dev/null\nUserBufs:\t0\n    0: 0x1000/4096\n";
        assert!(!registered_masters(none));
        assert!(!registered_masters("pos:\t0\n"));
        // registered, but not listed (the ring's lock was busy): may be masters
        assert!(registered_masters("UserFiles:\t3\nUserBufs:\t0\n"));
        assert!(!registered_masters("UserFiles:\t0\nUserBufs:\t0\n"));
    }

    #[test]
    fn fd_sets() {
        let mut raw = vec![0u8; 16];
        raw[0] = 0b1000_1000; // fds 3 and 7
        raw[8] = 0b1; // fd 64
        assert_eq!(fd_set_from_bytes(&raw, 65), vec![3, 7, 64]);
        assert_eq!(fd_set_from_bytes(&raw, 64), vec![3, 7]);
    }
}
