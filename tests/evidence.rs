//! Verdicts that never call a master orphaned while something still uses it: what the scan could
//! not see, poll loops busy at the instant of the scan, who opened the PTY, and the default
//! method that follows from it. Real processes: `ptyreap-victim`, and Debian's tmux.

mod support;

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;

use support::{ptyreap, ptyreap_with, require_root, tty_index, Victim};

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
    let root = ptyreap(&["--pid", &pid, "--min-idle", "0", "--dry-run", "--json"]);
    assert_eq!(masters(&root.json())[0]["verdict"], "live", "{root:?}");
    assert!(v.status().is_some());
    drop(slave);
}
