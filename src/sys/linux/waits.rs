//! How long a thread's wait can last at most, from its system call and arguments: what lets the
//! poll look (observe.rs) end as soon as every thread that sleeps between polls has woken once,
//! instead of always taking its whole window.
//!
//! A relative timeout is an upper bound on what is left of it (the wait began at some moment we
//! do not know); an absolute one (`clock_nanosleep` with TIMER_ABSTIME, `FUTEX_WAIT_BITSET`) is
//! exact. A wait with no timeout ends only on an event, which no window can wait for.

use std::time::Duration;

/// What a thread in a system call is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A relative timeout: the wait lasts this long at most from when it began.
    For(Duration),
    /// An absolute one: it ends this long from now at the latest.
    Within(Duration),
    /// Only an event ends it.
    Untimed,
}

impl Wait {
    /// The whole length of the wait (its period, for a loop that sleeps between polls) and what
    /// is left of it, given how long ago the thread began waiting (`since`, if known). None for
    /// an untimed wait.
    pub fn span(self, since: Option<Duration>) -> Option<(Duration, Duration)> {
        match (self, since) {
            // waited longer than it asked: the clocks disagree; what is left is unknown
            (Wait::For(d), Some(s)) if s <= d => Some((d, d - s)),
            (Wait::For(d), Some(_)) => Some((d, d)),
            (Wait::For(d), None) => Some((d, d)),
            (Wait::Within(left), Some(s)) => Some((left + s, left)),
            (Wait::Within(left), None) => Some((left, left)),
            (Wait::Untimed, _) => None,
        }
    }
}

/// Reads a `struct timespec` (or, with `timeval`, a `struct timeval`) at an address of the
/// target's: (seconds, nanoseconds).
pub type ReadTime<'a> = &'a dyn Fn(u64, bool) -> Option<(i64, i64)>;

/// The wait of a thread in system call `nr` with `args`; None when the call is no timed or
/// untimed wait this module knows (then nothing is known about when the thread calls again).
pub fn of_call(nr: i64, args: &[u64; 6], read: ReadTime<'_>) -> Option<Wait> {
    let rel = |addr: u64| -> Option<Wait> {
        if addr == 0 {
            return Some(Wait::Untimed);
        }
        read(addr, false).map(|(s, ns)| Wait::For(duration(s, ns)))
    };
    let ms = |v: u64| -> Wait {
        let v = v as i32;
        if v < 0 {
            Wait::Untimed
        } else {
            Wait::For(Duration::from_millis(v as u64))
        }
    };
    let abs = |addr: u64, clock: libc::clockid_t| -> Option<Wait> {
        if addr == 0 {
            return Some(Wait::Untimed);
        }
        let (s, ns) = read(addr, false)?;
        let (now_s, now_ns) = now(clock)?;
        let left = (s as i128 * 1_000_000_000 + ns as i128)
            - (now_s as i128 * 1_000_000_000 + now_ns as i128);
        Some(Wait::Within(Duration::from_nanos(
            left.clamp(0, u64::MAX as i128) as u64,
        )))
    };
    #[cfg(target_arch = "x86_64")]
    {
        if nr == libc::SYS_poll || nr == libc::SYS_epoll_wait {
            let timeout = if nr == libc::SYS_poll {
                args[2]
            } else {
                args[3]
            };
            return Some(ms(timeout));
        }
        if nr == libc::SYS_select {
            if args[4] == 0 {
                return Some(Wait::Untimed);
            }
            return read(args[4], true)
                .map(|(s, us)| Wait::For(duration(s, us.saturating_mul(1000))));
        }
    }
    match nr {
        libc::SYS_nanosleep => rel(args[0]),
        libc::SYS_clock_nanosleep => {
            if args[1] & libc::TIMER_ABSTIME as u64 != 0 {
                abs(args[2], args[0] as libc::clockid_t)
            } else {
                rel(args[2])
            }
        }
        libc::SYS_epoll_pwait => Some(ms(args[3])),
        libc::SYS_epoll_pwait2 => rel(args[3]),
        libc::SYS_ppoll | libc::SYS_rt_sigtimedwait => rel(args[2]),
        libc::SYS_pselect6 => rel(args[4]),
        libc::SYS_futex => {
            const FUTEX_WAIT: u64 = 0;
            const FUTEX_WAIT_BITSET: u64 = 9;
            const FUTEX_CLOCK_REALTIME: u64 = 256;
            match args[1] & 127 {
                FUTEX_WAIT => rel(args[3]),
                FUTEX_WAIT_BITSET => {
                    let clock = if args[1] & FUTEX_CLOCK_REALTIME != 0 {
                        libc::CLOCK_REALTIME
                    } else {
                        libc::CLOCK_MONOTONIC
                    };
                    abs(args[3], clock)
                }
                _ => Some(Wait::Untimed),
            }
        }
        _ => None,
    }
}

