//! Every bad input gets one plain line, its documented exit code, and nothing touched.

use crate::support::{self, ptmx_fds, ptyreap, Fixture};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// One line on stderr that starts with "ptyreap: " and mentions `words`.
fn assert_one_line(stderr: &str, words: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line, got: {stderr}");
    assert!(lines[0].starts_with("ptyreap: "), "{stderr}");
    assert!(lines[0].contains(words), "'{}' lacks '{words}'", lines[0]);
}

#[test]
fn a_missing_pid() {
    let mut child = Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let out = ptyreap(&["--pid", &gone.to_string(), "--dry-run"]);
    assert_eq!(out.code, 1);
    assert_one_line(&out.stderr, &format!("no process with pid {gone}"));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_zombie() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id().to_string();
    // not waited for: a zombie until we reap it
    assert!(support::wait_for(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    }));
    let out = ptyreap(&["--pid", &pid, "--dry-run"]);
    child.wait().unwrap();
    assert_eq!(out.code, 1);
    assert_one_line(&out.stderr, "is a zombie");
}

#[test]
fn a_kernel_thread() {
    // pid 2 is kthreadd whenever we run in the initial pid namespace
    let comm = std::fs::read_to_string("/proc/2/comm").unwrap_or_default();
    if comm.trim() != "kthreadd" {
        eprintln!("skipped: pid 2 is not kthreadd here");
        return;
    }
    let out = ptyreap(&["--pid", "2", "--dry-run"]);
    assert_eq!(out.code, 1);
    assert_one_line(&out.stderr, "is a kernel thread");
}

#[test]
fn our_own_pid() {
    // the shell execs ptyreap, so $$ is ptyreap's own pid
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {} --pid $$ --dry-run",
            env!("CARGO_BIN_EXE_ptyreap")
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_one_line(&String::from_utf8_lossy(&out.stderr), "is ptyreap itself");
}

#[test]
fn a_pid_we_may_not_inspect() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "2"]);
    let before = ptmx_fds(f.pid);
    // ptyreap as nobody, against a root process
    let out = Command::new(env!("CARGO_BIN_EXE_ptyreap"))
        .args(["--pid", &f.pid.to_string(), "--dry-run"])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_one_line(&stderr, "not permitted to inspect");
    assert!(stderr.contains("sudo"), "says what to do: {stderr}");
    assert_eq!(ptmx_fds(f.pid), before);
}

#[test]
fn an_fd_that_is_not_a_pty_master() {
    let f = Fixture::spawn(&["--orphans", "2", "--pairs", "1"]);
    let before = ptmx_fds(f.pid);
    let pid = f.pid.to_string();
    let slave = f.fds("pairs")[1].to_string();
    for fd in ["0", slave.as_str(), "999"] {
        let out = ptyreap(&["--pid", &pid, "--fd", fd, "--min-idle", "0", "--yes"]);
        assert_eq!(out.code, 1, "--fd {fd}: {out:?}");
        assert_one_line(&out.stderr, &format!("fd {fd} of pid {pid}"));
        assert!(out.stderr.contains("is not a PTY master"));
    }
    // a valid --fd narrows the rows to that fd
    let master = f.fds("orphans")[0].to_string();
    let out = ptyreap(&["--pid", &pid, "--fd", &master, "--dry-run", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.json()["targets"][0]["masters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ptmx_fds(f.pid), before);
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &["--top", "--pid", "1"],
        &["--top", "--name", "x"],
        &["--pid", "1", "--dry-run", "--yes"],
        &["--fd", "3"],
        &["--method", "close"],
        &["--include-tracked"],
        &["--pid", "1", "--min-idle", "10x"],
        &["--pid", "1", "--fd", "9-3"],
        &["--pid", "abc"],
        &["--pid", "1", "--method", "shred"],
        &["--no-such-flag"],
    ];
    for args in cases {
        let out = ptyreap(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_name_nobody_has() {
    let out = ptyreap(&["--name", "no-such-process-name-xyz", "--dry-run"]);
    assert_eq!(out.code, 1);
    assert_one_line(
        &out.stderr,
        "no process is named 'no-such-process-name-xyz'",
    );
}

#[test]
fn name_and_top_select_the_fixture() {
    let f = Fixture::spawn(&["--orphans", "3"]);
    let out = ptyreap(&["--name", "ptyreap-fixture", "--dry-run", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let pids: Vec<i64> = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["pid"].as_i64().unwrap())
        .collect();
    assert!(pids.contains(&(f.pid as i64)), "{pids:?}");
    let top = ptyreap(&["--top", "--dry-run", "--json"]).json();
    assert_eq!(top["targets"].as_array().unwrap().len(), 1);
}
