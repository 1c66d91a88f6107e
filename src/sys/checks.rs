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

/// What a failed probe of one of a process's fds (a copy on Linux, a libproc read on macOS)
/// means for its inspection, the same on both systems.
pub enum FdProbe {
    /// EBADF: closed since the scan; not an error, the fd is no longer there.
    Gone,
    /// ESRCH or EPERM: the whole inspection ends with this error (the process exited, or may
    /// not be looked at: `not_permitted` is the backend's words for why).
    Fatal(UserError),
    /// Anything else: that fd's evidence is missing, with this line.
    Missing(String),
}

impl FdProbe {
    /// `what`: the probe that failed, as in "cannot copy fd 4".
    pub fn failed(
        e: &std::io::Error,
        (pid, name): (i32, &str),
        fd: i32,
        what: &str,
        not_permitted: fn(i32, &str) -> UserError,
    ) -> FdProbe {
        match e.raw_os_error() {
            Some(libc::EBADF) => FdProbe::Gone,
            Some(libc::ESRCH) => FdProbe::Fatal(exited_while_inspected(pid, name)),
            Some(libc::EPERM) => FdProbe::Fatal(not_permitted(pid, name)),
            _ => FdProbe::Missing(format!("cannot {what} fd {fd}: {e}")),
        }
    }
}

pub fn exited_while_inspected(pid: i32, name: &str) -> UserError {
    UserError::failure(format!("pid {pid} ({name}) exited while being inspected"))
}
