//! The per-OS assets and generated docs: the systemd unit passes `systemd-analyze verify`, the
//! launchd plist is well-formed XML with the keys launchd needs, `scripts/install-watchdog` is
//! idempotent, and completions and the man page come out of the clap definitions.

use crate::support;

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_systemd_unit_verifies() {
    if !support::require_tool("systemd-analyze", "systemd") {
        return;
    }
    let unit =
        std::fs::read_to_string(format!("{ROOT}/platform/linux/ptyreap-watch.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/ptyreap watch "));
    assert!(
        unit.contains("CAP_SYS_PTRACE"),
        "hardening must still allow ptrace"
    );
    // verify against the binary we built (the unit names the installed path)
    let dir = support::temp_dir("unit");
    let copy = dir.join("ptyreap-watch.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/ptyreap", env!("CARGO_BIN_EXE_ptyreap")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("ptyreap-watch.service:"),
        "{err}"
    );
}

#[test]
fn the_launchd_plist_is_well_formed() {
    if !support::require_tool("xmllint", "libxml2-utils") {
        return;
    }
    let path = format!("{ROOT}/platform/macos/com.ptyreap.watch.plist");
    let out = Command::new("xmllint")
        .args(["--noout", &path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for key in ["Label", "ProgramArguments", "RunAtLoad", "KeepAlive"] {
        assert!(text.contains(&format!("<key>{key}</key>")), "{key}");
    }
    assert!(
        text.contains("<string>/usr/local/bin/ptyreap</string>\n        <string>watch</string>")
    );
}

#[test]
fn install_watchdog_is_idempotent() {
    let root = support::temp_dir("install");
    let script = format!("{ROOT}/scripts/install-watchdog");
    let run = |args: &[&str]| {
        let out = Command::new(&script)
            .args([
                "--root",
                root.to_str().unwrap(),
                "--binary",
                env!("CARGO_BIN_EXE_ptyreap"),
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run(&[]);
    assert!(first.contains("installed"), "{first}");
    let unit = root.join("etc/systemd/system/ptyreap-watch.service");
    let bin = root.join("usr/local/bin/ptyreap");
    assert!(unit.exists() && bin.exists());
    let second = run(&[]);
    assert!(
        second.contains("nothing changed") && !second.contains("installed"),
        "{second}"
    );
    // the watchdog's episodes: removed with the rest
    let state = root.join("var/lib/ptyreap");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("episodes"), "{}").unwrap();
    let gone = run(&["--uninstall"]);
    assert!(gone.contains("removed"), "{gone}");
    assert!(!unit.exists() && !bin.exists() && !state.exists(), "{gone}");
    assert!(
        run(&["--uninstall"]).contains("absent"),
        "uninstalling twice is fine"
    );
    assert!(Path::new(&root).exists());
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = support::ptyreap(&["completions", shell]);
        assert_eq!(out.code, 0, "{shell}");
        assert!(
            out.stdout.contains("ptyreap") && out.stdout.contains("min-idle"),
            "{shell}"
        );
    }
    let man = support::ptyreap(&["man"]);
    assert_eq!(man.code, 0);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH"),
        "{}",
        &man.stdout[..200]
    );
    assert!(man.stdout.contains("dry\\-run"));
    // one page per subcommand for packagers, each the page the main one's SEE ALSO names, and
    // each clean for man(1)
    let dir = support::temp_dir("man-pages");
    let out = support::ptyreap(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let main_page = std::fs::read_to_string(dir.join("ptyreap.1")).unwrap();
    for sub in [
        "watch",
        "report",
        "completions",
        "metrics",
        "man",
        "limit",
        "rescue",
        "resume",
    ] {
        let page = dir.join(format!("ptyreap-{sub}.1"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{sub}: {e}"));
        assert!(text.contains(&format!("ptyreap {sub}")), "{sub}");
        assert!(main_page.contains(&format!("ptyreap\\-{sub}(1)")), "{sub}");
    }
    if support::require_tool("man", "man-db") {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let out = std::process::Command::new("man")
                .args(["--warnings", "-l"])
                .arg(&path)
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            let warnings = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && warnings.trim().is_empty(),
                "{path:?}: {warnings}"
            );
        }
    }
    let version = support::ptyreap(&["--version"]);
    assert_eq!(
        version.stdout.trim(),
        format!("ptyreap {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Without systemd the installer says it started nothing, prints the command to run instead, and
/// exits 1 — run for real (not `--root`) in a private mount namespace whose /usr/local, /etc/systemd,
/// /var/lib and /run are empty tmpfs mounts, so nothing of the machine's is touched.
#[test]
fn install_watchdog_without_systemd_says_nothing_was_started() {
    if !support::require_root() || !support::require_tool("unshare", "util-linux") {
        return;
    }
    if !Path::new("/etc/systemd").is_dir() {
        eprintln!("skipped: no /etc/systemd to mount over here");
        return;
    }
    let script = format!(
        r#"set -e
for d in /usr/local /etc/systemd /var/lib /run; do mount -t tmpfs tmpfs "$d"; done
set +e
{ROOT}/scripts/install-watchdog --binary {bin}; echo "exit=$?"
ls /usr/local/bin /etc/systemd/system
{ROOT}/scripts/install-watchdog --uninstall; echo "exit=$?"
ls /usr/local/bin /etc/systemd/system
"#,
        bin = env!("CARGO_BIN_EXE_ptyreap"),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let (install, uninstall) = stdout
        .split_once("exit=1")
        .unwrap_or_else(|| panic!("the install did not exit 1: {stdout}\n{stderr}"));
    assert!(
        install.contains("installed /usr/local/bin/ptyreap"),
        "{stdout}"
    );
    assert!(stderr.contains("nothing was started"), "{stderr}");
    assert!(
        stderr.contains("/usr/local/bin/ptyreap watch --warn"),
        "the command to run instead: {stderr}"
    );
    assert!(uninstall.contains("ptyreap-watch.service"), "{stdout}");
    let after = uninstall
        .split_once("exit=0")
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("the uninstall did not exit 0: {stdout}\n{stderr}"));
    assert!(!after.contains("ptyreap"), "left behind: {after}");
}
