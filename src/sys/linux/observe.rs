//! Watching the targets' poll()/select() calls over time, without touching them: the look that
//! catches a loop which polls a master only now and then (socat's `wait-slave` polls once a
//! second and sleeps in between; a busy loop spinning on a hung-up master polls all the time).
//!
//! Why perf tracepoints and not ptrace: any ptrace stop is visible to the target (a sleeping
//! `epoll_wait` or `sigtimedwait` returns EINTR, and while a thread is traced the kernel queues
//! the signals it would have discarded as ignored, e.g. SIGCHLD at its default). The syscall
//! entry tracepoint (`raw_syscalls:sys_enter`, what `perf trace` uses) reports each call's number
//! and arguments as it is entered, and changes nothing the target can observe: no stop, no
//! signal, no delay beyond the tracepoint itself. One tracepoint rather than one per call:
//! closing a tracepoint's last event waits for an RCU grace period (~35 ms here), one after
//! another. The pollfd array or fd sets are then
//! read from the target's memory with `process_vm_readv`, right after the sample arrives (the
//! array of a call that sleeps or returns at once is still in place).
//!
//! One window for every target at once: a per-CPU event, filtered in the kernel to the calls of
//! interest (the poll family, and the timed waits below) made by the targets' threads, each
//! feeding its ring buffer. epoll is not watched here: an epoll set's entries are read from its
//! fdinfo at any moment (watchers.rs).
//!
//! The window ends as soon as every thread has had its chance, and at `--observe` at the latest:
//! a thread running at the start gets 100 ms to make its next call; a thread in a timed wait
//! (nanosleep, a poll or epoll_wait with a timeout, a timed futex: waits.rs) whose length is
//! within the window, until that wait must end, plus 250 ms (a woken thread may wait for a CPU
//! on a loaded machine); the first such wait of 50 ms or more a thread enters during the look
//! extends its time the same way (socat, caught between its poll and its sleep, is watched
//! through the sleep to its next poll); and a thread seen entering a poll-family call has had its
//! chance. Waits longer than the window, and waits only an event
//! ends, are not waited for: no window could promise to see what follows them.
//!
//! The tracepoint ids come from tracefs. Where it is not mounted, a detached mount of it is made
//! with `fsopen`/`fsmount` (visible to no one, gone when its fd is closed): nothing on the machine
//! changes. Needs root (or CAP_PERFMON and CAP_SYS_ADMIN); where the look is impossible the
//! reason is returned, and verdicts say what could not be seen.

use super::waits;
use super::watchers::PollCall;
use crate::model::PollLook;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Each distinct call (thread, array address, size) is read from memory this often at most: a
/// busy loop makes thousands of identical calls.
const READS_PER_CALL: u32 = 3;
/// Ring buffer data per CPU, in bytes (rounded to a power-of-two number of pages).
const RING_BYTES: usize = 256 << 10;
/// A longer filter than this goes to the kernel unfiltered (its limit is a page).
const MAX_FILTER: usize = 3000;
/// How long a thread running at the start of the look is given to make its next call.
const RUNNING: Duration = Duration::from_millis(100);
/// How long a thread whose wait ended is given to make its next call: generous, as a woken thread
/// may wait for a CPU on a loaded machine, and a poll missed here can cost the app its fd.
const SLACK: Duration = Duration::from_millis(250);
/// Waits shorter than this, entered during the look, are not waited out (see `entered`).
const SHORT_WAIT: Duration = Duration::from_millis(50);

