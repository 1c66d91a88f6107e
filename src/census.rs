//! The census: who holds PTY masters and how many look orphaned, from a machine-wide snapshot.

use crate::model::{Census, ProcessCount, ProcessPtys, Snapshot};
use std::collections::HashMap;

/// Processes holding masters, most masters first. A master "looks orphaned" when no process but
/// its holder holds the slave and the slave is no session's controlling terminal (the full
/// verdict adds idleness and the event-loop check).
pub fn census(snapshot: &Snapshot) -> Census {
    census_at(snapshot, crate::clock::now_precise())
}

/// How far back a leak rate looks.
const RATE_WINDOW_S: f64 = 24.0 * 3600.0;

/// The census as of `now` (seconds since the epoch).
pub fn census_at(snapshot: &Snapshot, now: f64) -> Census {
    let mut slave_holders: HashMap<_, Vec<i32>> = HashMap::new();
    for p in &snapshot.processes {
        for s in &p.slaves {
            // a slave held by a process's own io_uring is in use by it: not its own plain fd
            // (`orphaned` passes over those), so it is noted under a pid no process has
            let holder = if s.via_io_uring { -p.pid } else { p.pid };
            let pids = slave_holders.entry(s.pty).or_default();
            if !pids.contains(&holder) {
                pids.push(holder);
            }
        }
    }
    // how many processes hold each PTY's master
    let mut master_holders: HashMap<crate::model::PtyId, Vec<i32>> = HashMap::new();
    for p in &snapshot.processes {
        for pty in p.masters.iter().filter_map(|m| m.pty) {
            let pids = master_holders.entry(pty).or_default();
            if !pids.contains(&p.pid) {
                pids.push(p.pid);
            }
        }
    }
    let mut processes: Vec<ProcessCount> = snapshot
        .processes
        .iter()
        .filter(|p| !p.masters.is_empty())
        .map(|p| ProcessCount {
            pid: p.pid,
            name: p.name.clone(),
            masters: p.masters.len(),
            orphaned: orphaned(p, &slave_holders),
            ptys_only_here: only_here(p, &master_holders),
            leak_per_hour: leak_per_hour(p, now),
            not_releasable_because: None,
        })
        .collect();
    processes.sort_by(|a, b| b.masters.cmp(&a.masters).then(a.pid.cmp(&b.pid)));
    let mut system = snapshot.system.clone();
    system.exhausted_in_s = exhausted_in(snapshot, now);
    Census { system, processes }
}

/// Over the last 24 h, or the process's life if shorter.
fn window(p: &ProcessPtys, now: f64) -> f64 {
    p.started
        .map_or(RATE_WINDOW_S, |s| (now - s).clamp(1.0, RATE_WINDOW_S))
}

/// The process's PTYs made within its window, per hour: its leak rate, from the masters'
/// creation times (the slave nodes' ctimes).
fn leak_per_hour(p: &ProcessPtys, now: f64) -> f64 {
    let w = window(p, now);
    let recent: HashMap<crate::model::PtyId, f64> = recent_ptys(p, now).collect();
    let span = pace_span(recent.values().copied(), w, now);
    (recent.len() as f64 * 3600.0 / span * 10.0).round() / 10.0
}

/// The process's PTYs made within its window, with when.
fn recent_ptys(p: &ProcessPtys, now: f64) -> impl Iterator<Item = (crate::model::PtyId, f64)> + '_ {
    let since = now - window(p, now);
    p.masters
        .iter()
        .filter_map(|m| m.pty.zip(m.created))
        .filter(move |&(_, c)| c >= since)
}

/// The time over which PTYs made at `created` were made: from the first of them to now, once
/// there are a few (a leak that began after the process did is measured from its beginning), else
/// the whole window (one new terminal in an old process is no leak).
fn pace_span(created: impl Iterator<Item = f64>, window: f64, now: f64) -> f64 {
    let times: Vec<f64> = created.collect();
    if times.len() < 3 {
        return window;
    }
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let last = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // still going (spread over most of the time since the first), not a burst (an IDE restoring
    // its terminals at once): only then is the pace measured from the first
    if last - first < 0.5 * (now - first) {
        return window;
    }
    (now - first).clamp(1.0, window)
}

