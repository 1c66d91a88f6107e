//! Real programs that live with PTYs the way automation does (issue 17): a pexpect batch runner
//! collecting job output after the jobs exited, Tcl expect's `fork` + `disconnect`, socat's
//! emulated serial port waiting for its client, and sshd logins. Each runs in a private devpts
//! instance (a mount namespace of its own), so ptyreap only ever sees PTYs this test made and the
//! counts are exact; everything in that namespace is killed on drop. Each case first runs without
//! ptyreap (the control) and then with it, and asserts that the program's later operations go
//! exactly as in the control. The helper scripts are in tests/it/programs/; `.ci/run` installs
//! the programs (expect, socat, openssh-server and -client from apt, pexpect from PyPI).

use crate::support::{self, ptmx_fds, ptyreap_with, ptys_in_use_seen_by, require_root, wait_for};
use serde_json::Value;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/programs");
/// How long a program may take to get ready, to finish, or to answer.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(20);

/// True when `ok` (the program is there). Otherwise: panics when CI is set (`.ci/run` installs
/// it), else prints that the test is skipped and returns false.
fn require(ok: bool, what: &str, install: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{what} is missing and CI is set ({install}; .ci/run installs it)");
    }
    eprintln!("skipped: {what} is missing ({install})");
    false
}

/// An executable named `name` on PATH, or at `name` when it is a path.
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return is_exe(Path::new(name));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_exe(&dir.join(name))))
}

/// Root, and every program in `programs` (name, apt package).
fn require_all(programs: &[(&str, &str)]) -> bool {
    if !require_root() {
        return false;
    }
    programs
        .iter()
        .all(|(name, package)| require(on_path(name), name, &format!("apt-get install {package}")))
}

/// A program started in a private devpts instance (its own mount namespace), with a temp dir.
/// Drop kills every process in that mount namespace (the program, its children, what it forked
/// and disconnected) and removes the dir.
struct Sandbox {
    root: Child,
    pid: i32,
    /// `/proc/PID/ns/mnt` of the program: every process that shows it is one of ours.
    mnt_ns: PathBuf,
    /// That namespace held open, so its number is not reused by another test's namespace
    /// while this one's drop looks for processes (they may all have exited by then).
    _mnt_ns_held: fs::File,
    dir: PathBuf,
    /// Last: released after the processes are gone.
    _ptys: support::SharedPtys,
}

