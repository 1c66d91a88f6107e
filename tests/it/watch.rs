//! `ptyreap watch`: warns above --warn, reaps orphans above --reap (never live or tracked ones),
//! keeps going when targets exit or refuse, notifies at most once per process per hour, and stops
//! cleanly on SIGTERM without ever leaving a target stopped.

use crate::support::{self, ptmx_fds, Fixture};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn watch(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptyreap"));
    cmd.arg("watch").args(args).stdin(Stdio::null());
    // the close path is under test (the default merges what the fixture opened itself)
    if !args.contains(&"--method") {
        cmd.args(["--method", "close"]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running ptyreap watch")
}

fn events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"))
        })
        .collect()
}

fn of<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn once_warns_and_reaps_only_orphans() {
    if !support::require_root() {
        return;
    }
    let state = support::temp_dir("watch-state");
    let f = Fixture::spawn(&[
        "--orphans",
        "6",
        "--tracked",
        "1",
        "--live",
        "2",
        "--unread",
        "1",
    ]);
    let pid = f.pid.to_string();
    let out = watch(
        &[
            "--once",
            "--pid",
            &pid,
            "--warn",
            "2",
            "--reap",
            "4",
            "--min-idle",
            "0",
            "--json",
        ],
        &[("PTYREAP_STATE_DIR", state.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let ev = events(&out.stdout);
    let warned = of(&ev, "over_warn");
    assert_eq!(warned.len(), 1, "{ev:?}");
    assert_eq!(warned[0]["pid"], f.pid);
    assert_eq!(warned[0]["masters"], 10);
    // warned about what is left after the reap: the tracked, live and unread PTYs
    assert_eq!(warned[0]["ptys"], 4, "{:?}", warned[0]);
    assert_eq!(warned[0]["priority"], 4, "{:?}", warned[0]);
    // ten PTYs made at once are a burst, not a pace: no leak rate, no forecast
    assert!(warned[0]["leak_per_hour"].is_null(), "{:?}", warned[0]);
    assert!(warned[0]["exhausted_in_s"].is_null(), "{:?}", warned[0]);
    let reaped = of(&ev, "reaped");
    assert_eq!(reaped.len(), 6, "{ev:?}");
    assert!(reaped
        .iter()
        .all(|e| e["result"] == "closed" && e["method"] == "close"));
    let mut left = f.fds("tracked");
    left.extend(f.fds("live"));
    // output nobody read yet: never the watchdog's to release
    left.extend(f.fds("unread"));
    left.sort_unstable();
    assert_eq!(
        ptmx_fds(f.pid),
        left,
        "live, tracked and unread masters stay"
    );
    assert!(of(&ev, "reap_done")[0]["stopped_us"].is_u64());
    f.assert_live("");
}

#[test]
fn human_log_lines_are_greppable() {
    let state = support::temp_dir("watch-state");
    let f = Fixture::spawn(&["--orphans", "3"]);
    let pid = f.pid.to_string();
    let out = watch(
        &["--once", "--pid", &pid, "--warn", "1", "--no-notify"],
        &[("PTYREAP_STATE_DIR", state.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "logs go to stderr");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.lines().all(|l| l.starts_with("ptyreap-watch: ")),
        "{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains(" over_warn "))
        .expect("an over_warn line");
    assert!(
        line.contains(&format!("pid={pid} "))
            && line.contains("masters=3")
            && line.contains("leak_per_hour=")
            && line.contains("exhausted_in_s="),
        "{line}"
    );
    assert_eq!(ptmx_fds(f.pid).len(), 3, "no --reap: nothing released");
}

#[test]
fn a_refused_target_does_not_stop_the_pass() {
    if !support::require_root() {
        return;
    }
    let state = support::temp_dir("watch-state");
    let traced = Fixture::spawn(&["--orphans", "3"]);
    let other = Fixture::spawn(&["--orphans", "3"]);
    let tpid = nix::unistd::Pid::from_raw(traced.pid);
    nix::sys::ptrace::seize(tpid, nix::sys::ptrace::Options::empty()).expect("seize");
    let out = watch(
        &[
            "--once",
            "--pid",
            &traced.pid.to_string(),
            "--pid",
            &other.pid.to_string(),
            "--warn",
            "1",
            "--reap",
            "1",
            "--min-idle",
            "0",
            "--json",
            "--no-notify",
        ],
        &[("PTYREAP_STATE_DIR", state.to_str().unwrap())],
    );
    let _ = nix::sys::ptrace::detach(tpid, None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let ev = events(&out.stdout);
    let failed = of(&ev, "reap_failed");
    assert_eq!(failed.len(), 1, "{ev:?}");
    assert!(failed[0]["why"]
        .as_str()
        .unwrap()
        .contains("already being traced"));
    assert_eq!(ptmx_fds(traced.pid).len(), 3);
    assert!(
        ptmx_fds(other.pid).is_empty(),
        "the other target was still reaped"
    );
}

fn spawn_watch(args: &[&str], state: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ptyreap"))
        .arg("watch")
        .args(args)
        .args(["--method", "close"])
        .env("PTYREAP_STATE_DIR", state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning ptyreap watch")
}

#[test]
fn it_keeps_going_when_the_target_exits_and_stops_on_sigterm() {
    let state = support::temp_dir("watch-state");
    let f = Fixture::spawn(&["--orphans", "2"]);
    let mut w = spawn_watch(
        &[
            "--pid",
            &f.pid.to_string(),
            "--interval",
            "1s",
            "--warn",
            "1",
            "--json",
            "--no-notify",
        ],
        &state,
    );
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    let mut next_event = |name: &str| -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "no {name} event");
            let line = lines.next().expect("watch ended early").unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["event"] == name {
                return v;
            }
        }
    };
    assert_eq!(next_event("over_warn")["pid"], f.pid);
    drop(f); // the target exits mid-way
    let p = next_event("pass");
    assert_eq!(p["holders"], 0, "{p}");
    next_event("pass");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
    next_event("stop");
    let status = w.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_during_passes_never_leaves_a_target_stopped() {
    if !support::require_root() {
        return;
    }
    let state = support::temp_dir("watch-state");
    for delay_ms in [0u64, 1, 2, 3, 5, 8, 13, 21] {
        let f = Fixture::spawn(&["--orphans", "200", "--live", "1", "--threads", "4"]);
        let w = spawn_watch(
            &[
                "--pid",
                &f.pid.to_string(),
                // the shortest interval allowed; the signal lands in the first pass
                "--interval",
                "1s",
                "--warn",
                "0",
                "--reap",
                "0",
                "--min-idle",
                "0",
                "--json",
                "--no-notify",
            ],
            &state,
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
        let out = w.wait_with_output().unwrap();
        let ev = events(&out.stdout);
        // killed outright only before it could install its handler (and so before any pass)
        let early_kill = out.status.code().is_none() && ev.is_empty();
        assert!(
            out.status.code() == Some(0) || early_kill,
            "delay {delay_ms} ms: {:?}",
            out.status
        );
        assert!(
            ev.is_empty() || ev.last().unwrap()["event"] == "stop",
            "delay {delay_ms}: {ev:?}"
        );
        support::assert_running(f.pid);
        f.assert_healthy("");
    }
}

#[test]
fn one_notification_per_leak_episode() {
    let dir = support::temp_dir("notify");
    let log = dir.join("notified");
    let fake = dir.join("notify-send");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&fake).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let state = dir.join("state");
    let f = Fixture::spawn(&["--orphans", "2"]);
    let env = [
        ("PATH", path.as_str()),
        ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent"),
        ("PTYREAP_STATE_DIR", state.to_str().unwrap()),
    ];
    let pid = f.pid.to_string();
    for _ in 0..3 {
        let out = watch(&["--once", "--pid", &pid, "--warn", "1", "--json"], &env);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let sent = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        sent.lines().count(),
        1,
        "three passes, one notification: {sent}"
    );
    assert!(sent.contains(&format!("pid {pid}")), "{sent}");
}

/// After a merge of 30 orphans, the process holds one orphaned PTY (and its live ones): the
/// census counts PTYs, the second look prints the merged fds as one line with ranges, and a
/// watchdog warning above 10 PTYs is quiet.
#[test]
fn after_a_merge_counts_are_ptys_and_the_watchdog_is_quiet() {
    if !support::require_root() {
        return;
    }
    let state = support::temp_dir("watch-state");
    let f = Fixture::spawn(&["--orphans", "30", "--live", "2"]);
    let pid = f.pid.to_string();
    let merged = support::ptyreap(&[
        "--pid",
        &pid,
        "--min-idle",
        "0",
        "--yes",
        "--method",
        "merge",
    ]);
    assert_eq!(merged.code, 0, "{merged:?}");
    assert_eq!(ptmx_fds(f.pid).len(), 32, "a merge keeps every number");
    let census = support::ptyreap(&["--json"]).json();
    let row = census["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == f.pid)
        .unwrap()
        .clone();
    assert_eq!(
        (&row["masters"], &row["ptys"], &row["orphaned"]),
        (&32.into(), &3.into(), &1.into()),
        "{row}"
    );
    // the second look: the merged fds are one group, their list a range, not 30 lists of 29
    let again = support::dry_run(f.pid, &[]);
    assert_eq!(again.code, 0, "{again:?}");
    let merged_lines: Vec<&str> = again
        .stdout
        .lines()
        .filter(|l| l.contains("merged"))
        .collect();
    assert!(merged_lines.len() <= 2, "{}", again.stdout);
    assert!(again.stdout.len() < 4000, "{}", again.stdout);
    let fds = f.fds("orphans");
    let (lo, hi) = (fds.iter().min().unwrap(), fds.iter().max().unwrap());
    assert!(
        again.stdout.contains(&format!("({lo}-{hi})")),
        "{}",
        again.stdout
    );
    let out = watch(
        &[
            "--once",
            "--pid",
            &pid,
            "--warn",
            "10",
            "--no-notify",
            "--json",
        ],
        &[("PTYREAP_STATE_DIR", state.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let ev = events(&out.stdout);
    assert!(of(&ev, "over_warn").is_empty(), "{ev:?}");
    assert!(of(&ev, "still_over_warn").is_empty(), "{ev:?}");
    assert_eq!(of(&ev, "pass")[0]["ptys"], 3, "{ev:?}");
    f.assert_live("");
}

/// One warning per leak episode: the first pass over --warn warns, the next ones do not; back
/// under it ends the episode, and going over again is a new one.
#[test]
fn one_warning_per_leak_episode() {
    let state = support::temp_dir("watch-state");
    let f = Fixture::spawn(&["--orphans", "3"]);
    let pid = f.pid.to_string();
    let env = [("PTYREAP_STATE_DIR", state.to_str().unwrap())];
    let pass = |warn: &str| {
        let out = watch(
            &[
                "--once",
                "--pid",
                &pid,
                "--warn",
                warn,
                "--no-notify",
                "--json",
            ],
            &env,
        );
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let ev = events(&out.stdout);
        let named = |name| of(&ev, name).len();
        (
            named("over_warn"),
            named("still_over_warn"),
            named("back_under_warn"),
        )
    };
    assert_eq!(pass("1"), (1, 0, 0));
    assert_eq!(pass("1"), (0, 1, 0));
    assert_eq!(pass("1"), (0, 1, 0));
    assert_eq!(pass("5"), (0, 0, 1));
    assert_eq!(pass("5"), (0, 0, 0));
    assert_eq!(pass("1"), (1, 0, 0));
}

/// Under systemd (stderr is the journal stream `JOURNAL_STREAM` names), every line starts with
/// its syslog priority, which journald reads: a warning is `<4>`, a pass `<6>`.
#[test]
fn journal_lines_carry_their_priority() {
    use std::os::unix::fs::MetadataExt;
    let dir = support::temp_dir("journal");
    let f = Fixture::spawn(&["--orphans", "2"]);
    let pid = f.pid.to_string();
    // one pass with stderr to `log`, JOURNAL_STREAM naming `journal` (a file's dev:inode)
    let pass = |log: &std::path::Path, journal: &std::fs::Metadata, state: &str| {
        let file = std::fs::File::create(log).unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_ptyreap"))
            .args([
                "watch",
                "--once",
                "--pid",
                &pid,
                "--warn",
                "1",
                "--no-notify",
            ])
            .env(
                "JOURNAL_STREAM",
                format!("{}:{}", journal.dev(), journal.ino()),
            )
            .env("PTYREAP_STATE_DIR", dir.join(state))
            .stdin(Stdio::null())
            .stderr(file)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_to_string(log).unwrap()
    };
    let log = dir.join("stderr");
    std::fs::File::create(&log).unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let text = pass(&log, &meta, "state");
    assert!(
        text.lines()
            .any(|l| l.starts_with("<4>ptyreap-watch: over_warn ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>ptyreap-watch: pass ")),
        "{text}"
    );
    assert!(text.lines().all(|l| l.starts_with('<')), "{text}");
    // elsewhere (the variable inherited, stderr another file): the plain lines
    let text = pass(&dir.join("other"), &meta, "state2");
    assert!(
        text.lines().all(|l| l.starts_with("ptyreap-watch: ")),
        "{text}"
    );
}
