//! Which app a process is, for a bug report upstream: its bundle id (or package name) and
//! version, the Electron it runs on, and the node-pty it ships — all read from files beside its
//! executable, never by running anything.
//!
//! Two layouts, looked for whatever the OS (so both are tested on Linux):
//! - a macOS bundle, `X.app/Contents/MacOS/X`: `Contents/Info.plist` (`CFBundleIdentifier`,
//!   `CFBundleShortVersionString`), Electron's version in
//!   `Contents/Frameworks/Electron Framework.framework/Resources/Info.plist`, the app's code in
//!   `Contents/Resources/app.asar`;
//! - an Electron app on Linux: a `version` file beside the executable (Electron's own
//!   distribution ships one), the app's `package.json` (name, version) in `resources/app.asar`
//!   or `resources/app/`.
//!
//! The node-pty version and its known leaks come from leaks.rs.

use std::path::{Path, PathBuf};

/// What could be learnt about an app; every field may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// A macOS bundle's `CFBundleIdentifier`, or an Electron app's package name.
    pub id: Option<String>,
    pub version: Option<String>,
    pub electron: Option<String>,
    /// node-pty's version and where it was read.
    pub node_pty: Option<(String, String)>,
}

pub fn identify(exe: Option<&Path>, cmdline: &[String], native_modules: &[String]) -> Identity {
    let mut id = Identity {
        node_pty: crate::leaks::node_pty_of(exe, cmdline, native_modules),
        ..Identity::default()
    };
    let Some(dir) = exe.and_then(Path::parent) else {
        return id;
    };
    if let Some(contents) = bundle_contents(dir) {
        let plist = std::fs::read_to_string(contents.join("Info.plist")).unwrap_or_default();
        id.id = plist_string(&plist, "CFBundleIdentifier");
        id.version = plist_string(&plist, "CFBundleShortVersionString");
        let framework =
            contents.join("Frameworks/Electron Framework.framework/Resources/Info.plist");
        let framework = std::fs::read_to_string(framework).unwrap_or_default();
        id.electron = plist_string(&framework, "CFBundleVersion")
            .or_else(|| plist_string(&framework, "CFBundleShortVersionString"));
        return id;
    }
    id.electron = std::fs::read_to_string(dir.join("version"))
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| looks_like_a_version(v));
    if let Some(pkg) = package_json(dir) {
        id.id = pkg["name"].as_str().map(str::to_string);
        id.version = pkg["version"].as_str().map(str::to_string);
    }
    id
}

/// `…/X.app/Contents/MacOS` → `…/X.app/Contents`.
fn bundle_contents(exe_dir: &Path) -> Option<PathBuf> {
    let contents = exe_dir.parent()?;
    (exe_dir.file_name()? == "MacOS" && contents.file_name()? == "Contents")
        .then(|| contents.to_path_buf())
}

/// The app's own package.json: in `resources/app.asar`, `resources/app/`, or beside the
/// executable.
fn package_json(exe_dir: &Path) -> Option<serde_json::Value> {
    let resources = exe_dir.join("resources");
    let bytes = crate::asar::read_file(&resources.join("app.asar"), "package.json")
        .ok()
        .or_else(|| std::fs::read(resources.join("app/package.json")).ok())
        .or_else(|| std::fs::read(exe_dir.join("package.json")).ok())?;
    serde_json::from_slice(&bytes).ok()
}

fn looks_like_a_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() < 40
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
}

