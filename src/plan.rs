//! Verdicts + the user's choices (`--fd`, `--include-tracked`, `--method`) → what to release, and
//! how. Pure logic; the reaper only executes what this decided (after re-verifying each fd).

use crate::model::{
    Action, DefaultWhy, Evidence, Judgement, MasterRow, Method, OpenedBy, PlanNote, Verdict,
};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default)]
pub struct Choices {
    /// `--fd`: when given, only these fds are considered, and a `merged` group is released when
    /// one of its fds is named.
    pub fds: Option<BTreeSet<i32>>,
    pub include_tracked: bool,
    /// `--include-unread`: also release orphans whose output nobody read yet (it is lost).
    pub include_unread: bool,
    /// `--method`; None means the default, from the evidence: close for orphans that crossed an
    /// exec (`inherited`), merge for the rest (see `default_for`) and for tracked ones.
    pub method: Option<Method>,
    /// Release orphaned masters only (the watchdog's choice): nothing stale, tracked or merged.
    pub only_orphaned: bool,
}

/// Plans one target's masters. Rows come back in fd order.
pub fn plan(judged: Vec<(Evidence, Judgement)>, choices: &Choices) -> Vec<MasterRow> {
    let named = |ev: &Evidence| match &choices.fds {
        Some(set) => set.contains(&ev.fd) || ev.aliases.iter().any(|a| set.contains(a)),
        None => false,
    };
    let mut rows: Vec<MasterRow> = judged
        .into_iter()
        .map(|(evidence, judgement)| {
            let method = match judgement.verdict {
                v if choices.only_orphaned && v != Verdict::Orphaned => None,
                Verdict::Orphaned => Some(choices.method.unwrap_or(default_for(&evidence))),
                Verdict::Unread if choices.include_unread => {
                    Some(choices.method.unwrap_or(default_for(&evidence)))
                }
                Verdict::Stale => Some(choices.method.unwrap_or(Method::Close)),
                Verdict::Tracked if choices.include_tracked => {
                    Some(choices.method.unwrap_or(Method::Merge))
                }
                // already merged: `--method merge` is a no-op for them; naming them releases them
                Verdict::Merged if named(&evidence) && choices.method != Some(Method::Merge) => {
                    Some(choices.method.unwrap_or(Method::Close))
                }
                _ => None,
            };
            let mut notes = Vec::new();
            let released_orphan = matches!(judgement.verdict, Verdict::Orphaned | Verdict::Unread);
            if let (true, Some(method), None) = (released_orphan, method, choices.method) {
                let why = why_default(&evidence);
                notes.push(PlanNote::DefaultMethod { method, why });
            }
            if judgement.verdict == Verdict::Unread && method.is_some() {
                let bytes = evidence.unread_bytes.unwrap_or(0);
                notes.push(PlanNote::UnreadLost { bytes });
            }
            let action = method.map_or(Action::Keep, Action::Close);
            MasterRow {
                notes,
                ..MasterRow::planned(evidence, judgement, action)
            }
        })
        .collect();
    rows.sort_by_key(|r| r.evidence.fd);
    name_merge_target(&mut rows);
    rows
}

/// The default method for an orphan: `close` only where the program never saw the number (it
/// crossed an exec: `inherited`) and nothing was left unseen; where it opened the PTY itself, or
/// got it through a fork without exec, it may still resize or close that number later, and after
/// a close the number may belong to another file: `merge` keeps every number a hung-up master (a
/// wrong guess costs one PTY, never the app). fds 0-2 are never closed by default: the next
/// open() would become the program's stdin, stdout or stderr.
fn default_for(ev: &Evidence) -> Method {
    match ev.opened_by {
        Some(OpenedBy::Inherited) if ev.fd > 2 && ev.polls_unseen.is_none() => Method::Close,
        _ => Method::Merge,
    }
}

fn why_default(ev: &Evidence) -> DefaultWhy {
    match ev.opened_by {
        Some(OpenedBy::Inherited) if ev.fd <= 2 => DefaultWhy::StandardStream,
        Some(OpenedBy::Inherited) => match &ev.polls_unseen {
            None => DefaultWhy::Inherited,
            Some(why) => DefaultWhy::PollsUnseen(why.clone()),
        },
        Some(OpenedBy::SelfOpened) => DefaultWhy::SelfOpened,
        None => DefaultWhy::NoEvidence,
    }
}