/// Watches the poll-family calls of every thread of `targets` (pid → its master fds) for
/// `window` at most. Returns, per pid and fd, what was seen polling it; `unavailable` says why
/// there was no look, or why it may have missed calls.
pub fn observe(targets: &BTreeMap<i32, BTreeSet<i32>>, window: Duration) -> PollLook {
    let pids: Vec<i32> = targets.keys().copied().collect();
    let mut look = PollLook {
        window,
        ..PollLook::default()
    };
    if window.is_zero() {
        look.unavailable = Some("not watched (--observe 0)".into());
        return look;
    }
    if pids.is_empty() {
        return look;
    }
    if !in_initial_pid_namespace() {
        // the tracepoint delivers nothing to an event opened there (seen on 6.18)
        look.unavailable =
            Some("ptyreap runs in a pid namespace of its own, where the look sees nothing".into());
        return look;
    }
    if let Some(pid) = pids.iter().find(|&&p| compat_task(p)) {
        // its calls reach the tracepoint with the 32-bit numbers, which mean other calls here
        look.unavailable = Some(format!(
            "pid {pid} is a 32-bit program, whose calls the look cannot read"
        ));
        return look;
    }
    match watch(&pids, targets, window) {
        Ok((seen, watched, lost)) => {
            look.seen = seen;
            look.window = watched;
            if lost > 0 {
                look.unavailable = Some(format!(
                    "the kernel dropped {lost} of the calls watched (too many on the machine at once)"
                ));
            }
        }
        Err(why) => look.unavailable = Some(why),
    }
    look
}

type Seen = BTreeMap<i32, BTreeMap<i32, Vec<String>>>;

/// `raw_syscalls:sys_enter`: its id, and where the syscall number and arguments sit in a sample.
struct Tracepoint {
    id: u16,
    nr_offset: usize,
    args_offset: usize,
}

/// When the look may end for each thread (see the module doc).
struct Deadlines {
    start: Instant,
    cap: Duration,
    until: HashMap<i32, Instant>,
    extended: HashSet<i32>,
}

impl Deadlines {
    /// `threads`: each target and its threads, as listed when the look began.
    fn new(threads: &[(i32, Vec<i32>)], cap: Duration) -> Deadlines {
        let clocks = sched_clocks();
        let start = Instant::now();
        let mut until = HashMap::new();
        for (pid, tids) in threads {
            let pid = *pid;
            let calls: HashMap<i32, (i64, [u64; 6])> = super::procfs::task_syscalls(pid)
                .into_iter()
                .map(|(tid, nr, args)| (tid, (nr, args)))
                .collect();
            for &tid in tids {
                let wait = calls
                    .get(&tid)
                    .and_then(|(nr, args)| waits::of_call(*nr, args, &|a, _| read_time(pid, a)));
                let running = super::procfs::thread_state(pid, tid) == Some('R');
                match wait.map(|w| w.span(waited_for(pid, tid, &clocks))) {
                    // a loop that waits this long between polls: watched through the wait
                    Some(Some((period, left))) if period <= cap => {
                        until.insert(tid, start + left + SLACK);
                    }
                    // a longer wait, or one only an event ends: no window can promise more
                    Some(_) => {}
                    // running, or between calls: its next call comes soon; blocked in another
                    // call (read, accept, wait4): only an event wakes it
                    None if running || !calls.contains_key(&tid) => {
                        until.insert(tid, start + RUNNING);
                    }
                    None => {}
                }
            }
        }
        Deadlines {
            start,
            cap,
            until,
            extended: HashSet::new(),
        }
    }

    /// `tid` entered a wait: the first one of [`SHORT_WAIT`] or more that it enters during the look
    /// is waited out.
    fn entered(&mut self, pid: i32, tid: i32, nr: i64, args: &[u64; 6]) {
        if self.extended.contains(&tid) {
            return;
        }
        let wait = waits::of_call(nr, args, &|a, _| read_time(pid, a));
        let Some((period, left)) = wait.and_then(|w| w.span(Some(Duration::ZERO))) else {
            return;
        };
        // a short wait (a backoff, a frame timer) is over before it matters: it neither extends
        // the look nor uses up the thread's extension for the sleep that may come next
        if period < SHORT_WAIT || period > self.cap {
            return;
        }
        self.extended.insert(tid);
        let end = Instant::now() + left + SLACK;
        let slot = self.until.entry(tid).or_insert(end);
        *slot = (*slot).max(end);
    }

    /// `tid` entered a poll-family call: whatever it polls now is seen, and it has come round
    /// its loop since the look began, so it needs no more of the window.
    fn polled(&mut self, tid: i32) {
        self.until.remove(&tid);
        self.extended.insert(tid);
    }

