//! Checks made before a target is touched, each a plain refusal with the way out.
//!
//! - **A frozen cgroup** (v2 `cgroup.freeze`, as `docker pause` or `systemctl freeze` do; v1
//!   `freezer.state`). A v2-frozen thread can still be seized and interrupted, but the injected call
//!   never runs: the thread goes back into the freezer's trap as soon as it leaves the ptrace stop.
//!   A v1-frozen thread does not even stop. Either way, nothing can be released until it is
//!   thawed, and thawing it is the owner's decision.
//! - **Strict seccomp** (`SECCOMP_SET_MODE_STRICT`): only read, write, exit and sigreturn are
//!   allowed; any other call kills the process.
//! - **A shared fd table**: another process made with `clone(CLONE_FILES)` (no CLONE_THREAD) uses
//!   the same table, so closing an fd in the target closes it under that process too, which we
//!   would not have stopped and whose waits we would not have seen. Found with
//!   `kcmp(KCMP_FILES)` against every other process holding one of the target's masters (a
//!   process sharing the table holds all of them).
//! - **A thread waiting for its vfork child** (`vfork`, `posix_spawn`, Python's `subprocess`):
//!   it sleeps killably in `wait_for_vfork_done` until the child execs or exits, and no ptrace
//!   stop reaches it there. Stopping the others would hold the whole process until then, so the
//!   process is looked at for up to [`VFORK_PATIENCE`] first, without stopping anything. A thread
//!   that cannot stop for another reason (a hung file system, D state) is met by the stop's own
//!   bound (`reap::STOP_TIMEOUT`): every other thread is let go again after it.
//! - **/proc from another pid namespace** than ptyreap's own (`nsenter -p` without `-m`): the
//!   pid we pinned and the /proc entry we read would be two different processes.

use super::procfs;
use crate::model::Snapshot;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a target whose thread waits for a vfork child is watched, from outside, before the
/// reap is refused: a child that execs (nearly all) does so within milliseconds.
pub const VFORK_PATIENCE: Duration = Duration::from_millis(100);

/// Test hook: skip the vfork look, so that the stop's own bound meets such a thread.
const NO_VFORK_CHECK_ENV: &str = "PTYREAP_TEST_NO_VFORK_CHECK";

/// The system calls a vfork parent waits in (`wait_for_vfork_done` runs inside them).
const SPAWNING_CALLS: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_vfork,
];

/// Thread `tid` of `pid` waits for a vfork child: a killable sleep ("D") in the kernel's
/// `wait_for_vfork_done`, inside clone/clone3/vfork.
fn waits_for_vfork(pid: i32, tid: i32) -> bool {
    if procfs::thread_state(pid, tid) != Some('D') {
        return false;
    }
    let wchan =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default();
    if wchan.contains("vfork") {
        return true;
    }
    let call =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).unwrap_or_default();
    call.split_whitespace()
        .next()
        .and_then(|nr| nr.parse::<i64>().ok())
        .is_some_and(|nr| SPAWNING_CALLS.contains(&nr))
}

