//! Races: the target exits, execs, or forks at a high rate while being reaped; its pid is reused
//! between the scan and the attach; another tracer got there first (reap.rs). Each ends in
//! a clear message and an intact target (or none), never a hang or a panic.

use crate::support::{self, assert_running, ptmx_fds, spawn_reap, Fixture};
use std::time::{Duration, Instant};

/// ptyreap ended on its own, without a panic, with a documented code and a message if it failed.
fn assert_clean_end(out: &std::process::Output, ctx: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{ctx}: {stderr}");
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("{ctx}: killed by a signal: {stderr}"));
    assert!(matches!(code, 0 | 1 | 3), "{ctx}: exit {code}: {stderr}");
    if code == 1 {
        assert!(
            stderr.starts_with("ptyreap: "),
            "{ctx}: no plain message: {stderr}"
        );
    }
}

#[test]
fn the_target_exits_mid_way() {
    if !support::require_root() {
        return;
    }
    for delay_us in [0u64, 500, 1000, 2000, 4000, 8000, 16000, 32000] {
        let mut f = Fixture::spawn(&["--orphans", "300", "--threads", "4"]);
        let child = spawn_reap(f.pid);
        std::thread::sleep(Duration::from_micros(delay_us));
        f.kill_now();
        let out = support::wait_output(child, Duration::from_secs(60));
        assert_clean_end(&out, &format!("killed after {delay_us} µs"));
    }
}

#[test]
fn the_target_execs_mid_way() {
    if !support::require_root() {
        return;
    }
    for after_ms in [5u64, 20, 40, 80] {
        let mut f = Fixture::spawn(&[
            "--orphans",
            "300",
            "--threads",
            "2",
            "--exec-after-ms",
            &after_ms.to_string(),
        ]);
        let out = support::wait_output(spawn_reap(f.pid), Duration::from_secs(60));
        let ctx = format!("exec after {after_ms} ms");
        assert_clean_end(&out, &ctx);
        // the process lives on, as `sleep` or still the fixture, and is not left stopped
        assert!(
            support::wait_for(Duration::from_secs(2), || std::fs::read_to_string(format!(
                "/proc/{}/comm",
                f.pid
            ))
            .is_ok_and(|c| c.trim() == "sleep")),
            "{ctx}: no exec"
        );
        assert_running(f.pid);
        assert!(
            std::path::Path::new(&format!("/proc/{}", f.pid)).exists(),
            "{ctx}: died"
        );
        f.kill_now();
    }
}

#[test]
fn the_target_forks_rapidly() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&[
        "--orphans",
        "200",
        "--live",
        "1",
        "--threads",
        "4",
        "--fork-every-ms",
        "1",
    ]);
    let orphans = f.fds("orphans");
    let started = Instant::now();
    let out = support::wait_output(spawn_reap(f.pid), Duration::from_secs(60));
    assert_clean_end(&out, "forking target");
    assert!(started.elapsed() < Duration::from_secs(30));
    let left = ptmx_fds(f.pid);
    assert!(
        orphans.iter().all(|fd| !left.contains(fd)),
        "orphans left: {left:?}"
    );
    assert!(left.contains(&f.fds("live")[0]));
    assert_running(f.pid);
    f.assert_healthy("");
}

#[test]
fn a_reused_pid_is_never_touched() {
    if !support::require_root() {
        return;
    }
    // Simulated: the target is pinned and inspected, then its start time no longer matches — as
    // if the process had exited and another had taken its pid before the attach.
    let f = Fixture::spawn(&["--orphans", "5"]);
    let before = ptmx_fds(f.pid);
    let mut target = ptyreap::testing::open_target(f.pid).unwrap();
    let snapshot = ptyreap::testing::snapshot().unwrap();
    let policy = ptyreap::testing::Policy {
        min_idle: Duration::ZERO,
        include_stale: None,
    };
    let mut report =
        ptyreap::testing::judge_target(&target, &snapshot, &policy, &close_choices()).unwrap();
    assert_eq!(
        report
            .masters
            .iter()
            .filter(|r| r.action.is_close())
            .count(),
        5
    );
    target.start_time += 1;
    let err = ptyreap::testing::reap(&target, &mut report.masters).unwrap_err();
    assert!(
        err.message.contains("nothing was changed"),
        "{}",
        err.message
    );
    assert_eq!(ptmx_fds(f.pid), before);
    assert_running(f.pid);
}

/// The close path is what these races exercise (the default merges what the fixture opened).
fn close_choices() -> ptyreap::testing::Choices {
    ptyreap::testing::Choices {
        method: Some(ptyreap::testing::Method::Close),
        ..Default::default()
    }
}
