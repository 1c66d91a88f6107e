//! SIGINT, SIGTERM and SIGHUP as a request to stop, not a death: the handler only notes the
//! signal. While a target is stopped the reaper blocks them altogether (they arrive once the
//! target is restored); then the one-shot command skips the targets it has not started, prints
//! what it did, and exits 128 + the signal; the watchdog stops after its current step.

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(sig: libc::c_int) {
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// From now on SIGINT, SIGTERM and SIGHUP are noted instead of ending the process.
pub fn catch() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = note as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

extern "C" fn show_cursor_and_die(sig: libc::c_int) {
    const SHOW_CURSOR: &[u8] = b"\x1b[?25h";
    // SAFETY: write, signal and raise are async-signal-safe; the default action then ends us
    // by the same signal, as if no handler had been here.
    unsafe {
        libc::write(2, SHOW_CURSOR.as_ptr().cast(), SHOW_CURSOR.len());
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// While a prompt hides the cursor: SIGINT (the prompt raises it for ^C), SIGTERM and SIGHUP
/// still end ptyreap as they would, but show the terminal's cursor first. Until `stop` is
/// called on the guard; then the default actions are back.
pub fn while_prompting() -> PromptGuard {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only makes async-signal-safe calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = show_cursor_and_die as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    PromptGuard
}

pub struct PromptGuard;

impl Drop for PromptGuard {
    fn drop(&mut self) {
        // every way out of a prompt shows the cursor: dialoguer does not when reading a key
        // fails (a ^C whose SIGINT is blocked in an inherited signal mask comes back as an
        // error), and a second "show" is harmless (only asked on a terminal)
        {
            use std::io::Write;
            let mut err = std::io::stderr();
            let _ = err.write_all(b"\x1b[?25h");
            let _ = err.flush();
        }
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: restoring the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

/// The last stop request, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