/// A thread of `pid` that waits for a vfork child and still does after [`VFORK_PATIENCE`]: the
/// refusal, in one line. Nothing is stopped or traced to find out.
pub fn vfork_refusal(pid: i32, name: &str) -> Option<String> {
    if std::env::var_os(NO_VFORK_CHECK_ENV).is_some() {
        return None;
    }
    let until = Instant::now() + VFORK_PATIENCE;
    loop {
        let waiting = procfs::list_tasks(pid)
            .unwrap_or_default()
            .into_iter()
            .find(|&tid| waits_for_vfork(pid, tid))?;
        if Instant::now() >= until {
            return Some(format!(
                "pid {pid} ({name}): thread {waiting} has been waiting for its vfork child to \
                 exec or exit for over {} ms, and no ptrace stop reaches a thread there; the \
                 process was not stopped and nothing was changed; try again in a moment",
                VFORK_PATIENCE.as_millis()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What holds thread `tid` of `pid` in the kernel, for a message: a freezer, a vfork child, or
/// its state and wait channel.
pub fn held_by(pid: i32, tid: i32) -> String {
    if let Some(by) = frozen_by(pid, &CgroupMounts::read()) {
        return format!(
            "the process was frozen meanwhile by {by}; thaw it ({}) and run again",
            thaw_hint(&by)
        );
    }
    if waits_for_vfork(pid, tid) {
        return "it waits for its vfork child to exec or exit; try again in a moment".into();
    }
    let state = procfs::thread_state(pid, tid).map_or("?".into(), |c| c.to_string());
    if state == "R" {
        return "it is runnable but was not scheduled in time (a loaded machine); try again in \
                a moment"
            .into();
    }
    let wchan =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default();
    let wchan = if wchan.is_empty() || wchan == "0" {
        "unknown".into()
    } else {
        wchan
    };
    format!(
        "it is in state {state}, waiting in the kernel in {wchan} (a hung file system or \
         device, a core dump); try again in a moment"
    )
}

/// The cgroup file systems mounted here (v2, and v1 hierarchies), read once for every process a
/// batch of checks looks at.
pub struct CgroupMounts(Vec<procfs::Mount>);

impl CgroupMounts {
    pub fn read() -> CgroupMounts {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        CgroupMounts(
            procfs::parse_mountinfo(&text)
                .into_iter()
                .filter(|m| m.fstype == "cgroup2" || m.fstype == "cgroup")
                .collect(),
        )
    }
}

/// The cgroup that holds `pid` frozen (or freezing), described for the refusal; None when it
/// runs freely or no freezer is mounted.
pub fn frozen_by(pid: i32, mounts: &CgroupMounts) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mounts = &mounts.0;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
                if let Some(which) = v2_frozen(Path::new(&m.mount_point), path) {
                    return Some(format!("cgroup v2 {which}"));
                }
            }
        } else if controllers.split(',').any(|c| c == "freezer") {
            let freezer = mounts.iter().filter(|m| {
                m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "freezer")
            });
            for m in freezer {
                let dir = join(Path::new(&m.mount_point), path);
                // The root cgroup has no freezer.state: it cannot be frozen.
                let Ok(state) = std::fs::read_to_string(dir.join("freezer.state")) else {
                    continue;
                };
                let state = state.trim();
                if state != "THAWED" {
                    return Some(format!("the cgroup v1 freezer {} ({state})", dir.display()));
                }
            }
        }
    }
    None
}

