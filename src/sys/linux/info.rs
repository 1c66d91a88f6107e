//! Facts about a process for the bug report: executable, command line, start time (the app's
//! identity is read from its files by identity.rs).

use crate::model::ProcessInfo;

pub fn start_time(pid: i32) -> Option<u64> {
    super::procfs::start_time(pid).ok()
}

pub fn process_info(pid: i32) -> ProcessInfo {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    ProcessInfo {
        exe,
        cmdline,
        started_at: started_at(pid),
        native_modules: std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map(|maps| super::procfs::parse_maps_paths(&maps, ".node"))
            .unwrap_or_default(),
    }
}

/// When a process started, in seconds since the epoch with fraction, from its start time in
/// clock ticks since boot (field 22 of /proc/PID/stat): boot is now on the real-time clock less
/// now on the boot-time clock, to the nanosecond (`btime` of /proc/stat is whole seconds).
pub fn started_at_precise(ticks: u64) -> Option<f64> {
    let now = |clock| {
        // SAFETY: clock_gettime writes one timespec.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::clock_gettime(clock, &mut ts) } == 0;
        ok.then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    };
    let boot = now(libc::CLOCK_REALTIME)? - now(libc::CLOCK_BOOTTIME)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| boot + ticks as f64 / hz as f64)
}

/// Start time: boot time (`btime` of /proc/stat) + field 22 of /proc/PID/stat in clock ticks.
fn started_at(pid: i32) -> Option<i64> {
    let ticks = start_time(pid)?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + (ticks / hz as u64) as i64)
}
