//! Evidence → verdict, with the one line that explains it. Pure: the same rules judge Linux and
//! macOS evidence, and everything here is unit-tested without a kernel.
//!
//! Precedence (docs/DESIGN.md, "Verdicts"): live/stale, unknown, fresh, unread, merged, tracked,
//! orphaned. `--min-idle` therefore guards everything that is ever reaped, output the app may
//! still collect keeps its master, and a watched or shared fd is never called plainly orphaned.

use crate::duration::human;
use crate::model::{Evidence, Holder, Judgement, OpenedBy, Verdict};
use std::time::Duration;

/// The user's thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub min_idle: Duration,
    /// `--include-stale DUR`: live sessions silent this long may be reaped (hung up).
    pub include_stale: Option<Duration>,
}

pub fn judge(ev: &Evidence, policy: &Policy, now: i64) -> Judgement {
    let idle_s = ev.last_io.map(|t| now.saturating_sub(t).max(0) as u64);
    let verdict = |verdict, reason: String| Judgement {
        verdict,
        reason,
        idle_s,
    };
    if let Some(why) = &ev.missing {
        return verdict(Verdict::Unknown, format!("not enough evidence: {why}"));
    }
    if ev.guarded {
        return verdict(Verdict::Unknown, "guarded fd: never touched".into());
    }
    let Some(pty) = ev.pty else {
        return verdict(Verdict::Unknown, "could not identify the PTY".into());
    };
    let slave = ev
        .slave_path
        .clone()
        .unwrap_or_else(|| format!("pts {}", pty.index));
    let idle_text = match idle_s {
        Some(s) => format!("idle {}", human(s)),
        None => "last I/O unknown".into(),
    };

    let live_because = if !ev.slave_holders.is_empty() {
        Some(format!(
            "{slave} held by {}",
            holders_text(&ev.slave_holders)
        ))
    } else {
        ev.session
            .map(|sid| format!("{slave} is the controlling terminal of session {sid}"))
    };
    if let Some(because) = live_because {
        if let (Some(stale_after), Some(idle)) = (policy.include_stale, idle_s) {
            let threshold = stale_after.max(policy.min_idle).as_secs();
            if idle >= threshold {
                return verdict(
                    Verdict::Stale,
                    format!(
                        "{because}, but silent for {} (reaping hangs it up)",
                        human(idle)
                    ),
                );
            }
        }
        return verdict(Verdict::Live, format!("{because}; {idle_text}"));
    }

    // From here on nobody else holds the slave and no session owns it — as far as we can see.
    if let Some(gap) = &ev.unseen {
        return verdict(
            Verdict::Unknown,
            format!("no process ptyreap can see holds {slave}, but {gap}"),
        );
    }
    if let Some(blind) = ev.blind_spots.first() {
        return verdict(
            Verdict::Unknown,
            format!("no process holds {slave}, but {blind}: kept"),
        );
    }
    let Some(idle) = idle_s else {
        return verdict(
            Verdict::Unknown,
            format!("no process holds {slave}, but its last I/O time is unknown"),
        );
    };
    if idle < policy.min_idle.as_secs() {
        return verdict(
            Verdict::Fresh,
            format!(
                "no process holds {slave}, but idle only {} (< --min-idle {})",
                human(idle),
                human(policy.min_idle.as_secs())
            ),
        );
    }
    // Output waiting at the master: pexpect's `expect(EOF)` and Tcl expect's `expect eof` collect
    // a job's output after it exited. Only a copy that crossed an exec is exempt: that program
    // never saw the number and cannot read it.
    let unread = ev.unread_bytes.unwrap_or(0);
    if unread > 0 && ev.opened_by != Some(OpenedBy::Inherited) {
        return verdict(
            Verdict::Unread,
            format!(
                "no process holds {slave}, but {unread} byte{} of output not read yet: the app \
                 may still collect {} ({idle_text}; --include-unread releases it, and the output \
                 is lost)",
                if unread == 1 { "" } else { "s" },
                if unread == 1 { "it" } else { "them" }
            ),
        );
    }
    let copies = if ev.other_master_holders.is_empty() {
        String::new()
    } else {
        format!(
            "; master also held by {} (freed only when every copy is closed)",
            holders_text(&ev.other_master_holders)
        )
    };
    if !ev.aliases.is_empty() {
        // the same words on every fd of the group (itself included), so the table shows the
        // group as one line: after a merge of 490 masters, not 490 lines of 489 numbers
        let mut all = ev.aliases.clone();
        all.push(ev.fd);
        all.sort_unstable();
        all.dedup();
        return verdict(
            Verdict::Merged,
            format!(
                "one of {} fds on this master ({}): they free the PTY only together{copies}",
                all.len(),
                fd_list(&all)
            ),
        );
    }
    if ev.watched() {
        return verdict(
            Verdict::Tracked,
            format!(
                "no process holds {slave}, but the app still watches it ({}); {idle_text}{copies}",
                ev.watched_by.join(", ")
            ),
        );
    }
    let pair = if ev.target_slave_fds.is_empty() {
        String::new()
    } else {
        format!(
            "; the target holds both ends (slave fds {}), released together",
            fd_list(&ev.target_slave_fds)
        )
    };
    let unwatched = match &ev.polls_unseen {
        Some(why) => format!("; poll()/select() calls were not watched over time ({why})"),
        None => String::new(),
    };
    verdict(
        Verdict::Orphaned,
        format!("no process holds {slave}; {idle_text}{pair}{copies}{unwatched}"),
    )
}

