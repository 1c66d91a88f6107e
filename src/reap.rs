//! The part of reaping both backends share: which rows are planned, how a row is settled, what a
//! stale merge keeper or /dev/null source takes with it, and that every row ends with a result.
//! Each backend (`sys::linux::reap`, `sys::macos::reap`) does only what its OS needs in between:
//! stop the target, re-verify each planned fd inside the stop, release, restore, look again from
//! outside — the protocol of docs/DESIGN.md, "Reaping".

use crate::model::{Action, MasterRow, Method, Outcome};

/// The rows to release: planned `close`, not settled yet (refresh may have settled some).
pub fn planned(rows: &[MasterRow]) -> Vec<usize> {
    (0..rows.len())
        .filter(|&i| rows[i].action.is_close() && rows[i].result.is_none())
        .collect()
}

/// A row's result, and why.
pub fn settle(row: &mut MasterRow, outcome: Outcome, detail: impl Into<String>) {
    row.result = Some(outcome);
    row.detail = Some(detail.into());
}

/// Every row of `go` released by `method` is `changed` for `why` (its source — the merge keeper,
/// a /dev/null fd — is no longer what it was) and leaves `go`.
pub fn withdraw(rows: &mut [MasterRow], go: &mut Vec<usize>, method: Method, why: &str) {
    go.retain(|&i| {
        if rows[i].action != Action::Close(method) {
            return true;
        }
        settle(&mut rows[i], Outcome::Changed, why);
        false
    });
}

/// Every row of `go` not settled yet failed, for `why`.
pub fn fail_unsettled(rows: &mut [MasterRow], go: &[usize], why: &str) {
    for &i in go {
        if rows[i].result.is_none() {
            settle(&mut rows[i], Outcome::Failed, why);
        }
    }
}

/// Rows that were never planned (or never reached) are `kept`.
pub fn finish_kept(rows: &mut [MasterRow]) {
    for r in rows.iter_mut().filter(|r| r.result.is_none()) {
        r.result = Some(Outcome::Kept);
    }
}

/// The fd every planned `merge` row is dup2()ed onto, as the plan named it
/// (`plan::name_merge_target`: one for the whole target).
pub fn merge_target(rows: &[MasterRow]) -> Option<i32> {
    rows.iter()
        .filter(|r| r.action == Action::Close(Method::Merge))
        .find_map(|r| r.merge_onto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Evidence, Judgement, Verdict};

    fn row(fd: i32, action: Action) -> MasterRow {
        let evidence = Evidence {
            fd,
            ..Evidence::default()
        };
        let judgement = Judgement {
            verdict: Verdict::Orphaned,
            reason: String::new(),
            idle_s: None,
        };
        MasterRow::planned(evidence, judgement, action)
    }

    #[test]
    fn planned_rows_are_withdrawn_failed_and_kept_by_rule() {
        let mut rows = vec![
            row(3, Action::Close(Method::Merge)),
            row(4, Action::Close(Method::Close)),
            row(5, Action::Keep),
            row(6, Action::Close(Method::Devnull)),
        ];
        rows[3].result = Some(Outcome::Changed); // settled by the refresh
        let mut go = planned(&rows);
        assert_eq!(go, vec![0, 1]);
        withdraw(&mut rows, &mut go, Method::Merge, "the keeper moved");
        assert_eq!(go, vec![1]);
        assert_eq!(rows[0].result, Some(Outcome::Changed));
        assert_eq!(rows[0].detail.as_deref(), Some("the keeper moved"));
        fail_unsettled(&mut rows, &[0, 1], "no thread");
        assert_eq!(rows[0].result, Some(Outcome::Changed), "settled stays");
        assert_eq!(rows[1].result, Some(Outcome::Failed));
        finish_kept(&mut rows);
        assert_eq!(rows[2].result, Some(Outcome::Kept));
        assert_eq!(rows[2].detail, None);
    }
}