    fn end(&self) -> Instant {
        let latest = self.until.values().max().copied().unwrap_or(self.start);
        latest.min(self.start + self.cap)
    }
}

/// The scheduler's clock (`se.exec_start`, ms) of each online CPU, read from our own thread
/// moved there for the moment: the clock is per CPU (it leaves out interrupt and steal time,
/// which differ between CPUs), so a thread's last run is compared with the clock of the CPU it
/// ran on. Empty without CONFIG_SCHED_DEBUG or where our thread may not move.
fn sched_clocks() -> HashMap<i32, f64> {
    let mut out = HashMap::new();
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity(0, ...) act on our own thread.
    unsafe {
        let mut saved: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut saved) != 0 {
            return out;
        }
        for cpu in online_cpus() {
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, size, &one) == 0 {
                if let Some(now) = exec_start("/proc/thread-self/sched") {
                    out.insert(cpu, now);
                }
            }
        }
        libc::sched_setaffinity(0, size, &saved);
    }
    out
}

fn exec_start(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("se.exec_start"))?
        .trim_start_matches([' ', ':'])
        .trim()
        .parse()
        .ok()
}

/// How long ago thread `tid` last ran (so: began its current wait): its `se.exec_start` against
/// the clock of the CPU it last ran on (field 39 of its stat).
fn waited_for(pid: i32, tid: i32, clocks: &HashMap<i32, f64>) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    let cpu: i32 = super::procfs::stat_field(&stat, 39)?.parse().ok()?;
    let now = clocks.get(&cpu)?;
    let then = exec_start(&format!("/proc/{pid}/task/{tid}/sched"))?;
    (now >= &then).then(|| Duration::from_secs_f64((now - then) / 1000.0))
}

/// A `struct timespec` (or timeval: the same two longs) in the target's memory.
fn read_time(pid: i32, addr: u64) -> Option<(i64, i64)> {
    let mut raw = [0u8; 16];
    super::watchers::read_memory(pid, addr, &mut raw)?;
    let s = i64::from_ne_bytes(raw[..8].try_into().ok()?);
    let ns = i64::from_ne_bytes(raw[8..].try_into().ok()?);
    Some((s, ns))
}

/// Whether we see pids as the kernel's tracepoints do (one `NSpid` level: the initial namespace).
fn in_initial_pid_namespace() -> bool {
    super::procfs::read_status_field(std::process::id() as i32, None, "NSpid")
        .is_some_and(|ns| ns.split_ascii_whitespace().count() == 1)
}

/// Whether `pid` runs a 32-bit program (ELF class 1), whose system calls have other numbers.
fn compat_task(pid: i32) -> bool {
    use std::io::Read;
    let mut ident = [0u8; 5];
    std::fs::File::open(format!("/proc/{pid}/exe"))
        .and_then(|mut f| f.read_exact(&mut ident))
        .is_ok_and(|()| &ident[..4] == b"\x7fELF" && ident[4] == 1)
}

/// Whether thread `tid` of `pid` is still in the call it entered with these arguments (the
/// kernel has not written its results back into the caller's memory yet).
fn still_in(pid: i32, tid: i32, nr: i64, args: &[u64; 6]) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .ok()
        .and_then(|t| super::procfs::parse_syscall(&t))
        .is_some_and(|(n, a)| n == nr && a[..4] == args[..4])
}

