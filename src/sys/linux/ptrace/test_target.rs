//! The target processes of the inject tests: this test binary run again, through
//! `inject_tests::inject_target_role`, with `PTYREAP_INJECT_ROLE` naming the role. Each reports on
//! stderr with lines starting "@@ ", and takes commands on stdin.

use super::inject_tests::{ENTRY, SLEEP_MS};
use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static USR1: AtomicU32 = AtomicU32::new(0);
static TRAPS: AtomicU32 = AtomicU32::new(0);
static WORD: AtomicU32 = AtomicU32::new(0);
static FUTEX_EARLY: AtomicU32 = AtomicU32::new(0);
static SPIN_OK: AtomicU32 = AtomicU32::new(1);
static SPAWNED: AtomicU32 = AtomicU32::new(0);

fn report(s: String) {
    eprintln!("@@ {s}");
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

extern "C" fn on_usr1(_: libc::c_int) {
    USR1.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_trap(_: libc::c_int) {
    TRAPS.fetch_add(1, Ordering::SeqCst);
}

fn handle(sig: i32, f: extern "C" fn(libc::c_int)) {
    // SAFETY: a valid sigaction with an async-signal-safe handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = f as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

fn block(sigs: &[i32]) {
    // SAFETY: plain sigset manipulation on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn current_mask() -> u64 {
    // SAFETY: query only.
    unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        (1..64)
            .filter(|&s| libc::sigismember(&cur, s) == 1)
            .map(|s| 1u64 << (s - 1))
            .sum()
    }
}

fn open_null() -> i32 {
    // SAFETY: plain open(2).
    unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) }
}

fn worker(name: &str, f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            block(&[libc::SIGUSR1]);
            f()
        })
        .unwrap();
}

fn futex_wait(timeout: Option<libc::timespec>) {
    let mut early = 0;
    while WORD.load(Ordering::SeqCst) == 0 {
        let ts = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        // SAFETY: FUTEX_WAIT on a live word.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                WORD.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0,
                ts,
            )
        };
        if WORD.load(Ordering::SeqCst) == 0 {
            early += 1;
            FUTEX_EARLY.fetch_add(1, Ordering::SeqCst);
        }
    }
    report(format!("futex early={early} woken=1"));
}

/// Busy in user code: callee-saved registers must survive being stopped.
fn spin() {
    loop {
        let mut acc = 0u64;
        for i in 0..1_000_000u64 {
            acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
        }
        let mut check = 0u64;
        for i in 0..1_000_000u64 {
            check = check.wrapping_mul(31).wrapping_add(i);
        }
        if acc != check {
            SPIN_OK.store(0, Ordering::SeqCst);
        }
    }
}

fn commands(mut on: impl FnMut(&str, &str)) {
    let stdin = std::io::stdin();
    let mut line = String::new();
    while stdin.lock().read_line(&mut line).unwrap_or(0) > 0 {
        let l = line.trim_end().to_string();
        let (cmd, arg) = l.split_once(' ').unwrap_or((&l, ""));
        on(cmd, arg);
        line.clear();
    }
}

pub fn run(role: &str) {
    // libtest runs this on a thread named after the test: call it "main".
    // SAFETY: PR_SET_NAME with a NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"main".as_ptr()) };
    let (kind, arg) = role.split_once(':').unwrap_or((role, ""));
    match kind {
        "blocked" => blocked(),
        "many" => many(),
        "spawner" => spawner(),
        "vfork" => vfork(),
        "tempmask" => tempmask(arg),
        "sigtrap" => sigtrap(arg),
        "exec" => exec_loop(),
        "spinpoll" => spin_poll(),
        other => panic!("unknown role {other}"),
    }
}