fn join(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

/// A v2 cgroup (the process's own or an ancestor) asked to freeze, or reported frozen.
fn v2_frozen(mount: &Path, cgroup: &str) -> Option<String> {
    let own = join(mount, cgroup);
    if !own.join("cgroup.procs").exists() {
        return None;
    }
    let events = std::fs::read_to_string(own.join("cgroup.events")).unwrap_or_default();
    if events.lines().any(|l| l.trim() == "frozen 1") {
        return Some(own.display().to_string());
    }
    let mut dir = Some(own.as_path());
    while let Some(d) = dir {
        if !d.starts_with(mount) {
            break;
        }
        let freeze = std::fs::read_to_string(d.join("cgroup.freeze")).unwrap_or_default();
        if freeze.trim() == "1" {
            return Some(d.display().to_string());
        }
        dir = d.parent();
    }
    None
}

/// The refusal for a frozen target, with the file that thaws it: `cgroup.freeze` for v2,
/// `freezer.state` for the v1 freezer (`by` as `frozen_by` says it).
pub fn frozen_message(pid: i32, name: &str, by: &str) -> String {
    format!(
        "pid {pid} ({name}) is frozen by {by}: thaw it ({}) and run again; nothing was changed",
        thaw_hint(by)
    )
}

/// How to thaw what `frozen_by` named.
pub fn thaw_hint(by: &str) -> String {
    if let Some(rest) = by.strip_prefix("the cgroup v1 freezer ") {
        let dir = rest.rsplit_once(" (").map_or(rest, |(d, _)| d);
        format!("docker unpause / systemctl thaw, or echo THAWED > {dir}/freezer.state")
    } else {
        let dir = by.strip_prefix("cgroup v2 ").unwrap_or(by);
        format!("docker unpause / systemctl thaw, or echo 0 > {dir}/cgroup.freeze")
    }
}

/// Why ptyreap cannot release fds in `pid` whatever the plan (a frozen cgroup, strict seccomp),
/// or None. Asked before any plan is shown, and again before the target is touched.
pub fn release_refusal(pid: i32, name: &str, mounts: &CgroupMounts) -> Option<String> {
    if let Some(by) = frozen_by(pid, mounts) {
        return Some(frozen_message(pid, name, &by));
    }
    let strict = strict_seccomp_threads(pid);
    if !strict.is_empty() {
        let tids: Vec<String> = strict.iter().map(|t| t.to_string()).collect();
        return Some(format!(
            "pid {pid} ({name}): thread {} runs in strict seccomp mode, where any call but \
             read, write and exit kills the process: ptyreap cannot release its fds (quit the \
             app to free them); nothing was changed",
            tids.join(", ")
        ));
    }
    None
}

/// Threads of `pid` in strict seccomp mode.
pub fn strict_seccomp_threads(pid: i32) -> Vec<i32> {
    procfs::list_tasks(pid)
        .unwrap_or_default()
        .into_iter()
        .filter(|&tid| super::seccomp::mode(pid, tid).ok() == Some(super::seccomp::Mode::Strict))
        .collect()
}

/// Whether `a` and `b` use the same fd table; None when kcmp cannot tell.
pub fn share_fd_table(a: i32, b: i32) -> Option<bool> {
    super::kcmp::same(a, b, super::kcmp::KCMP_FILES, 0, 0).ok()
}

/// Other processes that share the target's fd table: only processes that hold one of its
/// masters can (they hold them all), so only those are compared.
pub fn fd_table_sharers(pid: i32, snapshot: &Snapshot) -> Vec<(i32, String)> {
    let Some(own) = snapshot.process(pid) else {
        return Vec::new();
    };
    let Some(first) = own.masters.iter().find_map(|m| m.pty) else {
        return Vec::new();
    };
    let mut out: Vec<(i32, String)> = snapshot
        .master_holders(first)
        .into_iter()
        .filter(|h| h.pid != pid && share_fd_table(pid, h.pid) == Some(true))
        .map(|h| (h.pid, h.name))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The refusal for a target whose fd table another process shares.
pub fn shared_table_message(pid: i32, name: &str, sharers: &[(i32, String)]) -> String {
    let who: Vec<String> = sharers.iter().map(|(p, n)| format!("{p} ({n})")).collect();
    format!(
        "pid {pid} ({name}) shares its fd table with {} (clone with CLONE_FILES): a close there \
         would close the fd under that process too, which ptyreap does not stop; nothing was \
         changed",
        who.join(", ")
    )
}

/// The pid of `pidfd`'s process as the /proc we read sees it (`Pid:` in the pidfd's fdinfo is
/// given in the namespace of the procfs it is read through); None when the kernel does not say.
pub fn pid_seen_by_proc(pidfd: &super::pidfd::Pidfd) -> Option<i32> {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = pidfd.as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    procfs::status_field(&info, "Pid")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_own_process_is_not_frozen_and_has_no_strict_threads() {
        let me = std::process::id() as i32;
        assert_eq!(frozen_by(me, &CgroupMounts::read()), None);
        assert!(strict_seccomp_threads(me).is_empty());
        let pidfd = super::super::pidfd::Pidfd::open(me).unwrap();
        assert_eq!(pid_seen_by_proc(&pidfd), Some(me));
    }

    #[test]
    fn preflight_messages_name_the_cause_and_the_way_out() {
        let m = frozen_message(7, "app", "cgroup v2 /sys/fs/cgroup/x");
        assert!(
            m.contains("frozen by cgroup v2 /sys/fs/cgroup/x")
                && m.contains("echo 0 > /sys/fs/cgroup/x/cgroup.freeze"),
            "{m}"
        );
        let v1 = frozen_message(
            7,
            "app",
            "the cgroup v1 freezer /sys/fs/cgroup/freezer/f (FROZEN)",
        );
        assert!(
            v1.contains("echo THAWED > /sys/fs/cgroup/freezer/f/freezer.state")
                && !v1.contains("cgroup.freeze"),
            "{v1}"
        );
        let s = shared_table_message(7, "app", &[(8, "helper".into())]);
        assert!(s.contains("8 (helper)") && s.contains("CLONE_FILES"), "{s}");
    }

    #[test]
    fn preflight_fd_table_sharing() {
        let me = std::process::id() as i32;
        assert_eq!(share_fd_table(me, me), Some(true));
        // SAFETY: getppid cannot fail.
        let parent = unsafe { libc::getppid() };
        if parent > 1 {
            assert_eq!(share_fd_table(me, parent), Some(false));
        }
    }
}
