//! The PTY-centric view of a plan: a PTY is freed only when every copy of its master on the
//! machine is closed, so what counts is PTYs, not fds. node-pty masters are inheritable: every
//! shell an IDE spawns holds copies of the masters of the terminals opened before it, and
//! closing the app's copies alone frees nothing. Pure: rows in, counts and notes out.

use crate::model::{Action, MasterRow, Outcome, PlanNote, PtyId, TargetReport};
use std::collections::{BTreeMap, BTreeSet};

/// What a set of plans frees, in PTYs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PtyCount {
    /// PTYs every copy of whose master is planned.
    pub would_free: usize,
    /// Master copies planned, and in how many processes.
    pub copies: usize,
    pub processes: usize,
}

/// Every copy of a row's master: (pid, fd) in the target and in the other holders.
fn copies_of(pid: i32, r: &MasterRow) -> Vec<(i32, i32)> {
    let ev = &r.evidence;
    let mut out = vec![(pid, ev.fd)];
    out.extend(ev.aliases.iter().map(|&fd| (pid, fd)));
    for h in &ev.other_master_holders {
        out.extend(h.fds.iter().map(|&fd| (h.pid, fd)));
    }
    out
}

/// The planned copies of each PTY, over all reports.
fn planned(reports: &[TargetReport]) -> BTreeMap<PtyId, BTreeSet<(i32, i32)>> {
    let mut out: BTreeMap<PtyId, BTreeSet<(i32, i32)>> = BTreeMap::new();
    for t in reports {
        for r in t.masters.iter().filter(|r| r.action.is_close()) {
            if let Some(pty) = r.evidence.pty {
                out.entry(pty).or_default().insert((t.pid, r.evidence.fd));
            }
        }
    }
    out
}

/// Marks each planned row with whether its PTY is freed, and says in the row's reason what keeps
/// it allocated when it is not; returns the count. A copy outside the selected processes is named
/// with the way to include it.
pub fn account(reports: &mut [TargetReport]) -> PtyCount {
    let planned = planned(reports);
    let selected: BTreeSet<i32> = reports.iter().map(|t| t.pid).collect();
    let mut freed: BTreeSet<PtyId> = BTreeSet::new();
    let mut count = PtyCount::default();
    for t in reports.iter_mut() {
        let pid = t.pid;
        let mut any = false;
        for r in t.masters.iter_mut().filter(|r| r.action.is_close()) {
            any = true;
            count.copies += 1;
            let Some(pty) = r.evidence.pty else {
                r.frees_pty = Some(false);
                continue;
            };
            let mine = &planned[&pty];
            let missing: Vec<(i32, i32)> = copies_of(pid, r)
                .into_iter()
                .filter(|c| !mine.contains(c))
                .collect();
            r.frees_pty = Some(missing.is_empty());
            if missing.is_empty() {
                freed.insert(pty);
                continue;
            }
            let mut others: Vec<String> = Vec::new();
            let mut outside = false;
            for h in &r.evidence.other_master_holders {
                if missing.iter().any(|(p, _)| *p == h.pid) {
                    others.push(format!("{} ({})", h.pid, h.name));
                    outside |= !selected.contains(&h.pid);
                }
            }
            let own: Vec<i32> = missing
                .iter()
                .filter(|(p, _)| *p == pid)
                .map(|&(_, fd)| fd)
                .collect();
            let add_pid = r
                .evidence
                .other_master_holders
                .iter()
                .find(|h| outside && !selected.contains(&h.pid))
                .map(|h| h.pid);
            // counted again after the prompt: the note is replaced, never written twice
            r.notes
                .retain(|n| !matches!(n, PlanNote::StaysAllocated { .. }));
            r.notes.push(PlanNote::StaysAllocated {
                others,
                own,
                add_pid,
            });
        }
        count.processes += usize::from(any);
    }
    count.would_free = freed.len();
    count
}

/// The count of reports already marked by [`account`], read off the marks.
pub fn counted(reports: &[TargetReport]) -> PtyCount {
    let planned = |t: &TargetReport| t.masters.iter().filter(|r| r.action.is_close()).count();
    let freeing: BTreeSet<PtyId> = reports
        .iter()
        .flat_map(|t| &t.masters)
        .filter(|r| r.action.is_close() && r.frees_pty == Some(true))
        .filter_map(|r| r.evidence.pty)
        .collect();
    PtyCount {
        would_free: freeing.len(),
        copies: reports.iter().map(planned).sum(),
        processes: reports.iter().filter(|t| planned(t) > 0).count(),
    }
}

/// PTYs freed by a reap: those every planned copy of which was released.
pub fn freed(reports: &[TargetReport]) -> usize {
    let mut state: BTreeMap<PtyId, bool> = BTreeMap::new();
    for t in reports {
        for r in t.masters.iter().filter(|r| r.frees_pty == Some(true)) {
            if let Some(pty) = r.evidence.pty {
                let ok = r.result == Some(Outcome::Closed);
                *state.entry(pty).or_insert(true) &= ok;
            }
        }
    }
    state.values().filter(|&&ok| ok).count()
}

