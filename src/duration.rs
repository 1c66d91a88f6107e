//! Durations as people type them (`0`, `90s`, `10m`, `2h`, `1d`, `1h30m`) and as they read them
//! (`2d 3h`, `5m 12s`).

use std::time::Duration;

/// Parses `0`, `90s`, `10m`, `2h`, `1d`, `1w`, `500ms` and sums like `1h30m`. Every number but
/// `0` needs its unit: `--min-idle 10` would otherwise be ten seconds where ten minutes was meant
/// (the default is shown as `10m`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = text.parse::<u64>() {
        if n == 0 {
            return Ok(Duration::ZERO);
        }
        return Err(format!("'{text}' needs a unit: {n}s, {n}m, {n}h or {n}d"));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "'{text}' is not a duration (try 90s, 10m, 2h or 1d)"
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("'{text}' is too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            "w" | "week" | "weeks" => 604_800_000,
            "" => {
                return Err(format!(
                    "'{text}' needs a unit after {value} (s, m, h or d)"
                ))
            }
            other => {
                return Err(format!(
                    "unknown unit '{other}' in '{text}' (use s, m, h or d)"
                ))
            }
        };
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("'{text}' is too large"))?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(Duration::from_millis(total))
}

/// A short window as people read it: `300ms`, `1.5s`, `2s` (the Linux look's window).
#[cfg(any(target_os = "linux", test))]
pub fn human_precise(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms / 1000 * 1000 == ms {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// Two most significant units: `42s`, `5m 12s`, `3h 4m`, `2d 3h`.
pub fn human(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    if secs == 0 {
        return "0s".into();
    }
    let mut parts = Vec::new();
    let mut rest = secs;
    for (size, name) in UNITS {
        if rest >= size {
            parts.push(format!("{}{}", rest / size, name));
            rest %= size;
        } else if !parts.is_empty() {
            // keep the two units adjacent: "2d 0h" reads better than "2d 5s"
            parts.push(format!("0{name}"));
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.len() == 2 && parts[1].starts_with('0') {
        parts.pop();
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("90s").unwrap().as_secs(), 90);
        assert_eq!(parse("10m").unwrap().as_secs(), 600);
        assert_eq!(parse("2h").unwrap().as_secs(), 7200);
        assert_eq!(parse("1d").unwrap().as_secs(), 86_400);
        assert_eq!(parse("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse("1h 30m").unwrap().as_secs(), 5400);
        // a bare number but 0 is refused, with the units to choose from
        let err = parse("45").unwrap_err();
        assert!(err.contains("45s, 45m, 45h or 45d"), "{err}");
        assert_eq!(parse("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("1s500ms").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn prints_short_windows() {
        assert_eq!(human_precise(Duration::from_millis(300)), "300ms");
        assert_eq!(human_precise(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_precise(Duration::from_secs(2)), "2s");
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "m",
            "10x",
            "-5m",
            "1.5h",
            "10m5",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn prints_two_units() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(42), "42s");
        assert_eq!(human(312), "5m 12s");
        assert_eq!(human(3600), "1h");
        assert_eq!(human(183_600), "2d 3h");
        assert_eq!(human(172_805), "2d");
        assert_eq!(human(11_040), "3h 4m");
    }
}

/// `2026-11-21T06:50:00Z` for a Unix time (UTC; the civil-from-days algorithm, no time zone data).
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_243_800), "2026-11-21T06:50:00Z");
    }
}
