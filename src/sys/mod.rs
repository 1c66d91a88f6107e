//! The whole OS surface: `snapshot()` (every PTY fd on the machine and the system's usage),
//! `open_target(pid)`, `processes_named(name)`, `inspect(target, snapshot)`, and reaping.
//! Everything above this module is plain data and pure logic; everything below it is one module
//! per OS.

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub use linux::{inspect, open_target, processes_named, snapshot, Target};

#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
pub use unsupported::{inspect, open_target, processes_named, snapshot, Target};
