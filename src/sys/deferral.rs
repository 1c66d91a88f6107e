//! Holding off the signals that would end ptyreap while a target is stopped, on every backend:
//! dying inside the window would leave a Linux target with changed registers, or a macOS app's
//! threads suspended (its guardian would then have to step in).

use std::io;
use std::marker::PhantomData;

/// The signals that would kill or stop ptyreap from outside: blocked while a target is held, so
/// the target is always restored first; delivered when this is dropped.
pub const DEFERRED_SIGNALS: [i32; 16] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
];

/// And where the system has it, SIGPWR (Linux only).
#[cfg(target_os = "linux")]
const DEFERRED_HERE: &[i32] = &[libc::SIGPWR];
#[cfg(not(target_os = "linux"))]
const DEFERRED_HERE: &[i32] = &[];

/// Every signal deferred on this system.
pub fn deferred_signals() -> impl Iterator<Item = i32> {
    DEFERRED_SIGNALS
        .into_iter()
        .chain(DEFERRED_HERE.iter().copied())
}

/// Blocks [`deferred_signals`] in the calling thread (`pthread_sigmask`) for its lifetime; the
/// old mask comes back on drop, and with it any signal that arrived meanwhile. Create it before
/// the target is stopped, drop it after it is resumed. SIGKILL cannot be deferred.
pub struct SignalDeferral {
    old: libc::sigset_t,
    _not_send: PhantomData<*const ()>,
}

/// Blocks [`deferred_signals`] in the calling thread for the rest of its life: for a helper
/// thread that may live through a reap, so that a signal deferred there is never taken by it
/// (the Linux look's, observe.rs).
#[cfg(target_os = "linux")]
pub fn block_in_this_thread() {
    if let Ok(held) = SignalDeferral::new() {
        // never dropped: the mask stays until the thread ends
        std::mem::forget(held);
    }
}

impl SignalDeferral {
    pub fn new() -> io::Result<SignalDeferral> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to sigset_t values we own.
        unsafe {
            libc::sigemptyset(&mut set);
            for sig in deferred_signals() {
                libc::sigaddset(&mut set, sig);
            }
        }
        SignalDeferral::blocking(&set)
    }

    /// Every signal blocked: around creating a thread in a target, which inherits the mask
    /// (macOS, mach.rs).
    #[cfg(any(target_os = "macos", test))]
    pub fn every() -> io::Result<SignalDeferral> {
        // SAFETY: sigset_t is plain data, initialised by sigfillset before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a sigset_t we own.
        unsafe { libc::sigfillset(&mut set) };
        SignalDeferral::blocking(&set)
    }

    fn blocking(set: &libc::sigset_t) -> io::Result<SignalDeferral> {
        // SAFETY: sigset_t is plain data.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers; pthread_sigmask changes only this thread's mask.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, &mut old) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(SignalDeferral {
            old,
            _not_send: PhantomData,
        })
    }
}

impl Drop for SignalDeferral {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in new(), on the same thread (not Send).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_deferral_blocks_and_restores() {
        let mask = || {
            // SAFETY: plain data; pthread_sigmask with a null new set only reads.
            let mut cur: libc::sigset_t = unsafe { std::mem::zeroed() };
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur) };
            deferred_signals()
                // SAFETY: valid sigset.
                .map(|s| unsafe { libc::sigismember(&cur, s) } == 1)
                .collect::<Vec<_>>()
        };
        let before = mask();
        {
            let _d = SignalDeferral::new().unwrap();
            assert!(mask().iter().all(|&b| b));
        }
        assert_eq!(mask(), before);
        {
            let _d = SignalDeferral::every().unwrap();
            assert!(mask().iter().all(|&b| b));
        }
        assert_eq!(mask(), before);
    }
}
