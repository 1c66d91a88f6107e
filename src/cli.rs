//! The command line. `--help` is written to teach: what each mode does, what is safe, examples.

use crate::model::Method;
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

const ABOUT: &str = "Find and release leaked pseudoterminal (PTY) masters in running processes";

const LONG_ABOUT: &str = "\
Find and release leaked pseudoterminal (PTY) masters in running processes.

Apps built on node-pty (Electron apps, IDEs, agent daemons) can leak PTY masters until the \
system runs out (macOS allows 511; Linux 4096 or a container's own max=), and then no terminal, \
ssh session or sudo can start. ptyreap shows who holds them and releases the idle ones from the \
outside, without restarting the app.

With no target, ptyreap prints a census: every process holding PTY masters, how many, and how \
many look orphaned, against the system limit. With --pid, --name or --top it inspects each \
master fd of those processes (verdict and evidence), shows the plan, and -- unless --dry-run -- \
asks before releasing the idle ones.";

const EXAMPLES: &str = "\
Examples:
  ptyreap                              census: who holds PTY masters
  sudo ptyreap --top --dry-run         verdicts for the biggest holder; changes nothing
  sudo ptyreap --pid 1234 --dry-run --min-idle 0 --json
  sudo ptyreap --pid 1234              release its idle orphaned masters (asks first)
  sudo ptyreap watch --warn 100 --reap 200      the watchdog (see `ptyreap watch --help`)
  sudo ptyreap report --pid 1234 --output r.json  a snapshot for a bug report

Verdicts: orphaned (nobody will miss it: released), unread (orphaned, but output waits at \
the master that the app may still collect -- pexpect and expect read it after the job exits; \
kept unless --include-unread), fresh (idle < --min-idle, kept), tracked (the app's event loop \
still watches it -- an epoll set, a thread in poll/select, or a poll()/select() call seen during \
the --observe window, e.g. a loop polling once a second; kept unless --include-tracked), merged \
(shares its open file with other fds), live (a process holds the slave, or it is a session's \
terminal; never released unless stale), stale (live but silent for --include-stale: the session \
is hung up), unknown (not enough evidence -- a process ptyreap could not read, an io_uring \
registration, another process reading its copy; kept).

Looking changes nothing the target can observe: /proc, copies of its fds, and the syscall \
tracepoints for the --observe window (root); no thread is stopped or traced until a reap.

Default method: close only for orphans that crossed an exec (older than the process, not \
close-on-exec, and the process exec'd since its parent forked it: the program running now never \
saw the number -- the shells node-pty spawns), and only when the poll look was made; merge \
otherwise (the number stays a hung-up master; one PTY per process is kept), for fds 0-2, and for \
tracked ones.

Exit codes: 0 done or nothing to do, 1 error (nothing released), 2 usage, 3 partial, \
4 not confirmed (declined, or a prompt was needed and stdin is not a terminal).";

#[derive(Debug, Parser)]
#[command(
    name = "ptyreap",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Inspect (and reap) this process; repeatable
    #[arg(long = "pid", value_name = "PID", allow_negative_numbers = true)]
    pub pids: Vec<i32>,

    /// Every process whose name (comm, or the executable's file name) is NAME; repeatable
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,

    /// The process holding the most PTY masters
    #[arg(long, conflicts_with_all = ["pids", "names"])]
    pub top: bool,

    /// Every process holding a master whose PTY the plan would free: the machine's whole leak
    /// in one step (each process stopped on its own, one at a time)
    #[arg(long, conflicts_with_all = ["pids", "names", "top"])]
    pub all: bool,

    /// Show the verdicts and the plan; change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Do not prompt (scripts). Without it, a reap with stdin not a terminal exits 4
    #[arg(short = 'y', long, conflicts_with = "dry_run")]
    pub yes: bool,

    /// How long a master must be idle to be reaped (0 allowed)
    #[arg(long, value_name = "DUR", default_value = DEFAULT_MIN_IDLE, value_parser = parse_duration)]
    pub min_idle: Duration,

    /// Only these fds, e.g. 3,7-12 (each still verified)
    #[arg(long, value_name = "LIST", value_parser = parse_fds)]
    pub fd: Option<BTreeSet<i32>>,

    /// Also release live sessions silent for DUR: each is hung up (as a modem hang-up would; root),
    /// and its PTY is freed when its processes and the app let go
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub include_stale: Option<Duration>,

    /// Also reap orphaned masters the app's event loop still watches (merged by default)
    #[arg(long)]
    pub include_tracked: bool,

    /// Also reap orphaned masters whose output has not been read yet (that output is lost)
    #[arg(long)]
    pub include_unread: bool,

    /// At most how long to watch the targets' poll()/select() calls before judging: the look ends
    /// once every thread that waits between polls has woken (root; 0: no look, and then nothing is
    /// closed by default)
    #[arg(long, value_name = "DUR", default_value = DEFAULT_OBSERVE, env = "PTYREAP_OBSERVE", value_parser = parse_duration)]
    pub observe: Duration,

    /// How to release each fd [default: close for orphans that crossed an exec (opened_by
    /// inherited), merge for the rest and for tracked ones]
    #[arg(long, value_enum, value_name = "METHOD")]
    pub method: Option<Method>,

    /// One JSON document on stdout; messages stay on stderr
    #[arg(long)]
    pub json: bool,

    /// Show the evidence behind every verdict
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Periodic census: log processes holding many PTY masters, optionally reap their orphans
    #[command(long_about = WATCH_ABOUT)]
    Watch(WatchArgs),
    /// Write a JSON snapshot of one process's PTY masters, for a bug report to its maintainers
    Report(ReportArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the census as Prometheus metrics (text exposition format) to stdout
    #[command(long_about = METRICS_ABOUT)]
    Metrics,
    /// Print the man page (roff) to stdout: ptyreap man | man -l -
    Man {
        /// Instead, write every page into DIR: ptyreap.1 and ptyreap-SUBCOMMAND.1 for each
        /// subcommand (for packaging)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Free PTYs when none are left, with no terminal: release orphans machine-wide, raise the
    /// limit if still full (root; never prompts)
    #[command(long_about = RESCUE_ABOUT)]
    Rescue(RescueArgs),
    /// macOS: resume an app a killed ptyreap left suspended (one suspension per thread)
    #[command(long_about = RESUME_ABOUT)]
    Resume {
        /// The app's pid
        #[arg(long, value_name = "PID")]
        pid: i32,
    },
    /// Show the PTY limit and its use; --set N changes it until reboot (root)
    Limit {
        /// The new limit (Linux: kernel.pty.max, 1 to 1048576; macOS: kern.tty.ptmx_max, at most 999)
        #[arg(long, value_name = "N")]
        set: Option<u64>,
        /// One JSON document on stdout
        #[arg(long)]
        json: bool,
    },
}

const RESUME_ABOUT: &str = "\
macOS only. While ptyreap releases fds it holds the app's threads suspended for about a \
millisecond, and a separate process, ptyreap-guardian, resumes them should ptyreap die in that \
window. If both die (kill -9 of both), nothing else would ever resume the app: this drops one \
suspension from each of its suspended threads and removes a thread ptyreap left in it. A \
debugger's own suspensions stay. Needs root, like a reap.
  sudo ptyreap resume --pid 1234";

const METRICS_ABOUT: &str = "\
Print the census in Prometheus's text exposition format: PTYs in use and the limit, per devpts \
instance in use and max=, per process name PTYs held and orphaned PTYs, unreadable processes, \
and the time to exhaustion when orphans are being made at a steady pace. Every count is of \
PTYs, not fds.

For node_exporter's textfile collector, let the watchdog rewrite a file after every pass (with \
its counters: PTYs released, failures, passes, the last pass's time):
  ptyreap watch --textfile /var/lib/prometheus/node-exporter/ptyreap.prom";

const WATCH_ABOUT: &str = "\
Periodic census: every --interval, warn about each process holding more than --warn PTYs \
(distinct PTYs, not fds: thirty merged fds are one PTY), once per leak episode -- from the pass \
it goes over to the pass it is back under -- with one desktop notification where one is \
possible; with --reap N, also reap the orphaned masters of every process holding more than N \
PTYs, with the same safety protocol and verdict rules as the one-shot command (live, stale, \
fresh and tracked masters are never reaped by the watchdog).

Notifications: from a desktop session, through its session bus; from a root service, through \
the session bus of each logged-in user (/run/user/UID/bus, as that user), with notify-send.

Logs go to stderr, one greppable line per event (`ptyreap-watch: <time> <event> key=value ...`); \
under systemd (stderr is the journal) each line starts with its syslog priority instead (`<4>` \
warning for over_warn, `<3>` for failures), so `journalctl -p warning` finds what matters; \
with --json, one JSON object per event and line on stdout, with its `priority`. It keeps running when a target \
exits, refuses attachment, or a pass fails; it needs no terminal; SIGTERM or SIGINT stop it \
cleanly after the current step (never with a target stopped).";

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch only this process; repeatable (default: every process)
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<i32>,

    /// Watch only processes with this name; repeatable
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,

    /// Warn (and notify) when a process holds more than N PTYs
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub warn: usize,

    /// Reap the orphaned masters of any process holding more than N PTYs
    #[arg(long, value_name = "N")]
    pub reap: Option<usize>,

    /// Time between passes (1s at least)
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_interval)]
    pub interval: Duration,

    /// After every pass, rewrite FILE with the metrics (as `ptyreap metrics` prints them, plus
    /// the watchdog's counters), atomically: for node_exporter's textfile collector
    #[arg(long, value_name = "FILE")]
    pub textfile: Option<PathBuf>,

    /// One pass, then exit (cron, tests)
    #[arg(long)]
    pub once: bool,

    /// How long a master must be idle to be reaped
    #[arg(long, value_name = "DUR", default_value = DEFAULT_MIN_IDLE, value_parser = parse_duration)]
    pub min_idle: Duration,

    /// How to release each fd
    #[arg(long, value_enum, value_name = "METHOD")]
    pub method: Option<Method>,

    /// How long to watch the candidates' poll()/select() calls before reaping (root)
    #[arg(long, value_name = "DUR", default_value = DEFAULT_OBSERVE, env = "PTYREAP_OBSERVE", value_parser = parse_duration)]
    pub observe: Duration,

    /// One JSON object per event and line, on stdout
    #[arg(long)]
    pub json: bool,

    /// Never send desktop notifications (log only)
    #[arg(long)]
    pub no_notify: bool,
}

