//! Writing a file that must be new: reports and the watchdog's state are written as root into
//! paths a user may name, so nothing that exists there — a file, a planted symlink — is ever
//! overwritten or followed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates `path` (mode 0600) and writes `data`. Fails if anything exists there, including a
/// symlink (O_CREAT|O_EXCL never follows one), and never follows a symlink as the last component.
pub fn write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // the umask can only clear bits; make the mode exact anyway
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(data)?;
    file.sync_all()
}
