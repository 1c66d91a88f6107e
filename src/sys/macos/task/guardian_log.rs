//! What the reaper tells its guardian, and what the guardian repairs if the reaper dies.
//!
//! `thread_suspend` counts have no owner: if ptyreap died with the app's threads suspended, they
//! would stay suspended for good. So before suspending anything the reaper starts a guardian
//! process (guardian.rs) that holds its own task port for the app and reads this log from a pipe.
//! Each line is written *before* the act it announces:
//! - `S <thread_id> <suspend_count>`: about to suspend that thread, whose count is that now;
//! - `O <thread_id> <stack>`: a thread of ours was created in the app, with the stack we
//!   allocated for it there (announced right after `thread_create`, before anything else is done
//!   with it);
//! - `D`: everything is resumed and our thread is gone: nothing to repair.
//!
//! If the pipe ends without `D` (the reaper died: kill -9, a crash, a kernel guard exception),
//! the guardian resumes each announced thread whose count is still above the one announced —
//! exactly once, so a thread the reaper never got to suspend, or already resumed, is left alone —
//! after terminating our threads and freeing their stacks: ours first, because a thread of ours
//! that was inside a call when the reaper died faults at its return address with no handler left,
//! and must be gone before the app runs again (guardian.rs). Thread ids (THREAD_IDENTIFIER_INFO) are unique for the boot, so
//! the guardian names the same threads through its own ports.
//!
//! Pure, so it is tested on Linux.

/// One line of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Suspending { thread_id: u64, count: i32 },
    Ours { thread_id: u64, stack: u64 },
    Done,
}

impl Record {
    pub fn line(&self) -> String {
        match self {
            Record::Suspending { thread_id, count } => format!("S {thread_id} {count}\n"),
            Record::Ours { thread_id, stack } => format!("O {thread_id} {stack:#x}\n"),
            Record::Done => "D\n".to_string(),
        }
    }

    pub fn parse(line: &str) -> Option<Record> {
        let mut words = line.split_ascii_whitespace();
        let record = match words.next()? {
            "S" => Record::Suspending {
                thread_id: words.next()?.parse().ok()?,
                count: words.next()?.parse().ok()?,
            },
            "O" => Record::Ours {
                thread_id: words.next()?.parse().ok()?,
                stack: u64::from_str_radix(words.next()?.strip_prefix("0x")?, 16).ok()?,
            },
            "D" => Record::Done,
            _ => return None,
        };
        words.next().is_none().then_some(record)
    }
}

/// The log as read so far (bytes may arrive split anywhere).
#[derive(Debug, Default)]
pub struct Log {
    partial: Vec<u8>,
    suspending: Vec<(u64, i32)>,
    ours: Vec<(u64, u64)>,
    done: bool,
}

/// What the guardian does once the pipe has ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Threads to resume, once each.
    pub resume: Vec<u64>,
    /// Threads of ours to terminate, before anything is resumed.
    pub terminate: Vec<u64>,
    /// The stacks of the threads of ours terminated, to free once they are gone. Only of a
    /// thread still alive: a stack whose thread is gone was freed by the reaper already, and the
    /// app may have been given that memory since.
    pub free_stacks: Vec<u64>,
}

