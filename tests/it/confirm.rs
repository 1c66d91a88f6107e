//! The interactive prompt, driven through a real terminal: ptyreap runs on a PTY of ours as its
//! controlling terminal, and we type at it. Reap all / choose / cancel.

use crate::support::{self, ptmx_fds, Fixture};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// ptyreap on a terminal: what it printed so far, and a way to type.
struct OnTerminal {
    child: Child,
    master: std::fs::File,
    screen: Arc<Mutex<String>>,
}

impl OnTerminal {
    fn start(args: &[&str]) -> OnTerminal {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty writes two fds; no name, termios or winsize requested.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty");
        // SAFETY: fresh fds from openpty.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptyreap"));
        cmd.args(args);
        if !args.contains(&"--method") {
            cmd.args(["--method", "close"]); // the close path is under test
        }
        cmd.env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and TIOCSCTTY between fork and exec: the slave becomes the controlling
        // terminal, so /dev/tty (where the prompt reads keys) is ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning ptyreap on a terminal");
        let screen = Arc::new(Mutex::new(String::new()));
        let mut reader = std::fs::File::from(master.try_clone().unwrap());
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        OnTerminal {
            child,
            master: std::fs::File::from(master),
            screen,
        }
    }

    fn wait_for_text(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.screen.lock().unwrap().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no '{text}' on screen: {}",
                self.screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }

    fn exit_code(mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ptyreap still running: {}", self.screen.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn enter_reaps_all() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "3", "--live", "1"]);
    let mut t = OnTerminal::start(&["--pid", &f.pid.to_string(), "--min-idle", "0"]);
    t.wait_for_text("Free 3 PTYs (3 master copies in 1 process)?");
    t.type_keys("\r");
    assert_eq!(t.exit_code(), 0);
    assert_eq!(ptmx_fds(f.pid), f.fds("live"));
}

#[test]
fn cancel_changes_nothing() {
    let f = Fixture::spawn(&["--orphans", "3"]);
    let before = ptmx_fds(f.pid);
    let mut t = OnTerminal::start(&["--pid", &f.pid.to_string(), "--min-idle", "0"]);
    t.wait_for_text("Free 3 PTYs (3 master copies in 1 process)?");
    t.type_keys("\x1b[B\x1b[B\r"); // down, down: "Cancel"
    assert_eq!(t.exit_code(), 4);
    assert_eq!(ptmx_fds(f.pid), before);
}

#[test]
fn choose_reaps_only_the_chosen() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "3"]);
    let orphans = f.fds("orphans");
    let mut t = OnTerminal::start(&["--pid", &f.pid.to_string(), "--min-idle", "0"]);
    t.wait_for_text("Free 3 PTYs (3 master copies in 1 process)?");
    t.type_keys("\x1b[B\r"); // "Choose which…"
    t.wait_for_text("Space toggles");
    t.type_keys(" \r"); // untick the first, confirm
    assert_eq!(t.exit_code(), 0);
    assert_eq!(
        ptmx_fds(f.pid),
        vec![orphans[0]],
        "only the unticked one is left"
    );
}

/// Hundreds of fds: the checklist offers one choice per process and verdict, not one per fd.
#[test]
fn the_checklist_offers_groups() {
    if !support::require_root() {
        return;
    }
    let f = Fixture::spawn(&["--orphans", "30", "--tracked", "2"]);
    let (orphans, tracked) = (f.fds("orphans"), f.fds("tracked"));
    let mut t = OnTerminal::start(&[
        "--pid",
        &f.pid.to_string(),
        "--min-idle",
        "0",
        "--include-tracked",
    ]);
    t.wait_for_text("Free ");
    t.type_keys("\x1b[B\r"); // "Choose which…"
    t.wait_for_text("Space toggles");
    t.wait_for_text("30 orphaned masters, fds");
    t.wait_for_text("2 tracked masters, fds");
    t.type_keys(" \r"); // untick the orphans' group, confirm
    assert_eq!(t.exit_code(), 0);
    let left = ptmx_fds(f.pid);
    assert!(
        orphans.iter().all(|fd| left.contains(fd)),
        "an orphan was released: {left:?}"
    );
    assert!(
        tracked.iter().all(|fd| !left.contains(fd)),
        "the tracked group was not released: {left:?}"
    );
}
