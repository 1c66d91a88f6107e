//! ptyreap: find and release leaked PTY masters.
//!
//! Data flows one way: arguments → targets → evidence (OS) → verdicts (pure) → plan →
//! confirmation → reap (OS) → outcomes → output. The library holds all of it, private to the
//! crate but for what `main.rs` calls (`Cli`, `run`, the exit codes) and the hidden `testing`
//! module (the parsers the fuzzers drive, the engine pieces tests hold by hand); `main.rs`
//! parses, runs, prints an error once, and returns the exit code.

mod app;
mod asar;
mod census;
mod cli;
mod clock;
mod confirm;
mod duration;
pub mod exit_code;
mod groups;
mod identity;
mod interrupt;
mod leaks;
mod limit;
mod metrics;
mod model;
mod new_file;
mod notify;
mod output;
mod parallel;
mod pipeline;
mod plan;
#[cfg(all(test, target_os = "linux"))]
mod proptests;
mod ptys;
mod reap;
mod render;
mod report;
mod rescue;
mod sys;
mod verdict;
mod watch;

pub use app::run;
pub use cli::Cli;
pub use sys::run_if_guardian;

/// What the fuzz targets and the integration tests reach inside the library: the parsers they
/// fuzz, and the engine pieces a test drives by hand. Not an API; everything else is private to
/// the crate, so the compiler reports what nothing calls.
#[doc(hidden)]
pub mod testing {
    pub use crate::model::Method;
    pub use crate::pipeline::judge_target;
    pub use crate::plan::Choices;
    pub use crate::sys::{open_target, reap, snapshot};
    pub use crate::verdict::Policy;

    #[cfg(target_os = "linux")]
    pub use crate::sys::linux::{
        pidfd::Pidfd,
        ptrace::{InjectError, StoppedProcess},
    };

    /// The Electron archive reader (asar.rs).
    pub mod asar {
        pub use crate::asar::{build, locate, parse_header};
    }

    /// The /proc parsers (sys/linux/procfs.rs).
    #[cfg(target_os = "linux")]
    pub mod procfs {
        pub use crate::sys::linux::procfs::{
            parse_epoll_tfds, parse_fd_flags, parse_mountinfo, parse_stat, parse_syscall,
            parse_tty_index, start_time, status_field,
        };
    }

    /// The ELF and /proc/PID/maps parsers (sys/linux/gadget.rs).
    #[cfg(target_os = "linux")]
    pub mod gadget {
        pub use crate::sys::linux::gadget::{parse_maps, scan_elf};
    }
}