/// `merge` dup2()s one master over the others; the plan names which, once, on every merge row
/// (`merge_onto`). Never a row the plan releases: a merged fd named for close would be closed
/// first and the dup would fail. In order: an existing merged group the plan keeps (so repeated
/// runs keep a single PTY), a hung-up master kept anyway, else the lowest fd being merged, which
/// is then kept, and says so.
fn name_merge_target(rows: &mut [MasterRow]) {
    let merging: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].action == Action::Close(Method::Merge))
        .collect();
    let Some(&lowest) = merging.first() else {
        return;
    };
    let kept = |r: &MasterRow| r.action == Action::Keep;
    let onto = if let Some(group) = rows
        .iter()
        .position(|r| r.judgement.verdict == Verdict::Merged && kept(r))
    {
        group
    } else if let Some(k) = rows.iter().position(|r| {
        // A hung-up master the plan keeps anyway (tracked, not included): merging onto it
        // keeps no PTY more than was kept already. Hung up only: a slave never opened could
        // still be, and the merged fds would then read a live session.
        r.judgement.verdict == Verdict::Tracked && kept(r) && r.evidence.hung_up == Some(true)
    }) {
        rows[k]
            .notes
            .push(PlanNote::MergeTarget { kept_anyway: true });
        k
    } else {
        let row = &mut rows[lowest];
        row.action = Action::Keep;
        if merging.len() == 1 {
            row.notes.push(PlanNote::MergeNeedsSecond);
            return;
        }
        row.notes.push(PlanNote::MergeTarget { kept_anyway: false });
        lowest
    };
    let fd = rows[onto].evidence.fd;
    for &i in merging.iter().filter(|&&i| i != onto) {
        rows[i].merge_onto = Some(fd);
    }
}

