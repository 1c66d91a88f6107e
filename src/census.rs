//! The census: who holds PTY masters and how many look orphaned, from a machine-wide snapshot.

use crate::model::{Census, DevId, ProcessCount, ProcessPtys, PtyId, Snapshot};
use std::collections::HashMap;

/// Processes holding masters, most PTYs first. A PTY "looks orphaned" when no process but its
/// holder holds the slave and the slave is no session's controlling terminal (the full verdict
/// adds idleness and the event-loop check). Every count is of PTYs, not fds: after a merge, the
/// thirty fds of one process share one hung-up PTY, and that is one orphan, not thirty.
pub fn census(snapshot: &Snapshot) -> Census {
    census_at(snapshot, crate::clock::now_precise())
}

/// How far back a leak rate looks.
const RATE_WINDOW_S: f64 = 24.0 * 3600.0;

/// The census as of `now` (seconds since the epoch).
pub fn census_at(snapshot: &Snapshot, now: f64) -> Census {
    let mut slave_holders: HashMap<PtyId, Vec<i32>> = HashMap::new();
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
    let mut master_holders: HashMap<PtyId, Vec<i32>> = HashMap::new();
    for p in &snapshot.processes {
        for pty in p.masters.iter().filter_map(|m| m.pty) {
            let pids = master_holders.entry(pty).or_default();
            if !pids.contains(&p.pid) {
                pids.push(p.pid);
            }
        }
    }
    // the machine's orphans: orphaned as each of their master holders sees them, with when each
    // was made
    let orphans_of: Vec<HashMap<PtyId, Option<f64>>> = snapshot
        .processes
        .iter()
        .map(|p| orphaned_ptys(p, &slave_holders))
        .collect();
    let mut machine_orphans: HashMap<PtyId, (bool, Option<f64>)> = HashMap::new();
    for (p, mine) in snapshot.processes.iter().zip(&orphans_of) {
        for m in &p.masters {
            let Some(pty) = m.pty else { continue };
            let entry = machine_orphans.entry(pty).or_insert((true, m.created));
            entry.0 &= mine.contains_key(&pty);
            entry.1 = entry.1.or(m.created);
        }
    }
    let orphan_times = |on: Option<DevId>| -> Vec<f64> {
        machine_orphans
            .iter()
            .filter(|(pty, (orphan, _))| *orphan && on.is_none_or(|d| pty.devpts == d))
            .filter_map(|(_, (_, created))| *created)
            .collect()
    };
    let mut processes: Vec<ProcessCount> = snapshot
        .processes
        .iter()
        .zip(&orphans_of)
        .filter(|(p, _)| !p.masters.is_empty())
        .map(|(p, orphans)| {
            let times: Vec<f64> = orphans.values().filter_map(|c| *c).collect();
            ProcessCount {
                pid: p.pid,
                name: p.name.clone(),
                masters: p.masters.len(),
                ptys: distinct_ptys(p),
                orphaned: orphans.len(),
                ptys_only_here: only_here(p, &master_holders),
                leak_per_hour: sustained_pace(&times, now).map(per_hour),
                not_releasable_because: None,
            }
        })
        .collect();
    processes.sort_by(|a, b| {
        (b.ptys, b.masters)
            .cmp(&(a.ptys, a.masters))
            .then(a.pid.cmp(&b.pid))
    });
    let mut system = snapshot.system.clone();
    let global_pace = sustained_pace(&orphan_times(None), now);
    let global = time_left(system.in_use, Some(system.limit), global_pace);
    let (mut soonest, mut first) = (global, None);
    for inst in system.instances.iter_mut().flatten() {
        let pace = sustained_pace(&orphan_times(Some(inst.devpts)), now);
        inst.leak_per_hour = pace.map(per_hour);
        let own = inst.in_use.and_then(|used| time_left(used, inst.max, pace));
        // every instance also runs out when the whole system does
        inst.exhausted_in_s = [own, global].into_iter().flatten().min();
        if own.is_some_and(|t| soonest.is_none_or(|s| t < s)) {
            soonest = own;
            first = Some(inst.devpts);
        }
    }
    system.exhausted_first = first;
    system.leak_per_hour = global_pace.map(per_hour);
    system.exhausted_in_s = soonest;
    Census {
        system,
        processes,
        orphaned_ptys: machine_orphans.values().filter(|(o, _)| *o).count(),
        unseen: snapshot.visibility.gap(),
    }
}

fn per_hour(per_second: f64) -> f64 {
    (per_second * 3600.0 * 10.0).round() / 10.0
}

/// Seconds until `used` reaches `max` at `pace` PTYs a second: 0 when it is already there (full
/// now, whatever the pace), None when there is no limit or nothing grows.
fn time_left(used: u64, max: Option<u64>, pace: Option<f64>) -> Option<u64> {
    let max = max?;
    if used >= max {
        return Some(0);
    }
    let pace = pace.filter(|&p| p > 0.0)?;
    Some((((max - used) as f64) / pace).round().max(1.0) as u64)
}

/// The fewest orphans, and the shortest time, that make a pace: fewer is a handful of PTYs
/// anyone might leave behind; shorter is a burst, however it is spread.
const PACE_MIN_PTYS: usize = 6;
const PACE_MIN_SPAN_S: f64 = 2.0;