#[derive(Debug, Args)]
pub struct RescueArgs {
    /// Release only these processes' orphans instead of every process's (repeatable)
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<i32>,

    /// How long a master must be idle to be released (in an emergency, 2 minutes is idle)
    #[arg(long, value_name = "DUR", default_value = "2m", value_parser = parse_duration)]
    pub min_idle: Duration,

    /// Never change the PTY limit
    #[arg(long)]
    pub no_raise: bool,
}

const RESCUE_ABOUT: &str = "\
For when no terminal opens because every PTY is taken. Needs root and no terminal, and never \
prompts: it prints the census, releases every orphaned master copy whose PTY it can free \
machine-wide (as `ptyreap --all --yes`: never live, stale, fresh or tracked ones), and if the \
system's PTY limit is still reached, raises it until reboot (Linux: kernel.pty.max doubled, or \
more so that 1024 are free; macOS: kern.tty.ptmx_max to 999, the most xnu allows). Exits 0 when \
a PTY can be opened again, 1 when PTYs are still exhausted.

Run it without a terminal:
  ssh -T root@host ptyreap rescue                 (-T: ssh allocates no PTY)
  systemd-run --wait --pipe ptyreap rescue         (Linux, from any root context)
  osascript -e 'do shell script \"/usr/local/bin/ptyreap rescue\" with administrator privileges'
                                                   (macOS: asks for the password in a dialog)";

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The process to describe
    #[arg(long, value_name = "PID", required = true)]
    pub pid: i32,

    /// Write to FILE (created 0600; never overwritten; symlinks not followed) instead of stdout
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// How long to watch the process's poll()/select() calls (root)
    #[arg(long, value_name = "DUR", default_value = DEFAULT_OBSERVE, env = "PTYREAP_OBSERVE", value_parser = parse_duration)]
    pub observe: Duration,
}