fn watch(
    pids: &[i32],
    masters: &BTreeMap<i32, BTreeSet<i32>>,
    window: Duration,
) -> Result<(Seen, Duration, u64), String> {
    let (tp, mount) = tracepoint()?;
    let threads: Vec<(i32, Vec<i32>)> = pids
        .iter()
        .map(|&pid| (pid, super::procfs::list_tasks(pid).unwrap_or_default()))
        .collect();
    let tids: Vec<i32> = threads
        .iter()
        .flat_map(|(_, t)| t.iter().copied())
        .collect();
    let numbers: Vec<i64> = PollCall::numbers()
        .into_iter()
        .chain(waits::TRACED.iter().copied())
        .collect();
    let rings = match open_rings(tp.id, &filter(&numbers, &tids)) {
        Ok(rings) => rings,
        Err(why) => {
            let _ = close_elsewhere(mount.into_iter().collect());
            return Err(why);
        }
    };
    let wanted: HashSet<i32> = pids.iter().copied().collect();
    let mut calls: HashMap<(i32, i32, PollCall, u64, u64), u32> = HashMap::new();
    let mut seen: HashMap<(i32, i32, i32, PollCall), u32> = HashMap::new();
    let mut deadlines = Deadlines::new(&threads, window);
    let mut lost = 0;
    loop {
        for ring in &rings {
            lost += ring.drain(|pid, tid, raw| {
                if !wanted.contains(&pid) || raw.len() < 8 {
                    return;
                }
                if u16::from_ne_bytes([raw[0], raw[1]]) != tp.id {
                    return;
                }
                let word = |off: usize| {
                    raw.get(off..off + 8)
                        .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
                };
                let nr = word(tp.nr_offset) as i64;
                let mut args = [0u64; 6];
                for (i, slot) in args.iter_mut().enumerate() {
                    *slot = word(tp.args_offset + 8 * i);
                }
                let Some(call) = PollCall::from_nr(nr) else {
                    deadlines.entered(pid, tid, nr, &args);
                    return;
                };
                deadlines.polled(tid);
                let n = calls.entry((pid, tid, call, args[0], args[1])).or_default();
                *n += 1;
                if *n > READS_PER_CALL {
                    // the same call again: counted against every fd it was seen with
                    for ((p, t, _, c), count) in seen.iter_mut() {
                        if *p == pid && *t == tid && *c == call {
                            *count += 1;
                        }
                    }
                    return;
                }
                // select() writes its results over its fd sets when it returns (a timeout
                // clears them): read when the thread was not in the call both before and after,
                // they say nothing of what it watched, so every master below its nfds counts.
                // pollfd arrays keep their fds.
                let sets = call.overwrites_its_sets();
                let before = !sets || still_in(pid, tid, nr, &args);
                let fds = call.read_fds(pid, &args);
                let returned = sets && !(before && still_in(pid, tid, nr, &args));
                if returned {
                    let nfds = (args[0] as i32).max(0);
                    for &fd in masters.get(&pid).into_iter().flatten() {
                        if fd < nfds {
                            *seen.entry((pid, tid, fd, call)).or_default() += 1;
                        }
                    }
                } else if let Some(fds) = fds {
                    for fd in fds {
                        *seen.entry((pid, tid, fd, call)).or_default() += 1;
                    }
                }
            });
        }
        let left = deadlines.end().saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut pfds: Vec<libc::pollfd> = rings
            .iter()
            .map(|r| libc::pollfd {
                fd: r.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: pfds is a valid array of pollfd for its length.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    }
    let watched = deadlines.start.elapsed();
    let _ = close_elsewhere(rings.into_iter().map(Ring::into_fd).chain(mount).collect());
    let mut out = Seen::new();
    let mut keys: Vec<_> = seen.into_iter().collect();
    keys.sort();
    let secs = crate::duration::human_precise(watched);
    for ((pid, tid, fd, call), n) in keys {
        out.entry(pid)
            .or_default()
            .entry(fd)
            .or_default()
            .push(format!(
                "{}() in thread {tid} (seen {n} time{} in {secs})",
                call.name(),
                if n == 1 { "" } else { "s" }
            ));
    }
    Ok((out, watched, lost))
}

/// The kernel's filter: the calls of interest, made by the targets' threads (by thread id: the
/// tracepoint knows no process id). A thread list too long for the kernel's filter (a page) is
/// left out, and samples of other processes are dropped here instead.
fn filter(calls: &[i64], tids: &[i32]) -> CString {
    let calls = calls
        .iter()
        .map(|nr| format!("id == {nr}"))
        .collect::<Vec<_>>()
        .join(" || ");
    let threads = ranges(tids)
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                format!("common_pid == {a}")
            } else {
                format!("(common_pid >= {a} && common_pid <= {b})")
            }
        })
        .collect::<Vec<_>>()
        .join(" || ");
    let text = if threads.is_empty() || threads.len() > MAX_FILTER {
        format!("({calls})")
    } else {
        format!("({calls}) && ({threads})")
    };
    CString::new(text).unwrap_or_default()
}

