//! The whole OS surface. Everything above this module is plain data and pure logic.

#[cfg(target_os = "linux")]
pub mod linux;
