//! Naming the leak for upstream: which node-pty an app ships, and whether that version is known
//! to leak PTYs on this system — so a bug report can say "node-pty 1.1.0 (fixed in
//! 1.2.0-beta.10)" instead of "too many PTYs". The table is small and cites its sources.

use std::path::{Path, PathBuf};

/// A node-pty release line known to leak, and the first release that does not.
struct KnownLeak {
    os: &'static str,
    fixed_in: &'static str,
    what: &'static str,
}

const KNOWN: &[KnownLeak] = &[
    // microsoft/node-pty src/unix/pty.cc, pty_posix_spawn (1.1.0): the cleanup loop never closes
    // low_fds[0], and the parent's copy of the slave is never closed; fixed in af053f2 (PR #882),
    // first released in 1.2.0-beta.10. Reports: anthropics/claude-code #62378, microsoft/vscode
    // #182212, get-bb/bb #2641.
    KnownLeak {
        os: "macos",
        fixed_in: "1.2.0-beta.10",
        what: "leaks one whole PTY per spawn (a probe master and the parent's slave, never closed)",
    },
    // microsoft/node-pty src/unix/pty.cc (1.1.0): the forkpty() master is never made
    // close-on-exec, and the child closes nothing before exec, so every shell spawned later
    // holds copies of the masters opened before it (issue #657). Fixed child-side by closing
    // fds >= 3 before exec: PR #867 (52417d5), first released in 1.2.0-beta.4 (as
    // stablyai/orca#8855 records for the releases).
    KnownLeak {
        os: "linux",
        fixed_in: "1.2.0-beta.4",
        what: "lets every shell it spawns inherit the masters of the terminals opened before it, \
               so a closed terminal's PTY stays allocated while any later shell lives",
    },
    // the per-spawn kqueue in SetupExitCallback: f285d90 (PR #931), in 1.2.0-beta.14
    KnownLeak {
        os: "macos",
        fixed_in: "1.2.0-beta.14",
        what: "leaks a kqueue per spawn",
    },
];

/// The `os` of the table for the system ptyreap runs on.
pub fn this_os() -> &'static str {
    if cfg!(target_os = "macos") {
        "macos"
    } else {
        "linux"
    }
}

/// What is known about `version` of node-pty on `os` ("linux", "macos"): one line per leak.
pub fn known_leaks(version: &str, os: &str) -> Vec<String> {
    let Some(v) = Version::parse(version) else {
        return Vec::new();
    };
    KNOWN
        .iter()
        .filter(|k| k.os == os)
        .filter(|k| Version::parse(k.fixed_in).is_some_and(|fixed| v < fixed))
        .map(|k| format!("node-pty {version} {} (fixed in {})", k.what, k.fixed_in))
        .collect()
}

/// The node-pty an app runs, found without running anything. First what the process really
/// loaded: a mapped `pty.node` (node-pty's addon, `…/node-pty/build/Release/pty.node`), whose
/// package's `package.json` is a few directories up, wherever the package lives. Then what an
/// app ships: an Electron app's `resources/app.asar` (or `resources/app/`), or a `node_modules`
/// above a script the process runs. (version, where).
pub fn node_pty_of(
    exe: Option<&Path>,
    cmdline: &[String],
    native_modules: &[String],
) -> Option<(String, String)> {
    const PKG: &str = "node_modules/node-pty/package.json";
    let version = |bytes: &[u8]| -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        v["version"].as_str().map(str::to_string)
    };
    for addon in native_modules {
        // an addon replaced on disk since it was loaded: its package may be too
        let addon = addon.trim_end_matches(" (deleted)");
        if Path::new(addon).file_name().is_none_or(|n| n != "pty.node") {
            continue;
        }
        for dir in Path::new(addon).ancestors().skip(1).take(4) {
            let pkg = dir.join("package.json");
            let Ok(bytes) = std::fs::read(&pkg) else {
                continue;
            };
            let is_node_pty = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| {
                v["name"] == "node-pty"
                    || v["name"] == "@homebridge/node-pty-prebuilt-multiarch"
                    || v["name"] == "@lydell/node-pty"
            });
            if let (true, Some(v)) = (is_node_pty, version(&bytes)) {
                return Some((v, pkg.display().to_string()));
            }
        }
    }
    if let Some(dir) = exe.and_then(Path::parent) {
        for resources in [dir.join("resources"), dir.join("../Resources")] {
            let archive = resources.join("app.asar");
            if let Ok(bytes) = crate::asar::read_file(&archive, PKG) {
                if let Some(v) = version(&bytes) {
                    return Some((v, format!("{}:{PKG}", archive.display())));
                }
            }
            let plain = resources.join("app").join(PKG);
            if let Some(v) = std::fs::read(&plain).ok().and_then(|b| version(&b)) {
                return Some((v, plain.display().to_string()));
            }
        }
    }
    for arg in cmdline.iter().skip(1).filter(|a| a.starts_with('/')) {
        let mut dir: Option<PathBuf> = Path::new(arg).parent().map(Path::to_path_buf);
        for _ in 0..8 {
            let Some(d) = dir else { break };
            let pkg = d.join(PKG);
            if let Some(v) = std::fs::read(&pkg).ok().and_then(|b| version(&b)) {
                return Some((v, pkg.display().to_string()));
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    None
}

/// A semver version with its prerelease (`1.2.0-beta.10`), ordered as semver orders them.
#[derive(Debug, PartialEq, Eq)]
struct Version {
    core: [u64; 3],
    pre: Vec<Ident>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ident {
    Num(u64),
    Text(String),
}

impl Version {
    fn parse(text: &str) -> Option<Version> {
        let text = text.trim().trim_start_matches('v');
        let text = text.split('+').next()?;
        let (core, pre) = match text.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (text, None),
        };
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let core = [parts.next()??, parts.next()??, parts.next()??];
        let pre = pre
            .map(|p| {
                p.split('.')
                    .map(|i| i.parse().map_or(Ident::Text(i.to_string()), Ident::Num))
                    .collect()
            })
            .unwrap_or_default();
        Some(Version { core, pre })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.core.cmp(&other.core).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => std::cmp::Ordering::Equal,
                // a prerelease comes before its release
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaky_node_pty_versions_are_named_with_their_fix() {
        let l = known_leaks("1.1.0", "macos");
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[0].contains("fixed in 1.2.0-beta.10"), "{l:?}");
        assert_eq!(known_leaks("1.2.0-beta.10", "macos").len(), 1);
        assert!(known_leaks("1.2.0-beta.9", "macos")[0].contains("one whole PTY"));
        assert!(known_leaks("1.2.0-beta.14", "macos").is_empty());
        assert!(known_leaks("1.2.0", "macos").is_empty());
        assert!(known_leaks("1.1.0", "linux")[0].contains("inherit the masters"));
        assert!(known_leaks("1.2.0-beta.4", "linux").is_empty());
        assert!(known_leaks("not a version", "macos").is_empty());
    }

    #[test]
    fn semver_order_with_prereleases() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("1.2.0-beta.9") < v("1.2.0-beta.10"));
        assert!(v("1.2.0-beta.10") < v("1.2.0"));
        assert!(v("1.1.0") < v("1.2.0-beta.1"));
        assert!(v("v1.1.0") == v("1.1.0+build"));
        assert!(Version::parse("1.2").is_none());
    }
}
