//! Turning a pid into a target we may inspect, with one plain message for every way it can't be.

use super::pidfd::Pidfd;
use super::procfs;
use crate::exit_code::UserError;

/// A process pinned by a pidfd, with the start time that names it for good.
#[derive(Debug)]
pub struct Target {
    pub pid: i32,
    pub name: String,
    pub start_time: u64,
    pub pidfd: Pidfd,
}

pub fn open(pid: i32) -> Result<Target, UserError> {
    crate::sys::checks::plausible_pid(pid)?;
    same_pid_namespace_as_proc(pid)?;
    let no_such = || crate::sys::checks::no_such_process(pid);
    let stat = procfs::read_stat(pid).map_err(|_| no_such())?;
    let name = crate::output::escaped(&stat.comm);
    if matches!(stat.state, 'Z' | 'X') && live_threads(pid) > 0 {
        return Err(UserError::failure(format!(
            "pid {pid} ({name}): its main thread has exited while other threads run on; the \
             kernel shows no fds for such a process in /proc/{pid}/fd, so ptyreap cannot judge \
             them and leaves it alone"
        )));
    }
    if matches!(stat.state, 'Z' | 'X') {
        return Err(crate::sys::checks::zombie(pid, &name, stat.ppid));
    }
    if stat.is_kernel_thread() {
        return Err(UserError::failure(format!(
            "pid {pid} ({name}) is a kernel thread: it holds no file descriptors"
        )));
    }
    let pidfd = Pidfd::open(pid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => no_such(),
        _ => UserError::failure(format!("cannot pin pid {pid} ({name}): {e}")),
    })?;
    // The pid could have been reused between reading stat and pidfd_open: check it is the same.
    match procfs::read_stat(pid) {
        Ok(again) if again.start_time == stat.start_time => {}
        _ => return Err(no_such()),
    }
    if let Err(e) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT | libc::ESRCH) => no_such(),
            _ => not_permitted(pid, &name),
        });
    }
    Ok(Target {
        pid,
        name,
        start_time: stat.start_time,
        pidfd,
    })
}

/// Threads of `pid` other than its leader that are not zombies themselves.
fn live_threads(pid: i32) -> usize {
    procfs::live_threads(pid).len()
}

/// /proc must be of our own pid namespace (`nsenter -p` without `-m` leaves the old one):
/// otherwise /proc/PID is another process than the one `pid` names for us.
fn same_pid_namespace_as_proc(pid: i32) -> Result<(), UserError> {
    let Ok(pidfd) = Pidfd::open(pid) else {
        return Ok(()); // no such process for us: the checks below say so
    };
    match super::preflight::pid_seen_by_proc(&pidfd) {
        Some(seen) if seen != pid => Err(UserError::failure(format!(
            "pid {pid}: ptyreap runs in another pid namespace than the /proc it reads (there \
             that process is {}): run it where /proc belongs to its own namespace (nsenter \
             with both -p and -m, or unshare with --mount-proc); nothing was changed",
            if seen > 0 {
                format!("pid {seen}")
            } else {
                "not visible".into()
            }
        ))),
        _ => Ok(()),
    }
}

pub fn not_permitted(pid: i32, name: &str) -> UserError {
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m).to_string())
        .unwrap_or_else(|_| "another user".into());
    // SAFETY: geteuid cannot fail.
    let hint = if unsafe { libc::geteuid() } == 0 {
        "even as root: check for a security module (SELinux/AppArmor) or a seccomp policy denying ptrace"
    } else {
        "run it as root: sudo ptyreap ..."
    };
    UserError::failure(format!(
        "not permitted to inspect pid {pid} ({name}, uid {owner}): {hint}"
    ))
}

/// Every process (but ourselves) whose comm, or whose executable's file name, is `name`.
pub fn processes_named(name: &str) -> Vec<i32> {
    let own = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != own)
        .filter(|&pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end_matches('\n') == name {
                return true;
            }
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .is_some_and(|f| f.trim_end_matches(" (deleted)") == name)
        })
        .collect();
    pids.sort_unstable();
    pids
}
