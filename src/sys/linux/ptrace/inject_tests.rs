//! Real processes, real ptrace. The targets are this test binary run again with
//! `PTYREAP_INJECT_ROLE` set (see `inject_target_role`; their code is in test_target.rs), so they
//! run in the aarch64 VM too.

use super::super::arch::{self, Regs};
use super::super::pidfd::Pidfd;
use super::super::procfs;
use super::raw;
use super::test_target;
use super::{errno_of, in_tracer_thread, AttachError, InjectError, StoppedProcess};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const ROLE: &str = "PTYREAP_INJECT_ROLE";
/// The test that runs [`inject_target_role`], for the target processes' command line.
pub(super) const ENTRY: &str = "sys::linux::ptrace::inject_tests::inject_target_role";
/// Only a guard against hangs, never an assertion about speed.
const PATIENCE: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const SLEEP_MS: u64 = 3000;

/// The entry point of the target processes; a no-op in a normal test run.
#[test]
fn inject_target_role() {
    if let Ok(role) = std::env::var(ROLE) {
        test_target::run(&role);
        std::process::exit(0);
    }
}

struct Target {
    child: Child,
    pid: i32,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Target {
    fn spawn(role: &str) -> Target {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([ENTRY, "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(l) = line.strip_prefix("@@ ") {
                    if tx.send(l.to_string()).is_err() {
                        break;
                    }
                } else if !line.trim().is_empty() {
                    eprintln!("target: {line}");
                }
            }
        });
        let pid = child.id() as i32;
        let stdin = child.stdin.take();
        Target {
            child,
            pid,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The next report starting with `prefix` (others are kept for `seen`).
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(_) => panic!("no '{prefix}' from the target; it said {:?}", self.seen),
            }
        }
    }

    fn send(&mut self, cmd: &str) {
        let w = self.stdin.as_mut().unwrap();
        writeln!(w, "{cmd}").unwrap();
        w.flush().unwrap();
    }

    fn pidfd(&self) -> (Pidfd, u64) {
        (
            Pidfd::open(self.pid).unwrap(),
            procfs::start_time(self.pid).unwrap(),
        )
    }

    fn stop(&self) -> StoppedProcess {
        let (fd, st) = self.pidfd();
        StoppedProcess::stop(&fd, st, STOP_TIMEOUT).unwrap()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=value` fields of a report line.
fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn nums(v: &str) -> Vec<i32> {
    v.split(',').map(|n| n.parse().unwrap()).collect()
}

fn read_proc(path: String) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// (tid, name, state letter) of every thread.
fn threads(pid: i32) -> Vec<(i32, String, char)> {
    let mut v: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_else(|_| Vec::new())
        .into_iter()
        .map(|tid| {
            let stat = read_proc(format!("/proc/{pid}/task/{tid}/stat"));
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].trim_start().chars().next())
                .unwrap_or('?');
            let name = read_proc(format!("/proc/{pid}/task/{tid}/comm"))
                .trim()
                .to_string();
            (tid, name, state)
        })
        .collect();
    v.sort();
    v
}

fn tid_of(pid: i32, name: &str) -> i32 {
    threads(pid).into_iter().find(|t| t.1 == name).unwrap().0
}

/// Wait until the threads named are asleep (in their blocking calls).
fn wait_asleep(pid: i32, names: &[&str]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let t = threads(pid);
        let asleep = |n: &&str| t.iter().any(|(_, name, st)| name == n && *st == 'S');
        // The leader (libtest's main thread, joining the test thread) always counts.
        let watched = |x: &&(i32, String, char)| x.0 == pid || names.contains(&x.1.as_str());
        let leader_asleep = t.iter().any(|x| x.0 == pid && x.2 == 'S');
        if names.iter().all(asleep) && leader_asleep {
            // Asleep in the kernel, not just preempted: the syscall file says which call.
            let in_call = t.iter().filter(watched).all(|x| {
                let sc = read_proc(format!("/proc/{pid}/task/{}/syscall", x.0));
                !sc.is_empty() && !sc.starts_with("running") && !sc.starts_with("-1")
            });
            if in_call {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "threads never fell asleep: {t:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tracer_pid(pid: i32, tid: i32) -> i32 {
    read_proc(format!("/proc/{pid}/task/{tid}/status"))
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn status_mask(pid: i32, key: &str) -> u64 {
    read_proc(format!("/proc/{pid}/status"))
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| u64::from_str_radix(v.trim_start_matches(':').trim(), 16).unwrap())
        .unwrap()
}

/// Every thread let go and running on: none traced, none in a tracing stop.
fn assert_untouched(pid: i32) {
    for (tid, name, st) in threads(pid) {
        assert_eq!(
            tracer_pid(pid, tid),
            0,
            "thread {tid} ({name}) still traced"
        );
        assert_ne!(st, 't', "thread {tid} ({name}) still stopped");
    }
}

fn tty_index(pid: i32, fd: i32) -> Option<u32> {
    read_proc(format!("/proc/{pid}/fdinfo/{fd}"))
        .lines()
        .find_map(|l| l.strip_prefix("tty-index:"))
        .map(|v| v.trim().parse().unwrap())
}

fn fd_path(pid: i32, fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn snapshot(p: &StoppedProcess) -> Vec<(i32, Regs, u64)> {
    p.tids()
        .iter()
        .map(|&t| (t, arch::get_regs(t).unwrap(), raw::get_sigmask(t).unwrap()))
        .collect()
}

const WORKERS: [&str; 6] = [
    "t-read",
    "t-sleep",
    "t-futex",
    "t-futex-to",
    "t-epoll",
    "t-spin",
];

/// The main scenario: a target with threads blocked in read, nanosleep, futex (with and
/// without a time-out) and epoll_wait, one spinning in user code, plus plain fds. One stop:
/// a call injected on *each* thread, single closes, close_range, dup3, openat; a signal sent
/// meanwhile. Then, from outside and from inside, everything is as it should be.
#[test]
fn inject_blocked_threads_resume_exactly() {
    let mut t = Target::spawn("blocked");
    let ready = fields(&t.expect("ready"));
    let null = nums(&ready["null"]);
    let run = nums(&ready["run"]);
    let pty = nums(&ready["pty"]);
    let pid = t.pid;
    let mut names = WORKERS[..5].to_vec();
    names.push("main");
    wait_asleep(pid, &names);
    let keep: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .map(|fd| (fd, fd_path(pid, fd).unwrap_or_default()))
        .collect();

    let mut p = t.stop();
    // SAFETY: plain kill(2) of our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    let all: Vec<i32> = threads(pid).iter().map(|x| x.0).collect();
    assert_eq!(p.tids(), &all[..], "every thread held");
    for (tid, name, st) in threads(pid) {
        assert_eq!(st, 't', "thread {tid} ({name}) not in a tracing stop");
    }
    let before = snapshot(&p);

    // One call on each thread, by name; the read-blocked main thread gets the real work.
    for name in WORKERS {
        let tid = tid_of(pid, name);
        let mut inj = p.injector_on(tid).unwrap();
        assert_eq!(
            inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(),
            pid as i64,
            "{name}"
        );
        inj.finish().unwrap();
    }
    let mut inj = p.injector_on(tid_of(pid, "main")).unwrap();
    assert!(!inj.seccomp_suspended(), "no filter to suspend");
    assert_eq!(inj.close(null[0]).unwrap(), 0);
    assert_eq!(errno_of(inj.close(null[0]).unwrap()), Some(libc::EBADF));
    assert_eq!(inj.close_range(run[0] as u32, run[1] as u32, 0).unwrap(), 0);
    assert_eq!(inj.dup3(pty[0], pty[1], 0).unwrap(), pty[1] as i64);
    assert_eq!(
        errno_of(inj.dup3(pty[2], pty[2], 0).unwrap()),
        Some(libc::EINVAL)
    );
    let opened = inj.open("/dev/null", libc::O_RDWR, 0).unwrap();
    assert!(opened >= 0, "openat: {opened}");
    let opened = opened as i32;
    // Scratch memory is put back: read it now, compare after finish.
    let top = inj.stack_scratch();
    assert!(top != 0);
    inj.finish().unwrap();

    let after = snapshot(&p);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.0, a.0);
        assert!(
            a.1.same_state_as(&b.1),
            "thread {}: {:?} -> {:?}",
            b.0,
            b.1,
            a.1
        );
        assert_eq!(b.2, a.2, "signal mask of thread {} changed", b.0);
    }
    let stopped = p.resume().unwrap();
    eprintln!("inject: blocked-threads scenario stopped {stopped:?}");
    assert_untouched(pid);

    // From outside: exactly the intended fds changed.
    let closed: Vec<i32> = [null[0]].into_iter().chain(run[0]..=run[1]).collect();
    for (fd, path) in keep {
        if fd == opened {
            // openat took the lowest free number, one we had just closed.
            assert!(closed.contains(&fd), "openat gave {fd}");
        } else if closed.contains(&fd) {
            assert_eq!(fd_path(pid, fd), None, "fd {fd} still open");
        } else if fd == pty[1] {
            assert_eq!(
                tty_index(pid, fd),
                tty_index(pid, pty[0]),
                "dup3 over fd {fd}"
            );
        } else {
            assert_eq!(fd_path(pid, fd), Some(path), "fd {fd} changed");
        }
    }
    assert_eq!(fd_path(pid, opened).as_deref(), Some("/dev/null"));

    // From inside: every blocked call went on as if nothing had happened.
    t.send("data hello");
    let r = fields(&t.expect("read"));
    assert_eq!((r["n"].as_str(), r["data"].as_str()), ("5", "hello"));
    let s = fields(&t.expect("slept"));
    assert_eq!(s["ret"], "0", "nanosleep: {s:?}");
    assert!(
        s["ms"].parse::<u64>().unwrap() >= SLEEP_MS,
        "nanosleep cut short: {s:?}"
    );
    t.send("status");
    let st = fields(&t.expect("status"));
    assert_eq!(
        st["usr1"], "1",
        "the signal sent during the stop was delivered once"
    );
    assert_eq!(
        st["futex_early"], "0",
        "futex waiters woke without being woken"
    );
    t.send("wake");
    for _ in 0..2 {
        let f = fields(&t.expect("futex"));
        assert_eq!(
            (f["early"].as_str(), f["woken"].as_str()),
            ("0", "1"),
            "{f:?}"
        );
    }
    t.send("event");
    let e = fields(&t.expect("epoll"));
    // Documented: any ptrace stop makes a blocked epoll_wait return EINTR (signal(7)).
    assert!(e["eintr"].parse::<u32>().unwrap() >= 1, "{e:?}");
    assert_eq!(e["events"], "1");
    t.send("status");
    let st = fields(&t.expect("status"));
    assert_eq!(
        st["spin_ok"], "1",
        "the spinning thread's registers were disturbed"
    );
}

/// Registers of threads blocked in restartable calls are identical in a second stop: the
/// kernel's restart went exactly as without us.
#[test]
fn inject_registers_identical_across_stops() {
    let t = Target::spawn("blocked");
    let pid = t.pid;
    let mut t = t;
    t.expect("ready");
    wait_asleep(pid, &["t-read", "t-futex", "main"]);
    let main = tid_of(pid, "main");
    let watched = [tid_of(pid, "t-read"), tid_of(pid, "t-futex"), main, pid];
    let regs = |p: &StoppedProcess| -> Vec<Regs> {
        watched
            .iter()
            .map(|&w| {
                assert!(p.tids().contains(&w));
                arch::get_regs(w).unwrap()
            })
            .collect()
    };
    let mut p = t.stop();
    let first = regs(&p);
    {
        let mut inj = p.injector_on(main).unwrap();
        assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
    }
    p.resume().unwrap();
    wait_asleep(pid, &["t-read", "t-futex", "main"]);
    let p = t.stop();
    assert_eq!(regs(&p), first);
    drop(p);
    assert_untouched(pid);
}

/// Many PTY masters closed in one stop, one call each, then with close_range: prints the
/// cost (asserts only the result).
#[test]
fn inject_many_closes_timing() {
    let mut t = Target::spawn("many");
    let r = fields(&t.expect("ready"));
    let (a, b) = (nums(&r["a"]), nums(&r["b"]));
    let pid = t.pid;
    wait_asleep(pid, &["main"]);
    let before = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();

    let t0 = Instant::now();
    let mut p = t.stop();
    let attach = t0.elapsed();
    let mut inj = p.injector().unwrap();
    // The bare cost of one injected call, without the kernel's work for a close.
    let t0 = Instant::now();
    for _ in 0..490 {
        assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
    }
    let bare = t0.elapsed() / 490;
    let t1 = Instant::now();
    for fd in a[0]..=a[1] {
        assert_eq!(inj.close(fd).unwrap(), 0);
    }
    let singles = t1.elapsed();
    inj.finish().unwrap();
    let stopped_singles = p.resume().unwrap();

    let mut p = t.stop();
    let mut inj = p.injector().unwrap();
    let t2 = Instant::now();
    assert_eq!(inj.close_range(b[0] as u32, b[1] as u32, 0).unwrap(), 0);
    let ranged = t2.elapsed();
    inj.finish().unwrap();
    let stopped_range = p.resume().unwrap();

    let n = (a[1] - a[0] + 1) as u32;
    let m = (b[1] - b[0] + 1) as u32;
    let after = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert_eq!(before - after, (n + m) as usize);
    eprintln!(
        "inject timing: attach {attach:?}; one injected getpid {bare:?}; {n} single closes {singles:?} ({:?} each), \
         target stopped {stopped_singles:?}; close_range of {m} {ranged:?}, target stopped \
         {stopped_range:?}",
        singles / n
    );
    assert_untouched(pid);
}

/// Threads that create threads all the time: every stop holds every thread, and the target
/// runs on.
#[test]
fn inject_threads_created_while_attaching() {
    let mut t = Target::spawn("spawner");
    t.expect("ready");
    let pid = t.pid;
    for _ in 0..20 {
        let mut p = t.stop();
        let held = p.tids().to_vec();
        for (tid, name, st) in threads(pid) {
            // A thread exiting at that moment (in do_exit, then a zombie until reaped) cannot
            // be held, and never runs user code again.
            assert!(
                (held.contains(&tid) && st == 't')
                    || st == 'Z'
                    || st == 'X'
                    || crate::sys::linux::procfs::thread_exiting(pid, tid),
                "thread {tid} ({name}, {st}) not held: {held:?}"
            );
        }
        let mut inj = p.injector().unwrap();
        assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
        drop(inj);
        p.resume().unwrap();
    }
    assert_untouched(pid);
    t.send("status");
    let n1: u64 = fields(&t.expect("status"))["spawned"].parse().unwrap();
    loop {
        t.send("status");
        let n2: u64 = fields(&t.expect("status"))["spawned"].parse().unwrap();
        if n2 > n1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A start time that does not match: nothing is touched.
#[test]
fn inject_pid_reuse_refused() {
    let mut t = Target::spawn("blocked");
    t.expect("ready");
    let (fd, st) = t.pidfd();
    match StoppedProcess::stop(&fd, st + 1, STOP_TIMEOUT) {
        Err(AttachError::PidReused { found, .. }) => assert_eq!(found, st),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("stopped a process with another start time"),
    }
    assert_untouched(t.pid);
    let me = Pidfd::open(std::process::id() as i32).unwrap();
    let own = StoppedProcess::stop(&me, 0, STOP_TIMEOUT);
    assert!(matches!(own, Err(AttachError::OwnProcess { .. })));
}

/// A panic in the middle of an injection (registers changed, mask blocked, scratch written):
/// unwinding restores and detaches everything, and the target behaves.
#[test]
fn inject_drop_guard_on_panic() {
    let mut t = Target::spawn("blocked");
    let ready = fields(&t.expect("ready"));
    let null = nums(&ready["null"]);
    let pid = t.pid;
    wait_asleep(pid, &["t-read", "t-sleep", "main"]);
    let mut p = t.stop();
    let before = snapshot(&p);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut inj = p.injector_on(tid_of(pid, "main")).unwrap();
        inj.push_scratch(b"/dev/null\0").unwrap();
        assert_eq!(inj.close(null[1]).unwrap(), 0);
        panic!("injected failure");
    }));
    assert!(r.is_err());
    let after = snapshot(&p);
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((b.0, b.2), (a.0, a.2), "thread {} mask not restored", b.0);
        assert!(
            a.1.same_state_as(&b.1),
            "thread {}: {:?} -> {:?}",
            b.0,
            b.1,
            a.1
        );
    }
    drop(p);
    assert_untouched(pid);
    assert_eq!(fd_path(pid, null[1]), None);
    t.send("data x");
    assert_eq!(fields(&t.expect("read"))["data"], "x");
    assert_eq!(fields(&t.expect("slept"))["ret"], "0");
}

/// The target is killed while we hold it: a clear error, no hang, no panic.
#[test]
fn inject_target_killed_midway() {
    let mut t = Target::spawn("blocked");
    t.expect("ready");
    let pid = t.pid;
    let mut p = t.stop();
    let mut inj = p.injector().unwrap();
    assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
    // SAFETY: plain kill(2) of our child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut r = Ok(0);
    for _ in 0..1000 {
        r = inj.syscall(arch::nr::GETPID, [0; 6]);
        if r.is_err() {
            break;
        }
    }
    assert!(matches!(r, Err(InjectError::Exited)), "{r:?}");
    drop(inj);
    let _ = p.resume();
    let (_, _) = (t.child.kill(), t.child.wait());
}

/// A thread that cannot stop (a vfork parent waits killably, which PTRACE_INTERRUPT does not
/// wake): a time-out, everything let go, the target runs on once the child is done.
#[test]
fn inject_timeout_backs_out() {
    let mut t = Target::spawn("vfork");
    t.expect("vforking");
    let pid = t.pid;
    wait_asleep(pid, &["t-sleep"]);
    // The vfork parent is in D state (killable).
    let deadline = Instant::now() + PATIENCE;
    let main = tid_of(pid, "main");
    while !threads(pid).iter().any(|x| x.0 == main && x.2 == 'D') {
        assert!(Instant::now() < deadline, "{:?}", threads(pid));
        std::thread::sleep(Duration::from_millis(5));
    }
    let (fd, st) = t.pidfd();
    let r =
        in_tracer_thread(|| StoppedProcess::stop(&fd, st, Duration::from_millis(300)).map(drop));
    match r {
        Err(AttachError::Timeout { tid, .. }) => assert_eq!(tid, main),
        other => panic!("{other:?}"),
    }
    t.expect("vfork done");
    assert_untouched(pid);
    t.send("status");
    t.expect("status");
}

/// A single thread in ppoll / epoll_pwait with a temporary signal mask: its real mask must
/// come back afterwards (PTRACE_SETSIGMASK would have lost it).
#[test]
fn inject_keeps_temporary_signal_masks() {
    for call in ["ppoll", "epoll"] {
        let mut t = Target::spawn(&format!("tempmask:{call}"));
        let ready = fields(&t.expect("ready"));
        let pid = t.pid;
        wait_asleep(pid, &["main"]);
        let mut p = t.stop();
        let mut inj = p.injector().unwrap();
        assert_eq!(inj.close(nums(&ready["null"])[0]).unwrap(), 0, "{call}");
        drop(inj);
        p.resume().unwrap();
        t.send("mask");
        let m = fields(&t.expect("mask"));
        assert_eq!(
            m["now"], ready["mask"],
            "{call}: the thread's signal mask changed"
        );
    }
}

/// SIGTRAP ignored or handled: calls run between syscall stops (nothing is ever single-stepped),
/// the disposition stays, and the handler is neither reset nor run.
#[test]
fn inject_sigtrap_dispositions_kept() {
    for how in ["ignore", "handler"] {
        let mut t = Target::spawn(&format!("sigtrap:{how}"));
        let ready = fields(&t.expect("ready"));
        let pid = t.pid;
        wait_asleep(pid, &["main"]);
        let trap = 1u64 << (libc::SIGTRAP - 1);
        let key = if how == "ignore" { "SigIgn" } else { "SigCgt" };
        assert_ne!(status_mask(pid, key) & trap, 0);
        let mut p = t.stop();
        let mut inj = p.injector().unwrap();
        assert_eq!(inj.close(nums(&ready["null"])[0]).unwrap(), 0);
        assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
        drop(inj);
        p.resume().unwrap();
        assert_ne!(
            status_mask(pid, key) & trap,
            0,
            "{how}: SIGTRAP disposition changed"
        );
        t.send("status");
        assert_eq!(fields(&t.expect("status"))["traps"], "0", "{how}");
    }
}

/// A target that runs a new program again and again (from a side thread, so the exec can
/// come from a thread not yet seized): every attempt ends, in a stop or a clear error, and
/// nothing stays traced.
///
/// Ignored: about one run in thirty hits the kernel's exec/ptrace deadlock. The execve holds
/// the target's cred_guard_mutex in de_thread while it waits for a thread we traced (and it
/// killed) to be reaped by us, and our PTRACE_SEIZE of another thread of it blocks on that
/// mutex. gdb and strace share it; the way out is a second ptyreap thread reaping our dead
/// tracees while an attach is under way (waitpid works from any thread of the tracer's
/// process). Run with --ignored.
#[test]
#[ignore]
fn inject_exec_during_attach() {
    let mut t = Target::spawn("exec");
    t.expect("ready");
    let pid = t.pid;
    let (mut held, mut execs) = (0, 0);
    for _ in 0..40 {
        let Ok(fd) = Pidfd::open(pid) else { break };
        let Ok(st) = procfs::start_time(pid) else {
            break;
        };
        match StoppedProcess::stop(&fd, st, STOP_TIMEOUT) {
            Ok(mut p) => {
                held += 1;
                if let Ok(mut inj) = p.injector() {
                    assert_eq!(inj.syscall(arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
                }
                p.resume().unwrap();
            }
            Err(AttachError::Exec { .. }) => execs += 1,
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    eprintln!("inject: exec loop: {held} stops, {execs} exec refusals");
    // SAFETY: stopping our child for a consistent look.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    assert_untouched(pid);
}

/// Only a SIGTRAP or SIGSYS the kernel queued since the thread was taken counts as ours; the
/// app's own (sent with kill, SI_USER = 0, or queued before) never does.
#[test]
fn inject_own_signals_are_told_from_the_apps() {
    use super::inject::own_signals;
    const TRAP_BRKPT: i32 = 1;
    const SYS_SECCOMP: i32 = 1;
    let before = [(libc::SIGUSR1, 0), (libc::SIGTRAP, TRAP_BRKPT)];
    let now = [
        (libc::SIGUSR1, 0),
        (libc::SIGTRAP, TRAP_BRKPT),
        (libc::SIGSYS, SYS_SECCOMP),
        (libc::SIGTRAP, 0),
        (libc::SIGUSR2, 0),
    ];
    assert_eq!(
        own_signals(&before, &now),
        vec![(libc::SIGSYS, SYS_SECCOMP)]
    );
    let twice = [(libc::SIGTRAP, TRAP_BRKPT), (libc::SIGTRAP, TRAP_BRKPT)];
    assert_eq!(
        own_signals(&before, &twice),
        vec![(libc::SIGTRAP, TRAP_BRKPT)],
        "the one queued before stays the app's"
    );
    assert!(own_signals(&now, &now).is_empty());
}

/// The kernel's rseq fix-up: inside [start, start + post_commit_offset) go to the abort handler.
#[test]
fn inject_rseq_abort_follows_the_kernel() {
    use super::inject::RseqCs;
    let mut raw = [0u8; 32];
    raw[8..16].copy_from_slice(&0x1000u64.to_ne_bytes());
    raw[16..24].copy_from_slice(&0x40u64.to_ne_bytes());
    raw[24..32].copy_from_slice(&0x2004u64.to_ne_bytes());
    let cs = RseqCs::from_bytes(&raw);
    assert_eq!(cs.abort_for(0x1000), Some(0x2004));
    assert_eq!(cs.abort_for(0x103f), Some(0x2004));
    assert_eq!(
        cs.abort_for(0x1040),
        None,
        "the commit instruction is past the section"
    );
    assert_eq!(cs.abort_for(0xfff), None);
    assert_eq!(cs.abort_for(0x2004), None);
}