fn blocked() {
    handle(libc::SIGUSR1, on_usr1);
    let null: Vec<i32> = (0..2).map(|_| open_null()).collect();
    let run: Vec<i32> = (0..3).map(|_| open_null()).collect();
    assert!(run[2] == run[0] + 2, "not consecutive: {run:?}");
    // SAFETY: posix_openpt returns a new fd or -1.
    let pty: Vec<i32> = (0..3)
        .map(|_| unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) })
        .collect();
    let mut pipe = [0i32; 2];
    // SAFETY: pipe(2) into a 2-int array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: plain syscalls creating fds.
    let (ep, ev) = unsafe { (libc::epoll_create1(0), libc::eventfd(0, 0)) };
    let mut e = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 1,
    };
    // SAFETY: registering a live eventfd.
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev, &mut e) };

    let rd = pipe[0];
    worker("t-read", move || {
        let mut buf = [0u8; 64];
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
        let data = String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned();
        report(format!("read n={n} data={data} errno={}", errno()));
    });
    worker("t-sleep", || {
        let ts = libc::timespec {
            tv_sec: (SLEEP_MS / 1000) as _,
            tv_nsec: 0,
        };
        let t0 = Instant::now();
        // SAFETY: nanosleep with valid pointers.
        let r = unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        let e = errno();
        report(format!(
            "slept ret={r} errno={e} ms={}",
            t0.elapsed().as_millis()
        ));
    });
    worker("t-futex", || futex_wait(None));
    worker("t-futex-to", || {
        futex_wait(Some(libc::timespec {
            tv_sec: 600,
            tv_nsec: 0,
        }))
    });
    worker("t-epoll", move || {
        let (mut eintr, mut events) = (0, 0);
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 1];
        loop {
            // SAFETY: one output slot.
            let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 1, -1) };
            if n < 0 && errno() == libc::EINTR {
                eintr += 1;
                continue;
            }
            if n > 0 {
                events += n;
                break;
            }
        }
        report(format!("epoll eintr={eintr} events={events}"));
    });
    worker("t-spin", spin);
    let list = |v: &[i32]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    report(format!(
        "ready null={} run={},{} pty={}",
        list(&null),
        run[0],
        run[2],
        list(&pty)
    ));
    let w = pipe[1];
    commands(|cmd, arg| match cmd {
        "data" => {
            // SAFETY: writing our bytes to our pipe.
            unsafe { libc::write(w, arg.as_ptr().cast(), arg.len()) };
        }
        "status" => report(format!(
            "status usr1={} futex_early={} spin_ok={}",
            USR1.load(Ordering::SeqCst),
            FUTEX_EARLY.load(Ordering::SeqCst),
            SPIN_OK.load(Ordering::SeqCst)
        )),
        "wake" => {
            WORD.store(1, Ordering::SeqCst);
            // SAFETY: FUTEX_WAKE on a live word.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    WORD.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    i32::MAX,
                )
            };
        }
        "event" => {
            let one = 1u64;
            // SAFETY: 8 bytes to an eventfd.
            unsafe { libc::write(ev, (&one as *const u64).cast(), 8) };
        }
        _ => {}
    });
}

/// 2 x 490 PTY masters in two runs of consecutive fds, 8 idle threads.
fn many() {
    // SAFETY: raising our own soft fd limit to the hard one.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    // At fixed numbers, so that each run is consecutive whatever else is open.
    let open = |base: i32| {
        for fd in base..base + 490 {
            // SAFETY: a new master, moved to `fd`.
            unsafe {
                let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
                assert!(m >= 0 && libc::dup2(m, fd) == fd);
                libc::close(m);
            }
        }
        (base, base + 489)
    };
    let (a, b) = (open(100), open(600));
    for i in 0..8 {
        worker(&format!("t-idle{i}"), || futex_wait(None));
    }
    report(format!("ready a={},{} b={},{}", a.0, a.1, b.0, b.1));
    commands(|_, _| {});
}

fn spawner() {
    for i in 0..4 {
        worker(&format!("t-spawner{i}"), || loop {
            std::thread::spawn(|| {
                SPAWNED.fetch_add(1, Ordering::SeqCst);
            })
            .join()
            .unwrap();
        });
    }
    report("ready".into());
    commands(|cmd, _| {
        if cmd == "status" {
            report(format!("status spawned={}", SPAWNED.load(Ordering::SeqCst)));
        }
    });
}

