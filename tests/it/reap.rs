//! On a real kernel: reaping by ptrace close-injection. Real targets, real ptrace; the
//! target must keep working exactly as before (live sessions echo, blocked calls complete
//! correctly, sleeps last their full time) and only verified orphaned masters may go.

use crate::support::{self, ptmx_fds, ptyreap, Fixture};
use serde_json::Value;
use std::collections::BTreeSet;

fn set(v: Vec<i32>) -> BTreeSet<i32> {
    v.into_iter().collect()
}

fn results(doc: &Value) -> Vec<(i64, String)> {
    doc["targets"][0]["masters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["fd"].as_i64().unwrap(),
                m["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn closed(doc: &Value, target: usize) -> BTreeSet<i32> {
    doc["targets"][target]["masters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["result"] == "closed")
        .map(|m| m["fd"].as_i64().unwrap() as i32)
        .collect()
}

#[test]
fn reap_closes_exactly_the_orphans_and_the_target_runs_on() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn_private_devpts(
        &[
            "--orphans",
            "12",
            "--tracked",
            "2",
            "--live",
            "2",
            "--new",
            "2",
            "--pairs",
            "1",
            "--threads",
            "8",
        ],
        64,
    );
    let before = support::ptys_in_use_seen_by(f.pid);
    let baseline = f.check();
    let out = support::reap_closing(f.pid, &["--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["dry_run"], false);
    assert!(doc["targets"][0]["stopped_us"].as_u64().is_some(), "{doc}");

    let pair = f.fds("pairs");
    let mut want_gone = set(f.fds("orphans"));
    want_gone.extend(f.fds("new"));
    want_gone.insert(pair[0]);
    assert_eq!(closed(&doc, 0), want_gone, "reported closed");
    let left = set(ptmx_fds(f.pid));
    let mut want_left = set(f.fds("tracked"));
    want_left.extend(f.fds("live"));
    assert_eq!(left, want_left, "masters left in the target");
    assert!(
        !std::path::Path::new(&format!("/proc/{}/fd/{}", f.pid, pair[1])).exists(),
        "the pair's slave fd went too"
    );
    for (fd, result) in results(&doc) {
        let want = if want_gone.contains(&(fd as i32)) {
            "closed"
        } else {
            "kept"
        };
        assert_eq!(result, want, "fd {fd}");
    }
    let after = support::ptys_in_use_seen_by(f.pid);
    assert_eq!(
        before - after,
        want_gone.len(),
        "PTYs in the instance {before} -> {after}"
    );
    assert!(
        doc["pty_in_use"]["before"].is_u64() && doc["pty_in_use"]["after"].is_u64(),
        "{doc}"
    );

    support::assert_running(f.pid);
    // the target runs on: sessions echo, blocked calls complete exactly as without us
    std::thread::sleep(std::time::Duration::from_secs(4)); // let a full sleep span the stop
    let c = f.assert_healthy("");
    assert_eq!(
        c["reader_got"],
        serde_json::json!(64 * c["readers"].as_i64().unwrap()),
        "{c}"
    );
    assert_eq!(c["futex_ok"], true, "{c}");
    assert_eq!(
        c["futex_spurious"], baseline["futex_spurious"],
        "a futex wait returned without a wake: {c}"
    );
    assert_eq!(
        c["sleeps_full"], true,
        "a sleep came back early or with a restart code: {c}"
    );
    assert!(
        c["sleepers_done"].as_i64() > baseline["sleepers_done"].as_i64(),
        "{c}"
    );
    assert_eq!(
        c["epoll_got"],
        serde_json::json!(64 * c["epoll_waiters"].as_i64().unwrap()),
        "{c}"
    );
    // documented exception: any ptrace stop makes a blocked epoll_wait return EINTR
    assert!(
        c["epoll_eintr"].as_i64().unwrap() > baseline["epoll_eintr"].as_i64().unwrap(),
        "epoll_wait saw no EINTR across the stop: {c}"
    );
}

#[test]
fn without_a_terminal_or_yes_it_asks_nobody_and_closes_nothing() {
    let f = Fixture::spawn(&["--orphans", "3"]);
    let before = ptmx_fds(f.pid);
    let out = ptyreap(&["--pid", &f.pid.to_string(), "--min-idle", "0"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("no terminal to ask on"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(ptmx_fds(f.pid), before);
    // with --json the plan is printed as in a dry run
    let out = ptyreap(&["--pid", &f.pid.to_string(), "--min-idle", "0", "--json"]);
    assert_eq!(out.code, 4);
    assert_eq!(
        out.json()["targets"][0]["masters"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(ptmx_fds(f.pid), before);
}

#[test]
fn merge_keeps_every_number_a_hung_up_master() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn_private_devpts(&["--tracked", "4", "--live", "1"], 16);
    let tracked = f.fds("tracked");
    let before = support::ptys_in_use_seen_by(f.pid);
    let out = ptyreap(&[
        "--pid",
        &f.pid.to_string(),
        "--min-idle",
        "0",
        "--yes",
        "--include-tracked",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let rows = doc["targets"][0]["masters"].as_array().unwrap();
    let keeper = rows.iter().find(|m| m["fd"] == tracked[0]).unwrap();
    assert_eq!(keeper["action"], "keep", "{keeper}");
    assert_eq!(keeper["result"], "kept");
    assert!(keeper["reason"].as_str().unwrap().contains("keeper"));
    for fd in &tracked[1..] {
        let r = rows.iter().find(|m| m["fd"] == *fd).unwrap();
        assert_eq!(
            (r["method"].as_str(), r["result"].as_str()),
            (Some("merge"), Some("closed")),
            "{r}"
        );
        // still a PTY master: the keeper's
        assert_eq!(
            support::tty_index(f.pid, *fd),
            support::tty_index(f.pid, tracked[0])
        );
    }
    assert_eq!(
        before - support::ptys_in_use_seen_by(f.pid),
        3,
        "three PTYs freed"
    );
    // a second look calls the group merged, and a second run is a no-op
    let again = crate::support::dry_run(f.pid, &["--json"]).json();
    for fd in &tracked {
        let r = again["targets"][0]["masters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["fd"] == *fd)
            .unwrap()
            .clone();
        assert_eq!(r["verdict"], "merged", "{r}");
        assert_eq!(r["action"], "keep");
    }
    f.assert_live("");
}

/// `--fd 4,8 --include-tracked` with fd 8 in a merged group and fd 4 tracked: 8 is planned for
/// close, so it can never be what 4 is merged onto (closed first, the dup would fail). With no
/// other fd to merge onto, 4 is kept, its own PTY; 8 is closed; the group's other fds stay.
#[test]
fn a_merged_fd_planned_for_close_is_never_the_merge_target() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn_private_devpts(&["--tracked", "5", "--live", "1"], 16);
    let t = f.fds("tracked");
    let list = |fds: &[i32]| fds.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let pid = f.pid.to_string();
    let args = |fds: &str| {
        ptyreap(&[
            "--pid",
            &pid,
            "--fd",
            fds,
            "--min-idle",
            "0",
            "--yes",
            "--include-tracked",
            "--json",
        ])
    };
    // a merged group: t1..t3 onto t0
    let first = args(&list(&t[..4]));
    assert_eq!(first.code, 0, "{first:?}");
    let group = support::tty_index(f.pid, t[0]);
    assert_eq!(support::tty_index(f.pid, t[3]), group);
    let own = support::tty_index(f.pid, t[4]);
    assert_ne!(own, group);

    let out = args(&list(&[t[3], t[4]]));
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let rows = doc["targets"][0]["masters"].as_array().unwrap();
    let row = |fd: i32| rows.iter().find(|m| m["fd"] == fd).unwrap().clone();
    assert_eq!(row(t[3])["result"], "closed", "{}", row(t[3]));
    assert_eq!(row(t[4])["action"], "keep", "{}", row(t[4]));
    assert_eq!(row(t[4])["result"], "kept", "{}", row(t[4]));
    assert!(
        row(t[4])["reason"]
            .as_str()
            .unwrap()
            .contains("merging needs a second fd"),
        "{}",
        row(t[4])
    );
    assert!(!ptmx_fds(f.pid).contains(&t[3]), "fd {} closed", t[3]);
    assert_eq!(
        support::tty_index(f.pid, t[4]),
        own,
        "fd {} untouched",
        t[4]
    );
    assert_eq!(
        support::tty_index(f.pid, t[0]),
        group,
        "the group's keeper stays"
    );
    f.assert_live("");
}

#[test]
fn devnull_keeps_the_numbers_taken_by_dev_null() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "3", "--tracked", "2"]);
    let nulls = || {
        std::fs::read_dir(format!("/proc/{}/fd", f.pid))
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_str() == Some("/dev/null")))
            .count()
    };
    let nulls_before = nulls();
    let out = ptyreap(&[
        "--pid",
        &f.pid.to_string(),
        "--min-idle",
        "0",
        "--yes",
        "--method",
        "devnull",
        "--include-tracked",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    for fd in f.fds("orphans").into_iter().chain(f.fds("tracked")) {
        let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", f.pid)).unwrap();
        assert_eq!(link.to_str(), Some("/dev/null"), "fd {fd}");
    }
    assert!(ptmx_fds(f.pid).is_empty());
    // five released fds more, and no stray /dev/null left behind
    assert_eq!(nulls(), nulls_before + 5);
}

#[test]
fn every_holder_of_a_shared_master_is_reaped_when_named() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn_private_devpts(&["--shared", "3"], 16);
    let holder = f.ready["shared_holder"].as_i64().unwrap() as i32;
    let before = support::ptys_in_use_seen_by(f.pid);
    // the target alone: its fds go, but the PTYs stay (the holder still has copies)
    let out =
        crate::support::reap_closing(f.pid, &["--fd", &f.fds("shared")[0].to_string(), "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = &out.json()["targets"][0]["masters"][0];
    assert!(
        r["reason"].as_str().unwrap().contains("also held by"),
        "{r}"
    );
    assert_eq!(
        support::ptys_in_use_seen_by(f.pid),
        before,
        "a copy elsewhere keeps the PTY"
    );
    // both holders: every copy goes and the PTYs are freed
    let out = crate::support::reap_closing(f.pid, &["--pid", &holder.to_string(), "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(ptmx_fds(f.pid).is_empty() && ptmx_fds(holder).is_empty());
    assert_eq!(
        support::ptys_in_use_seen_by(f.pid),
        0,
        "every PTY freed (was {before})"
    );
}

#[test]
fn a_target_churning_fds_loses_only_verified_masters() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "40", "--live", "1", "--churn"]);
    let orphans = set(f.fds("orphans"));
    // the orphans grow older than --min-idle; the churn thread's masters never do (each lives
    // microseconds), so they stay `fresh` and must never be touched
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut released = BTreeSet::new();
    for _ in 0..5 {
        let out = ptyreap(&[
            "--pid",
            &f.pid.to_string(),
            "--min-idle",
            "2s",
            "--yes",
            "--method",
            "close",
            "--json",
        ]);
        // 1: every planned fd `changed` (an orphan's number reused between look and stop)
        assert!(matches!(out.code, 0 | 1 | 3), "{out:?}");
        let doc = out.json();
        let this_round = closed(&doc, 0);
        released.extend(this_round.iter().copied());
        for fd in this_round {
            // only orphans may be closed
            assert!(
                orphans.contains(&fd),
                "closed fd {fd}, not an orphan: {doc}"
            );
        }
    }
    let c = f.assert_healthy("");
    assert_eq!(
        c["churn_ebadf"], 0,
        "something closed an fd under the churn thread: {c}"
    );
    // the churn thread reuses freed numbers at once, so compare what was reported, not the table
    assert!(
        orphans.is_subset(&released),
        "orphans never released: {:?}",
        orphans.difference(&released)
    );
}

#[test]
fn a_target_traced_by_another_debugger_is_refused_by_name() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "2"]);
    let before = ptmx_fds(f.pid);
    let out = reap_under_our_tracing(f.pid, f.pid);
    assert_refused_naming_this_thread(&out);
    assert_eq!(ptmx_fds(f.pid), before);
}

/// `reap_closing` of `pid` while this thread traces its thread `tid` (as a debugger would);
/// that thread is let go again afterwards.
fn reap_under_our_tracing(pid: i32, tid: i32) -> support::Output {
    let thread = nix::unistd::Pid::from_raw(tid);
    nix::sys::ptrace::seize(thread, nix::sys::ptrace::Options::empty()).expect("seize");
    let out = support::reap_closing(pid, &[]);
    // a detach needs the thread stopped: interrupt it, wait for the stop, then let it go
    let _ = nix::sys::ptrace::interrupt(thread);
    let _ = nix::sys::wait::waitpid(thread, Some(nix::sys::wait::WaitPidFlag::__WALL));
    let _ = nix::sys::ptrace::detach(thread, None);
    out
}

/// Refused (exit 1) as already traced, by this thread.
fn assert_refused_naming_this_thread(out: &support::Output) {
    assert_eq!(out.code, 1, "{out:?}");
    // SAFETY: gettid has no preconditions; the tracer is this thread
    let me = unsafe { libc::gettid() }.to_string();
    assert!(
        out.stderr.contains("already being traced by process") && out.stderr.contains(&me),
        "{}",
        out.stderr
    );
}

/// A debugger on one thread only (`strace -p TID`): the refusal names that tracer, not ptyreap's
/// own tracer, which had seized the leader first.
#[test]
fn a_debugger_on_one_thread_is_named_not_ptyreaps_own_tracer() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "2", "--threads", "2"]);
    let before = ptmx_fds(f.pid);
    let tid = std::fs::read_dir(format!("/proc/{}/task", f.pid))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&t| t != f.pid)
        .max()
        .expect("a second thread");
    let out = reap_under_our_tracing(f.pid, tid);
    assert_refused_naming_this_thread(&out);
    assert!(!out.stderr.contains("ptyreap-tracer"), "{}", out.stderr);
    assert_eq!(ptmx_fds(f.pid), before);
}

