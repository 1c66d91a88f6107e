//! The target checks and messages every backend shares, so a bad pid reads the same on every OS.

use crate::exit_code::UserError;

/// A pid that can name a target at all: positive, and not ptyreap itself.
pub fn plausible_pid(pid: i32) -> Result<(), UserError> {
    if pid <= 0 {
        return Err(UserError::failure(format!(
            "{pid} is not a process id: give a positive pid (see `ptyreap` for the holders)"
        )));
    }
    if pid == std::process::id() as i32 {
        return Err(UserError::failure(format!(
            "pid {pid} is ptyreap itself: give the pid of the process that leaks PTYs"
        )));
    }
    Ok(())
}

pub fn no_such_process(pid: i32) -> UserError {
    UserError::failure(format!(
        "no process with pid {pid}: it may have exited; run `ptyreap` to list PTY holders"
    ))
}

pub fn zombie(pid: i32, name: &str, ppid: impl std::fmt::Display) -> UserError {
    UserError::failure(format!(
        "pid {pid} ({name}) is a zombie: its fds are already closed, so it holds no PTY; its \
         parent ({ppid}) must reap it"
    ))
}

/// How reading one fd of a target failed, the same way on every backend.
pub enum FdProbeError {
    /// EBADF: closed since the scan (not an error: the fd is no longer there).
    Closed,
    /// ESRCH: the whole process exited.
    Exited,
    /// EPERM: not permitted (the backend says why).
    Denied,
    /// Anything else: that fd's evidence is missing.
    Other,
}

impl FdProbeError {
    pub fn of(e: &std::io::Error) -> FdProbeError {
        match e.raw_os_error() {
            Some(libc::EBADF) => FdProbeError::Closed,
            Some(libc::ESRCH) => FdProbeError::Exited,
            Some(libc::EPERM) => FdProbeError::Denied,
            _ => FdProbeError::Other,
        }
    }
}

pub fn exited_while_inspected(pid: i32, name: &str) -> UserError {
    UserError::failure(format!("pid {pid} ({name}) exited while being inspected"))
}
