//! The leaking fixture itself: it holds exactly the masters it reports, in the states it claims,
//! and its health check reports a healthy process. Needs no root.
#![cfg(target_os = "linux")]

use crate::support::{ptmx_fds, pty_nr, tty_index, wait_for, Fixture};
use serde_json::Value;
use std::fs;
use std::time::Duration;

fn len(v: &Value) -> usize {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .len()
}

/// The pts index a process's fd 0 is on (`/dev/pts/N`).
fn stdin_pts(pid: i32) -> Option<u32> {
    let link = fs::read_link(format!("/proc/{pid}/fd/0")).ok()?;
    link.to_str()?.strip_prefix("/dev/pts/")?.parse().ok()
}

#[test]
fn fixture_holds_every_kind_of_master() {
    let f = Fixture::spawn(&[crate::support::EVERY_KIND, &["--threads", "4"]].concat());
    let r = &f.ready;
    for (key, n) in [
        ("orphans", 3),
        ("tracked", 2),
        ("poll_watched", 2),
        ("select_watched", 2),
        ("live", 2),
        ("live_children", 2),
        ("shared", 2),
        ("shared_holder_fds", 2),
        ("pairs", 1),
        ("new", 2),
        ("thread_epoll_fds", 1),
    ] {
        assert_eq!(len(&r[key]), n, "{key} in {r}");
    }
    assert_eq!(r["partial"], false);
    assert!(r["epoll_fd"].is_i64(), "{r}");
    for kind in ["read", "sleep", "futex", "epoll", "poll", "select"] {
        assert_eq!(len(&r["threads"][kind]), 1, "threads.{kind} in {r}");
    }
    assert_eq!(len(&r["threads"]["churn"]), 0, "{r}");

    // Exactly the reported masters, each with its reported index; the pair's slave is no master.
    let masters = f.masters();
    assert_eq!(masters.len(), 16);
    assert_eq!(ptmx_fds(f.pid), masters);
    for fd in &masters {
        let index = tty_index(f.pid, *fd).expect("a master has a tty-index");
        assert_eq!(r["pty_index"][fd.to_string()], index, "fd {fd}");
    }
    let pair = f.fds("pairs");
    assert_eq!(tty_index(f.pid, pair[1]), None);
    let slave = fs::read_link(format!("/proc/{}/fd/{}", f.pid, pair[1])).unwrap();
    assert_eq!(
        slave,
        fs::canonicalize(format!("/dev/pts/{}", r["pty_index"][pair[0].to_string()])).unwrap()
    );
    assert!(pty_nr() >= 16);

    // The holder holds the shared masters and nothing else; each live child sits on its slave.
    let holder = r["shared_holder"].as_i64().expect("a holder pid") as i32;
    assert_eq!(ptmx_fds(holder), f.fds("shared"));
    for (fd, child) in f.fds("live").iter().zip(f.fds("live_children")) {
        assert_eq!(
            ptmx_fds(child),
            Vec::<i32>::new(),
            "live child {child} holds a master"
        );
        assert_eq!(
            stdin_pts(child),
            tty_index(f.pid, *fd),
            "live child {child}"
        );
    }

    // Sleeps take 3 s: check until one is done (the first check may come too early).
    let mut check = f.check();
    assert!(wait_for(Duration::from_secs(10), || {
        check = f.check();
        check["sleepers_done"].as_u64() >= Some(1)
    }));
    for c in [check, f.check()] {
        assert_eq!(c["live_ok"], serde_json::json!([true, true]), "{c}");
        assert_eq!(c["readers"], 1, "{c}");
        assert_eq!(c["reader_got"], 64, "{c}");
        assert_eq!(c["sleeps_full"], true, "{c}");
        assert_eq!(c["futex_ok"], true, "{c}");
        assert_eq!(c["futex_spurious"], 0, "{c}");
        assert_eq!(c["epoll_waiters"], 1, "{c}");
        assert_eq!(c["epoll_got"], 64, "{c}");
        for key in ["poll_events", "select_events", "live_exited", "errors"] {
            assert_eq!(len(&c[key]), 0, "{key} in {c}");
        }
    }
    assert_eq!(ptmx_fds(f.pid), masters, "the checks changed the masters");
}

#[test]
fn fixture_churns_and_cleans_up_its_children() {
    let f = Fixture::spawn(&["--live", "1", "--shared", "1", "--churn"]);
    let children = [
        f.fds("live_children")[0],
        f.ready["shared_holder"].as_i64().unwrap() as i32,
    ];
    let c = f.check();
    assert_eq!(c["live_ok"], serde_json::json!([true]), "{c}");
    assert!(c["churn_iterations"].as_u64() > Some(0), "{c}");
    assert_eq!(
        (c["churn_errors"].as_u64(), c["churn_ebadf"].as_u64()),
        (Some(0), Some(0)),
        "{c}"
    );
    drop(f);
    for pid in children {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} outlived the fixture"
        );
    }
}
