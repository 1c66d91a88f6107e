//! ptyreap: find and release leaked PTY masters.
//!
//! Data flows one way: arguments → targets → evidence (OS) → verdicts (pure) → plan →
//! confirmation → reap (OS) → outcomes → output. `main` parses, runs, prints an error once, and
//! returns the exit code.

mod census;
mod cli;
mod duration;
mod exit_code;
mod model;
mod plan;
mod render;
mod sys;
mod verdict;

use anyhow::Result;
use clap::Parser;
use cli::Cli;
use exit_code::{ExitCode, UserError};
use model::{Action, TargetReport};
use render::Style;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code.into(),
        Err(err) => {
            let code = match err.downcast_ref::<UserError>() {
                Some(user) => user.code,
                None => ExitCode::Failure,
            };
            eprintln!("ptyreap: {err:#}");
            code.into()
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let style = Style::detect(cli.verbose);
    if !cli.has_target() {
        if let Some(flag) = cli.target_only_flag() {
            return Err(UserError::usage(format!(
                "{flag} needs a target: add --pid PID, --name NAME or --top"
            ))
            .into());
        }
        return run_census(cli, &style);
    }
    run_targets(cli, &style)
}

fn run_census(cli: &Cli, style: &Style) -> Result<ExitCode> {
    let snapshot = sys::snapshot()?;
    let census = census::census(&snapshot);
    if cli.json {
        println!("{}", render::json::census(&census));
    } else {
        print!("{}", render::table::census(&census, style));
    }
    Ok(ExitCode::Success)
}

/// The pids named by --pid, --name and --top, in that order, without repeats.
fn select_targets(cli: &Cli, snapshot: &model::Snapshot) -> Result<Vec<i32>, UserError> {
    let mut pids: Vec<i32> = Vec::new();
    let mut add = |pid: i32| {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    };
    cli.pids.iter().copied().for_each(&mut add);
    for name in &cli.names {
        let found = sys::processes_named(name);
        if found.is_empty() {
            return Err(UserError::failure(format!(
                "no process is named '{name}' (matched against comm and the executable's file name)"
            )));
        }
        found.into_iter().for_each(&mut add);
    }
    if cli.top {
        let census = census::census(snapshot);
        match census.processes.first() {
            Some(p) => add(p.pid),
            None => return Ok(Vec::new()),
        }
    }
    Ok(pids)
}

fn run_targets(cli: &Cli, style: &Style) -> Result<ExitCode> {
    // Check every pid before the (machine-wide) scan, so bad input fails fast and plainly.
    let mut targets = Vec::new();
    for &pid in &cli.pids {
        targets.push(sys::open_target(pid)?);
    }
    let snapshot = sys::snapshot()?;
    let pids = select_targets(cli, &snapshot)?;
    if pids.is_empty() {
        eprintln!("ptyreap: no process holds a PTY master: nothing to do");
        return Ok(ExitCode::Success);
    }
    for pid in pids {
        if !targets.iter().any(|t| t.pid == pid) {
            targets.push(sys::open_target(pid)?);
        }
    }
    if cli.fd.is_some() && targets.len() > 1 {
        return Err(UserError::failure(format!(
            "--fd names fds of one process, but {} processes were selected: give a single --pid",
            targets.len()
        ))
        .into());
    }
    let policy = verdict::Policy {
        min_idle: cli.min_idle,
        include_stale: cli.include_stale,
    };
    let choices = plan::Choices {
        fds: cli.fd.clone(),
        include_tracked: cli.include_tracked,
        method: cli.method,
    };
    let now = now();
    let mut reports = Vec::new();
    for target in &targets {
        let mut evidence = sys::inspect(target, &snapshot)?;
        if let Some(fds) = &cli.fd {
            let masters: Vec<i32> = evidence.iter().map(|e| e.fd).collect();
            if let Some(bad) = fds.iter().find(|fd| !masters.contains(fd)) {
                return Err(UserError::failure(format!(
                    "fd {bad} of pid {} ({}) is not a PTY master: nothing was changed \
                     (its PTY masters: {})",
                    target.pid,
                    target.name,
                    if masters.is_empty() {
                        "none".to_string()
                    } else {
                        format!("{masters:?}")
                    }
                ))
                .into());
            }
            evidence.retain(|e| fds.contains(&e.fd));
        }
        let judged = evidence
            .into_iter()
            .map(|ev| {
                let j = verdict::judge(&ev, &policy, now);
                (ev, j)
            })
            .collect();
        reports.push(TargetReport {
            pid: target.pid,
            name: target.name.clone(),
            masters: plan::plan(judged, &choices),
            stopped_us: None,
        });
    }
    let planned: usize = reports
        .iter()
        .map(|t| {
            t.masters
                .iter()
                .filter(|r| r.action == Action::Close)
                .count()
        })
        .sum();
    let print = |reports: &[TargetReport], dry_run: bool| {
        if cli.json {
            let doc = render::json::inspection(
                dry_run,
                cli.method,
                cli.min_idle.as_secs(),
                &snapshot.system,
                reports,
            );
            println!("{doc}");
        } else {
            print!("{}", render::table::system(&snapshot.system));
            for t in reports {
                println!();
                print!("{}", render::table::target(t, style));
            }
        }
    };
    if cli.dry_run || planned == 0 {
        print(&reports, cli.dry_run);
        if !cli.json {
            eprintln!(
                "{}",
                if planned == 0 {
                    "Nothing to release.".to_string()
                } else {
                    format!("Dry run: would release {planned} master(s); nothing was changed.")
                }
            );
        }
        return Ok(ExitCode::Success);
    }
    print(&reports, true);
    Err(UserError::failure(format!(
        "this build of ptyreap only inspects: {planned} master(s) would be released, but reaping \
         is not available yet; nothing was changed (use --dry-run to inspect)"
    ))
    .into())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
