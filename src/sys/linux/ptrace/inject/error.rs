//! [`InjectError`]: why an injected call could not be made, in words a user can act on.

use super::*;

/// Why an injected call could not be made. The target is restored regardless (on drop).
#[derive(Debug)]
pub enum InjectError {
    /// The target (or the thread we were using) is gone: it exited or was killed.
    Exited,
    /// It ran a new program.
    Exec,
    /// No thread is stopped at a place where we can work (all are gone or in odd stops).
    NoUsableThread,
    /// A 32-bit (compat) target.
    Unsupported(&'static str),
    /// No syscall instruction found anywhere in the target's executable memory.
    NoSyscallInstruction,
    /// A seccomp filter of the thread would not let the call run (checked before making it).
    Seccomp {
        nr: i64,
        action: seccomp::Action,
    },
    /// Every usable thread is in strict seccomp mode.
    SeccompStrict,
    /// The thread has seccomp filters that could neither be suspended nor read.
    SeccompUnreadable {
        suspend: io::Error,
        read: io::Error,
    },
    /// The call did not come back within its deadline; the thread was pulled back to a stop.
    Timeout {
        nr: i64,
        waited: Duration,
        /// The call had begun (its entry was seen), so it may have had an effect.
        began: bool,
    },
    /// The thread did not come back to a stop even when interrupted (an unkillable kernel
    /// wait): its registers could not be put back.
    Stuck {
        tid: i32,
    },
    /// After a call that returned, the thread did not come back to a stop (a freezer landed):
    /// its own registers are back, but no further call can be made on it.
    Adrift {
        tid: i32,
        why: String,
    },
    /// The thread is not in a stop when its state was to be put back or read, and it has not
    /// exited: it runs on (or is held by the kernel) with its own registers.
    NotStopped {
        tid: i32,
    },
    /// Our instruction faulted (suppressed).
    Fault {
        signal: i32,
        addr: u64,
    },
    /// No room for scratch data on the thread's stack.
    NoScratch,
    /// The thread's Syscall User Dispatch would take our call, and could not be switched off
    /// for it (or put back exactly afterwards).
    UserDispatch {
        tid: i32,
        why: String,
    },
    /// Syscall User Dispatch (unreadable on this kernel) turned our call into a SIGSYS, which
    /// was dropped: the call was not made.
    Dispatched {
        nr: i64,
    },
    Ptrace {
        what: &'static str,
        source: io::Error,
    },
    Memory {
        addr: u64,
        source: io::Error,
    },
    Unexpected(String),
    /// `syscall` after the injector was finished.
    Finished,
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InjectError::Exited => write!(f, "the process exited"),
            InjectError::Exec => write!(f, "the process ran a new program"),
            InjectError::NoUsableThread => write!(f, "no thread stopped at a usable place"),
            InjectError::Unsupported(what) => write!(f, "unsupported target: {what}"),
            InjectError::NoSyscallInstruction => {
                write!(f, "no syscall instruction found in the process")
            }
            InjectError::Seccomp { nr, action } => write!(
                f,
                "a seccomp filter in the process would {action} for syscall {nr}, so ptyreap \
                 did not make it"
            ),
            InjectError::SeccompStrict => write!(
                f,
                "the process runs in strict seccomp mode (any call but read, write and exit \
                 kills it)"
            ),
            InjectError::SeccompUnreadable { suspend, read } => write!(
                f,
                "the process has seccomp filters that ptyreap can neither suspend ({suspend}) \
                 nor read ({read}); run ptyreap as root outside any seccomp sandbox (not under \
                 a systemd SystemCallFilter)"
            ),
            InjectError::Timeout { nr, waited, began } => write!(
                f,
                "syscall {nr} {} within {} ms (is the process frozen, or waiting on a seccomp \
                 supervisor?); it was interrupted",
                if *began {
                    "did not return"
                } else {
                    "did not start"
                },
                waited.as_millis()
            ),
            InjectError::Stuck { tid } => write!(
                f,
                "thread {tid} did not come back from the kernel even when interrupted; its \
                 registers could not be put back yet"
            ),
            InjectError::Adrift { tid, why } => write!(
                f,
                "after the previous call returned, thread {tid} did not come back to a stop \
                 ({why}); no further call was made"
            ),
            InjectError::NotStopped { tid } => write!(
                f,
                "thread {tid} did not come back to a stop (the kernel holds it, as a freezer \
                 does); its own registers and signal mask are back in place"
            ),
            InjectError::Fault { signal, addr } => {
                write!(
                    f,
                    "the injected instruction at {addr:#x} faulted (signal {signal})"
                )
            }
            InjectError::NoScratch => write!(f, "no room on the thread's stack for scratch data"),
            InjectError::UserDispatch { tid, why } => write!(
                f,
                "thread {tid} runs with Syscall User Dispatch on (as Wine and Proton do) and \
                 ptyreap cannot switch it off for its calls ({why}); nothing was run in the \
                 process"
            ),
            InjectError::Dispatched { nr } => write!(
                f,
                "the process's Syscall User Dispatch turned syscall {nr} into a SIGSYS (this \
                 kernel, before Linux 6.2, does not let ptyreap read it); the signal was \
                 dropped before the app saw it and the call was not made"
            ),
            InjectError::Ptrace { what, source } => write!(f, "ptrace {what}: {source}"),
            InjectError::Memory { addr, source } => {
                write!(f, "target memory at {addr:#x}: {source}")
            }
            InjectError::Unexpected(what) => write!(f, "unexpected: {what}"),
            InjectError::Finished => write!(f, "the injector was already finished"),
        }
    }
}

impl std::error::Error for InjectError {}

/// A ptrace failure; ESRCH means the thread is no longer stopped for us: it was killed.
pub(super) fn pt(what: &'static str) -> impl Fn(io::Error) -> InjectError {
    move |source| {
        if source.raw_os_error() == Some(libc::ESRCH) {
            InjectError::Exited
        } else {
            InjectError::Ptrace { what, source }
        }
    }
}

/// The errno of a raw kernel result (-4095..-1), if it is one.
#[cfg(test)]
pub(crate) fn errno_of(ret: i64) -> Option<i32> {
    (-4095..0).contains(&ret).then_some(-ret as i32)
}
