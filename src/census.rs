//! The census: who holds PTY masters and how many look orphaned, from a machine-wide snapshot.

use crate::model::{Census, ProcessCount, ProcessPtys, Snapshot};
use std::collections::HashMap;

/// Processes holding masters, most masters first. A master "looks orphaned" when no process but
/// its holder holds the slave and the slave is no session's controlling terminal (the full
/// verdict adds idleness and the event-loop check).
pub fn census(snapshot: &Snapshot) -> Census {
    let mut slave_holders: HashMap<_, Vec<i32>> = HashMap::new();
    for p in &snapshot.processes {
        for s in &p.slaves {
            let pids = slave_holders.entry(s.pty).or_default();
            if !pids.contains(&p.pid) {
                pids.push(p.pid);
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
        })
        .collect();
    processes.sort_by(|a, b| b.masters.cmp(&a.masters).then(a.pid.cmp(&b.pid)));
    Census {
        system: snapshot.system.clone(),
        processes,
    }
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
        }
    }

    #[test]
    fn counts_and_instances() {
        let snapshot = Snapshot {
            visibility: Default::default(),
            system: SystemUsage {
                in_use: 5,
                limit: 4096,
                limit_source: "x".into(),
                reserve: None,
                instances: None,
                unreadable_processes: 0,
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
                    }],
                    event_queues: vec![],
                },
                ProcessPtys {
                    pid: 20,
                    name: "bash".into(),
                    masters: vec![],
                    slaves: vec![SlaveRef {
                        fd: 0,
                        pty: pty(26, 1),
                    }],
                    event_queues: vec![],
                },
                ProcessPtys {
                    pid: 30,
                    name: "tmux".into(),
                    masters: vec![master(9, pty(26, 7))],
                    slaves: vec![],
                    event_queues: vec![],
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
