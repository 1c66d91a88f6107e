//! `ptyreap-fixture`: a real process that holds pseudoterminal masters in every state ptyreap's
//! tests need, and keeps working while ptyreap inspects, stops and reaps it. Linux only; pure Rust
//! on libc, so it also runs in the busybox-only aarch64 VM (no python, no shell tools).
//!
//! It leaks masters the way node-pty apps do: a child ran on the slave and exited, and the app kept
//! the master. Every master stays in the fixture until someone else closes it; no child holds a
//! copy of any master unless a flag below says so (each forked child closes every fd it does not
//! need first thing, so inheritable masters do not leak into it). It closes every inherited fd
//! above 2 at start, so its fd table holds only what it reports (masters first, from fd 3).
//!
//! # Flags (counts, default 0)
//! - `--orphans N`: N masters whose session is over. A child `setsid()`s, opens the slave (which
//!   becomes its controlling terminal), writes `bye\n` and exits; the fixture reaps it. No process
//!   holds the slave, there is no session, the master polls `POLLIN|POLLHUP` with 5 unread bytes.
//! - `--tracked N`: N orphans as above, each also registered (`EPOLLIN`) in one epoll set the
//!   fixture keeps (`epoll_fd`) and nobody waits on: what an event loop that forgot a pty leaves.
//! - `--poll-watched N`: N brand-new masters (slave never opened) that one thread waits on in
//!   `poll()` (`POLLIN`, no timeout). A hung-up master would end the wait at once with `POLLHUP`;
//!   a never-opened one polls only `POLLOUT` and reads `EAGAIN`, so the thread stays blocked.
//! - `--select-watched N`: the same, with one thread blocked in `select()` (read set).
//! - `--live N`: N live sessions. A child `setsid()`s, takes the slave as its controlling
//!   terminal on fds 0-2 and echoes what it reads until EOF/EIO (default termios: canonical mode
//!   with echo, so `ping\n` written to the master comes back twice, `ping\r\n` from the line
//!   discipline's echo and `ping\r\n` from the child). The fixture keeps the master.
//! - `--shared N`: N orphans that one more child, the holder (`shared_holder`), also holds: it keeps
//!   exactly those fds (same numbers) open and sleeps until killed. Nobody holds the slaves.
//! - `--pairs N`: N pairs with both ends kept open in the fixture (no child, no session).
//! - `--new N`: N brand-new masters, slave never opened, nobody watching.
//! - `--threads K`: K more threads, kind `i % 4`: 0 blocked in `read()` on a pipe; 1 sleeping 3 s
//!   in `nanosleep()` over and over, timing each sleep; 2 blocked in a raw `FUTEX_WAIT` (no
//!   timeout); 3 blocked in `epoll_wait()` (no timeout) on its own epoll set watching a pipe.
//! - `--fill N`: N more fds on /dev/null, for benchmarks of big fd tables.
//! - `--busy N`: N threads computing (1 ms of arithmetic, then 1 ms of sleep, over and over).
//! - `--stream`: one more live session, in raw mode, that streams data continuously: a thread
//!   writes pseudo-random bytes to the master (about 4 MB/s), the child echoes every byte, a
//!   second thread reads them back; both ends keep a byte count and an FNV-1a checksum.
//! - `--leak-every-ms N`: a thread that leaks one more orphaned master every N ms (the way a
//!   node-pty app keeps leaking), for soak tests; `leaked` in the check counts them.
//! - `--fork-every-ms N`: a thread that forks a child every N ms (the child, holding copies of
//!   every master, exits at once), for race tests.
//! - `--exec-after-ms N`: N ms after it is ready, a thread execs `sleep 30` (the process image is
//!   replaced under a reaper), for race tests.
//! - `--churn`: one thread that opens and closes `/dev/null` and a new master in a tight loop, to
//!   race a reaper; a `close()` failing with `EBADF` means someone closed an fd under it.
//! - `--allow-partial`: when the PTYs run out (`ENOSPC`, e.g. a private devpts instance with a small
//!   `max=`), stop creating PTYs and report what was made instead of failing (`partial: true`).
//! - `--ready FILE` (required): written once everything is settled: the children started (live
//!   ones echoing), the orphans' children reaped, every blocking thread inside its syscall.
//!
//! # Ready file (JSON, written atomically)
//! `pid`, `partial`; master fds by kind: `orphans`, `tracked`, `poll_watched`, `select_watched`,
//! `live`, `shared`, `new`, and `pairs` (`[[master, slave], ...]`); `live_children` (pids),
//! `shared_holder` (pid or null), `shared_holder_fds`; `pty_index` (`{"fd": index}` for every
//! master above); `epoll_fd` (the tracked set or null); `thread_epoll_fds` (the epoll waiters' own
//! sets); `pipe_fds` (every pipe end the threads use); `threads`: tids by kind,
//! `{"read", "sleep", "futex", "epoll", "poll", "select", "churn"}`.
//!
//! # Health check: SIGUSR1 writes FILE.check (JSON, atomically)
//! Each run writes fresh data and reports what arrived in that run (deltas) or running totals:
//! - `seq`: 1 for the first check, then 2, ... (wait for a higher one to see a new result).
//! - `live_ok`: per live session, `ping\n` written to the master came back at least twice in 3 s.
//! - `readers`, `reader_got`: 64 bytes are written to each reader's pipe; the bytes the readers
//!   received within 3 s (healthy: `64 * readers`).
//! - `sleepers_done` (completed sleeps, total), `sleeps_full` (every sleep so far lasted >= 2.95 s
//!   and returned 0; true before the first one ends), `sleep_min_s` (shortest, or null).
//! - `futex_ok`: the check bumps each waiter's word and wakes it; every waiter saw the new value
//!   within 3 s, and no futex call so far failed with anything but `EINTR`/`EAGAIN`.
//!   `futex_eintr`, `futex_spurious` (returns of 0 with the word unchanged): totals.
//! - `epoll_waiters`, `epoll_got`: 64 bytes are written to each waiter's pipe; the bytes received
//!   in this run. `epoll_eintr`: total `EINTR` returns (every ptrace stop causes one).
//! - `churn_iterations`, `churn_errors`, `churn_ebadf`: totals.
//! - `busy_iterations` (total), `leaked` (total), and for `--stream`: `stream_sent`,
//!   `stream_received`, `stream_ok` (the writer pauses, the reader catches up within 3 s, and both
//!   byte counts and checksums agree; null without `--stream`).
//! - `poll_events`, `select_events`: what ended a watcher's wait, `[{"fd", "revents"|"error"}]`;
//!   a reported fd is dropped from the watch set (empty when nothing disturbed the watchers).
//! - `live_exited`: live children or the holder that died, `[{"pid", "status"}]`.
//! - `errors`: every unexpected errno seen anywhere so far, as distinct strings.
//!
//! SIGTERM or SIGINT (also sent when the fixture's parent dies) kills and reaps the children, then
//! exits 0. Setup failures exit 1 with a message on stderr, usage errors 2.

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("ptyreap-fixture: Linux only");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main()
}

