//! A real pty host on real node-pty 1.1.0 (from npm; `.ci/run` installs it into
//! target/node-pty): six terminals, two of them killed. Their PTYs stay allocated through the
//! copies the later shells inherited, which ptyreap sees as `inherited` and frees with `--all`;
//! every live shell still echoes. Inside a private devpts instance, so the count is exact.

use crate::support::{self, ptyreap, ptys_in_use_seen_by, require_root};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn node_pty() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("PTYREAP_NODE_PTY").map_or_else(
        || {
            std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/node-pty/node_modules/node-pty"
            ))
        },
        std::path::PathBuf::from,
    );
    dir.join("package.json").exists().then_some(dir)
}

struct Host {
    child: Child,
    pid: i32,
    terminals: Vec<i32>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Host {
    fn ping(&mut self, i: usize) -> bool {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "ping {i}").unwrap();
        stdin.flush().unwrap();
        matches!(self.lines.next(), Some(Ok(l)) if l == format!("pong {i}"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &t in &self.terminals {
            // SAFETY: killing the host's shells (its children in a private namespace of ours).
            unsafe { libc::kill(t, libc::SIGKILL) };
        }
    }
}

fn start_host(dir: &std::path::Path, module: &std::path::Path, kill: &[usize]) -> Host {
    let ready = dir.join("ready.json");
    let mut cmd = Command::new("node");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bin/ptyhost.js"))
        .arg(&ready)
        .arg("6")
        .args(kill.iter().map(|k| k.to_string()))
        .env("NODE_PTY_PATH", module)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    // SAFETY: only raw syscalls between fork and exec (a private devpts instance).
    unsafe {
        cmd.pre_exec(|| support::private_devpts(c"newinstance,ptmxmode=0666,max=32"));
    }
    let mut child = cmd.spawn().expect("spawning node");
    let stdout = child.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let doc: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            break serde_json::from_str(&text).unwrap();
        }
        assert!(child.try_wait().unwrap().is_none(), "the pty host exited");
        assert!(Instant::now() < deadline, "the pty host never got ready");
        std::thread::sleep(Duration::from_millis(20));
    };
    Host {
        pid: doc["pid"].as_i64().unwrap() as i32,
        terminals: doc["terminals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap() as i32)
            .collect(),
        child,
        lines: BufReader::new(stdout).lines(),
    }
}

#[test]
fn the_copies_of_killed_terminals_are_freed_with_all() {
    if !require_root() {
        return;
    }
    // `--all --yes` reaps every test's orphans: none but this one's meanwhile
    let _alone = support::exclusive_ptys();
    let Some(module) = node_pty() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "node-pty is not installed and CI is set (.ci/run installs it into target/node-pty)"
        );
        eprintln!("skipped: node-pty is not installed (npm_config_nodedir=/usr npm install --prefix target/node-pty node-pty@1.1.0)");
        return;
    };
    let dir = support::temp_dir("nodepty");
    let killed = [1, 3];
    let mut host = start_host(&dir, &module, &killed);
    let live: Vec<usize> = (0..6).filter(|i| !killed.contains(i)).collect();
    for &i in &live {
        assert!(host.ping(i), "terminal {i} does not echo before the reap");
    }
    // the killed terminals' PTYs stay allocated, through the later shells' copies
    assert_eq!(ptys_in_use_seen_by(host.pid), 6);
    let t2 = host.terminals[2];
    let t4 = host.terminals[4];

    // One later shell alone frees nothing: terminal 1's PTY is also held by the other.
    let one = crate::support::dry_run(t4, &["--json"]);
    let doc = one.json();
    let rows = doc["targets"][0]["masters"].as_array().unwrap().clone();
    let orphans: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r["verdict"] == "orphaned").collect();
    assert_eq!(orphans.len(), 2, "terminals 1 and 3: {rows:#?}");
    for r in &orphans {
        assert_eq!(r["opened_by"], "inherited", "{r}");
        assert_eq!(r["method"], "close", "{r}");
    }
    assert!(
        orphans.iter().any(|r| r["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("stays allocated: also held by {t2}"))),
        "{orphans:#?}"
    );

    let dry = ptyreap(&["--all", "--min-idle", "0", "--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let freeing: usize = dry.json()["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["pid"] == t2 || t["pid"] == t4)
        .flat_map(|t| t["masters"].as_array().unwrap().clone())
        .filter(|r| r["frees_pty"] == true)
        .count();
    assert_eq!(freeing, 3, "PTY 1 in two shells, PTY 3 in one");
    if std::env::var_os("CI").is_none() && std::env::var_os("PTYREAP_TEST_ALL").is_none() {
        eprintln!("skipped: --all --yes (set CI or PTYREAP_TEST_ALL to run it)");
        return;
    }
    let out = ptyreap(&["--all", "--min-idle", "0", "--yes", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        ptys_in_use_seen_by(host.pid),
        4,
        "exactly the killed terminals' PTYs freed"
    );
    for &i in &live {
        assert!(host.ping(i), "terminal {i} no longer echoes after the reap");
    }
}

/// `report` on a real node-pty 1.1.0 host whose module lives in a directory unrelated to its
/// script (target/node-pty, loaded by absolute path; no node_modules above the script): the
/// addon it has mapped names the package, its version and its known leak on Linux.
#[test]
fn report_names_the_node_pty_the_process_loaded() {
    if !require_root() {
        return;
    }
    let Some(module) = node_pty() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "node-pty is not installed and CI is set (.ci/run installs it into target/node-pty)"
        );
        eprintln!("skipped: node-pty is not installed");
        return;
    };
    let dir = support::temp_dir("nodepty-report");
    let host = start_host(&dir, &module, &[]);
    // the script's directory and those above it hold no node-pty: only the mapping tells
    let script = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bin/ptyhost.js"));
    assert!(script
        .ancestors()
        .all(|d| !d.join("node_modules/node-pty").exists()));
    let out = ptyreap(&["report", "--pid", &host.pid.to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    let app = &out.json()["app"];
    assert_eq!(app["node_pty"]["version"], "1.1.0", "{app:#}");
    let found_in = app["node_pty"]["found_in"].as_str().unwrap();
    assert_eq!(
        std::path::Path::new(found_in),
        module.join("package.json"),
        "{app:#}"
    );
    assert!(
        app["known_leaks"][0]
            .as_str()
            .is_some_and(|l| l.contains("node-pty 1.1.0") && l.contains("inherit the masters")),
        "{app:#}"
    );
}
