//! Helpers shared by the integration tests (`mod support;` in `tests/it/main.rs`): the leaking
//! fixture process (`ptyreap-fixture`, see `fixture/main.rs` for its flags and JSON), running the
//! `ptyreap` binary, and reading a process's PTY masters from /proc. Each test file uses a subset.

use serde_json::Value;
use std::fs;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// A check takes at most ~6 s (3 s for the live sessions, 3 s for the threads).
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
const PTYREAP_TIMEOUT: Duration = Duration::from_secs(60);

/// The machine's PTYs, shared by every test in this one binary (its tests run in parallel):
/// holders (`Fixture`, `Victim`, a test opening its own) take it shared for as long as they hold
/// PTYs; a test that changes the machine's limit (kernel.pty.max) or reaps the whole machine
/// (`--all --yes`) takes it alone, so no other test's PTY is opened, closed or reaped meanwhile.
/// Shared holders never wait for an exclusive one that is only waiting (a test may hold two
/// fixtures), and the exclusive holder's own thread passes (its test spawns fixtures too).
struct HostPtys {
    shared: usize,
    exclusive: Option<thread::ThreadId>,
}

static HOST_PTYS: Mutex<HostPtys> = Mutex::new(HostPtys {
    shared: 0,
    exclusive: None,
});
static HOST_PTYS_CHANGED: Condvar = Condvar::new();

fn host_ptys() -> std::sync::MutexGuard<'static, HostPtys> {
    // a test that panicked holding the lock poisons it; the counts are still right
    HOST_PTYS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The machine's PTYs held shared (see `HostPtys`) until dropped.
pub struct SharedPtys(bool);

/// Waits while another test has the machine's PTYs to itself, then holds them shared.
pub fn shared_ptys() -> SharedPtys {
    let me = thread::current().id();
    let mut h = host_ptys();
    if h.exclusive == Some(me) {
        return SharedPtys(false);
    }
    while h.exclusive.is_some() {
        h = HOST_PTYS_CHANGED.wait(h).unwrap_or_else(|e| e.into_inner());
    }
    h.shared += 1;
    SharedPtys(true)
}

impl Drop for SharedPtys {
    fn drop(&mut self) {
        if self.0 {
            host_ptys().shared -= 1;
            HOST_PTYS_CHANGED.notify_all();
        }
    }
}

/// The machine's PTYs held by this test alone (see `HostPtys`) until dropped.
pub struct ExclusivePtys;

/// Waits until no other test holds or uses PTYs and none has them alone, then takes them alone.
pub fn exclusive_ptys() -> ExclusivePtys {
    let mut h = host_ptys();
    while h.shared > 0 || h.exclusive.is_some() {
        h = HOST_PTYS_CHANGED.wait(h).unwrap_or_else(|e| e.into_inner());
    }
    h.exclusive = Some(thread::current().id());
    ExclusivePtys
}

impl Drop for ExclusivePtys {
    fn drop(&mut self) {
        host_ptys().exclusive = None;
        HOST_PTYS_CHANGED.notify_all();
    }
}

/// A running `ptyreap-fixture`, killed (children and all) and cleaned up on drop.
pub struct Fixture {
    pub pid: i32,
    /// The ready file's JSON.
    pub ready: Value,
    child: Child,
    dir: PathBuf,
    /// Last: released after `drop` has killed the fixture.
    _ptys: SharedPtys,
}

impl Fixture {
    /// Starts the fixture with `args` (plus `--ready`) and waits until it is ready; panics with
    /// its stderr if it exits first or takes more than 20 s.
    ///
    /// The fixture exits when the thread that spawned it ends (PR_SET_PDEATHSIG): keep the
    /// `Fixture` on the test's own thread.
    pub fn spawn(args: &[&str]) -> Fixture {
        Fixture::spawn_with(args, |_| {})
    }

