//! Verdicts that never call a master orphaned while something still uses it: what the scan could
//! not see, poll loops busy at the instant of the scan, who opened the PTY, and the default
//! method that follows from it. Real processes: `ptyreap-victim`, and Debian's tmux.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;

use crate::support::{self, ptyreap, ptyreap_with, require_root, tty_index, Victim};
use std::time::Duration;

const NOBODY: u32 = 65534;

fn masters(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    doc["targets"][0]["masters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A target of `nobody`'s whose slave root holds: as `nobody`, ptyreap cannot see root's fds,
/// so the master is `unknown`, kept, and root's session goes on; the census says how many
/// processes it could not read. As root the same master is `live`.
#[test]
fn what_the_scan_cannot_see_makes_unknown() {
    if !require_root() {
        return;
    }
    let mut v = Victim::spawn_as(Some(NOBODY), &["--masters", "1"]);
    let index = tty_index(v.pid, 100).expect("the victim's master");
    // root (this test process) holds the slave
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/dev/pts/{index}"))
        .expect("opening the slave as root");
    let pid = v.pid.to_string();
    let as_nobody = |cmd: &mut std::process::Command| {
        cmd.uid(NOBODY).gid(NOBODY);
    };
    let dry = ptyreap_with(
        &["--pid", &pid, "--min-idle", "0", "--dry-run", "--json"],
        as_nobody,
    );
    assert_eq!(dry.code, 0, "{dry:?}");
    let rows = masters(&dry.json());
    assert_eq!(rows[0]["verdict"], "unknown", "{rows:?}");
    let reason = rows[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("could not be read") && reason.contains("run ptyreap as root"),
        "{reason}"
    );
    assert!(
        dry.json()["system"]["unreadable_processes"]
            .as_u64()
            .unwrap()
            > 0
    );
    let out = ptyreap_with(&["--pid", &pid, "--min-idle", "0", "--yes"], as_nobody);
    assert_eq!(out.code, 0, "nothing planned, nothing done: {out:?}");
    assert_eq!(v.masters_open(), vec![100], "the master was closed");
    // root's session is intact: writing to the slave works
    use std::io::Write;
    (&slave)
        .write_all(b"still here\n")
        .expect("root's slave was hung up");
    let census = ptyreap_with(&["--json"], as_nobody);
    assert!(
        census.json()["system"]["unreadable_processes"]
            .as_u64()
            .unwrap()
            > 0,
        "{census:?}"
    );
    let human = ptyreap_with(&[], as_nobody);
    assert!(
        human.stdout.contains("could not read the fds of"),
        "{human:?}"
    );
    // as root: live, held by us
    let root = crate::support::dry_run(&pid, &["--json"]);
    assert_eq!(masters(&root.json())[0]["verdict"], "live", "{root:?}");
    assert!(v.status().is_some());
    drop(slave);
}

/// tmux (libevent's poll backend) spins on a pane master whose command exited while its
/// pipe-pane consumer does not read: it never waits in poll(), so only catching its next poll()
/// sees that it watches the master. Such masters are `tracked`; a plain reap keeps them;
/// `--include-tracked` merges them, and the resize that would have killed tmux after a close
/// leaves it running, its other panes echoing. tmux may stop spinning on one pane before the
/// look; that master is then orphaned and merged by the plain reap, so the test asserts the end
/// state (one PTY for both pane masters, none closed), whichever run merged them.
#[test]
fn a_busy_tmux_server_keeps_its_pane_masters() {
    if !require_root() {
        return;
    }
    // tmux's panes are PTYs of the machine's
    let _ptys = support::shared_ptys();
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is not installed and CI is set (.ci/run installs it)"
        );
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let dir = support::temp_dir("tmux");
    let sock = dir.join("sock");
    let tmux = |args: &[&str]| -> String {
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&sock)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("running tmux");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    struct Server<F: Fn(&[&str]) -> String>(F);
    impl<F: Fn(&[&str]) -> String> Drop for Server<F> {
        fn drop(&mut self) {
            (self.0)(&["kill-server"]);
        }
    }
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "80",
        "-y",
        "24",
        "cat",
    ]);
    let server = Server(tmux);
    let tmux = &server.0;
    let server_pid: i32 = tmux(&["display", "-p", "#{pid}"]).parse().unwrap();
    for _ in 0..2 {
        let pane = tmux(&[
            "split-window",
            "-t",
            "t",
            "-P",
            "-F",
            "#{pane_id}",
            "sh -c 'sleep 1; yes | head -c 3000000; exit 0'",
        ]);
        // a consumer that never reads: the pipe fills, the pane's output cannot all be written
        tmux(&["pipe-pane", "-t", &pane, "exec sleep 100000"]);
    }
    tmux(&["select-layout", "-t", "t", "even-vertical"]);
    // both commands have exited and the server spins (running, not waiting)
    let spinning = support::wait_for(Duration::from_secs(20), || {
        let panes = tmux(&["list-panes", "-t", "t", "-F", "#{pane_pid}"]);
        let alive = panes
            .lines()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .count();
        alive == 1 && ptmx_count(server_pid) == 3
    });
    assert!(
        spinning,
        "the tmux scenario did not settle: {}",
        tmux(&["list-panes", "-a"])
    );
    let pid = server_pid.to_string();
    let dry = crate::support::dry_run(&pid, &["--json"]);
    let rows = masters(&dry.json());
    // the panes' masters: no process holds their slaves. Tracked while the server spins on
    // them; tmux's own timing may end the spin on one before the look (under load it does), and
    // then that master is orphaned and merged by default just the same.
    let panes: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["slave_holders"].as_array().is_some_and(|h| h.is_empty()))
        .collect();
    assert_eq!(panes.len(), 2, "{rows:#?}");
    assert!(
        panes
            .iter()
            .all(|r| r["verdict"] == "tracked" || r["verdict"] == "orphaned"),
        "{rows:#?}"
    );
    let tracked: Vec<&&serde_json::Value> =
        panes.iter().filter(|r| r["verdict"] == "tracked").collect();
    assert!(!tracked.is_empty(), "no pane master was tracked: {rows:#?}");
    for r in &tracked {
        assert!(
            r["watched_by"].to_string().contains("in thread")
                && r["watched_by"].to_string().contains("seen"),
            "{r}"
        );
    }
    let pane_fds: Vec<i32> = panes
        .iter()
        .map(|r| r["fd"].as_i64().unwrap() as i32)
        .collect();
    let plain = ptyreap(&["--pid", &pid, "--min-idle", "0", "--yes", "--json"]);
    assert_eq!(plain.code, 0, "{plain:?}");
    let rows = masters(&plain.json());
    assert!(
        rows.iter()
            .filter(|r| r["verdict"] == "tracked")
            .all(|r| r["action"] == "keep"),
        "a plain reap released a tracked master: {rows:#?}"
    );
    assert_eq!(
        ptmx_count(server_pid),
        3,
        "a plain reap closed a pane master: {rows:#?}"
    );
    let merged = ptyreap(&[
        "--pid",
        &pid,
        "--min-idle",
        "0",
        "--yes",
        "--include-tracked",
        "--json",
    ]);
    assert_eq!(merged.code, 0, "{merged:?}");
    let rows = masters(&merged.json());
    assert!(
        rows.iter().all(|r| r["method"] != "close"),
        "a pane master was closed, not merged: {rows:#?}"
    );
    // whichever run merged them, the panes' masters now share one PTY and none was closed
    assert_eq!(ptmx_count(server_pid), 3, "{rows:#?}");
    let ptys: std::collections::BTreeSet<Option<u32>> = pane_fds
        .iter()
        .map(|&fd| tty_index(server_pid, fd))
        .collect();
    assert!(
        ptys.len() == 1 && !ptys.contains(&None),
        "the pane masters were not merged onto one PTY ({ptys:?}): {rows:#?}"
    );
    // the resize that makes tmux fatal() when TIOCSWINSZ fails
    tmux(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::path::Path::new(&format!("/proc/{server_pid}")).exists(),
        "the tmux server died after the resize"
    );
    // the first pane still echoes
    let first = tmux(&["list-panes", "-t", "t", "-F", "#{pane_id}"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    tmux(&["send-keys", "-t", &first, "still-echoing", "Enter"]);
    assert!(support::wait_for(Duration::from_secs(5), || tmux(&[
        "capture-pane",
        "-p",
        "-t",
        &first
    ])
    .contains("still-echoing")));
}

fn ptmx_count(pid: i32) -> usize {
    support::ptmx_fds(pid).len()
}

/// Threads spinning in poll() and select() on hung-up masters never wait in them: seen by the
/// look over time (the syscall tracepoints); a thread spinning in pure computation costs nothing;
/// afterwards no thread is traced or stopped and the target runs on.
#[test]
fn busy_poll_loops_are_caught_within_the_bound() {
    if !require_root() {
        return;
    }
    let mut v = Victim::spawn(&["--spin-poll", "2", "--spin-select", "--spin-compute"]);
    let before = v.signal_state();
    let pid = v.pid.to_string();
    let t = std::time::Instant::now();
    let dry = crate::support::dry_run(&pid, &["--json"]);
    let took = t.elapsed();
    assert_eq!(dry.code, 0, "{dry:?}");
    for r in masters(&dry.json()) {
        assert_eq!(r["verdict"], "tracked", "{r}");
        let by = r["watched_by"].to_string();
        let polls = by.matches("poll() in thread").count();
        assert!(
            polls == 2 && by.contains("select() in thread") && by.contains("seen"),
            "{by}"
        );
    }
    // only a guard against a hang: the compute thread is given up on at the bound
    assert!(took < Duration::from_secs(10), "{took:?}");
    support::assert_running(v.pid);
    let status = v.assert_healthy(&before);
    assert_eq!(status["open"], "100,101");
}

/// A loop that polls its masters once a second and sleeps in between (socat's `wait-slave`) is
/// a watcher: the default window (1.5 s) sees it, and neither the default nor `--method close`
/// touches its masters. Without the look (`--observe 0`) the evidence says so and nothing is
/// closed by default.
#[test]
fn a_loop_that_polls_once_a_second_is_tracked() {
    if !require_root() {
        return;
    }
    let mut v = Victim::spawn(&["--masters", "2", "--poll-every-ms", "1000"]);
    let before = v.signal_state();
    let pid = v.pid.to_string();
    let look = |extra: &[&str]| {
        let mut args = vec!["--pid", &pid, "--min-idle", "0", "--json"];
        args.extend_from_slice(extra);
        let out = ptyreap_with(&args, |c| {
            c.env_remove("PTYREAP_OBSERVE");
        });
        assert!(out.code == 0, "{out:?}");
        masters(&out.json())
    };
    for r in look(&["--dry-run"]) {
        assert_eq!(r["verdict"], "tracked", "{r}");
        assert!(
            r["watched_by"].to_string().contains("poll() in thread"),
            "{r}"
        );
    }
    for extra in [&["--yes"][..], &["--yes", "--method", "close"]] {
        for r in look(extra) {
            assert_eq!(r["action"], "keep", "{extra:?}: {r}");
        }
        assert_eq!(v.masters_open(), vec![100, 101], "{extra:?}");
    }
    for r in look(&["--dry-run", "--observe", "0"]) {
        assert_eq!(r["verdict"], "orphaned", "{r}");
        assert_ne!(r["method"], "close", "{r}");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("not watched over time"),
            "{r}"
        );
    }
    v.assert_healthy(&before);
}

