//! The data every other module speaks: what a PTY is, what we learned about a master fd, what we
//! decided, what happened. No OS types here, so the verdict and plan logic is pure and the Linux
//! and macOS backends fill the same structures.

use serde::Serialize;
use std::fmt;

/// A device number, shown as `major:minor` like /proc/PID/mountinfo does. For a PTY it names the
/// devpts instance (its superblock), which is what tells containers' PTYs apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevId {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl Serialize for DevId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One pseudoterminal: slave indices repeat across devpts instances, so the instance is part of
/// the identity. (macOS has a single instance; its `devpts` is the /dev filesystem.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PtyId {
    pub devpts: DevId,
    pub index: u32,
}

/// A process and the fd numbers it holds on something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: i32,
    pub name: String,
    pub fds: Vec<i32>,
}

/// A master fd as the machine-wide scan sees it: cheap facts only.
#[derive(Debug, Clone)]
pub struct MasterRef {
    pub fd: i32,
    /// None when it could not be identified (permission, race).
    pub pty: Option<PtyId>,
    /// The session whose controlling terminal the slave is, if any.
    pub session: Option<i32>,
    /// When its PTY was made (the slave node's ctime, seconds since the epoch), if known.
    pub created: Option<f64>,
}

/// A slave fd as the machine-wide scan sees it.
#[derive(Debug, Clone, Copy)]
pub struct SlaveRef {
    /// The slave's fd; for `via_io_uring`, the fd of the io_uring instance holding it.
    pub fd: i32,
    pub pty: PtyId,
    /// Held only as a file registered with an io_uring instance (its fd may be closed): the
    /// process uses the slave as much as through an fd, but there is no fd of it to release.
    pub via_io_uring: bool,
}

/// One process that holds PTY fds.
#[derive(Debug, Clone)]
pub struct ProcessPtys {
    pub pid: i32,
    pub name: String,
    pub masters: Vec<MasterRef>,
    pub slaves: Vec<SlaveRef>,
    /// Its event-queue fds (epoll on Linux, kqueue on macOS), noted in passing by the scan so
    /// the watched check need not list a 10,000-fd table twice. Empty where the backend looks
    /// them up itself.
    pub event_queues: Vec<i32>,
    /// When the process started (seconds since the epoch), if known.
    pub started: Option<f64>,
    /// Its io_uring instances whose registered files the kernel would not list (it lists them
    /// only when it gets the ring's lock at once): they may hold any PTY's slave.
    pub unlisted_rings: Vec<i32>,
}

/// Every PTY fd on the machine (that we may see), and the system's PTY usage.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub processes: Vec<ProcessPtys>,
    pub system: SystemUsage,
    /// Who the scan could not see: a verdict resting on "nobody else holds it" waits for this.
    pub visibility: Visibility,
    /// What a look over time at the targets' poll()/select() calls saw (empty until one is made).
    pub polls: PollLook,
}

/// A look over time at the targets' poll()/select() calls (Linux: observe.rs): a loop that polls
/// a master only now and then is a watcher as much as a thread waiting in poll() right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollLook {
    /// How long it watched.
    pub window: std::time::Duration,
    /// Why there was no look; None when there was one (or none was needed).
    pub unavailable: Option<String>,
    /// pid → fd → what was seen polling it ("poll() in thread 812 (seen 2 times in 1.5s)").
    pub seen: std::collections::BTreeMap<i32, std::collections::BTreeMap<i32, Vec<String>>>,
}

/// The processes a scan could not read, and why. While any could not be, "no process holds the
/// slave" and "no other process holds the master" are only what ptyreap could see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visibility {
    /// Processes whose fds could not be read: (pid, why).
    pub unreadable: Vec<(i32, String)>,
    /// Processes that could not even be listed, and why (another pid namespace, `hidepid`).
    pub hidden: Option<String>,
}

impl Visibility {
    pub fn complete(&self) -> bool {
        self.unreadable.is_empty() && self.hidden.is_none()
    }

