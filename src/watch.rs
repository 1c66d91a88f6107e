//! `ptyreap watch`: the watchdog. What a field report on the leak asked of the leaking app —
//! alert past a threshold, close old idle PTYs past a higher one — done from the outside.
//!
//! Each pass takes a census, logs every process over `--warn` (and notifies, at most once per
//! process per hour), and with `--reap N` reaps the *orphaned* masters of every process over N
//! through the same pipeline and safety protocol as the one-shot command. Nothing a pass meets
//! (a target that exits, refuses attachment, a failed scan) stops the watchdog. SIGTERM, SIGINT
//! and SIGHUP set a flag that is checked between steps; while a target is stopped they are
//! deferred (blocked) by the reaper, so the watchdog never exits with a target stopped.

use crate::cli::WatchArgs;
use crate::clock::now;
use crate::duration::rfc3339;
use crate::exit_code::ExitCode;
use crate::model::{Outcome, ProcessCount};
use crate::{census, notify, sys};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn stop_requested() -> bool {
    crate::interrupt::received().is_some()
}

/// How long the watchdog remembers a poll()/select() loop it saw watching a master.
const REMEMBER_POLLS_S: i64 = 3600;

pub fn run(args: &WatchArgs) -> anyhow::Result<ExitCode> {
    crate::interrupt::catch();
    let log = Log::new(args.json);
    let mut state = State::load();
    log.event(
        "start",
        &[
            ("warn", json!(args.warn)),
            ("reap", json!(args.reap)),
            ("interval_s", json!(args.interval.as_secs())),
            ("min_idle_s", json!(args.min_idle.as_secs())),
        ],
    );
    let mut failed_pass = false;
    loop {
        if let Err(e) = pass(args, &log, &mut state) {
            failed_pass = true;
            log.event("pass_failed", &[("error", json!(format!("{e:#}")))]);
        }
        if args.once || stop_requested() {
            break;
        }
        let deadline = Instant::now() + args.interval;
        while Instant::now() < deadline && !stop_requested() {
            std::thread::sleep(Duration::from_millis(100).min(args.interval));
        }
        if stop_requested() {
            break;
        }
    }
    log.event("stop", &[]);
    Ok(if args.once && failed_pass {
        ExitCode::Failure
    } else {
        ExitCode::Success
    })
}

