//! Watching the targets' poll()/select() calls over time, without touching them: the look that
//! catches a loop which polls a master only now and then (socat's `wait-slave` polls once a
//! second and sleeps in between; a busy loop spinning on a hung-up master polls all the time).
//!
//! Why perf tracepoints and not ptrace: any ptrace stop is visible to the target (a sleeping
//! `epoll_wait` or `sigtimedwait` returns EINTR, and while a thread is traced the kernel queues
//! the signals it would have discarded as ignored, e.g. SIGCHLD at its default). The syscall
//! tracepoints (`syscalls:sys_enter_poll`, `ppoll`, `select`, `pselect6`) report each call's
//! arguments as it is entered, as `perf trace` does, and change nothing the target can observe:
//! no stop, no signal, no delay beyond the tracepoint itself. The pollfd array or fd sets are then
//! read from the target's memory with `process_vm_readv`, right after the sample arrives (the
//! array of a call that sleeps or returns at once is still in place).
//!
//! One window for every target at once: a per-CPU event for each tracepoint, filtered in the
//! kernel to the targets' threads, all feeding one ring buffer per CPU. epoll is not watched
//! here: an epoll set's entries are read from its fdinfo at any moment (watchers.rs).
//!
//! The tracepoint ids come from tracefs. Where it is not mounted, a detached mount of it is made
//! with `fsopen`/`fsmount` (visible to no one, gone when its fd is closed): nothing on the machine
//! changes. Needs root (or CAP_PERFMON and CAP_SYS_ADMIN); where the look is impossible the
//! reason is returned, and verdicts say what could not be seen.

use super::watchers::PollCall;
use crate::model::PollLook;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Each distinct call (thread, array address, size) is read from memory this often at most: a
/// busy loop makes thousands of identical calls.
const READS_PER_CALL: u32 = 3;
/// Ring buffer data pages per CPU (a power of two).
const RING_PAGES: usize = 64;
/// A longer filter than this goes to the kernel unfiltered (its limit is a page).
const MAX_FILTER: usize = 3000;

/// Watches the poll-family calls of every thread of `pids` for `window`. Returns, per pid and fd,
/// what was seen polling it; `unavailable` says why there was no look.
pub fn observe(pids: &[i32], window: Duration) -> PollLook {
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
    match watch(pids, window) {
        Ok(seen) => look.seen = seen,
        Err(why) => look.unavailable = Some(why),
    }
    look
}

type Seen = BTreeMap<i32, BTreeMap<i32, Vec<String>>>;

/// One traced call kind: its tracepoint id and where its arguments sit in the raw sample.
struct Tracepoint {
    id: u16,
    call: PollCall,
    arg_offsets: Vec<usize>,
}

