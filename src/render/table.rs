//! Human output: counts first, then one aligned row per fd.

use super::Style;
use crate::duration::human;
use crate::model::{Action, Census, MasterRow, Outcome, SystemUsage, TargetReport, Verdict};
use std::fmt::Write;

/// Columns: text and whether it is right-aligned.
struct Table {
    head: Vec<(&'static str, bool)>,
    rows: Vec<Vec<(String, &'static str)>>,
}

impl Table {
    fn new(head: Vec<(&'static str, bool)>) -> Table {
        Table {
            head,
            rows: Vec::new(),
        }
    }

    /// Each cell: text and an SGR colour ("" for none).
    fn push(&mut self, row: Vec<(String, &'static str)>) {
        self.rows.push(row);
    }

    fn render(&self, style: &Style, indent: &str) -> String {
        let mut widths: Vec<usize> = self.head.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (w, (cell, _)) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let last = self.head.len() - 1;
        let pad = |text: &str, i: usize, right: bool| {
            if i == last && !right {
                text.to_string()
            } else if right {
                format!("{text:>w$}", w = widths[i])
            } else {
                format!("{text:<w$}", w = widths[i])
            }
        };
        let mut out = String::new();
        let header: Vec<String> = self
            .head
            .iter()
            .enumerate()
            .map(|(i, (h, right))| pad(h, i, *right))
            .collect();
        let _ = writeln!(
            out,
            "{indent}{}",
            style.paint(header.join("  ").trim_end(), "1")
        );
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, (text, sgr))| style.paint(&pad(text, i, self.head[i].1), sgr))
                .collect();
            let _ = writeln!(out, "{indent}{}", cells.join("  ").trim_end());
        }
        out
    }
}

pub fn system(sys: &SystemUsage) -> String {
    let mut out = format!(
        "PTYs in use: {} of {} ({})",
        sys.in_use, sys.limit, sys.limit_source
    );
    if let Some(reserve) = sys.reserve {
        let _ = write!(out, ", {reserve} reserved for the initial devpts instance");
    }
    if sys.globally_full() {
        out.push_str("  FULL: no new PTY can be opened (ptyreap limit --set N raises the limit)");
    }
    out.push('\n');
    if sys.unreadable_processes > 0 {
        let n = sys.unreadable_processes;
        let _ = writeln!(
            out,
            "  could not read the fds of {n} process{}: PTYs they hold are not seen (run as root)",
            if n == 1 { "" } else { "es" }
        );
    }
    for inst in sys.instances.iter().flatten() {
        let at = inst.mount.as_deref().unwrap_or("(not mounted here)");
        let used = inst
            .in_use
            .map_or("? in use".to_string(), |n| format!("{n} in use"));
        let max = inst.max.map_or(String::new(), |m| format!(", max {m}"));
        let full = if inst.full() {
            "  FULL: no new PTY can be opened here"
        } else {
            ""
        };
        let _ = writeln!(out, "  devpts {} at {at}: {used}{max}{full}", inst.devpts);
    }
    out
}

pub fn census(c: &Census, style: &Style) -> String {
    let mut out = system(&c.system);
    out.push('\n');
    if c.processes.is_empty() {
        match &c.unseen {
            Some(gap) => {
                let _ = writeln!(out, "No process that ptyreap can see holds a PTY master.");
                let _ = writeln!(out, "  {gap}");
            }
            None => out.push_str("No process holds a PTY master.\n"),
        }
        return out;
    }
    // fds are shown only where they differ from PTYs (aliases, merged copies)
    let fds_differ = c.processes.iter().any(|p| p.masters != p.ptys);
    let mut head = vec![
        ("PID", true),
        ("NAME", false),
        ("PTYS", true),
        ("ORPHANED", true),
        ("ONLY HERE", true),
        ("LEAK", true),
    ];
    if fds_differ {
        head.insert(3, ("FDS", true));
    }
    let mut t = Table::new(head);
    for p in &c.processes {
        let sgr = if p.orphaned > 0 { "33" } else { "" };
        // marked: ptyreap cannot release fds in it (the reason follows the table)
        // names are escaped by the scan already
        let name = if p.not_releasable_because.is_some() {
            format!("{} *", p.name)
        } else {
            p.name.clone()
        };
        let mut row = vec![
            (p.pid.to_string(), ""),
            (name, ""),
            (p.ptys.to_string(), ""),
            (p.orphaned.to_string(), sgr),
            (p.ptys_only_here.to_string(), ""),
            (
                p.leak_per_hour.map_or(String::new(), rate),
                if p.leak_per_hour.is_some() { "33" } else { "" },
            ),
        ];
        if fds_differ {
            row.insert(3, (p.masters.to_string(), ""));
        }
        t.push(row);
    }
    out.push_str(&t.render(style, ""));
    let refused: Vec<_> = c
        .processes
        .iter()
        .filter_map(|p| p.not_releasable_because.as_ref().map(|why| (p, why)))
        .collect();
    if !refused.is_empty() {
        out.push_str("\n* ptyreap cannot release PTYs in these processes, even as root:\n");
        for (p, why) in refused {
            let _ = writeln!(out, "  {} ({}): {}", p.pid, p.name, why);
        }
    }
    if let Some(line) = forecast(&c.system) {
        let _ = writeln!(out, "\n{line}");
    }
    let n = c.orphaned_ptys;
    let plural = if n == 1 { ("", "s") } else { ("s", "") };
    match &c.unseen {
        Some(gap) => {
            if n > 0 {
                let _ = writeln!(
                    out,
                    "\n{n} PTY{} look{} orphaned from what ptyreap can see, which is not everything \
                     (a holder may hide among what it cannot see).",
                    plural.0, plural.1
                );
            }
            let _ = writeln!(out, "Only what ptyreap can see is counted: {gap}");
        }
        None if n > 0 => {
            let _ = writeln!(
                out,
                "\n{n} PTY{} look{} orphaned. Inspect one: sudo ptyreap --pid PID --dry-run",
                plural.0, plural.1
            );
        }
        None => {}
    }
    out
}

/// The forecast line: which limit is reached first and when, "exhausted now" when one is; None
/// when nothing leaks steadily and nothing is full.
pub fn forecast(sys: &SystemUsage) -> Option<String> {
    let soonest = sys.exhausted_in_s?;
    let what = match sys.exhausted_first {
        None => "the system".to_string(),
        Some(dev) => {
            let at = sys
                .instances
                .iter()
                .flatten()
                .find(|i| i.devpts == dev)
                .and_then(|i| i.mount.as_deref())
                .unwrap_or("not mounted here");
            format!("devpts {dev} ({at})")
        }
    };
    Some(if soonest == 0 {
        format!("PTYs are exhausted now in {what}: no new one can be opened there.")
    } else {
        format!(
            "At the pace orphans are being made ({}), {what} runs out of PTYs in ~{}.",
            sys.leak_per_hour.map_or(String::new(), rate),
            human(soonest)
        )
    })
}

/// "+21/h", "+0.4/h", or nothing when not growing.
pub fn rate(per_hour: f64) -> String {
    if per_hour <= 0.0 {
        String::new()
    } else if per_hour < 10.0 {
        format!("+{per_hour:.1}/h")
    } else {
        format!("+{:.0}/h", per_hour)
    }
}

fn verdict_color(v: Verdict) -> &'static str {
    match v {
        Verdict::Orphaned | Verdict::Stale => "33",
        Verdict::Live => "32",
        Verdict::Tracked | Verdict::Merged | Verdict::Fresh | Verdict::Unread => "36",
        Verdict::Unknown => "31",
    }
}

