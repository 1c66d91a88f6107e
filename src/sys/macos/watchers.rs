//! The threads of the target that wait in select()/poll() on one of our fds, read through its
//! task port: each thread's saved user state (`thread_get_state`) tells the call it is in and its
//! arguments, the target's memory (`mach_vm_read_overwrite`) the fd sets. Decoding is pure
//! (`waits.rs`, `arch`); why the registers and buffers still hold the call while the thread
//! waits is explained there.
//!
//! Used twice: by the inspection when root can have the task port (a select() loop like tmux's
//! then reads as `tracked`, as on Linux), and by the reaper inside its suspension, where a
//! waiter is one more reason not to close: the app would wake on a recycled fd number.
//!
//! Our state flavor is our own architecture's: the reaper refuses other targets before it gets
//! here; for inspection, a thread whose state the kernel refuses in our flavor (a translated
//! process may be one) is unreadable, so the verdict becomes unknown rather than untracked.

use super::arch;
use super::ffi::kern_name;
use super::task::ports::{self, Port};
use super::waits::{self, Syscall, WaitCall};
use crate::model::MasterRow;
use mach2::kern_return::KERN_TERMINATED;
use mach2::message::MACH_SEND_INVALID_DEST;
use mach2::port::mach_port_t;
use ports::state::State;
use std::collections::{BTreeMap, BTreeSet};

#[cfg(target_arch = "aarch64")]
const TRAP: &[u8] = &arch::arm64::TRAP;
#[cfg(target_arch = "x86_64")]
const TRAP: &[u8] = &arch::x86_64::TRAP;

/// What the target's threads wait on.
#[derive(Debug, Default)]
pub struct ThreadWaits {
    /// fd → "select() in thread N", "poll() in thread N".
    pub by_fd: BTreeMap<i32, Vec<String>>,
    /// Why some thread's call or set could not be read (then no waiter is not proof).
    pub unreadable: Option<String>,
}

/// The waiters on `fds` among the task's threads, but `ours` (the reaper's own thread, parked in
/// the target: it waits on nothing of the app's, and must not make its fds unreadable).
pub fn waits(task: &Port, fds: &BTreeSet<i32>, ours: Option<mach_port_t>) -> ThreadWaits {
    let mut out = ThreadWaits::default();
    let Some(&max) = fds.iter().next_back() else {
        return out;
    };
    let below = max.saturating_add(1);
    let threads = match ports::threads(task) {
        Ok(t) => t,
        Err(kr) => {
            out.unreadable = Some(format!(
                "cannot list the target's threads ({})",
                kern_name(kr)
            ));
            return out;
        }
    };
    for (i, th) in threads.iter().enumerate() {
        if Some(th.name()) == ours {
            continue;
        }
        match thread_waits(task, th, below) {
            Ok(None) => {}
            Ok(Some((call, waited))) => {
                let label = format!("{}() in thread {}", call.name(), thread_name(th, i));
                for fd in waited.into_iter().filter(|fd| fds.contains(fd)) {
                    out.by_fd.entry(fd).or_default().push(label.clone());
                }
            }
            Err(why) => {
                out.unreadable.get_or_insert_with(|| {
                    format!(
                        "cannot read what thread {} of the target waits on ({why})",
                        thread_name(th, i)
                    )
                });
            }
        }
    }
    out
}

/// For the reaper, inside its suspension: each planned fd a thread waits on, with the detail
/// for its `changed` result. Err: some thread could not be read, so no fd can be cleared.
pub fn planned_fds_waited_on(
    task: &Port,
    ours: mach_port_t,
    fds: &[i32],
) -> Result<BTreeMap<i32, String>, String> {
    let set: BTreeSet<i32> = fds.iter().copied().collect();
    let w = waits(task, &set, Some(ours));
    if let Some(why) = w.unreadable {
        return Err(why);
    }
    Ok(w.by_fd
        .into_iter()
        .map(|(fd, who)| {
            let detail = format!(
                "a thread of the target waits on it in select()/poll() ({})",
                who.join(", ")
            );
            (fd, detail)
        })
        .collect())
}

/// The reaper's one call, inside the suspension after re-verifying: every row of `go` whose fd
/// (or a slave fd released with it) a thread waits on leaves `go` as `changed`, and all of them
/// do when some thread could not be read (we never close what we could not check).
pub fn hold_back_waited(
    task: &Port,
    ours: mach_port_t,
    rows: &mut [MasterRow],
    go: &mut Vec<usize>,
) {
    use super::reap::{hold_back, released_fds};
    let fds: Vec<i32> = go.iter().flat_map(|&i| released_fds(&rows[i])).collect();
    let waited = planned_fds_waited_on(task, ours, &fds);
    hold_back(rows, go, |row| match &waited {
        Ok(by_fd) => released_fds(row)
            .iter()
            .find_map(|fd| by_fd.get(fd))
            .cloned(),
        Err(why) => Some(format!(
            "{why}, so ptyreap cannot tell whether it still uses it"
        )),
    });
}

/// The call one thread waits in and its fds below `below`; None when it waits in none (or it
/// exited meanwhile).
fn thread_waits(
    task: &Port,
    thread: &Port,
    below: i32,
) -> Result<Option<(WaitCall, Vec<i32>)>, String> {
    let state = match ports::thread_state(thread) {
        Ok(s) => s,
        Err(KERN_TERMINATED | MACH_SEND_INVALID_DEST) => return Ok(None),
        Err(kr) => return Err(format!("thread_get_state: {}", kern_name(kr))),
    };
    let mut read =
        |addr: u64, buf: &mut [u8]| ports::read_memory(task, addr, buf).map_err(kern_name);
    let Some(call) = syscall_of(&state) else {
        just_returned(&state, &mut read)?;
        return Ok(None);
    };
    waits::thread_waits_on(&call, TRAP, below, &mut read)
}

/// x86_64: a thread held just past `syscall` with a result in rax: Err if that call was a
/// select or poll (see `waits::x86_returned_from`). arm64 keeps the number in x16, so
/// `syscall_of` has already told.
#[cfg(target_arch = "x86_64")]
fn just_returned(state: &State, read: &mut waits::Reader<'_>) -> Result<(), String> {
    let mut code = [0u8; 10];
    match read(state.rip.wrapping_sub(10), &mut code) {
        Ok(()) => waits::x86_returned_from(&code, state.rdi),
        Err(_) => Ok(()), // no code there: not a thread past a libsystem stub
    }
}
#[cfg(target_arch = "aarch64")]
fn just_returned(_: &State, _: &mut waits::Reader<'_>) -> Result<(), String> {
    Ok(())
}

#[cfg(target_arch = "aarch64")]
fn syscall_of(state: &State) -> Option<Syscall> {
    Some(arch::arm64::syscall(state))
}
#[cfg(target_arch = "x86_64")]
fn syscall_of(state: &State) -> Option<Syscall> {
    arch::x86_64::syscall(state)
}

/// The thread's system-wide id (THREAD_IDENTIFIER_INFO, what `sample` and lldb show), else its
/// place in the task's list.
fn thread_name(thread: &Port, index: usize) -> String {
    ports::thread_id(thread).map_or_else(|| format!("#{}", index + 1), |id| id.to_string())
}
