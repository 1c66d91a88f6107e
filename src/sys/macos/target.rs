//! Turning a pid into a target we may inspect. macOS has no pidfd: a target is pinned by its pid
//! and start time (PROC_PIDTBSDINFO), re-checked before anything is changed in it.

use super::ffi;
use super::libproc;
use super::preflight::{self, Facts, Machine};
use super::refusals::{Arch, TargetCode};
use crate::exit_code::UserError;
use crate::model::Snapshot;
use crate::output::escaped;

#[derive(Debug)]
pub struct Target {
    pub pid: i32,
    pub name: String,
    /// Start time (seconds, microseconds): with the pid, the process's identity.
    pub start: (u64, u64),
}

impl Target {
    /// Whether `pid` is still this process (not exited, not reused).
    pub fn still_alive(&self) -> bool {
        libproc::bsd_info(self.pid).is_ok_and(|i| {
            (i.pbi_start_tvsec, i.pbi_start_tvusec) == self.start && i.pbi_status != ffi::SZOMB
        })
    }
}

impl Target {
    /// Its task port, checked to still be this process (a pid may be reused meanwhile); a
    /// refusal explained (`refusals::task_port_refusal`), a process gone said so.
    pub fn task_port(&self) -> Result<super::task::ports::Port, UserError> {
        use super::{ffi, refusals};
        let task = match super::task::ports::task_for_pid(self.pid) {
            Ok(task) => task,
            Err(_) if !self.still_alive() => return Err(no_such(self.pid)),
            Err(kr) => {
                let exe = std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "ptyreap".into());
                let flags = libproc::codesign_flags(self.pid).unwrap_or(0);
                let ctx = refusals::RefusalContext {
                    pid: self.pid,
                    name: &self.name,
                    exe: &exe,
                    platform_binary: flags & ffi::CS_PLATFORM_BINARY != 0,
                };
                let why = refusals::task_port_refusal(kr, is_root(), &ctx)
                    .unwrap_or_else(|| ffi::kern_name(kr));
                return Err(UserError::failure(why));
            }
        };
        if super::task::ports::pid_of(&task) != Some(self.pid) || !self.still_alive() {
            return Err(no_such(self.pid));
        }
        Ok(task)
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn no_such(pid: i32) -> UserError {
    crate::sys::checks::no_such_process(pid)
}

pub fn not_permitted(pid: i32, name: &str) -> UserError {
    let hint = if is_root() {
        "even as root: a sandbox or security policy denies it"
    } else {
        "it belongs to another user: run it as root (sudo ptyreap ...)"
    };
    UserError::failure(format!(
        "not permitted to inspect pid {pid} ({name}): {hint}"
    ))
}

pub fn open(pid: i32) -> Result<Target, UserError> {
    crate::sys::checks::plausible_pid(pid)?;
    let info = match libproc::bsd_info(pid) {
        Ok(info) => info,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let name = libproc::exe_path(pid)
                .map_or_else(|| "?".into(), |p| escaped(&super::scan::file_name(&p)));
            return Err(not_permitted(pid, &name));
        }
        Err(_) => return Err(no_such(pid)),
    };
    // printed as itself (the name matched in `processes_named` is the raw one)
    let name = escaped(&info.name());
    if info.pbi_status == ffi::SZOMB {
        return Err(crate::sys::checks::zombie(pid, &name, info.pbi_ppid));
    }
    if let Err(e) = libproc::list_fds(pid) {
        return Err(match e.raw_os_error() {
            Some(libc::ESRCH) => no_such(pid),
            _ => not_permitted(pid, &name),
        });
    }
    Ok(Target {
        pid,
        name,
        start: (info.pbi_start_tvsec, info.pbi_start_tvusec),
    })
}

/// Every process (but ourselves) whose name (comm or registered name), or whose executable's
/// file name, is `name`.
pub fn processes_named(name: &str) -> Vec<i32> {
    let own = std::process::id() as i32;
    let Ok(pids) = libproc::all_pids() else {
        return Vec::new();
    };
    pids.into_iter()
        .filter(|&pid| pid != own)
        .filter(|&pid| {
            let by_info = libproc::bsd_info(pid).is_ok_and(|i| {
                i.name() == name || {
                    let comm = i.pbi_comm;
                    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
                    &comm[..end] == name.as_bytes()
                }
            });
            by_info || libproc::exe_path(pid).is_some_and(|p| super::scan::file_name(&p) == name)
        })
        .collect()
}

extern "C" {
    // libsystem_kernel (bsd/sys/csr.h): 0 when the SIP configuration allows `mask`.
    fn csr_check(mask: u32) -> i32;
}

/// bsd/sys/csr.h
const CSR_ALLOW_TASK_FOR_PID: u32 = 1 << 2;

/// What decides whether fds can be released in `pid`, read from outside (preflight.rs).
fn facts(pid: i32) -> Facts {
    let info = libproc::bsd_info(pid).ok();
    let code = libproc::arch_info(pid)
        .ok()
        .zip(info)
        .map(|(arch, info)| TargetCode {
            cputype: arch.p_cputype,
            cpusubtype: arch.p_cpusubtype,
            rosetta: info.pbi_flags & ffi::PROC_FLAG_ROSETTA != 0,
            self_translated: libproc::self_translated(),
        });
    Facts {
        is_root: is_root(),
        cs_flags: libproc::codesign_flags(pid),
        // SAFETY: a plain syscall wrapper taking an integer mask.
        sip_restricts_debugging: unsafe { csr_check(CSR_ALLOW_TASK_FOR_PID) } != 0,
        browser_engine: libproc::entitlements(pid).map(|b| preflight::names_browser_engine(&b)),
        code,
    }
}

/// For each process (pid, name): why fds cannot be released in it, with the ways out; None when
/// nothing known up front stands in the way. `as_root`: judged as root would be (the census
/// speaks of the processes, not of who runs it).
pub fn release_refusals(
    processes: &[(i32, &str)],
    snapshot: &Snapshot,
    as_root: bool,
) -> Vec<Option<String>> {
    processes
        .iter()
        .map(|&(pid, name)| {
            let mut facts = facts(pid);
            facts.is_root |= as_root;
            let refusal = preflight::decide(&facts, Arch::ours(), pid, name)?;
            Some(refusal_message(&refusal, pid, name, Some(snapshot)))
        })
        .collect()
}

/// Looked at again just before the target is touched (the plan may be minutes old); the numbers
/// for the ways out are read only when refused.
pub fn refused_now(target: &Target) -> Option<String> {
    let (pid, name) = (target.pid, &target.name);
    let refusal = preflight::decide(&facts(pid), Arch::ours(), pid, name)?;
    Some(refusal_message(
        &refusal,
        pid,
        name,
        super::scan::snapshot().ok().as_ref(),
    ))
}

fn refusal_message(
    refusal: &preflight::Refusal,
    pid: i32,
    name: &str,
    snapshot: Option<&Snapshot>,
) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "ptyreap".into());
    let machine = Machine {
        limit: snapshot.map_or(super::preflight::PTMX_MAX_HARD, |s| s.system.limit),
        in_use: snapshot.map_or(0, |s| s.system.in_use),
        masters: snapshot
            .and_then(|s| s.process(pid))
            .map_or(0, |p| p.masters.len()),
        exe: &exe,
    };
    preflight::message(refusal, pid, name, &machine)
}