/// `--all`: keep only what frees a PTY. Rows planned for PTYs that stay allocated anyway (a copy
/// is kept somewhere) are kept, saying why; returns whether the report still plans anything.
pub fn only_what_frees(report: &mut TargetReport) -> bool {
    for r in report.masters.iter_mut() {
        if r.action.is_close() && r.frees_pty != Some(true) {
            r.action = Action::Keep;
            r.merge_onto = None;
            r.notes.push(PlanNote::FreesNothing);
        }
    }
    // A merge target nothing is merged onto any more says so no longer; one the plan kept only
    // to be the target (it would have been merged itself) is kept as a merge with no second fd.
    let onto: BTreeSet<i32> = report.masters.iter().filter_map(|r| r.merge_onto).collect();
    for r in report.masters.iter_mut() {
        if onto.contains(&r.evidence.fd) {
            continue;
        }
        for note in r.notes.iter_mut() {
            if *note == (PlanNote::MergeTarget { kept_anyway: false }) {
                *note = PlanNote::MergeNeedsSecond;
            }
        }
        r.notes
            .retain(|n| !matches!(n, PlanNote::MergeTarget { .. }));
    }
    report.masters.iter().any(|r| r.action.is_close())
}

/// The plan in words: "would free 3 PTYs (9 master copies in 3 processes)".
pub fn describe(c: &PtyCount) -> String {
    format!(
        "{} PTY{} ({} master cop{} in {} process{})",
        c.would_free,
        if c.would_free == 1 { "" } else { "s" },
        c.copies,
        if c.copies == 1 { "y" } else { "ies" },
        c.processes,
        if c.processes == 1 { "" } else { "es" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DevId, Evidence, Holder, Judgement, Method, Verdict};

    fn pty(i: u32) -> PtyId {
        PtyId {
            devpts: DevId { major: 0, minor: 1 },
            index: i,
        }
    }

    fn row(fd: i32, p: u32, others: &[(i32, &[i32])], close: bool) -> MasterRow {
        let evidence = Evidence {
            fd,
            pty: Some(pty(p)),
            other_master_holders: others
                .iter()
                .map(|(pid, fds)| Holder {
                    pid: *pid,
                    name: "bash".into(),
                    fds: fds.to_vec(),
                })
                .collect(),
            ..Evidence::default()
        };
        let judgement = Judgement {
            verdict: Verdict::Orphaned,
            reason: "r".into(),
            idle_s: Some(9),
        };
        let action = if close {
            Action::Close(Method::Close)
        } else {
            Action::Keep
        };
        MasterRow::planned(evidence, judgement, action)
    }

    fn target(pid: i32, masters: Vec<MasterRow>) -> TargetReport {
        TargetReport {
            pid,
            name: "node".into(),
            masters,
            stopped_us: None,
            not_releasable_because: None,
            withheld: 0,
            app: None,
        }
    }

    /// Three bash processes each holding copies of the same two dead terminals' masters.
    #[test]
    fn a_pty_counts_once_and_only_when_every_copy_goes() {
        let shared = |me: i32| -> Vec<(i32, &'static [i32])> {
            [(10, &[3][..]), (11, &[3][..]), (12, &[3][..])]
                .into_iter()
                .filter(|(p, _)| *p != me)
                .collect()
        };
        let mut all: Vec<TargetReport> = [10, 11, 12]
            .into_iter()
            .map(|pid| target(pid, vec![row(3, 7, &shared(pid), true)]))
            .collect();
        let c = account(&mut all);
        assert_eq!(
            c,
            PtyCount {
                would_free: 1,
                copies: 3,
                processes: 3
            }
        );
        assert_eq!(describe(&c), "1 PTY (3 master copies in 3 processes)");
        assert_eq!(counted(&all), c, "the marks tell the same count");
        // one process alone frees nothing, and says who else holds it
        let mut one = vec![target(10, vec![row(3, 7, &shared(10), true)])];
        let c = account(&mut one);
        assert_eq!(c.would_free, 0);
        let reason = &one[0].masters[0].reason();
        assert!(
            reason.contains("stays allocated: also held by 11 (bash), 12 (bash)")
                && reason.contains("add --pid 11 or use --all"),
            "{reason}"
        );
        assert!(!only_what_frees(&mut one[0]));
        assert_eq!(one[0].masters[0].action, Action::Keep);
    }

    /// `--all` keeps a merge whose PTY another process still holds: the fd it would have been
    /// merged onto is no merge target any more, and its reason says why it is kept (it was
    /// itself a merge, and merging needs a second fd), not that it is the keeper.
    #[test]
    fn a_merge_kept_by_all_leaves_no_merge_target_note() {
        let mut merged = row(4, 7, &[(11, &[3])], true);
        merged.action = Action::Close(Method::Merge);
        merged.merge_onto = Some(5);
        let mut onto = row(5, 8, &[], false);
        onto.notes
            .push(PlanNote::MergeTarget { kept_anyway: false });
        let mut r = vec![target(10, vec![merged, onto])];
        account(&mut r);
        assert!(r[0].masters[1].is_merge_target());
        assert!(!only_what_frees(&mut r[0]));
        assert_eq!(r[0].masters[0].action, Action::Keep);
        assert!(!r[0].masters[1].is_merge_target(), "{:?}", r[0].masters[1]);
        let reason = r[0].masters[1].reason();
        assert!(
            !reason.contains("keeper") && reason.contains("merging needs a second fd"),
            "{reason}"
        );
    }

    #[test]
    fn freed_counts_ptys_whose_every_planned_copy_closed() {
        let mut r = vec![
            target(
                10,
                vec![row(3, 7, &[(11, &[4])], true), row(5, 8, &[], true)],
            ),
            target(11, vec![row(4, 7, &[(10, &[3])], true)]),
        ];
        assert_eq!(account(&mut r).would_free, 2);
        r[0].masters[0].result = Some(Outcome::Closed);
        r[0].masters[1].result = Some(Outcome::Closed);
        r[1].masters[0].result = Some(Outcome::Failed);
        assert_eq!(freed(&r), 1);
    }
}
