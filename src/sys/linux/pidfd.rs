//! Process file descriptors: the way to name a process that survives pid reuse.
//!
//! `pidfd_open` (Linux 5.3) pins the process: once we hold the pidfd, a recycled pid can never
//! be confused with our target. `pidfd_getfd` (5.6) copies one of the target's fds into our own
//! table without stopping it, which is how every PTY ioctl here is made: on a copy, never by
//! opening the slave. nix lacks both, so they are raw syscalls.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: i32,
}

impl Pidfd {
    pub fn open(pid: i32) -> io::Result<Pidfd> {
        // SAFETY: plain syscall with integer arguments; the result is a new fd we own.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(r as RawFd) };
        Ok(Pidfd { fd, pid })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A copy of the target's `fd`, close-on-exec. Close it as soon as possible: a copy of a PTY
    /// master keeps the PTY allocated while we hold it.
    pub fn get_fd(&self, fd: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: plain syscall; flags must be 0. The result is a new fd we own.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.fd.as_raw_fd(), fd, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a fresh fd (pidfd_getfd sets O_CLOEXEC itself).
        Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
    }

    /// Whether the process has exited (the pidfd polls readable then).
    pub fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        r > 0 && pfd.revents & libc::POLLIN != 0
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
