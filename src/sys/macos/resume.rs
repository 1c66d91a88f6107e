//! `ptyreap resume --pid N`: the way back for an app left suspended, should both the reaper and
//! its guardian have died inside the window (a `kill -9` of both, a crash of the machine's
//! watchdog that took the guardian with it). `thread_suspend` counts have no owner, so nothing
//! else would ever resume it (osfmk/kern/thread_act.c: `user_stop_count` is a plain count).
//!
//! Each thread of the app with a suspension loses one (`thread_resume`): the one the reaper
//! would have dropped, leaving any other holder's (a debugger's) in place. A thread the reaper
//! created and left behind is terminated, never resumed (`left_behind::resume_step`). A task
//! suspended as a whole is not touched: that suspension is not ptyreap's.

use super::ffi;
use super::target;
use super::task::left_behind::{self, ResumeStep};
use super::task::ports::{self, Port};
use crate::exit_code::{ExitCode, UserError};

pub fn resume(pid: i32) -> anyhow::Result<ExitCode> {
    let target = target::open(pid)?;
    let task = target.task_port()?;
    let threads = ports::threads(&task).map_err(|kr| {
        UserError::failure(format!(
            "cannot list the threads of pid {pid} ({}): {}; nothing was changed",
            target.name,
            ffi::kern_name(kr)
        ))
    })?;
    let (mut resumed, mut terminated) = (0, 0);
    for t in &threads {
        let Some(count) = ports::suspend_count(t) else {
            continue; // exited meanwhile
        };
        let Ok(state) = ports::thread_state(t) else {
            continue;
        };
        match left_behind::resume_step(count, pc_of(&state), returns_to(&task, &state)) {
            ResumeStep::Terminate => {
                // SAFETY: a thread the reaper created in the app and left behind.
                if unsafe { ports::thread_terminate(t.name()) } == 0 {
                    terminated += 1;
                }
            }
            ResumeStep::Resume => {
                // SAFETY: a suspended thread of the app; one suspension dropped.
                if unsafe { mach2::thread_act::thread_resume(t.name()) } == 0 {
                    resumed += 1;
                }
            }
            ResumeStep::Leave => {}
        }
    }
    println!(
        "{}",
        left_behind::resume_summary(pid, &target.name, resumed, terminated)
    );
    if let Some(n @ 1..) = ports::task_suspend_count(&task) {
        println!(
            "the task itself is also suspended ({n} time(s), by a debugger or pid_suspend, not \
             by ptyreap): that debugger resumes it"
        );
    }
    Ok(ExitCode::Success)
}

#[cfg(target_arch = "aarch64")]
fn pc_of(state: &ports::state::State) -> u64 {
    state.pc
}
#[cfg(target_arch = "aarch64")]
fn returns_to(_: &Port, state: &ports::state::State) -> Option<u64> {
    Some(state.lr)
}
#[cfg(target_arch = "x86_64")]
fn pc_of(state: &ports::state::State) -> u64 {
    state.rip
}
#[cfg(target_arch = "x86_64")]
fn returns_to(task: &Port, state: &ports::state::State) -> Option<u64> {
    let mut word = [0u8; 8];
    ports::read_memory(task, state.rsp, &mut word).ok()?;
    Some(u64::from_le_bytes(word))
}