fn holders_text(holders: &[Holder]) -> String {
    let mut parts: Vec<String> = holders
        .iter()
        .take(3)
        .map(|h| format!("{} ({})", h.pid, h.name))
        .collect();
    if holders.len() > 3 {
        parts.push(format!("{} more", holders.len() - 3));
    }
    parts.join(", ")
}

/// `3,7,12`: fds as the reasons list them.
/// fd numbers as ranges, in order: "3-52,60,70-72" (what `--fd` takes back).
pub fn fd_list(fds: &[i32]) -> String {
    let mut sorted = fds.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(match j - i {
            0 => sorted[i].to_string(),
            1 => format!("{},{}", sorted[i], sorted[j]),
            _ => format!("{}-{}", sorted[i], sorted[j]),
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DevId, PtyId};

    const NOW: i64 = 1_800_000_000;

    fn orphan(idle: i64) -> Evidence {
        Evidence {
            fd: 7,
            pty: Some(PtyId {
                devpts: DevId {
                    major: 0,
                    minor: 26,
                },
                index: 12,
            }),
            slave_path: Some("/dev/pts/12".into()),
            last_io: Some(NOW - idle),
            hung_up: Some(true),
            ..Evidence::default()
        }
    }

    fn policy(min_idle: u64) -> Policy {
        Policy {
            min_idle: Duration::from_secs(min_idle),
            include_stale: None,
        }
    }

    fn holder(pid: i32) -> Holder {
        Holder {
            pid,
            name: "cat".into(),
            fds: vec![0, 1, 2],
        }
    }

    #[test]
    fn an_idle_unheld_master_is_orphaned() {
        let j = judge(&orphan(183_600), &policy(600), NOW);
        assert_eq!(j.verdict, Verdict::Orphaned);
        assert_eq!(j.reason, "no process holds /dev/pts/12; idle 2d 3h");
        assert_eq!(j.idle_s, Some(183_600));
    }

    #[test]
    fn a_young_one_is_fresh() {
        let j = judge(&orphan(30), &policy(600), NOW);
        assert_eq!(j.verdict, Verdict::Fresh);
        assert!(j.reason.contains("idle only 30s"), "{}", j.reason);
        assert_eq!(
            judge(&orphan(0), &policy(0), NOW).verdict,
            Verdict::Orphaned
        );
    }

    #[test]
    fn a_held_slave_is_live_whatever_the_idle_time() {
        let mut ev = orphan(999_999);
        ev.slave_holders = vec![holder(4242)];
        let j = judge(&ev, &policy(0), NOW);
        assert_eq!(j.verdict, Verdict::Live);
        assert!(
            j.reason.starts_with("/dev/pts/12 held by 4242 (cat)"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn a_session_makes_it_live() {
        let mut ev = orphan(999_999);
        ev.session = Some(77);
        let j = judge(&ev, &policy(0), NOW);
        assert_eq!(j.verdict, Verdict::Live);
        assert!(j.reason.contains("session 77"));
    }

    #[test]
    fn stale_needs_the_flag_and_the_silence() {
        let mut ev = orphan(7200);
        ev.slave_holders = vec![holder(1)];
        let mut p = policy(600);
        p.include_stale = Some(Duration::from_secs(3600));
        assert_eq!(judge(&ev, &p, NOW).verdict, Verdict::Stale);
        p.include_stale = Some(Duration::from_secs(10_000));
        assert_eq!(judge(&ev, &p, NOW).verdict, Verdict::Live);
        // --min-idle guards stale as well
        p.include_stale = Some(Duration::from_secs(60));
        p.min_idle = Duration::from_secs(9000);
        assert_eq!(judge(&ev, &p, NOW).verdict, Verdict::Live);
    }

    #[test]
    fn watched_is_tracked_and_fresh_wins_over_it() {
        let mut ev = orphan(3600);
        ev.watched_by = vec!["epoll fd 5".into()];
        let j = judge(&ev, &policy(600), NOW);
        assert_eq!(j.verdict, Verdict::Tracked);
        assert!(j.reason.contains("epoll fd 5"));
        assert_eq!(judge(&ev, &policy(7200), NOW).verdict, Verdict::Fresh);
    }

    #[test]
    fn aliases_of_a_hung_up_master_are_merged() {
        let mut ev = orphan(3600);
        ev.aliases = vec![9, 10];
        ev.watched_by = vec!["epoll fd 5".into()];
        let j = judge(&ev, &policy(0), NOW);
        assert_eq!(j.verdict, Verdict::Merged);
        assert!(
            j.reason.contains("one of 3 fds on this master (7,9,10)"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn fd_lists_are_ranges() {
        assert_eq!(fd_list(&[5, 3, 4, 6, 9, 11, 12]), "3-6,9,11,12");
        assert_eq!(fd_list(&[]), "");
        let many: Vec<i32> = (3..=492).collect();
        assert_eq!(fd_list(&many), "3-492");
        // what --fd takes back
        let text = fd_list(&[3, 4, 5, 8]);
        assert_eq!(
            crate::plan::parse_fd_list(&text).unwrap(),
            [3, 4, 5, 8].into()
        );
    }

    #[test]
    fn a_pair_held_by_the_target_alone_is_orphaned_as_a_pair() {
        let mut ev = orphan(3600);
        ev.target_slave_fds = vec![8];
        ev.hung_up = Some(false);
        let j = judge(&ev, &policy(0), NOW);
        assert_eq!(j.verdict, Verdict::Orphaned);
        assert!(j.reason.contains("both ends (slave fds 8)"), "{}", j.reason);
    }

    #[test]
    fn partial_visibility_makes_unknown() {
        let mut ev = orphan(3600);
        ev.unseen = Some("2 processes could not be read (permission): run as root".into());
        let j = judge(&ev, &policy(600), NOW);
        assert_eq!(j.verdict, Verdict::Unknown, "{}", j.reason);
        assert!(j.reason.contains("could not be read"), "{}", j.reason);
        // positive evidence stays: a held slave is live whatever else is unseen
        ev.slave_holders = vec![Holder {
            pid: 9,
            name: "cat".into(),
            fds: vec![0],
        }];
        assert_eq!(judge(&ev, &policy(600), NOW).verdict, Verdict::Live);
        let mut blind = orphan(3600);
        blind.blind_spots = vec!["pid 7 (reader) blocks in read() on its copy".into()];
        let j = judge(&blind, &policy(600), NOW);
        assert_eq!(j.verdict, Verdict::Unknown);
        assert!(j.reason.contains("blocks in read()"), "{}", j.reason);
    }

    #[test]
    fn other_master_holders_are_named() {
        let mut ev = orphan(3600);
        ev.other_master_holders = vec![Holder {
            pid: 1300,
            name: "node-helper".into(),
            fds: vec![12],
        }];
        let j = judge(&ev, &policy(0), NOW);
        assert_eq!(j.verdict, Verdict::Orphaned);
        assert!(
            j.reason.contains("also held by 1300 (node-helper)"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn missing_evidence_is_unknown_never_orphaned() {
        let mut ev = orphan(3600);
        ev.missing = Some("permission denied".into());
        assert_eq!(judge(&ev, &policy(0), NOW).verdict, Verdict::Unknown);
        let mut ev = orphan(3600);
        ev.last_io = None;
        assert_eq!(judge(&ev, &policy(0), NOW).verdict, Verdict::Unknown);
        let mut ev = orphan(3600);
        ev.pty = None;
        assert_eq!(judge(&ev, &policy(0), NOW).verdict, Verdict::Unknown);
        let mut ev = orphan(3600);
        ev.guarded = true;
        assert_eq!(judge(&ev, &policy(0), NOW).verdict, Verdict::Unknown);
    }

    #[test]
    fn unread_output_keeps_a_master_unless_it_crossed_an_exec() {
        let mut ev = orphan(3600);
        ev.unread_bytes = Some(13);
        let j = judge(&ev, &policy(0), NOW);
        assert_eq!(j.verdict, Verdict::Unread);
        assert!(
            j.reason.contains("13 bytes of output not read yet"),
            "{}",
            j.reason
        );
        ev.opened_by = Some(OpenedBy::SelfOpened);
        assert_eq!(judge(&ev, &policy(0), NOW).verdict, Verdict::Unread);
        ev.opened_by = Some(OpenedBy::Inherited);
        assert_eq!(judge(&ev, &policy(0), NOW).verdict, Verdict::Orphaned);
        // fresh still wins: too young to judge at all
        ev.opened_by = None;
        assert_eq!(judge(&ev, &policy(7200), NOW).verdict, Verdict::Fresh);
        ev.unread_bytes = Some(0);
        assert_eq!(judge(&ev, &policy(0), NOW).verdict, Verdict::Orphaned);
    }

    #[test]
    fn a_clock_step_backwards_never_makes_idle_negative() {
        let j = judge(&orphan(-50), &policy(0), NOW);
        assert_eq!(j.idle_s, Some(0));
    }

    /// The rules fed with evidence shaped like the macOS backend's: devfs is its one PTY
    /// namespace, and it has no POLLHUP probe without the fd, nor FIONREAD.
    mod macos_evidence {
        use crate::model::{DevId, Evidence, Holder, PtyId, Verdict};
        use crate::sys::macos::devices::slave_path;
        use crate::verdict::{judge, Policy};
        use std::time::Duration;

        const NOW: i64 = 1_800_000_000;
        /// devfs, the one "devpts instance" of a Mac.
        const DEVFS: DevId = DevId {
            major: 16,
            minor: 0,
        };

        fn mac_orphan(index: u32, idle: i64) -> Evidence {
            Evidence {
                fd: 30 + index as i32,
                pty: Some(PtyId {
                    devpts: DEVFS,
                    index,
                }),
                slave_path: Some(slave_path(index)),
                last_io: Some(NOW - idle),
                // macOS has no POLLHUP probe without the fd, nor FIONREAD
                hung_up: None,
                unread_bytes: None,
                ..Evidence::default()
            }
        }

        fn policy(min_idle: u64) -> Policy {
            Policy {
                min_idle: Duration::from_secs(min_idle),
                include_stale: None,
            }
        }

        #[test]
        fn mac_evidence_orphaned_fresh_live_tracked() {
            let j = judge(&mac_orphan(7, 7200), &policy(600), NOW);
            assert_eq!(j.verdict, Verdict::Orphaned);
            assert_eq!(j.reason, "no process holds /dev/ttys007; idle 2h");

            assert_eq!(
                judge(&mac_orphan(7, 60), &policy(600), NOW).verdict,
                Verdict::Fresh
            );

            let mut live = mac_orphan(8, 99_999);
            live.slave_holders = vec![Holder {
                pid: 4000,
                name: "zsh".into(),
                fds: vec![0, 1, 2],
            }];
            let j = judge(&live, &policy(0), NOW);
            assert_eq!(j.verdict, Verdict::Live);
            assert!(j.reason.starts_with("/dev/ttys008 held by 4000 (zsh)"));

            let mut tracked = mac_orphan(9, 7200);
            tracked.watched_by = vec!["kqueue fd 5".into()];
            let j = judge(&tracked, &policy(600), NOW);
            assert_eq!(j.verdict, Verdict::Tracked);
            assert!(j.reason.contains("kqueue fd 5"), "{}", j.reason);
        }

        #[test]
        fn mac_guarded_and_unreadable_kqueues_are_never_reaped() {
            let mut guarded = mac_orphan(3, 99_999);
            guarded.guarded = true;
            let j = judge(&guarded, &policy(0), NOW);
            assert_eq!(j.verdict, Verdict::Unknown);
            assert!(j.reason.contains("guarded"));

            let mut unknown_watch = mac_orphan(4, 99_999);
            unknown_watch.missing = Some("cannot read kqueue fd 5".into());
            assert_eq!(
                judge(&unknown_watch, &policy(0), NOW).verdict,
                Verdict::Unknown
            );
        }

        #[test]
        fn mac_session_and_pairs() {
            let mut ctty = mac_orphan(5, 99_999);
            ctty.session = Some(812);
            assert_eq!(judge(&ctty, &policy(0), NOW).verdict, Verdict::Live);

            let mut pair = mac_orphan(6, 3600);
            pair.target_slave_fds = vec![12];
            let j = judge(&pair, &policy(0), NOW);
            assert_eq!(j.verdict, Verdict::Orphaned);
            assert!(j.reason.contains("/dev/ttys006"));
            assert!(j.reason.contains("slave fds 12"));

            // one devfs instance: the same index is the same PTY, so two fds on it are aliases
            let mut dup = mac_orphan(6, 3600);
            dup.aliases = vec![40];
            assert_eq!(judge(&dup, &policy(0), NOW).verdict, Verdict::Merged);
        }
    }
}
