//! scripts/emergency-recover: run with no terminal in an exhausted (private, max=8) devpts
//! instance, it ends with a PTY openable again, says what it did, and exits 0; run when PTYs stay
//! exhausted (nothing it may reap), it exits 1.

use crate::support::{self, fixture_in_namespace_of, Fixture};
use std::process::{Command, Stdio};

fn emergency(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/emergency-recover"
    ));
    cmd.args(args)
        .args(["--ptyreap", env!("CARGO_BIN_EXE_ptyreap")])
        .stdin(Stdio::null())
        .env("NO_COLOR", "1");
    crate::support::without_terminal(&mut cmd)
        .output()
        .expect("running emergency-recover")
}

/// One test, both cases in turn: the script judges the whole machine, so a full instance of the
/// second case must not exist while the first one checks its result.
#[test]
fn recovers_when_it_can_and_says_so_when_it_cannot() {
    if !support::require_root() {
        return;
    }
    // the script judges the whole machine, and the last case lowers its limit (only with
    // PTYREAP_TEST_SYSCTL=1): no other test's PTYs meanwhile
    let _alone = support::exclusive_ptys();
    recovers_an_exhausted_instance_without_a_terminal();
    says_so_when_ptys_stay_exhausted();
    raises_the_limit_when_it_is_the_limit_that_is_reached();
}

use support::PTY_MAX;

fn read_number(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The system's own limit reached (kernel.pty.max lowered to what is in use) and nothing the
/// script may reap: it raises the limit, until reboot, and a PTY opens again. With --no-raise it
/// leaves the limit alone and exits 1.
fn raises_the_limit_when_it_is_the_limit_that_is_reached() {
    if !support::require_machine_settings() {
        return;
    }
    let f = Fixture::spawn(&["--live", "1"]);
    let _restore = support::PtyMaxRestored::now();
    let in_use = read_number("/proc/sys/kernel/pty/nr");
    std::fs::write(PTY_MAX, format!("{in_use}\n")).unwrap();
    assert!(
        nix_openpty().is_err(),
        "no PTY opens with the limit at {in_use}"
    );

    let out = emergency(&["--pid", &f.pid.to_string(), "--min-idle", "0", "--no-raise"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(read_number(PTY_MAX), in_use, "--no-raise changed the limit");

    let out = emergency(&["--pid", &f.pid.to_string(), "--min-idle", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let raised = read_number(PTY_MAX);
    assert!(raised >= in_use + 1024, "raised to {raised}");
    assert!(
        text.contains(&format!(
            "raising it from {in_use} to {raised} (until reboot)"
        )),
        "{text}"
    );
    assert!(text.contains("PTYs are available again"), "{text}");
    assert!(nix_openpty().is_ok(), "a PTY opens again");
    assert_eq!(support::ptmx_fds(f.pid).len(), 1, "the live session kept");
}

/// Opens (and closes) one PTY master.
fn nix_openpty() -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/ptmx")
        .map(drop)
}

fn recovers_an_exhausted_instance_without_a_terminal() {
    let f = Fixture::spawn_private_devpts(&["--orphans", "12", "--allow-partial"], 8);
    assert_eq!(f.ready["partial"], true);
    assert_ne!(
        fixture_in_namespace_of(f.pid, &["--new", "1"]),
        0,
        "not exhausted"
    );
    // --no-raise: on a workstation whose own limit happens to be reached meanwhile, the script
    // would raise kernel.pty.max; only the opt-in case below may
    let out = emergency(&["--pid", &f.pid.to_string(), "--min-idle", "0", "--no-raise"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("== before") && text.contains("FULL"),
        "{text}"
    );
    assert!(
        text.contains(&format!("reaping the orphaned masters of pid {}", f.pid)),
        "{text}"
    );
    assert!(text.contains("PTYs are available again"), "{text}");
    assert_eq!(
        fixture_in_namespace_of(f.pid, &["--new", "1"]),
        0,
        "a PTY opens again"
    );
}

fn says_so_when_ptys_stay_exhausted() {
    // live sessions fill the instance: nothing may be reaped
    let f = Fixture::spawn_private_devpts(&["--live", "4"], 4);
    let out = emergency(&["--pid", &f.pid.to_string(), "--min-idle", "0", "--no-raise"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("still exhausted"));
    assert_eq!(support::ptmx_fds(f.pid).len(), 4);
}
