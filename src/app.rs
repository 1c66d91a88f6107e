//! The one-shot command: census, or inspect → verdicts → plan → confirmation → reap → output.
//! `run` returns the exit code; the caller prints an error once.

use crate::cli::{self, Cli, Selectors, TargetRun};
use crate::exit_code::{ExitCode, UserError};
use crate::model::{self, TargetReport};
use crate::render::{self, Style};
use crate::{census, confirm, interrupt, limit, output, pipeline, ptys, reap, report, sys, watch};
use anyhow::Result;

pub fn run(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Some(cli::Command::Watch(args)) => return watch::run(args),
        Some(cli::Command::Report(args)) => return report::run(args),
        Some(cli::Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "ptyreap", &mut text);
            output::print_bytes(&text);
            return Ok(ExitCode::Success);
        }
        Some(cli::Command::Limit { set, json }) => return limit::run(*set, *json),
        Some(cli::Command::Resume { pid }) => return sys::resume(*pid),
        Some(cli::Command::Rescue(args)) => return crate::rescue::run(args),
        Some(cli::Command::Metrics) => {
            let snapshot = sys::snapshot()?;
            let census = census::census(&snapshot);
            output::print(&crate::metrics::exposition(&census, None));
            return Ok(ExitCode::Success);
        }
        Some(cli::Command::Man { dir: None }) => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut text)?;
            output::print_bytes(&text);
            return Ok(ExitCode::Success);
        }
        Some(cli::Command::Man { dir: Some(dir) }) => return write_man_pages(dir),
        None => {}
    }
    let style = Style::detect(cli.verbose);
    if !cli.has_target() {
        if let Some(flag) = cli.target_only_flag() {
            return Err(UserError::usage(format!(
                "{flag} needs a target: add --pid PID, --name NAME or --top"
            ))
            .into());
        }
        return run_census(cli.json, &style);
    }
    run_targets(&cli.target_run(), &style)
}

/// Every man page into `dir`: ptyreap.1, and ptyreap-SUB.1 for each subcommand (the pages the
/// main page's SEE ALSO names), for packagers. Lists what it wrote.
fn write_man_pages(dir: &std::path::Path) -> Result<ExitCode> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut pages = vec![("ptyreap".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        // clap takes static names (it lacks its `string` feature here); a few pages, once
        let name: &'static str = format!("ptyreap-{}", sub.get_name()).leak();
        let usage: &'static str = format!("ptyreap {}", sub.get_name()).leak();
        let page = sub
            .clone()
            .name(name)
            .bin_name(usage)
            .version(env!("CARGO_PKG_VERSION"));
        pages.push((name.to_string(), page));
    }
    for (name, page) in pages {
        let mut text = Vec::new();
        clap_mangen::Man::new(page).render(&mut text)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, text)
            .map_err(|e| UserError::failure(format!("cannot write {}: {e}", path.display())))?;
        output::println(&path.display().to_string());
    }
    Ok(ExitCode::Success)
}

fn run_census(json: bool, style: &Style) -> Result<ExitCode> {
    let snapshot = sys::snapshot()?;
    let mut census = census::census(&snapshot);
    let processes: Vec<(i32, &str)> = census
        .processes
        .iter()
        .map(|p| (p.pid, p.name.as_str()))
        .collect();
    // what stands in the way even as root (the census is about the processes, not about us)
    let refusals = sys::release_refusals(&processes, &snapshot, true);
    for (p, why) in census.processes.iter_mut().zip(refusals) {
        p.not_releasable_because = why;
    }
    if json {
        output::println(&render::json::census(&census).to_string());
    } else {
        output::print(&render::table::census(&census, style));
    }
    Ok(ExitCode::Success)
}

/// The pids named by --pid, --name and --top, in that order, without repeats.
fn select_targets(sel: &Selectors, snapshot: &model::Snapshot) -> Result<Vec<i32>, UserError> {
    let mut pids: Vec<i32> = Vec::new();
    let mut add = |pid: i32| {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    };
    sel.pids.iter().copied().for_each(&mut add);
    for name in &sel.names {
        let found = sys::processes_named(name);
        if found.is_empty() {
            return Err(UserError::failure(format!(
                "no process is named '{name}' (matched against comm and the executable's file name)"
            )));
        }
        found.into_iter().for_each(&mut add);
    }
    if sel.all {
        let own = std::process::id() as i32;
        snapshot
            .processes
            .iter()
            .filter(|p| !p.masters.is_empty() && p.pid != own)
            .for_each(|p| add(p.pid));
    }
    if sel.top {
        let census = census::census(snapshot);
        match census.processes.first() {
            Some(p) => add(p.pid),
            None => return Ok(Vec::new()),
        }
    }
    Ok(pids)
}

