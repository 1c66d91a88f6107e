//! `ptyreap rescue`: what to run when no terminal opens because every PTY is taken. It needs no
//! terminal and never prompts (over `ssh -T`, `systemd-run --pipe`, or macOS's `osascript`
//! dialog), so it is one command of the installed binary rather than a script in a checkout.
//!
//! The steps, each printed: the census; a release of every orphaned master copy it may free
//! (the same run as `ptyreap --all --yes`, or `--pid` for each named process: the verdicts,
//! the re-verification and every refusal are the reaper's own); the census again; and only if
//! the system-wide limit is still reached, a raise of the limit until reboot. A devpts instance
//! at its own `max=` cannot be raised from here: the last line says how.

use crate::cli::{Cli, RescueArgs};
use crate::exit_code::{report, ExitCode, UserError};
use crate::model::SystemUsage;
use crate::render::{self, Style};
use crate::{census, output, sys};
use anyhow::Result;
use clap::Parser;

pub fn run(args: &RescueArgs) -> Result<ExitCode> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "ptyreap".into());
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(UserError::failure(not_root(&exe)).into());
    }
    let style = Style::detect(false);
    output::println("== before");
    census_table(&style)?;
    let min_idle = format!("{}s", args.min_idle.as_secs());
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    if args.pids.is_empty() {
        runs.push((
            "freeing every PTY it can, machine-wide (ptyreap --all)".into(),
            vec!["--all".into()],
        ));
    }
    for pid in &args.pids {
        runs.push((
            format!("reaping the orphaned masters of pid {pid}"),
            vec!["--pid".into(), pid.to_string()],
        ));
    }
    for (what, target) in runs {
        output::println(&format!("== {what}"));
        let code = reap(&target, &min_idle);
        output::println(&format!("(ptyreap exited {})", code as i32));
    }
    output::println("== after");
    let mut after = census_table(&style)?;
    if after.globally_full() && !args.no_raise {
        match raised_limit(&after) {
            Some(new) => {
                output::println(&format!(
                    "== the limit itself is reached: raising it from {} to {new} (until reboot)",
                    after.limit
                ));
                let code = crate::limit::run(Some(new), false).unwrap_or_else(|e| report(&e));
                output::println(&format!("(ptyreap limit exited {})", code as i32));
                after = census_table(&style)?;
            }
            None => output::println(&format!(
                "== the limit is already at its maximum ({}): only quitting a holder frees PTYs",
                after.limit
            )),
        }
    }
    if after.globally_full() || after.an_instance_full() {
        let mut why = "PTYs are still exhausted (see FULL above); quit the biggest holder to \
                       free the rest"
            .to_string();
        if !after.globally_full() {
            why += "; a devpts instance is at its own max= mount option: remount it with a \
                    larger one (mount -o remount,max=N MOUNT)";
        }
        if cfg!(target_os = "macos") {
            why += &format!(
                "; without a terminal, run it again from a dialog: {}",
                osascript(&exe)
            );
        }
        return Err(UserError::failure(why).into());
    }
    output::println("PTYs are available again");
    Ok(ExitCode::Success)
}

/// The census as the plain command prints it; returns the system's usage.
fn census_table(style: &Style) -> Result<SystemUsage> {
    let snapshot = sys::snapshot()?;
    let census = census::census(&snapshot);
    output::print(&render::table::census(&census, style));
    Ok(census.system)
}

/// One reaper run, as `ptyreap TARGET --min-idle DUR --yes` would do it, with its errors printed
/// once the way ptyreap prints them; its exit code.
fn reap(target: &[String], min_idle: &str) -> ExitCode {
    let mut argv: Vec<String> = vec!["ptyreap".into()];
    argv.extend(target.iter().cloned());
    argv.extend(["--min-idle".into(), min_idle.into(), "--yes".into()]);
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            crate::output::message(format_args!(
                "{}",
                e.to_string().lines().next().unwrap_or_default()
            ));
            return ExitCode::Usage;
        }
    };
    crate::app::run(&cli).unwrap_or_else(|e| report(&e))
}

/// The limit to raise to: macOS's hard cap; on Linux twice the limit, and at least 1024 usable
/// beyond what is in use (past the reserve of the initial devpts instance). None when that is no
/// raise.
fn raised_limit(sys: &SystemUsage) -> Option<u64> {
    #[cfg(target_os = "macos")]
    let new = crate::sys::macos::preflight::PTMX_MAX_HARD;
    #[cfg(not(target_os = "macos"))]
    let new = (sys.limit * 2).max(sys.in_use + sys.reserve.unwrap_or(0) + 1024);
    (new > sys.limit).then_some(new)
}

fn not_root(exe: &str) -> String {
    if cfg!(target_os = "macos") {
        format!(
            "rescue needs root to release other processes' PTYs; sudo may itself fail without a \
             PTY, so ask for the password in a dialog instead: {}",
            osascript(exe)
        )
    } else {
        format!(
            "rescue needs root to release other processes' PTYs: sudo {exe} rescue (if sudo \
             cannot get a PTY: ssh -T root@localhost {exe} rescue, or su -c '{exe} rescue')"
        )
    }
}

fn osascript(exe: &str) -> String {
    format!("osascript -e 'do shell script \"{exe} rescue\" with administrator privileges'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(in_use: u64, limit: u64, reserve: Option<u64>) -> SystemUsage {
        SystemUsage {
            in_use,
            limit,
            limit_source: "test".into(),
            reserve,
            instances: None,
            unreadable_processes: 0,
            exhausted_in_s: None,
            exhausted_first: None,
            leak_per_hour: None,
        }
    }

    #[test]
    #[cfg(not(target_os = "macos"))]
    fn the_limit_is_doubled_with_1024_free_at_least() {
        // twice the limit when that leaves room
        assert_eq!(raised_limit(&usage(4096, 4096, Some(1024))), Some(8192));
        // else enough for 1024 more beyond what is used and reserved
        assert_eq!(raised_limit(&usage(300, 300, Some(1024))), Some(2348));
        assert!(usage(3072, 4096, Some(1024)).globally_full());
        assert!(!usage(3071, 4096, Some(1024)).globally_full());
    }
}