    /// The fixture in a new mount namespace whose /dev/pts is a private devpts instance with
    /// `max=` PTYs, and /dev/ptmx bound to its ptmx: the way containers get their own PTYs.
    pub fn spawn_private_devpts(args: &[&str], max: u32) -> Fixture {
        let options =
            std::ffi::CString::new(format!("newinstance,ptmxmode=0666,max={max}")).unwrap();
        Fixture::spawn_with(args, move |cmd| {
            // SAFETY: only raw syscalls on prepared strings between fork and exec (no allocation).
            unsafe {
                cmd.pre_exec(move || private_devpts(&options));
            }
        })
    }

    /// Like `spawn`, after `configure` had its say on the command (e.g. a pre_exec hook).
    pub fn spawn_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Fixture {
        let ptys = shared_ptys();
        let dir = temp_dir("fixture");
        let ready_path = dir.join("ready.json");
        let stderr =
            fs::File::create(dir.join("stderr")).expect("creating the fixture's stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptyreap-fixture"));
        cmd.args(args)
            .arg("--ready")
            .arg(&ready_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        configure(&mut cmd);
        let child = cmd.spawn().expect("spawning ptyreap-fixture");
        // From here on Drop kills the fixture and removes the directory, panic or not.
        let mut f = Fixture {
            pid: child.id() as i32,
            ready: Value::Null,
            child,
            dir,
            _ptys: ptys,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // Written atomically (rename): present means complete.
            if let Ok(text) = fs::read_to_string(&ready_path) {
                f.ready = serde_json::from_str(&text).expect("the ready file is not JSON");
                assert_eq!(f.ready["pid"], f.pid, "the ready file names another pid");
                return f;
            }
            if let Some(status) = f.child.try_wait().expect("waiting for the fixture") {
                panic!(
                    "ptyreap-fixture {args:?} exited ({status}) before it was ready: {}",
                    f.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "ptyreap-fixture {args:?} not ready after {READY_TIMEOUT:?}: {}",
                    f.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The fixture's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// The fd numbers under `key` in the ready file (nested arrays flattened: `pairs` gives
    /// master, slave, master, slave, ...); empty when the key is null or absent.
    pub fn fds(&self, key: &str) -> Vec<i32> {
        fn collect(v: &Value, out: &mut Vec<i32>) {
            match v {
                Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
                Value::Number(n) => out.push(n.as_i64().expect("an fd number") as i32),
                _ => {}
            }
        }
        let mut out = Vec::new();
        collect(&self.ready[key], &mut out);
        out
    }

    /// Every PTY master fd the fixture reported (all kinds, the masters of `pairs`), sorted.
    pub fn masters(&self) -> Vec<i32> {
        let mut all: Vec<i32> = [
            "orphans",
            "unread",
            "tracked",
            "poll_watched",
            "select_watched",
            "live",
            "shared",
            "new",
        ]
        .iter()
        .flat_map(|k| self.fds(k))
        .collect();
        all.extend(self.fds("pairs").iter().step_by(2));
        all.sort_unstable();
        all
    }

    /// SIGKILL, now (a target that dies under a reaper).
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Like `check`, but None instead of a panic when no report comes within `timeout` (a
    /// target that was harmed on purpose).
    pub fn try_check(&self, timeout: Duration) -> Option<Value> {
        let path = self.dir.join("ready.json.check");
        let seq = |p: &Path| -> u64 {
            let text = fs::read_to_string(p).unwrap_or_default();
            serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["seq"].as_u64())
                .unwrap_or(0)
        };
        let before = seq(&path);
        // SAFETY: signalling our own child.
        if unsafe { libc::kill(self.pid, libc::SIGUSR1) } != 0 {
            return None;
        }
        wait_for(timeout, || seq(&path) > before)
            .then(|| serde_json::from_str(&fs::read_to_string(&path).ok()?).ok())?
    }

    /// Runs the fixture's health check (SIGUSR1) and returns its new report.
    pub fn check(&self) -> Value {
        self.try_check(CHECK_TIMEOUT)
            .unwrap_or_else(|| panic!("no health check after {CHECK_TIMEOUT:?}: {}", self.stderr()))
    }

    /// Runs the health check and asserts that every live session echoed; returns the report
    /// for the caller's own checks. `ctx` (may be empty) starts each failure's message.
    pub fn assert_live(&self, ctx: &str) -> Value {
        let c = self.check();
        assert!(
            live_ok(&c),
            "{ctx}{}a live session did not echo: {c}",
            sep(ctx)
        );
        c
    }

    /// `assert_live`, and no thread of the fixture saw an error.
    pub fn assert_healthy(&self, ctx: &str) -> Value {
        let c = self.assert_live(ctx);
        assert_eq!(
            c["errors"],
            serde_json::json!([]),
            "{ctx}{}a thread saw an error: {c}",
            sep(ctx)
        );
        c
    }
}

/// A check report (`Fixture::check`) in which every live session echoed.
pub fn live_ok(check: &Value) -> bool {
    check["live_ok"]
        .as_array()
        .expect("live_ok is an array")
        .iter()
        .all(|v| v == true)
}

/// A check report in which every live session echoed and no thread saw an error: what
/// `Fixture::assert_healthy` asserts, for a caller that counts rather than fails.
pub fn healthy(check: &Value) -> bool {
    live_ok(check) && check["errors"] == serde_json::json!([])
}

fn sep(ctx: &str) -> &'static str {
    if ctx.is_empty() {
        ""
    } else {
        ": "
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SIGTERM: the fixture kills and reaps its children; SIGKILL if it does not exit.
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// In a child between fork and exec: a new mount namespace with a private devpts instance on
/// /dev/pts and /dev/ptmx bound to its ptmx.
/// Between fork and exec: a new mount namespace whose /dev/pts is a new devpts instance mounted
/// with `options`, and /dev/ptmx bound to its ptmx.
pub fn private_devpts(options: &std::ffi::CStr) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain syscalls on NUL-terminated strings.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"devpts".as_ptr(),
            c"/dev/pts".as_ptr(),
            c"devpts".as_ptr(),
            0,
            options.as_ptr().cast(),
        ))?;
        check(libc::mount(
            c"/dev/pts/ptmx".as_ptr(),
            c"/dev/ptmx".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))
    }
}

/// Runs the fixture with `args` inside the mount namespace of `pid` (setns) and returns its
/// exit code once ready (0) or failed: a probe for "can a PTY be opened there?".
pub fn fixture_in_namespace_of(pid: i32, args: &[&str]) -> i32 {
    let dir = temp_dir("probe");
    let ns = fs::File::open(format!("/proc/{pid}/ns/mnt")).expect("opening the mount namespace");
    let ns_fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptyreap-fixture"));
    cmd.args(args)
        .arg("--ready")
        .arg(dir.join("ready.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: one raw syscall between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNS) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().expect("spawning the probe");
    let ready = dir.join("ready.json");
    let deadline = Instant::now() + READY_TIMEOUT;
    let code = loop {
        if ready.exists() {
            break 0;
        }
        if let Some(status) = child.try_wait().expect("waiting for the probe") {
            break status.code().unwrap_or(128);
        }
        assert!(Instant::now() < deadline, "the probe hangs");
        thread::sleep(Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = fs::remove_dir_all(&dir);
    code
}

/// A new empty directory under the system's temp dir, unique to this process and call.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir =
        std::env::temp_dir().join(format!("ptyreap-{tag}-{}-{n}-{nanos}", std::process::id()));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {dir:?}: {e}"));
    dir
}

/// The fds of `pid` that are PTY masters (their fdinfo has a `tty-index:` line), sorted.
pub fn ptmx_fds(pid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut fds: Vec<i32> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            let info = fs::read_to_string(e.path()).ok()?;
            info.lines()
                .any(|l| l.starts_with("tty-index:"))
                .then_some(fd)
        })
        .collect();
    fds.sort_unstable();
    fds
}

/// The `tty-index:` of `pid`'s fd, if it is a PTY master.
pub fn tty_index(pid: i32, fd: i32) -> Option<u32> {
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("tty-index:"))
        .and_then(|v| v.trim().parse().ok())
}

/// PTY pairs allocated system-wide (/proc/sys/kernel/pty/nr).
pub fn pty_nr() -> u64 {
    let text =
        fs::read_to_string("/proc/sys/kernel/pty/nr").expect("reading /proc/sys/kernel/pty/nr");
    text.trim().parse().expect("pty/nr is not a number")
}

/// True as root. Otherwise the test should return early: this prints that it is skipped, or
/// panics when `CI` is set (a CI run must not skip silently).
pub fn require_root() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("this test needs root and CI is set");
    }
    eprintln!("skipped: this test needs root");
    false
}

