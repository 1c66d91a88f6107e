//! The guardian: a process of its own that outlives the reaper inside the suspension window.
//!
//! On Linux the kernel lets go of a tracer's tracees when the tracer dies; on macOS nothing
//! resumes threads suspended by a process that died (`thread_suspend` counts have no owner). So
//! before anything is suspended the reaper starts the guardian, which takes its own task port for
//! the app (`task_for_pid`, as root), says it is ready, and reads the reaper's log
//! (guardian_log.rs) until the pipe ends. A log ending in `D` means all was put back; any other
//! end means the reaper died, and the guardian first terminates our thread (and frees its stack),
//! then resumes the threads it had announced (once each, only while their count is above the
//! announced one).
//!
//! It runs as its own executable, `ptyreap-guardian` (a hard link to ptyreap, or a copy when the
//! binary is on another volume, in the root-only directory /var/run/ptyreap): a process's name on
//! macOS is its executable file's name, and `killall ptyreap` or `pkill ptyreap` must not take the
//! guardian down with the reaper it guards. It leaves the reaper's session and ignores the
//! terminal's signals, so a ^C that kills the reaper does not kill it too.
//!
//! Why ours goes first: between calls our thread is parked by a suspension, and a death there is
//! harmless. But while a call runs (from its resume to our reply: a large share of the window),
//! our thread ends at the sentinel with a fault whose handler was the reaper's port. With that
//! port dead the kernel passes the fault to the task's and then the host's handler
//! (osfmk/kern/exception.c `exception_triage_thread`); the host's turns it into SIGSEGV
//! (bsd/uxkern/ux_handler.c), which our thread, created with every signal blocked, never takes:
//! it returns to the sentinel and faults again, spinning, until the guardian terminates it. An
//! app with its own task-level EXC_BAD_ACCESS handler (a crash reporter such as KSCrash or
//! PLCrashReporter) may see those faults and report a crash, so the guardian must be quick: it
//! acts as soon as the pipe ends.

use super::guardian_log::{Log, Record};
use super::ports::{self, Port};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long the guardian may take to get its task port.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// The guardian's executable name: what `ps`, `killall` and `pkill` see.
pub const NAME: &str = "ptyreap-guardian";
/// Where its executable lives: root's alone.
const DIR: &str = "/var/run/ptyreap";
/// The guardian's command line: `ptyreap-guardian --guardian-of PID`, the log on fd 3, the
/// ready byte on fd 4.
const FLAG: &str = "--guardian-of";
const LOG_FD: i32 = 3;
const READY_FD: i32 = 4;

pub struct Guardian {
    log: Option<std::fs::File>,
    child: Child,
}

impl Guardian {
    /// Starts the guardian for `pid` and waits until it holds the app's task port.
    pub fn start(pid: i32) -> Result<Guardian, String> {
        let exe = executable()?;
        let (log_read, log_write) = pipe()?;
        let (ready_read, ready_write) = pipe()?;
        let (log_fd, ready_fd) = (log_read.as_raw_fd(), ready_write.as_raw_fd());
        let mut cmd = Command::new(&exe);
        cmd.arg0(NAME)
            .arg(FLAG)
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec. The pipe ends are at 10 or
        // above (`pipe`), so moving them to 3 and 4 overwrites neither; dup2's copies are not
        // close-on-exec, everything else of ours is.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(log_fd, LOG_FD) < 0 || libc::dup2(ready_fd, READY_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the guardian process ({}): {e}", exe.display()))?;
        drop(log_read);
        drop(ready_write);
        let guardian = Guardian {
            log: Some(std::fs::File::from(log_write)),
            child,
        };
        match read_byte(&ready_read, READY_TIMEOUT) {
            Some(b'R') => Ok(guardian),
            Some(_) => Err("the guardian process could not get the target's task port".into()),
            None => Err("the guardian process did not start in time".into()),
        }
    }

    /// Announces a record; an announcement that cannot be made stops the act it announces.
    pub fn announce(&mut self, record: Record) -> Result<(), String> {
        let log = self.log.as_mut().ok_or("the guardian has been let go")?;
        log.write_all(record.line().as_bytes())
            .map_err(|e| format!("cannot reach the guardian process: {e}"))
    }
}

impl Drop for Guardian {
    /// Everything is put back once the guards declared after the guardian have dropped: `D`,
    /// then the guardian exits and is reaped.
    fn drop(&mut self) {
        let _ = self.announce(Record::Done);
        self.log = None;
        // it exits as soon as it reads `D` or the end of the pipe
        let _ = self.child.wait();
    }
}

/// The guardian's executable: a hard link to ours named `ptyreap-guardian` in a directory only
/// root may write, made again whenever it is not ours (a new ptyreap was installed); a copy when
/// the two are on different volumes (the code signature lives inside the file, so a copy keeps
/// the debugger entitlement).
fn executable() -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find ptyreap's own executable: {e}"))?;
    let ours =
        std::fs::metadata(&exe).map_err(|e| format!("cannot stat {}: {e}", exe.display()))?;
    let dir = Path::new(DIR);
    private_dir(dir)?;
    let link = dir.join(NAME);
    if let Ok(m) = std::fs::symlink_metadata(&link) {
        if m.file_type().is_file() && m.dev() == ours.dev() && m.ino() == ours.ino() {
            return Ok(link);
        }
        std::fs::remove_file(&link)
            .map_err(|e| format!("cannot replace {}: {e}", link.display()))?;
    }
    if std::fs::hard_link(&exe, &link).is_ok() {
        return Ok(link);
    }
    let partial = dir.join(format!(".{NAME}.{}", std::process::id()));
    let copied = std::fs::copy(&exe, &partial)
        .and_then(|_| std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&partial, &link));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "cannot put the guardian's executable at {}: {e}",
            link.display()
        ));
    }
    Ok(link)
}