/// The string value of `key` in an XML property list (`<key>K</key><string>V</string>`); binary
/// plists give None. Enough for a bundle's identifier and versions; not a general plist parser.
pub fn plist_string(xml: &str, key: &str) -> Option<String> {
    let after_key = &xml[xml.find(&format!("<key>{key}</key>"))? + key.len() + 11..];
    let value = after_key.trim_start().strip_prefix("<string>")?;
    let value = &value[..value.find("</string>")?];
    Some(
        value
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// One line for people: "com.anthropic.claudefordesktop 0.14.10, Electron 35.1.2, node-pty 1.1.0".
pub fn describe(id: &Identity) -> Option<String> {
    let mut parts = Vec::new();
    match (&id.id, &id.version) {
        (Some(name), Some(v)) => parts.push(format!("{name} {v}")),
        (Some(name), None) => parts.push(name.clone()),
        (None, Some(v)) => parts.push(format!("version {v}")),
        (None, None) => {}
    }
    if let Some(e) = &id.electron {
        parts.push(format!("Electron {e}"));
    }
    if let Some((v, _)) = &id.node_pty {
        parts.push(format!("node-pty {v}"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The line `-v` prints for a target: who it is, and what its node-pty is known to leak here.
pub fn summary(id: &Identity) -> Option<String> {
    let mut line = describe(id)?;
    if let Some((v, _)) = &id.node_pty {
        for leak in crate::leaks::known_leaks(v, crate::leaks::this_os()) {
            line.push_str("; ");
            line.push_str(&leak);
        }
    }
    Some(line)
}

/// The identity of a running process, from its executable and command line.
pub fn of_process(pid: i32) -> Identity {
    let info = crate::sys::process_info(pid);
    identify(
        info.exe.as_deref().map(Path::new),
        &info.cmdline,
        &info.native_modules,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plist(pairs: &[(&str, &str)]) -> String {
        let body: String = pairs
            .iter()
            .map(|(k, v)| format!("\t<key>{k}</key>\n\t<string>{v}</string>\n"))
            .collect();
        format!("<?xml version=\"1.0\"?>\n<plist version=\"1.0\"><dict>\n{body}</dict></plist>\n")
    }

    fn write(path: &Path, data: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ptyreap-identity-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const NODE_PTY: &[u8] = br#"{"name": "node-pty", "version": "1.1.0"}"#;

    #[test]
    fn a_macos_electron_bundle_read_from_its_files() {
        let root = temp("mac");
        let contents = root.join("Claude.app/Contents");
        write(
            &contents.join("Info.plist"),
            plist(&[
                ("CFBundleIdentifier", "com.anthropic.claudefordesktop"),
                ("CFBundleShortVersionString", "0.14.10"),
            ])
            .as_bytes(),
        );
        write(
            &contents.join("Frameworks/Electron Framework.framework/Resources/Info.plist"),
            plist(&[("CFBundleVersion", "35.1.2")]).as_bytes(),
        );
        let asar = crate::asar::build(&[
            (
                "package.json",
                br#"{"name": "claude", "version": "9"}"#.as_slice(),
            ),
            ("node_modules/node-pty/package.json", NODE_PTY),
        ]);
        write(&contents.join("Resources/app.asar"), &asar);
        let exe = contents.join("MacOS/Claude");
        write(&exe, b"");
        let id = identify(Some(&exe), &[], &[]);
        assert_eq!(id.id.as_deref(), Some("com.anthropic.claudefordesktop"));
        assert_eq!(id.version.as_deref(), Some("0.14.10"));
        assert_eq!(id.electron.as_deref(), Some("35.1.2"));
        assert_eq!(id.node_pty.as_ref().map(|p| p.0.as_str()), Some("1.1.0"));
        assert_eq!(
            describe(&id).unwrap(),
            "com.anthropic.claudefordesktop 0.14.10, Electron 35.1.2, node-pty 1.1.0"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_linux_electron_app_read_from_its_files() {
        let root = temp("linux");
        write(&root.join("version"), b"33.2.0\n");
        let asar = crate::asar::build(&[
            (
                "package.json",
                br#"{"name": "agentd", "version": "2.4.1"}"#.as_slice(),
            ),
            ("node_modules/node-pty/package.json", NODE_PTY),
        ]);
        write(&root.join("resources/app.asar"), &asar);
        let exe = root.join("agentd");
        write(&exe, b"");
        let id = identify(Some(&exe), &[], &[]);
        assert_eq!(id.id.as_deref(), Some("agentd"));
        assert_eq!(id.version.as_deref(), Some("2.4.1"));
        assert_eq!(id.electron.as_deref(), Some("33.2.0"));
        assert_eq!(id.node_pty.as_ref().map(|p| p.0.as_str()), Some("1.1.0"));
        // a `version` file that is no version is not taken for Electron's
        write(&root.join("version"), b"<html>\n");
        assert_eq!(identify(Some(&exe), &[], &[]).electron, None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn nothing_known_is_nothing_said() {
        let id = identify(Some(Path::new("/nonexistent/dir/app")), &[], &[]);
        assert_eq!(id, Identity::default());
        assert_eq!(describe(&id), None);
        assert_eq!(identify(None, &[], &[]), Identity::default());
    }

    #[test]
    fn bundle_values_from_info_plist() {
        let xml = "<plist><dict>\n\t<key>CFBundleName</key>\n\t<string>Claude</string>\n\t\
                   <key>CFBundleShortVersionString</key>\n\t<string>0.14.10</string>\n</dict></plist>";
        assert_eq!(
            plist_string(xml, "CFBundleShortVersionString").as_deref(),
            Some("0.14.10")
        );
        assert_eq!(plist_string(xml, "CFBundleName").as_deref(), Some("Claude"));
        assert_eq!(plist_string(xml, "Missing"), None);
        assert_eq!(plist_string("<key>A</key><integer>1</integer>", "A"), None);
        assert_eq!(
            plist_string("<key>A</key><string>x &amp; y</string>", "A").as_deref(),
            Some("x & y")
        );
    }
}
