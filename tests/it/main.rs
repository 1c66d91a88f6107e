//! The integration tests, one test binary (as ripgrep does): each module is one area, all of them
//! sharing `support` (the leaking fixture, the do-no-harm victim, running `ptyreap`, reading
//! /proc), compiled once. Run one area with `cargo test --test it reap::`.

mod support;

mod bad_input;
mod chaos;
mod confirm;
mod devpts_instances;
mod emergency;
mod evidence;
mod exhaustion;
mod fixture;
mod harm;
mod inspect;
mod nodepty;
mod output;
mod platform;
mod programs;
mod ptys;
mod races;
mod reap;
mod report;
mod sigkill;
mod signals;
mod soak;
mod stops;
mod watch;
