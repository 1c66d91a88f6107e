//! Linux backend: procfs for the census, pidfd copies for the PTY ioctls, ptrace for reaping.

pub mod arch;
mod child;
pub mod gadget;
mod hangup;
mod info;
mod inspect;
pub mod kcmp;
mod observe;
pub mod pidfd;
pub mod preflight;
pub mod procfs;
pub mod ptrace;
pub mod pty;
mod reap;
pub mod scan;
pub mod seccomp;
mod system;
mod target;
mod waits;
pub mod watchers;

pub use info::{process_info, start_time};
pub use inspect::inspect;
pub use reap::reap;
pub use target::{open as open_target, processes_named, Target};

/// For each process (pid, name): why fds cannot be released in it, known before any plan is
/// shown; None when nothing known up front stands in the way (see `preflight.rs`). The cgroup
/// mounts are read once for the batch. (`as_root` changes nothing here: ptrace's own permission
/// is explained when attaching.)
pub fn release_refusals(
    processes: &[(i32, &str)],
    _snapshot: &Snapshot,
    _as_root: bool,
) -> Vec<Option<String>> {
    let mounts = preflight::CgroupMounts::read();
    processes
        .iter()
        .map(|&(pid, name)| preflight::release_refusal(pid, name, &mounts))
        .collect()
}

use crate::model::Snapshot;

/// Every PTY fd on the machine and the system's usage.
pub fn snapshot() -> anyhow::Result<Snapshot> {
    snapshot_for(&[])
}

/// A snapshot whose system usage also lists the devpts instances mounted where `pids` live.
pub fn snapshot_for(pids: &[i32]) -> anyhow::Result<Snapshot> {
    let (processes, visibility) = scan::scan()?;
    let mut system = system::usage(&processes, pids);
    system.unreadable_processes = visibility.unreadable.len();
    Ok(Snapshot {
        processes,
        system,
        visibility,
        polls: Default::default(),
    })
}

/// Watches the poll()/select() calls of `pids` for `window` (observe.rs) and keeps what was seen
/// in the snapshot, for `inspect` to join.
pub fn observe(snapshot: &mut Snapshot, pids: &[i32], window: std::time::Duration) {
    let targets = pids
        .iter()
        .map(|&pid| {
            let masters = snapshot
                .process(pid)
                .map(|p| p.masters.iter().map(|m| m.fd).collect())
                .unwrap_or_default();
            (pid, masters)
        })
        .collect();
    snapshot.polls = observe::observe(&targets, window);
}

/// The system's usage now, for the devpts instances a recent snapshot saw (and those where
/// `pids` live), without scanning every process again.
pub fn usage_now(recent: &Snapshot, pids: &[i32]) -> anyhow::Result<crate::model::SystemUsage> {
    let mut system = system::usage(&recent.processes, pids);
    system.unreadable_processes = recent.visibility.unreadable.len();
    Ok(system)
}
