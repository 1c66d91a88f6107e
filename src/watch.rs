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

/// Seconds between two notifications about the same process.
/// How long the watchdog remembers a poll()/select() loop it saw watching a master.
const REMEMBER_POLLS_S: i64 = 3600;

const NOTIFY_EVERY_S: i64 = 3600;

pub fn run(args: &WatchArgs) -> anyhow::Result<ExitCode> {
    crate::interrupt::catch();
    let log = Log { json: args.json };
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
            (
                "masters",
                json!(watched.iter().map(|p| p.masters).sum::<usize>()),
            ),
        ],
    );
    // the processes to reap are watched over time together, once per pass (observe.rs)
    let to_reap: Vec<i32> = watched
        .iter()
        .filter(|p| args.reap.is_some_and(|limit| p.masters > limit))
        .map(|p| p.pid)
        .collect();
    if !to_reap.is_empty() {
        sys::observe(&mut snapshot, &to_reap, args.observe);
        state.remember_polls(&mut snapshot.polls);
    }
    for p in &watched {
        if stop_requested() {
            return Ok(());
        }
        if p.masters > args.warn {
            log.event(
                "over_warn",
                &[
                    ("pid", json!(p.pid)),
                    ("name", json!(p.name)),
                    ("masters", json!(p.masters)),
                    ("orphaned", json!(p.orphaned)),
                    ("warn", json!(args.warn)),
                    ("leak_per_hour", json!(p.leak_per_hour)),
                    ("exhausted_in_s", json!(c.system.exhausted_in_s)),
                ],
            );
            if !args.no_notify && state.notify_due(p.pid) {
                let pace = match (p.leak_per_hour > 0.0, c.system.exhausted_in_s) {
                    (true, Some(s)) => format!(
                        " It leaks {}; at this rate PTYs run out in ~{}.",
                        crate::render::table::rate(p.leak_per_hour),
                        crate::duration::human(s.max(1))
                    ),
                    (true, None) => {
                        format!(" It leaks {}.", crate::render::table::rate(p.leak_per_hour))
                    }
                    _ => String::new(),
                };
                let body = format!(
                    "{} (pid {}) holds {} PTY masters, {} look orphaned.{pace} Inspect: sudo ptyreap --pid {} --dry-run",
                    p.name, p.pid, p.masters, p.orphaned, p.pid
                );
                match notify::send("PTY leak", &body) {
                    Ok(()) => log.event("notified", &[("pid", json!(p.pid))]),
                    Err(why) => log.event(
                        "notify_skipped",
                        &[("pid", json!(p.pid)), ("why", json!(why))],
                    ),
                }
                state.notified(p.pid);
            }
        }
        if let Some(limit) = args.reap {
            if p.masters > limit {
                reap_one(args, log, p, &snapshot);
            }
        }
    }
    state.forget_gone();
    state.save();
    Ok(())
}

/// Reaps the orphaned masters of one process; logs every action and every refusal.
fn reap_one(args: &WatchArgs, log: &Log, p: &ProcessCount, snapshot: &crate::model::Snapshot) {
    let who = [("pid", json!(p.pid)), ("name", json!(p.name))];
    let target = match sys::open_target(p.pid) {
        Ok(t) => t,
        Err(e) => {
            return log.event(
                "reap_skipped",
                &[who[0].clone(), who[1].clone(), ("why", json!(e.message))],
            )
        }
    };
    let (policy, choices) = (args.policy(), args.choices());
    let mut report = match crate::pipeline::judge_target(&target, snapshot, &policy, &choices) {
        Ok(r) => r,
        Err(e) => {
            return log.event(
                "reap_skipped",
                &[who[0].clone(), who[1].clone(), ("why", json!(e.message))],
            )
        }
    };
    if let Some(why) = &report.not_releasable_because {
        let orphaned = report
            .masters
            .iter()
            .any(|r| r.judgement.verdict == crate::model::Verdict::Orphaned);
        if orphaned {
            return log.event(
                "reap_failed",
                &[who[0].clone(), who[1].clone(), ("why", json!(why))],
            );
        }
    }
    let planned = report
        .masters
        .iter()
        .filter(|r| r.action.is_close())
        .count();
    if planned == 0 {
        return log.event(
            "nothing_to_reap",
            &[
                who[0].clone(),
                who[1].clone(),
                ("masters", json!(p.masters)),
            ],
        );
    }
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
            log.event(
                "reap_done",
                &[
                    who[0].clone(),
                    who[1].clone(),
                    ("closed", json!(closed)),
                    ("planned", json!(planned)),
                    ("stopped_us", json!(stopped.as_micros() as u64)),
                ],
            );
        }
        Err(e) => log.event(
            "reap_failed",
            &[who[0].clone(), who[1].clone(), ("why", json!(e.message))],
        ),
    }
}

/// Events: one greppable line on stderr (`ptyreap-watch: <time> <event> key=value ...`), or one
/// JSON object per line on stdout.
struct Log {
    json: bool,
}

impl Log {
    fn event(&self, event: &str, fields: &[(&str, Value)]) {
        let time = rfc3339(now());
        if self.json {
            let mut obj = Map::new();
            obj.insert("time".into(), json!(time));
            obj.insert("event".into(), json!(event));
            for (k, v) in fields {
                obj.insert((*k).into(), v.clone());
            }
            crate::output::println(&Value::Object(obj).to_string());
        } else {
            let mut line = format!("ptyreap-watch: {time} {event}");
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

/// What must outlive a pass: when we last notified about each process (by pid and start time, so
/// a reused pid is a new process). Kept in `/var/lib/ptyreap/` as root, `$XDG_STATE_HOME/ptyreap/`
/// otherwise (`PTYREAP_STATE_DIR` overrides both).
struct State {
    path: Option<PathBuf>,
    last_notified: BTreeMap<String, i64>,
    /// What the poll looks of earlier passes saw, per process (`key`) and fd, with when: a loop
    /// whose period is longer than one look is still remembered for an hour (memory only).
    polled: BTreeMap<String, BTreeMap<i32, (i64, Vec<String>)>>,
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
        let last_notified = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| serde_json::from_value(v["last_notified"].clone()).ok())
            .unwrap_or_default();
        State {
            path,
            last_notified,
            polled: BTreeMap::new(),
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

    fn notify_due(&self, pid: i32) -> bool {
        self.last_notified
            .get(&State::key(pid))
            .is_none_or(|&t| now() - t >= NOTIFY_EVERY_S)
    }

    fn notified(&mut self, pid: i32) {
        self.last_notified.insert(State::key(pid), now());
    }

    fn forget_gone(&mut self) {
        self.last_notified
            .retain(|key, _| State::live(key).is_some());
    }

    /// Written to a new file and renamed over the old one; a failure only costs a notification.
    fn save(&self) {
        let Some(path) = &self.path else { return };
        let Some(dir) = path.parent() else { return };
        let _ = std::fs::create_dir_all(dir);
        let tmp = dir.join(format!(".watch-state.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let body = json!({ "last_notified": self.last_notified }).to_string();
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
            last_notified: BTreeMap::new(),
            polled: BTreeMap::new(),
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