/// The waits the poll look watches threads enter (besides the poll family, which are waits too).
#[cfg(target_arch = "x86_64")]
pub const TRACED: &[i64] = &[
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_rt_sigtimedwait,
];
#[cfg(not(target_arch = "x86_64"))]
pub const TRACED: &[i64] = &[
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_rt_sigtimedwait,
];

fn duration(s: i64, ns: i64) -> Duration {
    if s < 0 || ns < 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(s as u64) + Duration::from_nanos(ns as u64)
}

fn now(clock: libc::clockid_t) -> Option<(i64, i64)> {
    // SAFETY: clock_gettime writes one timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    (unsafe { libc::clock_gettime(clock, &mut ts) } == 0).then_some((ts.tv_sec, ts.tv_nsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_use_how_long_the_thread_has_waited() {
        let s = Duration::from_millis;
        // socat: a 1 s sleep, 700 ms of it gone
        assert_eq!(
            Wait::For(s(1000)).span(Some(s(700))),
            Some((s(1000), s(300)))
        );
        assert_eq!(Wait::For(s(1000)).span(None), Some((s(1000), s(1000))));
        assert_eq!(
            Wait::For(s(1000)).span(Some(s(1500))),
            Some((s(1000), s(1000)))
        );
        // Python's time.sleep(3) (an absolute deadline), 2.5 s of it gone: a 3 s period
        assert_eq!(
            Wait::Within(s(500)).span(Some(s(2500))),
            Some((s(3000), s(500)))
        );
        assert_eq!(Wait::Untimed.span(Some(s(1))), None);
    }

    fn fixed(t: (i64, i64)) -> impl Fn(u64, bool) -> Option<(i64, i64)> {
        move |_, _| Some(t)
    }

    #[test]
    fn relative_and_untimed_waits() {
        let one_s = fixed((1, 0));
        let args = |a: [u64; 6]| a;
        assert_eq!(
            of_call(libc::SYS_nanosleep, &args([0x1000, 0, 0, 0, 0, 0]), &one_s),
            Some(Wait::For(Duration::from_secs(1)))
        );
        // clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL): socat's sleep between polls
        assert_eq!(
            of_call(
                libc::SYS_clock_nanosleep,
                &args([1, 0, 0x1000, 0, 0, 0]),
                &one_s
            ),
            Some(Wait::For(Duration::from_secs(1)))
        );
        assert_eq!(
            of_call(
                libc::SYS_epoll_pwait,
                &args([3, 0, 8, u32::MAX as u64, 0, 8]),
                &one_s
            ),
            Some(Wait::Untimed)
        );
        assert_eq!(
            of_call(libc::SYS_epoll_pwait, &args([3, 0, 8, 250, 0, 8]), &one_s),
            Some(Wait::For(Duration::from_millis(250)))
        );
        assert_eq!(
            of_call(libc::SYS_futex, &args([0x10, 128, 0, 0, 0, 0]), &one_s),
            Some(Wait::Untimed)
        );
        assert_eq!(of_call(libc::SYS_read, &args([0; 6]), &one_s), None);
        assert_eq!(
            of_call(libc::SYS_ppoll, &args([0x10, 1, 0, 0, 0, 0]), &one_s),
            Some(Wait::Untimed)
        );
    }

    #[test]
    fn absolute_waits_count_from_now() {
        let (s, ns) = now(libc::CLOCK_MONOTONIC).unwrap();
        let in_two = fixed((s + 2, ns));
        // FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, on CLOCK_MONOTONIC
        match of_call(libc::SYS_futex, &[0x10, 9 | 128, 0, 0x2000, 0, 0], &in_two) {
            Some(Wait::Within(d)) => {
                assert!(d <= Duration::from_secs(2) && d > Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        let past = fixed((s - 5, 0));
        assert_eq!(
            of_call(libc::SYS_clock_nanosleep, &[1, 1, 0x1000, 0, 0, 0], &past),
            Some(Wait::Within(Duration::ZERO))
        );
    }
}
