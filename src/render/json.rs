//! JSON for scripts, exactly as documented in README.md ("JSON"). Keys are a stable contract.

use crate::model::{Census, MasterRow, Method, SystemUsage, TargetReport};
use serde_json::{json, Value};

pub fn census(c: &Census) -> Value {
    let processes: Vec<Value> = c
        .processes
        .iter()
        .map(|p| {
            let mut v = json!(p);
            v["releasable"] = json!(p.not_releasable_because.is_none());
            v
        })
        .collect();
    let mut doc = json!({
        "system": c.system,
        "processes": processes,
        "orphaned_ptys": c.orphaned_ptys,
    });
    if let Some(unseen) = &c.unseen {
        doc["unseen"] = json!(unseen);
    }
    doc
}

/// The inspect / reap document.
pub fn inspection(i: &Inspection<'_>) -> Value {
    let mut doc = json!({
        "dry_run": i.dry_run,
        "method": i.method.map_or("default", Method::as_str),
        "min_idle_s": i.min_idle_s,
        "system": i.system,
        "targets": i.targets.iter().map(target).collect::<Vec<_>>(),
    });
    if let Some((before, after)) = i.in_use {
        doc["pty_in_use"] = json!({"before": before, "after": after});
    }
    if let Some((would_free, freed)) = i.ptys {
        doc["ptys"] = json!({"would_free": would_free, "freed": freed});
    }
    doc
}

/// Everything a run on targets prints as JSON, in one value: the run, the rows, and the counts
/// the stages returned (ptys.rs, the usage before and after a reap).
pub struct Inspection<'a> {
    pub dry_run: bool,
    pub method: Option<Method>,
    pub min_idle_s: u64,
    pub system: &'a SystemUsage,
    pub targets: &'a [TargetReport],
    /// PTYs in use before and after a reap.
    pub in_use: Option<(u64, u64)>,
    /// The PTYs the plan frees, and those the reap freed (None before one).
    pub ptys: Option<(usize, Option<usize>)>,
}

/// The rows of one target, as `inspection` writes them (a bug report carries them alone).
pub fn masters(rows: &[MasterRow]) -> Vec<Value> {
    rows.iter().map(master).collect()
}

fn target(t: &TargetReport) -> Value {
    json!({
        "pid": t.pid,
        "name": t.name,
        "stopped_us": t.stopped_us,
        "releasable": t.not_releasable_because.is_none(),
        "not_releasable_because": t.not_releasable_because,
        "masters": masters(&t.masters),
    })
}

fn master(r: &MasterRow) -> Value {
    let ev = &r.evidence;
    json!({
        "fd": ev.fd,
        "pty": ev.pty.map(|p| p.index),
        "devpts": ev.pty.map(|p| p.devpts.to_string()),
        "slave": ev.slave_path,
        "verdict": r.judgement.verdict,
        "reason": r.reason(),
        "notes": r.notes,
        "last_io": ev.last_io,
        "idle_s": r.judgement.idle_s,
        "unread_bytes": ev.unread_bytes,
        "session": ev.session,
        "foreground_pgrp": ev.foreground_pgrp,
        "slave_holders": ev.slave_holders,
        "target_slave_fds": ev.target_slave_fds,
        "other_master_holders": ev.other_master_holders,
        "fd_table_shared_with": ev.fd_table_shared_with,
        "opened_by": ev.opened_by,
        "aliases": ev.aliases,
        "watched": ev.watched(),
        "watched_by": ev.watched_by,
        "hung_up": ev.hung_up,
        "action": r.action.as_str(),
        "method": r.action.method(),
        "merge_onto": r.merge_onto,
        "result": r.result,
        "frees_pty": r.frees_pty,
        "detail": r.detail,
    })
}
