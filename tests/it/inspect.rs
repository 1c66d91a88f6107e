//! On a real kernel: the census, every verdict with its reason and evidence, the JSON
//! schema, the human table, and that a dry run closes nothing. Real PTYs, real processes.

use crate::support::{self, ptmx_fds, ptyreap, Fixture};
use serde_json::Value;

/// The rows of one target in an inspect document, by fd.
fn rows(doc: &Value) -> std::collections::BTreeMap<i64, Value> {
    doc["targets"][0]["masters"]
        .as_array()
        .expect("masters array")
        .iter()
        .map(|m| (m["fd"].as_i64().unwrap(), m.clone()))
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter_map(Value::as_i64)
        .collect()
}

#[test]
fn every_kind_of_master_gets_its_verdict_and_evidence() {
    if !support::require_root() {
        return;
    }
    let mut args = crate::support::EVERY_KIND.to_vec();
    args.extend(["--unread", "1"]);
    let f = Fixture::spawn(&args);
    let before = ptmx_fds(f.pid);
    assert_eq!(before, f.masters());
    let pid = f.pid.to_string();
    // --method close: the verdicts are under test, and every orphan's action then reads close
    // (by default those the fixture opened itself are merged, one of them kept)
    let out = crate::support::dry_run(&pid, &["--method", "close", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let rows = rows(&doc);
    assert_eq!(rows.len(), before.len(), "one row per master");

    let expect = |key: &str, verdict: &str, action: &str, reason: &str| {
        for fd in f.fds(key) {
            let r = &rows[&(fd as i64)];
            assert_eq!(r["verdict"], verdict, "{key} fd {fd}: {r}");
            assert_eq!(r["action"], action, "{key} fd {fd}: {r}");
            let text = r["reason"].as_str().unwrap();
            assert!(
                text.contains(reason),
                "{key} fd {fd}: reason '{text}' lacks '{reason}'"
            );
        }
    };
    expect("orphans", "orphaned", "close", "no process holds /dev/pts/");
    expect("tracked", "tracked", "keep", "epoll fd");
    expect("poll_watched", "tracked", "keep", "poll() in thread");
    expect("select_watched", "tracked", "keep", "select() in thread");
    expect("live", "live", "keep", "held by");
    expect("shared", "orphaned", "close", "master also held by");
    expect("new", "orphaned", "close", "no process holds");
    expect("unread", "unread", "keep", "5 bytes of output not read yet");

    // evidence
    for fd in f.fds("orphans") {
        let r = &rows[&(fd as i64)];
        assert_eq!(r["hung_up"], true);
        assert_eq!(r["session"], Value::Null);
        assert_eq!(
            r["unread_bytes"], 0,
            "the fixture read the child's 'bye\\n': {r}"
        );
        assert_eq!(r["method"], "close");
        assert_eq!(r["result"], Value::Null);
        assert_eq!(r["pty"], f.ready["pty_index"][fd.to_string()], "{r}");
        let slave = format!("/dev/pts/{}", r["pty"]);
        assert_eq!(r["slave"], slave.as_str());
    }
    for fd in f.fds("new") {
        assert_eq!(
            rows[&(fd as i64)]["hung_up"],
            false,
            "a never-opened slave is not hung up"
        );
    }
    for fd in f.fds("tracked") {
        assert_eq!(rows[&(fd as i64)]["watched"], true);
    }
    let children = ints(&f.ready["live_children"]);
    for fd in f.fds("live") {
        let r = &rows[&(fd as i64)];
        let holders: Vec<i64> = r["slave_holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["pid"].as_i64().unwrap())
            .collect();
        assert_eq!(holders.len(), 1, "{r}");
        assert!(children.contains(&holders[0]), "{r}");
        assert!(r["session"].is_i64(), "a live child's session: {r}");
        assert_eq!(r["session"], r["foreground_pgrp"], "{r}");
        assert_eq!(r["method"], Value::Null, "kept rows have no method");
    }
    let holder = f.ready["shared_holder"].as_i64().unwrap();
    for fd in f.fds("shared") {
        let r = &rows[&(fd as i64)];
        let others = r["other_master_holders"].as_array().unwrap();
        assert_eq!(others.len(), 1, "{r}");
        assert_eq!(others[0]["pid"], holder);
        assert_eq!(ints(&others[0]["fds"]), vec![fd as i64]);
    }
    let pair = f.fds("pairs");
    let r = &rows[&(pair[0] as i64)];
    assert_eq!(r["verdict"], "orphaned", "{r}");
    assert_eq!(ints(&r["target_slave_fds"]), vec![pair[1] as i64]);
    assert!(r["reason"].as_str().unwrap().contains("both ends"), "{r}");

    assert_eq!(ptmx_fds(f.pid), before, "a dry run closed something");
}

#[test]
fn the_default_min_idle_keeps_new_masters_as_fresh() {
    let f = Fixture::spawn(&["--orphans", "3", "--tracked", "1", "--live", "1"]);
    let out = ptyreap(&["--pid", &f.pid.to_string(), "--dry-run", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["min_idle_s"], 600);
    let rows = rows(&doc);
    for fd in f.fds("orphans").into_iter().chain(f.fds("tracked")) {
        let r = &rows[&(fd as i64)];
        assert_eq!(r["verdict"], "fresh", "{r}");
        assert_eq!(r["action"], "keep");
        assert!(
            r["reason"].as_str().unwrap().contains("< --min-idle 10m"),
            "{r}"
        );
    }
    assert_eq!(rows[&(f.fds("live")[0] as i64)]["verdict"], "live");
}

#[test]
fn the_census_counts_holders_and_orphans() {
    let f = Fixture::spawn(&[
        "--orphans",
        "4",
        "--live",
        "2",
        "--shared",
        "1",
        "--pairs",
        "1",
    ]);
    let out = ptyreap(&["--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let procs = doc["processes"].as_array().unwrap();
    let me = procs
        .iter()
        .find(|p| p["pid"] == f.pid)
        .unwrap_or_else(|| panic!("fixture {} not in the census: {doc}", f.pid));
    assert_eq!(me["masters"], 8);
    assert_eq!(
        me["orphaned"], 6,
        "4 orphans, 1 shared, 1 pair; not the 2 live ones"
    );
    let holder = f.ready["shared_holder"].as_i64().unwrap();
    let h = procs
        .iter()
        .find(|p| p["pid"] == holder)
        .expect("the holder of the shared copy");
    assert_eq!(h["masters"], 1);
    // sorted by count, most first
    let counts: Vec<i64> = procs
        .iter()
        .map(|p| p["masters"].as_i64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    let sys = &doc["system"];
    assert!(sys["in_use"].as_u64().unwrap() >= 8);
    assert_eq!(sys["limit_source"], "/proc/sys/kernel/pty/max");
    assert!(sys["limit"].as_u64().unwrap() > 0);
    assert!(sys["reserve"].is_u64());
    assert!(!sys["instances"].as_array().unwrap().is_empty());
}

#[test]
fn the_json_schema_is_complete() {
    let f = Fixture::spawn(&["--orphans", "1", "--live", "1"]);
    let doc = ptyreap(&["--pid", &f.pid.to_string(), "--dry-run", "--json"]).json();
    for key in ["dry_run", "method", "min_idle_s", "system", "targets"] {
        assert!(doc.get(key).is_some(), "top-level key {key} missing: {doc}");
    }
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["method"], "default");
    for key in ["in_use", "limit", "limit_source", "reserve", "instances"] {
        assert!(doc["system"].get(key).is_some(), "system.{key} missing");
    }
    for inst in doc["system"]["instances"].as_array().unwrap() {
        for key in ["devpts", "mount", "in_use", "max"] {
            assert!(inst.get(key).is_some(), "instances[].{key} missing: {inst}");
        }
    }
    let t = &doc["targets"][0];
    assert_eq!(t["pid"], f.pid);
    assert!(t["name"].is_string());
    assert_eq!(t["stopped_us"], Value::Null);
    for m in t["masters"].as_array().unwrap() {
        for key in crate::support::MASTER_KEYS {
            assert!(m.get(key).is_some(), "masters[].{key} missing: {m}");
        }
        assert!(m["devpts"].as_str().unwrap().contains(':'));
        assert!(m["last_io"].is_i64() && m["idle_s"].is_u64());
        let verdicts = [
            "orphaned", "fresh", "tracked", "merged", "live", "stale", "unknown",
        ];
        assert!(verdicts.contains(&m["verdict"].as_str().unwrap()));
        assert!(["close", "keep"].contains(&m["action"].as_str().unwrap()));
    }
}

#[test]
fn the_table_reads_at_a_glance() {
    let f = Fixture::spawn(&["--orphans", "2", "--live", "1"]);
    let pid = f.pid.to_string();
    let out = crate::support::dry_run(&pid, &["--method", "close"]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = &out.stdout;
    assert!(text.starts_with("PTYs in use: "), "{text}");
    assert!(
        text.contains(&format!(
            "pid {pid} (ptyreap-fixture): 3 PTY masters: 2 orphaned, 1 live"
        )),
        "{text}"
    );
    let header = text
        .lines()
        .find(|l| l.trim_start().starts_with("FD"))
        .expect("a header");
    for col in ["PTY", "SLAVE", "VERDICT", "IDLE", "ACTION", "REASON"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        !text.contains('\x1b'),
        "NO_COLOR or no terminal: no escape codes"
    );
    assert!(
        out.stderr
            .contains("Dry run: would free 2 PTYs (2 master copies in 1 process)"),
        "{}",
        out.stderr
    );
    let census = ptyreap(&[]);
    assert!(
        census.stdout.contains("PID") && census.stdout.contains("ORPHANED"),
        "{census:?}"
    );
    assert!(census.stdout.contains(&pid));
}

/// 490 leaked masters are a handful of lines, not a wall; `-v` and `--json` show every one.
#[test]
fn hundreds_of_masters_at_a_glance() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "490", "--live", "1"]);
    let pid = f.pid.to_string();
    let args = [
        "--pid",
        pid.as_str(),
        "--dry-run",
        "--min-idle",
        "0",
        "--method",
        "close",
    ];
    let out = ptyreap(&args);
    assert_eq!(out.code, 0, "{out:?}");
    let lines = out.stdout.lines().count();
    assert!(lines < 12, "{lines} lines: {}", out.stdout);
    let first = f.fds("orphans")[0];
    let last = *f.fds("orphans").last().unwrap();
    assert!(
        out.stdout.contains(&format!("fds {first}–{last} (490)")),
        "{}",
        out.stdout
    );
    let mut verbose = args.to_vec();
    verbose.push("-v");
    let v = ptyreap(&verbose);
    let rows = v
        .stdout
        .lines()
        .filter(|l| l.contains("orphaned") && l.contains("/dev/pts/"))
        .count();
    assert_eq!(rows, 490, "-v lists every row");
    let mut json = args.to_vec();
    json.push("--json");
    let doc = ptyreap(&json).json();
    assert_eq!(doc["targets"][0]["masters"].as_array().unwrap().len(), 491);
}

#[test]
fn name_and_top_select_the_fixture() {
    // --name and --top pick among the machine's processes: no other test's fixture may exit
    // between the pick and the inspection
    let _alone = support::exclusive_ptys();
    let f = Fixture::spawn(&["--orphans", "3"]);
    let out = ptyreap(&["--name", "ptyreap-fixture", "--dry-run", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let pids: Vec<i64> = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["pid"].as_i64().unwrap())
        .collect();
    assert!(pids.contains(&(f.pid as i64)), "{pids:?}");
    let top = ptyreap(&["--top", "--dry-run", "--json"]).json();
    assert_eq!(top["targets"].as_array().unwrap().len(), 1);
}

/// A valid --fd narrows the rows to that fd.
#[test]
fn fd_selects_one_master() {
    let f = Fixture::spawn(&["--orphans", "2", "--pairs", "1"]);
    let before = ptmx_fds(f.pid);
    let pid = f.pid.to_string();
    let master = f.fds("orphans")[0].to_string();
    let out = ptyreap(&["--pid", &pid, "--fd", &master, "--dry-run", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.json()["targets"][0]["masters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ptmx_fds(f.pid), before);
}
