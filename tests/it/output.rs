//! Output that behaves: a closed pipe ends the run quietly with exit 0, text a process chose is
//! printed escaped, and the README's commands work as written.

use crate::support::{self, require_root, Victim};
use std::process::Command;

/// `(sleep; ptyreap ARGS) | CONSUMER`: the exit status of ptyreap and what it wrote to stderr.
fn into_closed_pipe(args: &str, consumer: &str) -> (i32, String) {
    let script = format!(
        "(sleep 0.3; {} {args} 2>/tmp/ptyreap-pipe-err.$$) | {consumer} >/dev/null; \
         echo ${{PIPESTATUS[0]}}; cat /tmp/ptyreap-pipe-err.$$; rm -f /tmp/ptyreap-pipe-err.$$",
        env!("CARGO_BIN_EXE_ptyreap")
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, err) = text.split_once('\n').unwrap_or((&text, ""));
    (code.trim().parse().unwrap(), err.to_string())
}

#[test]
fn a_closed_pipe_ends_the_run_quietly() {
    for (args, consumer) in [
        ("", "head -1"),
        ("--json", "head -c 10"),
        ("man", "head -1"),
        ("completions bash", "head -1"),
        ("", "true"),
        ("man", "true"),
    ] {
        let (code, err) = into_closed_pipe(args, consumer);
        assert_eq!(
            code, 0,
            "ptyreap {args} | {consumer}: exit {code}, stderr {err:?}"
        );
        assert_eq!(err, "", "ptyreap {args} | {consumer}");
    }
}

#[test]
fn a_process_name_with_escape_sequences_prints_escaped() {
    if !require_root() {
        return;
    }
    let v = Victim::spawn(&["--name", "\u{1b}]0;owned\u{7}"]);
    let census = support::ptyreap(&[]);
    assert!(!census.stdout.contains('\u{1b}'), "{census:?}");
    let row = census
        .stdout
        .lines()
        .find(|l| l.contains(&v.pid.to_string()))
        .unwrap_or_else(|| panic!("no census row: {}", census.stdout));
    assert!(row.contains("\\x1b]0;owned\\x07"), "{row}");
    let inspect = support::ptyreap(&["--pid", &v.pid.to_string(), "--dry-run"]);
    assert!(!inspect.stdout.contains('\u{1b}') && !inspect.stderr.contains('\u{1b}'));
    assert!(inspect.stdout.contains("\\x1b]0;owned\\x07"), "{inspect:?}");
}

/// README's two commands, as written, as root with no sudo on PATH (a root container): the
/// `scripts/as-root` they go through runs the command directly.
#[test]
fn the_readme_commands_need_no_sudo_as_root() {
    if !require_root() {
        return;
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("cargo build --release && scripts/as-root ./target/release/ptyreap"));
    assert!(readme.contains("cargo test --no-run && scripts/as-root cargo test"));
    let out = Command::new("sh")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/as-root"))
        .args([env!("CARGO_BIN_EXE_ptyreap"), "--json"])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["system"]["limit"].as_u64().unwrap() > 0);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
