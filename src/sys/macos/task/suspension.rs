//! The app's threads held still while ptyreap works in it, each suspension announced to the
//! guardian first. Apart from ports.rs (raw ports) so the guardian, which uses those ports, and
//! the suspension, which uses the guardian, import in one direction only.

use super::super::ffi;
use super::guardian::Guardian;
use super::guardian_log::Record;
use super::ports::{suspend_count, thread_exited, thread_id, threads, Port};
use mach2::kern_return::KERN_SUCCESS;
use mach2::port::mach_port_t;
use std::time::{Duration, Instant};

/// The app's threads, each suspended once by us (`thread_suspend`, not `task_suspend`: a
/// suspended task would hold the thread we create in it too). Each suspension is announced to
/// the guardian first (guardian.rs), so a death of ptyreap leaves nothing suspended. Drop
/// resumes them.
pub struct Suspension {
    threads: Vec<Port>,
    /// Our own thread in the app: never suspended with the app's.
    ours: mach_port_t,
    started: Option<Instant>,
    resumed: bool,
}

impl Suspension {
    /// Suspends every thread of the task but `ours`, re-listing until no new thread appears (a
    /// running thread may create one between the listing and its suspension). Gives up after
    /// `limit`.
    pub fn all(
        task: &Port,
        ours: mach_port_t,
        guardian: &mut Guardian,
        limit: Duration,
    ) -> Result<Suspension, String> {
        let deadline = Instant::now() + limit;
        let mut held = Suspension {
            threads: Vec::new(),
            ours,
            started: None,
            resumed: false,
        };
        loop {
            if held.catch_up(task, guardian)? == 0 {
                return Ok(held);
            }
            if Instant::now() > deadline {
                return Err(
                    "the target keeps creating threads: could not suspend them all in time".into(),
                );
            }
        }
    }

    /// Suspends the threads that appeared since the last listing (the kernel creates workqueue
    /// threads unsuspended even now); returns how many. Called before each call and before
    /// resuming.
    pub fn catch_up(&mut self, task: &Port, guardian: &mut Guardian) -> Result<usize, String> {
        let listed = threads(task)
            .map_err(|kr| format!("cannot list the target's threads: {}", ffi::kern_name(kr)))?;
        let mut new = 0;
        for t in listed {
            if t.name() == self.ours || self.threads.iter().any(|h| h.name() == t.name()) {
                continue; // same name: the same thread (drop releases the extra reference)
            }
            let (Some(thread_id), Some(count)) = (thread_id(&t), suspend_count(&t)) else {
                continue; // exited between the listing and now
            };
            guardian.announce(Record::Suspending { thread_id, count })?;
            // SAFETY: a thread port we own.
            let kr = unsafe { mach2::thread_act::thread_suspend(t.name()) };
            match kr {
                KERN_SUCCESS => {
                    self.started.get_or_insert_with(Instant::now);
                    self.threads.push(t);
                    new += 1;
                }
                kr if thread_exited(kr) => {}
                kr => {
                    return Err(format!(
                        "cannot suspend a thread of the target: {}",
                        ffi::kern_name(kr)
                    ))
                }
            }
        }
        Ok(new)
    }

    /// Resumes every thread; returns how long the first one was suspended.
    pub fn resume(mut self) -> Duration {
        self.resume_all();
        self.started.map(|t| t.elapsed()).unwrap_or_default()
    }

    fn resume_all(&mut self) {
        if self.resumed {
            return;
        }
        self.resumed = true;
        for t in &self.threads {
            // SAFETY: a thread we suspended once; a thread that exited meanwhile just errs.
            unsafe { mach2::thread_act::thread_resume(t.name()) };
        }
    }
}

impl Drop for Suspension {
    fn drop(&mut self) {
        self.resume_all();
    }
}
