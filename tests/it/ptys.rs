//! Free the machine, not one process: the plan counts PTYs (freed only when every copy of the
//! master is closed), names the copies held elsewhere, and `--all` takes the whole leak in one
//! step. One test in this binary: `--all` acts on every process of the machine.

use crate::support::{self, ptyreap, ptys_in_use_seen_by, require_root, Victim};

fn rows_of(doc: &serde_json::Value, pid: i32) -> Vec<serde_json::Value> {
    doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["pid"] == pid)
        .flat_map(|t| t["masters"].as_array().unwrap().clone())
        .collect()
}

/// A process that opened three PTYs itself and a child, run on a fourth (forkpty + exec), that
/// inherited all three masters (the node-pty leak). Alone, the child's copies free nothing, and its rows say who else holds them;
/// `--all` frees the two PTYs the default plan can (the parent keeps one, its merge keeper), and
/// the private devpts instance's count drops by exactly that.
#[test]
fn ptys_are_counted_and_all_frees_the_machine() {
    if !require_root() {
        return;
    }
    // `--all --yes` reaps every test's orphans: none but this one's meanwhile
    let _alone = support::exclusive_ptys();
    let v = Victim::spawn_private_devpts(
        &["--open-after-ms", "300", "--masters", "3", "--fork-child"],
        16,
    );
    let (parent, child) = (v.pid, v.child_pid);
    // the three masters, and the terminal the child runs on (a live session, never freed)
    let before = ptys_in_use_seen_by(parent);
    assert_eq!(before, 4);

    let alone = crate::support::dry_run(child, &["--json"]);
    assert_eq!(alone.code, 0, "{alone:?}");
    let doc = alone.json();
    assert_eq!(doc["ptys"]["would_free"], 0, "{doc}");
    assert_eq!(doc["ptys"]["freed"], serde_json::Value::Null);
    for r in rows_of(&doc, child) {
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("stays allocated: also held by {parent}"))
                && reason.contains(&format!("add --pid {parent} or use --all")),
            "{reason}"
        );
        assert_eq!(r["frees_pty"], false);
    }

    let dry = ptyreap(&["--all", "--min-idle", "0", "--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let doc = dry.json();
    let ours = |doc: &serde_json::Value| -> Vec<serde_json::Value> {
        let mut v = rows_of(doc, parent);
        v.extend(rows_of(doc, child));
        v
    };
    let freeing = ours(&doc).iter().filter(|r| r["frees_pty"] == true).count();
    assert_eq!(freeing, 4, "2 PTYs x 2 copies: {doc:#}");
    assert!(doc["ptys"]["would_free"].as_u64().unwrap() >= 2, "{doc}");
    assert_eq!(ptys_in_use_seen_by(parent), 4, "a dry run freed something");
    let both = ptyreap(&["--all", "--pid", "1"]);
    assert_eq!(both.code, 2, "--all excludes --pid: {both:?}");

    // `--all --yes --min-idle 0` releases every orphan on the machine, not only ours: on a
    // developer's machine that could be their own leaked terminals. It runs where CI asks (a
    // machine of its own) or where PTYREAP_TEST_ALL is set.
    if std::env::var_os("CI").is_none() && std::env::var_os("PTYREAP_TEST_ALL").is_none() {
        eprintln!("skipped: --all --yes (set CI or PTYREAP_TEST_ALL to run it)");
        return;
    }
    let out = ptyreap(&["--all", "--min-idle", "0", "--yes", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert!(doc["ptys"]["freed"].as_u64().unwrap() >= 2, "{doc}");
    assert_eq!(
        ptys_in_use_seen_by(parent),
        2,
        "want exactly the keeper's PTY (and the child's terminal) left"
    );
    let human = ptyreap(&["--all", "--pid", "1"]);
    assert_eq!(human.code, 2, "{human:?}");
}