/// Whether the running kernel is at least `major.minor` (uname's release).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Whether this kernel has Syscall User Dispatch (switching it off where it is off is harmless).
pub fn syscall_user_dispatch_works() -> bool {
    // SAFETY: PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF on this thread, where it is off.
    unsafe {
        libc::prctl(
            59,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) == 0
    }
}

/// Thread `tid`'s Syscall User Dispatch configuration (mode, selector, offset, len), read with
/// ptrace as CRIU reads it: seized, interrupted, read, detached.
pub fn sud_config(tid: i32) -> [u64; 4] {
    let mut c = [0u64; 4];
    // SAFETY: ptrace on a child of ours; the config is four u64s, as the kernel writes it.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
            0,
            "seize {tid}"
        );
        libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0);
        let mut status = 0;
        libc::waitpid(tid, &mut status, libc::__WALL);
        let r = libc::ptrace(0x4211, tid, 32usize, c.as_mut_ptr());
        let err = std::io::Error::last_os_error();
        libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0);
        assert_eq!(r, 0, "PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG: {err}");
    }
    c
}

/// Root, and the opt-in `PTYREAP_TEST_SYSCTL=1` for a test that changes a machine-wide setting
/// (`kernel.pty.max`): while it is lowered no terminal on the machine can open, so on someone's
/// workstation such a test runs only when asked, and otherwise says it was skipped (CI too: the
/// README's command runs without it; `.ci/run` then runs these tests with it set).
pub fn require_machine_settings() -> bool {
    if !require_root() {
        return false;
    }
    if std::env::var_os("PTYREAP_TEST_SYSCTL").is_some_and(|v| v == "1") {
        return true;
    }
    // not even in CI: .ci/run runs the README's command as it is, then these with the variable
    eprintln!("skipped: this test changes kernel.pty.max (set PTYREAP_TEST_SYSCTL=1 to run it)");
    false
}

