//! `ptyreap-victim`: a small target for the do-no-harm tests. It holds hung-up PTY masters at
//! fds 100, 101, ... (what a leak leaves: the slave was opened and closed again, nobody holds it)
//! and puts itself in the configurations where a careless reap would kill or damage it: seccomp
//! filters on the calls ptyreap injects, SIGTRAP/SIGSYS dispositions, a process sharing its fd
//! table, close-on-exec masters. Linux only; Rust on libc, so it runs in the aarch64 VM too.
//!
//! # Flags
//! - `--masters N` (default 2): N hung-up masters at fds 100..100+N.
//! - `--cloexec`: the masters are close-on-exec.
//! - `--seccomp kill|trap|errno|notify|log`: a filter (no_new_privs, then seccomp) whose action
//!   applies to `--filter-calls` (default `close,close_range,dup3`) when the fd argument is >= 100
//!   (close, close_range: arg 0; dup3: arg 1): the app's own closes of low fds are allowed, so it
//!   keeps working. `notify` starts a supervisor *thread in this process* that answers every
//!   notification with "continue".
//! - `--sigtrap default|handler|ignore` (default `default`): SIGTRAP's disposition. A handler
//!   counts calls (`sigtrap` in the status).
//! - SIGSYS always has a counting handler that, like a sandbox emulating a trapped call, makes the
//!   call return -EPERM (`sigsys` in the status).
//! - `--never-opened`: the masters' slaves are never opened (no POLLHUP: a poll on them blocks).
//! - `--share-files`: a child made with `clone(CLONE_FILES)` (no CLONE_THREAD: its own process,
//!   the same fd table) that waits in `poll()` (POLLIN) on every master; `sibling` in the ready
//!   file. When the poll returns it writes what ended it to `FILE.sibling`.
//! - `--strict-thread`: one more thread that enters strict seccomp mode and blocks in `read()`.
//! - `--spin-poll N`: N threads that spin in `poll()` on every master (hung up, so each poll
//!   returns at once: a busy loop, never waiting); `--spin-select`: one more spinning in `select()`;
//!   `--spin-compute`: one more spinning in pure computation, no system calls.
//! - `--open-after-ms N`: wait N ms before opening the masters (so the process is clearly older
//!   than its PTYs: they are its own).
//! - `--poll-every-ms N`: one thread that polls every master once (timeout 0) every N ms and
//!   sleeps in between, as socat's `wait-slave` does while it waits for its client.
//! - `--eintr-probes`: three threads that count every EINTR they see (`eintr` in the status) and
//!   every call (`probe_calls`): one spins 50 us then waits 1 ms in `epoll_wait` on an idle
//!   eventfd; one spins 50 us then waits 1 ms in `sigtimedwait` for a signal never sent; one spins
//!   3 ms, forks a child that exits at once (SIGCHLD left at its default: ignored), then waits
//!   2 ms in `epoll_wait`. Nothing ever interrupts them but a tracer: a stop, or a signal the
//!   kernel queues because the thread is traced.
//! - `--fork-child`: 200 ms later, a child that inherits every master and, on a terminal of
//!   the victim's (a master kept below fd 100, its slave the child's controlling terminal and
//!   stdio, as forkpty makes it), execs this program again (`--inheritor`), which just sleeps; `child` in the ready file (its copies crossed an
//!   exec: inherited). `--fork-child-no-exec`: the same child without the exec (it carries the
//!   parent's program and numbers on, as Tcl expect's `fork` does).
//! - `--child-reads`: that child blocks in `read()` on its copy of the first master.
//! - `--uring`: an io_uring instance with every master registered as a fixed file.
//! - `--uring-slave`: the first master's slave is opened, registered with an io_uring instance
//!   and its fd closed: the ring alone holds the slave (the PTY is in use, not hung up).
//! - `--name NAME`: the process's name (comm), escape sequences and all.
//! - `--block-trap`: the main thread also blocks SIGTRAP (a test queues one that must stay).
//! - `--leader-exits`: the main loop runs in a second thread and the main thread exits
//!   (`pthread_exit`): the leader is a zombie while the process lives on.
//! - `--sud`: the process has one thread, which turns on Syscall User Dispatch (as Wine does)
//!   with its selector at BLOCK while it computes (about 20 ms at a time, no system calls) and
//!   at ALLOW around its own calls (1 ms of sleep, the status, refilling any master closed, so
//!   each reap finds them all again). Every signal but the synchronous ones is blocked and taken
//!   with `sigtimedwait`; the SIGSYS handler sets ALLOW and counts (`sigsys` in the status), so a
//!   SIGSYS our call caused and delivered shows.
//! - `--vfork-ms N`: one thread that makes children with `CLONE_VM | CLONE_VFORK` (a vfork), each
//!   sleeping N ms: the thread waits for them in the kernel, where no ptrace stop reaches it.
//! - `--heartbeat`: one thread that sleeps 1 ms at a time and records the longest gap between
//!   its wake-ups (`max_gap_us` in the status, since the previous status): how long the
//!   process was held.
//! - `--watch-when FILE`: one thread with an empty epoll set that waits for FILE to exist, then
//!   registers the first master in that set (edge-triggered: it sleeps in `epoll_wait` after the
//!   first report), then writes FILE.done.
//! - `--hole-every K`: every K-th fd from 100 on is /dev/null instead of a master (the masters
//!   move up past each hole), so a reap needs one `close_range` per stretch.
//! - `--ready FILE` (required).
//!
//! The main thread blocks SIGUSR2 and SIGWINCH (a mask to compare), then loops in `nanosleep`.
//! SIGUSR1 makes it write `FILE.status` (atomically): `seq=N sigtrap=N sigsys=N notified=N
//! open=FD,FD,...` — the masters still open. Its answer proves the main thread runs.
//! SIGTERM ends it (and the sibling).

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("ptyreap-victim: Linux only");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

    static SIGTRAPS: AtomicU64 = AtomicU64::new(0);
    static SIGSYSES: AtomicU64 = AtomicU64::new(0);
    static NOTIFIED: AtomicU64 = AtomicU64::new(0);
    static REPORT: AtomicBool = AtomicBool::new(false);
    static QUIT: AtomicBool = AtomicBool::new(false);
    /// Threads that are up and in their loops (the ready file waits for all of them).
    static STARTED: AtomicU64 = AtomicU64::new(0);
    static EINTRS: AtomicU64 = AtomicU64::new(0);
    static PROBE_CALLS: AtomicU64 = AtomicU64::new(0);
    static MAX_GAP_US: AtomicU64 = AtomicU64::new(0);
    /// The Syscall User Dispatch selector (`--sud`): 0 ALLOW, 1 BLOCK.
    static SELECTOR: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

    const FIRST_FD: i32 = 100;
    /// `--hole-every K` (0: no holes).
    static HOLE_EVERY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

    /// The fd of master `i`: FIRST_FD + i, moved up past the holes.
    fn master_fd(i: i32) -> i32 {
        let k = HOLE_EVERY.load(SeqCst);
        FIRST_FD + i + if k > 1 { i / (k - 1) } else { 0 }
    }

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;

    fn die(what: &str) -> ! {
        eprintln!(
            "ptyreap-victim: {what}: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1)
    }

    fn usage(what: &str) -> ! {
        eprintln!("ptyreap-victim: {what}");
        std::process::exit(2)
    }

    #[derive(Default)]
    struct Args {
        masters: i32,
        cloexec: bool,
        seccomp: Option<String>,
        filter_calls: Vec<String>,
        sigtrap: String,
        share_files: bool,
        never_opened: bool,
        strict_thread: bool,
        leader_exits: bool,
        block_trap: bool,
        spin_poll: i32,
        open_after_ms: u64,
        fork_child: bool,
        no_exec: bool,
        child_reads: bool,
        name: Option<String>,
        uring: bool,
        uring_slave: bool,
        spin_select: bool,
        spin_compute: bool,
        eintr_probes: bool,
        poll_every_ms: u64,
        sud: bool,
        vfork_ms: u64,
        heartbeat: bool,
        watch_when: Option<String>,
        hole_every: i32,
        ready: String,
    }

    fn parse() -> Args {
        let mut a = Args {
            masters: 2,
            sigtrap: "default".into(),
            filter_calls: vec!["close".into(), "close_range".into(), "dup3".into()],
            ..Args::default()
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--masters" => a.masters = value().parse().unwrap_or_else(|_| usage("--masters N")),
                "--cloexec" => a.cloexec = true,
                "--seccomp" => a.seccomp = Some(value()),
                "--filter-calls" => a.filter_calls = value().split(',').map(String::from).collect(),
                "--sigtrap" => a.sigtrap = value(),
                "--share-files" => a.share_files = true,
                "--never-opened" => a.never_opened = true,
                "--strict-thread" => a.strict_thread = true,
                "--leader-exits" => a.leader_exits = true,
                "--block-trap" => a.block_trap = true,
                "--spin-poll" => {
                    a.spin_poll = value().parse().unwrap_or_else(|_| usage("--spin-poll N"))
                }
                "--spin-select" => a.spin_select = true,
                "--open-after-ms" => {
                    a.open_after_ms = value()
                        .parse()
                        .unwrap_or_else(|_| usage("--open-after-ms N"))
                }
                "--fork-child" => a.fork_child = true,
                "--fork-child-no-exec" => {
                    a.fork_child = true;
                    a.no_exec = true;
                }
                "--child-reads" => a.child_reads = true,
                "--name" => a.name = Some(value()),
                "--uring" => a.uring = true,
                "--uring-slave" => a.uring_slave = true,
                "--spin-compute" => a.spin_compute = true,
                "--eintr-probes" => a.eintr_probes = true,
                "--poll-every-ms" => {
                    a.poll_every_ms = value()
                        .parse()
                        .unwrap_or_else(|_| usage("--poll-every-ms N"))
                }
                "--sud" => a.sud = true,
                "--vfork-ms" => {
                    a.vfork_ms = value().parse().unwrap_or_else(|_| usage("--vfork-ms N"))
                }
                "--heartbeat" => a.heartbeat = true,
                "--hole-every" => {
                    a.hole_every = value().parse().unwrap_or_else(|_| usage("--hole-every K"))
                }
                "--watch-when" => a.watch_when = Some(value()),
                "--ready" => a.ready = value(),
                _ => usage(&format!("unknown flag {flag}")),
            }
        }
        if a.ready.is_empty() {
            usage("--ready FILE is required");
        }
        a
    }

    /// A master whose slave was opened and closed again: POLLHUP, nobody holds the slave (or,
    /// with `never_opened`, a slave nobody ever opened).
    fn hung_up_master(at: i32, cloexec: bool, never_opened: bool) {
        // SAFETY: plain libc calls on fds we own.
        unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            if m < 0 || libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
                die("opening a PTY");
            }
            let name = libc::ptsname(m);
            if name.is_null() {
                die("ptsname");
            }
            if !never_opened {
                let s = libc::open(name, libc::O_RDWR | libc::O_NOCTTY);
                if s < 0 {
                    die("opening the slave");
                }
                libc::close(s);
            }
            let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
            if libc::dup3(m, at, flags) != at {
                die("dup3");
            }
            libc::close(m);
        }
    }

    extern "C" fn on_sigtrap(_: libc::c_int) {
        SIGTRAPS.fetch_add(1, SeqCst);
    }

    extern "C" fn on_usr1(_: libc::c_int) {
        REPORT.store(true, SeqCst);
    }

    extern "C" fn on_term(_: libc::c_int) {
        QUIT.store(true, SeqCst);
    }

    /// A sandbox's emulation of a trapped call: count it and make it return -EPERM.
    extern "C" fn on_sigsys(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        SIGSYSES.fetch_add(1, SeqCst);
        // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
        unsafe {
            let uc = &mut *(ctx as *mut libc::ucontext_t);
            #[cfg(target_arch = "x86_64")]
            {
                uc.uc_mcontext.gregs[libc::REG_RAX as usize] = -(libc::EPERM as i64);
            }
            #[cfg(target_arch = "aarch64")]
            {
                uc.uc_mcontext.regs[0] = (-(libc::EPERM as i64)) as u64;
            }
        }
    }

    fn handle(sig: i32, handler: usize, flags: i32) {
        // SAFETY: installing a handler with a zeroed, then filled sigaction.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler;
            sa.sa_flags = flags;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                die("sigaction");
            }
        }
    }

    // Classic BPF, as seccomp takes it.
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;

    fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }

    /// The filter: `action` for the listed calls on fds >= FIRST_FD, allow everything else.
    fn filter(action: u32, calls: &[String]) -> Vec<libc::sock_filter> {
        const ALLOW: u32 = 0x7fff_0000;
        let nr = |name: &str| -> u32 {
            (match name {
                "close" => libc::SYS_close,
                "close_range" => libc::SYS_close_range,
                "dup3" => libc::SYS_dup3,
                other => usage(&format!("unknown call {other}")),
            }) as u32
        };
        let mut p = vec![
            op(LD_W_ABS, 0, 0, 4),
            op(JEQ_K, 1, 0, AUDIT_ARCH),
            op(RET_K, 0, 0, ALLOW),
            op(LD_W_ABS, 0, 0, 0),
        ];
        // Each listed call: jump to its argument check (two blocks at the end).
        let n = calls.len();
        for (i, c) in calls.iter().enumerate() {
            // after this: the remaining jeqs, then `ret ALLOW`, then block 0 (arg 0), block 1.
            let to_block = (n - i - 1) as u8 + 1 + if c == "dup3" { 3 } else { 0 };
            p.push(op(JEQ_K, to_block, 0, nr(c)));
        }
        p.push(op(RET_K, 0, 0, ALLOW));
        // block 0: fd in arg 0 (low 32 bits, little-endian)
        p.push(op(LD_W_ABS, 0, 0, 16));
        p.push(op(JGE_K, 4, 0, FIRST_FD as u32));
        p.push(op(RET_K, 0, 0, ALLOW));
        // block 1: fd in arg 1
        p.push(op(LD_W_ABS, 0, 0, 24));
        p.push(op(JGE_K, 1, 0, FIRST_FD as u32));
        p.push(op(RET_K, 0, 0, ALLOW));
        p.push(op(RET_K, 0, 0, action));
        p
    }

    /// Installs the filter; returns the notification listener for `notify`.
    fn install(kind: &str, calls: &[String]) -> Option<i32> {
        let action = match kind {
            "kill" => 0x8000_0000,                       // KILL_PROCESS
            "trap" => 0x0003_0000,                       // TRAP
            "errno" => 0x0005_0000 | libc::EPERM as u32, // ERRNO(EPERM)
            "notify" => 0x7fc0_0000,                     // USER_NOTIF
            "log" => 0x7ffc_0000,                        // LOG
            other => usage(&format!("unknown seccomp action {other}")),
        };
        let prog = filter(action, calls);
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        let flags: libc::c_ulong = if kind == "notify" { 8 } else { 0 }; // NEW_LISTENER
                                                                         // SAFETY: prctl and seccomp with a valid program that outlives the call.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                die("no_new_privs");
            }
            let r = libc::syscall(
                libc::SYS_seccomp,
                1,
                flags,
                &fprog as *const libc::sock_fprog,
            );
            if r < 0 {
                die("seccomp");
            }
            (kind == "notify").then_some(r as i32)
        }
    }

    /// struct seccomp_notif (include/uapi/linux/seccomp.h): id, pid, flags, seccomp_data.
    #[repr(C)]
    struct Notif {
        id: u64,
        pid: u32,
        flags: u32,
        data: [u64; 8],
    }

    /// struct seccomp_notif_resp.
    #[repr(C)]
    struct NotifResp {
        id: u64,
        val: i64,
        error: i32,
        flags: u32,
    }

    const NOTIF_RECV: libc::c_ulong = 0xc050_2100; // _IOWR('!', 0, struct seccomp_notif)
    const NOTIF_SEND: libc::c_ulong = 0xc018_2101; // _IOWR('!', 1, struct seccomp_notif_resp)
    const FLAG_CONTINUE: u32 = 1;

    /// The supervisor: lets every notified call go on.
    fn supervise(listener: i32) {
        loop {
            // SAFETY: the kernel wants a zeroed seccomp_notif; both structs are plain data.
            let mut n: Notif = unsafe { std::mem::zeroed() };
            if unsafe { libc::ioctl(listener, NOTIF_RECV, &mut n) } != 0 {
                continue;
            }
            NOTIFIED.fetch_add(1, SeqCst);
            let resp = NotifResp {
                id: n.id,
                val: 0,
                error: 0,
                flags: FLAG_CONTINUE,
            };
            // SAFETY: as above.
            unsafe { libc::ioctl(listener, NOTIF_SEND, &resp) };
        }
    }

    /// 200 ms after the masters were made, a child that inherits them all and sleeps until its
    /// parent goes (the node-pty leak: a child holding masters it never saw).
    fn fork_inheritor(reads: bool, exec: bool) -> i32 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        // The child runs on a terminal of ours, as forkpty starts a shell: a master kept here
        // (close-on-exec, so the child's copy does not cross its exec) and its slave as the
        // child's controlling terminal and stdio.
        let mut slave = [0 as libc::c_char; 64];
        // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on a master we own.
        let term = unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if m < 0
                || libc::grantpt(m) != 0
                || libc::unlockpt(m) != 0
                || libc::ptsname_r(m, slave.as_mut_ptr(), slave.len()) != 0
            {
                die("opening the child's terminal");
            }
            m
        };
        let exe = c"/proc/self/exe";
        let argv = [
            c"ptyreap-victim".as_ptr(),
            c"--inheritor".as_ptr(),
            if reads {
                c"--reads".as_ptr()
            } else {
                std::ptr::null()
            },
            std::ptr::null(),
        ];
        // SAFETY: fork while single-threaded; the child only execs, or sleeps and exits.
        match unsafe { libc::fork() } {
            -1 => die("fork"),
            0 => unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::close(term); // as forkpty's child does
                libc::setsid();
                let s = libc::open(slave.as_ptr(), libc::O_RDWR);
                if s < 0 || libc::ioctl(s, libc::TIOCSCTTY, 0) != 0 {
                    libc::_exit(126);
                }
                for fd in 0..3 {
                    libc::dup2(s, fd);
                }
                if s > 2 {
                    libc::close(s);
                }
                if exec {
                    libc::execv(exe.as_ptr(), argv.as_ptr());
                    libc::_exit(127);
                }
                inheritor(reads)
            },
            pid => pid,
        }
    }

    /// The inheriting child's life: sleep, or block in read() on the first master.
    fn inheritor(reads: bool) -> ! {
        // exec named it after /proc/self/exe's file name ("exe")
        // SAFETY: PR_SET_NAME with a NUL-terminated string.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"ptyreap-victim".as_ptr()) };
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reading into our own buffer / waiting for a signal.
            unsafe {
                if reads {
                    libc::read(FIRST_FD, buf.as_mut_ptr().cast(), buf.len());
                } else {
                    libc::pause();
                }
            }
        }
    }

    /// An io_uring instance with `fds` registered (IORING_REGISTER_FILES): requests on them
    /// would be invisible to every other look at the process. The ring fd is kept for good.
    fn register_with_io_uring(fds: &[i32]) {
        // struct io_uring_params is 120 bytes; zero asks for the defaults.
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup with a valid params buffer; the ring fd is kept for good.
        let ring = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
        if ring < 0 {
            die("io_uring_setup");
        }
        const IORING_REGISTER_FILES: libc::c_long = 2;
        // SAFETY: io_uring_register with an array of `masters` fds.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                ring,
                IORING_REGISTER_FILES,
                fds.as_ptr(),
                fds.len(),
            )
        };
        if r < 0 {
            die("io_uring_register");
        }
    }

    /// POLLIN on each of the `masters` masters.
    fn pollin_on_masters(masters: i32) -> Vec<libc::pollfd> {
        (0..masters)
            .map(|i| libc::pollfd {
                fd: FIRST_FD + i,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect()
    }

    /// A busy poll loop: POLLIN on every master; hung up, each poll returns at once.
    fn spin_poll(masters: i32) {
        STARTED.fetch_add(1, SeqCst);
        let mut fds = pollin_on_masters(masters);
        loop {
            // SAFETY: a valid pollfd array.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        }
    }

    /// The same with select(): a hung-up master is always readable.
    fn spin_select(masters: i32) {
        STARTED.fetch_add(1, SeqCst);
        loop {
            // SAFETY: fd_set is plain data, filled by FD_SET; select with a timeout.
            unsafe {
                let mut set: libc::fd_set = std::mem::zeroed();
                for i in 0..masters {
                    libc::FD_SET(FIRST_FD + i, &mut set);
                }
                let mut tv = libc::timeval {
                    tv_sec: 1,
                    tv_usec: 0,
                };
                libc::select(
                    FIRST_FD + masters,
                    &mut set,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut tv,
                );
            }
        }
    }

    /// The CLONE_FILES sibling: polls every master until something happens to one.
    extern "C" fn sibling(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: arg is the `Sibling` the parent keeps alive (it never returns before us).
        let s = unsafe { &*(arg as *const Sibling) };
        // SAFETY: prctl on ourselves.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        // Never-opened slaves: nothing to read, no hang-up; only an fd closed under the poll
        // (POLLNVAL) or a slave opened and closed ends the wait.
        let mut fds = pollin_on_masters(s.masters);
        loop {
            // SAFETY: a valid pollfd array.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if r < 0 {
                continue;
            }
            let what: Vec<String> = fds
                .iter()
                .filter(|p| p.revents != 0)
                .map(|p| format!("{}:{:#x}", p.fd, p.revents))
                .collect();
            let _ = std::fs::write(&s.report, what.join(","));
            // SAFETY: leaving the child.
            unsafe { libc::_exit(0) }
        }
    }

    struct Sibling {
        masters: i32,
        report: String,
    }

    fn spawn_sibling(s: &Sibling) -> i32 {
        let mut stack = vec![0u8; 256 * 1024];
        // SAFETY: a fresh stack (leaked for the child's life) and a plain function.
        let top = unsafe { stack.as_mut_ptr().add(stack.len()) } as *mut libc::c_void;
        std::mem::forget(stack);
        let pid = unsafe {
            libc::clone(
                sibling,
                top,
                libc::CLONE_FILES | libc::SIGCHLD,
                s as *const Sibling as *mut libc::c_void,
            )
        };
        if pid < 0 {
            die("clone(CLONE_FILES)");
        }
        pid
    }

    fn open_masters(n: i32) -> Vec<i32> {
        (0..n)
            .map(master_fd)
            .filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0)
            .collect()
    }

    fn write_atomically(path: &str, text: &str) {
        let tmp = format!("{path}.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        if args.get(1).map(String::as_str) == Some("--inheritor") {
            inheritor(args.get(2).map(String::as_str) == Some("--reads"));
        }
        let a = parse();
        if let Some(name) = &a.name {
            let c = std::ffi::CString::new(name.as_str()).unwrap_or_else(|_| usage("--name"));
            // SAFETY: PR_SET_NAME with a NUL-terminated string (the kernel keeps 15 bytes).
            unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
        }
        if a.open_after_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(a.open_after_ms));
        }
        HOLE_EVERY.store(a.hole_every, SeqCst);
        for i in 0..a.masters {
            hung_up_master(master_fd(i), a.cloexec, a.never_opened);
        }
        if a.hole_every > 1 {
            let last = master_fd(a.masters - 1);
            // SAFETY: open and dup2 onto fds in our own table.
            unsafe {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                let mut fd = FIRST_FD + a.hole_every - 1;
                while fd < last {
                    libc::dup2(null, fd);
                    fd += a.hole_every;
                }
                libc::close(null);
            }
        }
        if a.uring {
            register_with_io_uring(&open_masters(a.masters));
        }
        if a.uring_slave {
            // SAFETY: ptsname/open/close on the master we own.
            unsafe {
                libc::close(FIRST_FD);
                let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
                if m < 0 || libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
                    die("opening a PTY");
                }
                let s = libc::open(libc::ptsname(m), libc::O_RDWR | libc::O_NOCTTY);
                if s < 0 || libc::dup2(m, FIRST_FD) != FIRST_FD {
                    die("opening the slave");
                }
                libc::close(m);
                register_with_io_uring(&[s]);
                libc::close(s);
            }
        }
        if a.sud {
            sud_main(&a);
        }
        let child_pid = if a.fork_child {
            fork_inheritor(a.child_reads, !a.no_exec)
        } else {
            0
        };
        handle(
            libc::SIGUSR1,
            on_usr1 as extern "C" fn(libc::c_int) as usize,
            0,
        );
        handle(
            libc::SIGTERM,
            on_term as extern "C" fn(libc::c_int) as usize,
            0,
        );
        handle(
            libc::SIGSYS,
            on_sigsys as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                as usize,
            libc::SA_SIGINFO,
        );
        match a.sigtrap.as_str() {
            "default" => {}
            "handler" => handle(
                libc::SIGTRAP,
                on_sigtrap as extern "C" fn(libc::c_int) as usize,
                0,
            ),
            "ignore" => handle(libc::SIGTRAP, libc::SIG_IGN, 0),
            other => usage(&format!("unknown --sigtrap {other}")),
        }
        let sib = Sibling {
            masters: a.masters,
            report: format!("{}.sibling", a.ready),
        };
        let sibling_pid = if a.share_files {
            spawn_sibling(&sib)
        } else {
            0
        };
        for i in 0..a.spin_poll {
            let n = a.masters;
            std::thread::Builder::new()
                .name(format!("spin-poll-{i}"))
                .spawn(move || spin_poll(n))
                .unwrap_or_else(|_| die("spawning a poll spinner"));
        }
        if a.spin_select {
            let n = a.masters;
            std::thread::Builder::new()
                .name("spin-select".into())
                .spawn(move || spin_select(n))
                .unwrap_or_else(|_| die("spawning the select spinner"));
        }
        if a.spin_compute {
            std::thread::Builder::new()
                .name("spin-compute".into())
                .spawn(|| {
                    STARTED.fetch_add(1, SeqCst);
                    let mut x = 1u64;
                    loop {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
                .unwrap_or_else(|_| die("spawning the compute spinner"));
        }
        if a.poll_every_ms > 0 {
            let (n, every) = (a.masters, a.poll_every_ms);
            std::thread::Builder::new()
                .name("slow-poll".into())
                .spawn(move || {
                    let mut fds = pollin_on_masters(n);
                    loop {
                        // SAFETY: a valid pollfd array; timeout 0 returns at once.
                        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
                        std::thread::sleep(std::time::Duration::from_millis(every));
                    }
                })
                .unwrap_or_else(|_| die("spawning the slow poller"));
        }
        if a.vfork_ms > 0 {
            let ms = a.vfork_ms;
            std::thread::Builder::new()
                .name("vforker".into())
                .spawn(move || vforker(ms))
                .unwrap_or_else(|_| die("spawning the vforker"));
        }
        if a.heartbeat {
            std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(heartbeat)
                .unwrap_or_else(|_| die("spawning the heartbeat"));
        }
        if let Some(file) = a.watch_when.clone() {
            let n = a.masters;
            std::thread::Builder::new()
                .name("watch-later".into())
                .spawn(move || watch_when(&file, n))
                .unwrap_or_else(|_| die("spawning the late watcher"));
        }
        if a.eintr_probes {
            for kind in 0..3u8 {
                std::thread::Builder::new()
                    .name(format!("eintr-probe-{kind}"))
                    .spawn(move || eintr_probe(kind))
                    .unwrap_or_else(|_| die("spawning an EINTR probe"));
            }
        }
        if a.strict_thread {
            let mut p = [0; 2];
            // SAFETY: pipe writes two fds; the write end stays open (never written), so the
            // strict thread's read blocks for good.
            if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
                die("pipe");
            }
            let read_end = p[0];
            std::thread::Builder::new()
                .name("strict".into())
                .spawn(move || {
                    let mut byte = 0u8;
                    // SAFETY: after PR_SET_SECCOMP strict, only read/write/exit/sigreturn are
                    // allowed: nothing but read runs here.
                    unsafe {
                        libc::prctl(libc::PR_SET_SECCOMP, 1);
                        loop {
                            libc::read(read_end, &mut byte as *mut u8 as *mut libc::c_void, 1);
                        }
                    }
                })
                .unwrap_or_else(|_| die("spawning the strict thread"));
        }
        let listener = a
            .seccomp
            .as_deref()
            .and_then(|k| install(k, &a.filter_calls));
        if let Some(l) = listener {
            std::thread::Builder::new()
                .name("supervisor".into())
                .spawn(move || supervise(l))
                .unwrap_or_else(|_| die("spawning the supervisor"));
        }
        // SAFETY: a mask to compare before and after (the main thread's own).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::sigaddset(&mut set, libc::SIGWINCH);
            if a.block_trap {
                libc::sigaddset(&mut set, libc::SIGTRAP);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let spinners = a.spin_poll as u64 + u64::from(a.spin_select) + u64::from(a.spin_compute);
        while STARTED.load(SeqCst) < spinners {
            std::thread::yield_now();
        }
        // and past the thread start-up, which runs with every signal blocked
        std::thread::sleep(std::time::Duration::from_millis(20));
        let pid = std::process::id();
        write_atomically(
            &a.ready,
            &format!("pid={pid} sibling={sibling_pid} child={child_pid} first_fd={FIRST_FD}\n"),
        );
        if a.leader_exits {
            // The main loop goes on in another thread; the leader becomes a zombie.
            let masters = a.masters;
            let ready = a.ready.clone();
            std::thread::spawn(move || serve(masters, &ready, 0));
            // SAFETY: the raw exit ends only the calling (main) thread, without unwinding (which
            // pthread_exit would try through Rust's frames); the process lives on in the other.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
        }
        serve(a.masters, &a.ready, sibling_pid);
    }

    /// One EINTR probe (see `--eintr-probes`), forever. It blocks the signals the tests send the
    /// process (SIGUSR1 for the status, SIGTERM), so those never land here.
    fn eintr_probe(kind: u8) {
        // SAFETY: plain syscalls on our own fds, masks and children.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            libc::sigdelset(&mut set, libc::SIGCHLD);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            let efd = libc::eventfd(0, libc::EFD_CLOEXEC);
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &mut ev);
            let mut only_usr2: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut only_usr2);
            libc::sigaddset(&mut only_usr2, libc::SIGUSR2);
            let spin = |us: u128| {
                let t = std::time::Instant::now();
                while t.elapsed().as_micros() < us {
                    std::hint::spin_loop();
                }
            };
            loop {
                let r = match kind {
                    0 => {
                        spin(50);
                        libc::epoll_wait(ep, &mut ev, 1, 1)
                    }
                    1 => {
                        spin(50);
                        let ts = libc::timespec {
                            tv_sec: 0,
                            tv_nsec: 1_000_000,
                        };
                        libc::sigtimedwait(&only_usr2, std::ptr::null_mut(), &ts)
                    }
                    _ => {
                        spin(3000);
                        let child = libc::fork();
                        if child == 0 {
                            libc::_exit(0);
                        }
                        let r = libc::epoll_wait(ep, &mut ev, 1, 2);
                        if child > 0 {
                            libc::waitpid(child, std::ptr::null_mut(), 0);
                        }
                        r
                    }
                };
                if r < 0 && *libc::__errno_location() == libc::EINTR {
                    EINTRS.fetch_add(1, SeqCst);
                }
                PROBE_CALLS.fetch_add(1, SeqCst);
            }
        }
    }

    fn status_line(seq: u64, masters: i32) -> String {
        let open: Vec<String> = open_masters(masters)
            .iter()
            .map(|fd| fd.to_string())
            .collect();
        format!(
            "seq={seq} sigtrap={} sigsys={} notified={} eintr={} probe_calls={} max_gap_us={} open={}\n",
            SIGTRAPS.load(SeqCst),
            SIGSYSES.load(SeqCst),
            NOTIFIED.load(SeqCst),
            EINTRS.load(SeqCst),
            PROBE_CALLS.load(SeqCst),
            MAX_GAP_US.swap(0, SeqCst),
            open.join(",")
        )
    }

    /// `--sud`'s SIGSYS handler: ALLOW first (its own return is a system call), then count.
    extern "C" fn on_sud_sigsys(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
        SELECTOR.store(0, SeqCst);
        SIGSYSES.fetch_add(1, SeqCst);
    }

    /// About `ms` milliseconds of pure computation: no system call, not even the clock's.
    fn compute(rounds: u64) {
        let mut x = 1u64;
        for _ in 0..rounds {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }

    /// `--sud`: the one thread's life (see the module doc). Never returns.
    fn sud_main(a: &Args) -> ! {
        const PR_SET_SYSCALL_USER_DISPATCH: libc::c_int = 59;
        const PR_SYS_DISPATCH_ON: libc::c_ulong = 1;
        handle(
            libc::SIGSYS,
            on_sud_sigsys as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                as usize,
            libc::SA_SIGINFO,
        );
        // how many rounds make about 20 ms here
        let t = std::time::Instant::now();
        compute(1_000_000);
        let per_ms = (1_000_000 / t.elapsed().as_millis().max(1) as u64).max(1);
        let rounds = 20 * per_ms;
        // SAFETY: signal masks and sigtimedwait on plain sets; the prctl names a static byte.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            for sync in [
                libc::SIGSYS,
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
                libc::SIGTRAP,
            ] {
                libc::sigdelset(&mut all, sync);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            if libc::prctl(
                PR_SET_SYSCALL_USER_DISPATCH,
                PR_SYS_DISPATCH_ON,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                SELECTOR.as_ptr(),
            ) != 0
            {
                die("PR_SET_SYSCALL_USER_DISPATCH");
            }
            write_atomically(
                &a.ready,
                &format!(
                    "pid={} sibling=0 child=0 first_fd={FIRST_FD}\n",
                    std::process::id()
                ),
            );
            let mut wanted: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut wanted);
            libc::sigaddset(&mut wanted, libc::SIGUSR1);
            libc::sigaddset(&mut wanted, libc::SIGTERM);
            let mut seq = 0;
            loop {
                SELECTOR.store(1, SeqCst);
                compute(rounds);
                SELECTOR.store(0, SeqCst);
                let open = open_masters(a.masters);
                for fd in (0..a.masters).map(master_fd) {
                    if !open.contains(&fd) {
                        hung_up_master(fd, a.cloexec, a.never_opened);
                    }
                }
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                loop {
                    match libc::sigtimedwait(&wanted, std::ptr::null_mut(), &zero) {
                        libc::SIGUSR1 => {
                            seq += 1;
                            write_atomically(
                                &format!("{}.status", a.ready),
                                &status_line(seq, a.masters),
                            );
                        }
                        libc::SIGTERM => std::process::exit(0),
                        _ => break,
                    }
                }
                let ms = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000_000,
                };
                libc::nanosleep(&ms, std::ptr::null_mut());
            }
        }
    }

    /// A vfork child's life: sleep, then leave (it shares our memory: nothing else).
    extern "C" fn vfork_child(arg: *mut libc::c_void) -> libc::c_int {
        let ms = arg as usize as i64;
        let ts = libc::timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        };
        // SAFETY: a sleep and a raw exit, nothing that touches the parent's memory.
        unsafe {
            libc::nanosleep(&ts, std::ptr::null_mut());
            libc::syscall(libc::SYS_exit, 0);
        }
        0
    }

    /// `--vfork-ms`: vfork children one after another, forever.
    fn vforker(ms: u64) {
        let mut stack = vec![0u8; 64 * 1024];
        // SAFETY: the child runs on its own stack and only sleeps and exits.
        let top = unsafe { stack.as_mut_ptr().add(stack.len()) } as *mut libc::c_void;
        loop {
            let pid = unsafe {
                libc::clone(
                    vfork_child,
                    top,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    ms as usize as *mut libc::c_void,
                )
            };
            if pid < 0 {
                die("clone(CLONE_VFORK)");
            }
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }

    /// `--heartbeat`: 1 ms sleeps, the longest gap between wake-ups kept.
    fn heartbeat() {
        let mut last = std::time::Instant::now();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(1));
            let now = std::time::Instant::now();
            MAX_GAP_US.fetch_max((now - last).as_micros() as u64, SeqCst);
            last = now;
        }
    }

    /// `--watch-when FILE`: once FILE exists, every master in an epoll set.
    fn watch_when(file: &str, masters: i32) {
        // SAFETY: epoll calls on our own fds.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        while std::fs::metadata(file).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // SAFETY: epoll calls on our own fds.
        unsafe {
            for fd in open_masters(masters).into_iter().take(1) {
                let mut ev = libc::epoll_event {
                    events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                    u64: fd as u64,
                };
                if libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) != 0 {
                    die("epoll_ctl");
                }
            }
            let _ = std::fs::write(format!("{file}.done"), "");
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            loop {
                libc::epoll_wait(ep, &mut ev, 1, -1);
            }
        }
    }

    /// Answer SIGUSR1 with a status file until SIGTERM.
    fn serve(masters: i32, ready: &str, sibling_pid: i32) {
        let mut seq = 0u64;
        while !QUIT.load(SeqCst) {
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            // SAFETY: a valid timespec; EINTR is fine.
            unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
            if REPORT.swap(false, SeqCst) {
                seq += 1;
                write_atomically(&format!("{ready}.status"), &status_line(seq, masters));
            }
        }
        if sibling_pid > 0 {
            // SAFETY: our own child.
            unsafe {
                libc::kill(sibling_pid, libc::SIGKILL);
                libc::waitpid(sibling_pid, std::ptr::null_mut(), libc::__WALL);
            }
        }
    }
}
