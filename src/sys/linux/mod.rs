//! Linux backend: procfs for the census, pidfd copies for the PTY ioctls, ptrace for reaping.

pub mod arch;
pub mod gadget;
pub mod inject;
mod inspect;
pub mod pidfd;
pub mod procfs;
pub mod ptrace;
pub mod pty;
pub mod scan;
mod system;
mod target;
mod watchers;

pub use inspect::inspect;
pub use target::{open as open_target, processes_named, Target};

use crate::model::Snapshot;

/// Every PTY fd on the machine and the system's usage.
pub fn snapshot() -> anyhow::Result<Snapshot> {
    let processes = scan::scan()?;
    let system = system::usage(&processes);
    Ok(Snapshot { processes, system })
}

/// Reaping lands with the injection engine (src/sys/linux/reap.rs, not yet in the module tree).
pub fn reap(
    target: &Target,
    _rows: &mut [crate::model::MasterRow],
) -> Result<std::time::Duration, crate::exit_code::UserError> {
    Err(crate::exit_code::UserError::failure(format!(
        "pid {}: this build of ptyreap only inspects; reaping is not available yet, nothing was changed",
        target.pid
    )))
}