extern "C" fn vfork_child(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: sleeping then leaving without touching the parent's state.
    unsafe {
        libc::usleep(1_500_000);
        libc::_exit(0)
    }
}

fn vfork() {
    worker("t-sleep", || loop {
        std::thread::sleep(Duration::from_secs(100));
    });
    report("vforking".into());
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the child runs on its own stack and only sleeps and _exits; CLONE_VFORK
    // holds this thread until then.
    let r = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()).cast();
        libc::clone(
            vfork_child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    assert!(r > 0);
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(r, std::ptr::null_mut(), 0) };
    report("vfork done".into());
    commands(|cmd, _| {
        if cmd == "status" {
            report("status ok=1".into());
        }
    });
}

/// One thread, its real mask blocking SIGUSR2, waiting on stdin in ppoll or
/// epoll_pwait with a temporary mask that blocks nothing.
fn tempmask(call: &str) {
    block(&[libc::SIGUSR2]);
    let null = open_null();
    let mask = current_mask();
    report(format!("ready null={null} mask={mask:x}"));
    // SAFETY: an empty sigset.
    let empty: libc::sigset_t = unsafe {
        let mut s = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        s
    };
    let fd0 = std::io::stdin().as_raw_fd();
    loop {
        let r = if call == "ppoll" {
            let mut pfd = libc::pollfd {
                fd: fd0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, no time-out, a valid mask.
            unsafe { libc::ppoll(&mut pfd, 1, std::ptr::null(), &empty) }
        } else {
            // SAFETY: as in `blocked`.
            let ep = unsafe { libc::epoll_create1(0) };
            let mut e = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            let mut out = [libc::epoll_event { events: 0, u64: 0 }; 1];
            // SAFETY: registering stdin; one output slot; a valid mask.
            let n = unsafe {
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd0, &mut e);
                libc::epoll_pwait(ep, out.as_mut_ptr(), 1, -1, &empty)
            };
            // SAFETY: closing our epoll fd.
            unsafe { libc::close(ep) };
            n
        };
        if r > 0 {
            break;
        }
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    report(format!("mask now={:x}", current_mask()));
}

fn exec_loop() {
    worker("t-idle", || futex_wait(None));
    if std::env::var_os("PTYREAP_EXEC_AGAIN").is_none() {
        report("ready".into());
    }
    let t = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(2));
        use std::os::unix::process::CommandExt;
        let e = Command::new(std::env::current_exe().unwrap())
            .args([ENTRY, "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env("PTYREAP_EXEC_AGAIN", "1")
            .exec();
        panic!("exec: {e}");
    });
    let _ = t.join();
}

/// A thread ("t-spin-poll") in a busy poll loop: the pipe's write end is closed, so every
/// ppoll/poll returns POLLHUP at once and the thread never waits; another ("t-compute") spins
/// without system calls.
fn spin_poll() {
    let mut p = [0; 2];
    // SAFETY: pipe writes two fds.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    // SAFETY: closing our own write end.
    unsafe { libc::close(p[1]) };
    let fd = p[0];
    worker("t-spin-poll", move || loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
    });
    worker("t-compute", || {
        let mut x = 1u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    });
    report(format!("ready fd={fd}"));
    commands(|_, _| {});
}

fn sigtrap(how: &str) {
    if how == "ignore" {
        // SAFETY: ignoring a signal.
        unsafe { libc::signal(libc::SIGTRAP, libc::SIG_IGN) };
    } else {
        handle(libc::SIGTRAP, on_trap);
    }
    let null = open_null();
    report(format!("ready null={null}"));
    commands(|cmd, _| {
        if cmd == "status" {
            report(format!("status traps={}", TRAPS.load(Ordering::SeqCst)));
        }
    });
}
