//! The injecting thread's seccomp filters: suspended for it alone, or evaluated over each call
//! before it is made (seccomp.rs holds the evaluator).

use super::*;

/// What the thread's seccomp filters mean for our calls.
pub(super) enum Filters {
    /// No filter (or strict mode elsewhere): calls run as made.
    None,
    /// `PTRACE_O_SUSPEND_SECCOMP` set on the thread: the filters do not run.
    Suspended,
    /// The filters, evaluated over each call before it is made.
    Evaluated(Vec<Vec<seccomp::Insn>>),
}

/// Test hook: behave as if `PTRACE_O_SUSPEND_SECCOMP` were refused, so that the evaluator path
/// runs against real filters (the kernel refuses it only to tracers that are themselves
/// sandboxed, which a test cannot easily arrange for the tracer alone).
pub(super) const NO_SUSPEND_ENV: &str = "PTYREAP_TEST_NO_SUSPEND_SECCOMP";

/// What the thread's seccomp mode and filters mean for our calls: decided before anything of
/// it changes (see seccomp.rs).
pub(super) fn seccomp_filters(pid: i32, tid: i32) -> Result<Filters, InjectError> {
    match seccomp::mode(pid, tid).map_err(|_| InjectError::Exited)? {
        seccomp::Mode::Disabled => Ok(Filters::None),
        seccomp::Mode::Strict => Err(InjectError::SeccompStrict),
        seccomp::Mode::Filter => {
            let suspend = if std::env::var_os(NO_SUSPEND_ENV).is_some() {
                Err(io::Error::from_raw_os_error(libc::EPERM))
            } else {
                raw::set_options(tid, raw::SEIZE_OPTIONS | raw::PTRACE_O_SUSPEND_SECCOMP)
            };
            match suspend {
                Ok(()) => Ok(Filters::Suspended),
                Err(suspend) => match seccomp::read_filters(tid) {
                    Ok(filters) => Ok(Filters::Evaluated(filters)),
                    Err(read) => Err(InjectError::SeccompUnreadable { suspend, read }),
                },
            }
        }
    }
}

/// The filters' verdict on one call, exactly as it would be made from our instruction.
pub(super) fn permits(s: &Session, nr: i64, args: [u64; 6]) -> Result<(), InjectError> {
    let Filters::Evaluated(filters) = &s.filters else {
        return Ok(());
    };
    let call = seccomp::Call {
        nr: nr as i32,
        arch: seccomp::AUDIT_ARCH,
        instruction_pointer: s.insn + INSN_LEN,
        args,
    };
    match seccomp::evaluate(filters, &call) {
        Ok(action) if action.runs() => Ok(()),
        Ok(action) => Err(InjectError::Seccomp { nr, action }),
        Err(bad) => Err(InjectError::Unexpected(format!(
            "the process's seccomp filter cannot be evaluated ({})",
            bad.0
        ))),
    }
}