/// `--observe`'s default: long enough to see a loop that polls once a second at least once.
pub const DEFAULT_OBSERVE: &str = "1500ms";

/// `--min-idle`'s default (the report judges with it too).
pub const DEFAULT_MIN_IDLE: &str = "10m";

pub fn default_min_idle() -> Duration {
    crate::duration::parse(DEFAULT_MIN_IDLE).expect("DEFAULT_MIN_IDLE is a duration")
}

impl WatchArgs {
    /// The watchdog judges stale sessions never, and releases orphaned masters only.
    pub fn policy(&self) -> crate::verdict::Policy {
        policy(self.min_idle, None)
    }

    pub fn choices(&self) -> crate::plan::Choices {
        crate::plan::Choices {
            fds: None,
            include_tracked: false,
            include_unread: false,
            method: self.method,
            only_orphaned: true,
        }
    }
}

/// The verdict policy of a one-shot run or a report: `--min-idle` and `--include-stale`.
pub fn policy(min_idle: Duration, include_stale: Option<Duration>) -> crate::verdict::Policy {
    crate::verdict::Policy {
        min_idle,
        include_stale,
    }
}

impl Cli {
    /// How this run judges (see verdict.rs).
    pub fn policy(&self) -> crate::verdict::Policy {
        policy(self.min_idle, self.include_stale)
    }