impl Sandbox {
    /// Starts `cmd` (stdin /dev/null; stdout and stderr to `DIR/out` and `DIR/err` unless the
    /// caller set them) in a private devpts instance with at most 16 PTYs.
    fn start(tag: &str, make: impl FnOnce(&Path) -> Command) -> Sandbox {
        let ptys = support::shared_ptys();
        let dir = support::temp_dir(tag);
        let mut cmd = make(&dir);
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("out")).unwrap())
            .stderr(fs::File::create(dir.join("err")).unwrap());
        // SAFETY: only raw syscalls on static strings between fork and exec.
        unsafe {
            cmd.pre_exec(|| support::private_devpts(c"newinstance,ptmxmode=0666,max=16"));
        }
        let root = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let pid = root.id() as i32;
        // spawn returns after the exec: the namespace is the program's own by now
        let mnt_ns = fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("reading ns/mnt");
        let held = fs::File::open(format!("/proc/{pid}/ns/mnt")).expect("opening ns/mnt");
        // the same namespace (the program could have exited in between: then none of ours)
        assert_eq!(
            fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().as_ref(),
            Some(&mnt_ns),
            "the program exited at once: {}",
            fs::read_to_string(dir.join("err")).unwrap_or_default()
        );
        Sandbox {
            root,
            pid,
            mnt_ns,
            _mnt_ns_held: held,
            dir,
            _ptys: ptys,
        }
    }

    /// The live (not zombie) processes in the program's mount namespace, sorted.
    fn pids(&self) -> Vec<i32> {
        let mut out: Vec<i32> = fs::read_dir("/proc")
            .expect("reading /proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| {
                fs::read_link(format!("/proc/{p}/ns/mnt")).is_ok_and(|ns| ns == self.mnt_ns)
                    && alive(p)
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.file(name)).unwrap_or_default()
    }

    /// The program's own exit code (128 + signal), waiting up to `PROGRAM_TIMEOUT`.
    fn wait_exit(&mut self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + PROGRAM_TIMEOUT;
        loop {
            if let Some(s) = self.root.try_wait().expect("waiting for the program") {
                return s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
            }
            assert!(
                Instant::now() < deadline,
                "the program did not exit within {PROGRAM_TIMEOUT:?}; stderr: {}",
                self.read("err")
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `PROGRAM_TIMEOUT` for `DIR/name` (written whole by a rename); panics with the
    /// program's exit status and output when it does not come or every process has gone.
    fn wait_file(&mut self, name: &str) -> String {
        let path = self.file(name);
        let mut gone = false;
        wait_for(PROGRAM_TIMEOUT, || {
            gone = self.pids().is_empty();
            path.exists() || gone
        });
        if !path.exists() {
            let status = self.root.try_wait().ok().flatten();
            panic!(
                "no {name} ({}); the program: {status:?}; processes {:?}; stdout: {}; stderr: {}",
                if gone {
                    "every process gone"
                } else {
                    "timed out"
                },
                self.pids(),
                self.read("out"),
                self.read("err")
            );
        }
        self.read(name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                // SAFETY: kill(2) of a process in the mount namespace this test made.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.root.kill();
        let _ = self.root.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // the state follows the parenthesised comm, which may contain anything
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// `ptyreap --pid PID --min-idle 0 --yes --json` and then `extra`, with the default `--observe`
/// window (no PTYREAP_OBSERVE); printed for --nocapture.
fn reap(pid: i32, extra: &[&str]) -> (support::Output, Value) {
    let pid_s = pid.to_string();
    let mut args = vec!["--pid", &pid_s, "--min-idle", "0", "--yes", "--json"];
    args.extend_from_slice(extra);
    let started = Instant::now();
    // the defaults, as a user runs it: support's ptyreap shortens the observation window
    let out = ptyreap_with(&args, |c| {
        c.env_remove("PTYREAP_OBSERVE");
    });
    eprintln!(
        "ptyreap {args:?}: exit {} after {:?}\n{}{}",
        out.code,
        started.elapsed(),
        out.stdout,
        out.stderr
    );
    let doc = out.json();
    (out, doc)
}

/// The `masters[]` rows of the first target.
fn rows(doc: &Value) -> Vec<Value> {
    doc["targets"][0]["masters"]
        .as_array()
        .unwrap_or_else(|| panic!("no targets[0].masters: {doc}"))
        .clone()
}

fn row(rows: &[Value], fd: i32) -> &Value {
    rows.iter()
        .find(|r| r["fd"] == fd)
        .unwrap_or_else(|| panic!("no row for fd {fd}: {rows:#?}"))
}

fn touch(path: &Path) {
    fs::write(path, b"").unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// pexpect: a batch runner collects each job's output after the job has exited

fn pexpect_installed() -> bool {
    on_path("python3")
        && Command::new("python3")
            .args(["-c", "import pexpect"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The runner's result lines and, when `reap_args` is given, ptyreap's JSON and the masters.
fn pexpect_batch(reap_args: Option<&[&str]>) -> (Vec<String>, Option<(Value, Vec<i32>)>) {
    let mut sb = Sandbox::start("pexpect", |dir| {
        let mut c = Command::new("python3");
        c.arg(format!("{SCRIPTS}/pexpect_batch.py"))
            .arg(dir)
            .arg("3");
        c
    });
    let ready = sb.wait_file("ready");
    let nums: Vec<i32> = ready
        .split_whitespace()
        .map(|w| w.parse().expect("a number in the ready file"))
        .collect();
    assert_eq!(nums[0], sb.pid, "the runner is the program started");
    let masters = nums[1..].to_vec();
    assert_eq!(
        ptmx_fds(sb.pid),
        masters,
        "the runner's masters are its jobs'"
    );
    let reaped = reap_args.map(|extra| {
        let (out, doc) = reap(sb.pid, extra);
        assert_eq!(out.code, 0, "{out:?}");
        (doc, masters.clone())
    });
    touch(&sb.file("go"));
    let code = sb.wait_exit();
    assert_eq!(code, 0, "the runner failed: {}", sb.read("err"));
    let lines = sb.read("out").lines().map(String::from).collect();
    (lines, reaped)
}

fn assert_unread_kept(doc: &Value, masters: &[i32]) {
    let rows = rows(doc);
    for &fd in masters {
        let r = row(&rows, fd);
        assert_eq!(
            r["verdict"], "unread",
            "fd {fd}: the job's output waits there: {r}"
        );
        assert_eq!(r["action"], "keep", "fd {fd}: {r}");
        assert!(
            r["unread_bytes"].as_u64().is_some_and(|n| n > 0),
            "fd {fd}: {r}"
        );
    }
}

/// Root and pexpect.
fn pexpect_available() -> bool {
    require_root()
        && require(
            pexpect_installed(),
            "pexpect",
            "python3 -m pip install pexpect",
        )
}

#[test]
fn pexpect_batch_results_survive_a_reap_with_the_defaults() {
    if !pexpect_available() {
        return;
    }
    let (control, _) = pexpect_batch(None);
    let expected: Vec<String> = (0..3)
        .map(|i| format!("job {i}: b'result-{i}\\r\\n'"))
        .collect();
    assert_eq!(control, expected, "the control run");
    let (lines, reaped) = pexpect_batch(Some(&[]));
    let (doc, masters) = reaped.unwrap();
    assert_eq!(lines, control, "a result was lost to the reap: {doc:#}");
    assert_unread_kept(&doc, &masters);
}

#[test]
fn pexpect_batch_results_survive_a_reap_with_close() {
    if !pexpect_available() {
        return;
    }
    let (control, _) = pexpect_batch(None);
    let (lines, reaped) = pexpect_batch(Some(&["--method", "close"]));
    let (doc, masters) = reaped.unwrap();
    assert_eq!(lines, control, "a result was lost to the reap: {doc:#}");
    assert_unread_kept(&doc, &masters);
}

// ---------------------------------------------------------------------------------------------
// Tcl expect: fork + disconnect, then a new spawn, a close and a round trip in the child

struct ForkRun {
    /// DIR/result: "OK", an error, or "" when the child died before writing it.
    result: String,
    stderr: String,
    reaped: Option<Value>,
}

fn expect_fork(with_reap: bool) -> ForkRun {
    // under a shell that stays (the sandbox's first process must outlive the parent, which
    // exits at once) and writes the parent's exit status to DIR/parent
    let mut sb = Sandbox::start("expect", |dir| {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"expect -f "$0" "$1"; echo $? > "$1/parent"; exec sleep 120"#)
            .arg(format!("{SCRIPTS}/expect_fork.exp"))
            .arg(dir);
        c
    });
    // the parent exits at once; its forked child carries on
    let parent = sb.wait_file("parent");
    assert_eq!(parent.trim(), "0", "the parent: {}", sb.read("err"));
    let ready = sb.wait_file("ready");
    let child: i32 = ready
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .expect("the child's pid in the ready file");
    let masters = ptmx_fds(child);
    assert_eq!(masters.len(), 3, "true, true, cat: {masters:?}");
    let reaped = with_reap.then(|| {
        let (out, doc) = reap(child, &[]);
        assert_eq!(out.code, 0, "{out:?}");
        doc
    });
    touch(&sb.file("go"));
    let result_file = sb.file("result");
    let done = wait_for(PROGRAM_TIMEOUT, || result_file.exists() || !alive(child));
    assert!(done, "the forked child neither finished nor died");
    // it writes the result just before it exits
    wait_for(Duration::from_secs(5), || !alive(child));
    ForkRun {
        result: sb.read("result").trim().to_string(),
        stderr: sb.read("err"),
        reaped,
    }
}

#[test]
fn tcl_expect_fork_disconnect_child_carries_on_after_a_reap() {
    if !require_all(&[("expect", "expect")]) {
        return;
    }
    let control = expect_fork(false);
    assert_eq!(
        control.result, "OK",
        "the control run; stderr: {}",
        control.stderr
    );
    let run = expect_fork(true);
    let doc = run.reaped.as_ref().unwrap();
    assert!(
        !run.stderr.contains("duplicate channel names"),
        "Tcl aborted on a reused fd number: {}\n{doc:#}",
        run.stderr
    );
    assert_eq!(
        run.result, control.result,
        "the forked child did not carry on as in the control (empty: it died; stderr: {})\n{doc:#}",
        run.stderr
    );
    for r in rows(doc) {
        assert_ne!(
            r["opened_by"], "inherited",
            "a fork without exec is no evidence that the program never saw the fd: {r}"
        );
        assert_ne!(
            r["method"], "close",
            "the default never closes such an fd: {r}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// socat: an emulated serial port (PTY,wait-slave) polls its master until a client opens it

const SOCAT_DATA: &str = "hello-from-socat";

struct PortRun {
    /// What the client read: the data, or "error: ...".
    client: String,
    socat_exit: i32,
    reaped: Option<Value>,
}

/// Opens the slave inside the sandbox (`/proc/PID/root` + the link's target) and reads until
/// `SOCAT_DATA` arrived, EOF or an error, for at most 10 s.
fn socat_client(sb: &Sandbox) -> String {
    let target = match fs::read_link(sb.file("port")) {
        Ok(t) => t,
        Err(e) => return format!("error: the port link: {e}"),
    };
    let path = format!("/proc/{}/root{}", sb.pid, target.display());
    let mut port = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return format!("error: opening {path}: {e}"),
    };
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains(SOCAT_DATA) && Instant::now() < deadline {
        let mut buf = [0u8; 256];
        match port.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return format!("error: reading: {e} (after {got:?})"),
        }
    }
    String::from_utf8_lossy(&got).trim().to_string()
}

fn socat_port(reap_args: Option<&[&str]>) -> PortRun {
    let mut sb = Sandbox::start("socat", |dir| {
        let mut c = Command::new("socat");
        c.arg("-d")
            .arg("-d")
            .arg(format!(
                "PTY,link={},raw,echo=0,wait-slave",
                dir.join("port").display()
            ))
            .arg(format!("SYSTEM:echo {SOCAT_DATA}; sleep 5"));
        c
    });
    let port = sb.file("port");
    assert!(
        wait_for(PROGRAM_TIMEOUT, || fs::symlink_metadata(&port).is_ok()),
        "socat made no port: {}",
        sb.read("err")
    );
    let masters = ptmx_fds(sb.pid);
    assert_eq!(masters.len(), 1, "socat's one master: {masters:?}");
    let reaped = reap_args.map(|extra| {
        let (out, doc) = reap(sb.pid, extra);
        assert_eq!(out.code, 0, "{out:?}");
        let r = row(&rows(&doc), masters[0]).clone();
        (doc, r)
    });
    let client = socat_client(&sb);
    // the client has closed the slave: socat reads EIO and exits
    let socat_exit = sb.wait_exit();
    if let Some((_, r)) = &reaped {
        eprintln!("socat's master row: {r}");
    }
    eprintln!("socat's log:\n{}", sb.read("err"));
    PortRun {
        client,
        socat_exit,
        reaped: reaped.map(|(doc, _)| doc),
    }
}

fn socat_case(extra: &[&str]) {
    if !require_all(&[("socat", "socat")]) {
        return;
    }
    let control = socat_port(None);
    assert_eq!(control.client, SOCAT_DATA, "the control run");
    assert_eq!(control.socat_exit, 0, "the control run");
    let run = socat_port(Some(extra));
    let doc = run.reaped.as_ref().unwrap();
    assert_eq!(
        (run.client.as_str(), run.socat_exit),
        (control.client.as_str(), control.socat_exit),
        "the client did not get its data as in the control:\n{doc:#}"
    );
    let rows = rows(doc);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    assert_eq!(r["verdict"], "tracked", "socat polls it once a second: {r}");
    assert_eq!(r["action"], "keep", "{r}");
    assert!(
        r["watched_by"].as_array().is_some_and(|w| w
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.contains("poll")))),
        "the poll loop is named: {r}"
    );
}

#[test]
fn socat_wait_slave_port_survives_a_reap_with_the_defaults() {
    socat_case(&[]);
}

#[test]
fn socat_wait_slave_port_survives_a_reap_with_close() {
    socat_case(&["--method", "close"]);
}

// ---------------------------------------------------------------------------------------------
// sshd: a root login with a key on 127.0.0.1, an interactive shell over `ssh -tt`

struct Sshd {
    sb: Sandbox,
    port: u16,
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sshd {
    fn start() -> Sshd {
        // the privilege separation directory sshd insists on (the package makes it too)
        fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let sb = Sandbox::start("sshd", |dir| {
            for key in ["host_key", "id"] {
                run_ok(
                    Command::new("ssh-keygen")
                        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                        .arg(dir.join(key)),
                );
            }
            fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
            let d = dir.display();
            fs::write(
                dir.join("sshd_config"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                     PubkeyAuthentication yes\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n\
                     PrintMotd no\nPrintLastLog no\nLogLevel VERBOSE\n"
                ),
            )
            .unwrap();
            let mut c = Command::new("/usr/sbin/sshd");
            c.args(["-D", "-e", "-f"]).arg(dir.join("sshd_config"));
            c
        });
        let listening = wait_for(PROGRAM_TIMEOUT, || {
            sb.read("err").contains("Server listening")
        });
        assert!(listening, "sshd did not start: {}", sb.read("err"));
        Sshd { sb, port }
    }

    /// The sshd processes (not the listener) that hold PTY masters, with their fds.
    fn master_holders(&self) -> Vec<(i32, Vec<i32>)> {
        self.sb
            .pids()
            .into_iter()
            .filter(|&p| p != self.sb.pid)
            .map(|p| (p, ptmx_fds(p)))
            .filter(|(_, fds)| !fds.is_empty())
            .collect()
    }

    fn ptys(&self) -> usize {
        ptys_in_use_seen_by(self.sb.pid)
    }
}

/// An `ssh -tt` client with an interactive login shell; its output is collected on a thread.
struct Session {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Session {
    fn open(sshd: &Sshd) -> Session {
        let dir = &sshd.sb.dir;
        let mut child = Command::new("ssh")
            .args(["-tt", "-F", "/dev/null", "-i"])
            .arg(dir.join("id"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
                "-p",
            ])
            .arg(sshd.port.to_string())
            .arg("root@127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning ssh");
        let output = Arc::new(Mutex::new(Vec::new()));
        for mut stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = Arc::clone(&output);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        Session { child, output }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Types `echo M$((N*7))` and waits up to 15 s for its result (not the echoed input):
    /// true when it came back.
    fn round_trip(&mut self, n: u32) -> bool {
        let want = format!("M{}", n * 7);
        let stdin = self.child.stdin.as_mut().unwrap();
        if writeln!(stdin, "echo M$(({n}*7))")
            .and_then(|_| stdin.flush())
            .is_err()
        {
            return false;
        }
        wait_for(Duration::from_secs(15), || self.text().contains(&want))
    }

    /// Exited (the session ended), within `limit`.
    fn exits_within(&mut self, limit: Duration) -> bool {
        wait_for(limit, || matches!(self.child.try_wait(), Ok(Some(_))))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a session and waits until it echoes; returns it and the one sshd process holding its
/// master(s).
fn login(sshd: &Sshd) -> (Session, i32, Vec<i32>) {
    let mut s = Session::open(sshd);
    assert!(
        s.round_trip(1),
        "the login shell does not answer: {}\nsshd: {}",
        s.text(),
        sshd.sb.read("err")
    );
    let holders = sshd.master_holders();
    eprintln!(
        "master holders: {:?}",
        holders
            .iter()
            .map(|(p, fds)| (
                *p,
                fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " "),
                fds.clone()
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        holders.len(),
        1,
        "one session process holds the master: {holders:?}"
    );
    let (pid, fds) = holders.into_iter().next().unwrap();
    assert_eq!(sshd.ptys(), 1, "one PTY for the login");
    (s, pid, fds)
}

/// The control: a login that sits idle as long as a reap takes still answers, and logging out
/// frees its PTY.
fn sshd_control(sshd: &Sshd) {
    let (mut s, _, _) = login(sshd);
    thread::sleep(Duration::from_secs(2));
    assert!(s.round_trip(2), "the control login: {}", s.text());
    assert_eq!(sshd.ptys(), 1, "the control login's PTY");
    let stdin = s.child.stdin.as_mut().unwrap();
    let _ = writeln!(stdin, "exit");
    assert!(
        s.exits_within(PROGRAM_TIMEOUT),
        "the control login did not log out"
    );
    assert!(
        wait_for(PROGRAM_TIMEOUT, || sshd.ptys() == 0),
        "the control login's PTY stayed"
    );
}

/// Root, sshd and the ssh client.
fn sshd_available() -> bool {
    require_all(&[
        ("/usr/sbin/sshd", "openssh-server"),
        ("ssh", "openssh-client"),
    ])
}

#[test]
fn sshd_login_is_untouched_without_include_stale() {
    if !sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    sshd_control(&sshd);
    let (mut s, pid, fds) = login(&sshd);
    let (out, doc) = reap(pid, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows = rows(&doc);
    assert_eq!(rows.len(), fds.len(), "{rows:#?}");
    for r in &rows {
        assert_eq!(r["verdict"], "live", "{r}");
        assert_eq!(r["action"], "keep", "{r}");
    }
    assert_eq!(
        ptmx_fds(pid),
        fds,
        "the session's masters are all still open"
    );
    assert!(
        s.round_trip(2),
        "typing no longer works after the reap: {}",
        s.text()
    );
    assert_eq!(sshd.ptys(), 1, "the login's PTY");
}

#[test]
fn sshd_login_is_hung_up_and_freed_with_include_stale() {
    if !sshd_available() {
        return;
    }
    let sshd = Sshd::start();
    sshd_control(&sshd);
    let (mut s, pid, fds) = login(&sshd);
    let pty_nodes = || -> Vec<String> {
        fs::read_dir(format!("/proc/{}/root/dev/pts", sshd.sb.pid))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(String::from))
                    .filter(|n| n.parse::<u32>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (out, doc) = reap(pid, &["--include-stale", "0"]);
    // the kernel's truth right after ptyreap answered
    let nodes_after = pty_nodes();
    assert_eq!(out.code, 0, "{out:?}");
    let rows = rows(&doc);
    assert_eq!(rows.len(), fds.len(), "{rows:#?}");
    let results: Vec<&str> = rows
        .iter()
        .map(|r| r["result"].as_str().unwrap_or(""))
        .collect();
    for r in &rows {
        assert_eq!(r["verdict"], "stale", "{r}");
        assert_eq!(r["action"], "close", "{r}");
        let result = r["result"].as_str().unwrap_or("");
        assert!(
            ["closed", "hung_up"].contains(&result),
            "the idle login is released: {r}"
        );
        if result == "hung_up" {
            let detail = r["detail"].as_str().unwrap_or("");
            assert!(
                detail.contains("freed when"),
                "hung_up names who still holds the PTY: {r}"
            );
        }
    }
    if results.contains(&"closed") {
        assert!(
            nodes_after.is_empty(),
            "'closed' but the PTY is still in the kernel's count: {nodes_after:?}\n{rows:#?}"
        );
    } else {
        eprintln!("hung up, not yet freed; PTYs right after: {nodes_after:?}");
    }
    // either way the hang-up ends the session and the PTY goes
    assert!(
        s.exits_within(PROGRAM_TIMEOUT),
        "the session did not end after the hang-up: {}",
        s.text()
    );
    assert!(
        wait_for(PROGRAM_TIMEOUT, || sshd.ptys() == 0),
        "the PTY stayed after the hang-up: {:?}",
        pty_nodes()
    );
    // sshd itself carries on as in the control: a new login answers
    let (mut again, _, _) = login(&sshd);
    assert!(
        again.round_trip(3),
        "a new login after the reap: {}",
        again.text()
    );
}

// ---------------------------------------------------------------------------------------------
// tmux: an idle window hung up with --include-stale, the other window untouched

/// A tmux server (in the sandbox's devpts instance) with two windows, each an idle shell.
/// `--include-stale 0` on one window's master hangs that window up: its shell ends, tmux closes
/// the window and its master, and the PTY leaves the instance (`closed`); the other window types
/// and echoes as before. Without `--include-stale` nothing is touched.
#[test]
fn an_idle_tmux_window_is_hung_up_with_include_stale() {
    if !require_all(&[("tmux", "tmux")]) {
        return;
    }
    let sb = Sandbox::start("tmux-stale", |dir| {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(dir.join("sock")).args(
            "-f /dev/null new-session -d -s t -x 80 -y 24 sh ; new-window -t t sh".split(' '),
        );
        c
    });
    let sock = sb.file("sock");
    let tmux = |args: &[&str]| -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&sock)
            .args(args)
            .output()
            .expect("running tmux");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        wait_for(PROGRAM_TIMEOUT, || tmux(&["list-windows", "-t", "t"])
            .lines()
            .count()
            == 2),
        "tmux did not start two windows: {}",
        sb.read("err")
    );
    let server: i32 = tmux(&["display", "-p", "#{pid}"])
        .parse()
        .expect("tmux server pid");
    let tty_of = |w: &str| tmux(&["display", "-p", "-t", &format!("t:{w}"), "#{pane_tty}"]);
    let index = |tty: &str| -> u32 { tty.rsplit('/').next().unwrap().parse().unwrap() };
    let (keep_tty, stale_tty) = (tty_of("0"), tty_of("1"));
    let master_of = |idx: u32| -> i32 {
        ptmx_fds(server)
            .into_iter()
            .find(|&fd| support::tty_index(server, fd) == Some(idx))
            .unwrap_or_else(|| panic!("no master of pts {idx} in the tmux server"))
    };
    let stale_fd = master_of(index(&stale_tty));
    let echoes = |w: &str, word: &str| -> bool {
        tmux(&[
            "send-keys",
            "-t",
            &format!("t:{w}"),
            &format!("echo {word}"),
            "Enter",
        ]);
        wait_for(Duration::from_secs(5), || {
            tmux(&["capture-pane", "-p", "-t", &format!("t:{w}")])
                .lines()
                .any(|l| l.trim() == word)
        })
    };
    // control: both windows answer
    assert!(echoes("0", "control0") && echoes("1", "control1"));
    let in_use = ptys_in_use_seen_by(server);
    assert_eq!(in_use, 2, "two windows, two PTYs");

    // without --include-stale: live, kept
    let fd = stale_fd.to_string();
    let (out, doc) = reap(server, &["--fd", &fd]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(row(&rows(&doc), stale_fd)["verdict"], "live", "{doc}");
    assert!(echoes("1", "still1"));

    // with it: that window is hung up; its PTY leaves the instance
    let (out, doc) = reap(server, &["--fd", &fd, "--include-stale", "0"]);
    let r = row(&rows(&doc), stale_fd).clone();
    assert_eq!(r["verdict"], "stale", "{r}");
    assert_eq!(r["result"], "closed", "{r}");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        wait_for(Duration::from_secs(5), || tmux(&[
            "list-windows",
            "-t",
            "t"
        ])
        .lines()
        .count()
            == 1),
        "the hung-up window is still there"
    );
    assert_eq!(ptys_in_use_seen_by(server), 1, "its PTY left the instance");
    assert_eq!(tty_of("0"), keep_tty);
    assert!(echoes("0", "after0"), "the other window stopped answering");
    tmux(&["kill-server"]);
}