    /// The gap, in words, with the way to close it; None when complete.
    pub fn gap(&self) -> Option<String> {
        if self.complete() {
            return None;
        }
        let mut parts = Vec::new();
        if !self.unreadable.is_empty() {
            let n = self.unreadable.len();
            let mut why: Vec<&str> = self.unreadable.iter().map(|(_, w)| w.as_str()).collect();
            why.sort_unstable();
            why.dedup();
            parts.push(format!(
                "{n} process{} could not be read ({})",
                if n == 1 { "" } else { "es" },
                why.join(", ")
            ));
        }
        if let Some(h) = &self.hidden {
            parts.push(h.clone());
        }
        Some(format!(
            "{}: run ptyreap as root, from the initial pid namespace, to see them all",
            parts.join("; ")
        ))
    }
}

impl Snapshot {
    pub fn process(&self, pid: i32) -> Option<&ProcessPtys> {
        self.processes.iter().find(|p| p.pid == pid)
    }

    /// Every process holding the slave of `pty`, with its fds on it.
    pub fn slave_holders(&self, pty: PtyId) -> Vec<Holder> {
        self.holders(|p| {
            p.slaves
                .iter()
                .filter(|s| s.pty == pty)
                .map(|s| s.fd)
                .collect()
        })
    }

    /// Every process holding the master of `pty`, with its fds on it.
    pub fn master_holders(&self, pty: PtyId) -> Vec<Holder> {
        self.holders(|p| {
            p.masters
                .iter()
                .filter(|m| m.pty == Some(pty))
                .map(|m| m.fd)
                .collect()
        })
    }

    /// Fills in what the machine-wide scan knows about `ev`'s PTY from `pid`'s point of view:
    /// the other holders of its slave and of its master, the target's own slave fds (a pair) and
    /// its other fds on the same master (aliases). Both backends use this, so the verdict sees
    /// the same evidence on every OS.
    pub fn join(&self, pid: i32, ev: &mut Evidence) {
        ev.unseen = self.visibility.gap();
        ev.polls_unseen = self.polls.unavailable.clone();
        if let Some(seen) = self.polls.seen.get(&pid).and_then(|fds| fds.get(&ev.fd)) {
            for s in seen {
                if !ev.watched_by.contains(s) {
                    ev.watched_by.push(s.clone());
                }
            }
        }
        let Some(pty) = ev.pty else { return };
        let others = |holders: Vec<Holder>| -> Vec<Holder> {
            holders.into_iter().filter(|h| h.pid != pid).collect()
        };
        ev.slave_holders = others(self.slave_holders(pty));
        // the target's own io_uring holding the slave: it uses the PTY (and nothing of it is an
        // fd a pair release could close)
        if let Some(own) = self.process(pid) {
            let rings: Vec<i32> = own
                .slaves
                .iter()
                .filter(|s| s.via_io_uring && s.pty == pty)
                .map(|s| s.fd)
                .collect();
            if !rings.is_empty() {
                ev.slave_holders.push(Holder {
                    pid,
                    name: format!("{} (its io_uring)", own.name),
                    fds: rings,
                });
            }
        }
        ev.other_master_holders = others(self.master_holders(pty));
        if let Some(own) = self.process(pid) {
            ev.target_slave_fds = own
                .slaves
                .iter()
                .filter(|s| s.pty == pty && !s.via_io_uring)
                .map(|s| s.fd)
                .collect();
            ev.aliases = own
                .masters
                .iter()
                .filter(|o| o.fd != ev.fd && o.pty == Some(pty))
                .map(|o| o.fd)
                .collect();
        }
    }

    fn holders(&self, fds_of: impl Fn(&ProcessPtys) -> Vec<i32>) -> Vec<Holder> {
        self.processes
            .iter()
            .filter_map(|p| {
                let fds = fds_of(p);
                (!fds.is_empty()).then(|| Holder {
                    pid: p.pid,
                    name: p.name.clone(),
                    fds,
                })
            })
            .collect()
    }
}