impl Log {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            // a line cut short by the reaper's death is not a record
            let record = std::str::from_utf8(&line).ok().and_then(Record::parse);
            match record {
                Some(Record::Suspending { thread_id, count }) => {
                    self.suspending.push((thread_id, count))
                }
                Some(Record::Ours { thread_id, stack }) => self.ours.push((thread_id, stack)),
                Some(Record::Done) => self.done = true,
                None => {}
            }
        }
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// Given each live thread's id and suspend count now: what to repair.
    pub fn repairs(&self, now: &[(u64, i32)]) -> Repairs {
        if self.done {
            return Repairs::default();
        }
        let count_of = |id: u64| now.iter().find(|t| t.0 == id).map(|t| t.1);
        let mut resume = Vec::new();
        for &(id, before) in &self.suspending {
            // announced twice (re-listed): resume once
            if !resume.contains(&id) && count_of(id).is_some_and(|c| c > before) {
                resume.push(id);
            }
        }
        let alive: Vec<(u64, u64)> = self
            .ours
            .iter()
            .copied()
            .filter(|&(id, _)| count_of(id).is_some())
            .collect();
        Repairs {
            resume,
            terminate: alive.iter().map(|&(id, _)| id).collect(),
            free_stacks: alive.iter().map(|&(_, stack)| stack).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_junk_is_no_record() {
        for r in [
            Record::Suspending {
                thread_id: u64::MAX,
                count: 0,
            },
            Record::Suspending {
                thread_id: 7,
                count: 3,
            },
            Record::Ours {
                thread_id: 12,
                stack: 0x1_0400_0000,
            },
            Record::Done,
        ] {
            assert_eq!(Record::parse(&r.line()), Some(r));
        }
        for junk in [
            "",
            "S",
            "S 1",
            "S x 1",
            "O",
            "O 12",
            "O 12 4096",
            "O 12 0x1 2",
            "D D",
            "X 1",
            "S 1 2 3",
            "S -1 0",
        ] {
            assert_eq!(Record::parse(junk), None, "{junk:?}");
        }
    }

    fn log_of(records: &[Record]) -> Log {
        let mut log = Log::default();
        let text: String = records.iter().map(Record::line).collect();
        // split at every byte: the pipe may deliver any pieces
        for b in text.as_bytes() {
            log.feed(std::slice::from_ref(b));
        }
        log
    }

    #[test]
    fn a_reaper_that_finished_leaves_nothing_to_repair() {
        let log = log_of(&[
            Record::Ours {
                thread_id: 9,
                stack: 0x9000,
            },
            Record::Suspending {
                thread_id: 1,
                count: 0,
            },
            Record::Done,
        ]);
        assert!(log.done());
        assert_eq!(log.repairs(&[(1, 1), (9, 0)]), Repairs::default());
    }

    #[test]
    fn a_dead_reaper_is_repaired_exactly_once_per_thread() {
        let log = log_of(&[
            Record::Ours {
                thread_id: 9,
                stack: 0x9000,
            },
            Record::Ours {
                thread_id: 8, // an earlier thread of ours, already gone: its stack was freed
                stack: 0x8000,
            },
            Record::Suspending {
                thread_id: 1,
                count: 0,
            },
            Record::Suspending {
                thread_id: 2,
                count: 1, // the app (or a debugger) held it already: keep that one
            },
            Record::Suspending {
                thread_id: 3,
                count: 0, // died before suspending it: count still 0
            },
            Record::Suspending {
                thread_id: 1,
                count: 0, // announced again on a re-listing
            },
            Record::Suspending {
                thread_id: 4,
                count: 0, // exited meanwhile
            },
        ]);
        assert!(!log.done());
        let now = [(1, 1), (2, 2), (3, 0), (9, 1), (5, 0)];
        assert_eq!(
            log.repairs(&now),
            Repairs {
                resume: vec![1, 2],
                terminate: vec![9],
                free_stacks: vec![0x9000],
            }
        );
        // already resumed by the reaper before it died: nothing to do
        assert_eq!(
            log.repairs(&[(1, 0), (2, 1), (3, 0)]).resume,
            Vec::<u64>::new()
        );
    }

    #[test]
    fn a_line_cut_by_death_is_ignored() {
        let mut log = Log::default();
        log.feed(b"S 1 0\nS 2 0\nS 3");
        assert_eq!(log.repairs(&[(1, 1), (2, 1), (3, 1)]).resume, vec![1, 2]);
        log.feed(b"\xff\xfe\n");
        assert_eq!(log.repairs(&[(1, 1), (2, 1), (3, 1)]).resume, vec![1, 2]);
    }
}
