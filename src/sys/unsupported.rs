//! Systems with no backend (anything but Linux and macOS): every entry point says so plainly
//! instead of pretending.

use crate::exit_code::UserError;
use crate::model::{Evidence, Snapshot};

#[derive(Debug)]
pub struct Target {
    pub pid: i32,
    pub name: String,
}

const NOT_YET: &str = "ptyreap supports Linux and macOS only";

pub fn snapshot() -> anyhow::Result<Snapshot> {
    Err(UserError::failure(NOT_YET).into())
}

pub fn open_target(_pid: i32) -> Result<Target, UserError> {
    Err(UserError::failure(NOT_YET))
}

pub fn processes_named(_name: &str) -> Vec<i32> {
    Vec::new()
}

pub fn inspect(_target: &Target, _snapshot: &Snapshot) -> Result<Vec<Evidence>, UserError> {
    Err(UserError::failure(NOT_YET))
}

pub fn reap(
    _target: &Target,
    _rows: &mut [crate::model::MasterRow],
) -> Result<std::time::Duration, UserError> {
    Err(UserError::failure(NOT_YET))
}
