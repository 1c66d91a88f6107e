//! Asking before releasing anything: reap all / choose / cancel. `--yes` skips the question;
//! without it, a stdin that is not a terminal means "no" (exit 4) — ptyreap runs in emergency
//! scripts where no terminal exists, and must never block waiting on /dev/tty there.

use crate::model::{Action, MasterRow, Outcome, TargetReport};
use dialoguer::{MultiSelect, Select};
use std::io::IsTerminal;

#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Go ahead with what is still planned (the rows not chosen were set to keep).
    Proceed,
    Declined(String),
}

pub fn confirm(reports: &mut [TargetReport]) -> Answer {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Answer::Declined(
            "releasing needs a confirmation, but there is no terminal to ask on: \
             add --yes to release without asking, or --dry-run to only look"
                .into(),
        );
    }
    let planned: Vec<(usize, usize)> = reports
        .iter()
        .enumerate()
        .flat_map(|(t, report)| {
            report
                .masters
                .iter()
                .enumerate()
                .filter(|(_, r)| r.action.is_close())
                .map(move |(m, _)| (t, m))
        })
        .collect();
    let n = planned.len();
    let frees = crate::ptys::counted(reports);
    // ^C at a prompt ends ptyreap (exit 130): with the cursor the prompt hid shown again
    let _cursor = crate::interrupt::while_prompting();
    let choice = Select::new()
        .with_prompt(format!("Free {}?", crate::ptys::describe(&frees)))
        .items(&[
            format!("Reap all {n}"),
            "Choose which…".to_string(),
            "Cancel".to_string(),
        ])
        .default(0)
        .interact_opt();
    match choice {
        Ok(Some(0)) => Answer::Proceed,
        Ok(Some(1)) => {
            // Hundreds of fds: one choice per process and verdict (groups.rs), not per fd.
            let items: Vec<Vec<(usize, usize)>> = if planned.len() > MAX_SINGLE_CHOICES {
                reports
                    .iter()
                    .enumerate()
                    .flat_map(|(t, report)| {
                        crate::groups::choices(&report.masters)
                            .into_iter()
                            .map(move |g| g.into_iter().map(|m| (t, m)).collect())
                    })
                    .collect()
            } else {
                planned.iter().map(|&p| vec![p]).collect()
            };
            let labels: Vec<String> = items
                .iter()
                .map(|group| match group.as_slice() {
                    [(t, m)] => label(&reports[*t], &reports[*t].masters[*m]),
                    many => group_label(reports, many),
                })
                .collect();
            let n = items.len();
            let picked = MultiSelect::new()
                .with_prompt("Space toggles, Enter confirms")
                .items(&labels)
                .defaults(&vec![true; n])
                .interact_opt();
            match picked {
                Ok(Some(picked)) if !picked.is_empty() => {
                    for (i, group) in items.iter().enumerate() {
                        if !picked.contains(&i) {
                            for &(t, m) in group {
                                keep_by_choice(&mut reports[t].masters[m]);
                            }
                        }
                    }
                    Answer::Proceed
                }
                Ok(_) => Answer::Declined("nothing chosen: nothing was changed".into()),
                Err(e) => Answer::Declined(format!("could not ask ({e}): nothing was changed")),
            }
        }
        Ok(_) => Answer::Declined("cancelled: nothing was changed".into()),
        Err(e) => Answer::Declined(format!("could not ask ({e}): nothing was changed")),
    }
}

/// More planned fds than this, and the checklist offers groups.
const MAX_SINGLE_CHOICES: usize = 20;

/// "pid 812 (node): 486 orphaned masters, fds 12–497, close".
fn group_label(reports: &[TargetReport], group: &[(usize, usize)]) -> String {
    let (t, _) = group[0];
    let rows: Vec<MasterRow> = group
        .iter()
        .map(|&(t, m)| reports[t].masters[m].clone())
        .collect();
    let r = &rows[0];
    format!(
        "pid {} ({}): {} {} masters, fds {}, {}",
        reports[t].pid,
        reports[t].name,
        rows.len(),
        r.judgement.verdict.as_str(),
        crate::groups::fd_span(&rows),
        r.action.method().map_or("close", |m| m.as_str())
    )
}

fn label(t: &TargetReport, r: &MasterRow) -> String {
    format!(
        "pid {} fd {} ({}): {}",
        t.pid,
        r.evidence.fd,
        r.judgement.verdict.as_str(),
        r.reason()
    )
}

/// A row the user chose not to release.
fn keep_by_choice(r: &mut MasterRow) {
    r.action = Action::Keep;
    crate::reap::settle(r, Outcome::Kept, "not chosen at the prompt");
}
