//! `ptyreap report --pid N [--output FILE]`: the snapshot an upstream maintainer wants in a bug
//! report about a PTY leak — the process, its executable and version if known, uptime, every PTY
//! master with verdict and evidence, the system's usage, OS and kernel versions — as one JSON
//! document. Written safely: a new file only (never overwritten), mode 0600, and a symlink
//! planted at the path is refused rather than followed (this runs as root).

use crate::cli::ReportArgs;
use crate::clock::now;
use crate::duration::rfc3339;
use crate::exit_code::{ExitCode, UserError};
use crate::model::Verdict;
use crate::{census, plan, render, sys};
use serde_json::json;
use std::path::Path;

/// What upstream needs to know about the app: which app and version, its Electron, the
/// node-pty it ships and whether that version is known to leak here (identity.rs, leaks.rs).
fn app_facts(id: &crate::identity::Identity) -> serde_json::Value {
    json!({
        "id": id.id,
        "version": id.version,
        "electron": id.electron,
        "node_pty": id.node_pty.as_ref().map(|(version, found_in)| {
            json!({"version": version, "found_in": found_in})
        }),
        "known_leaks": id.node_pty.as_ref().map_or(Vec::new(), |(v, _)| {
            crate::leaks::known_leaks(v, crate::leaks::this_os())
        }),
    })
}

pub fn run(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let target = sys::open_target(args.pid)?;
    let mut snapshot = sys::snapshot()?;
    sys::observe(&mut snapshot, &[args.pid], args.observe);
    // judged as a one-shot run with the defaults would
    let min_idle = crate::cli::default_min_idle();
    let policy = crate::cli::policy(min_idle, None);
    let report =
        crate::pipeline::judge_target(&target, &snapshot, &policy, &plan::Choices::default())?;
    let info = sys::process_info(args.pid);
    let identity = crate::identity::identify(
        info.exe.as_deref().map(Path::new),
        &info.cmdline,
        &info.native_modules,
    );
    let generated = now();
    let counts: serde_json::Map<String, serde_json::Value> = [
        Verdict::Orphaned,
        Verdict::Unread,
        Verdict::Fresh,
        Verdict::Tracked,
        Verdict::Merged,
        Verdict::Live,
        Verdict::Stale,
        Verdict::Unknown,
    ]
    .iter()
    .map(|&v| {
        let n = report
            .masters
            .iter()
            .filter(|r| r.judgement.verdict == v)
            .count();
        (v.as_str().to_string(), json!(n))
    })
    .collect();
    let census = census::census(&snapshot);
    let masters = render::json::masters(&report.masters);
    let doc = json!({
        "report_version": 1,
        "generated_at": rfc3339(generated),
        "ptyreap_version": env!("CARGO_PKG_VERSION"),
        "process": {
            "pid": target.pid,
            "name": target.name,
            "exe": info.exe,
            "cmdline": info.cmdline,
            "version": identity.version,
            "started_at": info.started_at.map(rfc3339),
            "uptime_s": info.started_at.map(|s| (generated - s).max(0)),
        },
        "summary": {
            "masters": masters.len(),
            "verdicts": counts,
        },
        "app": app_facts(&identity),
        "masters": masters,
        "min_idle_s": min_idle.as_secs(),
        "system": snapshot.system,
        "top_holders": census.processes.iter().take(10).collect::<Vec<_>>(),
        "os": os_info(),
    });
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    match &args.output {
        None => crate::output::print(&text),
        Some(path) => {
            crate::new_file::write(path, text.as_bytes()).map_err(|e| write_error(path, e))?;
            crate::output::message(format_args!("report written to {}", path.display()));
        }
    }
    Ok(ExitCode::Success)
}

fn write_error(path: &Path, e: std::io::Error) -> UserError {
    let p = path.display();
    UserError::failure(match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!("{p} already exists: ptyreap never overwrites a file; choose a new name")
        }
        _ if e.raw_os_error() == Some(libc::ELOOP) => {
            format!("{p} is a symbolic link: refusing to follow it; choose another path")
        }
        _ => format!("cannot write the report to {p}: {e}"),
    })
}

fn os_info() -> serde_json::Value {
    // SAFETY: zeroed utsname is a valid out-buffer for uname.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return serde_json::Value::Null;
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            // c_char is i8 on x86_64 and u8 on aarch64
            .map(|&c| c.to_ne_bytes()[0])
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        });
    json!({
        "sysname": field(&u.sysname),
        "release": field(&u.release),
        "version": field(&u.version),
        "machine": field(&u.machine),
        "distribution": pretty,
    })
}
