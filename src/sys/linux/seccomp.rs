//! What a target's seccomp filters would do to the calls ptyreap injects, before any is made.
//!
//! A filter sees every system call of the thread it is attached to, ours included, and its
//! verdict can kill the process (`KILL_PROCESS`), send it a SIGSYS its sandbox handles
//! (`TRAP`), fail the call (`ERRNO`), or make it wait for a supervisor (`USER_NOTIF`) — which may
//! be a thread of the very process we hold stopped. So, before any register of a filtered thread
//! changes, one of:
//! - `PTRACE_O_SUSPEND_SECCOMP` on the injecting thread (what CRIU's compel does): the thread's
//!   filters do not run while the option is set, and it is cleared again before the thread is let
//!   go. The kernel allows it only to a tracer with CAP_SYS_ADMIN in the initial user namespace
//!   that is not itself under seccomp, and only with CONFIG_CHECKPOINT_RESTORE.
//! - Otherwise the filters are read (`PTRACE_SECCOMP_GET_FILTER`, same conditions but without
//!   the tracer's own seccomp restriction on some kernels) and run here, by [`evaluate`], over
//!   exactly the calls to be injected (arch, number, arguments, instruction pointer): only calls
//!   that every filter allows are made.
//! - Filters that cannot be read: the thread is not used (never inject into a filter blind).
//!
//! The evaluator is the kernel's classic-BPF machine as seccomp restricts it
//! (`seccomp_check_filter`: loads from `struct seccomp_data` only, 32-bit aligned), over the
//! original program as installed (which is what `PTRACE_SECCOMP_GET_FILTER` returns). With several
//! filters the most severe verdict wins: the kernel keeps the lowest `ret & SECCOMP_RET_ACTION_FULL`
//! taken as a signed 32-bit number (KILL_PROCESS is 0x80000000, negative).

use std::fmt;
use std::io;

/// `struct sock_filter` (include/uapi/linux/filter.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `struct seccomp_data` (include/uapi/linux/seccomp.h): what a filter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub nr: i32,
    pub arch: u32,
    /// The address after the syscall instruction (the kernel's user pc at entry).
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl Call {
    /// The 64 bytes of `struct seccomp_data`, in the machine's byte order.
    fn bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        b[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        b[8..16].copy_from_slice(&self.instruction_pointer.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        b
    }
}

/// `AUDIT_ARCH_*` of this build's architecture (include/uapi/linux/audit.h).
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const AUDIT_ARCH: u32 = 0;

const RET_ACTION_FULL: u32 = 0xffff_0000;

/// A filter's verdict (SECCOMP_RET_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    KillProcess,
    KillThread,
    Trap,
    Errno(u16),
    UserNotif,
    Trace,
    Log,
    Allow,
}

impl Action {
    pub fn from_ret(ret: u32) -> Action {
        match ret & RET_ACTION_FULL {
            0x8000_0000 => Action::KillProcess,
            0x0000_0000 => Action::KillThread,
            0x0003_0000 => Action::Trap,
            0x0005_0000 => Action::Errno((ret & 0xffff) as u16),
            0x7fc0_0000 => Action::UserNotif,
            0x7ff0_0000 => Action::Trace,
            0x7ffc_0000 => Action::Log,
            0x7fff_0000 => Action::Allow,
            // Unknown actions are treated as KILL_PROCESS by the kernel (seccomp_run_filters).
            _ => Action::KillProcess,
        }
    }

    /// Whether the call runs as if there were no filter (LOG only adds an audit record).
    pub fn runs(self) -> bool {
        matches!(self, Action::Allow | Action::Log)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::KillProcess => f.write_str("kill the process"),
            Action::KillThread => f.write_str("kill the thread"),
            Action::Trap => f.write_str("trap it (SIGSYS)"),
            Action::Errno(e) => write!(f, "fail it with errno {e}"),
            Action::UserNotif => f.write_str("hand it to a supervisor (user notification)"),
            Action::Trace => f.write_str("hand it to a seccomp tracer"),
            Action::Log => f.write_str("log it"),
            Action::Allow => f.write_str("allow it"),
        }
    }
}

/// Why a program could not be run (the kernel would have refused to install it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadProgram(pub String);

const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_ST: u16 = 0x02;
const BPF_STX: u16 = 0x03;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_MISC: u16 = 0x07;
const BPF_W: u16 = 0x00;
const BPF_IMM: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_MEM: u16 = 0x60;
const BPF_LEN: u16 = 0x80;
const BPF_K: u16 = 0x00;
const BPF_X: u16 = 0x08;
const BPF_A: u16 = 0x10;