    /// What this run may release, and how (see plan.rs).
    pub fn choices(&self) -> crate::plan::Choices {
        crate::plan::Choices {
            fds: self.fd.clone(),
            include_tracked: self.include_tracked,
            include_unread: self.include_unread,
            method: self.method,
            only_orphaned: false,
        }
    }

    /// A run on targets, lowered from the flags once.
    pub fn target_run(&self) -> TargetRun {
        TargetRun {
            select: Selectors {
                pids: self.pids.clone(),
                names: self.names.clone(),
                all: self.all,
                top: self.top,
                fds_given: self.fd.is_some(),
            },
            policy: self.policy(),
            choices: self.choices(),
            observe: self.observe,
            dry_run: self.dry_run,
            yes: self.yes,
            json: self.json,
            verbose: self.verbose,
            again: self.again(),
        }
    }

    /// This run's command line as a person would type it again: the selection, --yes and
    /// --method (what a hint's extra flags go with).
    fn again(&self) -> String {
        let mut parts = vec!["ptyreap".to_string()];
        if self.all {
            parts.push("--all".into());
        }
        if self.top {
            parts.push("--top".into());
        }
        parts.extend(self.pids.iter().map(|p| format!("--pid {p}")));
        parts.extend(
            self.names
                .iter()
                .map(|n| format!("--name '{}'", n.replace('\'', "'\\''"))),
        );
        if self.yes {
            parts.push("--yes".into());
        }
        if let Some(m) = self.method {
            parts.push(format!("--method {}", m.as_str()));
        }
        parts.join(" ")
    }

    pub fn has_target(&self) -> bool {
        self.top || self.all || !self.pids.is_empty() || !self.names.is_empty()
    }

    /// Flags that only mean something for a target, for a clear usage error without one.
    pub fn target_only_flag(&self) -> Option<&'static str> {
        if self.fd.is_some() {
            Some("--fd")
        } else if self.yes {
            Some("--yes")
        } else if self.include_stale.is_some() {
            Some("--include-stale")
        } else if self.include_tracked {
            Some("--include-tracked")
        } else if self.include_unread {
            Some("--include-unread")
        } else if self.method.is_some() {
            Some("--method")
        } else {
            None
        }
    }
}

/// A run on targets (`--pid`, `--name`, `--all`, `--top`), lowered from the command line once,
/// as ripgrep lowers its flags into `HiArgs`: the steps of app.rs take this, never the raw
/// [`Cli`], and the policy and choices are built here once for every target.
pub struct TargetRun {
    pub select: Selectors,
    /// How the verdicts are judged (see verdict.rs).
    pub policy: crate::verdict::Policy,
    /// What may be released, and how (see plan.rs).
    pub choices: crate::plan::Choices,
    /// How long the poll look watches (`--observe`).
    pub observe: Duration,
    pub dry_run: bool,
    /// `--yes`: no prompt.
    pub yes: bool,
    pub json: bool,
    pub verbose: bool,
    /// This run's command line as a person would type it again, for the hints that add a flag.
    pub again: String,
}

/// Which processes a run is about.
pub struct Selectors {
    pub pids: Vec<i32>,
    pub names: Vec<String>,
    pub all: bool,
    pub top: bool,
    /// `--fd` was given: it names fds of one process.
    pub fds_given: bool,
}

impl TargetRun {
    /// The command line again, with `extra` flags.
    pub fn again_with(&self, extra: &str) -> String {
        if extra.is_empty() {
            self.again.clone()
        } else {
            format!("{} {extra}", self.again)
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
}

/// A pass takes a census of the whole machine: more than one a second is a busy loop.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(text)?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "'{text}' is shorter than 1s: a pass scans every process, so passes are 1s apart at least (60s is the default)"
        ));
    }
    Ok(d)
}

fn parse_fds(text: &str) -> Result<BTreeSet<i32>, String> {
    crate::plan::parse_fd_list(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_default_min_idle_is_ten_minutes_everywhere() {
        assert_eq!(default_min_idle(), Duration::from_secs(600));
        let cli = Cli::try_parse_from(["ptyreap", "--pid", "3"]).unwrap();
        assert_eq!(cli.policy().min_idle, default_min_idle());
    }

    #[test]
    fn top_excludes_pid() {
        assert!(Cli::try_parse_from(["ptyreap", "--top", "--pid", "3"]).is_err());
        assert!(Cli::try_parse_from(["ptyreap", "--pid", "3", "--name", "node"]).is_ok());
    }
}
