//! The macOS engine, laid out like Linux's `ptrace/`: what holds a target and runs calls in it,
//! each file depending only on those above it.
//! - `ports.rs`: Mach ports with owners (task, threads, our exception port), and the raw task
//!   and thread calls on them.
//! - `guardian_log.rs`: the record of what is suspended, written before each step (builds on
//!   every OS, tested on Linux).
//! - `guardian.rs`: the guardian, ptyreap run under another name, which holds its own task port
//!   and puts the app back should ptyreap die.
//! - `suspension.rs`: [`Suspension`](suspension::Suspension), the guard holding the app's
//!   threads suspended, told to the guardian first.
//! - `thread.rs`: our thread in the target, which runs libsystem's close and dup2 there.
//!
//! The protocol that uses them, step by step, is `reap.rs` beside this folder.

pub mod guardian_log;
pub mod left_behind;

#[cfg(target_os = "macos")]
pub(super) mod guardian;
#[cfg(target_os = "macos")]
pub(super) mod ports;
#[cfg(target_os = "macos")]
pub(super) mod suspension;
#[cfg(target_os = "macos")]
pub(super) mod thread;
