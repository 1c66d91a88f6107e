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
    // the pace: 10 PTYs made within the fixture's few seconds of life is a fast leak
    assert!(
        warned[0]["leak_per_hour"].as_f64().unwrap() > 100.0,
        "{:?}",
        warned[0]
    );
    assert!(
        warned[0]["exhausted_in_s"].as_u64().is_some(),
        "{:?}",
        warned[0]
    );
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
                "--interval",
                "0",
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
fn notifications_at_most_once_per_process_per_hour() {
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
