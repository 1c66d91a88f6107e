//! The two thread-state shapes a remote call needs: where it starts (pc at the function, its
//! arguments in registers, a fresh stack, a return into an unmapped sentinel) and how its result
//! is read once it faults there. Pure functions of the state structs, unit-tested on Linux; the
//! Mach calls that apply them are in `task/thread.rs`.

// Each build uses its own; the tests check both.
#[cfg(any(test, target_arch = "aarch64"))]
pub mod arm64;
#[cfg(any(test, target_arch = "x86_64"))]
pub mod x86_64;

/// The most integer arguments either convention passes in registers (x0-x7 / six on x86_64);
/// ptyreap's calls take two.
pub const MAX_ARGS: usize = 6;