/// PTY usage against the limit, system-wide and per devpts instance.
#[derive(Debug, Clone, Serialize)]
pub struct SystemUsage {
    pub in_use: u64,
    pub limit: u64,
    pub limit_source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserve: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<DevptsInstance>>,
    /// Processes whose fds the scan could not read (their PTYs are not counted above as held).
    pub unreadable_processes: usize,
    /// Seconds until the first limit (global, or an instance's `max=`) is reached at the pace
    /// orphans are being made; 0 when one is reached now; None when nothing grows steadily (or
    /// not computed: only the census does).
    pub exhausted_in_s: Option<u64>,
    /// Which limit `exhausted_in_s` is about: the devpts instance (`major:minor`), or None for
    /// the global limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exhausted_first: Option<DevId>,
    /// The pace at which orphaned PTYs are being made machine-wide (census.rs); None when
    /// nothing shows a sustained leak.
    pub leak_per_hour: Option<f64>,
}

impl SystemUsage {
    /// Whether the system-wide limit is reached: Linux keeps `reserve` PTYs for the initial
    /// devpts instance, so every other one is full at `limit - reserve`.
    pub fn globally_full(&self) -> bool {
        self.limit > 0 && self.in_use >= self.limit.saturating_sub(self.reserve.unwrap_or(0))
    }

    /// Whether some devpts instance is at its own `max=`.
    pub fn an_instance_full(&self) -> bool {
        self.instances.iter().flatten().any(DevptsInstance::full)
    }
}

impl DevptsInstance {
    pub fn full(&self) -> bool {
        matches!((self.in_use, self.max), (Some(n), Some(m)) if n >= m)
    }
}

/// One devpts instance: a private one (a container's, or `mount -o newinstance`) can be exhausted
/// by its own `max=` while the global count is low.
#[derive(Debug, Clone, Serialize)]
pub struct DevptsInstance {
    pub devpts: DevId,
    /// Where it is mounted (in the namespace we found it in); None if we saw no mount of it.
    pub mount: Option<String>,
    /// PTYs allocated in it (its numbered nodes); None if its mount is out of reach.
    pub in_use: Option<u64>,
    /// Its own `max=` mount option; None when unlimited (only the global limit applies).
    pub max: Option<u64>,
    /// The pace at which orphaned PTYs are being made in it; None when nothing leaks steadily
    /// (or not computed: only the census does).
    pub leak_per_hour: Option<f64>,
    /// Seconds until it is full at that pace, against its own `max=` and the global limit; 0
    /// when it is full now.
    pub exhausted_in_s: Option<u64>,
}

/// One line of the census.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCount {
    pub pid: i32,
    pub name: String,
    /// Master fds (several may be one PTY: aliases, a merge).
    pub masters: usize,
    /// Distinct PTYs those fds are on.
    pub ptys: usize,
    /// PTYs whose slave no other process holds and that are no session's terminal: the ones
    /// that look leaked (the per-fd verdict adds idleness and event-loop checks).
    pub orphaned: usize,
    /// PTYs whose master no other process holds: what quitting this process would free.
    pub ptys_only_here: usize,
    /// The pace at which it is making orphaned PTYs, per hour; None when its orphans show no
    /// sustained growth (`census::sustained_pace`).
    pub leak_per_hour: Option<f64>,
    /// Why ptyreap cannot release fds in it (macOS code signing, a frozen cgroup, ...); None when
    /// nothing known up front stands in the way.
    pub not_releasable_because: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Census {
    pub system: SystemUsage,
    pub processes: Vec<ProcessCount>,
    /// Distinct PTYs that look orphaned to every process holding their master.
    pub orphaned_ptys: usize,
    /// Who the scan could not see, with the way to see them (see [`Visibility::gap`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen: Option<String>,
}