/// Parses `--fd 3,7-12`.
pub fn parse_fd_list(text: &str) -> Result<BTreeSet<i32>, String> {
    let mut set = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("'{part}' is not an fd or a range like 7-12");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: i32 = a.trim().parse().map_err(|_| bad())?;
                let b: i32 = b.trim().parse().map_err(|_| bad())?;
                if a < 0 || b < a || b - a > 1_000_000 {
                    return Err(bad());
                }
                set.extend(a..=b);
            }
            None => {
                let fd: i32 = part.parse().map_err(|_| bad())?;
                if fd < 0 {
                    return Err(bad());
                }
                set.insert(fd);
            }
        }
    }
    if set.is_empty() {
        return Err("an empty fd list".into());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reap::merge_target;

    fn row(fd: i32, verdict: Verdict) -> (Evidence, Judgement) {
        opened(fd, verdict, Some(OpenedBy::Inherited))
    }

    fn opened(fd: i32, verdict: Verdict, by: Option<OpenedBy>) -> (Evidence, Judgement) {
        (
            Evidence {
                fd,
                opened_by: by,
                ..Evidence::default()
            },
            Judgement {
                verdict,
                reason: "r".into(),
                idle_s: Some(1),
            },
        )
    }

    fn actions(rows: &[MasterRow]) -> Vec<(i32, Action)> {
        rows.iter().map(|r| (r.evidence.fd, r.action)).collect()
    }

    #[test]
    fn only_orphans_are_closed_by_default() {
        let rows = plan(
            vec![
                row(5, Verdict::Live),
                row(3, Verdict::Orphaned),
                row(4, Verdict::Tracked),
                row(6, Verdict::Fresh),
                row(7, Verdict::Unknown),
                row(8, Verdict::Merged),
            ],
            &Choices::default(),
        );
        assert_eq!(
            actions(&rows),
            vec![
                (3, Action::Close(Method::Close)),
                (4, Action::Keep),
                (5, Action::Keep),
                (6, Action::Keep),
                (7, Action::Keep),
                (8, Action::Keep),
            ]
        );
    }

    /// A program that opened the PTY itself may still use the number: merge, one keeper.
    #[test]
    fn orphans_the_program_opened_are_merged_by_default() {
        let rows = plan(
            vec![
                opened(3, Verdict::Orphaned, Some(OpenedBy::SelfOpened)),
                opened(4, Verdict::Orphaned, None),
                opened(5, Verdict::Orphaned, Some(OpenedBy::Inherited)),
            ],
            &Choices::default(),
        );
        assert_eq!(
            actions(&rows),
            vec![
                (3, Action::Keep),
                (4, Action::Close(Method::Merge)),
                (5, Action::Close(Method::Close)),
            ]
        );
        assert!(rows[0].reason().contains("merge: the program opened it"));
        assert!(rows[1]
            .reason()
            .contains("merge: no evidence that it crossed an exec"));
        assert!(rows[2].reason().contains("close: inherited"));
        assert_eq!(merge_target(&rows), Some(3));
        // --method still decides
        let forced = plan(
            vec![opened(3, Verdict::Orphaned, Some(OpenedBy::SelfOpened))],
            &Choices {
                method: Some(Method::Close),
                ..Choices::default()
            },
        );
        assert_eq!(actions(&forced), vec![(3, Action::Close(Method::Close))]);
    }

    /// A hung-up master kept anyway (tracked) is the keeper: every orphan's PTY is freed.
    #[test]
    fn a_master_kept_anyway_is_the_keeper() {
        let mut tracked = opened(9, Verdict::Tracked, Some(OpenedBy::SelfOpened));
        tracked.0.hung_up = Some(true);
        let rows = plan(
            vec![
                opened(3, Verdict::Orphaned, Some(OpenedBy::SelfOpened)),
                opened(4, Verdict::Orphaned, Some(OpenedBy::SelfOpened)),
                tracked,
            ],
            &Choices::default(),
        );
        assert_eq!(
            actions(&rows),
            vec![
                (3, Action::Close(Method::Merge)),
                (4, Action::Close(Method::Merge)),
                (9, Action::Keep),
            ]
        );
        assert_eq!(merge_target(&rows), Some(9));
        assert!(rows[2].reason().contains("keeper"));
        // one never opened is not: it could still become a live session
        let mut fresh = opened(9, Verdict::Tracked, Some(OpenedBy::SelfOpened));
        fresh.0.hung_up = Some(false);
        let rows = plan(
            vec![
                opened(3, Verdict::Orphaned, None),
                opened(4, Verdict::Orphaned, None),
                fresh,
            ],
            &Choices::default(),
        );
        assert_eq!(merge_target(&rows), Some(3));
    }

    #[test]
    fn inherited_needs_an_exec() {
        use crate::model::Provenance;
        let crossed = Provenance {
            created: Some(100.0),
            started: Some(200.0),
            cloexec: false,
            exec_since_fork: true,
        };
        let judge = |p: Provenance| OpenedBy::judge(&p, 0.05);
        assert_eq!(judge(crossed), Some(OpenedBy::Inherited));
        // a fork without exec (Tcl expect's fork + disconnect): the program knows the number
        let forked = Provenance {
            exec_since_fork: false,
            ..crossed
        };
        assert_eq!(judge(forked), None);
        // close-on-exec: it cannot have crossed an exec
        let cloexec = Provenance {
            cloexec: true,
            ..crossed
        };
        assert_eq!(judge(cloexec), None);
        let own = Provenance {
            created: Some(300.0),
            ..crossed
        };
        assert_eq!(judge(own), Some(OpenedBy::SelfOpened));
        for created in [200.01, 199.99] {
            let close = Provenance {
                created: Some(created),
                ..crossed
            };
            assert_eq!(judge(close), None);
        }
        assert_eq!(
            judge(Provenance {
                started: None,
                ..crossed
            }),
            None
        );
    }

    #[test]
    fn stdio_and_unwatched_polls_are_never_closed_by_default() {
        let mut stdin = opened(0, Verdict::Orphaned, Some(OpenedBy::Inherited));
        stdin.0.polls_unseen = None;
        let mut unseen = opened(5, Verdict::Orphaned, Some(OpenedBy::Inherited));
        unseen.0.polls_unseen = Some("not watched (--observe 0)".into());
        let rows = plan(
            vec![stdin, unseen, row(7, Verdict::Orphaned)],
            &Choices::default(),
        );
        // fd 0 is merged into (it is the keeper: the lowest fd merged), fd 5 merged
        assert_eq!(rows[0].action, Action::Keep);
        assert!(
            rows[0].reason().contains("standard input"),
            "{}",
            rows[0].reason()
        );
        assert_eq!(rows[1].action, Action::Close(Method::Merge));
        assert!(rows[1].reason().contains("poll loops were not watched"));
        assert_eq!(rows[2].action, Action::Close(Method::Close));
    }

    #[test]
    fn unread_output_is_released_only_when_included() {
        let mut unread = opened(4, Verdict::Unread, None);
        unread.0.unread_bytes = Some(19);
        let kept = plan(vec![unread.clone()], &Choices::default());
        assert_eq!(kept[0].action, Action::Keep);
        let watchdog = Choices {
            include_unread: false,
            only_orphaned: true,
            ..Choices::default()
        };
        assert_eq!(
            plan(vec![unread.clone()], &watchdog)[0].action,
            Action::Keep
        );
        let included = Choices {
            include_unread: true,
            method: Some(Method::Close),
            ..Choices::default()
        };
        let rows = plan(vec![unread], &included);
        assert_eq!(rows[0].action, Action::Close(Method::Close));
        assert!(rows[0].reason().contains("19 unread byte(s) will be lost"));
    }

    #[test]
    fn tracked_ones_are_merged_when_included() {
        let choices = Choices {
            include_tracked: true,
            ..Choices::default()
        };
        let rows = plan(
            vec![
                row(3, Verdict::Orphaned),
                row(4, Verdict::Tracked),
                row(5, Verdict::Tracked),
            ],
            &choices,
        );
        assert_eq!(
            actions(&rows),
            vec![
                (3, Action::Close(Method::Close)),
                (4, Action::Keep),
                (5, Action::Close(Method::Merge)),
            ]
        );
        assert!(rows[1].reason().ends_with("now share"));
        assert_eq!(merge_target(&rows), Some(4));
    }

    /// `--fd 4,8 --include-tracked`, fd 8 one of a merged group: 8 is closed, so it is not what
    /// 4 merges onto; with nothing else to merge onto, 4 is kept.
    #[test]
    fn a_merged_fd_named_for_close_is_never_the_merge_target() {
        let mut tracked = row(4, Verdict::Tracked);
        tracked.0.opened_by = Some(OpenedBy::SelfOpened);
        let mut merged = row(8, Verdict::Merged);
        merged.0.aliases = vec![7];
        let choices = Choices {
            fds: Some([4, 8].into()),
            include_tracked: true,
            ..Choices::default()
        };
        let rows = plan(vec![tracked, merged], &choices);
        assert_eq!(
            actions(&rows),
            vec![(4, Action::Keep), (8, Action::Close(Method::Close))]
        );
        assert_eq!(merge_target(&rows), None);
        assert_eq!(rows[0].notes, vec![PlanNote::MergeNeedsSecond]);
        assert!(rows.iter().all(|r| r.merge_onto.is_none()));
    }

    #[test]
    fn an_existing_merged_group_is_the_keeper() {
        let choices = Choices {
            include_tracked: true,
            method: Some(Method::Merge),
            ..Choices::default()
        };
        let rows = plan(
            vec![
                row(9, Verdict::Merged),
                row(4, Verdict::Tracked),
                row(3, Verdict::Orphaned),
            ],
            &choices,
        );
        assert_eq!(
            actions(&rows),
            vec![
                (3, Action::Close(Method::Merge)),
                (4, Action::Close(Method::Merge)),
                (9, Action::Keep),
            ]
        );
        assert_eq!(merge_target(&rows), Some(9));
    }

    #[test]
    fn an_explicit_method_applies_to_all() {
        let choices = Choices {
            include_tracked: true,
            method: Some(Method::Devnull),
            ..Choices::default()
        };
        let rows = plan(
            vec![row(3, Verdict::Orphaned), row(4, Verdict::Tracked)],
            &choices,
        );
        assert!(rows
            .iter()
            .all(|r| r.action == Action::Close(Method::Devnull)));
        assert_eq!(merge_target(&rows), None);
    }

    #[test]
    fn naming_a_merged_fd_releases_its_group() {
        let mut a = row(8, Verdict::Merged);
        a.0.aliases = vec![9];
        let mut b = row(9, Verdict::Merged);
        b.0.aliases = vec![8];
        let choices = Choices {
            fds: Some([8].into()),
            ..Choices::default()
        };
        let rows = plan(vec![a, b], &choices);
        assert!(rows.iter().all(|r| r.action.is_close()));
    }

    #[test]
    fn fd_lists() {
        assert_eq!(parse_fd_list("3,7-9").unwrap(), [3, 7, 8, 9].into());
        assert_eq!(parse_fd_list(" 4 ").unwrap(), [4].into());
        for bad in ["", "x", "9-7", "-3", "3,,a", "1-99999999"] {
            assert!(parse_fd_list(bad).is_err(), "{bad}");
        }
    }
}
