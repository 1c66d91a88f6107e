//! Desktop notifications for the watchdog. macOS: `osascript` (a root LaunchDaemon reaches the
//! console user with `launchctl asuser`, README "Watchdog"). Linux: `notify-send` on a session
//! bus — our own when we run in a desktop session, else, as root, the bus of every logged-in user
//! (`/run/user/UID/bus`, the socket systemd-logind's user manager or dbus-daemon listens on),
//! reached as that user: a session bus accepts only its owner, root included. Fixed arguments,
//! no shell: nothing from a process name is interpreted.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where logged-in users' runtime directories are (systemd-logind's `XDG_RUNTIME_DIR`s).
const USER_RUNTIME_DIRS: &str = "/run/user";

/// Sends one notification; returns to whom ("this session", "uid 1000", ...).
pub fn send(title: &str, body: &str) -> Result<String, String> {
    if cfg!(target_os = "macos") {
        let script = format!(
            "display notification \"{}\" with title \"{}\"",
            applescript_escape(body),
            applescript_escape(title)
        );
        let mut c = Command::new("osascript");
        c.arg("-e").arg(script);
        return run(c).map(|()| "this session".into());
    }
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty()) {
        return run(notify_send(title, body)).map(|()| "this session".into());
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("no desktop session bus".into());
    }
    let buses = user_buses(Path::new(USER_RUNTIME_DIRS));
    if buses.is_empty() {
        return Err(format!(
            "no desktop session bus: no logged-in user has one under {USER_RUNTIME_DIRS}"
        ));
    }
    let (mut sent, mut failed) = (Vec::new(), Vec::new());
    for (uid, gid, bus) in buses {
        let mut c = notify_send(title, body);
        c.env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}", bus.display()),
        )
        .env("XDG_RUNTIME_DIR", bus.parent().unwrap_or(Path::new("/")))
        .env_remove("DISPLAY")
        // our working directory may be one the user cannot enter (root's home)
        .current_dir("/")
        // std drops every supplementary group when root sets a uid
        .uid(uid)
        .gid(gid);
        match run(c) {
            Ok(()) => sent.push(format!("uid {uid}")),
            Err(why) => failed.push(format!("uid {uid}: {why}")),
        }
    }
    if sent.is_empty() {
        Err(failed.join("; "))
    } else {
        Ok(sent.join(", "))
    }
}

/// The session bus sockets of logged-in users: `DIR/UID/bus`, a socket owned by that uid (a
/// file anyone else made there is not a user's bus). With the uid's primary group.
fn user_buses(dir: &Path) -> Vec<(u32, u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, u32, PathBuf)> = entries
        .filter_map(|e| {
            let uid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let bus = dir.join(uid.to_string()).join("bus");
            let meta = std::fs::symlink_metadata(&bus).ok()?;
            let is_socket = std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type());
            (is_socket && meta.uid() == uid && uid != 0).then(|| (uid, primary_gid(uid), bus))
        })
        .collect();
    out.sort();
    out
}

/// The primary group of `uid` (getpwuid_r), or the uid itself as a group, as most
/// distributions number a user's own group.
fn primary_gid(uid: u32) -> u32 {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is a valid out-parameter; getpwuid_r writes into it and `buf`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives it.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc == 0 && !result.is_null() {
        pwd.pw_gid
    } else {
        uid
    }
}

fn notify_send(title: &str, body: &str) -> Command {
    let mut c = Command::new("notify-send");
    c.arg("--app-name=ptyreap").arg(title).arg(body);
    c
}

/// Runs a notifier, bounded: a hung one never stalls the watchdog.
fn run(mut cmd: Command) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("the notifier failed ({status})")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the notifier did not finish in 5 s".into());
            }
        }
    }
}

fn applescript_escape(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn applescript_strings_cannot_break_out() {
        assert_eq!(super::applescript_escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(super::applescript_escape("x\ny"), "xy");
    }
}
