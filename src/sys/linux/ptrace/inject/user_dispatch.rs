//! Syscall User Dispatch around our calls: switched off for the injecting thread just before
//! each call and put back exactly at its exit stop (the configuration logic is dispatch.rs).

use super::*;

/// `si_code` of a SIGSYS from Syscall User Dispatch (include/uapi/asm-generic/siginfo.h).
pub(super) const SYS_USER_DISPATCH: i32 = 2;

/// The thread's SUD configuration if it would take our calls (see dispatch.rs), checked once
/// our instruction is known. A kernel that cannot report it (before 6.2, or without SUD) gives
/// None: `run_call` still drops a SIGSYS the dispatch raises for our call.
pub(super) fn user_dispatch(s: &mut Session) -> Result<Option<SudConfig>, InjectError> {
    let Ok(config) = sud_config(s.tid) else {
        s.sud_unknown = true;
        if let Some(own) = s.orig_mask {
            // already replaced (aarch64's settling): again, with SIGSYS open
            set_sigmask(s.tid, call_mask(s, own)).map_err(pt("SETSIGMASK"))?;
        }
        return Ok(None);
    };
    let mut byte = [0u8; 1];
    let selector = (config.selector != 0
        && s.mem.read_exact_at(&mut byte, config.selector).is_ok())
    .then_some(byte[0]);
    if !dispatch::dispatches(&config, s.insn + INSN_LEN, selector) {
        return Ok(None);
    }
    if dispatch::restoring(&config).is_none() {
        return Err(InjectError::UserDispatch {
            tid: s.tid,
            why: format!("its configuration {config:?} could not be put back exactly"),
        });
    }
    Ok(Some(config))
}

/// Test hook: behave as a kernel before 6.2, which cannot report a thread's SUD configuration,
/// so that the SIGSYS our call then causes is met (and dropped) for real.
pub(super) const NO_SUD_CONFIG_ENV: &str = "PTYREAP_TEST_NO_SUD_CONFIG";

pub(super) fn sud_config(tid: i32) -> io::Result<SudConfig> {
    if std::env::var_os(NO_SUD_CONFIG_ENV).is_some() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    raw::sud_config(tid)
}

/// Just before one of our calls: SUD off for this thread, if it would take the call.
pub(super) fn dispatch_off(s: &mut Session) -> Result<(), InjectError> {
    if s.sud.is_none() || s.sud_off {
        return Ok(());
    }
    raw::set_sud_config(s.tid, &dispatch::OFF).map_err(|e| InjectError::UserDispatch {
        tid: s.tid,
        why: e.to_string(),
    })?;
    s.sud_off = true;
    Ok(())
}

/// At the call's exit stop (or any stop after it): the thread's SUD configuration back exactly.
pub(super) fn dispatch_back(s: &mut Session) -> Result<(), InjectError> {
    let Some(config) = s.sud.filter(|_| s.sud_off) else {
        return Ok(());
    };
    let back = dispatch::restoring(&config)
        .ok_or_else(|| InjectError::Unexpected("SUD configuration cannot be put back".into()))?;
    raw::set_sud_config(s.tid, &back).map_err(pt("SET_SYSCALL_USER_DISPATCH_CONFIG"))?;
    s.sud_off = false;
    Ok(())
}
