//! Containers and private devpts mounts reuse PTY indices: a slave is identified by its node's
//! device *and* its devpts instance. Here two fixtures, each in its own mount namespace with its
//! own devpts instance (max=8, so indices start at 0 in both), hold live sessions and orphaned
//! masters on the same indices; ptyreap must keep them apart and list both instances.

use crate::support::{self, ptyreap, Fixture};

#[test]
fn a_private_devpts_instance_is_told_apart() {
    if !support::require_root() {
        return;
    }
    // live sessions on indices 0-2 of one private instance, orphans on 0-2 of another
    let host = Fixture::spawn_private_devpts(&["--live", "3"], 8);
    let inner = Fixture::spawn_private_devpts(&["--orphans", "3"], 8);
    let host_doc = ptyreap(&["--pid", &host.pid.to_string(), "--dry-run", "--json"]).json();
    let inner_out = crate::support::dry_run(inner.pid, &["--json"]);
    assert_eq!(inner_out.code, 0, "{inner_out:?}");
    let inner_doc = inner_out.json();

    let host_rows = host_doc["targets"][0]["masters"]
        .as_array()
        .unwrap()
        .clone();
    let inner_rows = inner_doc["targets"][0]["masters"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(inner_rows.len(), 3);
    let host_devpts = host_rows[0]["devpts"].as_str().unwrap().to_string();
    let inner_devpts = inner_rows[0]["devpts"].as_str().unwrap().to_string();
    assert_ne!(host_devpts, inner_devpts, "two instances, two devpts ids");
    // the private instance starts at index 0, like the host's
    let inner_idx: Vec<i64> = inner_rows
        .iter()
        .map(|r| r["pty"].as_i64().unwrap())
        .collect();
    assert_eq!(inner_idx, vec![0, 1, 2], "{inner_rows:?}");
    for r in &inner_rows {
        assert_eq!(
            r["verdict"], "orphaned",
            "an index shared with a live host PTY: {r}"
        );
        assert_eq!(r["devpts"], inner_devpts.as_str());
        assert_eq!(r["slave_holders"].as_array().unwrap().len(), 0, "{r}");
    }
    // the other instance's PTYs, same indices, stay live
    let host_idx: Vec<i64> = host_rows
        .iter()
        .map(|r| r["pty"].as_i64().unwrap())
        .collect();
    assert_eq!(host_idx, vec![0, 1, 2], "{host_rows:?}");
    for r in &host_rows {
        assert_eq!(r["verdict"], "live", "{r}");
    }
    // the census lists the private instance, with its own max= and usage
    let census = ptyreap(&["--json"]).json();
    let inst = census["system"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["devpts"] == inner_devpts.as_str())
        .unwrap_or_else(|| panic!("private instance {inner_devpts} not listed: {census}"))
        .clone();
    assert_eq!(inst["max"], 8, "{inst}");
    assert_eq!(inst["in_use"], 3, "{inst}");
    assert_eq!(inst["mount"], "/dev/pts");
    let procs = census["processes"].as_array().unwrap();
    let me = procs.iter().find(|p| p["pid"] == inner.pid).unwrap();
    assert_eq!(me["orphaned"], 3);
}
