//! Why a process could not be stopped, and, for EPERM, why not and what to do about it.

use std::fmt;
use std::io;
use std::time::Duration;

use super::super::procfs;

const CAP_SYS_PTRACE: u32 = 19;

/// Why a process could not be stopped. Each has one plain message (Display).
#[derive(Debug)]
pub enum AttachError {
    NoSuchProcess {
        pid: i32,
    },
    /// The process exited (before or while we attached).
    Exited {
        pid: i32,
    },
    /// The process called execve while we attached.
    Exec {
        pid: i32,
    },
    /// The pid now names another process than the one inspected.
    PidReused {
        pid: i32,
        expected: u64,
        found: u64,
    },
    /// ptyreap's own process.
    OwnProcess {
        pid: i32,
    },
    AlreadyTraced {
        pid: i32,
        tracer_pid: i32,
        tracer_name: String,
    },
    NotPermitted {
        pid: i32,
        yama_scope: Option<u32>,
        is_root: bool,
        has_cap_sys_ptrace: bool,
    },
    /// This thread did not stop in time (an uninterruptible sleep, a vfork parent, or a freezer
    /// that landed after the pre-flight); `held` says which (`preflight::held_by`).
    Timeout {
        pid: i32,
        tid: i32,
        waited: Duration,
        held: String,
    },
    Other {
        pid: i32,
        what: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::NoSuchProcess { pid } => write!(f, "no process with pid {pid}"),
            AttachError::Exited { pid } => write!(f, "process {pid} exited"),
            AttachError::Exec { pid } => {
                write!(f, "process {pid} ran a new program while being stopped")
            }
            AttachError::PidReused {
                pid,
                expected,
                found,
            } => write!(
                f,
                "pid {pid} now belongs to another process than the one inspected (started at \
                 tick {found}, not {expected})"
            ),
            AttachError::OwnProcess { pid } => write!(f, "pid {pid} is ptyreap itself"),
            AttachError::AlreadyTraced {
                pid,
                tracer_pid,
                tracer_name,
            } => {
                let msg = diagnose_eperm(None, true, true, Some((*tracer_pid, tracer_name)));
                write!(f, "cannot attach to process {pid}: {msg}")
            }
            AttachError::NotPermitted {
                pid,
                yama_scope,
                is_root,
                has_cap_sys_ptrace,
            } => {
                let msg = diagnose_eperm(*yama_scope, *is_root, *has_cap_sys_ptrace, None);
                write!(f, "cannot attach to process {pid}: {msg}")
            }
            AttachError::Timeout {
                pid,
                tid,
                waited,
                held,
            } => write!(
                f,
                "thread {tid} of process {pid} did not stop within {} ms, so every other thread \
                 was let go again: {held}",
                waited.as_millis()
            ),
            AttachError::Other { pid, what, source } => {
                write!(f, "cannot stop process {pid}: {what}: {source}")
            }
        }
    }
}

impl std::error::Error for AttachError {}

/// Why `PTRACE_SEIZE` said EPERM, in one sentence that says what to do. Pure, so it can be
/// tested for the cases this machine cannot produce (Yama, missing capability).
pub fn diagnose_eperm(
    yama_scope: Option<u32>,
    is_root: bool,
    has_cap_sys_ptrace: bool,
    tracer: Option<(i32, &str)>,
) -> String {
    if let Some((tpid, name)) = tracer {
        return format!(
            "it is already being traced by process {tpid} ({name}), a debugger or tracer; \
             detach or quit it and try again"
        );
    }
    match yama_scope {
        Some(3) => {
            return "kernel.yama.ptrace_scope is 3: no process may attach with ptrace until the \
                    next reboot (the setting cannot be lowered); reboot with a lower value"
                .to_string()
        }
        Some(2) if !has_cap_sys_ptrace => {
            return "kernel.yama.ptrace_scope is 2: only processes with CAP_SYS_PTRACE may attach; \
                    run ptyreap as root (sudo ptyreap ...)"
                .to_string()
        }
        Some(1) if !has_cap_sys_ptrace => {
            return "kernel.yama.ptrace_scope is 1: only a process's ancestors may attach to it; \
                    run ptyreap as root (sudo ptyreap ...), or allow it for now with \
                    'sudo sysctl kernel.yama.ptrace_scope=0'"
                .to_string()
        }
        _ => {}
    }
    if is_root && !has_cap_sys_ptrace {
        "ptyreap runs as root but without the CAP_SYS_PTRACE capability (a container or a \
         restricted service?); grant it (e.g. docker run --cap-add=SYS_PTRACE, or \
         AmbientCapabilities=CAP_SYS_PTRACE)"
            .to_string()
    } else if !has_cap_sys_ptrace {
        "not permitted to trace it (it belongs to another user, or changed its credentials); \
         run ptyreap as root (sudo ptyreap ...)"
            .to_string()
    } else {
        "denied although ptyreap has CAP_SYS_PTRACE: a security module (SELinux, AppArmor, \
         lockdown) or a protected process; see the kernel log (dmesg) or the audit log"
            .to_string()
    }
}