#[cfg(target_os = "linux")]
mod linux {
    use anyhow::{anyhow, bail, Context, Result};
    use serde_json::{json, Map, Value};
    use std::ffi::{CStr, CString};
    use std::io;
    use std::os::fd::RawFd;
    use std::path::{Path, PathBuf};
    use std::ptr;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
    use std::sync::{mpsc, Arc, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    const CHECK_WAIT: Duration = Duration::from_secs(3);
    const SETTLE_WAIT: Duration = Duration::from_secs(10);
    const SLEEP: Duration = Duration::from_secs(3);
    const SLEEP_MIN: Duration = Duration::from_millis(2950);
    const PAYLOAD: [u8; 64] = [b'x'; 64];
    const DEV_NULL: &CStr = cstr(b"/dev/null\0");
    const NAME_ORPHAN: &CStr = cstr(b"fixture-orphan\0");
    const NAME_ECHO: &CStr = cstr(b"fixture-echo\0");
    const NAME_HOLDER: &CStr = cstr(b"fixture-holder\0");

    const fn cstr(bytes: &'static [u8]) -> &'static CStr {
        match CStr::from_bytes_with_nul(bytes) {
            Ok(s) => s,
            Err(_) => panic!("not a C string"),
        }
    }

    pub fn main() {
        let args = match Args::parse(std::env::args().skip(1)) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("ptyreap-fixture: {e:#}");
                std::process::exit(2);
            }
        };
        if let Err(e) = run(args) {
            eprintln!("ptyreap-fixture: {e:#}");
            std::process::exit(1);
        }
    }

    #[derive(Default)]
    struct Args {
        orphans: usize,
        tracked: usize,
        poll_watched: usize,
        select_watched: usize,
        live: usize,
        shared: usize,
        pairs: usize,
        new: usize,
        threads: usize,
        fill: usize,
        busy: usize,
        leak_every_ms: usize,
        fork_every_ms: usize,
        exec_after_ms: usize,
        stream: bool,
        churn: bool,
        allow_partial: bool,
        ready: PathBuf,
    }

