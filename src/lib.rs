//! ptyreap: find and release leaked PTY masters.
//!
//! Data flows one way: arguments → targets → evidence (OS) → verdicts (pure) → plan →
//! confirmation → reap (OS) → outcomes → output. The library holds all of it (so fuzzers and
//! benchmarks can drive the parsers); `main.rs` parses, runs, prints an error once, and returns
//! the exit code.

pub mod app;
pub mod asar;
pub mod census;
pub mod cli;
pub mod clock;
pub mod confirm;
pub mod duration;
pub mod exit_code;
pub mod groups;
pub mod identity;
pub mod interrupt;
pub mod leaks;
pub mod limit;
pub mod metrics;
pub mod model;
pub mod new_file;
pub mod notify;
pub mod output;
pub mod parallel;
pub mod pipeline;
pub mod plan;
#[cfg(all(test, target_os = "linux"))]
mod proptests;
pub mod ptys;
pub mod reap;
pub mod render;
pub mod report;
pub mod rescue;
pub mod sys;
pub mod verdict;
pub mod watch;