/// Everything we know about one master fd of a target.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub fd: i32,
    pub pty: Option<PtyId>,
    pub slave_path: Option<String>,
    /// Other processes holding the slave.
    pub slave_holders: Vec<Holder>,
    /// The target's own fds on the slave (openpty() with neither end closed).
    pub target_slave_fds: Vec<i32>,
    /// Other processes holding this master (inherited copies): the PTY is freed only when every
    /// copy is closed.
    pub other_master_holders: Vec<Holder>,
    /// Processes using the target's own fd table (`clone(CLONE_FILES)` without CLONE_THREAD):
    /// not other holders — a close in the target closes the fd under them too.
    pub fd_table_shared_with: Vec<Holder>,
    /// The target's other fds on this master's open file.
    pub aliases: Vec<i32>,
    pub session: Option<i32>,
    pub foreground_pgrp: Option<i32>,
    /// Bytes the slave side wrote that nobody read yet.
    pub unread_bytes: Option<u32>,
    /// Last slave-side I/O, seconds since the epoch.
    pub last_io: Option<i64>,
    /// The master polls POLLHUP: its slave was opened and then closed by everyone.
    pub hung_up: Option<bool>,
    /// What in the target still watches the fd: "epoll fd 5", "poll() in thread 812".
    pub watched_by: Vec<String>,
    /// macOS: the fd is guarded (never touched).
    pub guarded: bool,
    /// Why the evidence is incomplete, if it is.
    pub missing: Option<String>,
    /// Processes the scan could not see (see [`Visibility`]): holders of the slave or the master
    /// may hide among them.
    pub unseen: Option<String>,
    /// Who opened it (None: unknown): decides the default method of an orphan.
    pub opened_by: Option<OpenedBy>,
    /// Why the target's poll()/select() calls could not be watched over time (None: they were):
    /// a loop that polls now and then may then have been missed, so nothing is closed by default.
    pub polls_unseen: Option<String>,
    /// What ptyreap knows may use the PTY without being able to see how (an io_uring instance
    /// with PTY masters registered, another process blocked in read() on its copy).
    pub blind_spots: Vec<String>,
}

impl Evidence {
    pub fn watched(&self) -> bool {
        !self.watched_by.is_empty()
    }
}

/// Who opened a master, as far as the evidence tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OpenedBy {
    /// The PTY is older than the process, and the process has exec'd a new program since it was
    /// forked with the master open (node-pty's inheritable masters in the shells it spawns): the
    /// program running now never saw the number.
    #[serde(rename = "inherited")]
    Inherited,
    /// The PTY was made after the process started: the program opened (or received) it.
    #[serde(rename = "self")]
    SelfOpened,
}

/// What is known about how a master reached a process, for [`OpenedBy::judge`]. The two times are
/// seconds on the real-time clock: the PTY's from its slave node's ctime, the process's from its
/// start on the boot-time clock plus the offset between the two clocks read once, now (a
/// wall-clock step since the PTY was made shifts one against the other; `inherited` therefore
/// also needs the exec evidence, which no step can fake).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Provenance {
    /// The PTY's creation and the process's start, in seconds on one clock.
    pub created: Option<f64>,
    pub started: Option<f64>,
    /// The fd is close-on-exec: it cannot have crossed an exec.
    pub cloexec: bool,
    /// Evidence that the process exec'd a new program after it was forked: it runs on a terminal
    /// whose master its live, older parent holds (forkpty + exec), with another memory layout
    /// than that parent's (see the Linux backend's `exec_since_fork`).
    pub exec_since_fork: bool,
}

impl OpenedBy {
    /// `inherited` only with evidence that the master crossed an exec: older than the process,
    /// not close-on-exec, and an exec since the fork. A fork without exec (Tcl expect's `fork`,
    /// a daemon, a prefork server) carries the program's own numbers on: that is no inheritance
    /// the program is unaware of. None when nothing tells (`margin` seconds of doubt).
    pub fn judge(p: &Provenance, margin: f64) -> Option<OpenedBy> {
        let (created, started) = (p.created?, p.started?);
        if created > started + margin {
            Some(OpenedBy::SelfOpened)
        } else if created + margin < started && !p.cloexec && p.exec_since_fork {
            Some(OpenedBy::Inherited)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Orphaned,
    /// Orphaned, but output waits at the master that the app may still collect.
    Unread,
    Fresh,
    Tracked,
    Merged,
    Live,
    Stale,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Orphaned => "orphaned",
            Verdict::Unread => "unread",
            Verdict::Fresh => "fresh",
            Verdict::Tracked => "tracked",
            Verdict::Merged => "merged",
            Verdict::Live => "live",
            Verdict::Stale => "stale",
            Verdict::Unknown => "unknown",
        }
    }
}