/// A run on targets, step by step: select, inspect and plan, confirm (then look again), reap,
/// print.
fn run_targets(run: &TargetRun, style: &Style) -> Result<ExitCode> {
    let (targets, snapshot) = match select(run)? {
        Ok(selected) => selected,
        Err(unseen) => {
            nothing_holds_a_master(unseen);
            return Ok(ExitCode::Success);
        }
    };
    let (targets, mut reports, mut ptys, kept) = inspect(run, targets, &snapshot)?;
    let printer = Printer { run, style };
    let planned = count_planned(&reports);
    // Processes it cannot release in: said before any prompt, one line each.
    let refusals: Vec<String> = reports
        .iter()
        .filter(|r| r.withheld > 0)
        .filter_map(|r| r.not_releasable_because.clone())
        .collect();
    for why in &refusals {
        crate::output::message(format_args!("{why}"));
    }
    if run.dry_run || planned == 0 {
        printer.plan(&reports, &snapshot.system, run.dry_run);
        if !run.dry_run && !refusals.is_empty() {
            return Ok(ExitCode::Failure);
        }
        if !run.json {
            eprintln!(
                "{}",
                if planned == 0 {
                    "Nothing to release.".to_string()
                } else {
                    format!(
                        "Dry run: would free {}; nothing was changed.",
                        ptys::describe(&ptys)
                    )
                }
            );
        }
        for line in &kept {
            crate::output::message(format_args!("{line}"));
        }
        return Ok(ExitCode::Success);
    }
    let before = if run.yes {
        snapshot
    } else {
        let fresh = confirm_then_look_again(run, &printer, &targets, &mut reports, &snapshot)?;
        // a copy may have been inherited meanwhile: count what frees a PTY again
        ptys = ptys::account(&mut reports);
        fresh
    };
    interrupt::catch();
    let whole_target_errors = reap_all(&targets, &mut reports);
    let pids: Vec<i32> = targets.iter().map(|t| t.pid).collect();
    let after = sys::usage_now(&before, &pids)?;
    let summary = reap_summary(&reports);
    printer.results(&reports, &before.system, &after, &ptys, &summary);
    let only_whole_target_errors =
        summary.released == 0 && summary.changed == 0 && whole_target_errors == reports.len();
    if summary.released < summary.planned && !only_whole_target_errors {
        // one plain line for scripts too: the table or the JSON says which and why
        let hung_up = if summary.hung_up > 0 {
            format!(
                "{} session(s) hung up but still held (the rows say by whom), ",
                summary.hung_up
            )
        } else {
            String::new()
        };
        crate::output::message(format_args!(
            "released {} of {} planned master(s): {hung_up}{} changed since they were \
             checked, {} failed; nothing else was touched",
            summary.released, summary.planned, summary.changed, summary.failed
        ));
    }
    for line in &kept {
        crate::output::message(format_args!("{line}"));
    }
    if let Some(sig) = interrupt::received() {
        crate::output::message(format_args!(
            "stopped by {}: every target was restored; the results above say what was released",
            interrupt::name(sig)
        ));
        return Ok(ExitCode::for_signal(sig));
    }
    if !refusals.is_empty() {
        // some processes could not be released at all: never "all released"
        return Ok(if summary.released > 0 {
            ExitCode::Partial
        } else {
            ExitCode::Failure
        });
    }
    Ok(summary.exit_code())
}

/// "Nothing to do", with what the scan could not see, if anything.
fn nothing_holds_a_master(unseen: Option<String>) {
    match unseen {
        Some(gap) => crate::output::message(format_args!(
            "no process that ptyreap can see holds a PTY master: nothing to do \
             here; {gap}"
        )),
        None => {
            crate::output::message(format_args!("no process holds a PTY master: nothing to do"))
        }
    }
}

/// What `select` chose: the targets with the snapshot they were chosen from, or, when nothing
/// holds a PTY master, what that snapshot could not see (see `Visibility::gap`).
type Selection = std::result::Result<(Vec<sys::Target>, model::Snapshot), Option<String>>;

/// The targets of --pid, --name, --all and --top, opened, with the snapshot they were chosen
/// from (see [`Selection`]).
fn select(run: &TargetRun) -> Result<Selection> {
    let chosen = select_only(&run.select)?;
    Ok(chosen.map(|(targets, mut snapshot)| {
        // one look over time at every target's poll()/select() calls at once (observe.rs)
        let pids: Vec<i32> = targets.iter().map(|t| t.pid).collect();
        sys::observe(&mut snapshot, &pids, run.observe);
        (targets, snapshot)
    }))
}