/// Run one classic-BPF seccomp program over `call`; its raw return value.
pub fn run(prog: &[Insn], call: &Call) -> Result<u32, BadProgram> {
    let data = call.bytes();
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    // Every jump goes forward, so a program ends within its length.
    for _ in 0..=prog.len() {
        let Some(i) = prog.get(pc) else {
            return Err(BadProgram(format!("ran past the end at {pc}")));
        };
        pc += 1;
        let k = i.k;
        let class = i.code & 0x07;
        let slot = |k: u32| -> Result<usize, BadProgram> {
            (k < 16)
                .then_some(k as usize)
                .ok_or_else(|| BadProgram(format!("scratch slot {k}")))
        };
        match class {
            BPF_LD | BPF_LDX => {
                let v = match i.code & 0xe0 {
                    BPF_ABS if i.code & 0x18 == BPF_W && class == BPF_LD => {
                        let o = k as usize;
                        if !o.is_multiple_of(4) || o + 4 > data.len() {
                            return Err(BadProgram(format!("load at offset {k}")));
                        }
                        u32::from_ne_bytes(data[o..o + 4].try_into().expect("4 bytes"))
                    }
                    BPF_IMM => k,
                    BPF_MEM => mem[slot(k)?],
                    BPF_LEN => data.len() as u32,
                    _ => return Err(BadProgram(format!("load {:#x}", i.code))),
                };
                if class == BPF_LD {
                    a = v;
                } else {
                    x = v;
                }
            }
            BPF_ST => mem[slot(k)?] = a,
            BPF_STX => mem[slot(k)?] = x,
            BPF_ALU => {
                let src = if i.code & BPF_X != 0 { x } else { k };
                a = match i.code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 if src == 0 => return Ok(0), // the kernel returns 0 (KILL) here
                    0x30 => a / src,
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 if src == 0 => return Ok(0),
                    0x90 => a % src,
                    0xa0 => a ^ src,
                    _ => return Err(BadProgram(format!("alu {:#x}", i.code))),
                };
            }
            BPF_JMP => {
                let src = if i.code & BPF_X != 0 { x } else { k };
                let op = i.code & 0xf0;
                if op == 0x00 {
                    pc = pc.saturating_add(k as usize); // JA
                } else {
                    let taken = match op {
                        0x10 => a == src,
                        0x20 => a > src,
                        0x30 => a >= src,
                        0x40 => a & src != 0,
                        _ => return Err(BadProgram(format!("jump {:#x}", i.code))),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
            }
            BPF_RET => {
                return match i.code & 0x18 {
                    BPF_K => Ok(k),
                    BPF_A => Ok(a),
                    _ => Err(BadProgram(format!("ret {:#x}", i.code))),
                }
            }
            BPF_MISC => {
                if i.code & 0xf8 == 0x00 {
                    x = a; // TAX
                } else {
                    a = x; // TXA
                }
            }
            _ => unreachable!("class is three bits"),
        }
    }
    Err(BadProgram("no return".into()))
}

/// What the thread's filters do to `call`: every one runs, the most severe verdict wins.
pub fn evaluate(filters: &[Vec<Insn>], call: &Call) -> Result<Action, BadProgram> {
    let mut worst: Option<u32> = None;
    for prog in filters {
        let ret = run(prog, call)?;
        let severity = |r: u32| (r & RET_ACTION_FULL) as i32;
        if worst.is_none_or(|w| severity(ret) < severity(w)) {
            worst = Some(ret);
        }
    }
    Ok(worst.map_or(Action::Allow, Action::from_ret))
}

/// A thread's seccomp mode (`Seccomp:` in /proc/PID/task/TID/status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Disabled,
    Strict,
    Filter,
}

pub fn mode(pid: i32, tid: i32) -> io::Result<Mode> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))?;
    Ok(parse_mode(&status))
}

/// The mode from a status file; a kernel without seccomp prints no line.
pub fn parse_mode(status: &str) -> Mode {
    match super::procfs::status_field(status, "Seccomp") {
        Some("1") => Mode::Strict,
        Some("2") => Mode::Filter,
        _ => Mode::Disabled,
    }
}

const PTRACE_SECCOMP_GET_FILTER: crate::sys::linux::ptrace::PtraceRequest = 0x420c;

