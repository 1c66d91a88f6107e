//! ptrace: holding a whole process still, every thread seized and stopped, running syscalls
//! inside it on one of its threads, and always putting it back exactly and letting go.
//!
//! One concern per file, each depending only on those above it:
//! - `raw.rs`: the ptrace requests and `waitpid` stops themselves (seize, interrupt, detach,
//!   resume, signal masks and infos, waiting for a stop).
//! - `attach_error.rs`: [`AttachError`], why a process could not be stopped, and the diagnosis of
//!   an EPERM (`diagnose_eperm`).
//! - `stopped.rs`: [`StoppedProcess`], the guard holding every thread stopped, and
//!   [`in_tracer_thread`]; the kernel behaviour the stop relies on is described there.
//! - `dispatch.rs`: Syscall User Dispatch, which would turn our calls into the app's SIGSYS.
//! - `inject/`: the [`Injector`], which borrows a [`StoppedProcess`] and runs syscalls in it;
//!   the kernel behaviour injection relies on is described in its `mod.rs`, which holds the
//!   session (one call, restoring the thread). Beside it, one concern each: `error.rs`
//!   ([`InjectError`]), `thread.rs` (which thread, which instruction, scratch room),
//!   `filters.rs` (seccomp), `rseq.rs`, `signals.rs` (blocked, delivered, our traps drained) and
//!   `user_dispatch.rs`.
//!
//! The /proc files read on the way (stat, status, task) are read and parsed by `procfs`. The
//! tests of the injector (real processes, real ptrace) are in `inject_tests.rs`, the target
//! programs they run in `test_target.rs`.
//!
//! A session, in order: a [`SignalDeferral`](crate::sys::deferral::SignalDeferral), then [`in_tracer_thread`] running
//! [`StoppedProcess::stop`], any number of [`StoppedProcess::injector`]s one after another (each
//! restores its thread when dropped or [finished](Injector::finish)), then
//! [`StoppedProcess::resume`].

mod attach_error;
mod dispatch;
mod inject;
mod raw;
pub(crate) use raw::Request as PtraceRequest;
mod stopped;

#[cfg(test)]
mod inject_tests;
#[cfg(test)]
mod test_target;

pub use attach_error::AttachError;
#[cfg(test)]
use inject::errno_of;
pub use inject::{InjectError, Injector};
pub use stopped::{in_tracer_thread, StoppedProcess};
