//! The reported scenario, end to end: a leaking process has used every PTY of its (private,
//! max=8) devpts instance, so no new terminal can open there; `ptyreap --yes`, run with no
//! controlling terminal and stdin from /dev/null (as in an emergency script), frees them; a new
//! PTY opens; the target is alive.

use crate::support::{self, fixture_in_namespace_of, ptmx_fds, Fixture};
use std::process::{Command, Stdio};

#[test]
fn an_exhausted_instance_is_recovered_without_a_terminal() {
    if !support::require_root() {
        return;
    }
    let f =
        Fixture::spawn_private_devpts(&["--orphans", "12", "--allow-partial", "--threads", "4"], 8);
    assert_eq!(
        f.ready["partial"], true,
        "the fixture should have run out of PTYs"
    );
    assert_eq!(f.fds("orphans").len(), 8);
    assert_ne!(
        fixture_in_namespace_of(f.pid, &["--new", "1"]),
        0,
        "a new PTY still opens: the instance is not exhausted"
    );

    // no controlling terminal (setsid), stdin /dev/null, no prompt possible
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptyreap"));
    cmd.args(support::reap_args(f.pid))
        .stdin(Stdio::null())
        .env("NO_COLOR", "1");
    let out = support::without_terminal(&mut cmd).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("max 8"),
        "the table shows the instance's own limit: {text}"
    );

    assert!(
        ptmx_fds(f.pid).is_empty(),
        "orphans left: {:?}",
        ptmx_fds(f.pid)
    );
    assert_eq!(
        fixture_in_namespace_of(f.pid, &["--new", "1"]),
        0,
        "a new PTY opens again"
    );
    let c = f.check();
    assert_eq!(c["errors"], serde_json::json!([]), "{c}");
}

/// The census entry of `pid`, and the devpts instance its PTYs are in (by the instance's `max`).
fn census_of(
    doc: &serde_json::Value,
    pid: i32,
    max: u64,
) -> (serde_json::Value, serde_json::Value) {
    let row = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not in the census: {doc}"))
        .clone();
    let inst = doc["system"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["max"] == max)
        .unwrap_or_else(|| panic!("no instance with max={max}: {doc}"))
        .clone();
    (row, inst)
}

