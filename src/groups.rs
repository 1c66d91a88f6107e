//! Hundreds of fds at a glance: consecutive masters of one process that share their verdict,
//! action, result and holder evidence are one line in the table and one choice in the checklist
//! (the seed case is ~490 leaked masters in one process, which would be 490 rows). Pure; `-v`
//! and `--json` always show every row.

use crate::duration::human;
use crate::model::MasterRow;
use std::ops::Range;

/// Runs this long or longer are shown as one line.
pub const MIN_RUN: usize = 5;

/// What two rows must share to be one line: everything shown but the fd, the PTY, the slave's
/// name and the idle time.
fn shape(r: &MasterRow) -> impl PartialEq + '_ {
    let ev = &r.evidence;
    let pids = |h: &[crate::model::Holder]| h.iter().map(|h| h.pid).collect::<Vec<_>>();
    (
        (
            r.judgement.verdict,
            r.action,
            r.result,
            r.detail.as_deref(),
            pids(&ev.slave_holders),
            pids(&ev.other_master_holders),
        ),
        (
            ev.watched_by.len(),
            ev.target_slave_fds.is_empty(),
            ev.aliases.is_empty(),
            r.frees_pty,
            r.merge_onto,
            r.is_merge_target(),
            // the reason without what is the row's alone: rows with different reasons never
            // merge
            shared_reason(std::slice::from_ref(r)),
        ),
    )
}

/// The rows, in order, cut into runs of the same shape.
pub fn runs(rows: &[MasterRow]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for i in 0..rows.len() {
        match out.last_mut() {
            Some(run) if shape(&rows[run.start]) == shape(&rows[i]) => run.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// "12–497 (486)": the first and last fd of a run and how many it holds.
pub fn fd_span(rows: &[MasterRow]) -> String {
    match (rows.first(), rows.last()) {
        (Some(a), Some(b)) if rows.len() > 1 => {
            format!("{}–{} ({})", a.evidence.fd, b.evidence.fd, rows.len())
        }
        (Some(a), _) => a.evidence.fd.to_string(),
        _ => String::new(),
    }
}

/// "2d 3h – 4d 1h": the least and most idle of a run.
pub fn idle_span(rows: &[MasterRow]) -> String {
    let idle: Vec<u64> = rows.iter().filter_map(|r| r.judgement.idle_s).collect();
    match (idle.iter().min(), idle.iter().max()) {
        (Some(a), Some(b)) if a == b => human(*a),
        (Some(a), Some(b)) => format!("{} – {}", human(*a), human(*b)),
        _ => "?".into(),
    }
}

/// The reason a run shares: the first row's, without what is the first row's alone (its slave's
/// name, its idle time).
pub fn shared_reason(rows: &[MasterRow]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let mut reason = first.reason();
    if let Some(path) = &first.evidence.slave_path {
        reason = reason.replace(path.as_str(), "the slave");
    }
    reason
        .split("; ")
        .filter(|part| !part.starts_with("idle "))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The planned rows of one process grouped for the checklist: by verdict and method (not only
/// consecutive ones), in fd order. Each group: its row indices.
pub fn choices(rows: &[MasterRow]) -> Vec<Vec<usize>> {
    type Key = (crate::model::Verdict, crate::model::Action, Option<bool>);
    let mut out: Vec<(Key, Vec<usize>)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if !r.action.is_close() {
            continue;
        }
        // copies that free a PTY and copies that do not are separate choices
        let key = (r.judgement.verdict, r.action, r.frees_pty);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, idx)) => idx.push(i),
            None => out.push((key, vec![i])),
        }
    }
    out.into_iter().map(|(_, idx)| idx).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Evidence, Judgement, Method, Verdict};

    fn row(fd: i32, verdict: Verdict, idle: u64) -> MasterRow {
        let evidence = Evidence {
            fd,
            slave_path: Some(format!("/dev/pts/{fd}")),
            ..Evidence::default()
        };
        let judgement = Judgement {
            verdict,
            reason: format!("no process holds /dev/pts/{fd}; idle {}", human(idle)),
            idle_s: Some(idle),
        };
        let action = if verdict == Verdict::Orphaned {
            Action::Close(Method::Close)
        } else {
            Action::Keep
        };
        MasterRow::planned(evidence, judgement, action)
    }

    #[test]
    fn consecutive_rows_of_one_shape_are_one_run() {
        let mut rows: Vec<MasterRow> = (12..498)
            .map(|fd| row(fd, Verdict::Orphaned, 7_200 + fd as u64))
            .collect();
        rows.push(row(498, Verdict::Live, 5));
        rows.push(row(499, Verdict::Orphaned, 9));
        let r = runs(&rows);
        assert_eq!(r, vec![0..486, 486..487, 487..488]);
        let big = &rows[r[0].clone()];
        assert_eq!(fd_span(big), "12–497 (486)");
        assert_eq!(idle_span(big), "2h – 2h 8m");
        assert_eq!(shared_reason(big), "no process holds the slave");
        assert_eq!(fd_span(&rows[486..487]), "498");
        let c = choices(&rows);
        assert_eq!(c.len(), 1, "one group: orphaned, close");
        assert_eq!(c[0].len(), 487);
    }
}
