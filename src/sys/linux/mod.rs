//! Linux backend: procfs for the census, pidfd copies for the PTY ioctls, ptrace for reaping.

pub mod arch;
pub mod gadget;
pub mod inject;
pub mod pidfd;
pub mod ptrace;
