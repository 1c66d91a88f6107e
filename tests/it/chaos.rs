//! Chaos: SIGINT, SIGTERM and SIGHUP sent to ptyreap at random moments while it reaps 120 masters.
//! Whatever the moment, the target is restored and running, never left stopped or traced, and
//! what ptyreap reports as closed is exactly what is gone. 200 rounds (PTYREAP_CHAOS_ROUNDS to
//! change).

use crate::support::{self, assert_running, ptmx_fds, Fixture, Rng};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn signals_at_random_moments_never_leave_the_target_stopped() {
    if !support::require_root() {
        return;
    }
    let rounds: u64 = std::env::var("PTYREAP_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let signals = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    // calibrate: how long one reap takes here, so the signals land all over it
    let span = {
        let f = Fixture::spawn(&["--orphans", "120", "--live", "1", "--threads", "2"]);
        let t = std::time::Instant::now();
        // no poll look: the signals are aimed at the reap itself (--method close is explicit)
        let out = support::reap_closing(f.pid, &["--json", "--observe", "0"]);
        assert_eq!(out.code, 0, "{out:?}");
        t.elapsed()
    };
    let (mut interrupted, mut killed_early, mut finished) = (0, 0, 0);
    for round in 0..rounds {
        let f = Fixture::spawn(&["--orphans", "120", "--live", "1", "--threads", "2"]);
        let orphans: BTreeSet<i32> = f.fds("orphans").into_iter().collect();
        let sig = signals[(rng.next() % 3) as usize];
        let delay = Duration::from_micros(rng.next() % (span.as_micros() as u64 + 1));
        let child = Command::new(env!("CARGO_BIN_EXE_ptyreap"))
            .args(support::reap_args(f.pid))
            .args(["--json", "--observe", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let out = support::wait_output(child, Duration::from_secs(60));
        let ctx = format!("round {round}, signal {sig} after {delay:?}");
        assert_running(f.pid);
        let left: BTreeSet<i32> = ptmx_fds(f.pid).into_iter().collect();
        assert!(
            left.contains(&f.fds("live")[0]),
            "{ctx}: the live master went"
        );
        match out.status.code() {
            // finished before the signal, or stopped by it after restoring and reporting
            Some(code @ (0 | 129 | 130 | 143)) => {
                if code == 0 {
                    finished += 1;
                } else {
                    interrupted += 1;
                    assert_eq!(code, 128 + sig, "{ctx}");
                }
                let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!(
                        "{ctx}: no JSON report ({e}): {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
                let closed: BTreeSet<i32> = doc["targets"][0]["masters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["result"] == "closed")
                    .map(|m| m["fd"].as_i64().unwrap() as i32)
                    .collect();
                assert!(closed.is_subset(&orphans), "{ctx}");
                let gone: BTreeSet<i32> = orphans.difference(&left).copied().collect();
                assert_eq!(closed, gone, "{ctx}: reported closed vs really gone");
            }
            // killed by the default action: only possible before it caught signals, that is
            // before it stopped anything — so nothing may be gone
            None => {
                killed_early += 1;
                assert_eq!(left.len(), orphans.len() + 1, "{ctx}: died after releasing");
            }
            Some(other) => panic!(
                "{ctx}: exit {other}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        f.assert_healthy(&ctx);
    }
    eprintln!(
        "{rounds} rounds over {span:?}: {interrupted} stopped by the signal after restoring and \
         reporting, {killed_early} killed before touching anything, {finished} finished first"
    );
    assert!(
        interrupted > 0,
        "no signal landed during a reap: the test proves nothing"
    );
}