/// `dir`, made if missing: a real directory of ours that no one else may write or enter.
fn private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let m = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot stat {}: {e}", dir.display()))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !m.file_type().is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is not a directory only ptyreap's user may write: remove it and try again",
            dir.display()
        ));
    }
    Ok(())
}

/// A close-on-exec pipe whose two ends are numbered 10 or above (see `Guardian::start`).
fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fresh fds from pipe, owned from here on.
    let raw = unsafe { [OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])] };
    let [read, write] = raw.map(|fd| {
        // SAFETY: F_DUPFD_CLOEXEC on an fd of ours; the original closes when `fd` drops.
        let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        // SAFETY: a fresh fd from fcntl.
        (high >= 0).then(|| unsafe { OwnedFd::from_raw_fd(high) })
    });
    match (read, write) {
        (Some(r), Some(w)) => Ok((r, w)),
        _ => Err(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        )),
    }
}

fn read_byte(fd: &OwnedFd, timeout: Duration) -> Option<u8> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd of ours.
    if unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) } != 1 {
        return None;
    }
    let mut b = 0u8;
    // SAFETY: one byte into `b`.
    (unsafe { libc::read(fd.as_raw_fd(), (&mut b as *mut u8).cast(), 1) } == 1).then_some(b)
}

/// When this process is the guardian (`ptyreap-guardian --guardian-of PID`, started by
/// `Guardian::start`): its whole life, ending in an exit. Otherwise returns at once.
pub fn run_if_guardian() {
    let mut args = std::env::args_os();
    let named = args
        .next()
        .as_deref()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == NAME);
    if !named || args.next().as_deref() != Some(std::ffi::OsStr::new(FLAG)) {
        return;
    }
    let pid = args.next().and_then(|p| p.to_str()?.parse::<i32>().ok());
    let is_pipe = |fd: i32| {
        // SAFETY: fstat into a zeroed stat of ours.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
        ok && st.st_mode & libc::S_IFMT == libc::S_IFIFO
    };
    let (Some(pid), None, true, true) = (pid, args.next(), is_pipe(LOG_FD), is_pipe(READY_FD))
    else {
        eprintln!("ptyreap-guardian: started by ptyreap only, during a reap");
        std::process::exit(2);
    };
    // SAFETY: fds 3 and 4 were handed to us as the two pipes (checked above), ours alone now.
    let (log, ready) = unsafe { (OwnedFd::from_raw_fd(LOG_FD), OwnedFd::from_raw_fd(READY_FD)) };
    guard(pid, log, ready)
}

/// The guardian process's whole life.
fn guard(pid: i32, log_read: OwnedFd, ready: OwnedFd) -> ! {
    // SAFETY: plain calls in our own process (setsid was called before exec).
    unsafe {
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGPIPE,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGALRM,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let say = |b: u8| {
        // SAFETY: one byte from `b`.
        unsafe { libc::write(ready.as_raw_fd(), (&b as *const u8).cast(), 1) };
    };
    let Ok(task) = ports::task_for_pid(pid) else {
        say(b'E');
        std::process::exit(1)
    };
    say(b'R');
    drop(ready);
    let mut log = Log::default();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into our buffer.
        let n = unsafe { libc::read(log_read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            log.feed(&buf[..n as usize]);
            continue;
        }
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break;
    }
    if !log.done() {
        repair(&task, &log);
    }
    std::process::exit(0)
}

/// The reaper died inside the window: put the app back. Our thread first (terminated, then
/// its stack freed), so that no fault of ours is left for the app's handlers once it runs.
fn repair(task: &Port, log: &Log) {
    let Ok(threads) = ports::threads(task) else {
        return; // the app itself is gone
    };
    let now: Vec<(u64, i32)> = threads
        .iter()
        .filter_map(|t| Some((ports::thread_id(t)?, ports::suspend_count(t)?)))
        .collect();
    let repairs = log.repairs(&now);
    let with_id = |wanted: &[u64]| {
        threads
            .iter()
            .filter(|t| ports::thread_id(t).is_some_and(|id| wanted.contains(&id)))
            .collect::<Vec<_>>()
    };
    for t in with_id(&repairs.terminate) {
        // SAFETY: our own thread in the app, created by the reaper.
        unsafe { ports::thread_terminate(t.name()) };
    }
    for &stack in &repairs.free_stacks {
        // SAFETY: the stack the reaper allocated for a thread of ours that was still alive, so
        // never freed; that thread is terminated above and runs on it no more.
        unsafe { mach2::vm::mach_vm_deallocate(task.name(), stack, ports::OUR_STACK_SIZE) };
    }
    for t in with_id(&repairs.resume) {
        // SAFETY: a thread the reaper suspended once.
        unsafe { mach2::thread_act::thread_resume(t.name()) };
    }
}