/// At the current rate, seconds until the first limit is reached: the global one, or a devpts
/// instance's own `max=` (counting that instance's PTYs alone). Every PTY counts once, however
/// many processes hold copies; the window is the longest of its holders' (at most 24 h).
fn exhausted_in(snapshot: &Snapshot, now: f64) -> Option<u64> {
    let mut created: HashMap<crate::model::PtyId, f64> = HashMap::new();
    let mut w: f64 = 0.0;
    for p in &snapshot.processes {
        let mut recent = recent_ptys(p, now).peekable();
        if recent.peek().is_some() {
            w = w.max(window(p, now));
        }
        created.extend(recent);
    }
    if created.is_empty() || w <= 0.0 {
        return None;
    }
    let span = pace_span(created.values().copied(), w, now);
    let rate = |n: usize| n as f64 / span; // per second
    let sys = &snapshot.system;
    let mut soonest: Option<f64> = None;
    let mut consider = |remaining: f64, per_s: f64| {
        if per_s > 0.0 {
            let t = (remaining.max(0.0)) / per_s;
            soonest = Some(soonest.map_or(t, |s: f64| s.min(t)));
        }
    };
    consider(sys.limit as f64 - sys.in_use as f64, rate(created.len()));
    for inst in sys.instances.iter().flatten() {
        if let (Some(max), Some(used)) = (inst.max, inst.in_use) {
            let here = created.keys().filter(|p| p.devpts == inst.devpts).count();
            consider(max as f64 - used as f64, rate(here));
        }
    }
    soonest.map(|t| t.round() as u64)
}

fn only_here(p: &ProcessPtys, master_holders: &HashMap<crate::model::PtyId, Vec<i32>>) -> usize {
    let mine: std::collections::BTreeSet<_> = p.masters.iter().filter_map(|m| m.pty).collect();
    mine.into_iter()
        .filter(|pty| master_holders.get(pty).is_some_and(|pids| pids == &[p.pid]))
        .count()
}

fn orphaned(p: &ProcessPtys, slave_holders: &HashMap<crate::model::PtyId, Vec<i32>>) -> usize {
    p.masters
        .iter()
        .filter(|m| m.session.is_none())
        .filter_map(|m| m.pty)
        .filter(|pty| {
            slave_holders
                .get(pty)
                .is_none_or(|pids| pids.iter().all(|&pid| pid == p.pid))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_is_measured_from_the_leak_s_beginning() {
        // a steady leak that began 10 s ago in a process an hour old: 30 PTYs over 10 s
        let times = (0..30).map(|i| 1000.0 + i as f64 / 3.0);
        assert_eq!(pace_span(times, 3600.0, 1010.0), 10.0);
        // one new terminal: the whole window, not a burst
        assert_eq!(pace_span([1009.0].into_iter(), 3600.0, 1010.0), 3600.0);
        // three opened together 10 s ago (terminals restored at start): a burst, no pace
        let burst = [1000.0, 1000.1, 1000.2].into_iter();
        assert_eq!(pace_span(burst, 3600.0, 1010.0), 3600.0);
    }
    use crate::model::{DevId, MasterRef, PtyId, SlaveRef, SystemUsage};

    fn pty(instance: u32, index: u32) -> PtyId {
        PtyId {
            devpts: DevId {
                major: 0,
                minor: instance,
            },
            index,
        }
    }

    fn master(fd: i32, p: PtyId) -> MasterRef {
        MasterRef {
            fd,
            pty: Some(p),
            session: None,
            created: None,
        }
    }

    #[test]
    fn counts_and_instances() {
        let snapshot = Snapshot {
            visibility: Default::default(),
            polls: Default::default(),
            system: SystemUsage {
                in_use: 5,
                limit: 4096,
                limit_source: "x".into(),
                reserve: None,
                instances: None,
                unreadable_processes: 0,
                exhausted_in_s: None,
            },
            processes: vec![
                ProcessPtys {
                    pid: 10,
                    name: "leaky".into(),
                    // pty 0:26/1 is held by the shell below; 0:99/1 (same index, other
                    // instance) is not; 0:26/2 has a session; 0:26/3 is a pair held alone
                    masters: vec![
                        master(3, pty(26, 1)),
                        master(4, pty(99, 1)),
                        MasterRef {
                            session: Some(5),
                            ..master(5, pty(26, 2))
                        },
                        master(6, pty(26, 3)),
                    ],
                    slaves: vec![SlaveRef {
                        fd: 7,
                        pty: pty(26, 3),
                        via_io_uring: false,
                    }],
                    event_queues: vec![],
                    started: None,
                },
                ProcessPtys {
                    pid: 20,
                    name: "bash".into(),
                    masters: vec![],
                    slaves: vec![SlaveRef {
                        fd: 0,
                        pty: pty(26, 1),
                        via_io_uring: false,
                    }],
                    event_queues: vec![],
                    started: None,
                },
                ProcessPtys {
                    pid: 30,
                    name: "tmux".into(),
                    masters: vec![master(9, pty(26, 7))],
                    slaves: vec![],
                    event_queues: vec![],
                    started: None,
                },
            ],
        };
        let c = census(&snapshot);
        assert_eq!(c.processes.len(), 2);
        assert_eq!(
            (
                c.processes[0].pid,
                c.processes[0].masters,
                c.processes[0].orphaned
            ),
            (10, 4, 2)
        );
        assert_eq!((c.processes[1].pid, c.processes[1].orphaned), (30, 1));
    }
}
