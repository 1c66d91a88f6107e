//! Bad input, one table-driven matrix: flags, pids, fds, durations, output paths, environment and "no terminal",
//! each with its exit code and message (ptyreap's own errors: one plain line) — and after all of
//! them, nothing was closed.

use crate::support::{self, ptmx_fds, Fixture};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

struct Case {
    /// ptyreap's, or `sh`'s when `via_sh`
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    code: i32,
    /// each in stderr (or stdout, for the few cases that succeed)
    says: Vec<String>,
    /// run as this uid (not-permitted cases)
    uid: Option<u32>,
    /// stderr is exactly one line, and it starts with "ptyreap: "; nothing on stdout
    one_plain_line: bool,
    /// run through `sh -c` (`args` are sh's), for a pid only the shell knows ($$)
    via_sh: bool,
}

fn case(args: &[&str], code: i32, says: &str) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        code,
        says: vec![says.to_string()],
        uid: None,
        one_plain_line: false,
        via_sh: false,
    }
}

/// A case whose error is one plain line of ptyreap's saying `says`.
fn line(args: &[&str], code: i32, says: &str) -> Case {
    Case {
        one_plain_line: true,
        ..case(args, code, says)
    }
}

impl Case {
    /// And says this too.
    fn and(mut self, says: &str) -> Case {
        self.says.push(says.to_string());
        self
    }
}

