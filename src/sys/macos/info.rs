//! Facts about a process for the bug report: executable, start time and the native modules it
//! has mapped (the app's identity is read from its bundle's files by identity.rs).

use super::libproc;
use crate::model::ProcessInfo;

/// Start time in microseconds since the epoch: with the pid, it names one process for good.
pub fn start_time(pid: i32) -> Option<u64> {
    let info = libproc::bsd_info(pid).ok()?;
    Some(info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec)
}

pub fn process_info(pid: i32) -> ProcessInfo {
    let exe = libproc::exe_path(pid);
    let started_at = libproc::bsd_info(pid)
        .ok()
        .map(|i| i.pbi_start_tvsec as i64);
    ProcessInfo {
        exe,
        // KERN_PROCARGS2 would give it, but only for our own user's processes; left out
        cmdline: Vec::new(),
        started_at,
        native_modules: libproc::mapped_paths(pid, ".node"),
    }
}