/// Runs of consecutive thread ids, as (first, last): threads made one after another have
/// consecutive ids, so a filter for a 500-thread app stays short.
fn ranges(tids: &[i32]) -> Vec<(i32, i32)> {
    let mut sorted = tids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(i32, i32)> = Vec::new();
    for t in sorted {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == t => *last = t,
            _ => out.push((t, t)),
        }
    }
    out
}

/// `raw_syscalls:sys_enter`, from tracefs.
/// With the detached mount made to read it, if one was: the caller lets go of it with the events
/// (see `close_elsewhere`).
fn tracepoint() -> Result<(Tracepoint, Option<OwnedFd>), String> {
    let (dir, mount) = tracefs_events()?;
    let format = std::fs::read_to_string(format!("{dir}/sys_enter/format"))
        .map_err(|e| format!("the kernel has no syscall entry tracepoint ({e})"));
    let parsed = format.and_then(|f| {
        parse_format(&f)
            .ok_or_else(|| "the syscall entry tracepoint has an unknown layout".to_string())
    });
    match parsed {
        Ok(tp) => Ok((tp, mount)),
        Err(why) => {
            let _ = close_elsewhere(mount.into_iter().collect());
            Err(why)
        }
    }
}

/// The `events/raw_syscalls` directory of tracefs, and the detached mount that holds it open
/// when it had to be made.
fn tracefs_events() -> Result<(String, Option<OwnedFd>), String> {
    for dir in [
        "/sys/kernel/tracing/events/raw_syscalls",
        "/sys/kernel/debug/tracing/events/raw_syscalls",
    ] {
        if std::path::Path::new(dir).join("sys_enter").exists() {
            return Ok((dir.to_string(), None));
        }
    }
    let mount = detached_tracefs().map_err(|e| {
        format!("tracefs is not mounted, and a private mount of it failed ({e}): run as root")
    })?;
    let dir = format!("/proc/self/fd/{}/events/raw_syscalls", mount.as_raw_fd());
    if !std::path::Path::new(&dir).exists() {
        return Err("the kernel has no syscall tracepoints (CONFIG_FTRACE_SYSCALLS)".into());
    }
    Ok((dir, Some(mount)))
}