fn pass(args: &WatchArgs, log: &Log, state: &mut State) -> anyhow::Result<()> {
    let mut snapshot = sys::snapshot()?;
    let c = census::census(&snapshot);
    let wanted: Option<BTreeSet<i32>> = if args.pids.is_empty() && args.names.is_empty() {
        None
    } else {
        let mut set: BTreeSet<i32> = args.pids.iter().copied().collect();
        for name in &args.names {
            set.extend(sys::processes_named(name));
        }
        Some(set)
    };
    let watched: Vec<&ProcessCount> = c
        .processes
        .iter()
        .filter(|p| wanted.as_ref().is_none_or(|w| w.contains(&p.pid)))
        .collect();
    log.event(
        "pass",
        &[
            ("in_use", json!(c.system.in_use)),
            ("limit", json!(c.system.limit)),
            ("holders", json!(watched.len())),
            ("ptys", json!(watched.iter().map(|p| p.ptys).sum::<usize>())),
            (
                "orphaned",
                json!(watched.iter().map(|p| p.orphaned).sum::<usize>()),
            ),
            ("unreadable", json!(snapshot.visibility.unreadable.len())),
        ],
    );
    state.counters.passes += 1;
    // the processes to reap are watched over time together, once per pass (observe.rs)
    let to_reap: Vec<i32> = watched
        .iter()
        .filter(|p| args.reap.is_some_and(|limit| p.ptys > limit))
        .map(|p| p.pid)
        .collect();
    if !to_reap.is_empty() {
        sys::observe(&mut snapshot, &to_reap, args.observe);
        state.remember_polls(&mut snapshot.polls);
    }
    let mut after: BTreeMap<i32, usize> = BTreeMap::new();
    for p in &watched {
        if stop_requested() {
            return Ok(());
        }
        if args.reap.is_some_and(|limit| p.ptys > limit) {
            if let Some(left) = reap_one(args, log, p, &snapshot, &mut state.counters) {
                after.insert(p.pid, left);
            }
        }
    }
    // a leak episode: from the pass a process goes over --warn to the pass it is back under
    // (released, or gone): one warning and one notification each, never one per pass
    for p in &watched {
        let ptys = after.get(&p.pid).copied().unwrap_or(p.ptys);
        let key = State::key(p.pid);
        if ptys <= args.warn {
            if state.episodes.remove(&key).is_some() {
                log.event(
                    "back_under_warn",
                    &[
                        ("pid", json!(p.pid)),
                        ("name", json!(p.name)),
                        ("ptys", json!(ptys)),
                        ("warn", json!(args.warn)),
                    ],
                );
            }
            continue;
        }
        let fields = [
            ("pid", json!(p.pid)),
            ("name", json!(p.name)),
            ("ptys", json!(ptys)),
            ("masters", json!(p.masters)),
            ("orphaned", json!(p.orphaned)),
            ("warn", json!(args.warn)),
            ("leak_per_hour", json!(p.leak_per_hour)),
            ("exhausted_in_s", json!(c.system.exhausted_in_s)),
        ];
        if state.episodes.contains_key(&key) {
            log.event("still_over_warn", &fields);
            continue;
        }
        state.episodes.insert(key, now());
        log.event("over_warn", &fields);
        if args.no_notify {
            continue;
        }
        let pace = match (p.leak_per_hour, c.system.exhausted_in_s) {
            (Some(rate), Some(s)) if s > 0 => format!(
                " It leaks {}; at this pace PTYs run out in ~{}.",
                crate::render::table::rate(rate),
                crate::duration::human(s)
            ),
            (Some(rate), _) => format!(" It leaks {}.", crate::render::table::rate(rate)),
            _ => String::new(),
        };
        let body = format!(
            "{} (pid {}) holds {} PTYs, {} of them look orphaned.{pace} Inspect: sudo ptyreap --pid {} --dry-run",
            p.name,
            p.pid,
            ptys,
            p.orphaned,
            p.pid
        );
        match notify::send("PTY leak", &body) {
            Ok(to) => log.event("notified", &[("pid", json!(p.pid)), ("to", json!(to))]),
            Err(why) => log.event(
                "notify_skipped",
                &[("pid", json!(p.pid)), ("why", json!(why))],
            ),
        }
    }
    state.counters.last_pass = crate::clock::now_precise();
    state.forget_gone();
    state.save();
    if let Some(path) = &args.textfile {
        let text = crate::metrics::exposition(&c, Some(&state.counters));
        if let Err(e) = crate::metrics::write_atomically(path, &text) {
            log.event(
                "textfile_failed",
                &[
                    ("path", json!(path.display().to_string())),
                    ("error", json!(e.to_string())),
                ],
            );
        }
    }
    Ok(())
}

/// Reaps the orphaned masters of one process; logs every action and every refusal.
/// Returns how many PTYs the process holds afterwards, when something was released.
fn reap_one(
    args: &WatchArgs,
    log: &Log,
    p: &ProcessCount,
    snapshot: &crate::model::Snapshot,
    counters: &mut crate::metrics::Counters,
) -> Option<usize> {
    let who = [("pid", json!(p.pid)), ("name", json!(p.name))];
    let target = match sys::open_target(p.pid) {
        Ok(t) => t,
        Err(e) => {
            log.event(
                "reap_skipped",
                &[who[0].clone(), who[1].clone(), ("why", json!(e.message))],
            );
            return None;
        }
    };
    let (policy, choices) = (args.policy(), args.choices());
    let mut report = match crate::pipeline::judge_target(&target, snapshot, &policy, &choices) {
        Ok(r) => r,
        Err(e) => {
            log.event(
                "reap_skipped",
                &[who[0].clone(), who[1].clone(), ("why", json!(e.message))],
            );
            return None;
        }
    };
    if let Some(why) = &report.not_releasable_because {
        let orphaned = report
            .masters
            .iter()
            .any(|r| r.judgement.verdict == crate::model::Verdict::Orphaned);
        if orphaned {
            counters.failures += 1;
            log.event(
                "reap_failed",
                &[who[0].clone(), who[1].clone(), ("why", json!(why))],
            );
            return None;
        }
    }
    let planned = report
        .masters
        .iter()
        .filter(|r| r.action.is_close())
        .count();
    if planned == 0 {
        log.event(
            "nothing_to_reap",
            &[who[0].clone(), who[1].clone(), ("ptys", json!(p.ptys))],
        );
        return None;
    }
    crate::ptys::account(std::slice::from_mut(&mut report));
    match sys::reap(&target, &mut report.masters) {
        Ok(stopped) => {
            for row in report.masters.iter().filter(|r| r.action.is_close()) {
                let result = match row.result {
                    Some(Outcome::Closed) => "closed",
                    Some(Outcome::Failed) => "failed",
                    Some(Outcome::Changed) => "changed",
                    _ => "kept",
                };
                let mut fields = vec![
                    who[0].clone(),
                    who[1].clone(),
                    ("fd", json!(row.evidence.fd)),
                    ("method", json!(row.action.method().map(|m| m.as_str()))),
                    ("result", json!(result)),
                ];
                if let Some(d) = &row.detail {
                    fields.push(("detail", json!(d)));
                }
                log.event("reaped", &fields);
            }
            let closed = report
                .masters
                .iter()
                .filter(|r| r.result == Some(Outcome::Closed))
                .count();
            let freed = crate::ptys::freed(std::slice::from_ref(&report));
            let failed = report
                .masters
                .iter()
                .filter(|r| r.result == Some(Outcome::Failed))
                .count();
            counters.released_ptys += freed as u64;
            counters.failures += failed as u64;
            log.event(
                "reap_done",
                &[
                    who[0].clone(),
                    who[1].clone(),
                    ("closed", json!(closed)),
                    ("planned", json!(planned)),
                    ("ptys_freed", json!(freed)),
                    ("stopped_us", json!(stopped.as_micros() as u64)),
                ],
            );
            Some(p.ptys.saturating_sub(freed))
        }
        Err(e) => {
            counters.failures += 1;
            log.event(
                "reap_failed",
                &[who[0].clone(), who[1].clone(), ("why", json!(e.message))],
            );
            None
        }
    }
}

