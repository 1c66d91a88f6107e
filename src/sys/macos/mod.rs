//! macOS backend: libproc for the census and the evidence, the Mach task APIs for reaping.
//!
//! Why these APIs: macOS has no /proc and no pidfd_getfd, so nothing outside a process can hold
//! a copy of its fds. libproc (`proc_pidinfo`, `proc_pidfdinfo`) describes every fd of every
//! process of the same user (all of them as root) without a task port: vnode path and rdev tell a
//! master (`/dev/ptmx`, minor = PTY index) and a slave (`/dev/ttysNNN`), and the knotes of the
//! target's kqueues (fd kqueues, the workqueue kqueue, libdispatch's workloops) tell whether its
//! event loop still watches a master. A select()/poll() loop leaves no knote to list: with the
//! task port (root) its waiting threads are read instead (`watchers.rs`, decoded in `waits.rs`). Releasing an fd needs the
//! target itself to call close() or dup2(): with its task port we suspend its threads, create a
//! thread of ours in it that starts at libsystem's function and returns into an unmapped
//! sentinel, catch that fault on an exception port of ours, read the result and terminate the
//! thread. No code is injected (the hardened runtime would forbid it anyway), and of the app's
//! memory only the stack we allocate there is written — plus, when a call fails, libc's legacy
//! global `errno` (task/thread.rs).
//!
//! macOS refuses task ports for hardened-runtime apps while System Integrity Protection is on,
//! even to root: that case is reported plainly (`refusals::task_port_refusal`) with what the user
//! can do, and the census and dry runs keep working.
//!
//! Layout: the engine (ports, the guardian, the suspension, our thread) is the `task/` folder;
//! `reap.rs` is the protocol that drives it, one function per step. `ffi` (kernel structures,
//! fixed-width, and the `KERN_*` names), `devices` (what an fd is), `refusals` (whether a call
//! can run, and the words for each refusal), `arch` (thread states), the guardian's log and
//! `task/left_behind` (what `ptyreap resume` does) are pure and build on every OS, so their
//! tests run on Linux; the rest is macOS only.

// On other systems only the tests use the layouts and pure logic.
#![cfg_attr(not(target_os = "macos"), allow(dead_code))]

pub mod arch;
pub mod devices;
pub mod ffi;
pub mod preflight;
pub mod refusals;
pub mod task;
pub mod waits;

#[cfg(target_os = "macos")]
mod info;
#[cfg(target_os = "macos")]
mod inspect;
#[cfg(target_os = "macos")]
mod libproc;
#[cfg(target_os = "macos")]
mod reap;
#[cfg(target_os = "macos")]
mod resume;
#[cfg(target_os = "macos")]
mod scan;
#[cfg(target_os = "macos")]
mod target;
#[cfg(target_os = "macos")]
mod watchers;

#[cfg(target_os = "macos")]
pub use info::{process_info, start_time};
#[cfg(target_os = "macos")]
pub use inspect::inspect;
#[cfg(target_os = "macos")]
pub use reap::reap;
#[cfg(target_os = "macos")]
pub use resume::resume;
#[cfg(target_os = "macos")]
pub use scan::snapshot;
#[cfg(target_os = "macos")]
pub use target::{open as open_target, processes_named, release_refusals, Target};
#[cfg(target_os = "macos")]
pub use task::guardian::run_if_guardian;
