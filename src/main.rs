//! ptyreap's entry point: parse, run, print the error once, return the exit code.

use clap::Parser;
use ptyreap::Cli;

fn main() -> std::process::ExitCode {
    // macOS: the guardian of a reap is this binary under another name (it never returns then)
    ptyreap::run_if_guardian();
    let cli = Cli::parse();
    match ptyreap::run(&cli) {
        Ok(code) => code.into(),
        Err(err) => ptyreap::exit_code::report(&err).into(),
    }
}
