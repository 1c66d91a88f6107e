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

/// Time to exhaustion: a fixture leaking one master every 100 ms in a private devpts instance of
/// `max=512`: the census reports its leak rate and when the instance runs out, each within 10 %
/// of the truth (10 per second; the instance's free PTYs at that pace).
#[test]
fn the_leak_rate_and_time_to_exhaustion_are_told() {
    if !support::require_root() {
        return;
    }
    let f = support::Fixture::spawn_private_devpts(&["--leak-every-ms", "100"], 512);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let out = support::ptyreap(&["--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let row = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == f.pid)
        .unwrap_or_else(|| panic!("the fixture is not in the census: {doc}"))
        .clone();
    let rate = row["leak_per_hour"].as_f64().unwrap();
    assert!(
        (rate - 36_000.0).abs() <= 3_600.0,
        "leak rate {rate}/h, want 36000/h within 10 %"
    );
    let used = support::ptys_in_use_seen_by(f.pid) as f64;
    let truth = (512.0 - used) / 10.0;
    let told = doc["system"]["exhausted_in_s"].as_f64().unwrap();
    assert!(
        (told - truth).abs() <= (truth * 0.1).max(1.0),
        "exhausted in {told} s, want {truth} s within 10 % (1 s at least: whole seconds)"
    );
    let human = support::ptyreap(&[]);
    assert!(human.stdout.contains("/h"), "{}", human.stdout);
    assert!(
        human.stdout.contains("runs out of PTYs in ~"),
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
    const MAX: &str = "/proc/sys/kernel/pty/max";
    let read = || -> u64 {
        std::fs::read_to_string(MAX)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(MAX, format!("{}\n", self.0));
        }
    }
    let was = read();
    let _restore = Restore(was);
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