#[test]
fn every_bad_input_has_its_code_and_message_and_closes_nothing() {
    let f = Fixture::spawn(&["--orphans", "3", "--live", "1"]);
    let other = Fixture::spawn(&["--orphans", "1"]);
    let paired = Fixture::spawn(&["--orphans", "2", "--pairs", "1"]);
    let masters_before = (ptmx_fds(f.pid), ptmx_fds(other.pid), ptmx_fds(paired.pid));
    let pid = f.pid.to_string();
    let gone = {
        let mut c = Command::new("true").spawn().unwrap();
        let id = c.id();
        c.wait().unwrap();
        id.to_string()
    };
    let mut zombie = Command::new("true").spawn().unwrap();
    let zpid = zombie.id().to_string();
    assert!(support::wait_for(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{zpid}/stat")).is_ok_and(|s| s.contains(") Z "))
    }));
    let dir = support::temp_dir("matrix");
    let existing = dir.join("existing.json");
    std::fs::write(&existing, "x").unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(dir.join("victim"), &link).unwrap();
    let (existing, link) = (
        existing.to_str().unwrap().to_string(),
        link.to_str().unwrap().to_string(),
    );
    let other_pid = other.pid.to_string();
    let master = f.fds("orphans")[0].to_string();
    let paired_pid = paired.pid.to_string();
    let slave = paired.fds("pairs")[1].to_string();

    let mut cases = vec![
        // pids
        line(
            &["--pid", &gone, "--dry-run"],
            1,
            &format!("no process with pid {gone}"),
        ),
        case(&["--pid", "0", "--dry-run"], 1, "is not a process id"),
        case(&["--pid", "-5", "--dry-run"], 1, "is not a process id"),
        case(&["--pid", "abc"], 2, "invalid value"),
        case(&["--pid", "99999999999"], 2, "invalid value"),
        line(&["--pid", &zpid, "--dry-run"], 1, "is a zombie"),
        line(
            &["--name", "no-such-process-name-xyz", "--dry-run"],
            1,
            "no process is named 'no-such-process-name-xyz'",
        ),
        // the shell execs ptyreap, so $$ is ptyreap's own pid
        Case {
            via_sh: true,
            ..line(
                &[
                    "-c",
                    concat!(
                        "exec ",
                        env!("CARGO_BIN_EXE_ptyreap"),
                        " --pid $$ --dry-run"
                    ),
                ],
                1,
                "is ptyreap itself",
            )
        },
        case(
            &[
                "--pid",
                &pid,
                "--pid",
                &other_pid,
                "--fd",
                &master,
                "--dry-run",
            ],
            1,
            "give a single --pid",
        ),
        // fds
        case(
            &["--pid", &pid, "--fd", "0", "--dry-run"],
            1,
            "is not a PTY master",
        ),
        case(
            &["--pid", &pid, "--fd", "999", "--min-idle", "0", "--yes"],
            1,
            "is not a PTY master",
        ),
        case(
            &["--pid", &pid, "--fd", "9-3"],
            2,
            "is not an fd or a range",
        ),
        case(&["--pid", &pid, "--fd", "x"], 2, "is not an fd or a range"),
        case(&["--pid", &pid, "--fd", ""], 2, "empty fd list"),
        // durations and values
        case(&["--pid", &pid, "--min-idle", "10x"], 2, "unknown unit"),
        case(&["--pid", &pid, "--min-idle=-1m"], 2, "not a duration"),
        // a bare number: seconds to some, minutes to others; only 0 needs no unit
        case(
            &["--pid", &pid, "--min-idle", "10"],
            2,
            "needs a unit: 10s, 10m",
        ),
        case(
            &["watch", "--once", "--interval", "0"],
            2,
            "shorter than 1s",
        ),
        case(
            &["watch", "--once", "--interval", "500ms"],
            2,
            "shorter than 1s",
        ),
        case(
            &["--pid", &pid, "--include-stale", "banana"],
            2,
            "not a duration",
        ),
        case(&["--pid", &pid, "--method", "shred"], 2, "invalid value"),
        case(&["watch", "--interval", "5x", "--once"], 2, "unknown unit"),
        // macOS's way back for a suspended app: nothing of ptyreap's can be left stopped here
        line(
            &["resume", "--pid", &pid],
            2,
            "`ptyreap resume` is for macOS",
        ),
        case(&["resume"], 2, "--pid"),
        case(
            &["watch", "--warn", "-1", "--once"],
            2,
            "unexpected argument",
        ),
        // flag combinations
        case(&["--top", "--pid", &pid], 2, "cannot be used with"),
        case(&["--top", "--name", "x"], 2, "cannot be used with"),
        case(&["--fd", "3"], 2, "--fd needs a target"),
        case(&["--method", "close"], 2, "--method needs a target"),
        case(&["--yes"], 2, "--yes needs a target"),
        case(
            &["--include-tracked"],
            2,
            "--include-tracked needs a target",
        ),
        case(
            &["--pid", &pid, "--dry-run", "--yes"],
            2,
            "cannot be used with",
        ),
        case(&["no-such-subcommand"], 2, "unrecognized subcommand"),
        case(&["--no-such-flag"], 2, "unexpected argument"),
        case(&["completions", "tcsh"], 2, "invalid value"),
        // output paths
        case(
            &["report", "--pid", &pid, "--output", &existing],
            1,
            "already exists",
        ),
        case(
            &["report", "--pid", &pid, "--output", &link],
            1,
            "already exists",
        ),
        case(
            &[
                "report",
                "--pid",
                &pid,
                "--output",
                "/nonexistent-dir/r.json",
            ],
            1,
            "cannot write the report",
        ),
        case(&["report"], 2, "--pid <PID>"),
        // no terminal for the prompt
        case(
            &["--pid", &pid, "--min-idle", "0"],
            4,
            "no terminal to ask on",
        ),
    ];
    // fds that are not PTY masters: standard input, a pair's slave, one that is not open
    for fd in ["0", slave.as_str(), "999"] {
        cases.push(
            line(
                &["--pid", &paired_pid, "--fd", fd, "--min-idle", "0", "--yes"],
                1,
                &format!("fd {fd} of pid {paired_pid}"),
            )
            .and("is not a PTY master"),
        );
    }
    // pid 2 is kthreadd whenever we run in the initial pid namespace
    if std::fs::read_to_string("/proc/2/comm")
        .unwrap_or_default()
        .trim()
        == "kthreadd"
    {
        cases.push(line(&["--pid", "2", "--dry-run"], 1, "is a kernel thread"));
    } else {
        eprintln!("skipped the kernel-thread case: pid 2 is not kthreadd here");
    }
    // environment: NO_COLOR and a census on a non-terminal succeed without escape codes
    cases.push(Case {
        env: vec![("NO_COLOR", "1")],
        ..case(&["--pid", &pid, "--dry-run"], 0, "3 fresh, 1 live")
    });
    // a pid we may not inspect (as nobody)
    if support::require_root() {
        cases.push(Case {
            uid: Some(65534),
            ..line(&["--pid", &pid, "--dry-run"], 1, "not permitted to inspect").and("sudo")
        });
        // the emergency needs root, and says how to get it without a terminal
        cases.push(Case {
            uid: Some(65534),
            ..line(&["rescue"], 1, "rescue needs root").and("ssh -T root@localhost")
        });
    }
    assert!(cases.len() >= 25, "{} cases", cases.len());

    for c in &cases {
        let mut cmd = Command::new(if c.via_sh {
            "sh".into()
        } else {
            support::runnable_by_anyone(env!("CARGO_BIN_EXE_ptyreap"))
        });
        cmd.args(&c.args)
            .stdin(Stdio::null())
            .env_remove("NO_COLOR");
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
        if let Some(uid) = c.uid {
            cmd.uid(uid).gid(uid);
        }
        let out = cmd.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(c.code), "{:?}: {stderr}", c.args);
        let text = if c.code == 0 {
            format!("{stdout}{stderr}")
        } else {
            stderr.to_string()
        };
        for says in &c.says {
            assert!(
                text.contains(says.as_str()),
                "{:?}: '{says}' not in: {text}",
                c.args
            );
        }
        if c.code == 2 {
            assert!(stdout.is_empty(), "{:?}: a usage error on stdout", c.args);
        }
        if c.one_plain_line {
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{:?}: want one line, got: {stderr}", c.args);
            assert!(lines[0].starts_with("ptyreap: "), "{:?}: {stderr}", c.args);
            assert!(stdout.is_empty(), "{:?}: {stdout}", c.args);
        }

        assert!(
            !stdout.contains('\x1b') && !stderr.contains('\x1b'),
            "{:?}: escape codes",
            c.args
        );
        if c.code == 1 && !c.args.contains(&"--min-idle".to_string()) {
            assert_eq!(
                stderr.lines().count(),
                1,
                "{:?}: one line: {stderr}",
                c.args
            );
        }
    }
    zombie.wait().unwrap();
    assert_eq!(
        (ptmx_fds(f.pid), ptmx_fds(other.pid), ptmx_fds(paired.pid)),
        masters_before,
        "something was closed"
    );
    assert!(!dir.join("victim").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("existing.json")).unwrap(),
        "x"
    );
}