/// `--include-stale` on a session whose master the app keeps: the session is hung up (its child
/// reads end of file and exits), but the PTY is still allocated while the fixture holds the
/// master. The row says `hung_up` and who holds it, nothing counts as freed, the exit code is 3
/// (partial); the other session and the fixture's fds are untouched.
#[test]
fn a_stale_session_is_hung_up_and_not_counted_freed_while_held() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn_private_devpts(&["--live", "2"], 8);
    let live = f.fds("live");
    let child: i32 = f.ready["live_children"][0].as_i64().unwrap() as i32;
    let before = ptmx_fds(f.pid);
    let pid = f.pid.to_string();
    let fd = live[0].to_string();
    let out = ptyreap(&[
        "--pid",
        &pid,
        "--min-idle",
        "0",
        "--include-stale",
        "0",
        "--fd",
        &fd,
        "--yes",
        "--json",
    ]);
    assert_eq!(out.code, 3, "{out:?}");
    let doc = out.json();
    let row = &doc["targets"][0]["masters"][0];
    assert_eq!(row["verdict"], "stale", "{row}");
    assert_eq!(row["result"], "hung_up", "{row}");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "freed when {pid} (ptyreap-fixture) closes its master fd {fd}"
        )),
        "{detail}"
    );
    assert_eq!(doc["ptys"]["freed"], 0, "{doc}");
    // the hung-up session ended; the fixture still holds every master
    assert!(
        support::wait_for(std::time::Duration::from_secs(5), || {
            !std::path::Path::new(&format!("/proc/{child}/status")).exists()
                || std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .is_ok_and(|s| s.contains(") Z"))
        }),
        "the hung-up session's child is still running"
    );
    assert_eq!(ptmx_fds(f.pid), before);
    assert_eq!(support::ptys_in_use_seen_by(f.pid), 2, "nothing was freed");
    // the other session still echoes
    let check = f.check();
    let ok = check["live_ok"].as_array().unwrap();
    assert!(!ok.is_empty() && ok.iter().all(|v| v == true), "{check}");
}