fn select_only(sel: &Selectors) -> Result<Selection> {
    // Check every pid before the (machine-wide) scan, so bad input fails fast and plainly.
    let mut targets = Vec::new();
    for &pid in &sel.pids {
        targets.push(sys::open_target(pid)?);
    }
    let snapshot = sys::snapshot_for(&sel.pids)?;
    let pids = select_targets(sel, &snapshot)?;
    if pids.is_empty() {
        return Ok(Err(snapshot.visibility.gap()));
    }
    for pid in pids {
        if !targets.iter().any(|t| t.pid == pid) {
            match sys::open_target(pid) {
                Ok(t) => targets.push(t),
                // --all: a process that exited, or that may not be inspected, is not a target
                Err(_) if sel.all => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if sel.fds_given && targets.len() > 1 {
        return Err(UserError::failure(format!(
            "--fd names fds of one process, but {} processes were selected: give a single --pid",
            targets.len()
        ))
        .into());
    }
    Ok(Ok((targets, snapshot)))
}

/// Every target inspected, judged and planned, with the PTYs the plan frees. --all keeps only the
/// processes and rows that free a PTY (and those it cannot release in, to say so). Also what
/// was kept that the user may want to know about (see [`what_was_kept`]).
#[allow(clippy::type_complexity)]
fn inspect(
    run: &TargetRun,
    mut targets: Vec<sys::Target>,
    snapshot: &model::Snapshot,
) -> Result<(
    Vec<sys::Target>,
    Vec<TargetReport>,
    ptys::PtyCount,
    Vec<String>,
)> {
    let mut reports = if run.select.all {
        // one by one: a process that exits while being inspected drops out
        let mut kept = Vec::new();
        let mut reports = Vec::new();
        for t in targets {
            if let Ok(mut r) = build_reports(run, std::slice::from_ref(&t), snapshot) {
                reports.append(&mut r);
                kept.push(t);
            }
        }
        targets = kept;
        reports
    } else {
        build_reports(run, &targets, snapshot)?
    };
    if run.verbose && !run.json {
        for r in reports.iter_mut() {
            r.app = crate::identity::summary(&crate::identity::of_process(r.pid));
        }
    }
    let mut ptys = ptys::account(&mut reports);
    let kept = what_was_kept(run, &reports, &targets, snapshot);
    if run.select.all {
        (targets, reports) = targets
            .into_iter()
            .zip(reports)
            .filter_map(|(t, mut r)| {
                // a process it cannot release is shown with the reason, not dropped silently
                (ptys::only_what_frees(&mut r) || r.withheld > 0).then_some((t, r))
            })
            .unzip();
        ptys = ptys::account(&mut reports);
    }
    Ok((targets, reports, ptys, kept))
}

/// What the plan keeps that a person in a hurry would want to know about, each with what to do:
/// masters kept as `fresh` (with the exact command that frees them and how many PTYs it would),
/// and masters kept as `unknown` because the scan could not see every process (another pid
/// namespace, unreadable processes).
fn what_was_kept(
    run: &TargetRun,
    reports: &[TargetReport],
    targets: &[sys::Target],
    snapshot: &model::Snapshot,
) -> Vec<String> {
    let rows = || reports.iter().flat_map(|r| &r.masters);
    let mut out = Vec::new();
    let fresh: std::collections::BTreeSet<_> = rows()
        .filter(|r| r.judgement.verdict == model::Verdict::Fresh)
        .filter_map(|r| r.evidence.pty)
        .collect();
    let min_idle = run.policy.min_idle;
    if !fresh.is_empty() && !min_idle.is_zero() {
        let policy = crate::verdict::Policy {
            min_idle: std::time::Duration::ZERO,
            ..run.policy
        };
        let mut r = build_reports_lenient(run, targets, snapshot, policy);
        let mut frees = ptys::account(&mut r).would_free;
        if run.select.all {
            for t in r.iter_mut() {
                ptys::only_what_frees(t);
            }
            frees = ptys::account(&mut r).would_free;
        }
        let n = fresh.len();
        let what = match frees {
            0 => "frees none of them now (they are kept for other reasons too)".into(),
            k => format!("would free {k} PTY{}", if k == 1 { "" } else { "s" }),
        };
        out.push(format!(
            "kept {n} PTY{} as fresh (idle less than {}); if {} leaked: `{}` {what}",
            if n == 1 { "" } else { "s" },
            crate::duration::human(min_idle.as_secs()),
            if n == 1 { "it is" } else { "they are" },
            run.again_with("--min-idle 0"),
        ));
    }
    let unseen = rows()
        .filter(|r| r.judgement.verdict == model::Verdict::Unknown && r.evidence.unseen.is_some())
        .count();
    if let (true, Some(gap)) = (unseen > 0, snapshot.visibility.gap()) {
        let from_host = if snapshot.visibility.hidden.is_some() {
            format!(
                " (from the host: sudo nsenter --target 1 --mount --pid {})",
                run.again
            )
        } else {
            String::new()
        };
        out.push(format!(
            "kept {unseen} master{} as unknown: {gap}{from_host}",
            if unseen == 1 { "" } else { "s" }
        ));
    }
    out
}

/// Like [`build_reports`] with another policy; a target that exits meanwhile drops out.
fn build_reports_lenient(
    run: &TargetRun,
    targets: &[sys::Target],
    snapshot: &model::Snapshot,
    policy: crate::verdict::Policy,
) -> Vec<TargetReport> {
    targets
        .iter()
        .filter_map(|t| pipeline::judge_target(t, snapshot, &policy, &run.choices).ok())
        .collect()
}

/// Shows the plan and asks; then, as the prompt may have taken minutes, looks again and keeps
/// releasing only what still holds. Returns the fresh snapshot.
fn confirm_then_look_again(
    run: &TargetRun,
    printer: &Printer<'_>,
    targets: &[sys::Target],
    reports: &mut [TargetReport],
    snapshot: &model::Snapshot,
) -> Result<model::Snapshot> {
    if !run.json {
        printer.plan(reports, &snapshot.system, true);
    }
    if let confirm::Answer::Declined(why) = confirm::confirm(reports) {
        if run.json {
            printer.plan(reports, &snapshot.system, true);
        }
        return Err(UserError::new(ExitCode::NotConfirmed, why).into());
    }
    let pids: Vec<i32> = targets.iter().map(|t| t.pid).collect();
    let mut fresh_snapshot = sys::snapshot_for(&pids)?;
    // what the poll look saw before the prompt still holds: a loop that polled then is one
    fresh_snapshot.polls = snapshot.polls.clone();
    // one by one: a target that exited during the prompt leaves its rows `changed`, and the
    // others go on
    for (report, target) in reports.iter_mut().zip(targets) {
        match build_reports(run, std::slice::from_ref(target), &fresh_snapshot) {
            Ok(mut fresh) if !fresh.is_empty() => refresh(report, fresh.remove(0)),
            Ok(_) => {}
            Err(e) => {
                let why = format!("changed since the plan: {}", e.message);
                for i in reap::planned(&report.masters) {
                    reap::settle(&mut report.masters[i], model::Outcome::Changed, &why);
                }
            }
        }
    }
    Ok(fresh_snapshot)
}

/// Reaps each target in turn (none after a signal arrived); returns how many were refused or
/// failed as a whole (their one line is printed here and says it all).
fn reap_all(targets: &[sys::Target], reports: &mut [TargetReport]) -> usize {
    let mut whole_target_errors = 0;
    for (report, target) in reports.iter_mut().zip(targets) {
        if let Some(sig) = interrupt::received() {
            let why = format!("not attempted: {} arrived", interrupt::name(sig));
            for i in reap::planned(&report.masters) {
                reap::settle(&mut report.masters[i], model::Outcome::Kept, &why);
            }
            reap::finish_kept(&mut report.masters);
            continue;
        }
        match sys::reap(target, &mut report.masters) {
            Ok(stopped) => report.stopped_us = Some(stopped.as_micros() as u64),
            Err(err) => {
                crate::output::message(format_args!("{err}"));
                whole_target_errors += 1;
                let planned = reap::planned(&report.masters);
                reap::fail_unsettled(&mut report.masters, &planned, &err.message);
                reap::finish_kept(&mut report.masters);
            }
        }
    }
    whole_target_errors
}

/// The one output path of a run on targets: tables for people, JSON for scripts.
struct Printer<'a> {
    run: &'a TargetRun,
    style: &'a Style,
}

impl Printer<'_> {
    /// The plan (or a dry run's findings).
    fn plan(&self, reports: &[TargetReport], system: &model::SystemUsage, dry_run: bool) {
        if self.run.json {
            let doc = render::json::inspection(&render::json::Inspection {
                ptys: Some((ptys::counted(reports).would_free, None)),
                ..self.header(dry_run, system, reports)
            });
            output::println(&doc.to_string());
        } else {
            self.tables(reports, system);
        }
    }

    /// What every JSON document of a run says about the run itself.
    fn header<'r>(
        &self,
        dry_run: bool,
        system: &'r model::SystemUsage,
        reports: &'r [TargetReport],
    ) -> render::json::Inspection<'r> {
        render::json::Inspection {
            dry_run,
            method: self.run.choices.method,
            min_idle_s: self.run.policy.min_idle.as_secs(),
            system,
            targets: reports,
            in_use: None,
            ptys: None,
        }
    }

    fn tables(&self, reports: &[TargetReport], system: &model::SystemUsage) {
        let mut text = render::table::system(system);
        for t in reports {
            text.push('\n');
            text.push_str(&render::table::target(t, self.style));
        }
        output::print(&text);
    }

    /// After a reap: every row's result, what was freed, the usage before and after.
    fn results(
        &self,
        reports: &[TargetReport],
        before: &model::SystemUsage,
        after: &model::SystemUsage,
        ptys: &ptys::PtyCount,
        summary: &ReapSummary,
    ) {
        if self.run.json {
            let doc = render::json::inspection(&render::json::Inspection {
                in_use: Some((before.in_use, after.in_use)),
                ptys: Some((ptys.would_free, Some(ptys::freed(reports)))),
                ..self.header(false, after, reports)
            });
            output::println(&doc.to_string());
        } else {
            self.tables(reports, after);
            eprintln!(
                "Released {} of {} planned master cop{}; freed {} of {} PTY{}; PTYs in use: {} -> {}.",
                summary.released,
                summary.planned,
                if summary.planned == 1 { "y" } else { "ies" },
                ptys::freed(reports),
                ptys.would_free,
                if ptys.would_free == 1 { "" } else { "s" },
                before.in_use,
                after.in_use
            );
        }
    }
}