    impl Args {
        fn parse(mut it: impl Iterator<Item = String>) -> Result<Args> {
            let mut a = Args::default();
            let mut ready = None;
            while let Some(flag) = it.next() {
                let (name, inline) = match flag.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (flag, None),
                };
                match name.as_str() {
                    "--churn" => a.churn = true,
                    "--stream" => a.stream = true,
                    "--allow-partial" => a.allow_partial = true,
                    _ => {
                        let value = match inline.or_else(|| it.next()) {
                            Some(v) => v,
                            None => bail!("{name} needs a value"),
                        };
                        if name == "--ready" {
                            ready = Some(PathBuf::from(value));
                            continue;
                        }
                        let n: usize = value.parse().with_context(|| format!("{name} {value}"))?;
                        *match name.as_str() {
                            "--orphans" => &mut a.orphans,
                            "--tracked" => &mut a.tracked,
                            "--poll-watched" => &mut a.poll_watched,
                            "--select-watched" => &mut a.select_watched,
                            "--live" => &mut a.live,
                            "--shared" => &mut a.shared,
                            "--pairs" => &mut a.pairs,
                            "--new" => &mut a.new,
                            "--threads" => &mut a.threads,
                            "--fill" => &mut a.fill,
                            "--busy" => &mut a.busy,
                            "--leak-every-ms" => &mut a.leak_every_ms,
                            "--fork-every-ms" => &mut a.fork_every_ms,
                            "--exec-after-ms" => &mut a.exec_after_ms,
                            _ => bail!("unknown flag {name}"),
                        } = n;
                    }
                }
            }
            a.ready = ready.ok_or_else(|| anyhow!("--ready FILE is required"))?;
            Ok(a)
        }
    }

    // ---------------------------------------------------------------------------------------
    // Small wrappers

    fn last_err() -> io::Error {
        io::Error::last_os_error()
    }

    fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
        if r < 0 {
            Err(last_err())
        } else {
            Ok(r)
        }
    }

    /// Every unexpected errno seen anywhere, reported by the health check.
    static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record(what: &str, err: &io::Error) {
        let msg = format!("{what}: {err}");
        let mut errors = ERRORS.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < 100 && !errors.contains(&msg) {
            errors.push(msg);
        }
    }

    fn gettid() -> i32 {
        // SAFETY: gettid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_gettid) as i32 }
    }

    fn poll1(fd: RawFd, events: i16, timeout_ms: i32) -> io::Result<i16> {
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        cvt(unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
        Ok(p.revents)
    }

    /// Reads `fd` until EOF or an error other than EINTR (recorded as `what`), handing every
    /// chunk to `got`.
    fn read_all(fd: RawFd, what: &str, mut got: impl FnMut(&[u8])) {
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                got(&buf[..n as usize]);
                continue;
            }
            let e = if n == 0 {
                io::Error::from(io::ErrorKind::UnexpectedEof)
            } else {
                last_err()
            };
            if e.kind() != io::ErrorKind::Interrupted {
                record(what, &e);
                return;
            }
        }
    }

    fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = last_err();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
                continue;
            }
            buf = &buf[n as usize..];
        }
        Ok(())
    }

    fn pipe(nonblocking_read: bool) -> io::Result<(RawFd, RawFd)> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two. The write end never blocks the health check.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        for (fd, nb) in [(fds[0], nonblocking_read), (fds[1], true)] {
            if nb {
                // SAFETY: plain fcntl on an fd we own.
                cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) })?;
            }
        }
        Ok((fds[0], fds[1]))
    }

    fn write_atomically(path: &Path, value: &Value) -> Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, value.to_string()).with_context(|| format!("writing {tmp:?}"))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {path:?}"))
    }

    // ---------------------------------------------------------------------------------------
    // PTYs and children

    struct Master {
        fd: RawFd,
        index: u32,
        slave: CString,
    }

    /// Allocates masters; with `--allow-partial`, running out (ENOSPC) ends all further creation.
    struct Pool {
        allow_partial: bool,
        exhausted: bool,
        index: Map<String, Value>,
    }

    impl Pool {
        fn master(&mut self) -> Result<Option<Master>> {
            if self.exhausted {
                return Ok(None);
            }
            match open_master(libc::O_RDWR | libc::O_NOCTTY) {
                Ok(m) => {
                    self.index.insert(m.fd.to_string(), json!(m.index));
                    Ok(Some(m))
                }
                Err(e) if self.allow_partial && e.raw_os_error() == Some(libc::ENOSPC) => {
                    self.exhausted = true;
                    Ok(None)
                }
                Err(e) => Err(e).context("opening a PTY master"),
            }
        }
    }

    fn open_master(flags: libc::c_int) -> io::Result<Master> {
        // SAFETY: plain libc calls; the fd is closed on every error path.
        unsafe {
            let fd = cvt(libc::posix_openpt(flags))?;
            let mut name = [0 as libc::c_char; 64];
            let mut index: libc::c_uint = 0;
            if libc::grantpt(fd) != 0
                || libc::unlockpt(fd) != 0
                || libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) != 0
                || libc::ioctl(fd, libc::TIOCGPTN, &mut index) != 0
            {
                let e = last_err();
                libc::close(fd);
                return Err(e);
            }
            let slave = CStr::from_ptr(name.as_ptr()).to_owned();
            Ok(Master { fd, index, slave })
        }
    }

    /// First steps of every forked child: default signal mask (the fixture blocks the signals it
    /// handles with sigwait), die with the fixture, a recognisable name.
    ///
    /// # Safety
    /// Only in a freshly forked child.
    unsafe fn child_prelude(parent: libc::pid_t, name: &CStr) {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }

    /// Closes every fd but `keep` (sorted ascending).
    fn close_all_except(keep: &[RawFd]) {
        let mut lo = 0u32;
        for &k in keep {
            if k as u32 > lo {
                close_range(lo, k as u32 - 1);
            }
            lo = k as u32 + 1;
        }
        close_range(lo, u32::MAX);
    }

    fn close_range(lo: u32, hi: u32) {
        // SAFETY: closing fds in a child that owns nothing else.
        unsafe {
            if libc::syscall(libc::SYS_close_range, lo, hi, 0u32) != 0 {
                // Kernels before 5.9: one by one up to the fd limit.
                let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(0, i64::from(i32::MAX)) as u32;
                for fd in lo..=hi.min(max) {
                    libc::close(fd as RawFd);
                }
            }
        }
    }

    #[derive(Clone, Copy)]
    enum Role {
        Orphan,
        Live,
        /// Live, in raw mode: echoes bytes exactly (no line discipline).
        Stream,
    }

    /// Forks a child that runs a session on `m`'s slave. The parent gets the child's pid.
    fn fork_session(m: &Master, role: Role) -> Result<libc::pid_t> {
        // SAFETY: getpid/fork; the child runs only async-signal-safe code and never returns.
        unsafe {
            let parent = libc::getpid();
            let pid = cvt(libc::fork()).context("fork")?;
            if pid == 0 {
                session_child(parent, m, role);
            }
            Ok(pid)
        }
    }

    /// # Safety
    /// Only in a freshly forked child; never returns.
    unsafe fn session_child(parent: libc::pid_t, m: &Master, role: Role) -> ! {
        let name: &CStr = match role {
            Role::Orphan => NAME_ORPHAN,
            Role::Live | Role::Stream => NAME_ECHO,
        };
        child_prelude(parent, name);
        close_all_except(&[m.fd]);
        if libc::setsid() < 0 {
            libc::_exit(20);
        }
        // A session leader without a controlling terminal acquires the tty it opens (no
        // O_NOCTTY). TIOCGPTPEER covers a slave path that is not visible here.
        let mut s = libc::open(m.slave.as_ptr(), libc::O_RDWR);
        if s < 0 {
            s = libc::ioctl(m.fd, libc::TIOCGPTPEER, libc::O_RDWR);
        }
        if s < 0 || libc::ioctl(s, libc::TIOCSCTTY, 0) != 0 {
            libc::_exit(21);
        }
        libc::close(m.fd);
        for fd in 0..3 {
            libc::dup2(s, fd);
        }
        if s > 2 {
            libc::close(s);
        }
        match role {
            Role::Orphan => {
                // Leaves unread bytes at the master, as a real child's last words would.
                let _ = write_all(1, b"bye\n");
                libc::_exit(0);
            }
            Role::Live | Role::Stream => {
                if let Role::Stream = role {
                    let mut t: libc::termios = std::mem::zeroed();
                    if libc::tcgetattr(0, &mut t) == 0 {
                        libc::cfmakeraw(&mut t);
                        libc::tcsetattr(0, libc::TCSANOW, &t);
                    }
                }
                let _ = write_all(1, b"R");
                let mut buf = [0u8; 4096];
                loop {
                    let n = libc::read(0, buf.as_mut_ptr().cast(), buf.len());
                    if n > 0 {
                        if write_all(1, &buf[..n as usize]).is_err() {
                            libc::_exit(0);
                        }
                    } else if n == 0 || *libc::__errno_location() != libc::EINTR {
                        libc::_exit(0); // EOF, or EIO once the master is gone
                    }
                }
            }
        }
    }

    /// A master whose child ran a session on the slave and exited.
    fn orphan(pool: &mut Pool) -> Result<Option<RawFd>> {
        let Some(m) = pool.master()? else {
            return Ok(None);
        };
        let pid = fork_session(&m, Role::Orphan)?;
        let mut status = 0;
        // SAFETY: waiting for our own child.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
            let e = last_err();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e).context("waitpid");
            }
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!(
                "orphan child for /dev/pts/{} failed: status {status:#x}",
                m.index
            );
        }
        // The child was the slave's only holder; its exit closed the slave, so the master hangs
        // up (TTY_OTHER_CLOSED) before waitpid returns. Check rather than assume.
        let deadline = Instant::now() + Duration::from_secs(1);
        while poll1(m.fd, libc::POLLIN, 0)? & libc::POLLHUP == 0 {
            if Instant::now() > deadline {
                bail!("orphaned master {} does not poll POLLHUP", m.fd);
            }
            thread::sleep(Duration::from_millis(1));
        }
        Ok(Some(m.fd))
    }

    /// A live session: the child echoes on the slave; returns once it is known to be reading.
    fn live(pool: &mut Pool) -> Result<Option<(RawFd, libc::pid_t)>> {
        live_as(pool, Role::Live)
    }

    fn live_as(pool: &mut Pool, role: Role) -> Result<Option<(RawFd, libc::pid_t)>> {
        let Some(m) = pool.master()? else {
            return Ok(None);
        };
        let pid = fork_session(&m, role)?;
        let deadline = Instant::now() + SETTLE_WAIT;
        let mut buf = [0u8; 64];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("live child {pid} did not start on /dev/pts/{}", m.index);
            }
            if poll1(m.fd, libc::POLLIN, left.as_millis() as i32)? & libc::POLLIN != 0 {
                // SAFETY: reading into a local buffer.
                let n = unsafe { libc::read(m.fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    bail!("live child {pid} on /dev/pts/{}: {}", m.index, last_err());
                }
                if buf[..n as usize].contains(&b'R') {
                    return Ok(Some((m.fd, pid)));
                }
            }
        }
    }

    /// A child that holds copies of `fds` (same numbers) and nothing else, until killed.
    fn holder(fds: &[RawFd]) -> Result<libc::pid_t> {
        let mut keep = fds.to_vec();
        keep.sort_unstable();
        // SAFETY: the child runs only async-signal-safe code and never returns.
        unsafe {
            let parent = libc::getpid();
            let pid = cvt(libc::fork()).context("fork")?;
            if pid == 0 {
                child_prelude(parent, NAME_HOLDER);
                close_all_except(&keep);
                let null = libc::open(DEV_NULL.as_ptr(), libc::O_RDWR);
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
                loop {
                    libc::pause();
                }
            }
            Ok(pid)
        }
    }

    // ---------------------------------------------------------------------------------------
    // Threads

    #[derive(Default)]
    struct Reader {
        wfd: RawFd,
        got: AtomicU64,
    }

    #[derive(Default)]
    struct Sleeper {
        done: AtomicU64,
        min_ns: AtomicU64,
        bad: AtomicU64,
    }

    #[derive(Default)]
    struct FutexWaiter {
        word: AtomicU32,
        seen: AtomicU32,
        eintr: AtomicU64,
        spurious: AtomicU64,
        bad: AtomicU64,
    }

    #[derive(Default)]
    struct EpollWaiter {
        epfd: RawFd,
        wfd: RawFd,
        got: AtomicU64,
        eintr: AtomicU64,
    }

    #[derive(Default)]
    struct Watch {
        events: Mutex<Vec<Value>>,
    }

    #[derive(Default)]
    struct Churn {
        iterations: AtomicU64,
        errors: AtomicU64,
        ebadf: AtomicU64,
    }

    #[derive(Default)]
    struct Workers {
        readers: Vec<Arc<Reader>>,
        sleepers: Vec<Arc<Sleeper>>,
        futexes: Vec<Arc<FutexWaiter>>,
        epolls: Vec<Arc<EpollWaiter>>,
        poll: Arc<Watch>,
        select: Arc<Watch>,
        churn: Arc<Churn>,
        tids: Map<String, Value>,
        /// (tid, syscalls it must be blocked in before the fixture is ready)
        blocking: Vec<(i32, Vec<libc::c_long>)>,
        pipe_fds: Vec<RawFd>,
    }

    impl Workers {
        /// Starts `body` on a new named thread; returns its tid.
        fn spawn(&mut self, kind: &str, body: impl FnOnce() + Send + 'static) -> Result<i32> {
            let (tx, rx) = mpsc::channel();
            let n = self
                .tids
                .get(kind)
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            thread::Builder::new()
                .name(format!("{kind}-{n}"))
                .spawn(move || {
                    let _ = tx.send(gettid());
                    body();
                })
                .with_context(|| format!("spawning a {kind} thread"))?;
            let tid = rx.recv().context("thread start")?;
            let list = self.tids.entry(kind).or_insert_with(|| json!([]));
            list.as_array_mut().expect("array").push(json!(tid));
            Ok(tid)
        }

        fn spawn_blocking(
            &mut self,
            kind: &str,
            body: impl FnOnce() + Send + 'static,
        ) -> Result<()> {
            let tid = self.spawn(kind, body)?;
            self.blocking.push((tid, syscalls(kind)));
            Ok(())
        }

        fn reader(&mut self) -> Result<()> {
            let (rfd, wfd) = pipe(false)?;
            self.pipe_fds.extend([rfd, wfd]);
            let r = Arc::new(Reader {
                wfd,
                ..Default::default()
            });
            self.readers.push(r.clone());
            self.spawn_blocking("read", move || {
                read_all(rfd, "reader: read", |bytes| {
                    r.got.fetch_add(bytes.len() as u64, SeqCst);
                })
            })
        }

        fn sleeper(&mut self) -> Result<()> {
            let s = Arc::new(Sleeper {
                min_ns: AtomicU64::new(u64::MAX),
                ..Default::default()
            });
            self.sleepers.push(s.clone());
            self.spawn_blocking("sleep", move || loop {
                let ts = libc::timespec {
                    tv_sec: SLEEP.as_secs() as libc::time_t,
                    tv_nsec: 0,
                };
                let mut rem = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                let t0 = Instant::now();
                // SAFETY: valid timespecs. A ptrace stop must not shorten the sleep or make it
                // fail: the kernel restarts it (restart_syscall) with the time left.
                let r = unsafe { libc::nanosleep(&ts, &mut rem) };
                let took = t0.elapsed();
                if r != 0 {
                    s.bad.fetch_add(1, SeqCst);
                    record("sleeper: nanosleep", &last_err());
                }
                s.min_ns.fetch_min(took.as_nanos() as u64, SeqCst);
                s.done.fetch_add(1, SeqCst);
            })
        }

        fn futex(&mut self) -> Result<()> {
            let f = Arc::new(FutexWaiter::default());
            self.futexes.push(f.clone());
            self.spawn_blocking("futex", move || {
                let mut cur = f.word.load(SeqCst);
                loop {
                    // SAFETY: FUTEX_WAIT on a live AtomicU32, no timeout.
                    let r = unsafe {
                        libc::syscall(
                            libc::SYS_futex,
                            f.word.as_ptr(),
                            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                            cur,
                            ptr::null::<libc::timespec>(),
                        )
                    };
                    let e = last_err();
                    let now = f.word.load(SeqCst);
                    if now != cur {
                        cur = now;
                        f.seen.store(now, SeqCst);
                    } else if r == 0 {
                        f.spurious.fetch_add(1, SeqCst);
                    }
                    if r != 0 {
                        match e.raw_os_error() {
                            Some(libc::EINTR) => {
                                f.eintr.fetch_add(1, SeqCst);
                            }
                            Some(libc::EAGAIN) => {} // the word changed before we slept
                            _ => {
                                f.bad.fetch_add(1, SeqCst);
                                record("futex waiter: FUTEX_WAIT", &e);
                            }
                        }
                    }
                }
            })
        }

        fn epoll(&mut self) -> Result<()> {
            let (rfd, wfd) = pipe(true)?;
            self.pipe_fds.extend([rfd, wfd]);
            // SAFETY: plain epoll setup on fds we own.
            let epfd = unsafe {
                let epfd = cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: rfd as u64,
                };
                cvt(libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, rfd, &mut ev))?;
                epfd
            };
            let w = Arc::new(EpollWaiter {
                epfd,
                wfd,
                ..Default::default()
            });
            self.epolls.push(w.clone());
            self.spawn_blocking("epoll", move || {
                let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
                let mut buf = [0u8; 4096];
                loop {
                    // SAFETY: evs has room for 4 events.
                    let n = unsafe { libc::epoll_wait(w.epfd, evs.as_mut_ptr(), 4, -1) };
                    if n < 0 {
                        let e = last_err();
                        // epoll_wait is never restarted: any stop (ptrace too) returns EINTR.
                        if e.kind() == io::ErrorKind::Interrupted {
                            w.eintr.fetch_add(1, SeqCst);
                            continue;
                        }
                        record("epoll waiter: epoll_wait", &e);
                        return;
                    }
                    loop {
                        // SAFETY: reading into a local buffer (nonblocking).
                        let r = unsafe { libc::read(rfd, buf.as_mut_ptr().cast(), buf.len()) };
                        if r <= 0 {
                            let e = last_err();
                            if r == 0 || e.kind() != io::ErrorKind::WouldBlock {
                                record("epoll waiter: read", &e);
                            }
                            break;
                        }
                        w.got.fetch_add(r as u64, SeqCst);
                    }
                }
            })
        }

        /// A thread in poll() on `fds` (POLLIN, no timeout). An fd that ends the wait is reported
        /// and dropped from the set (a negative fd is ignored by poll).
        fn poll_watcher(&mut self, fds: Vec<RawFd>) -> Result<()> {
            let watch = self.poll.clone();
            self.spawn_blocking("poll", move || {
                let mut set: Vec<libc::pollfd> = fds
                    .iter()
                    .map(|&fd| libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                loop {
                    // SAFETY: set is a valid pollfd array.
                    let n = unsafe { libc::poll(set.as_mut_ptr(), set.len() as libc::nfds_t, -1) };
                    if n < 0 {
                        let e = last_err();
                        if e.kind() != io::ErrorKind::Interrupted {
                            record("poll watcher: poll", &e);
                            return;
                        }
                        continue;
                    }
                    let mut events = watch.events.lock().unwrap_or_else(|p| p.into_inner());
                    for p in set.iter_mut().filter(|p| p.revents != 0) {
                        events.push(json!({"fd": p.fd, "revents": p.revents}));
                        p.fd = -1;
                    }
                }
            })
        }

        /// A thread in select() on `fds` (read set, no timeout); as poll_watcher.
        fn select_watcher(&mut self, mut fds: Vec<RawFd>) -> Result<()> {
            let watch = self.select.clone();
            self.spawn_blocking("select", move || loop {
                // SAFETY: fd_set manipulation on fds < FD_SETSIZE (checked at setup).
                unsafe {
                    let mut set: libc::fd_set = std::mem::zeroed();
                    libc::FD_ZERO(&mut set);
                    for &fd in &fds {
                        libc::FD_SET(fd, &mut set);
                    }
                    let nfds = fds.iter().max().map_or(0, |m| m + 1);
                    let none = ptr::null_mut();
                    let n = libc::select(nfds, &mut set, none, none, ptr::null_mut());
                    let mut events = watch.events.lock().unwrap_or_else(|p| p.into_inner());
                    if n >= 0 {
                        fds.retain(|&fd| {
                            let hit = libc::FD_ISSET(fd, &set);
                            if hit {
                                events.push(json!({"fd": fd, "revents": "readable"}));
                            }
                            !hit
                        });
                        continue;
                    }
                    let e = last_err();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => {}
                        // Someone closed a watched fd: report and drop it.
                        Some(libc::EBADF) => fds.retain(|&fd| {
                            let bad = libc::fcntl(fd, libc::F_GETFD) < 0;
                            if bad {
                                events.push(json!({"fd": fd, "error": "EBADF"}));
                            }
                            !bad
                        }),
                        _ => {
                            record("select watcher: select", &e);
                            return;
                        }
                    }
                }
            })
        }

        fn churn(&mut self) -> Result<()> {
            let c = self.churn.clone();
            self.spawn("churn", move || loop {
                // SAFETY: opening and closing our own fds.
                unsafe {
                    let null = libc::open(DEV_NULL.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    let null = if null < 0 { Err(last_err()) } else { Ok(null) };
                    let ptm =
                        open_master(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC).map(|m| m.fd);
                    for fd in [null, ptm] {
                        match fd {
                            Ok(fd) if libc::close(fd) == 0 => {}
                            Ok(_) => {
                                let e = last_err();
                                if e.raw_os_error() == Some(libc::EBADF) {
                                    c.ebadf.fetch_add(1, SeqCst);
                                } else {
                                    c.errors.fetch_add(1, SeqCst);
                                }
                                record("churn: close", &e);
                            }
                            Err(e) => {
                                c.errors.fetch_add(1, SeqCst);
                                record("churn: open", &e);
                            }
                        }
                    }
                }
                c.iterations.fetch_add(1, SeqCst);
            })?;
            Ok(())
        }

        /// Waits until every blocking thread sits in its syscall (`/proc/self/task/TID/syscall`
        /// starts with the syscall number of a blocked task, "running" otherwise).
        fn settle(&self) -> Result<()> {
            let deadline = Instant::now() + SETTLE_WAIT;
            for (tid, nrs) in &self.blocking {
                let path = format!("/proc/self/task/{tid}/syscall");
                loop {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {path}"))?;
                    let nr = text.split_whitespace().next().and_then(|t| t.parse().ok());
                    if nr.is_some_and(|nr| nrs.contains(&nr)) {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "thread {tid} did not block in {nrs:?}: {path} says {}",
                            text.trim()
                        );
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(())
        }
    }

    // ---------------------------------------------------------------------------------------
    // Soak: computing threads, a continuous stream over a live PTY, a steady leak

    #[derive(Default)]
    struct Soak {
        busy: AtomicU64,
        leaked: AtomicU64,
        sent: AtomicU64,
        received: AtomicU64,
        sent_sum: AtomicU64,
        received_sum: AtomicU64,
        /// The check pauses the writer to compare both ends.
        paused: std::sync::atomic::AtomicBool,
    }

    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

    fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// 1 ms of arithmetic, 1 ms of sleep, forever.
    fn busy(soak: &Soak) {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        loop {
            let until = Instant::now() + Duration::from_millis(1);
            while Instant::now() < until {
                for _ in 0..1000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                }
                soak.busy.fetch_add(1, SeqCst);
            }
            std::hint::black_box(x);
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// A writer and a reader on the raw-mode stream master; the child echoes every byte.
    fn start_stream(w: &mut Workers, fd: RawFd, soak: Arc<Soak>) -> Result<()> {
        let ws = soak.clone();
        w.spawn("stream-write", move || {
            let mut x: u64 = 0x1234_5678_9abc_def1;
            let mut sum = FNV_OFFSET;
            let mut chunk = [0u8; 4096];
            loop {
                if ws.paused.load(SeqCst) {
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
                for b in chunk.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                if let Err(e) = write_all(fd, &chunk) {
                    record("stream: write", &e);
                    return;
                }
                sum = fnv1a(sum, &chunk);
                ws.sent_sum.store(sum, SeqCst);
                ws.sent.fetch_add(chunk.len() as u64, SeqCst);
                thread::sleep(Duration::from_millis(1));
            }
        })?;
        w.spawn("stream-read", move || {
            let mut sum = FNV_OFFSET;
            read_all(fd, "stream: read", |bytes| {
                sum = fnv1a(sum, bytes);
                soak.received_sum.store(sum, SeqCst);
                soak.received.fetch_add(bytes.len() as u64, SeqCst);
            })
        })?;
        Ok(())
    }

    /// Pauses the writer until the reader has everything back (3 s at most): then both ends must
    /// agree byte for byte. The writer goes on afterwards.
    fn stream_settles(soak: &Soak) -> bool {
        soak.paused.store(true, SeqCst);
        thread::sleep(Duration::from_millis(5)); // a write in flight finishes
        let deadline = Instant::now() + CHECK_WAIT;
        while soak.received.load(SeqCst) < soak.sent.load(SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let ok = soak.received.load(SeqCst) == soak.sent.load(SeqCst)
            && soak.received_sum.load(SeqCst) == soak.sent_sum.load(SeqCst);
        soak.paused.store(false, SeqCst);
        ok
    }

    /// Leaks one orphaned master every `every`: a child runs on the slave and exits, the master
    /// is kept (forgotten). The child is async-signal-safe, as the process has threads by now.
    fn leak(soak: &Soak, every: Duration) {
        loop {
            thread::sleep(every);
            let m = match open_master(libc::O_RDWR | libc::O_NOCTTY) {
                Ok(m) => m,
                // out of PTYs or fds: a leak stops there, as in the field
                Err(_) => continue,
            };
            let pid = match fork_session(&m, Role::Orphan) {
                Ok(pid) => pid,
                Err(e) => {
                    record("leak: fork", &io::Error::other(e.to_string()));
                    return;
                }
            };
            let mut status = 0;
            // SAFETY: waiting for our own child.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
                if last_err().kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            soak.leaked.fetch_add(1, SeqCst);
        }
    }

    /// The syscalls a thread of `kind` blocks in: libc may use either call of a family, and a
    /// sleep interrupted by a stop continues in restart_syscall.
    fn syscalls(kind: &str) -> Vec<libc::c_long> {
        let common: &[libc::c_long] = match kind {
            "read" => &[libc::SYS_read],
            "sleep" => &[
                libc::SYS_nanosleep,
                libc::SYS_clock_nanosleep,
                libc::SYS_restart_syscall,
            ],
            "futex" => &[libc::SYS_futex],
            "epoll" => &[libc::SYS_epoll_pwait, libc::SYS_epoll_pwait2],
            "poll" => &[libc::SYS_ppoll],
            "select" => &[libc::SYS_pselect6],
            _ => &[],
        };
        // The older calls exist on x86_64 only (aarch64 has just the p-variants).
        #[cfg(target_arch = "x86_64")]
        let legacy: &[libc::c_long] = match kind {
            "epoll" => &[libc::SYS_epoll_wait],
            "poll" => &[libc::SYS_poll],
            "select" => &[libc::SYS_select],
            _ => &[],
        };
        #[cfg(not(target_arch = "x86_64"))]
        let legacy: &[libc::c_long] = &[];
        [common, legacy].concat()
    }

    // ---------------------------------------------------------------------------------------
    // Setup

    struct Fixture {
        ready: PathBuf,
        live: Vec<(RawFd, libc::pid_t)>,
        holder: Option<libc::pid_t>,
        exited: Vec<Value>,
        workers: Workers,
        checks: u64,
        soak: Arc<Soak>,
        stream: Option<RawFd>,
    }

    fn run(a: Args) -> Result<()> {
        // SAFETY: process-wide setup before any thread exists.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY);
            let mut lim: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            // Inherited fds would sit among the masters: start from a clean table. With
            // stdin/out/err closed, masters would land on 0-2.
            close_range(3, u32::MAX);
            loop {
                let fd = libc::open(DEV_NULL.as_ptr(), libc::O_RDWR);
                if !(0..=2).contains(&fd) {
                    libc::close(fd);
                    break;
                }
            }
            // The signals handled by sigwait in the main thread are blocked in every thread and
            // child (children unblock them). SIGTERM also arrives when the parent dies.
            let set = handled_signals();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut());
        }

        let mut pool = Pool {
            allow_partial: a.allow_partial,
            exhausted: false,
            index: Map::new(),
        };
        let fresh = |pool: &mut Pool, n: usize| -> Result<Vec<RawFd>> {
            let mut v = Vec::new();
            for _ in 0..n {
                match pool.master()? {
                    Some(m) => v.push(m.fd),
                    None => break,
                }
            }
            Ok(v)
        };
        let orphans = |pool: &mut Pool, n: usize| -> Result<Vec<RawFd>> {
            let mut v = Vec::new();
            for _ in 0..n {
                match orphan(pool)? {
                    Some(fd) => v.push(fd),
                    None => break,
                }
            }
            Ok(v)
        };

        // select() needs fds below FD_SETSIZE: these come first.
        let select_watched = fresh(&mut pool, a.select_watched)?;
        if let Some(fd) = select_watched
            .iter()
            .find(|&&fd| fd >= libc::FD_SETSIZE as RawFd)
        {
            bail!("select-watched fd {fd} is not below FD_SETSIZE");
        }
        let orphan_fds = orphans(&mut pool, a.orphans)?;
        let tracked = orphans(&mut pool, a.tracked)?;
        let epoll_fd = if a.tracked > 0 {
            // SAFETY: plain epoll setup on fds we own.
            unsafe {
                let epfd =
                    cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC)).context("epoll_create1")?;
                for &fd in &tracked {
                    let mut ev = libc::epoll_event {
                        events: libc::EPOLLIN as u32,
                        u64: fd as u64,
                    };
                    cvt(libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev))
                        .context("epoll_ctl")?;
                }
                Some(epfd)
            }
        } else {
            None
        };
        let shared = orphans(&mut pool, a.shared)?;
        let holder = if shared.is_empty() {
            None
        } else {
            Some(holder(&shared)?)
        };
        let mut live_sessions = Vec::new();
        for _ in 0..a.live {
            match live(&mut pool)? {
                Some(l) => live_sessions.push(l),
                None => break,
            }
        }
        let stream = if a.stream {
            live_as(&mut pool, Role::Stream)?
        } else {
            None
        };
        let poll_watched = fresh(&mut pool, a.poll_watched)?;
        let mut pairs = Vec::new();
        for _ in 0..a.pairs {
            let Some(m) = pool.master()? else { break };
            // SAFETY: opening the slave of our own master.
            let slave = cvt(unsafe { libc::open(m.slave.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) })
                .with_context(|| format!("opening {:?}", m.slave))?;
            pairs.push([m.fd, slave]);
        }
        let new = fresh(&mut pool, a.new)?;
        // Many plain fds: what a big app's fd table looks like around its PTYs.
        for _ in 0..a.fill {
            // SAFETY: opening /dev/null; the fd is kept for the process's life.
            cvt(unsafe { libc::open(DEV_NULL.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })
                .context("opening /dev/null for --fill")?;
        }

        // Threads last: every fork above happened while the process had one thread.
        let mut w = Workers::default();
        for kind in ["read", "sleep", "futex", "epoll", "poll", "select", "churn"] {
            w.tids.insert(kind.into(), json!([]));
        }
        for i in 0..a.threads {
            match i % 4 {
                0 => w.reader()?,
                1 => w.sleeper()?,
                2 => w.futex()?,
                _ => w.epoll()?,
            }
        }
        if !poll_watched.is_empty() {
            w.poll_watcher(poll_watched.clone())?;
        }
        if !select_watched.is_empty() {
            w.select_watcher(select_watched.clone())?;
        }
        if a.churn {
            w.churn()?;
        }
        let soak = Arc::new(Soak::default());
        for _ in 0..a.busy {
            let soak = soak.clone();
            w.spawn("busy", move || busy(&soak))?;
        }
        if let Some((fd, _)) = stream {
            start_stream(&mut w, fd, soak.clone())?;
        }
        if a.fork_every_ms > 0 {
            let every = Duration::from_millis(a.fork_every_ms as u64);
            w.spawn("fork", move || loop {
                thread::sleep(every);
                // SAFETY: the child only calls _exit; the parent reaps it.
                unsafe {
                    let pid = libc::fork();
                    if pid == 0 {
                        libc::_exit(0);
                    }
                    if pid > 0 {
                        libc::waitpid(pid, ptr::null_mut(), 0);
                    }
                }
            })?;
        }
        if a.exec_after_ms > 0 {
            let after = Duration::from_millis(a.exec_after_ms as u64);
            w.spawn("exec", move || {
                thread::sleep(after);
                // SAFETY: execv with NUL-terminated static strings; only returns on failure.
                unsafe {
                    let argv = [c"sleep".as_ptr(), c"30".as_ptr(), ptr::null()];
                    libc::execvp(c"sleep".as_ptr(), argv.as_ptr());
                }
                record("exec", &last_err());
            })?;
        }
        if a.leak_every_ms > 0 {
            let (soak, every) = (soak.clone(), Duration::from_millis(a.leak_every_ms as u64));
            w.spawn("leak", move || leak(&soak, every))?;
        }
        w.settle()?;

        let ready = json!({
            "pid": std::process::id(),
            "partial": pool.exhausted,
            "orphans": orphan_fds,
            "tracked": tracked,
            "poll_watched": poll_watched,
            "select_watched": select_watched,
            "live": live_sessions.iter().map(|l| l.0).collect::<Vec<_>>(),
            "live_children": live_sessions.iter().map(|l| l.1).collect::<Vec<_>>(),
            "shared": shared,
            "shared_holder": holder,
            "shared_holder_fds": if holder.is_some() { shared.clone() } else { vec![] },
            "pairs": pairs,
            "new": new,
            "pty_index": pool.index,
            "epoll_fd": epoll_fd,
            "thread_epoll_fds": w.epolls.iter().map(|e| e.epfd).collect::<Vec<_>>(),
            "pipe_fds": w.pipe_fds,
            "stream": stream.map(|s| s.0),
            "stream_child": stream.map(|s| s.1),
            "threads": w.tids,
        });
        write_atomically(&a.ready, &ready)?;

        live_sessions.extend(stream);
        let mut f = Fixture {
            soak,
            stream: stream.map(|s| s.0),
            ready: a.ready,
            live: live_sessions,
            holder,
            exited: vec![],
            workers: w,
            checks: 0,
        };
        f.serve()
    }

    fn handled_signals() -> libc::sigset_t {
        // SAFETY: building a sigset.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGUSR1, libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
                libc::sigaddset(&mut set, sig);
            }
            set
        }
    }

    // ---------------------------------------------------------------------------------------
    // Serving: signals and the health check

    impl Fixture {
        fn serve(&mut self) -> Result<()> {
            let set = handled_signals();
            loop {
                let mut sig = 0;
                // SAFETY: waiting for signals blocked in every thread.
                let r = unsafe { libc::sigwait(&set, &mut sig) };
                if r != 0 {
                    bail!("sigwait: {}", io::Error::from_raw_os_error(r));
                }
                match sig {
                    libc::SIGUSR1 => {
                        let report = self.check();
                        let mut path = self.ready.as_os_str().to_owned();
                        path.push(".check");
                        if let Err(e) = write_atomically(Path::new(&path), &report) {
                            eprintln!("ptyreap-fixture: {e:#}");
                        }
                    }
                    libc::SIGCHLD => self.reap_children(false),
                    _ => {
                        self.reap_children(true);
                        std::process::exit(0);
                    }
                }
            }
        }

        fn children(&self) -> Vec<libc::pid_t> {
            self.live.iter().map(|l| l.1).chain(self.holder).collect()
        }

        /// Reaps children that died (all of them, killing them first, when `kill`).
        fn reap_children(&mut self, kill: bool) {
            for pid in self.children() {
                let mut status = 0;
                // SAFETY: signalling and waiting for our own children.
                let r = unsafe {
                    if kill {
                        libc::kill(pid, libc::SIGKILL);
                    }
                    libc::waitpid(pid, &mut status, if kill { 0 } else { libc::WNOHANG })
                };
                if r == pid {
                    self.exited.push(json!({"pid": pid, "status": status}));
                    self.live.retain(|l| l.1 != pid);
                    self.holder = self.holder.filter(|&h| h != pid);
                }
            }
        }

        fn check(&mut self) -> Value {
            self.checks += 1;
            let w = &self.workers;
            // Kick the workers first: they run while the live sessions are pinged.
            let kick = |fd: RawFd, what: &str| {
                if let Err(e) = write_all(fd, &PAYLOAD) {
                    record(what, &e);
                }
            };
            let reader_base: u64 = w.readers.iter().map(|r| r.got.load(SeqCst)).sum();
            w.readers
                .iter()
                .for_each(|r| kick(r.wfd, "check: write to reader pipe"));
            let epoll_base: u64 = w.epolls.iter().map(|e| e.got.load(SeqCst)).sum();
            w.epolls
                .iter()
                .for_each(|e| kick(e.wfd, "check: write to epoll pipe"));
            for f in &w.futexes {
                f.word.fetch_add(1, SeqCst);
                // SAFETY: FUTEX_WAKE on a live AtomicU32.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        f.word.as_ptr(),
                        libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                        i32::MAX,
                    )
                };
            }

            let live_ok = ping_live(
                &self
                    .live
                    .iter()
                    .map(|l| l.0)
                    .filter(|&fd| Some(fd) != self.stream)
                    .collect::<Vec<_>>(),
            );

            let reader_want = reader_base + 64 * w.readers.len() as u64;
            let epoll_want = epoll_base + 64 * w.epolls.len() as u64;
            let reader_got = || w.readers.iter().map(|r| r.got.load(SeqCst)).sum::<u64>();
            let epoll_got = || w.epolls.iter().map(|e| e.got.load(SeqCst)).sum::<u64>();
            let futex_woke = || {
                w.futexes
                    .iter()
                    .all(|f| f.seen.load(SeqCst) == f.word.load(SeqCst))
            };
            let deadline = Instant::now() + CHECK_WAIT;
            while (reader_got() < reader_want || epoll_got() < epoll_want || !futex_woke())
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(5));
            }

            let sum = |v: &[u64]| v.iter().sum::<u64>();
            let sleep_min = w
                .sleepers
                .iter()
                .map(|s| s.min_ns.load(SeqCst))
                .min()
                .filter(|&n| n != u64::MAX);
            let sleeps_bad = sum(&w
                .sleepers
                .iter()
                .map(|s| s.bad.load(SeqCst))
                .collect::<Vec<_>>());
            let events = |watch: &Watch| {
                Value::from(
                    watch
                        .events
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone(),
                )
            };
            let errors = ERRORS.lock().unwrap_or_else(|p| p.into_inner()).clone();
            json!({
                "seq": self.checks,
                "live_ok": live_ok,
                "readers": w.readers.len(),
                "reader_got": reader_got() - reader_base,
                "sleepers_done": sum(&w.sleepers.iter().map(|s| s.done.load(SeqCst)).collect::<Vec<_>>()),
                "sleeps_full": sleeps_bad == 0 && sleep_min.iter().all(|&n| n >= SLEEP_MIN.as_nanos() as u64),
                "sleep_min_s": sleep_min.map(|n| n as f64 / 1e9),
                "futex_ok": futex_woke() && w.futexes.iter().all(|f| f.bad.load(SeqCst) == 0),
                "futex_eintr": sum(&w.futexes.iter().map(|f| f.eintr.load(SeqCst)).collect::<Vec<_>>()),
                "futex_spurious": sum(&w.futexes.iter().map(|f| f.spurious.load(SeqCst)).collect::<Vec<_>>()),
                "epoll_waiters": w.epolls.len(),
                "epoll_got": epoll_got() - epoll_base,
                "epoll_eintr": sum(&w.epolls.iter().map(|e| e.eintr.load(SeqCst)).collect::<Vec<_>>()),
                "churn_iterations": w.churn.iterations.load(SeqCst),
                "churn_errors": w.churn.errors.load(SeqCst),
                "churn_ebadf": w.churn.ebadf.load(SeqCst),
                "busy_iterations": self.soak.busy.load(SeqCst),
                "leaked": self.soak.leaked.load(SeqCst),
                "stream_sent": self.soak.sent.load(SeqCst),
                "stream_received": self.soak.received.load(SeqCst),
                "stream_ok": self.stream.map(|_| stream_settles(&self.soak)),
                "poll_events": events(&w.poll),
                "select_events": events(&w.select),
                "live_exited": self.exited,
                "errors": errors,
            })
        }
    }

    /// Writes `ping\n` to every live master and waits (3 s in all) until each has read `ping`
    /// twice: the line discipline's echo, then the child's copy.
    fn ping_live(masters: &[RawFd]) -> Vec<bool> {
        let mut buf = [0u8; 4096];
        let read = |fd: RawFd, buf: &mut [u8]| -> Option<usize> {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            (n > 0).then_some(n as usize)
        };
        let mut got: Vec<Option<Vec<u8>>> = masters
            .iter()
            .map(|&fd| {
                // Drain what earlier checks left behind, then ping.
                for _ in 0..64 {
                    if !matches!(poll1(fd, libc::POLLIN, 0), Ok(r) if r & libc::POLLIN != 0) {
                        break;
                    }
                    if read(fd, &mut buf).is_none() {
                        break;
                    }
                }
                write_all(fd, b"ping\n").ok().map(|()| Vec::new())
            })
            .collect();
        let done = |g: &Option<Vec<u8>>| g.iter().all(|b| count(b, b"ping") >= 2);
        let deadline = Instant::now() + CHECK_WAIT;
        while !got.iter().all(done) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut set: Vec<libc::pollfd> = masters
                .iter()
                .zip(&got)
                .map(|(&fd, g)| libc::pollfd {
                    fd: if done(g) { -1 } else { fd },
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: set is a valid pollfd array.
            if unsafe {
                libc::poll(
                    set.as_mut_ptr(),
                    set.len() as libc::nfds_t,
                    left.as_millis() as i32 + 1,
                )
            } <= 0
            {
                continue;
            }
            for (p, g) in set.iter().zip(got.iter_mut()) {
                if p.revents == 0 {
                    continue;
                }
                match read(p.fd, &mut buf) {
                    Some(n) => g.as_mut().expect("pending").extend_from_slice(&buf[..n]),
                    None => *g = None, // EOF or EIO: the session is gone
                }
            }
        }
        got.iter()
            .map(|g| g.as_ref().is_some_and(|b| count(b, b"ping") >= 2))
            .collect()
    }

    fn count(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }
}
