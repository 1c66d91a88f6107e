//! Fleet metrics: the census in Prometheus's text exposition format, for `ptyreap metrics` and
//! for `ptyreap watch --textfile FILE` (node_exporter's textfile collector reads the file; it
//! has no PTY collector of its own). Every count is in PTYs, as in the census.
//!
//! Process names are chosen by whoever starts the process, so label values are escaped as the
//! format requires (backslash, double quote, newline), and anything else a terminal might act on
//! is left to the consumer: the file is data, never printed raw by ptyreap.

use crate::model::{Census, DevptsInstance};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::io;
use std::path::Path;

/// What a watchdog counts over its life (reset when it restarts, as Prometheus counters may).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub passes: u64,
    /// PTYs freed by its reaps.
    pub released_ptys: u64,
    /// Rows that failed, and reaps refused or failed as a whole.
    pub failures: u64,
    /// When the last pass ended, seconds since the epoch.
    pub last_pass: f64,
}

/// The exposition: gauges from the census, counters from a watchdog when there is one.
pub fn exposition(c: &Census, counters: Option<&Counters>) -> String {
    let mut out = String::new();
    let sys = &c.system;
    family(
        &mut out,
        "ptyreap_ptys_in_use",
        "gauge",
        "PTYs allocated on the machine.",
    );
    sample(&mut out, "ptyreap_ptys_in_use", &[], sys.in_use as f64);
    family(
        &mut out,
        "ptyreap_ptys_limit",
        "gauge",
        "The machine's PTY limit.",
    );
    sample(&mut out, "ptyreap_ptys_limit", &[], sys.limit as f64);
    family(
        &mut out,
        "ptyreap_orphaned_ptys",
        "gauge",
        "Distinct PTYs that look orphaned (nobody holds the slave, no session).",
    );
    sample(
        &mut out,
        "ptyreap_orphaned_ptys",
        &[],
        c.orphaned_ptys as f64,
    );
    family(
        &mut out,
        "ptyreap_unreadable_processes",
        "gauge",
        "Processes whose fds could not be read (their PTYs are not counted).",
    );
    sample(
        &mut out,
        "ptyreap_unreadable_processes",
        &[],
        sys.unreadable_processes as f64,
    );
    if let Some(s) = sys.exhausted_in_s {
        family(
            &mut out,
            "ptyreap_exhausted_in_seconds",
            "gauge",
            "Seconds until the first PTY limit is reached at the pace orphans are made (0: now); absent when nothing leaks steadily.",
        );
        sample(&mut out, "ptyreap_exhausted_in_seconds", &[], s as f64);
    }
    let instances: Vec<&DevptsInstance> = sys.instances.iter().flatten().collect();
    per_instance(
        &mut out,
        &instances,
        "ptyreap_devpts_in_use",
        "PTYs allocated in one devpts instance.",
        |i| i.in_use,
    );
    per_instance(
        &mut out,
        &instances,
        "ptyreap_devpts_max",
        "A devpts instance's own max= mount option.",
        |i| i.max,
    );
    per_instance(
        &mut out,
        &instances,
        "ptyreap_devpts_exhausted_in_seconds",
        "Seconds until one devpts instance is full at its own pace (0: now).",
        |i| i.exhausted_in_s,
    );
    // per process name: an app's many processes are one series, and a pid is no label
    let mut by_name: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for p in &c.processes {
        let e = by_name.entry(p.name.as_str()).or_default();
        e.0 += p.ptys;
        e.1 += p.orphaned;
    }
    if !by_name.is_empty() {
        family(
            &mut out,
            "ptyreap_process_ptys",
            "gauge",
            "PTYs held by the processes of one name (a PTY held by two processes counts in both).",
        );
        for (name, (ptys, _)) in &by_name {
            let l = [("name", name.to_string())];
            sample(&mut out, "ptyreap_process_ptys", &l, *ptys as f64);
        }
        family(
            &mut out,
            "ptyreap_process_orphaned_ptys",
            "gauge",
            "PTYs that look orphaned, held by the processes of one name.",
        );
        for (name, (_, orphaned)) in &by_name {
            let l = [("name", name.to_string())];
            sample(
                &mut out,
                "ptyreap_process_orphaned_ptys",
                &l,
                *orphaned as f64,
            );
        }
    }
    if let Some(k) = counters {
        family(
            &mut out,
            "ptyreap_released_ptys_total",
            "counter",
            "PTYs freed by this watchdog's reaps.",
        );
        sample(
            &mut out,
            "ptyreap_released_ptys_total",
            &[],
            k.released_ptys as f64,
        );
        family(
            &mut out,
            "ptyreap_reap_failures_total",
            "counter",
            "Releases that failed, and reaps refused or failed as a whole.",
        );
        sample(
            &mut out,
            "ptyreap_reap_failures_total",
            &[],
            k.failures as f64,
        );
        family(
            &mut out,
            "ptyreap_passes_total",
            "counter",
            "Passes this watchdog has made.",
        );
        sample(&mut out, "ptyreap_passes_total", &[], k.passes as f64);
        family(
            &mut out,
            "ptyreap_last_pass_timestamp_seconds",
            "gauge",
            "When the watchdog's last pass ended, seconds since the epoch.",
        );
        sample(
            &mut out,
            "ptyreap_last_pass_timestamp_seconds",
            &[],
            k.last_pass,
        );
    }
    out
}

/// One gauge family with a sample per devpts instance that has a value; nothing at all when
/// none has (a family with no samples is noise).
fn per_instance(
    out: &mut String,
    instances: &[&DevptsInstance],
    name: &str,
    help: &str,
    value: impl Fn(&DevptsInstance) -> Option<u64>,
) {
    let samples: Vec<(&DevptsInstance, u64)> = instances
        .iter()
        .filter_map(|i| value(i).map(|v| (*i, v)))
        .collect();
    if samples.is_empty() {
        return;
    }
    family(out, name, "gauge", help);
    for (i, v) in samples {
        let labels = [
            ("devpts", i.devpts.to_string()),
            ("mount", i.mount.clone().unwrap_or_default()),
        ];
        sample(out, name, &labels, v as f64);
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, String)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        let inner: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        let _ = write!(out, "{{{}}}", inner.join(","));
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = writeln!(out, " {}", value as i64);
    } else {
        let _ = writeln!(out, " {value}");
    }
}

/// A label value as the text format wants it: `\\`, `\"` and `\n` escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes `text` to `path` as the textfile collector needs it: a new file in the same directory,
/// renamed over the old one, so a scrape never reads half a file.
pub fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let result = write_readable(&tmp, text.as_bytes()).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new file (never through a symlink), readable by node_exporter's user: what it holds is
/// what `ptyreap metrics` prints to anyone.
fn write_readable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut out = String::new();
        sample(&mut out, "m", &[("name", "q\"\\\n".to_string())], 3.0);
        assert_eq!(out, "m{name=\"q\\\"\\\\\\n\"} 3\n");
    }
}