/// Events: one greppable line on stderr (`ptyreap-watch: <time> <event> key=value ...`), or one
/// JSON object per line on stdout. Each event has a syslog priority: under systemd (stderr is
/// the journal stream named by `JOURNAL_STREAM`) a line starts with `<N>` instead of the time,
/// which journald takes as the priority, so `journalctl -p warning` finds what matters.
struct Log {
    json: bool,
    journal: bool,
}

/// The syslog priority of an event: 3 error, 4 warning, 5 notice, 6 info.
fn priority(event: &str) -> u8 {
    match event {
        "pass_failed" | "reap_failed" | "textfile_failed" => 3,
        "over_warn" | "reap_skipped" => 4,
        "reaped" | "reap_done" | "back_under_warn" | "notified" | "notify_skipped" | "start"
        | "stop" => 5,
        _ => 6,
    }
}

impl Log {
    fn new(json: bool) -> Log {
        Log {
            json,
            journal: stderr_is_the_journal(),
        }
    }

    fn event(&self, event: &str, fields: &[(&str, Value)]) {
        let time = rfc3339(now());
        let level = priority(event);
        if self.json {
            let mut obj = Map::new();
            obj.insert("time".into(), json!(time));
            obj.insert("event".into(), json!(event));
            obj.insert("priority".into(), json!(level));
            for (k, v) in fields {
                obj.insert((*k).into(), v.clone());
            }
            crate::output::println(&Value::Object(obj).to_string());
        } else {
            // the journal stamps each line itself
            let mut line = if self.journal {
                format!("<{level}>ptyreap-watch: {event}")
            } else {
                format!("ptyreap-watch: {time} {event}")
            };
            for (k, v) in fields {
                let text = match v {
                    Value::String(s) => format!("{s:?}"),
                    other => other.to_string(),
                };
                line.push_str(&format!(" {k}={text}"));
            }
            eprintln!("{line}");
        }
    }
}

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM` to its `dev:inode`
/// (systemd.exec(5)); a stderr redirected elsewhere since keeps the variable but not the inode.
fn stderr_is_the_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(want) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    want == format!("{}:{}", meta.dev(), meta.ino())
}

/// What must outlive a pass: the leak episodes under way (by pid and start time, so a reused pid
/// is a new process), each with when it began: a process warned about is not warned about again
/// until it has been back under `--warn`. Kept in `/var/lib/ptyreap/` as root,
/// `$XDG_STATE_HOME/ptyreap/` otherwise (`PTYREAP_STATE_DIR` overrides both), so a restarted
/// watchdog does not notify again either.
struct State {
    path: Option<PathBuf>,
    episodes: BTreeMap<String, i64>,
    /// What the poll looks of earlier passes saw, per process (`key`) and fd, with when: a loop
    /// whose period is longer than one look is still remembered for an hour (memory only).
    polled: BTreeMap<String, BTreeMap<i32, (i64, Vec<String>)>>,
    /// Since this watchdog started: for the metrics.
    counters: crate::metrics::Counters,
}

impl State {
    fn dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("PTYREAP_STATE_DIR") {
            return Some(dir.into());
        }
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return Some("/var/lib/ptyreap".into());
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
        Some(base.join("ptyreap"))
    }

    fn load() -> State {
        let path = State::dir().map(|d| d.join("watch-state.json"));
        let episodes = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| serde_json::from_value(v["episodes"].clone()).ok())
            .unwrap_or_default();
        State {
            path,
            episodes,
            polled: BTreeMap::new(),
            counters: Default::default(),
        }
    }

    /// Adds this pass's sightings to those remembered, and the remembered ones (an hour at most,
    /// same process) to this pass's look: a watcher seen once keeps its master.
    fn remember_polls(&mut self, look: &mut crate::model::PollLook) {
        let now = now();
        for (&pid, fds) in &look.seen {
            let mine = self.polled.entry(State::key(pid)).or_default();
            for (&fd, by) in fds {
                mine.insert(fd, (now, by.clone()));
            }
        }
        for (key, fds) in self.polled.iter_mut() {
            fds.retain(|_, (when, _)| now - *when < REMEMBER_POLLS_S);
            let Some(pid) = State::live(key) else {
                continue;
            };
            for (&fd, (when, by)) in fds.iter() {
                let list = look.seen.entry(pid).or_default().entry(fd).or_default();
                for b in by {
                    let earlier = format!("{b}, {}s ago", now - when);
                    if *when < now && !list.iter().any(|x| x == b) {
                        list.push(earlier);
                    }
                }
            }
        }
        self.polled
            .retain(|key, fds| !fds.is_empty() && State::live(key).is_some());
    }

    fn key(pid: i32) -> String {
        format!("{pid}:{}", sys::start_time(pid).unwrap_or(0))
    }

    /// The pid of a `key` whose process still runs (the same pid and start time).
    fn live(key: &str) -> Option<i32> {
        let pid = key.split(':').next()?.parse().ok()?;
        (State::key(pid) == key).then_some(pid)
    }

    fn forget_gone(&mut self) {
        self.episodes.retain(|key, _| State::live(key).is_some());
    }

    /// Written to a new file and renamed over the old one; a failure only costs a notification.
    fn save(&self) {
        let Some(path) = &self.path else { return };
        let Some(dir) = path.parent() else { return };
        let _ = std::fs::create_dir_all(dir);
        let tmp = dir.join(format!(".watch-state.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let body = json!({ "episodes": self.episodes }).to_string();
        if crate::new_file::write(&tmp, body.as_bytes()).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PollLook;

    fn look(pid: i32, fd: i32, by: &str) -> PollLook {
        let mut l = PollLook::default();
        l.seen
            .entry(pid)
            .or_default()
            .insert(fd, vec![by.to_string()]);
        l
    }

    /// Makes what `pid`'s fd `fd` was seen doing `secs` older.
    fn age(state: &mut State, pid: i32, fd: i32, secs: i64) {
        let seen = state.polled.get_mut(&State::key(pid)).unwrap();
        seen.get_mut(&fd).unwrap().0 -= secs;
    }

    /// A loop seen by one pass keeps its master in the next, whose look missed it; a process
    /// that is gone (another start time under the same pid) is forgotten.
    #[test]
    fn the_watchdog_remembers_what_its_looks_saw() {
        let me = std::process::id() as i32;
        let mut state = State {
            path: None,
            episodes: BTreeMap::new(),
            polled: BTreeMap::new(),
            counters: Default::default(),
        };
        state.remember_polls(&mut look(me, 7, "poll() in thread 9 (seen 1 time in 1.5s)"));
        // the pass that saw it an hour and more ago is forgotten; a recent one is not
        age(&mut state, me, 7, 10);
        let mut next = PollLook::default();
        state.remember_polls(&mut next);
        let by = &next.seen[&me][&7];
        assert_eq!(by.len(), 1);
        assert!(
            by[0].starts_with("poll() in thread 9") && by[0].ends_with("10s ago"),
            "{by:?}"
        );
        age(&mut state, me, 7, REMEMBER_POLLS_S);
        let mut later = PollLook::default();
        state.remember_polls(&mut later);
        assert!(later.seen.is_empty(), "{:?}", later.seen);
        state
            .polled
            .insert("1:0".into(), [(3, (now(), vec!["x".into()]))].into());
        state.remember_polls(&mut PollLook::default());
        assert!(
            !state.polled.contains_key("1:0"),
            "a pid reused by another process"
        );
    }
}
