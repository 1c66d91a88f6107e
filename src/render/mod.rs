//! Output: aligned tables for people (stdout; colour only on a terminal and never with
//! NO_COLOR), one JSON document for scripts.

pub mod json;
pub mod table;

use std::io::IsTerminal;

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
    pub verbose: bool,
}

impl Style {
    pub fn detect(verbose: bool) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && std::io::stdout().is_terminal(),
            verbose,
        }
    }

    /// Wraps already padded text in an SGR colour code.
    pub fn paint(&self, text: &str, sgr: &str) -> String {
        if self.color && !sgr.is_empty() {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}