/// `path` (one of cargo's built binaries), or a link to it (a copy across file systems) that any
/// user can run: some tests run ptyreap or the victim as another user, and a clone in a directory
/// only its owner may enter (a 0700 home, `mktemp -d`) hides `target/` from them (EACCES). The
/// link lives in a directory of root's in the system's temp dir, named by the binary's inode and
/// time, so reruns reuse it; an older one of the same binary is replaced.
pub fn runnable_by_anyone(path: &str) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let original = PathBuf::from(path);
    let reachable = original
        .ancestors()
        .skip(1)
        .filter(|d| !d.as_os_str().is_empty())
        .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if reachable {
        return original;
    }
    static LINKS: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
    let mut links = LINKS.lock().unwrap();
    if let Some((_, link)) = links.iter().find(|(o, _)| *o == original) {
        return link.clone();
    }
    let meta = fs::metadata(&original).unwrap();
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let dir = std::env::temp_dir().join(format!("ptyreap-test-bins-{me}"));
    let _ = fs::create_dir(&dir);
    let dir_meta = fs::symlink_metadata(&dir).unwrap();
    assert!(
        dir_meta.is_dir() && dir_meta.uid() == me && dir_meta.mode() & 0o022 == 0,
        "{dir:?} is not a directory only this user may write: remove it"
    );
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let name = original.file_name().unwrap().to_string_lossy().into_owned();
    let link = dir.join(format!("{name}-{}-{}", meta.ino(), meta.mtime()));
    if !link.exists() {
        for old in fs::read_dir(&dir).unwrap().flatten() {
            if old
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
            {
                let _ = fs::remove_file(old.path());
            }
        }
        if fs::hard_link(&original, &link).is_err() {
            let partial = dir.join(format!(".{name}.{}", std::process::id()));
            fs::copy(&original, &partial).unwrap();
            fs::rename(&partial, &link).unwrap();
        }
    }
    fs::set_permissions(&link, fs::Permissions::from_mode(0o755)).unwrap();
    links.push((original, link.clone()));
    link
}

