//! ptyreap's entry point: parse, run, print the error once, return the exit code.

use clap::Parser;
use ptyreap::cli::Cli;
use ptyreap::exit_code::{ExitCode, UserError};

fn main() -> std::process::ExitCode {
    // macOS: the guardian of a reap is this binary under another name (it never returns then)
    ptyreap::sys::run_if_guardian();
    let cli = Cli::parse();
    match ptyreap::app::run(&cli) {
        Ok(code) => code.into(),
        Err(err) => {
            let code = match err.downcast_ref::<UserError>() {
                Some(user) => user.code,
                None => ExitCode::Failure,
            };
            eprintln!("ptyreap: {err:#}");
            code.into()
        }
    }
}
