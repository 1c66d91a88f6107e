//! The whole OS surface, the same on every system:
//! - `snapshot()`: every PTY fd on the machine and the system's usage (the census reads it);
//! - `open_target(pid)`: a pid pinned for inspection, or one plain error;
//! - `processes_named(name)`: pids by comm or executable name;
//! - `inspect(target, snapshot)`: the evidence for each of the target's master fds;
//! - `release_refusals(processes, snapshot, as_root)`: why fds cannot be released in each at all (code signing, a frozen
//!   cgroup, ...), known before any plan is shown, so the plan offers nothing there;
//! - `reap(target, rows)`: stop the target, re-verify each planned fd, release it by its method,
//!   restore the target, and fill each row's `result`; returns how long the target was stopped.
//!
//! Everything above this module is plain data and pure logic; everything below it is one module
//! per OS.

pub mod checks;
#[cfg(unix)]
pub mod deferral;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub use linux::{
    inspect, observe, open_target, process_info, processes_named, reap, release_refusals, snapshot,
    snapshot_for, start_time, usage_now, Target,
};

// The macOS backend; its layouts and pure logic also build (and are tested) everywhere.
#[cfg(any(target_os = "macos", test))]
pub mod macos;
#[cfg(target_os = "macos")]
pub use macos::{
    inspect, open_target, process_info, processes_named, reap, release_refusals, resume,
    run_if_guardian, snapshot, start_time, Target,
};

/// `ptyreap resume` is macOS's: there a suspension outlives the process that made it. On Linux
/// the kernel ends a tracer's stops when the tracer dies, so nothing of ptyreap's can be left.
#[cfg(not(target_os = "macos"))]
pub fn resume(_pid: i32) -> anyhow::Result<crate::exit_code::ExitCode> {
    Err(crate::exit_code::UserError::usage(
        "`ptyreap resume` is for macOS, where an app's suspended threads stay suspended if ptyreap \
         and its guardian die; on this system the kernel resumes a target when ptyreap's tracer \
         ends, so there is nothing to resume",
    )
    .into())
}

/// The macOS guardian is ptyreap run under another name; elsewhere there is none.
#[cfg(not(target_os = "macos"))]
pub fn run_if_guardian() {}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod unsupported;
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub use unsupported::{inspect, open_target, processes_named, reap, snapshot, Target};

/// Nothing is known up front where there is no backend (reap refuses on its own).
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn release_refusals(
    processes: &[(i32, &str)],
    _snapshot: &crate::model::Snapshot,
    _as_root: bool,
) -> Vec<Option<String>> {
    vec![None; processes.len()]
}

/// Only Linux watches poll()/select() calls over time; macOS reads its waiters from each thread's
/// saved state at the moment of the look.
#[cfg(not(target_os = "linux"))]
pub fn observe(
    _snapshot: &mut crate::model::Snapshot,
    _pids: &[i32],
    _window: std::time::Duration,
) {
}

/// A snapshot that also lists the PTY namespaces `pids` live in (only Linux has several).
#[cfg(not(target_os = "linux"))]
pub fn snapshot_for(_pids: &[i32]) -> anyhow::Result<crate::model::Snapshot> {
    snapshot()
}

/// The system's usage now (a fresh snapshot where the backend has no cheaper way).
#[cfg(not(target_os = "linux"))]
pub fn usage_now(
    _recent: &crate::model::Snapshot,
    pids: &[i32],
) -> anyhow::Result<crate::model::SystemUsage> {
    Ok(snapshot_for(pids)?.system)
}

/// Where the backend has no richer source: the pid's name only, via the census.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn process_info(_pid: i32) -> crate::model::ProcessInfo {
    crate::model::ProcessInfo::default()
}

/// The process's start time in the backend's own unit (identity with the pid); None if unknown.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn start_time(_pid: i32) -> Option<u64> {
    None
}