/// kernel.pty.max put back however the test ends: on drop (a pass or a panic), and — should the
/// test process be killed or interrupted (^C, a time-out) — by a watcher in a session of its
/// own that outlives it and writes the value back once the test process is gone. Made before the
/// first change.
pub struct PtyMaxRestored {
    original: u64,
    watcher: Child,
}

pub const PTY_MAX: &str = "/proc/sys/kernel/pty/max";

impl PtyMaxRestored {
    pub fn now() -> PtyMaxRestored {
        let original: u64 = fs::read_to_string(PTY_MAX).unwrap().trim().parse().unwrap();
        let script = format!(
            "trap '' INT TERM HUP; while kill -0 {me} 2>/dev/null; do sleep 0.2; done; \
             echo {original} > {PTY_MAX}",
            me = std::process::id()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe; a session of its own: ^C in the test's terminal
        // and a kill of the test's process group miss it
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let watcher = cmd.spawn().expect("starting the kernel.pty.max watcher");
        PtyMaxRestored { original, watcher }
    }

    pub fn original(&self) -> u64 {
        self.original
    }
}

impl Drop for PtyMaxRestored {
    fn drop(&mut self) {
        let _ = fs::write(PTY_MAX, format!("{}\n", self.original));
        let _ = self.watcher.kill();
        let _ = self.watcher.wait();
    }
}

/// A program a test needs from the distribution: true when it is on PATH; otherwise a skip that
/// says which `package` has it, or, in CI (which installs it), a failure.
pub fn require_tool(name: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing and CI is set (.ci/run installs {package})"
        );
        eprintln!("skipped: {name} is not installed (apt-get install {package})");
    }
    found
}

/// Whether `python` imports `module`; like [`require_tool`], a miss fails under CI.
pub fn require_python_module(python: &str, module: &str, package: &str) -> bool {
    let found = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} cannot import {module} and CI is set (.ci/run installs {package})"
        );
        eprintln!("skipped: {python} cannot import {module} (apt-get install {package})");
    }
    found
}

/// Polls `cond` every 10 ms until it holds (true) or `timeout` passes (false).
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// What a `ptyreap` run printed, and how it exited (128 + signal when killed by one).
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout as JSON; panics with both streams when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("ptyreap's stdout is not JSON ({e}): {self:?}"))
    }
}

/// The reap most tests run: `--pid PID --min-idle 0 --yes --method close` (the close path; the
/// default merges what the fixture opened itself).
pub fn reap_args(pid: i32) -> Vec<String> {
    [
        "--pid",
        &pid.to_string(),
        "--min-idle",
        "0",
        "--yes",
        "--method",
        "close",
    ]
    .map(String::from)
    .to_vec()
}

/// `ptyreap` with [`reap_args`] and then `extra`.
pub fn reap_closing(pid: i32, extra: &[&str]) -> Output {
    reap_closing_with(pid, extra, |_| {})
}

/// The same, after `configure` had its say on the command.
pub fn reap_closing_with(pid: i32, extra: &[&str], configure: impl FnOnce(&mut Command)) -> Output {
    let mut args = reap_args(pid);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ptyreap_with(&args, configure)
}