/// Time to exhaustion: a fixture leaking one master every 100 ms in a private devpts instance of
/// `max=200`, on a machine where other PTYs were made before (a live session and a burst of
/// orphans in the host's instance, as a workstation has): the census reports the leak's pace and
/// when that instance runs out, each within 25 % of the truth (10 a second; the instance's free
/// PTYs at that pace), whatever else the machine holds.
#[test]
fn the_leak_rate_and_time_to_exhaustion_are_told() {
    if !support::require_root() {
        return;
    }
    let elsewhere = support::Fixture::spawn(&["--live", "2", "--orphans", "5"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let f = support::Fixture::spawn_private_devpts(&["--leak-every-ms", "100"], 200);
    std::thread::sleep(std::time::Duration::from_secs(5));
    let out = support::ptyreap(&["--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let (row, inst) = census_of(&doc, f.pid, 200);
    let rate = row["leak_per_hour"]
        .as_f64()
        .unwrap_or_else(|| panic!("{row}"));
    assert!(
        (rate - 36_000.0).abs() <= 9_000.0,
        "leak rate {rate}/h, want 36000/h within 25 %"
    );
    let used = support::ptys_in_use_seen_by(f.pid) as f64;
    let truth = (200.0 - used) / 10.0;
    let told = inst["exhausted_in_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("{inst}"));
    assert!(
        (told - truth).abs() <= (truth * 0.25).max(1.0),
        "instance exhausted in {told} s, want {truth} s within 25 %"
    );
    // the machine's first limit is this instance's, unless something else runs out sooner
    let soonest = doc["system"]["exhausted_in_s"].as_f64().unwrap();
    assert!(soonest <= told, "{}", doc["system"]);
    // the live sessions and the burst elsewhere are no leak
    let (other, _) = census_of(&doc, elsewhere.pid, 200);
    assert_eq!(other["leak_per_hour"], serde_json::Value::Null, "{other}");
    assert_eq!(other["orphaned"], 5, "{other}");
    let human = support::ptyreap(&[]);
    assert!(human.stdout.contains("/h"), "{}", human.stdout);
    assert!(
        human.stdout.contains("runs out of PTYs in ~"),
        "{}",
        human.stdout
    );
}

/// A burst of orphans and then nothing: no pace, no forecast. Live sessions only: no leak.
#[test]
fn a_burst_or_live_sessions_are_no_leak() {
    if !support::require_root() {
        return;
    }
    let burst = support::Fixture::spawn_private_devpts(&["--orphans", "40"], 300);
    let live = support::Fixture::spawn_private_devpts(&["--live", "4"], 301);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = support::ptyreap(&["--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    // (an instance's time may still be the whole machine's, when another test leaks meanwhile:
    // never its own)
    let (row, inst) = census_of(&doc, burst.pid, 300);
    assert_eq!(row["orphaned"], 40, "{row}");
    assert_eq!(row["leak_per_hour"], serde_json::Value::Null, "{row}");
    assert_eq!(inst["leak_per_hour"], serde_json::Value::Null, "{inst}");
    assert_ne!(doc["system"]["exhausted_first"], inst["devpts"], "{doc}");
    let (row, inst) = census_of(&doc, live.pid, 301);
    assert_eq!(row["orphaned"], 0, "{row}");
    assert_eq!(row["leak_per_hour"], serde_json::Value::Null, "{row}");
    assert_eq!(inst["leak_per_hour"], serde_json::Value::Null, "{inst}");
    assert_ne!(doc["system"]["exhausted_first"], inst["devpts"], "{doc}");
}

/// A full instance is "exhausted now", not "runs out in ~1s".
#[test]
fn a_full_instance_is_exhausted_now() {
    if !support::require_root() {
        return;
    }
    let f = support::Fixture::spawn_private_devpts(&["--orphans", "12", "--allow-partial"], 8);
    let out = support::ptyreap(&["--json"]);
    let doc = out.json();
    let (_, inst) = census_of(&doc, f.pid, 8);
    assert_eq!(inst["exhausted_in_s"], 0, "{inst}");
    assert_eq!(doc["system"]["exhausted_in_s"], 0, "{}", doc["system"]);
    let human = support::ptyreap(&[]);
    assert!(
        human.stdout.contains("PTYs are exhausted now in devpts"),
        "{}",
        human.stdout
    );
}

/// `ptyreap limit` shows the limit; `--set N` changes it (root), says how to keep it, and refuses
/// values the kernel does not take; the real sysctl is put back afterwards.
#[test]
fn the_limit_is_shown_and_set_until_reboot() {
    if !support::require_root() {
        return;
    }
    // changes the machine's limit, which emergency.rs lowers too
    let _alone = support::exclusive_ptys();
    const MAX: &str = support::PTY_MAX;
    let read = || -> u64 {
        std::fs::read_to_string(MAX)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let was = read();
    let shown = support::ptyreap(&["limit", "--json"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert_eq!(shown.json()["limit"], was);
    assert_eq!(shown.json()["limit_source"], MAX);
    let human = support::ptyreap(&["limit"]);
    assert!(human.stdout.starts_with("PTYs in use: "), "{human:?}");

    let as_user = support::ptyreap_with(&["limit", "--set", "4096"], |cmd| {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    });
    assert_eq!(as_user.code, 1, "{as_user:?}");
    assert!(as_user.stderr.contains("needs root"), "{as_user:?}");
    assert_eq!(read(), was, "a refused --set changed the limit");
    // from here on the machine's limit changes (it is put back)
    if !support::require_machine_settings() {
        return;
    }
    // only now: without the opt-in, not even the same value is written back
    let restore = support::PtyMaxRestored::now();
    assert_eq!(restore.original(), was);
    let want = (was + 1).to_string();
    let set = support::ptyreap(&["limit", "--set", &want]);
    assert_eq!(set.code, 0, "{set:?}");
    assert_eq!(read(), was + 1);
    assert!(
        set.stdout.contains(&format!("set to {want} (was {was}"))
            && set.stdout.contains("until reboot")
            && set.stdout.contains("/etc/sysctl.d/"),
        "{set:?}"
    );
    for bad in ["0", "1048577"] {
        let out = support::ptyreap(&["limit", "--set", bad]);
        assert_eq!(out.code, 2, "{bad}: {out:?}");
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "{bad}: one plain line: {out:?}"
        );
        assert_eq!(read(), was + 1, "{bad}: changed the limit");
    }
    let back = support::ptyreap(&["limit", "--set", &was.to_string()]);
    assert_eq!(back.code, 0, "{back:?}");
    assert_eq!(read(), was);
}
