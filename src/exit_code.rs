//! The exit codes, as documented in README.md. Scripts rely on them: never renumber.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Done: every planned fd released, nothing to do, or a dry run.
    Success = 0,
    /// Error, nothing released.
    Failure = 1,
    /// Usage error (clap uses 2 as well).
    Usage = 2,
    /// Some planned fds released, others failed or changed.
    Partial = 3,
    /// Not confirmed: declined at the prompt, or a prompt was needed and stdin is no terminal.
    NotConfirmed = 4,
    /// Stopped by SIGHUP / SIGINT / SIGTERM (128 + the signal), after restoring the target and
    /// printing what was done.
    Hangup = 129,
    Interrupted = 130,
    Terminated = 143,
}

impl ExitCode {
    /// The exit code for a stop request.
    pub fn for_signal(sig: i32) -> ExitCode {
        match sig {
            libc::SIGHUP => ExitCode::Hangup,
            libc::SIGINT => ExitCode::Interrupted,
            _ => ExitCode::Terminated,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// An error meant for the user: one plain line, and the exit code that goes with it.
#[derive(Debug)]
pub struct UserError {
    pub code: ExitCode,
    pub message: String,
}

impl UserError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> UserError {
        UserError {
            code,
            message: message.into(),
        }
    }

    pub fn failure(message: impl Into<String>) -> UserError {
        UserError::new(ExitCode::Failure, message)
    }

    pub fn usage(message: impl Into<String>) -> UserError {
        UserError::new(ExitCode::Usage, message)
    }
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// Prints `err` the one way ptyreap prints an error (once, one line per cause chain, after
/// `ptyreap: `) and returns its exit code: a UserError's own, else a failure.
pub fn report(err: &anyhow::Error) -> ExitCode {
    crate::output::message(format_args!("{err:#}"));
    err.downcast_ref::<UserError>()
        .map_or(ExitCode::Failure, |u| u.code)
}
