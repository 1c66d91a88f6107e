//! Do no harm: the configurations where a reap used to kill or damage its target (seccomp
//! filters that kill, trap or notify, frozen cgroups, a process sharing the fd table,
//! close-on-exec masters), each with a real target (`ptyreap-victim`) and a real reap. Every test
//! checks that the target lives on afterwards — not killed, not stopped or traced, every thread's
//! signal mask and the process's dispositions as they were, none of ptyreap's signals delivered,
//! its main thread still answering a signal — that a claimed release is true, and the exit code
//! and message.

use crate::support::{self, ptyreap, require_root, Output, Victim};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) fn reap(pid: i32, extra: &[&str]) -> Output {
    let pid = pid.to_string();
    let mut args = vec!["--pid", &pid, "--min-idle", "0", "--yes", "--json"];
    // the engine is under test here: close, unless a test names its method
    if !extra.contains(&"--method") {
        args.extend_from_slice(&["--method", "close"]);
    }
    args.extend_from_slice(extra);
    ptyreap(&args)
}

/// (fd, result, detail) of every master row.
pub(crate) fn rows(out: &Output) -> Vec<(i64, String, String)> {
    let doc = out.json();
    doc["targets"][0]["masters"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {out:?}"))
        .iter()
        .map(|m| {
            (
                m["fd"].as_i64().unwrap(),
                m["result"].as_str().unwrap_or("").to_string(),
                m["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn all_closed(out: &Output) {
    assert_eq!(out.code, 0, "{out:?}");
    for (fd, result, detail) in rows(out) {
        assert_eq!(result, "closed", "fd {fd}: {detail}; {out:?}");
    }
}

#[test]
fn seccomp_filters_are_suspended_for_our_calls() {
    if !require_root() {
        return;
    }
    let cases: [&[&str]; 7] = [
        &["--seccomp", "kill"],
        &["--seccomp", "trap"],
        &["--seccomp", "trap", "--sigtrap", "handler"],
        &["--seccomp", "trap", "--sigtrap", "ignore"],
        &["--seccomp", "errno"],
        &["--seccomp", "notify"],
        &["--seccomp", "log"],
    ];
    for args in cases {
        let mut v = Victim::spawn(args);
        let before = v.signal_state();
        let out = reap(v.pid, &[]);
        all_closed(&out);
        let status = v.assert_healthy(&before);
        assert_eq!(status["open"], "", "{args:?}: masters left: {status:?}");
        assert_eq!(
            status["notified"], "0",
            "{args:?}: our calls reached the supervisor"
        );
        assert!(v.masters_open().is_empty(), "{args:?}");
    }
}

/// As when ptyreap may not suspend filters (it runs sandboxed itself): each call is judged by
/// the target's own filters first, and only made when they allow it.
#[test]
fn seccomp_filters_are_evaluated_when_they_cannot_be_suspended() {
    if !require_root() {
        return;
    }
    let reap_no_suspend = |pid: i32| {
        support::reap_closing_with(pid, &["--json"], |cmd| {
            cmd.env("PTYREAP_TEST_NO_SUSPEND_SECCOMP", "1");
        })
    };
    let refused = [
        ("kill", "would kill the process"),
        ("trap", "would trap it (SIGSYS)"),
        ("errno", "would fail it with errno 1"),
        ("notify", "would hand it to a supervisor"),
    ];
    for (action, says) in refused {
        let mut v = Victim::spawn(&["--seccomp", action]);
        let before = v.signal_state();
        let out = reap_no_suspend(v.pid);
        assert_eq!(out.code, 1, "{action}: {out:?}");
        for (fd, result, detail) in rows(&out) {
            assert_eq!(result, "failed", "{action}: fd {fd}");
            assert!(
                detail.contains("seccomp filter") && detail.contains(says),
                "{action}: fd {fd}: {detail}"
            );
        }
        let status = v.assert_healthy(&before);
        assert_eq!(status["open"], "100,101", "{action}: {status:?}");
        assert_eq!(status["notified"], "0", "{action}");
    }
    // LOG runs the call; a filter on close_range alone leaves close, one per fd.
    for args in [
        &["--seccomp", "log"][..],
        &["--seccomp", "kill", "--filter-calls", "close_range"][..],
    ] {
        let mut v = Victim::spawn(args);
        let before = v.signal_state();
        let out = reap_no_suspend(v.pid);
        all_closed(&out);
        let status = v.assert_healthy(&before);
        assert_eq!(status["open"], "", "{args:?}");
    }
}

/// A ptyreap that itself runs under a seccomp filter may neither suspend nor read the target's:
/// it refuses rather than inject blind.
#[test]
fn seccomp_filters_that_cannot_be_read_are_refused() {
    if !require_root() {
        return;
    }
    let mut v = Victim::spawn(&["--seccomp", "trap"]);
    let before = v.signal_state();
    let out = support::reap_closing_with(v.pid, &["--json"], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only prctl and seccomp between fork and exec, on a static program.
        unsafe { cmd.pre_exec(allow_all_filter) };
    });
    assert_eq!(out.code, 1, "{out:?}");
    for (fd, result, detail) in rows(&out) {
        assert_eq!(result, "failed", "fd {fd}");
        assert!(
            detail.contains("neither suspend") && detail.contains("nor read"),
            "fd {fd}: {detail}"
        );
    }
    let status = v.assert_healthy(&before);
    assert_eq!(status["open"], "100,101");
}

/// Puts the calling process under a seccomp filter that allows everything.
fn allow_all_filter() -> std::io::Result<()> {
    static ALLOW: [libc::sock_filter; 1] = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0x7fff_0000,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: ALLOW.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl and seccomp with a valid, static program.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_seccomp, 1, 0, &prog as *const libc::sock_fprog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn strict_seccomp_is_refused_before_anything_is_touched() {
    if !require_root() {
        return;
    }
    let mut v = Victim::spawn(&["--strict-thread"]);
    assert!(support::wait_for(Duration::from_secs(5), || v
        .thread_named("strict")
        .is_some_and(|t| std::fs::read_to_string(format!(
            "/proc/{}/task/{t}/status",
            v.pid
        ))
        .unwrap_or_default()
        .contains("Seccomp:\t1"))));
    let before = v.signal_state();
    let out = reap(v.pid, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("strict seccomp mode") && out.stderr.contains("nothing was changed"),
        "{out:?}"
    );
    let status = v.assert_healthy(&before);
    assert_eq!(status["open"], "100,101");
}

/// A cgroup of our own for one test, frozen on request, thawed and removed on drop.
pub(crate) struct Cgroup {
    dir: PathBuf,
    v2: bool,
    root: PathBuf,
}

impl Cgroup {
    pub(crate) fn new(v2: bool, pid: i32) -> Cgroup {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = mounts
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mount_point = left.split(' ').nth(4)?;
                let mut r = right.split(' ');
                let fstype = r.next()?;
                let opts = r.nth(1).unwrap_or("");
                let ok = if v2 {
                    fstype == "cgroup2"
                } else {
                    fstype == "cgroup" && opts.split(',').any(|o| o == "freezer")
                };
                ok.then(|| PathBuf::from(mount_point))
            })
            .next()
            .unwrap_or_else(|| panic!("no {} mounted", if v2 { "cgroup2" } else { "v1 freezer" }));
        let dir = root.join(format!("ptyreap-test-{}-{pid}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        Cgroup { dir, v2, root }
    }

    /// Asks for the freeze (or thaw) without waiting for it to complete.
    pub(crate) fn request(&self, frozen: bool) {
        if self.v2 {
            std::fs::write(
                self.dir.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
            )
        } else {
            std::fs::write(
                self.dir.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            )
        }
        .unwrap();
    }

    /// Freezes (or thaws) and waits until the kernel says it is done.
    pub(crate) fn freeze(&self, frozen: bool) {
        self.request(frozen);
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        assert!(support::wait_for(Duration::from_secs(5), || {
            if self.v2 {
                std::fs::read_to_string(self.dir.join("cgroup.events"))
                    .unwrap_or_default()
                    .contains(want)
            } else {
                let s = std::fs::read_to_string(self.dir.join("freezer.state")).unwrap_or_default();
                (s.trim() == "FROZEN") == frozen
            }
        }));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.freeze(false);
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for p in procs.split_whitespace() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), p);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn frozen_cgroups_are_refused_before_anything_is_touched() {
    if !require_root() {
        return;
    }
    for v2 in [true, false] {
        let mut v = Victim::spawn(&[]);
        let before = v.signal_state();
        let cg = Cgroup::new(v2, v.pid);
        cg.freeze(true);
        let out = reap(v.pid, &[]);
        assert_eq!(out.code, 1, "v2={v2}: {out:?}");
        let names = if v2 {
            "is frozen by cgroup v2"
        } else {
            "is frozen by the cgroup v1 freezer"
        };
        assert!(
            out.stderr.contains(names) && out.stderr.contains("thaw it"),
            "v2={v2}: {out:?}"
        );
        assert_eq!(v.masters_open(), vec![100, 101], "v2={v2}");
        // Known before asking: the dry run, the JSON and the census say it, the plan offers
        // nothing there, and without --yes no prompt is shown (this run has no terminal).
        let pid = v.pid.to_string();
        let dry = crate::support::dry_run(&pid, &["--json"]);
        assert_eq!(dry.code, 0, "v2={v2}: {dry:?}");
        let t = &dry.json()["targets"][0];
        assert_eq!(t["releasable"], false, "v2={v2}: {t}");
        assert!(
            t["not_releasable_because"]
                .as_str()
                .is_some_and(|w| w.contains("is frozen by")),
            "v2={v2}: {t}"
        );
        let masters = t["masters"].as_array().unwrap();
        assert!(!masters.is_empty());
        assert!(masters.iter().all(|m| m["action"] == "keep"), "{t}");
        let table = crate::support::dry_run(&pid, &[]);
        assert!(
            table.stdout.contains("cannot release here") && table.stdout.contains("is frozen by"),
            "v2={v2}: {table:?}"
        );
        let asked = ptyreap(&["--pid", &pid, "--min-idle", "0"]);
        assert_eq!(asked.code, 1, "v2={v2}: {asked:?}");
        assert!(
            asked.stderr.contains("is frozen by") && !asked.stderr.contains("terminal"),
            "no prompt, and no complaint about a missing terminal: {asked:?}"
        );
        let census = ptyreap(&["--json"]);
        let line = census.json()["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == v.pid)
            .cloned()
            .unwrap();
        assert_eq!(line["releasable"], false, "{line}");
        let census_table = ptyreap(&[]);
        assert!(
            census_table
                .stdout
                .contains("ptyreap cannot release PTYs in these processes"),
            "{census_table:?}"
        );
        assert_eq!(v.masters_open(), vec![100, 101], "v2={v2}");
        // The watchdog logs the refusal and carries on.
        let watch = ptyreap(&[
            "watch",
            "--pid",
            &pid,
            "--once",
            "--warn",
            "0",
            "--reap",
            "0",
            "--min-idle",
            "0",
            "--no-notify",
        ]);
        assert_eq!(watch.code, 0, "v2={v2}: {watch:?}");
        assert!(
            watch.stderr.contains("reap_failed") && watch.stderr.contains("is frozen by"),
            "v2={v2}: {watch:?}"
        );
        assert_eq!(v.masters_open(), vec![100, 101], "v2={v2}");
        cg.freeze(false);
        let status = v.assert_healthy(&before);
        assert_eq!(status["open"], "100,101");
        drop(cg);
    }
}

/// Frozen after the check, while held: the call never starts, its deadline pulls the thread
/// back, the thread is restored exactly, and on thaw the target runs on as before.
#[test]
fn a_call_that_cannot_run_is_interrupted_at_its_deadline() {
    use ptyreap::testing::procfs;
    use ptyreap::testing::Pidfd;
    use ptyreap::testing::{InjectError, StoppedProcess};
    if !require_root() {
        return;
    }
    let mut v = Victim::spawn(&[]);
    let before = v.signal_state();
    let cg = Cgroup::new(true, v.pid);
    let pidfd = Pidfd::open(v.pid).unwrap();
    let start = procfs::start_time(v.pid).unwrap();
    let mut p = StoppedProcess::stop(&pidfd, start, Duration::from_secs(5)).unwrap();
    cg.freeze(true);
    let mut inj = p.injector().unwrap();
    let t = Instant::now();
    match inj.close(100) {
        Err(InjectError::Timeout { began: false, .. }) => {}
        other => panic!("expected a time-out before the call began, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    inj.finish().unwrap();
    p.resume().unwrap();
    drop(pidfd);
    cg.freeze(false);
    let status = v.assert_healthy(&before);
    assert_eq!(status["open"], "100,101", "the close must not have run");
    drop(cg);
}

#[test]
fn a_process_sharing_the_fd_table_is_no_other_holder_and_is_refused() {
    if !require_root() {
        return;
    }
    let mut v = Victim::spawn(&["--share-files", "--never-opened"]);
    let sibling = v.sibling;
    assert!(sibling > 0);
    // the sibling waits in poll() on the masters
    assert!(support::wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{sibling}/syscall"))
            .is_ok_and(|s| !s.starts_with("running") && !s.starts_with("-1"))
    }));
    let before = v.signal_state();
    let pid = v.pid.to_string();
    let dry = crate::support::dry_run(&pid, &["--json"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let doc = dry.json();
    for m in doc["targets"][0]["masters"].as_array().unwrap() {
        assert_eq!(m["other_master_holders"], serde_json::json!([]), "{m}");
        assert_eq!(m["fd_table_shared_with"][0]["pid"], sibling, "{m}");
        let watched = m["watched_by"].to_string();
        assert!(watched.contains(&format!("of pid {sibling}")), "{m}");
        assert_eq!(m["verdict"], "tracked", "{m}");
    }
    let out = reap(v.pid, &["--include-tracked"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("shares its fd table with {sibling}"))
            && out.stderr.contains("CLONE_FILES"),
        "{out:?}"
    );
    let status = v.assert_healthy(&before);
    assert_eq!(status["open"], "100,101");
    assert!(
        v.sibling_report().is_none(),
        "the sibling's poll was disturbed"
    );
}

fn fd_flags(pid: i32, fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap()
        .trim();
    u32::from_str_radix(flags, 8).unwrap()
}

#[test]
fn merge_and_devnull_keep_close_on_exec() {
    if !require_root() {
        return;
    }
    for cloexec in [true, false] {
        for method in ["merge", "devnull"] {
            let mut args = vec!["--masters", "3"];
            if cloexec {
                args.push("--cloexec");
            }
            let mut v = Victim::spawn(&args);
            let before = v.signal_state();
            let out = reap(v.pid, &["--method", method]);
            assert_eq!(out.code, 0, "{method}: {out:?}");
            let changed: Vec<i32> = if method == "merge" {
                vec![101, 102]
            } else {
                vec![100, 101, 102]
            };
            for fd in changed {
                let flags = fd_flags(v.pid, fd);
                assert_eq!(
                    flags & libc::O_CLOEXEC as u32 != 0,
                    cloexec,
                    "{method}, cloexec={cloexec}: fd {fd} flags {flags:o}"
                );
            }
            v.assert_healthy(&before);
        }
    }
}

/// The slave is locked against opening while the reap holds its pins, and the lock state it had
/// comes back afterwards.
#[test]
fn the_slave_is_locked_during_the_window_and_restored() {
    use ptyreap::testing::Pidfd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if !require_root() {
        return;
    }
    let locked = |fd: i32| {
        let mut value: libc::c_int = -1;
        // SAFETY: TIOCGPTLCK writes one int.
        assert_eq!(unsafe { libc::ioctl(fd, libc::TIOCGPTLCK, &mut value) }, 0);
        value != 0
    };
    // The lock is taken inside the stop and held until every pin is let go: with 200 masters
    // that is about a millisecond, which a watching thread sees unless it is descheduled just
    // then; a few rounds make a miss of every one negligible. Every round restores the lock.
    let mut seen_in_a_round = false;
    for _ in 0..5 {
        let mut v = Victim::spawn(&["--masters", "200"]);
        let before = v.signal_state();
        // Our own copy of the master, to watch its lock (it keeps the PTY allocated: fine).
        let copy = Pidfd::open(v.pid).unwrap().get_fd(100).unwrap();
        assert!(
            !locked(copy.as_raw_fd()),
            "unlocked to begin with (unlockpt)"
        );
        let (stop, seen) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let watcher = {
            let (stop, seen) = (stop.clone(), seen.clone());
            let fd = copy.as_raw_fd();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if locked(fd) {
                        seen.store(true, Ordering::Relaxed);
                    }
                }
            })
        };
        let out = reap(v.pid, &[]);
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
        all_closed(&out);
        assert!(!locked(copy.as_raw_fd()), "the lock was not put back");
        v.assert_healthy(&before);
        if seen.load(Ordering::Relaxed) {
            seen_in_a_round = true;
            break;
        }
    }
    assert!(seen_in_a_round, "never saw the slave locked during a reap");
}

/// ptyreap in a pid namespace of its own with the old /proc: the pid it pins and the /proc
/// entry it would read are different processes. Refused, plainly.
#[test]
fn proc_of_another_pid_namespace_is_refused() {
    if !require_root() {
        return;
    }
    let dir = support::temp_dir("pidns");
    let script = format!(
        "{} --ready {} & sleep 0.5; {} --pid $! --dry-run; rc=$?; kill $!; exit $rc",
        env!("CARGO_BIN_EXE_ptyreap-victim"),
        dir.join("ready").display(),
        env!("CARGO_BIN_EXE_ptyreap"),
    );
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "sh", "-c", &script])
        .output()
        .expect("running unshare (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another pid namespace"), "{stderr}");
}

/// A process whose main thread exited while another runs on: named plainly, left alone.
#[test]
fn a_process_whose_main_thread_exited_is_left_alone() {
    if !require_root() {
        return;
    }
    let mut v = Victim::spawn(&["--leader-exits"]);
    assert!(support::wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{}/stat", v.pid)).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    }));
    let out = reap(v.pid, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("main thread has exited") && !out.stderr.contains("not permitted"),
        "{out:?}"
    );
    assert!(v.status().is_some(), "the process no longer answers");
}

/// A SIGTRAP the app blocks and has pending stays pending, untouched, and does not hold the reap.
#[test]
fn a_pending_blocked_sigtrap_stays_the_apps() {
    if !require_root() {
        return;
    }
    let mut v = Victim::spawn(&["--block-trap"]);
    // SAFETY: a thread-directed SIGTRAP to our child's main thread, which blocks it.
    assert_eq!(
        unsafe { libc::syscall(libc::SYS_tgkill, v.pid, v.pid, libc::SIGTRAP) },
        0
    );
    let before = v.signal_state();
    assert!(
        before
            .iter()
            .any(|(_, st)| st.contains("SigPnd:\t0000000000000010")),
        "{before:?}"
    );
    let out = reap(v.pid, &[]);
    all_closed(&out);
    let status = v.assert_healthy(&before);
    assert_eq!(status["open"], "");
}

/// Whether the kernel has Syscall User Dispatch. x86_64 kernels have had it since 5.11 (a test
/// there fails without it); arm64 only since its move to the generic entry code (the aarch64
/// VM's 6.1 has none): skipped there, and said so.
fn sud_available(needs_config: bool) -> bool {
    if support::syscall_user_dispatch_works() {
        if needs_config && !support::kernel_at_least(6, 2) {
            eprintln!(
                "skipped: this kernel (before 6.2) cannot report a thread's SUD configuration"
            );
            return false;
        }
        return true;
    }
    if !cfg!(target_arch = "aarch64") {
        panic!("this kernel has no Syscall User Dispatch (PR_SET_SYSCALL_USER_DISPATCH)");
    }
    eprintln!("skipped: this kernel has no Syscall User Dispatch");
    false
}

/// Syscall User Dispatch (Wine, Proton): a thread whose selector says BLOCK would turn our call
/// into a SIGSYS for the app's handler before any ptrace stop. Twenty reaps of a target that
/// spends nearly all its time at BLOCK: it lives, no SIGSYS reaches it, every master is released
/// (the dispatch is switched off around each call and put back) and comes back for the next.
#[test]
fn syscall_user_dispatch_never_takes_our_calls() {
    if !require_root() {
        return;
    }
    if !sud_available(true) {
        return;
    }
    let mut v = Victim::spawn(&["--sud", "--masters", "5"]);
    let before = v.signal_state();
    let config = support::sud_config(v.pid);
    assert_eq!(config[0], 1, "the victim's dispatch is not on: {config:?}");
    for round in 0..20 {
        assert!(
            support::wait_for(Duration::from_secs(5), || v.masters_open().len() == 5),
            "round {round}: the masters did not come back"
        );
        let out = reap(v.pid, &[]);
        all_closed(&out);
        let status = v.assert_healthy(&before);
        assert_eq!(status["sigsys"], "0", "round {round}: {status:?}");
    }
    assert_eq!(
        support::sud_config(v.pid),
        config,
        "the dispatch configuration was not put back"
    );
    v.assert_healthy(&before);
}

/// A kernel before 6.2 has Syscall User Dispatch but cannot report it: our call is then turned
/// into a SIGSYS, which ptyreap drops before the app sees it, makes no further call, and says so.
#[test]
fn a_dispatched_call_is_dropped_and_reported() {
    if !require_root() || !sud_available(false) {
        return;
    }
    let mut v = Victim::spawn(&["--sud", "--masters", "3"]);
    let before = v.signal_state();
    let mut dispatched = 0;
    for round in 0..5 {
        assert!(
            support::wait_for(Duration::from_secs(5), || v.masters_open().len() == 3),
            "round {round}: the masters did not come back"
        );
        let out = support::reap_closing_with(v.pid, &["--json"], |cmd| {
            cmd.env("PTYREAP_TEST_NO_SUD_CONFIG", "1");
        });
        let rows = rows(&out);
        if rows.iter().all(|(_, result, _)| result == "closed") {
            // it was at ALLOW at that instant
            assert_eq!(out.code, 0, "{out:?}");
        } else {
            dispatched += 1;
            assert_eq!(out.code, 1, "{out:?}");
            for (fd, result, detail) in &rows {
                assert_eq!(result, "failed", "fd {fd}: {out:?}");
                assert!(
                    detail.contains("Syscall User Dispatch"),
                    "fd {fd}: {detail}"
                );
            }
            assert_eq!(v.masters_open().len(), 3, "a failed call closed something");
        }
        let status = v.assert_healthy(&before);
        assert_eq!(status["sigsys"], "0", "round {round}: {status:?}");
    }
    assert!(
        dispatched > 0,
        "no round met the dispatch (the victim is at BLOCK ~95% of the time)"
    );
}