fn watch(pids: &[i32], window: Duration) -> Result<Seen, String> {
    let tracepoints = tracepoints()?;
    if tracepoints.is_empty() {
        return Err("the kernel has no syscall tracepoints for poll()/select()".into());
    }
    let mut tids = Vec::new();
    for &pid in pids {
        tids.extend(super::procfs::list_tasks(pid).unwrap_or_default());
    }
    let filter = tids
        .iter()
        .map(|t| format!("common_pid == {t}"))
        .collect::<Vec<_>>()
        .join(" || ");
    let filter = (filter.len() <= MAX_FILTER)
        .then(|| CString::new(filter).ok())
        .flatten();
    let rings = open_rings(&tracepoints, filter.as_ref())?;
    let wanted: HashSet<i32> = pids.iter().copied().collect();
    let by_id: HashMap<u16, &Tracepoint> = tracepoints.iter().map(|t| (t.id, t)).collect();
    let mut calls: HashMap<(i32, i32, PollCall, u64, u64), u32> = HashMap::new();
    let mut seen: HashMap<(i32, i32, i32, PollCall), u32> = HashMap::new();
    let deadline = Instant::now() + window;
    loop {
        for ring in &rings {
            ring.drain(|pid, raw| {
                if !wanted.contains(&pid) || raw.len() < 8 {
                    return;
                }
                let id = u16::from_ne_bytes([raw[0], raw[1]]);
                let tid = i32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
                let Some(tp) = by_id.get(&id) else { return };
                let mut args = [0u64; 6];
                for (slot, &off) in args.iter_mut().zip(&tp.arg_offsets) {
                    if let Some(b) = raw.get(off..off + 8) {
                        *slot = u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
                    }
                }
                let n = calls
                    .entry((pid, tid, tp.call, args[0], args[1]))
                    .or_default();
                *n += 1;
                if *n > READS_PER_CALL {
                    // the same call again: counted against every fd it was seen with
                    for ((p, t, _, c), count) in seen.iter_mut() {
                        if *p == pid && *t == tid && *c == tp.call {
                            *count += 1;
                        }
                    }
                    return;
                }
                if let Some(fds) = tp.call.read_fds(pid, &args) {
                    for fd in fds {
                        *seen.entry((pid, tid, fd, tp.call)).or_default() += 1;
                    }
                }
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
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
    let mut out = Seen::new();
    let mut keys: Vec<_> = seen.into_iter().collect();
    keys.sort();
    let secs = crate::duration::human_precise(window);
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
    Ok(out)
}

/// The poll-family tracepoints this kernel has, from tracefs.
fn tracepoints() -> Result<Vec<Tracepoint>, String> {
    let (dir, _mount) = tracefs_events()?;
    let mut out = Vec::new();
    for (name, call) in PollCall::TRACED {
        let Ok(format) = std::fs::read_to_string(format!("{dir}/sys_enter_{name}/format")) else {
            continue; // aarch64 has no poll and select, only ppoll and pselect6
        };
        if let Some(tp) = parse_format(&format, *call) {
            out.push(tp);
        }
    }
    Ok(out)
}

/// The `events/syscalls` directory of tracefs, and the detached mount that holds it open when it
/// had to be made.
fn tracefs_events() -> Result<(String, Option<OwnedFd>), String> {
    for dir in [
        "/sys/kernel/tracing/events/syscalls",
        "/sys/kernel/debug/tracing/events/syscalls",
    ] {
        if std::path::Path::new(dir).join("sys_enter_ppoll").exists() {
            return Ok((dir.to_string(), None));
        }
    }
    let mount = detached_tracefs().map_err(|e| {
        format!("tracefs is not mounted, and a private mount of it failed ({e}): run as root")
    })?;
    let dir = format!("/proc/self/fd/{}/events/syscalls", mount.as_raw_fd());
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

/// A tracepoint's id and argument offsets from its `format` file: the fields after the common
/// ones and `__syscall_nr`, in order (each a long on 64-bit kernels).
fn parse_format(format: &str, call: PollCall) -> Option<Tracepoint> {
    let id = format
        .lines()
        .find_map(|l| l.strip_prefix("ID:"))?
        .trim()
        .parse()
        .ok()?;
    let mut arg_offsets = Vec::new();
    for line in format.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let name = rest.split(';').next()?.rsplit(' ').next()?;
        if name.starts_with("common_") || name == "__syscall_nr" {
            continue;
        }
        let offset = rest
            .split(';')
            .find_map(|p| p.trim().strip_prefix("offset:"))?
            .parse()
            .ok()?;
        let size: usize = rest
            .split(';')
            .find_map(|p| p.trim().strip_prefix("size:"))?
            .parse()
            .ok()?;
        if size != 8 {
            return None;
        }
        arg_offsets.push(offset);
    }
    (!arg_offsets.is_empty()).then_some(Tracepoint {
        id,
        call,
        arg_offsets,
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
const PERF_EVENT_IOC_SET_OUTPUT: libc::c_ulong = 0x2405;
const PERF_EVENT_IOC_SET_FILTER: libc::c_ulong = 0x4008_2406;
const PERF_RECORD_SAMPLE: u32 = 9;
/// `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;

/// One CPU's ring buffer, fed by every tracepoint's event on that CPU; unmapped on drop (the
/// events close with their fds).
struct Ring {
    fd: OwnedFd,
    _outputs: Vec<OwnedFd>,
    base: *mut u8,
    len: usize,
    page: usize,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in open_rings.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn open_rings(tracepoints: &[Tracepoint], filter: Option<&CString>) -> Result<Vec<Ring>, String> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut rings = Vec::new();
    for cpu in online_cpus() {
        let mut fds = Vec::new();
        for tp in tracepoints {
            let fd = open_event(tp.id, cpu).map_err(|e| match e.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    "perf_event_open was refused: run as root (or with CAP_PERFMON)".to_string()
                }
                _ => format!("perf_event_open failed: {e}"),
            })?;
            if let Some(f) = filter {
                // SAFETY: the filter is a NUL-terminated string.
                unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_SET_FILTER, f.as_ptr()) };
            }
            fds.push(fd);
        }
        if fds.is_empty() {
            continue;
        }
        let fd = fds.remove(0);
        let len = page * (1 + RING_PAGES);
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
        let mut ring = Ring {
            fd,
            _outputs: Vec::new(),
            base: base.cast(),
            len,
            page,
        };
        // the other tracepoints of this CPU write into the same (now mapped) buffer
        for other in &fds {
            // SAFETY: both are perf event fds on the same CPU; the target has a buffer.
            let r = unsafe {
                libc::ioctl(
                    other.as_raw_fd(),
                    PERF_EVENT_IOC_SET_OUTPUT,
                    ring.fd.as_raw_fd(),
                )
            };
            if r != 0 {
                return Err(format!(
                    "perf: cannot share a ring buffer: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        ring._outputs = fds;
        rings.push(ring);
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
    fn drain(&self, mut each: impl FnMut(i32, &[u8])) {
        use std::sync::atomic::{AtomicU64, Ordering};
        // SAFETY: data_head/data_tail are u64 fields of the mapped control page, shared with
        // the kernel; accessed atomically as perf_event_open(2) prescribes.
        let head_ptr = unsafe { &*(self.base.add(DATA_HEAD) as *const AtomicU64) };
        let tail_ptr = unsafe { &*(self.base.add(DATA_TAIL) as *const AtomicU64) };
        let head = head_ptr.load(Ordering::Acquire);
        let mut tail = tail_ptr.load(Ordering::Relaxed);
        let size = (RING_PAGES * self.page) as u64;
        // SAFETY: the data area follows the control page, `size` bytes long.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(self.page), size as usize) };
        let byte = |at: u64| data[(at % size) as usize];
        let read =
            |at: u64, len: usize| -> Vec<u8> { (0..len as u64).map(|i| byte(at + i)).collect() };
        while tail + 8 <= head {
            let header = read(tail, 8);
            let kind = u32::from_ne_bytes(header[0..4].try_into().unwrap_or([0; 4]));
            let len = u16::from_ne_bytes([header[6], header[7]]) as u64;
            if len < 8 {
                break;
            }
            if kind == PERF_RECORD_SAMPLE && len >= 20 {
                let body = read(tail + 8, (len - 8) as usize);
                let pid = i32::from_ne_bytes(body[0..4].try_into().unwrap_or([0; 4]));
                let raw_len = u32::from_ne_bytes(body[8..12].try_into().unwrap_or([0; 4])) as usize;
                if let Some(raw) = body.get(12..12 + raw_len) {
                    each(pid, raw);
                }
            }
            tail += len;
        }
        tail_ptr.store(tail, Ordering::Release);
    }
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

    const PPOLL: &str = "name: sys_enter_ppoll\nID: 904\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:struct pollfd * ufds;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:unsigned int nfds;\toffset:24;\tsize:8;\tsigned:0;\n\
        \tfield:struct __kernel_timespec * tsp;\toffset:32;\tsize:8;\tsigned:0;\n\n\
        print fmt: \"ufds: 0x%08lx\"\n";

    #[test]
    fn tracepoint_formats() {
        let tp = parse_format(PPOLL, PollCall::Ppoll).unwrap();
        assert_eq!(tp.id, 904);
        assert_eq!(tp.arg_offsets, vec![16, 24, 32]);
        assert!(parse_format("name: x\n", PollCall::Ppoll).is_none());
    }

    #[test]
    fn cpu_lists() {
        assert!(!online_cpus().is_empty());
    }
}