/// The keys every `masters[]` row of the JSON has (README, "JSON").
pub const MASTER_KEYS: &[&str] = &[
    "fd",
    "pty",
    "devpts",
    "slave",
    "verdict",
    "reason",
    "last_io",
    "idle_s",
    "unread_bytes",
    "session",
    "foreground_pgrp",
    "slave_holders",
    "target_slave_fds",
    "other_master_holders",
    "aliases",
    "watched",
    "action",
    "method",
    "result",
];

/// Fixture flags for a master of every kind: orphans, tracked (epoll, poll, select), live, held
/// by another process, a pair, fresh ones.
pub const EVERY_KIND: &[&str] = &[
    "--orphans",
    "3",
    "--tracked",
    "2",
    "--poll-watched",
    "2",
    "--select-watched",
    "2",
    "--live",
    "2",
    "--shared",
    "2",
    "--pairs",
    "1",
    "--new",
    "2",
];

/// `ptyreap --pid PID --min-idle 0 --dry-run` and then `extra`: a look at every master, whatever
/// its idleness, that changes nothing.
pub fn dry_run(pid: impl std::fmt::Display, extra: &[&str]) -> Output {
    let pid = pid.to_string();
    let mut args = vec!["--pid", &pid, "--min-idle", "0", "--dry-run"];
    args.extend_from_slice(extra);
    ptyreap(&args)
}

/// Starts `cmd` in a session of its own: no controlling terminal at all, as in an emergency
/// script run from ssh -T or a service.
pub fn without_terminal(cmd: &mut Command) -> &mut Command {
    // SAFETY: setsid between fork and exec touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    }
}

/// Runs the `ptyreap` binary with `args`, stdin from /dev/null, NO_COLOR=1; kills it and panics
/// after 60 s.
pub fn ptyreap(args: &[&str]) -> Output {
    ptyreap_with(args, |_| {})
}