/// A mount of tracefs attached nowhere: fsopen + fsconfig(CREATE) + fsmount (Linux 5.2).
fn detached_tracefs() -> std::io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let owned = |r: libc::c_long| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: the kernel just returned this fd to us.
            Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
        }
    };
    // SAFETY: fsopen takes a NUL-terminated name and flags.
    let fs =
        owned(unsafe { libc::syscall(libc::SYS_fsopen, c"tracefs".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: CMD_CREATE takes no key or value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fsmount takes the fs context fd and two flag words.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
}

/// The id and the offsets of `id` and `args` in `raw_syscalls:sys_enter`'s `format` file.
fn parse_format(format: &str) -> Option<Tracepoint> {
    let id = format
        .lines()
        .find_map(|l| l.strip_prefix("ID:"))?
        .trim()
        .parse()
        .ok()?;
    let field = |name: &str| -> Option<(usize, usize)> {
        let suffix = format!(" {name}");
        let line = format
            .lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix("field:"))
            .find(|l| l.split(';').next().is_some_and(|d| d.ends_with(&suffix)))?;
        let value = |key: &str| -> Option<usize> {
            line.split(';')
                .find_map(|p| p.trim().strip_prefix(key))?
                .parse()
                .ok()
        };
        Some((value("offset:")?, value("size:")?))
    };
    let (nr_offset, nr_size) = field("id")?;
    let (args_offset, args_size) = field("args[6]")?;
    (nr_size == 8 && args_size == 48).then_some(Tracepoint {
        id,
        nr_offset,
        args_offset,
    })
}

/// `struct perf_event_attr` up to `config2` (PERF_ATTR_SIZE_VER1, 72 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_EVENT_IOC_SET_FILTER: libc::Ioctl = 0x4008_2406;
const PERF_RECORD_SAMPLE: u32 = 9;
const PERF_RECORD_LOST: u32 = 2;
/// `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;

/// Lets go of the look's perf events and detached mount without waiting: the last close of a
/// tracepoint's last perf event waits for RCU grace periods (`perf_trace_event_unreg` calls
/// `tracepoint_synchronize_unregister`), as does the last close of a detached mount: ~25-35 ms
/// here each, which a run that ends soon after (a dry run) paid at exit, and which a reap paid
/// twice over when its tracer, forked meanwhile, inherited the fds and closed them last.
///
/// So a child process of ours takes the last references: forked holding copies, it closes
/// every other fd at once, then these (the waits happen there), and exits; we close our copies,
/// which are not the last, at once, and a thread of ours reaps the child. Where no child can be
/// made the fds are closed on a thread of ours, left to finish as the run goes on. Returns the
/// child's pid, if there is one.
fn close_elsewhere(fds: Vec<OwnedFd>) -> Option<i32> {
    if fds.is_empty() {
        return None;
    }
    // The child waits (a second at most) until our copies are closed, so that its close is the
    // last one whoever runs first.
    let Ok((ours_closed, go)) = super::child::pipe() else {
        in_background(fds);
        return None;
    };
    let mut keep: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    keep.push(ours_closed.as_raw_fd());
    keep.sort_unstable();
    // Where close_range is missing (before Linux 5.9) or refused (a seccomp filter), the child
    // closes fd by fd up to the highest open now (allocating is done before the fork).
    let highest = highest_open_fd().unwrap_or(1023);
    // SAFETY: the child makes only async-signal-safe system calls (close_range, close, poll,
    // _exit) and touches no allocation: fork in a threaded process allows no more.
    match unsafe { libc::fork() } {
        0 => {
            let mut next = 0;
            for &fd in &keep {
                close_between(next, fd - 1);
                next = fd + 1;
            }
            close_from(next, highest);
            let mut pfd = libc::pollfd {
                fd: ours_closed.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; then plain closes of fds this process holds.
            unsafe {
                libc::poll(&mut pfd, 1, 1000);
                for &fd in &keep {
                    libc::close(fd);
                }
                libc::_exit(0)
            }
        }
        -1 => {
            in_background(fds);
            None
        }
        child => {
            drop(fds);
            drop(go);
            drop(ours_closed);
            // reaped, so that a watchdog's passes leave no zombies: on a thread of ours, the
            // child exiting within a few grace periods; without one, here
            let reap = move || {
                super::child::reap(child);
            };
            if spawn_helper("ptyreap-reap", reap).is_err() {
                reap();
            }
            Some(child)
        }
    }
}

/// In the child of `close_elsewhere`: closes fds `first..=last` (none when `last < first`).
fn close_between(first: i32, last: i32) {
    if last < first {
        return;
    }
    // SAFETY: close_range takes two fd numbers and flags; close takes an fd.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0) != 0 {
            for fd in first..=last {
                libc::close(fd);
            }
        }
    }
}

/// In the child of `close_elsewhere`: closes every fd from `first` on (fd by fd up to
/// `highest` where close_range cannot).
fn close_from(first: i32, highest: i32) {
    // SAFETY: close_range takes two fd numbers and flags.
    if unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0) } != 0 {
        close_between(first, highest);
    }
}

/// The highest fd number this process has open.
fn highest_open_fd() -> Option<i32> {
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .max()
}

/// Drops `what` on a thread of its own, left to finish while the run goes on.
fn in_background<T: Send + 'static>(what: T) {
    // no thread to be had: the value went into the failed spawn and was dropped there, at once
    let _ = spawn_helper("ptyreap-close", move || drop(what));
}

