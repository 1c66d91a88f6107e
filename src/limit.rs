//! `ptyreap limit`: the PTY limit, its use and its source; `limit --set N` raises (or lowers) it
//! until reboot, and says how to keep it. When PTYs have run out, raising the limit is the one way
//! out that needs nothing of the app (on macOS the most used one: notarized apps refuse their
//! task port even to root).
//!
//! Linux: `/proc/sys/kernel/pty/max` (the kernel takes 1 to 1,048,576: NR_UNIX98_PTY_MAX);
//! a devpts instance's own `max=` is a mount option and is not changed here. macOS:
//! `kern.tty.ptmx_max`, which xnu caps at 999 (larger values fail with EINVAL).

use crate::exit_code::{ExitCode, UserError};
use crate::output;
use anyhow::Result;

/// The range the OS accepts, and where the value lives.
#[cfg(target_os = "macos")]
const RANGE: (u64, u64) = (1, 999);
#[cfg(not(target_os = "macos"))]
const RANGE: (u64, u64) = (1, 1 << 20);

#[cfg(target_os = "macos")]
const SOURCE: &str = "kern.tty.ptmx_max";
#[cfg(not(target_os = "macos"))]
const SOURCE: &str = "/proc/sys/kernel/pty/max";

/// Whether `n` may be set, or the plain reason it may not.
pub fn check(n: u64) -> Result<(), String> {
    let (lo, hi) = RANGE;
    if n < lo {
        return Err(format!("{n} PTYs: the limit must be at least {lo}"));
    }
    if n > hi {
        return Err(if cfg!(target_os = "macos") {
            format!("{n} PTYs: macOS allows at most {hi} ({SOURCE}'s hard cap in xnu)")
        } else {
            format!("{n} PTYs: the kernel allows at most {hi}")
        });
    }
    Ok(())
}

/// How to make `n` last past a reboot.
pub fn persist_hint(n: u64) -> String {
    if cfg!(target_os = "macos") {
        format!(
            "it lasts until reboot; to keep it, a LaunchDaemon that runs `sysctl -w \
             kern.tty.ptmx_max={n}` at boot (RunAtLoad)"
        )
    } else {
        format!(
            "it lasts until reboot; to keep it: echo 'kernel.pty.max = {n}' > \
             /etc/sysctl.d/90-ptyreap.conf"
        )
    }
}

pub fn run(set: Option<u64>, json: bool) -> Result<ExitCode> {
    if let Some(n) = set {
        check(n).map_err(|why| UserError::usage(format!("limit --set {why}")))?;
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(UserError::failure(format!(
                "setting the PTY limit needs root: sudo ptyreap limit --set {n} (nothing was \
                 changed)"
            ))
            .into());
        }
        let was = read_limit()?;
        write_limit(n)
            .map_err(|e| UserError::failure(format!("cannot set {SOURCE} to {n}: {e}")))?;
        let now = read_limit()?;
        if json {
            output::println(
                &serde_json::json!({"limit": now, "was": was, "limit_source": SOURCE}).to_string(),
            );
        } else {
            output::println(&format!(
                "PTY limit set to {now} (was {was}, {SOURCE}); {}",
                persist_hint(now)
            ));
        }
        return Ok(ExitCode::Success);
    }
    let snapshot = crate::sys::snapshot()?;
    let sys = &snapshot.system;
    if json {
        output::println(&serde_json::to_string(sys)?);
    } else {
        output::print(&crate::render::table::system(sys));
    }
    Ok(ExitCode::Success)
}

#[cfg(not(target_os = "macos"))]
fn read_limit() -> Result<u64> {
    let text = std::fs::read_to_string(SOURCE)?;
    Ok(text.trim().parse()?)
}

#[cfg(not(target_os = "macos"))]
fn write_limit(n: u64) -> std::io::Result<()> {
    std::fs::write(SOURCE, format!("{n}\n"))
}

#[cfg(target_os = "macos")]
fn read_limit() -> Result<u64> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>();
    // SAFETY: sysctlbyname with a NUL-terminated name and an int-sized out buffer.
    let r = unsafe {
        libc::sysctlbyname(
            c"kern.tty.ptmx_max".as_ptr(),
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(value as u64)
}

#[cfg(target_os = "macos")]
fn write_limit(n: u64) -> std::io::Result<()> {
    let mut value = n as libc::c_int;
    // SAFETY: sysctlbyname with a NUL-terminated name and an int-sized new value.
    let r = unsafe {
        libc::sysctlbyname(
            c"kern.tty.ptmx_max".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&mut value as *mut libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_values_out_of_range_are_refused_plainly() {
        assert!(check(0).unwrap_err().contains("at least 1"));
        assert!(check(RANGE.1 + 1).is_err());
        assert!(check(RANGE.1).is_ok() && check(4096.min(RANGE.1)).is_ok());
        assert!(persist_hint(8192).contains("until reboot"));
    }
}
