//! The wall clock, in the two forms the verdicts (whole seconds, like the slave nodes' times) and
//! the census's leak rates (with fraction, like the start times it compares) use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch.
pub fn now() -> i64 {
    now_precise() as i64
}

/// Seconds since the epoch, with fraction.
pub fn now_precise() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