/// A helper thread that outlives the look, with the signals a reap defers blocked for its whole
/// life: a signal meant to wait until a target is restored must never be taken by it (it would
/// end ptyreap inside the window, the main thread holding it off in vain).
fn spawn_helper<F: FnOnce() + Send + 'static>(name: &str, f: F) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::sys::deferral::block_in_this_thread();
            f()
        })
        .map(drop)
}

/// One CPU's ring buffer; unmapped on drop (the event closes with its fd).
struct Ring {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
    page: usize,
}

// SAFETY: the mapping belongs to the process, not to a thread; the ring is used by one thread at
// a time (the look, then whoever drops it).
unsafe impl Send for Ring {}

impl Ring {
    /// Unmapped; the event's fd alone, to be closed (see `close_elsewhere`).
    fn into_fd(self) -> OwnedFd {
        let ring = std::mem::ManuallyDrop::new(self);
        // SAFETY: base/len are the mapping made in open_rings, unmapped once (Drop never runs).
        unsafe { libc::munmap(ring.base.cast(), ring.len) };
        // SAFETY: the fd is moved out of a value that is never used or dropped again.
        unsafe { std::ptr::read(&ring.fd) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in open_rings.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn open_rings(id: u16, filter: &CString) -> Result<Vec<Ring>, String> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut rings = Vec::new();
    for cpu in online_cpus() {
        let fd = open_event(id, cpu).map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => {
                "perf_event_open was refused: run as root (or with CAP_PERFMON)".to_string()
            }
            _ => format!("perf_event_open failed: {e}"),
        })?;
        // SAFETY: the filter is a NUL-terminated string.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_SET_FILTER, filter.as_ptr()) };
        if r != 0 {
            return Err(format!(
                "perf: the tracepoint filter was refused: {}",
                std::io::Error::last_os_error()
            ));
        }
        let len = page * (1 + ring_pages(page));
        // SAFETY: a shared read-write mapping of the event's ring buffer, as perf_event_open(2)
        // describes; unmapped in Ring's drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "perf: cannot map a ring buffer: {}",
                std::io::Error::last_os_error()
            ));
        }
        rings.push(Ring {
            fd,
            base: base.cast(),
            len,
            page,
        });
    }
    if rings.is_empty() {
        return Err("perf: no online CPU found".into());
    }
    Ok(rings)
}

fn open_event(id: u16, cpu: i32) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: u64::from(id),
        sample_period: 1,
        sample_type: PERF_SAMPLE_TID | PERF_SAMPLE_RAW,
        wakeup_events: 1,
        ..PerfEventAttr::default()
    };
    // SAFETY: attr is a valid perf_event_attr of the size it says; pid -1 with a cpu is a
    // CPU-wide event.
    let r = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