/// A verdict with the one line that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reason: String,
    pub idle_s: Option<u64>,
}

/// What the plan does with a master: release it by a method, or keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Close(Method),
    Keep,
}

impl Action {
    pub fn is_close(self) -> bool {
        matches!(self, Action::Close(_))
    }

    /// How it is released; None when kept.
    pub fn method(self) -> Option<Method> {
        match self {
            Action::Close(m) => Some(m),
            Action::Keep => None,
        }
    }

    /// `close` or `keep`, as the JSON and the table say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Close(_) => "close",
            Action::Keep => "keep",
        }
    }
}

/// How a reaped fd is released (docs/DESIGN.md, "Methods").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// close(fd): the number becomes free.
    Close,
    /// dup2 one reaped master over the others: numbers stay taken, still hung-up PTY masters.
    Merge,
    /// dup2 /dev/null over each: numbers stay taken, no longer terminals.
    Devnull,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Close => "close",
            Method::Merge => "merge",
            Method::Devnull => "devnull",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Closed,
    Kept,
    Failed,
    Changed,
    /// A stale session hung up whose PTY is still held elsewhere (`detail` says by whom).
    #[serde(rename = "hung_up")]
    HungUp,
}

/// One master fd of a target: evidence, verdict, plan and (after a reap) result.
#[derive(Debug, Clone)]
pub struct MasterRow {
    pub evidence: Evidence,
    pub judgement: Judgement,
    pub action: Action,
    pub result: Option<Outcome>,
    /// Why it failed or changed, after a reap.
    pub detail: Option<String>,
    /// For a `merge` row: the fd its master is dup2()ed onto, named once by the plan (never a
    /// row the plan releases).
    pub merge_onto: Option<i32>,
    /// What the plan and the PTY count say of this row beyond the verdict; `reason` composes the
    /// words.
    pub notes: Vec<PlanNote>,
    /// For a planned row: whether releasing it (with the other planned rows) frees its PTY, i.e.
    /// every copy of the master is planned (see ptys.rs). None until counted.
    pub frees_pty: Option<bool>,
}

impl MasterRow {
    /// A row as the plan first has it: nothing noted, nothing released yet.
    pub fn planned(evidence: Evidence, judgement: Judgement, action: Action) -> MasterRow {
        MasterRow {
            evidence,
            judgement,
            action,
            result: None,
            detail: None,
            merge_onto: None,
            notes: Vec::new(),
            frees_pty: None,
        }
    }

    /// The verdict's reason followed by the plan's notes, in words.
    pub fn reason(&self) -> String {
        let mut out = self.judgement.reason.clone();
        for note in &self.notes {
            note.write(self.evidence.fd, &mut out);
        }
        out
    }

    /// Whether the plan keeps this fd as what the merged fds are dup2()ed onto.
    pub fn is_merge_target(&self) -> bool {
        self.notes
            .iter()
            .any(|n| matches!(n, PlanNote::MergeTarget { .. }))
    }
}

/// What the plan (plan.rs) and the PTY count (ptys.rs) add to a row's verdict. Typed, so no stage
/// rewrites another's words; [`MasterRow::reason`] and the JSON's `notes` render them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum PlanNote {
    /// Released by the default method (no `--method`), for this reason.
    DefaultMethod { method: Method, why: DefaultWhy },
    /// An unread orphan released (`--include-unread`): its bytes are lost.
    UnreadLost { bytes: u32 },
    /// Kept: the merged fds now share this master. `kept_anyway`: a hung-up master the plan keeps
    /// regardless (tracked, not included).
    MergeTarget { kept_anyway: bool },
    /// Kept: the only fd to merge, and merging needs a second.
    MergeNeedsSecond,
    /// Planned, but the PTY stays allocated: copies held by other processes (pid and name), fds
    /// of this process that are kept, and a process to add to free it.
    StaysAllocated {
        others: Vec<String>,
        own: Vec<i32>,
        add_pid: Option<i32>,
    },
    /// `--all`: kept, since releasing this copy would free no PTY.
    FreesNothing,
}