/// `ptyreap`, after `configure` had its say on the command (an environment variable, a
/// pre_exec hook).
pub fn ptyreap_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Output {
    // (`configure` may make it another user's run)
    let mut cmd = Command::new(runnable_by_anyone(env!("CARGO_BIN_EXE_ptyreap")));
    cmd.args(args)
        .env("NO_COLOR", "1")
        // the default poll look, whatever the caller's environment says
        .env_remove("PTYREAP_OBSERVE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut cmd);
    let child = cmd.spawn().expect("spawning ptyreap");
    let out = wait_labelled(child, PTYREAP_TIMEOUT, &format!("ptyreap {args:?}"));
    Output {
        code: out
            .status
            .code()
            .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// PTYs allocated in the devpts instance mounted at /dev/pts in `pid`'s mount namespace (its
/// numbered nodes exist until both ends are closed). With `Fixture::spawn_private_devpts` this
/// counts the fixture's PTYs alone, whatever other tests do meanwhile.
pub fn ptys_in_use_seen_by(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/root/dev/pts"))
        .expect("reading the fixture's /dev/pts")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count()
}

/// What the threads of a process are in, as /proc/PID/task/*/status tell.
#[derive(Debug, PartialEq, Eq)]
pub enum Threads {
    /// None is in a ptrace stop, stopped, or traced.
    Running,
    /// The process is gone (no /proc/PID/task).
    Gone,
    /// One is stopped or traced: which, and how.
    Held(String),
}

/// The state of `pid`'s threads now (see `Threads`).
pub fn threads(pid: i32) -> Threads {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Threads::Gone;
    };
    for entry in dir.flatten() {
        let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let state = status
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("");
        if state.contains("tracing stop") || state.contains("T (stopped)") {
            return Threads::Held(format!(
                "thread {:?} of {pid} left {state}",
                entry.file_name()
            ));
        }
        if !status.contains("TracerPid:\t0\n") {
            return Threads::Held(format!(
                "thread {:?} of {pid} still traced",
                entry.file_name()
            ));
        }
    }
    Threads::Running
}

/// No thread of `pid` is in a ptrace stop, stopped, or traced (a gone process passes).
pub fn assert_running(pid: i32) {
    if let Threads::Held(how) = threads(pid) {
        panic!("{how}");
    }
}

/// Waits up to `timeout` until no thread of `pid` is stopped or traced (a tracer that outlived
/// its parent may still be busy), asserting that it comes to that: `Running`, or `Gone`.
pub fn settle(pid: i32, timeout: Duration) -> Threads {
    let mut now = threads(pid);
    wait_for(timeout, || {
        now = threads(pid);
        !matches!(now, Threads::Held(_))
    });
    if let Threads::Held(how) = &now {
        panic!("pid {pid}: a thread stayed traced or stopped for {timeout:?}: {how}");
    }
    now
}

/// A small deterministic PRNG (xorshift64), so a failing round can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `ptyreap --pid PID --min-idle 0 --yes --json` started in its own process group, output piped.
/// (No poll look: these runs are timed against the reap itself; `--method close` is explicit.)
pub fn spawn_reap(pid: i32) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ptyreap"))
        .args(reap_args(pid))
        .args(["--json", "--observe", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawning ptyreap")
}

/// Waits for a spawned ptyreap (draining its output), killing it and panicking after `limit`: a
/// test must never hang the suite.
pub fn wait_output(child: Child, limit: Duration) -> std::process::Output {
    wait_labelled(child, limit, "ptyreap")
}

/// The same, with `what` naming the command in the panic. Both pipes drain on their own threads,
/// so a chatty child never blocks on a full pipe.
fn wait_labelled(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for ptyreap") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "{what} still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    std::process::Output {
        status,
        stdout: out.join().expect("reading stdout"),
        stderr: err.join().expect("reading stderr"),
    }
}

/// A running `ptyreap-victim` (see `victim.rs` for its flags), killed on drop.
pub struct Victim {
    pub pid: i32,
    /// The CLONE_FILES sibling (`--share-files`), or 0.
    pub sibling: i32,
    /// The child that inherited the masters (`--fork-child`), or 0.
    pub child_pid: i32,
    child: Child,
    dir: PathBuf,
    seq: u64,
    /// Last: released after `drop` has killed the victim.
    _ptys: SharedPtys,
}

/// Per thread: its blocked, pending and (process-wide) ignored and caught signals, as
/// /proc/PID/task/TID/status shows them.
pub type SignalState = Vec<(i32, String)>;

impl Victim {
    /// Starts the victim with `args` and waits for its ready file.
    pub fn spawn(args: &[&str]) -> Victim {
        Victim::spawn_as(None, args)
    }

    /// The victim in a private devpts instance (see `Fixture::spawn_private_devpts`): its PTYs
    /// are counted exactly, whatever else runs.
    pub fn spawn_private_devpts(args: &[&str], max: u32) -> Victim {
        let options =
            std::ffi::CString::new(format!("newinstance,ptmxmode=0666,max={max}")).unwrap();
        Victim::spawn_with(None, args, move |cmd| {
            // SAFETY: only raw syscalls on prepared strings between fork and exec.
            unsafe {
                cmd.pre_exec(move || private_devpts(&options));
            }
        })
    }

    /// The same, as user `uid` (root only).
    pub fn spawn_as(uid: Option<u32>, args: &[&str]) -> Victim {
        Victim::spawn_with(uid, args, |_| {})
    }

    fn spawn_with(uid: Option<u32>, args: &[&str], configure: impl FnOnce(&mut Command)) -> Victim {
        let ptys = shared_ptys();
        let dir = temp_dir("victim");
        let ready = dir.join("ready");
        let mut cmd = Command::new(match uid {
            Some(_) => runnable_by_anyone(env!("CARGO_BIN_EXE_ptyreap-victim")),
            None => PathBuf::from(env!("CARGO_BIN_EXE_ptyreap-victim")),
        });
        cmd.args(args)
            .arg("--ready")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(uid) = uid {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
            cmd.uid(uid).gid(uid);
        }
        configure(&mut cmd);
        let child = cmd.spawn().expect("spawning ptyreap-victim");
        let mut v = Victim {
            pid: child.id() as i32,
            sibling: 0,
            child_pid: 0,
            child,
            dir,
            seq: 0,
            _ptys: ptys,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&ready) {
                let f = fields(&text);
                v.sibling = f["sibling"].parse().expect("sibling pid");
                v.child_pid = f["child"].parse().expect("child pid");
                break;
            }
            if let Some(status) = v.child.try_wait().expect("waiting for the victim") {
                panic!("ptyreap-victim {args:?} exited ({status}) before it was ready");
            }
            assert!(
                Instant::now() < deadline,
                "ptyreap-victim {args:?} not ready"
            );
            thread::sleep(Duration::from_millis(5));
        }
        v
    }

    /// Asks the main thread for its status (SIGUSR1) and waits for the answer; None when it
    /// does not answer within 5 s.
    pub fn status(&mut self) -> Option<std::collections::HashMap<String, String>> {
        // SAFETY: kill(2) of our child.
        unsafe { libc::kill(self.pid, libc::SIGUSR1) };
        let path = self.dir.join("ready.status");
        let want = self.seq + 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(text) = fs::read_to_string(&path) {
                let f = fields(&text);
                if f.get("seq").and_then(|s| s.parse::<u64>().ok()) == Some(want) {
                    self.seq = want;
                    return Some(f);
                }
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// The masters (PTY master fds from 100) still open.
    pub fn masters_open(&self) -> Vec<i32> {
        ptmx_fds(self.pid)
            .into_iter()
            .filter(|&fd| fd >= 100)
            .collect()
    }

    /// The tid of the thread named `name`.
    pub fn thread_named(&self, name: &str) -> Option<i32> {
        fs::read_dir(format!("/proc/{}/task", self.pid))
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .find(|tid| {
                fs::read_to_string(format!("/proc/{}/task/{tid}/comm", self.pid))
                    .is_ok_and(|c| c.trim() == name)
            })
    }

    pub fn signal_state(&self) -> SignalState {
        let mut out: SignalState = fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .map(|tid| {
                        let st =
                            fs::read_to_string(format!("/proc/{}/task/{tid}/status", self.pid))
                                .unwrap_or_default();
                        let keep: Vec<&str> = st
                            .lines()
                            .filter(|l| {
                                ["SigPnd:", "ShdPnd:", "SigBlk:", "SigIgn:", "SigCgt:"]
                                    .iter()
                                    .any(|k| l.starts_with(k))
                            })
                            .collect();
                        (tid, keep.join(" "))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// What the CLONE_FILES sibling wrote when its poll ended, if it ended.
    pub fn sibling_report(&self) -> Option<String> {
        fs::read_to_string(self.dir.join("ready.sibling")).ok()
    }

    /// Alive, no thread stopped or traced, every thread's signal state as `before`, the main
    /// thread answering, and none of ptyreap's SIGTRAP/SIGSYS delivered. Returns the status.
    pub fn assert_healthy(
        &mut self,
        before: &SignalState,
    ) -> std::collections::HashMap<String, String> {
        if let Some(status) = self.child.try_wait().expect("waiting for the victim") {
            panic!("the victim died: {status}");
        }
        assert_running(self.pid);
        assert_eq!(&self.signal_state(), before, "signal state changed");
        let status = self
            .status()
            .expect("the victim's main thread no longer answers");
        assert_eq!(
            status["sigtrap"], "0",
            "a SIGTRAP reached the app: {status:?}"
        );
        assert_eq!(
            status["sigsys"], "0",
            "a SIGSYS reached the app: {status:?}"
        );
        status
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `key=value` words of a line.
fn fields(text: &str) -> std::collections::HashMap<String, String> {
    text.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Spawns a binary the test has just copied. A process another test thread forks meanwhile
/// holds a copy of the fd that wrote the copy until it execs, and exec fails with ETXTBSY until
/// then: tried again for up to two seconds.
pub fn spawn_copied_binary(cmd: &mut Command) -> Child {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            other => return other.expect("spawning the copied binary"),
        }
    }
}