/// Inspect, judge and plan every target.
fn build_reports(
    run: &TargetRun,
    targets: &[sys::Target],
    snapshot: &model::Snapshot,
) -> Result<Vec<TargetReport>, UserError> {
    targets
        .iter()
        .map(|t| pipeline::judge_target(t, snapshot, &run.policy, &run.choices))
        .collect()
}

fn count_planned(reports: &[TargetReport]) -> usize {
    reports
        .iter()
        .map(|t| t.masters.iter().filter(|r| r.action.is_close()).count())
        .sum()
}

/// Replaces the confirmed plan's evidence with a fresh look. A row confirmed for release that no
/// longer qualifies (verdict, PTY or plan changed) is `changed` and left alone; rows the user
/// chose to keep stay kept.
fn refresh(report: &mut TargetReport, fresh: TargetReport) {
    for row in report.masters.iter_mut() {
        if !row.action.is_close() || row.result.is_some() {
            continue;
        }
        let now = fresh
            .masters
            .iter()
            .find(|f| f.evidence.fd == row.evidence.fd);
        match now {
            Some(f) if f.action == row.action && f.evidence.pty == row.evidence.pty => {
                row.evidence = f.evidence.clone();
                row.judgement = f.judgement.clone();
            }
            Some(f) => reap::settle(
                row,
                model::Outcome::Changed,
                format!(
                    "changed since the plan: now {} ({})",
                    f.judgement.verdict.as_str(),
                    f.judgement.reason
                ),
            ),
            None => reap::settle(
                row,
                model::Outcome::Changed,
                "changed since the plan: no longer a PTY master",
            ),
        }
    }
}

struct ReapSummary {
    planned: usize,
    released: usize,
    changed: usize,
    failed: usize,
    /// Stale sessions hung up whose PTY someone still holds.
    hung_up: usize,
}

fn reap_summary(reports: &[TargetReport]) -> ReapSummary {
    let rows = || reports.iter().flat_map(|t| &t.masters);
    let count = |o: model::Outcome| rows().filter(|r| r.result == Some(o)).count();
    ReapSummary {
        planned: rows().filter(|r| r.action.is_close()).count(),
        released: count(model::Outcome::Closed),
        changed: count(model::Outcome::Changed),
        failed: count(model::Outcome::Failed),
        hung_up: count(model::Outcome::HungUp),
    }
}

impl ReapSummary {
    /// 0 all released, 3 some, 1 none (see exit_code.rs).
    fn exit_code(&self) -> ExitCode {
        if self.released == self.planned {
            ExitCode::Success
        } else if self.released > 0 || self.hung_up > 0 {
            ExitCode::Partial
        } else {
            ExitCode::Failure
        }
    }
}