/// Why the default method is what it is (plan::default_for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultWhy {
    /// Inherited across an exec, and every poll loop was watched: the program never saw it.
    Inherited,
    /// Inherited, but a standard stream (fd 0-2).
    StandardStream,
    /// Inherited, but poll loops were not watched (why).
    PollsUnseen(String),
    /// The program opened it itself.
    SelfOpened,
    /// No evidence that it crossed an exec.
    NoEvidence,
}

impl PlanNote {
    fn write(&self, fd: i32, out: &mut String) {
        use std::fmt::Write as _;
        let _ = match self {
            PlanNote::DefaultMethod { why, .. } => match why {
                DefaultWhy::StandardStream => write!(
                    out,
                    "; merge: inherited, but fd {fd} is standard {}",
                    ["input", "output", "error"][fd.clamp(0, 2) as usize]
                ),
                DefaultWhy::Inherited => {
                    write!(
                        out,
                        "; close: inherited across an exec, the program never saw this fd"
                    )
                }
                DefaultWhy::PollsUnseen(why) => {
                    write!(
                        out,
                        "; merge: inherited, but poll loops were not watched ({why})"
                    )
                }
                DefaultWhy::SelfOpened => {
                    write!(
                        out,
                        "; merge: the program opened it and may still use the number"
                    )
                }
                DefaultWhy::NoEvidence => write!(
                    out,
                    "; merge: no evidence that it crossed an exec (the program may know the number)"
                ),
            },
            PlanNote::UnreadLost { bytes } => {
                write!(out, "; its {bytes} unread byte(s) will be lost")
            }
            PlanNote::MergeTarget { kept_anyway: true } => {
                write!(out, "; the keeper the merged fds now share (kept anyway)")
            }
            PlanNote::MergeTarget { kept_anyway: false } => {
                write!(out, "; kept as the keeper the merged fds now share")
            }
            PlanNote::MergeNeedsSecond => write!(out, "; kept: merging needs a second fd"),
            PlanNote::StaysAllocated {
                others,
                own,
                add_pid,
            } => {
                let mut why = Vec::new();
                if !others.is_empty() {
                    why.push(format!("also held by {}", others.join(", ")));
                }
                if !own.is_empty() {
                    let own: Vec<String> = own.iter().map(i32::to_string).collect();
                    why.push(format!("fd {} of this process is kept", own.join(",")));
                }
                let _ = write!(out, "; stays allocated: {}", why.join("; "));
                match add_pid {
                    Some(p) => write!(out, " — add --pid {p} or use --all"),
                    None => Ok(()),
                }
            }
            PlanNote::FreesNothing => {
                write!(out, " (kept: releasing this copy would free nothing)")
            }
        };
    }
}

/// One inspected (and maybe reaped) process.
#[derive(Debug, Clone)]
pub struct TargetReport {
    pub pid: i32,
    pub name: String,
    pub masters: Vec<MasterRow>,
    pub stopped_us: Option<u64>,
    /// Why ptyreap cannot release fds in this process, known before any plan is shown; its rows
    /// are then all `keep` (see `pipeline::withhold`).
    pub not_releasable_because: Option<String>,
    /// How many rows the plan would have released, had the process been releasable.
    pub withheld: usize,
    /// With `-v`: which app it is (identity.rs), for the table.
    pub app: Option<String>,
}

/// What a bug report says about a process besides its PTYs.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    /// Unix time the process started.
    pub started_at: Option<i64>,
    /// Native modules it has mapped (`*.node` files: node-pty's `pty.node` among them), each
    /// path once: what it really loaded, wherever it came from.
    pub native_modules: Vec<String>,
}