/// The pace (PTYs a second) at which orphans are being made now, from when each was made; None
/// when the times show no sustained growth. A leak is orphans made steadily and still being
/// made: a burst (terminals restored at start, 490 PTYs made at once) is no pace, and neither is
/// a leak that stopped. Looking back from now, the longest run of the latest orphans whose later
/// half (in time) holds about as many as its earlier half, spread over that later half, with
/// the last of them recent; the pace is the later half's, so a burst before a steady leak does
/// not inflate it and old orphans from before do not dilute it.
pub fn sustained_pace(times: &[f64], now: f64) -> Option<f64> {
    let mut times: Vec<f64> = times
        .iter()
        .copied()
        .filter(|&t| t >= now - RATE_WINDOW_S && t <= now)
        .collect();
    times.sort_by(f64::total_cmp);
    let n = times.len();
    for start in 0..n {
        let run = &times[start..];
        if run.len() < PACE_MIN_PTYS {
            break;
        }
        let span = now - run[0];
        if span < PACE_MIN_SPAN_S {
            break;
        }
        let mid = run[0] + span / 2.0;
        let early = run.partition_point(|&t| t < mid);
        let late = &run[early..];
        let (Some(&first_late), Some(&last)) = (late.first(), late.last()) else {
            continue;
        };
        let balanced = late.len() * 3 >= early && early * 3 >= late.len() && early >= 2;
        let spread = last - first_late >= 0.5 * (now - mid);
        let recent = now - last <= span / 4.0;
        if late.len() >= 3 && balanced && spread && recent {
            return Some(late.len() as f64 / (now - mid));
        }
    }
    None
}

/// How many PTYs its masters are on (a master it could not identify counts as one).
fn distinct_ptys(p: &ProcessPtys) -> usize {
    let known: std::collections::BTreeSet<PtyId> = p.masters.iter().filter_map(|m| m.pty).collect();
    known.len() + p.masters.iter().filter(|m| m.pty.is_none()).count()
}

fn only_here(p: &ProcessPtys, master_holders: &HashMap<PtyId, Vec<i32>>) -> usize {
    let mine: std::collections::BTreeSet<_> = p.masters.iter().filter_map(|m| m.pty).collect();
    mine.into_iter()
        .filter(|pty| master_holders.get(pty).is_some_and(|pids| pids == &[p.pid]))
        .count()
}

/// The PTYs of `p` that look orphaned from where it stands, each once, with when it was made.
fn orphaned_ptys(
    p: &ProcessPtys,
    slave_holders: &HashMap<PtyId, Vec<i32>>,
) -> HashMap<PtyId, Option<f64>> {
    let mut out: HashMap<PtyId, Option<f64>> = HashMap::new();
    let sessions: std::collections::HashSet<PtyId> = p
        .masters
        .iter()
        .filter(|m| m.session.is_some())
        .filter_map(|m| m.pty)
        .collect();
    for m in &p.masters {
        let Some(pty) = m.pty else { continue };
        let unheld = slave_holders
            .get(&pty)
            .is_none_or(|pids| pids.iter().all(|&pid| pid == p.pid));
        if unheld && !sessions.contains(&pty) {
            let created = out.entry(pty).or_insert(m.created);
            *created = created.or(m.created);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A steady leak is a pace; a burst, a leak that stopped, a handful and a burst before a
    /// steady leak are judged as what they are.
    #[test]
    fn only_a_sustained_leak_is_a_pace() {
        let now = 1000.0;
        // 10 a second for the last 4 s: 10/s
        let steady: Vec<f64> = (0..40).map(|i| now - 4.0 + i as f64 / 10.0).collect();
        let pace = sustained_pace(&steady, now).unwrap();
        assert!((pace - 10.0).abs() < 1.0, "{pace}");
        // the same after old orphans from an hour ago: the pace of the leak, not diluted
        let mut with_old = steady.clone();
        with_old.extend((0..20).map(|i| now - 3600.0 + i as f64));
        let pace = sustained_pace(&with_old, now).unwrap();
        assert!((pace - 10.0).abs() < 1.0, "{pace}");
        // 490 made at once at start, then one every 10 s for 5 minutes: 0.1/s
        let mut burst_then: Vec<f64> = vec![now - 3000.0; 490];
        burst_then.extend((0..30).map(|i| now - 300.0 + 10.0 * i as f64 + 5.0));
        let pace = sustained_pace(&burst_then, now).unwrap();
        assert!((pace - 0.1).abs() < 0.02, "{pace}");
        // a burst, then quiet: none
        let burst: Vec<f64> = (0..30).map(|i| now - 10.0 + i as f64 * 0.001).collect();
        assert_eq!(sustained_pace(&burst, now), None);
        // 490 at start and none since: none
        assert_eq!(sustained_pace(&[now - 600.0; 490], now), None);
        // a steady leak that stopped a while ago: none
        let stopped: Vec<f64> = (0..40).map(|i| now - 100.0 + i as f64 / 10.0).collect();
        assert_eq!(sustained_pace(&stopped, now), None);
        // a handful: none
        assert_eq!(
            sustained_pace(&[now - 3.0, now - 2.0, now - 1.0], now),
            None
        );
        // a burst an hour after one old orphan: none
        let mut late_burst = vec![now - 3600.0];
        late_burst.extend((0..30).map(|i| now - 60.0 + i as f64 * 0.001));
        assert_eq!(sustained_pace(&late_burst, now), None);
    }

    #[test]
    fn time_left_is_now_when_full() {
        assert_eq!(time_left(8, Some(8), None), Some(0));
        assert_eq!(time_left(9, Some(8), Some(1.0)), Some(0));
        assert_eq!(time_left(4, Some(8), None), None);
        assert_eq!(time_left(4, None, Some(1.0)), None);
        assert_eq!(time_left(4, Some(8), Some(2.0)), Some(2));
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
                exhausted_first: None,
                leak_per_hour: None,
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
                    unlisted_rings: vec![],
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
                    unlisted_rings: vec![],
                },
                ProcessPtys {
                    pid: 30,
                    name: "tmux".into(),
                    masters: vec![master(9, pty(26, 7))],
                    slaves: vec![],
                    event_queues: vec![],
                    started: None,
                    unlisted_rings: vec![],
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