impl Ring {
    /// Hands every sample waiting in the ring to `each` as (pid, raw tracepoint data).
    /// Returns how many samples the kernel reported lost (the ring was full).
    /// `each` gets (pid, tid, raw tracepoint data), the ids as seen from our pid namespace.
    fn drain(&self, mut each: impl FnMut(i32, i32, &[u8])) -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        // SAFETY: data_head/data_tail are u64 fields of the mapped control page, shared with
        // the kernel; accessed atomically as perf_event_open(2) prescribes.
        let head_ptr = unsafe { &*(self.base.add(DATA_HEAD) as *const AtomicU64) };
        let tail_ptr = unsafe { &*(self.base.add(DATA_TAIL) as *const AtomicU64) };
        let head = head_ptr.load(Ordering::Acquire);
        let mut tail = tail_ptr.load(Ordering::Relaxed);
        let size = (self.len - self.page) as u64;
        // The kernel writes the data area while we read it: bytes are read one by one through a
        // raw pointer, never through a reference to memory that changes under it.
        // SAFETY: the data area follows the control page, `size` bytes long, mapped for `self`.
        let byte = |at: u64| unsafe {
            std::ptr::read_volatile(self.base.add(self.page + (at % size) as usize))
        };
        let read =
            |at: u64, len: usize| -> Vec<u8> { (0..len as u64).map(|i| byte(at + i)).collect() };
        let mut lost = 0;
        while tail + 8 <= head {
            let header = read(tail, 8);
            let kind = u32::from_ne_bytes(header[0..4].try_into().unwrap_or([0; 4]));
            let len = u16::from_ne_bytes([header[6], header[7]]) as u64;
            if len < 8 {
                break;
            }
            if kind == PERF_RECORD_LOST && len >= 24 {
                // struct { u64 id; u64 lost; }
                let body = read(tail + 8, 16);
                lost += u64::from_ne_bytes(body[8..16].try_into().unwrap_or([0; 8]));
            }
            if kind == PERF_RECORD_SAMPLE && len >= 20 {
                let body = read(tail + 8, (len - 8) as usize);
                let pid = i32::from_ne_bytes(body[0..4].try_into().unwrap_or([0; 4]));
                let tid = i32::from_ne_bytes(body[4..8].try_into().unwrap_or([0; 4]));
                let raw_len = u32::from_ne_bytes(body[8..12].try_into().unwrap_or([0; 4])) as usize;
                if let Some(raw) = body.get(12..12 + raw_len) {
                    each(pid, tid, raw);
                }
            }
            tail += len;
        }
        tail_ptr.store(tail, Ordering::Release);
        lost
    }
}

/// Data pages of a ring of [`RING_BYTES`]: a power of two, as perf_event_open(2) requires.
fn ring_pages(page: usize) -> usize {
    (RING_BYTES / page.max(1)).max(1).next_power_of_two()
}

/// The online CPUs, from /sys/devices/system/cpu/online ("0-3,5").
fn online_cpus() -> Vec<i32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i32>().ok()),
        }
    }
    if out.is_empty() {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as i32;
        out.extend(0..n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_ENTER: &str = "name: sys_enter\nID: 443\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:long id;\toffset:8;\tsize:8;\tsigned:1;\n\
        \tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;\n\n\
        print fmt: \"NR %ld\"\n";

    /// The fds handed to the child are closed there (the pipe's only write end: its reader sees
    /// the end), ours at once, and the child is reaped: a watchdog's passes leave no zombies.
    #[test]
    fn fds_closed_elsewhere_are_closed_and_the_child_reaped() {
        let (read_end, write_end) = super::super::child::pipe().unwrap();
        let child = close_elsewhere(vec![write_end]).expect("a child");
        let mut pfd = libc::pollfd {
            fd: read_end.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 5000) };
        assert_eq!(ready, 1, "the write end is still open somewhere");
        assert_ne!(pfd.revents & libc::POLLHUP, 0, "{:#x}", pfd.revents);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{child}")).exists() {
            assert!(Instant::now() < deadline, "child {child} was not reaped");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn tracepoint_format() {
        let tp = parse_format(SYS_ENTER).unwrap();
        assert_eq!((tp.id, tp.nr_offset, tp.args_offset), (443, 8, 16));
        assert!(parse_format("name: x\nID: 3\n").is_none());
    }

    #[test]
    fn filters() {
        let f = filter(&[7, 271], &[10, 11, 14]);
        assert_eq!(
            f.to_str().unwrap(),
            "(id == 7 || id == 271) && ((common_pid >= 10 && common_pid <= 11) || common_pid == 14)"
        );
        let many: Vec<i32> = (0..1000).collect();
        assert_eq!(
            filter(&[7], &many).to_str().unwrap(),
            "(id == 7) && ((common_pid >= 0 && common_pid <= 999))"
        );
        let scattered: Vec<i32> = (0..1000).map(|i| i * 2).collect();
        assert_eq!(filter(&[7], &scattered).to_str().unwrap(), "(id == 7)");
        assert_eq!(ranges(&[5, 3, 4, 9, 11, 10]), vec![(3, 5), (9, 11)]);
    }

    #[test]
    fn cpu_lists() {
        assert!(!online_cpus().is_empty());
    }
}
