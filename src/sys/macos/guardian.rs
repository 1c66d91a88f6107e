//! The guardian: a process of its own that outlives the reaper inside the suspension window.
//!
//! On Linux the kernel lets go of a tracer's tracees when the tracer dies; on macOS nothing
//! resumes threads suspended by a process that died. So before anything is suspended the reaper
//! forks the guardian, which takes its own task port for the app (`task_for_pid`, as root), says
//! it is ready, and reads the reaper's log (guardian_log.rs) until the pipe ends. A log ending in
//! `D` means all was put back; any other end means the reaper died, and the guardian resumes the
//! threads it had announced (once each, only while their count is above the announced one) and
//! terminates our thread. It leaves the reaper's session and ignores the terminal's signals, so
//! a ^C that kills the reaper does not kill it too.
//!
//! What it cannot cover: our thread's exception port dies with the reaper. Between calls our
//! thread is parked by a suspension, not in an exception, so a death there is harmless; a death
//! in the microseconds while one call runs leaves that call's return fault with no handler of
//! ours, and macOS passes it on to the app's own (a crash report). The guardian terminates our
//! thread as soon as it sees the pipe end, which closes most of that gap.

use super::guardian_log::{Log, Record};
use super::mach::{self, Port};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// How long the guardian may take to get its task port.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Guardian {
    log: Option<std::fs::File>,
    child: libc::pid_t,
}

impl Guardian {
    /// Forks the guardian for `pid` and waits until it holds the app's task port.
    pub fn start(pid: i32) -> Result<Guardian, String> {
        let (log_read, log_write) = pipe()?;
        let (ready_read, ready_write) = pipe()?;
        // SAFETY: fork while ptyreap is single-threaded (the scan's threads have ended); the child
        // only runs `guard` and leaves with _exit.
        match unsafe { libc::fork() } {
            -1 => Err(format!(
                "cannot start the guardian process: {}",
                std::io::Error::last_os_error()
            )),
            0 => {
                drop(log_write);
                drop(ready_read);
                guard(pid, log_read, ready_write)
            }
            child => {
                drop(log_read);
                drop(ready_write);
                let guardian = Guardian {
                    log: Some(std::fs::File::from(log_write)),
                    child,
                };
                match read_byte(&ready_read, READY_TIMEOUT) {
                    Some(b'R') => Ok(guardian),
                    Some(_) => {
                        Err("the guardian process could not get the target's task port".into())
                    }
                    None => Err("the guardian process did not start in time".into()),
                }
            }
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
        let mut status = 0;
        // SAFETY: our own child; it exits as soon as it reads `D` or the end of the pipe.
        unsafe { libc::waitpid(self.child, &mut status, 0) };
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fresh fds from pipe.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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

/// The guardian process's whole life.
fn guard(pid: i32, log_read: OwnedFd, ready: OwnedFd) -> ! {
    // SAFETY: plain calls in our own process.
    unsafe {
        libc::setsid();
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
    let Ok(task) = mach::task_for_pid(pid) else {
        say(b'E');
        // SAFETY: leaving the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(1) }
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
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// The reaper died inside the window: put the app back.
fn repair(task: &Port, log: &Log) {
    let Ok(threads) = mach::threads(task) else {
        return; // the app itself is gone
    };
    let now: Vec<(u64, i32)> = threads
        .iter()
        .filter_map(|t| Some((mach::thread_id(t)?, mach::suspend_count(t)?)))
        .collect();
    let repairs = log.repairs(&now);
    for t in &threads {
        let Some(id) = mach::thread_id(t) else {
            continue;
        };
        if repairs.terminate.contains(&id) {
            // SAFETY: our own thread in the app, created by the reaper.
            unsafe { mach::thread_terminate(t.name()) };
        } else if repairs.resume.contains(&id) {
            // SAFETY: a thread the reaper suspended once.
            unsafe { mach2::thread_act::thread_resume(t.name()) };
        }
    }
}
