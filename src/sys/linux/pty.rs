//! What a PTY master tells about itself, asked on a `pidfd_getfd` copy. Nothing here opens the
//! slave as a terminal or changes the PTY's state:
//! - `TIOCGPTN`: the index.
//! - `TIOCGPTPEER` with `O_PATH`: an O_PATH fd of the slave *node* — no tty open, so POLLHUP and
//!   the session are untouched. Its `fstat` gives the devpts instance (`st_dev`: masters opened
//!   through /dev/ptmx themselves show devtmpfs) and the last slave-side I/O (atime/mtime).
//! - `TIOCGSID` / `TIOCGPGRP`: the slave's session and foreground group (ENOTTY: none).
//! - `FIONREAD`: bytes the slave side wrote that nobody has read at the master.
//! - `poll`: POLLHUP once the slave was opened and then closed by everyone.

use crate::model::{DevId, PtyId};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// UNIX98_PTY_SLAVE_MAJOR (include/uapi/linux/major.h): every devpts slave node's major.
pub const PTY_SLAVE_MAJOR: u32 = 136;

pub fn dev_id(dev: libc::dev_t) -> DevId {
    DevId {
        major: libc::major(dev),
        minor: libc::minor(dev),
    }
}

/// The slave node's identity and times.
#[derive(Debug, Clone)]
pub struct SlaveNode {
    pub pty: PtyId,
    /// max(atime, mtime, ctime): the last slave-side I/O, or the node's creation for one never
    /// used (the kernel updates atime/mtime at most every 8 s; ctime changes only with owner or
    /// mode, which happens at setup — so taking the max errs on the side of "recent").
    pub last_io: i64,
    /// When the node was made (its ctime, seconds with fraction): the PTY's creation.
    pub created: f64,
    pub path: Option<String>,
}

/// The master's index and its slave node, without opening the slave.
pub fn slave_node(master: BorrowedFd<'_>, want_path: bool) -> io::Result<SlaveNode> {
    let mut index: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut index) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER returns a new fd (O_PATH: the node, not an open terminal).
    let peer = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_PATH | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if peer < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from the kernel.
    let peer = unsafe { OwnedFd::from_raw_fd(peer) };
    let st = fstat(peer.as_raw_fd())?;
    let path = if want_path {
        std::fs::read_link(format!("/proc/self/fd/{}", peer.as_raw_fd()))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(SlaveNode {
        pty: PtyId {
            devpts: dev_id(st.st_dev),
            index,
        },
        last_io: st.st_atime.max(st.st_mtime).max(st.st_ctime),
        created: st.st_ctime as f64 + st.st_ctime_nsec as f64 * 1e-9,
        path,
    })
}

pub fn fstat(fd: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid pointer for the call.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// An ioctl returning an int through a pointer; ENOTTY (no session) gives None.
fn int_ioctl(fd: BorrowedFd<'_>, request: libc::Ioctl) -> Option<i32> {
    let mut value: libc::c_int = 0;
    // SAFETY: these requests write one int.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut value) };
    (r >= 0).then_some(value)
}

/// The session whose controlling terminal the slave is.
pub fn session(master: BorrowedFd<'_>) -> Option<i32> {
    int_ioctl(master, libc::TIOCGSID)
}

/// The slave's foreground process group (none without a session).
pub fn foreground_pgrp(master: BorrowedFd<'_>) -> Option<i32> {
    int_ioctl(master, libc::TIOCGPGRP).filter(|&g| g > 0)
}

/// Whether the slave is locked against opening (`TIOCGPTLCK`: unlockpt() clears it).
pub fn slave_locked(master: BorrowedFd<'_>) -> Option<bool> {
    int_ioctl(master, libc::TIOCGPTLCK).map(|v| v != 0)
}

/// Lock (or unlock) the slave against opening: while locked, opening /dev/pts/N fails with EIO
/// (`pty_open` checks the master's TTY_PTY_LOCK). Fds already open on the slave are unaffected.
pub fn lock_slave(master: BorrowedFd<'_>, locked: bool) -> io::Result<()> {
    let value: libc::c_int = locked.into();
    // SAFETY: TIOCSPTLCK reads one int from the pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &value) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
/// Bytes queued at the master, written by the slave side and not read.
pub fn unread_bytes(master: BorrowedFd<'_>) -> Option<u32> {
    int_ioctl(master, libc::FIONREAD).map(|n| n.max(0) as u32)
}

/// POLLHUP: the slave was opened and then closed by everyone.
pub fn hung_up(master: BorrowedFd<'_>) -> Option<bool> {
    let mut pfd = libc::pollfd {
        fd: master.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    (r >= 0).then_some(pfd.revents & libc::POLLHUP != 0)
}

/// `hung_up` for many masters in one `poll` call (the stop window is counted in microseconds).
pub fn hung_up_all<'a>(masters: impl Iterator<Item = BorrowedFd<'a>>) -> Vec<Option<bool>> {
    let mut pfds: Vec<libc::pollfd> = masters
        .map(|m| libc::pollfd {
            fd: m.as_raw_fd(),
            events: 0,
            revents: 0,
        })
        .collect();
    // SAFETY: a valid array of pollfds of its length, zero timeout.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) };
    pfds.iter()
        .map(|p| (r >= 0).then_some(p.revents & libc::POLLHUP != 0))
        .collect()
}