/// Dry runs and the census change nothing a thread can observe: 30 dry runs against threads that spin and then
/// sleep in `epoll_wait` or `sigtimedwait`, or fork short-lived children with SIGCHLD at its
/// default (a traced thread would be woken by it), cause not one EINTR.
#[test]
fn thirty_dry_runs_cause_no_eintr() {
    if !require_root() {
        return;
    }
    let mut v = Victim::spawn(&["--masters", "2", "--eintr-probes"]);
    std::thread::sleep(Duration::from_millis(200));
    let start = v.status().expect("status");
    let pid = v.pid.to_string();
    for _ in 0..30 {
        let out = crate::support::dry_run(&pid, &[]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    // and the census
    for _ in 0..10 {
        let out = ptyreap(&["--json"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let end = v.status().expect("status");
    let calls = |s: &std::collections::HashMap<String, String>| -> u64 {
        s["probe_calls"].parse().unwrap()
    };
    assert!(
        calls(&end) > calls(&start) + 100,
        "the probes did not run: {end:?}"
    );
    assert_eq!(start["eintr"], "0", "{start:?}");
    assert_eq!(end["eintr"], "0", "dry runs interrupted a thread: {end:?}");
}

/// A fork without exec carries the program's own numbers on (Tcl expect's `fork`): never
/// `inherited`, never closed by default.
#[test]
fn a_fork_without_exec_is_not_inherited() {
    if !require_root() {
        return;
    }
    let v = Victim::spawn(&[
        "--open-after-ms",
        "300",
        "--masters",
        "3",
        "--fork-child-no-exec",
    ]);
    let child = v.child_pid.to_string();
    for r in masters(&crate::support::dry_run(&child, &["--json"]).json()) {
        assert_eq!(r["opened_by"], serde_json::Value::Null, "{r}");
        assert_ne!(r["method"], "close", "{r}");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("no evidence that it crossed an exec"),
            "{r}"
        );
    }
    let out = ptyreap(&["--pid", &child, "--min-idle", "0", "--yes", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    // merged, not closed: every number is still a PTY master
    assert_eq!(support::ptmx_fds(v.child_pid), vec![100, 101, 102]);
}

/// A dry run changes nothing: every blocked thread sits in the same call with the same
/// arguments, stack and pc (/proc/PID/task/TID/syscall), and the fd table is the same.
#[test]
fn a_dry_run_changes_nothing() {
    if !require_root() {
        return;
    }
    let f = support::Fixture::spawn(&["--orphans", "3", "--tracked", "1", "--threads", "4"]);
    let look = || -> (Vec<String>, Vec<(String, String)>) {
        let mut calls: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", f.pid))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path().join("syscall")).unwrap_or_default())
            .collect();
        calls.sort();
        let mut fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{}/fd", f.pid))
            .unwrap()
            .flatten()
            .map(|e| {
                let link = std::fs::read_link(e.path()).unwrap_or_default();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    link.to_string_lossy().into_owned(),
                )
            })
            .collect();
        fds.sort();
        (calls, fds)
    };
    let eintr = f.check()["epoll_eintr"].clone();
    let before = look();
    let out = crate::support::dry_run(f.pid, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(look(), before, "a dry run changed the target");
    // no thread was interrupted: an epoll_wait interrupted by a ptrace stop returns EINTR
    assert_eq!(
        f.check()["epoll_eintr"],
        eintr,
        "a dry run interrupted an epoll_wait"
    );
}

/// Who opened it decides the default: the child's copies are older than the child (inherited,
/// the program never saw them): close. The parent opened its own: merge, into one keeper, and a
/// second run leaves it at one.
#[test]
fn inherited_masters_are_closed_and_own_ones_merged() {
    if !require_root() {
        return;
    }
    let v = Victim::spawn(&["--open-after-ms", "300", "--masters", "3", "--fork-child"]);
    let child = v.child_pid.to_string();
    let parent = v.pid.to_string();
    let dry = |pid: &str| masters(&crate::support::dry_run(pid, &["--json"]).json());
    for r in dry(&child) {
        assert_eq!(r["opened_by"], "inherited", "{r}");
        assert_eq!(r["method"], "close", "{r}");
        assert!(
            r["reason"].as_str().unwrap().contains("close: inherited"),
            "{r}"
        );
    }
    // the parent's own masters (the child's terminal, below 100, is a live session)
    let own: Vec<serde_json::Value> = dry(&parent)
        .into_iter()
        .filter(|r| r["fd"].as_i64().unwrap() >= 100)
        .collect();
    for r in &own {
        assert_eq!(r["opened_by"], "self", "{r}");
    }
    let methods: Vec<String> = own
        .iter()
        .map(|r| format!("{}/{}", r["action"], r["method"]))
        .collect();
    assert_eq!(
        methods,
        [
            "\"keep\"/null",
            "\"close\"/\"merge\"",
            "\"close\"/\"merge\""
        ],
        "{own:#?}"
    );
    for _ in 0..2 {
        let out = ptyreap(&["--pid", &parent, "--min-idle", "0", "--yes", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        // every number is still a master, all on one PTY: one keeper
        let fds = v.masters_open();
        assert_eq!(fds, vec![100, 101, 102]);
        let ptys: std::collections::BTreeSet<Option<u32>> =
            fds.iter().map(|&fd| tty_index(v.pid, fd)).collect();
        assert_eq!(ptys.len(), 1, "more than one kept PTY: {ptys:?}");
    }
    let out = ptyreap(&["--pid", &child, "--min-idle", "0", "--yes", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(support::ptmx_fds(v.child_pid).is_empty());
}

/// Another process blocked in read() on its copy of the master uses the PTY in a way no idle
/// time shows: the row says so and keeps it.
#[test]
fn a_reader_in_another_process_keeps_the_master() {
    if !require_root() {
        return;
    }
    let v = Victim::spawn(&[
        "--never-opened",
        "--masters",
        "1",
        "--fork-child",
        "--child-reads",
    ]);
    let child = v.child_pid;
    assert!(support::wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{child}/syscall"))
            .is_ok_and(|s| s.starts_with(&format!("{} ", libc::SYS_read)))
    }));
    let pid = v.pid.to_string();
    let doc = crate::support::dry_run(&pid, &["--json"]).json();
    // the first master at 100 (below it: the child's terminal, a live session)
    let rows = masters(&doc);
    let r = rows.iter().find(|r| r["fd"] == 100).expect("fd 100");
    assert_eq!(r["verdict"], "unknown", "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains(&format!(
            "pid {child} (ptyreap-victim) thread {child} blocks in read()"
        )),
        "{r}"
    );
    let out = ptyreap(&["--pid", &pid, "--min-idle", "0", "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(v.masters_open(), vec![100]);
}

/// Masters registered with the target's io_uring are used where no other look can see: kept,
/// and the row says why.
#[test]
fn masters_registered_with_io_uring_are_kept() {
    if !require_root() {
        return;
    }
    let v = Victim::spawn(&["--uring", "--masters", "2"]);
    let pid = v.pid.to_string();
    let doc = crate::support::dry_run(&pid, &["--json"]).json();
    for r in masters(&doc) {
        assert_eq!(r["verdict"], "unknown", "{r}");
        assert!(
            r["reason"].as_str().unwrap().contains("io_uring instance"),
            "{r}"
        );
    }
    let out = ptyreap(&["--pid", &pid, "--min-idle", "0", "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(v.masters_open(), vec![100, 101]);
}

/// A slave held only as a file registered with an io_uring instance (its fd closed) is in use:
/// its master is `live`, with the ring named as the holder, and kept; the other master goes.
#[test]
fn a_slave_held_by_io_uring_alone_keeps_its_master() {
    if !require_root() {
        return;
    }
    let v = Victim::spawn(&["--uring-slave", "--masters", "2"]);
    let pid = v.pid.to_string();
    let doc = crate::support::dry_run(&pid, &["--json"]).json();
    let rows = masters(&doc);
    let first = rows.iter().find(|r| r["fd"] == 100).expect("fd 100");
    assert_eq!(first["verdict"], "live", "{first}");
    assert!(
        first["reason"].as_str().unwrap().contains("io_uring"),
        "{first}"
    );
    assert!(
        first["target_slave_fds"].as_array().unwrap().is_empty(),
        "a ring is no slave fd to release: {first}"
    );
    // the census agrees: one of its two PTYs looks orphaned
    let census = ptyreap(&["--json"]).json();
    let line = census["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == v.pid)
        .cloned()
        .expect("the victim in the census");
    assert_eq!(line["orphaned"], 1, "{line}");
    let out = ptyreap(&[
        "--pid",
        &pid,
        "--min-idle",
        "0",
        "--yes",
        "--method",
        "close",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(v.masters_open(), vec![100]);
}
