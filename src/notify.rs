//! Desktop notifications for the watchdog, where one is possible: macOS `osascript`; Linux
//! `notify-send` when a session bus exists. A root daemon usually has neither — then the log line
//! is the notification. Fixed arguments, no shell: nothing from a process name is interpreted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn send(title: &str, body: &str) -> Result<(), String> {
    let mut cmd = if cfg!(target_os = "macos") {
        let script = format!(
            "display notification \"{}\" with title \"{}\"",
            applescript_escape(body),
            applescript_escape(title)
        );
        let mut c = Command::new("osascript");
        c.arg("-e").arg(script);
        c
    } else {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none_or(|v| v.is_empty()) {
            return Err("no desktop session bus".into());
        }
        let mut c = Command::new("notify-send");
        c.arg("--app-name=ptyreap").arg(title).arg(body);
        c
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run the notifier: {e}"))?;
    // never let a hung notifier stall the watchdog
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
