//! What a reap can leave behind in an app should the reaper and its guardian both die, and what
//! `ptyreap resume` does about each thread: our thread (parked at [`SENTINEL`]) is terminated,
//! the app's own lose one suspension. Pure, so it is unit-tested on Linux.

/// Classifies a vnode fd by its path, mode and rdev. A slave is a character device with the
/// slaves' major (learned from a /dev/ttysNNN node; when none is known, by its path).
/// Where the reaper's calls return to: inside __PAGEZERO (the first 4 GiB of every 64-bit Mac
/// process, mapped with no access), canonical on x86_64, 4-byte aligned on arm64. Checked per
/// target. Also how `ptyreap resume` knows a thread the reaper left behind.
pub const SENTINEL: u64 = 0x5eed_0000;

/// What `ptyreap resume` does with one thread of an app left suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeStep {
    /// A thread of the reaper's, left behind: parked at the sentinel, faulting there, or held
    /// inside a call that returns there. Resumed, it would fault with no handler of ours (and
    /// spin, its signals blocked): it is terminated instead.
    Terminate,
    /// Suspended: one suspension is dropped (the one ptyreap would have dropped; a debugger's
    /// own holds stay).
    Resume,
    /// Not suspended: left alone.
    Leave,
}

/// `pc`: the thread's pc; `returns_to`: its return address (arm64 lr; x86_64 the word at rsp).
pub fn resume_step(suspend_count: i32, pc: u64, returns_to: Option<u64>) -> ResumeStep {
    if pc == SENTINEL || returns_to == Some(SENTINEL) {
        ResumeStep::Terminate
    } else if suspend_count > 0 {
        ResumeStep::Resume
    } else {
        ResumeStep::Leave
    }
}

/// What `ptyreap resume` says it did.
pub fn resume_summary(pid: i32, name: &str, resumed: usize, terminated: usize) -> String {
    let who = format!("pid {pid} ({name})");
    match (resumed, terminated) {
        (0, 0) => format!("no thread of {who} is suspended: nothing to do"),
        (r, 0) => format!(
            "resumed {r} thread{} of {who} (one suspension each)",
            plural(r)
        ),
        (0, t) => format!("removed {t} thread{} ptyreap had left in {who}", plural(t)),
        (r, t) => format!(
            "removed {t} thread{} ptyreap had left in {who}, and resumed {r} thread{} (one \
             suspension each)",
            plural(t),
            plural(r)
        ),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resume_drops_one_suspension_and_removes_the_reapers_threads() {
        use super::{resume_step, resume_summary, ResumeStep, SENTINEL};
        assert_eq!(
            resume_step(1, 0x1_8000_0000, Some(0x1_8000_1000)),
            ResumeStep::Resume
        );
        assert_eq!(resume_step(3, 0x1_8000_0000, None), ResumeStep::Resume);
        assert_eq!(resume_step(0, 0x1_8000_0000, None), ResumeStep::Leave);
        // the reaper's thread: parked or faulting at the sentinel, or inside a call returning
        // there, whatever its count
        assert_eq!(resume_step(1, SENTINEL, None), ResumeStep::Terminate);
        assert_eq!(resume_step(0, SENTINEL, None), ResumeStep::Terminate);
        assert_eq!(
            resume_step(1, 0x1_8000_0000, Some(SENTINEL)),
            ResumeStep::Terminate
        );
        assert_eq!(
            resume_summary(7, "app", 0, 0),
            "no thread of pid 7 (app) is suspended: nothing to do"
        );
        assert_eq!(
            resume_summary(7, "app", 1, 0),
            "resumed 1 thread of pid 7 (app) (one suspension each)"
        );
        assert!(resume_summary(7, "app", 4, 1).starts_with("removed 1 thread ptyreap"));
    }
}