/// The tracer of thread `tid` of `pid` other than ourselves (the tracer process seizes the
/// leader first: a later thread's EPERM must name that thread's own tracer, say strace).
pub(super) fn tracer_of_thread(pid: i32, tid: i32) -> Option<(i32, String)> {
    let tpid: i32 = procfs::read_status_field(pid, Some(tid), "TracerPid")?
        .parse()
        .ok()?;
    if tpid == 0 || tpid == std::process::id() as i32 {
        return None;
    }
    // a name the tracer chose: escaped before it can reach a terminal
    let name = std::fs::read_to_string(format!("/proc/{tpid}/comm"))
        .map(|s| crate::output::escaped(s.trim_end()))
        .unwrap_or_else(|_| "?".to_string());
    Some((tpid, name))
}

/// Why seizing thread `tid` of `pid` was not permitted.
pub(super) fn eperm_error(pid: i32, tid: i32) -> AttachError {
    if let Some((tracer_pid, tracer_name)) =
        tracer_of_thread(pid, tid).or_else(|| tracer_of_thread(pid, pid))
    {
        return AttachError::AlreadyTraced {
            pid,
            tracer_pid,
            tracer_name,
        };
    }
    let yama_scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let cap_eff = procfs::read_status_field(std::process::id() as i32, None, "CapEff")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0);
    AttachError::NotPermitted {
        pid,
        yama_scope,
        // SAFETY: geteuid cannot fail.
        is_root: unsafe { libc::geteuid() } == 0,
        has_cap_sys_ptrace: cap_eff & (1 << CAP_SYS_PTRACE) != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_timeout_says_what_holds_the_thread() {
        let frozen = AttachError::Timeout {
            pid: 7,
            tid: 8,
            waited: Duration::from_millis(100),
            held: "the process was frozen meanwhile by the cgroup v1 freezer f".into(),
        }
        .to_string();
        assert!(
            frozen.contains("thread 8 of process 7 did not stop within 100 ms")
                && frozen.contains("every other thread was let go again")
                && frozen.contains("frozen meanwhile by the cgroup v1 freezer"),
            "{frozen}"
        );
    }

    #[test]
    fn ptrace_eperm_diagnosis() {
        let traced = diagnose_eperm(Some(1), false, false, Some((77, "gdb")));
        assert!(traced.contains("process 77 (gdb)"), "{traced}");
        let y1 = diagnose_eperm(Some(1), false, false, None);
        assert!(
            y1.contains("ptrace_scope is 1") && y1.contains("sudo"),
            "{y1}"
        );
        assert!(y1.contains("sysctl kernel.yama.ptrace_scope=0"), "{y1}");
        // Root with the capability passes Yama 1 and 2: then it must be something else.
        let lsm = diagnose_eperm(Some(1), true, true, None);
        assert!(lsm.contains("security module"), "{lsm}");
        assert_eq!(lsm, diagnose_eperm(Some(2), true, true, None));
        let y2 = diagnose_eperm(Some(2), false, false, None);
        assert!(
            y2.contains("ptrace_scope is 2") && y2.contains("CAP_SYS_PTRACE"),
            "{y2}"
        );
        let y3 = diagnose_eperm(Some(3), true, true, None);
        assert!(
            y3.contains("ptrace_scope is 3") && y3.contains("reboot"),
            "{y3}"
        );
        let nocap = diagnose_eperm(None, true, false, None);
        assert!(nocap.contains("without the CAP_SYS_PTRACE"), "{nocap}");
        let user = diagnose_eperm(Some(0), false, false, None);
        assert!(
            user.contains("another user") && user.contains("sudo"),
            "{user}"
        );
        let e = AttachError::NotPermitted {
            pid: 5,
            yama_scope: Some(2),
            is_root: false,
            has_cap_sys_ptrace: false,
        };
        assert!(
            e.to_string()
                .starts_with("cannot attach to process 5: kernel.yama"),
            "{e}"
        );
    }
}
