//! One target through the pure middle of the flow: evidence (from the OS) → verdicts → plan.
//! Shared by the one-shot command, the watchdog and the report.

use crate::exit_code::UserError;
use crate::model::{Action, Snapshot, TargetReport};
use crate::{plan, sys, verdict};

/// Inspect, judge and plan one target. `only` (`--fd`) keeps just those fds, and every one of
/// them must be a PTY master of the target.
pub fn judge_target(
    target: &sys::Target,
    snapshot: &Snapshot,
    policy: &verdict::Policy,
    choices: &plan::Choices,
) -> Result<TargetReport, UserError> {
    let mut evidence = sys::inspect(target, snapshot)?;
    if let Some(fds) = &choices.fds {
        let masters: Vec<i32> = evidence.iter().map(|e| e.fd).collect();
        if let Some(bad) = fds.iter().find(|fd| !masters.contains(fd)) {
            return Err(not_a_master(target, *bad, &masters));
        }
        evidence.retain(|e| fds.contains(&e.fd));
    }
    let now = crate::clock::now();
    let judged = evidence
        .into_iter()
        .map(|ev| {
            let j = verdict::judge(&ev, policy, now);
            (ev, j)
        })
        .collect();
    let mut report = TargetReport {
        pid: target.pid,
        name: target.name.clone(),
        masters: plan::plan(judged, choices),
        stopped_us: None,
        not_releasable_because: None,
        withheld: 0,
        app: None,
    };
    let refusal = sys::release_refusals(&[(target.pid, &target.name)], snapshot, false).pop();
    if let Some(why) = refusal.flatten() {
        withhold(&mut report, why);
    }
    Ok(report)
}

/// A process ptyreap cannot release fds in (known before asking): the plan offers nothing in it,
/// so no prompt is shown for it; `withheld` counts what it would have released.
pub fn withhold(report: &mut TargetReport, why: String) {
    for row in report.masters.iter_mut() {
        // nothing is released here: how it would have been is no longer true
        row.merge_onto = None;
        row.notes.clear();
        if row.action.is_close() {
            row.action = Action::Keep;
            report.withheld += 1;
        }
    }
    report.not_releasable_because = Some(why);
}

fn not_a_master(target: &sys::Target, fd: i32, masters: &[i32]) -> UserError {
    let list = if masters.is_empty() {
        "none".to_string()
    } else {
        // numerically and as ranges: 3-5,10, never 10,3,4,5
        crate::verdict::fd_list(masters)
    };
    UserError::failure(format!(
        "fd {fd} of pid {} ({}) is not a PTY master: nothing was changed (its PTY masters: {list})",
        target.pid, target.name
    ))
}