/// The filters of a stopped tracee, oldest first (`PTRACE_SECCOMP_GET_FILTER` index 0 is the
/// first installed). The order does not change the verdict: every filter runs.
pub fn read_filters(tid: i32) -> io::Result<Vec<Vec<Insn>>> {
    let mut out = Vec::new();
    for index in 0usize.. {
        // SAFETY: with a null buffer the kernel only returns the program's length.
        let len = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, 0usize) };
        if len < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) && index > 0 {
                break;
            }
            return Err(e);
        }
        let mut prog = vec![Insn::default(); len as usize];
        // SAFETY: the buffer holds `len` sock_filter entries (Insn has its layout).
        let got = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, prog.as_mut_ptr()) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        prog.truncate(got as usize);
        out.push(prog);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const ALLOW: u32 = 0x7fff_0000;

    fn op(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }

    fn call(nr: i32, args: [u64; 6]) -> Call {
        Call {
            nr,
            arch: AUDIT_ARCH,
            instruction_pointer: 0x1000,
            args,
        }
    }

    /// `action` for `nr` when arg 0 >= 100; everything else allowed; other arches killed.
    fn guard(nr: u32, action: u32) -> Vec<Insn> {
        vec![
            op(LD_W_ABS, 0, 0, 4),
            op(JEQ_K, 1, 0, AUDIT_ARCH),
            op(RET_K, 0, 0, 0x8000_0000),
            op(LD_W_ABS, 0, 0, 0),
            op(JEQ_K, 0, 3, nr),
            op(LD_W_ABS, 0, 0, 16),
            op(JGE_K, 0, 1, 100),
            op(RET_K, 0, 0, action),
            op(RET_K, 0, 0, ALLOW),
        ]
    }

    #[test]
    fn seccomp_filter_by_number_and_argument() {
        let f = vec![guard(3, 0x0003_0000)];
        assert_eq!(
            evaluate(&f, &call(3, [100, 0, 0, 0, 0, 0])),
            Ok(Action::Trap)
        );
        assert_eq!(
            evaluate(&f, &call(3, [7, 0, 0, 0, 0, 0])),
            Ok(Action::Allow)
        );
        assert_eq!(
            evaluate(&f, &call(4, [100, 0, 0, 0, 0, 0])),
            Ok(Action::Allow)
        );
        let other_arch = Call {
            arch: 0x4000_0003,
            ..call(3, [1, 0, 0, 0, 0, 0])
        };
        assert_eq!(evaluate(&f, &other_arch), Ok(Action::KillProcess));
    }

    #[test]
    fn seccomp_most_severe_filter_wins() {
        let f = vec![
            guard(3, 0x0005_0001),   // errno 1
            guard(3, 0x7fc0_0000),   // notify
            guard(3, 0x8000_0000),   // kill process
            guard(436, 0x7ffc_0000), // log
        ];
        let c = call(3, [200, 0, 0, 0, 0, 0]);
        assert_eq!(evaluate(&f, &c), Ok(Action::KillProcess));
        assert_eq!(evaluate(&f[..2], &c), Ok(Action::Errno(1)));
        assert_eq!(evaluate(&f[1..2], &c), Ok(Action::UserNotif));
        let log = evaluate(&f[3..], &call(436, [200, 300, 0, 0, 0, 0])).unwrap();
        assert_eq!(log, Action::Log);
        assert!(log.runs() && Action::Allow.runs() && !Action::Trap.runs());
        assert_eq!(evaluate(&[], &c), Ok(Action::Allow));
    }

    #[test]
    fn seccomp_alu_scratch_and_ret_a() {
        // A = nr; A += 1; M[3] = A; X = 10; A = X; A = M[3]; ret A  (returns nr + 1)
        let p = vec![
            op(LD_W_ABS, 0, 0, 0),
            op(0x04, 0, 0, 1),
            op(0x02, 0, 0, 3),
            op(0x01, 0, 0, 10),
            op(0x87, 0, 0, 0),
            op(0x60, 0, 0, 3),
            op(0x16, 0, 0, 0),
        ];
        assert_eq!(run(&p, &call(41, [0; 6])), Ok(42));
        // JA over a kill, then JSET on the high word of arg 1
        let q = vec![
            op(0x05, 0, 0, 1),
            op(RET_K, 0, 0, 0),
            op(LD_W_ABS, 0, 0, 28),
            op(0x45, 0, 1, 0x8000_0000),
            op(RET_K, 0, 0, 0x0005_0009),
            op(RET_K, 0, 0, ALLOW),
        ];
        assert_eq!(run(&q, &call(1, [0, 1 << 63, 0, 0, 0, 0])), Ok(0x0005_0009));
        assert_eq!(run(&q, &call(1, [0, 1, 0, 0, 0, 0])), Ok(ALLOW));
        // division by zero returns 0 (kill), as the kernel's interpreter does
        assert_eq!(
            run(
                &[op(0x34, 0, 0, 0), op(RET_K, 0, 0, ALLOW)],
                &call(1, [0; 6])
            ),
            Ok(0)
        );
    }

    #[test]
    fn seccomp_bad_programs_are_refused() {
        assert!(run(&[op(LD_W_ABS, 0, 0, 2)], &call(1, [0; 6])).is_err());
        assert!(run(&[op(LD_W_ABS, 0, 0, 64)], &call(1, [0; 6])).is_err());
        assert!(run(&[op(JEQ_K, 5, 5, 0)], &call(1, [0; 6])).is_err());
        assert!(run(&[], &call(1, [0; 6])).is_err());
        assert!(run(&[op(0x60, 0, 0, 16)], &call(1, [0; 6])).is_err());
    }

    #[test]
    fn seccomp_actions_and_modes() {
        assert_eq!(Action::from_ret(0x0005_000d), Action::Errno(13));
        assert_eq!(Action::from_ret(0x1234_0000), Action::KillProcess);
        assert_eq!(Action::from_ret(0), Action::KillThread);
        assert_eq!(
            parse_mode("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n"),
            Mode::Filter
        );
        assert_eq!(parse_mode("Seccomp:\t1\n"), Mode::Strict);
        assert_eq!(parse_mode("Name:\tx\n"), Mode::Disabled);
        let me = std::process::id() as i32;
        assert_eq!(mode(me, me).unwrap(), Mode::Disabled);
    }
}
