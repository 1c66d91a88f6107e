//! Signals people can trust (part 13): Prometheus metrics that `promtool` accepts whatever a
//! process is named, a notification that reaches a logged-in user's session bus from a root
//! watchdog, the cursor shown again after ^C at a prompt, and every "nothing to do" saying why.

use crate::support::{self, Fixture};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `promtool check metrics` on `text`: its complaints, None when it accepts it.
fn promtool_check(text: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A process named with a quote, a backslash and a newline holds PTYs: `ptyreap metrics` escapes
/// the label, and promtool accepts the whole exposition.
#[test]
fn metrics_are_valid_prometheus_whatever_the_names() {
    if !support::require_root() || !support::require_tool("promtool", "prometheus") {
        return;
    }
    let dir = support::temp_dir("metrics");
    let name = "q\"\\\nx";
    let exe = dir.join(name);
    std::fs::copy(env!("CARGO_BIN_EXE_ptyreap-fixture"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ready = dir.join("ready.json");
    let mut child = support::spawn_copied_binary(
        Command::new(&exe)
            .args(["--orphans", "2", "--ready"])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    let up = support::wait_for(Duration::from_secs(20), || ready.exists());
    let out = support::ptyreap(&["metrics"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "the renamed fixture never got ready");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(promtool_check(&out.stdout), None, "{}", out.stdout);
    // the name as the census shows it (control characters already made visible), then escaped
    // for the label: the quote and every backslash
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("ptyreap_process_orphaned_ptys{name=\"q\\\""))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.ends_with("\"} 2") && !line.contains('\n'), "{line}");
    for family in [
        "ptyreap_ptys_in_use ",
        "ptyreap_ptys_limit ",
        "ptyreap_devpts_in_use{",
        "ptyreap_process_ptys{",
        "ptyreap_unreadable_processes ",
    ] {
        assert!(out.stdout.contains(family), "{family}: {}", out.stdout);
    }
}

/// `watch --textfile FILE` writes the metrics and the watchdog's counters after every pass, in a
/// file promtool accepts; the counters count what was released.
#[test]
fn the_watchdog_writes_a_textfile_for_node_exporter() {
    if !support::require_root() || !support::require_tool("promtool", "prometheus") {
        return;
    }
    let dir = support::temp_dir("textfile");
    let file = dir.join("ptyreap.prom");
    let f = Fixture::spawn(&["--orphans", "6", "--live", "1"]);
    let pid = f.pid.to_string();
    let out = support::ptyreap_with(
        &[
            "watch",
            "--once",
            "--pid",
            &pid,
            "--warn",
            "100",
            "--reap",
            "3",
            "--min-idle",
            "0",
            "--method",
            "close",
            "--textfile",
            file.to_str().unwrap(),
        ],
        |cmd| {
            cmd.env("PTYREAP_STATE_DIR", dir.join("state"));
        },
    );
    assert_eq!(out.code, 0, "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(promtool_check(&text), None, "{text}");
    for line in [
        "ptyreap_passes_total 1\n",
        "ptyreap_released_ptys_total 6\n",
        "ptyreap_reap_failures_total 0\n",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(
        text.contains("ptyreap_last_pass_timestamp_seconds "),
        "{text}"
    );
    // nothing but the file is left in the directory (written beside it, then renamed)
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// A root watchdog with no session bus of its own notifies the logged-in user through theirs:
/// a real `dbus-daemon --session` of an unprivileged user at /run/user/UID/bus (in a private
/// mount namespace, so the machine's /run is untouched) with a notification server on it
/// (python-dbusmock's `notification_daemon`): `dbus-monitor` sees the `Notify` call with
/// ptyreap's words, and the watchdog names the user it went to.
#[test]
fn a_root_watchdog_notifies_the_user_s_session_bus() {
    if !support::require_root()
        || !support::require_tool("dbus-daemon", "dbus-daemon")
        || !support::require_tool("dbus-monitor", "dbus-bin")
        || !support::require_tool("notify-send", "libnotify-bin")
        || !support::require_python_module("/usr/bin/python3", "dbusmock", "python3-dbusmock")
    {
        return;
    }
    let dir = support::temp_dir("notify-bus");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = Fixture::spawn(&["--orphans", "2"]);
    let script = format!(
        r#"set -e
# (the user's programs must not start in a checkout only root may enter)
cd /
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/user/65534
chown 65534:65534 /run/user/65534
chmod 700 /run/user/65534
as_user="setpriv --reuid 65534 --regid 65534 --clear-groups env HOME=/run/user/65534"
# (setpriv and env exec: $! is the daemon itself, so the kill below ends it)
$as_user dbus-daemon --session --address=unix:path=/run/user/65534/bus --nofork --nopidfile &
daemon=$!
for i in $(seq 100); do [ -S /run/user/65534/bus ] && break; sleep 0.05; done
export DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/65534/bus
$as_user dbus-monitor "interface='org.freedesktop.Notifications'" > /run/user/65534/monitor.log 2>&1 &
monitor=$!
# the user's notification server: python-dbusmock's mock of the desktop's daemon
$as_user /usr/bin/python3 -m dbusmock --template notification_daemon > /dev/null 2>&1 &
server=$!
for i in $(seq 100); do
  $as_user dbus-send --session --print-reply --dest=org.freedesktop.DBus / \
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.Notifications 2>/dev/null |
    grep -q 'boolean true' && break
  sleep 0.1
done
sleep 0.5
unset DBUS_SESSION_BUS_ADDRESS
env -u DBUS_SESSION_BUS_ADDRESS PTYREAP_STATE_DIR={state} {ptyreap} watch --once --pid {pid} --warn 1 --json
sleep 1
kill $monitor $server $daemon 2>/dev/null || true
echo ==monitor
cat /run/user/65534/monitor.log
"#,
        state = dir.join("state").display(),
        ptyreap = env!("CARGO_BIN_EXE_ptyreap"),
        pid = f.pid,
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let (events, monitor) = stdout.split_once("==monitor").unwrap();
    // the Notify call itself reached the user's notification server, with ptyreap's words
    let notify = monitor
        .split("method call")
        .find(|m| m.contains("member=Notify"))
        .unwrap_or_else(|| panic!("no Notify on the user's bus: {monitor}\n{events}"));
    assert!(notify.contains("\"ptyreap\""), "{notify}");
    assert!(notify.contains(&format!("{}", f.pid)), "{notify}");
    let notice = events
        .lines()
        .find(|l| l.contains("\"event\":\"notified\""))
        .unwrap_or_else(|| panic!("{events}"));
    assert!(notice.contains("uid 65534"), "{notice}");
}

/// ^C at the confirmation prompt, in a real terminal (tmux): ptyreap ends with 130, nothing is
/// released, and the terminal's cursor is visible again. A shell stays in the pane after
/// ptyreap: tmux 3.3 may note a pane's death before it reads the pane's last output and then
/// drops it, so the pane must outlive ptyreap for tmux to see what ptyreap wrote last.
#[test]
fn ctrl_c_at_the_prompt_shows_the_cursor_again() {
    if !support::require_root() || !support::require_tool("tmux", "tmux") {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "3"]);
    let socket = format!("ptyreap-cursor-{}", std::process::id());
    let tmux = |args: &[&str]| -> String {
        let out = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    struct Server<'a>(&'a dyn Fn(&[&str]) -> String);
    impl Drop for Server<'_> {
        fn drop(&mut self) {
            (self.0)(&["kill-server"]);
        }
    }
    let command = format!(
        "{} --pid {} --min-idle 0 --method close; echo \"ptyreap ended: $?\"; exec sleep 600",
        env!("CARGO_BIN_EXE_ptyreap"),
        f.pid
    );
    tmux(&[
        "new-session",
        "-d",
        "-x",
        "160",
        "-y",
        "50",
        "sh",
        "-c",
        &command,
    ]);
    let _server = Server(&tmux);
    let pane = || tmux(&["capture-pane", "-p", "-t", "0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pane().contains("Free ") {
        assert!(Instant::now() < deadline, "no prompt: {}", pane());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        tmux(&["display", "-p", "-t", "0", "#{cursor_flag}"]).trim(),
        "0",
        "the prompt hides the cursor"
    );
    // the prompt drawn, then read: ^C as a key press (the way a person presses it)
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", "0", "C-c"]);
    while !pane().contains("ptyreap ended:") {
        assert!(
            Instant::now() < deadline,
            "ptyreap did not end on ^C: {}",
            pane()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pane().contains("ptyreap ended: 130"), "{}", pane());
    assert_eq!(
        tmux(&["display", "-p", "-t", "0", "#{cursor_flag}"]).trim(),
        "1",
        "the cursor is hidden after ^C: {}",
        pane()
    );
    assert_eq!(support::ptmx_fds(f.pid).len(), 3, "nothing released");
}

/// Kept as fresh: the last lines say how many, and the exact command that frees them, with how
/// many PTYs it would free.
#[test]
fn fresh_orphans_kept_are_named_with_the_command_that_frees_them() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "5"]);
    let pid = f.pid.to_string();
    let out = support::ptyreap(&["--pid", &pid, "--yes", "--method", "close"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("Nothing to release."), "{out:?}");
    let want = format!(
        "kept 5 PTYs as fresh (idle less than 10m); if they are leaked: `ptyreap --pid {pid} --yes --method close --min-idle 0` would free 5 PTYs"
    );
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert_eq!(support::ptmx_fds(f.pid).len(), 5);
}

/// In a pid namespace, --all cannot see the other processes: what it keeps as unknown is said,
/// with the way out, instead of a bare "Nothing to release".
#[test]
fn in_a_pid_namespace_all_says_what_it_cannot_see() {
    if !support::require_root() {
        return;
    }
    let dir = support::temp_dir("pidns");
    let ready = dir.join("ready.json");
    let script = format!(
        "{fixture} --orphans 3 --ready {ready} >/dev/null 2>&1 & \
         for i in $(seq 200); do [ -e {ready} ] && break; sleep 0.05; done; \
         {ptyreap} --all --min-idle 0 --dry-run; echo \"exit=$?\"; kill $! 2>/dev/null; true",
        fixture = env!("CARGO_BIN_EXE_ptyreap-fixture"),
        ready = ready.display(),
        ptyreap = env!("CARGO_BIN_EXE_ptyreap"),
    );
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("exit=0"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "kept 3 masters as unknown: processes outside ptyreap's pid namespace cannot be seen"
        ),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("sudo nsenter --target 1 --mount --pid ptyreap --all"),
        "{stderr}"
    );
}

/// Someone who cannot read every process is told that the census is only what they can see.
#[test]
fn a_census_without_root_says_it_sees_only_part() {
    if !support::require_root() {
        return;
    }
    let out = support::ptyreap_with(&[], |cmd| {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    });
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("ptyreap can see"), "{}", out.stdout);
    assert!(out.stdout.contains("could not be read"), "{}", out.stdout);
}
