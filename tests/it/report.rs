//! `ptyreap report`: the bug-report snapshot, validated against its documented schema, and
//! written safely (0600, never overwriting, never following a planted symlink).

use crate::support::{self, ptyreap, Fixture};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;

/// The schema documented in README.md ("Bug reports"): key → JSON type.
fn assert_schema(doc: &Value) {
    let types = [
        ("report_version", "number"),
        ("generated_at", "string"),
        ("ptyreap_version", "string"),
        ("process", "object"),
        ("summary", "object"),
        ("masters", "array"),
        ("min_idle_s", "number"),
        ("system", "object"),
        ("top_holders", "array"),
        ("os", "object"),
    ];
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    for (key, want) in types {
        assert_eq!(kind(&doc[key]), want, "{key}: {doc}");
    }
    let p = &doc["process"];
    for key in [
        "pid",
        "name",
        "exe",
        "cmdline",
        "version",
        "started_at",
        "uptime_s",
    ] {
        assert!(p.get(key).is_some(), "process.{key} missing");
    }
    assert!(p["cmdline"].is_array() && p["uptime_s"].is_i64() && p["started_at"].is_string());
    for key in ["sysname", "release", "version", "machine"] {
        assert!(doc["os"][key].is_string(), "os.{key}");
    }
    for key in [
        "orphaned", "fresh", "tracked", "merged", "live", "stale", "unknown",
    ] {
        assert!(
            doc["summary"]["verdicts"][key].is_u64(),
            "summary.verdicts.{key}"
        );
    }
    for m in doc["masters"].as_array().unwrap() {
        // the report's masters are the inspection's, key for key
        for key in crate::support::MASTER_KEYS {
            assert!(m.get(key).is_some(), "masters[].{key}");
        }
    }
}

/// `ptyreap report --pid PID --output PATH`.
fn report_to(pid: i32, path: &str) -> crate::support::Output {
    ptyreap(&["report", "--pid", &pid.to_string(), "--output", path])
}

#[test]
fn report_is_complete_and_written_0600() {
    let f = Fixture::spawn(&["--orphans", "2", "--live", "1"]);
    let dir = support::temp_dir("report");
    let path = dir.join("report.json");
    let p = path.to_str().unwrap();
    let out = report_to(f.pid, p);
    assert_eq!(out.code, 0, "{out:?}");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_schema(&doc);
    assert_eq!(doc["process"]["pid"], f.pid);
    assert!(doc["process"]["exe"]
        .as_str()
        .unwrap()
        .ends_with("ptyreap-fixture"));
    assert_eq!(doc["summary"]["masters"], 3);
    assert_eq!(doc["summary"]["verdicts"]["live"], 1);
    assert_eq!(
        doc["summary"]["verdicts"]["fresh"], 2,
        "brand-new orphans are fresh at the default 10m"
    );
    // to stdout as well
    let out = ptyreap(&["report", "--pid", &f.pid.to_string()]);
    assert_eq!(out.code, 0);
    assert_schema(&out.json());
}

#[test]
fn report_never_overwrites() {
    let f = Fixture::spawn(&["--orphans", "1"]);
    let dir = support::temp_dir("report");
    let path = dir.join("existing.json");
    std::fs::write(&path, "precious").unwrap();
    let out = report_to(f.pid, path.to_str().unwrap());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn report_does_not_follow_a_planted_symlink() {
    let f = Fixture::spawn(&["--orphans", "1"]);
    let dir = support::temp_dir("report");
    let victim = dir.join("victim");
    let link = dir.join("report.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = report_to(f.pid, link.to_str().unwrap());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!victim.exists(), "the symlink was followed");
    // a symlink to an existing file: untouched too
    std::fs::write(&victim, "precious").unwrap();
    let out = report_to(f.pid, link.to_str().unwrap());
    assert_eq!(out.code, 1);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn report_of_a_missing_pid_is_one_line() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let out = ptyreap(&["report", "--pid", &gone.to_string()]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

/// The report (and `-v`) names the app — its package name and version, its Electron, the
/// node-pty it ships — read out of its files without running anything: an "Electron app" here is
/// a copy of the victim binary with Electron's `version` file and an asar beside.
#[test]
fn the_report_names_the_node_pty_an_app_ships() {
    if !support::require_root() {
        return;
    }
    let dir = support::temp_dir("asar-app");
    std::fs::create_dir_all(dir.join("resources")).unwrap();
    let archive = ptyreap::testing::asar::build(&[
        ("package.json", br#"{"name":"leaky-app","version":"3.2.1"}"#),
        (
            "node_modules/node-pty/package.json",
            br#"{"name":"node-pty","version":"1.1.0"}"#,
        ),
    ]);
    std::fs::write(dir.join("resources/app.asar"), archive).unwrap();
    std::fs::write(dir.join("version"), "33.2.0\n").unwrap();
    let exe = dir.join("leaky-app");
    std::fs::copy(env!("CARGO_BIN_EXE_ptyreap-victim"), &exe).unwrap();
    let ready = dir.join("ready");
    let mut child = support::spawn_copied_binary(
        std::process::Command::new(&exe)
            .args(["--masters", "1", "--ready"])
            .arg(&ready),
    );
    assert!(support::wait_for(
        std::time::Duration::from_secs(10),
        || ready.exists()
    ));
    let pid = child.id().to_string();
    let out = support::ptyreap(&["report", "--pid", &pid]);
    let verbose = crate::support::dry_run(&pid, &["-v"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["app"]["id"], "leaky-app", "{doc:#}");
    assert_eq!(doc["app"]["version"], "3.2.1", "{doc:#}");
    assert_eq!(doc["app"]["electron"], "33.2.0", "{doc:#}");
    assert_eq!(doc["process"]["version"], "3.2.1", "{doc:#}");
    assert_eq!(verbose.code, 0, "{verbose:?}");
    assert!(
        verbose
            .stdout
            .contains("  app: leaky-app 3.2.1, Electron 33.2.0, node-pty 1.1.0; node-pty 1.1.0 lets every shell"),
        "{verbose:?}"
    );
    assert_eq!(doc["app"]["node_pty"]["version"], "1.1.0", "{doc:#}");
    assert!(
        doc["app"]["node_pty"]["found_in"]
            .as_str()
            .unwrap()
            .contains("app.asar:node_modules/node-pty/package.json"),
        "{doc:#}"
    );
    // on Linux: its masters are inherited by every later shell (node-pty #657)
    assert!(
        doc["app"]["known_leaks"][0]
            .as_str()
            .is_some_and(|l| l.contains("inherit the masters")),
        "{doc:#}"
    );
}