/// Per-verdict counts, in a fixed order: "20 orphaned, 3 tracked, 3 live".
pub fn verdict_counts(rows: &[MasterRow]) -> String {
    let order = [
        Verdict::Orphaned,
        Verdict::Unread,
        Verdict::Stale,
        Verdict::Fresh,
        Verdict::Tracked,
        Verdict::Merged,
        Verdict::Live,
        Verdict::Unknown,
    ];
    order
        .iter()
        .filter_map(|&v| {
            let n = rows.iter().filter(|r| r.judgement.verdict == v).count();
            (n > 0).then(|| format!("{n} {}", v.as_str()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn target(t: &TargetReport, style: &Style) -> String {
    let mut out = String::new();
    let n = t.masters.len();
    let _ = write!(
        out,
        "pid {} ({}): {n} PTY master{}",
        t.pid,
        t.name,
        if n == 1 { "" } else { "s" }
    );
    if n == 0 {
        out.push_str(": nothing to do\n");
        return out;
    }
    let _ = writeln!(out, ": {}", verdict_counts(&t.masters));
    if let Some(app) = t.app.as_ref().filter(|_| style.verbose) {
        let _ = writeln!(out, "  app: {app}");
    }
    if let Some(why) = &t.not_releasable_because {
        let _ = writeln!(
            out,
            "  {} {why}",
            style.paint("cannot release here, so nothing is offered:", "31")
        );
    }
    let reaped = t.masters.iter().any(|r| r.result.is_some());
    let mut head = vec![
        ("FD", true),
        ("PTY", false),
        ("SLAVE", false),
        ("VERDICT", false),
        ("IDLE", true),
        ("ACTION", false),
    ];
    if reaped {
        head.push(("RESULT", false));
    }
    head.push(("REASON", false));
    let mut table = Table::new(head);
    // Without -v, a run of rows of one shape is one line (groups.rs).
    let runs = if style.verbose {
        (0..t.masters.len()).map(|i| i..i + 1).collect()
    } else {
        crate::groups::runs(&t.masters)
    };
    for run in runs {
        let rows = &t.masters[run.clone()];
        let r = &rows[0];
        let grouped = rows.len() >= crate::groups::MIN_RUN;
        if !grouped && rows.len() > 1 {
            for single in run.clone() {
                push_row(&mut table, &t.masters[single], reaped, None);
            }
            continue;
        }
        push_row(&mut table, r, reaped, grouped.then_some(rows));
    }
    out.push_str(&table.render(style, "  "));
    if style.verbose {
        for r in &t.masters {
            out.push_str(&evidence_lines(r));
        }
    }
    out
}

/// One table line: a row, or (`group`) a run of rows of one shape.
fn push_row(table: &mut Table, r: &MasterRow, reaped: bool, group: Option<&[MasterRow]>) {
    {
        let ev = &r.evidence;
        let action = match r.action {
            Action::Close(m) => m.as_str(),
            Action::Keep => "keep",
        }
        .to_string();
        let (fd, pty, slave, idle) = match group {
            Some(rows) => (
                format!("fds {}", crate::groups::fd_span(rows)),
                String::new(),
                String::new(),
                crate::groups::idle_span(rows),
            ),
            None => (
                ev.fd.to_string(),
                ev.pty.map_or("?".into(), |p| p.index.to_string()),
                ev.slave_path.clone().unwrap_or_else(|| "?".into()),
                r.judgement.idle_s.map_or("?".into(), human),
            ),
        };
        let mut row = vec![
            (fd, ""),
            (pty, ""),
            (slave, ""),
            (
                r.judgement.verdict.as_str().to_string(),
                verdict_color(r.judgement.verdict),
            ),
            (idle, ""),
            (action, if r.action.is_close() { "1" } else { "" }),
        ];
        if reaped {
            let (text, sgr) = match r.result {
                Some(Outcome::Closed) => ("closed", "32"),
                Some(Outcome::Kept) | None => ("kept", ""),
                Some(Outcome::Failed) => ("failed", "31"),
                Some(Outcome::Changed) => ("changed", "33"),
                Some(Outcome::HungUp) => ("hung up", "33"),
            };
            row.push((text.to_string(), sgr));
        }
        let mut reason = match group {
            Some(rows) => crate::groups::shared_reason(rows),
            None => r.reason(),
        };
        if let Some(detail) = &r.detail {
            let _ = write!(reason, " [{detail}]");
        }
        row.push((reason, ""));
        table.push(row);
    }
}

/// `--verbose`: everything behind a verdict, one fd per paragraph.
fn evidence_lines(r: &MasterRow) -> String {
    let ev = &r.evidence;
    let mut out = format!("\n  fd {}:\n", ev.fd);
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "    {k:<22} {v}");
    };
    let holders = |hs: &[crate::model::Holder]| {
        if hs.is_empty() {
            "none".to_string()
        } else {
            hs.iter()
                .map(|h| format!("{} ({}) fds {:?}", h.pid, h.name, h.fds))
                .collect::<Vec<_>>()
                .join("; ")
        }
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    line(
        "pty",
        opt(ev
            .pty
            .map(|p| format!("{} in devpts {}", p.index, p.devpts))),
    );
    line("slave", opt(ev.slave_path.clone()));
    line("slave held by", holders(&ev.slave_holders));
    line("target's slave fds", format!("{:?}", ev.target_slave_fds));
    line("master also held by", holders(&ev.other_master_holders));
    if !ev.fd_table_shared_with.is_empty() {
        line("fd table shared with", holders(&ev.fd_table_shared_with));
    }
    line("aliases", format!("{:?}", ev.aliases));
    line(
        "opened by",
        match ev.opened_by {
            Some(crate::model::OpenedBy::Inherited) => "inherited (older than the process)".into(),
            Some(crate::model::OpenedBy::SelfOpened) => "the process itself".into(),
            None => "unknown".to_string(),
        },
    );
    line("session", opt(ev.session.map(|s| s.to_string())));
    line(
        "foreground group",
        opt(ev.foreground_pgrp.map(|s| s.to_string())),
    );
    line("unread bytes", opt(ev.unread_bytes.map(|s| s.to_string())));
    line(
        "last I/O",
        opt(ev.last_io.map(|t| format!("{t} (unix time)"))),
    );
    line("hung up (POLLHUP)", opt(ev.hung_up.map(|s| s.to_string())));
    let watched = if ev.watched_by.is_empty() {
        "no".to_string()
    } else {
        ev.watched_by.join(", ")
    };
    line("watched by", watched);
    out
}
