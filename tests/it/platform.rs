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
    let gone = run(&["--uninstall"]);
    assert!(gone.contains("removed"), "{gone}");
    assert!(!unit.exists() && !bin.exists());
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
