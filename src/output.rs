//! The one place that writes to stdout, and the one way untrusted text reaches a terminal.
//!
//! - A closed pipe (`ptyreap | head -1`, `ptyreap man | head`) ends the run quietly with exit 0,
//!   as ripgrep does: Rust ignores SIGPIPE, so the write fails with EPIPE, and `println!` would
//!   panic on it. Nothing that matters is lost: output only ever follows the work (a reap's
//!   target is restored, by the tracer process, before anything is printed about it).
//! - Every write is flushed at once, so a stdout line is complete before any stderr line that
//!   follows it.
//! - [`escaped`] makes text a process chose (its name, its command line) safe to print: a
//!   process can call itself `\e]0;...` and retitle the user's terminal, or worse.

use std::io::Write;

/// Write `text` to stdout and flush; on a closed pipe, exit 0 at once.
pub fn print(text: &str) {
    print_bytes(text.as_bytes());
}

/// `print` with a newline.
pub fn println(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    print(&line);
}

pub fn print_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        message(format_args!("writing to stdout: {e}"));
        std::process::exit(1);
    }
}

/// One line of ptyreap's own to stderr (a refusal, a summary, an error), with the one prefix
/// every such line has.
pub fn message(line: std::fmt::Arguments) {
    eprintln!("ptyreap: {line}");
}

/// `text` with every control character (C0, DEL, C1) written as `\xNN` (and a backslash as
/// `\\`), so that it prints as itself.
pub fn escaped(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if needs_escape(c) {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control()
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("node"), "node");
        assert_eq!(escaped("\u{1b}]0;owned\u{7}"), "\\x1b]0;owned\\x07");
        assert_eq!(escaped("a\nb\tc"), "a\\x0ab\\x09c");
        assert_eq!(escaped("\u{9b}31m"), "\\x9b31m");
        assert_eq!(escaped("back\\slash"), "back\\\\slash");
        assert_eq!(escaped("ünïcode"), "ünïcode");
    }
}
