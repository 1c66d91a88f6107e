//! ptyreap's own child processes (the tracer of a reap, the process that closes the look's perf
//! events): the close-on-exec pipe they talk through, and reaping them.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just made and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) })
}

/// Waits for our child `pid` to end (through EINTR) and reaps it; its wait status.
pub fn reap(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child; waitpid writes one int.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
    status
}
