//! Stops that cannot be made, or finished, as planned: a thread that no ptrace stop reaches (a
//! vfork parent), and a cgroup v1 freezer landing inside the window. The whole process is held at
//! most about 100 ms for a thread that cannot stop, and every row's reported result is what the
//! kernel did, read back from the target's fd table.

use crate::harm::{reap, rows, Cgroup};
use crate::support::{self, require_root, Victim};
use std::time::{Duration, Instant};

/// The victim's vfork thread, once it waits in the kernel for its child.
fn vfork_waiting(v: &Victim) -> bool {
    v.thread_named("vforker").is_some_and(|tid| {
        std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", v.pid))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('D'))
            })
            .unwrap_or(false)
    })
}

/// A victim whose vfork thread waits in the kernel, with a heartbeat whose gap counts from now,
/// and its signal state.
fn vfork_victim() -> (Victim, support::SignalState) {
    let mut v = Victim::spawn(&["--vfork-ms", "3000", "--heartbeat"]);
    assert!(support::wait_for(Duration::from_secs(5), || vfork_waiting(
        &v
    )));
    let before = v.signal_state();
    v.status().expect("status");
    (v, before)
}

fn max_gap_ms(status: &std::collections::HashMap<String, String>) -> u64 {
    status["max_gap_us"].parse::<u64>().expect("max_gap_us") / 1000
}

#[test]
fn a_thread_waiting_for_its_vfork_child_is_refused_without_a_stop() {
    if !require_root() {
        return;
    }
    let (mut v, before) = vfork_victim();
    let out = reap(v.pid, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("waiting for its vfork child to exec or exit")
            && out
                .stderr
                .contains("was not stopped and nothing was changed")
            && out.stderr.contains("try again"),
        "{out:?}"
    );
    assert_eq!(v.masters_open(), vec![100, 101]);
    let status = v.assert_healthy(&before);
    assert!(
        max_gap_ms(&status) <= 250,
        "the process was held: {status:?}"
    );
}

/// The same thread met by the stop itself (the look before it skipped): every other thread is
/// let go after 100 ms, nothing is changed, and the message says what holds the thread.
#[test]
fn a_thread_that_cannot_stop_holds_the_process_at_most_100_ms() {
    if !require_root() {
        return;
    }
    let (mut v, before) = vfork_victim();
    let t = Instant::now();
    let out = support::reap_closing_with(v.pid, &["--json"], |cmd| {
        cmd.env("PTYREAP_TEST_NO_VFORK_CHECK", "1");
    });
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("did not stop within 100 ms")
            && out.stderr.contains("every other thread was let go again")
            && out.stderr.contains("vfork child")
            && out.stderr.contains("nothing was changed"),
        "{out:?}"
    );
    for (fd, result, _) in rows(&out) {
        assert_ne!(result, "closed", "fd {fd}");
    }
    assert_eq!(v.masters_open(), vec![100, 101]);
    support::settle(v.pid, Duration::from_secs(5));
    let status = v.assert_healthy(&before);
    assert!(
        max_gap_ms(&status) <= 250,
        "held for {} ms (the run took {:?}): {status:?}",
        max_gap_ms(&status),
        t.elapsed()
    );
}

fn traced(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
}

/// A cgroup v1 freezer (docker pause on a v1 host) landing a few ms into the window, at random
/// offsets: the thread making our calls may be frozen before a call, inside one, or on its way
/// back from one. Whatever happens, each row says what the kernel did (checked against the fd
/// table afterwards), and the target lives on with its own state.
#[test]
fn a_v1_freeze_inside_the_window_never_falsifies_a_result() {
    if !require_root() {
        return;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = support::Rng(seed);
    let mut outcomes = std::collections::BTreeMap::new();
    let mut seen_rounds = 0;
    let mut frozen_inside = 0;
    for round in 0..10 {
        let mut v = Victim::spawn(&["--masters", "600", "--hole-every", "150", "--heartbeat"]);
        let before = v.signal_state();
        let cg = Cgroup::new(false, v.pid);
        let delay = Duration::from_micros(rng.next() % 4000);
        let child = support::spawn_reap(v.pid);
        // no sleep between looks: the window lasts a few milliseconds
        let until = Instant::now() + Duration::from_secs(10);
        let mut seen = false;
        while !seen && Instant::now() < until {
            seen = traced(v.pid);
        }
        seen_rounds += usize::from(seen);
        let t = Instant::now();
        while t.elapsed() < delay {
            std::hint::spin_loop();
        }
        cg.request(true);
        std::thread::sleep(Duration::from_millis(300));
        cg.request(false);
        let out = support::wait_output(child, Duration::from_secs(60));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let ctx = format!(
            "seed {seed} round {round} delay {delay:?} traced {seen}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{ctx}: {e}: {text}"));
        let open = v.masters_open();
        let rows = doc["targets"][0]["masters"].as_array().expect("rows");
        frozen_inside += usize::from(rows.iter().any(|m| m["result"] != "closed"));
        for m in rows {
            let fd = m["fd"].as_i64().unwrap() as i32;
            let result = m["result"].as_str().unwrap_or("");
            assert_eq!(
                result == "closed",
                !open.contains(&fd),
                "{ctx}: fd {fd} reported {result} ({}) but is {}",
                m["detail"],
                if open.contains(&fd) { "open" } else { "closed" }
            );
            *outcomes.entry(result.to_string()).or_insert(0) += 1;
        }
        support::settle(v.pid, Duration::from_secs(5));
        v.assert_healthy(&before);
        drop(cg);
    }
    eprintln!(
        "seed {seed}: rows by result over 10 rounds: {outcomes:?}; tracer seen in {seen_rounds}, \
         freeze met in {frozen_inside}"
    );
    assert!(
        seen_rounds >= 8,
        "the window was seen in {seen_rounds} of 10 rounds"
    );
    assert!(
        frozen_inside > 0,
        "no round's freeze landed inside the window"
    );
}

/// A master the app starts to watch between ptyreap's look and its stop (here: registered in the
/// app's epoll set while the tracer waits just before stopping it) is kept; the others go.
#[test]
fn a_watcher_registered_after_the_look_keeps_its_master() {
    if !require_root() {
        return;
    }
    let dir = support::temp_dir("watch-later");
    let trigger = dir.join("trigger");
    let trigger_arg = trigger.to_str().unwrap();
    let mut v = Victim::spawn(&["--watch-when", trigger_arg]);
    let before = v.signal_state();
    let out = support::reap_closing_with(v.pid, &["--json"], |cmd| {
        cmd.env("PTYREAP_TEST_BEFORE_STOP", &trigger);
    });
    assert!(
        std::fs::metadata(dir.join("trigger.done")).is_ok(),
        "the victim never registered: {out:?}"
    );
    assert_eq!(out.code, 3, "{out:?}");
    let rows = rows(&out);
    assert_eq!(rows.len(), 2, "{out:?}");
    let (fd, result, detail) = &rows[0];
    assert_eq!((*fd, result.as_str()), (100, "changed"), "{out:?}");
    assert!(
        detail.contains("watched since the look") && detail.contains("epoll fd"),
        "{detail}"
    );
    assert_eq!(rows[1].1, "closed", "{out:?}");
    assert_eq!(v.masters_open(), vec![100]);
    v.assert_healthy(&before);
    let _ = std::fs::remove_dir_all(&dir);
}
