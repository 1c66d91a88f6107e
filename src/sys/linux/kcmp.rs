//! `kcmp(2)`: whether two processes share a kernel object — the same open file behind two fds,
//! the same fd table, the file behind an epoll entry. ptyreap uses it to prove, without reading
//! any memory, that what it pinned is still what the target holds (include/uapi/linux/kcmp.h).

use std::io;

/// Two fds (`idx1` in `pid1`, `idx2` in `pid2`): the same open file?
pub const KCMP_FILE: libc::c_int = 0;
/// The same fd table (`clone(CLONE_FILES)`)?
pub const KCMP_FILES: libc::c_int = 2;
/// `idx1` in `pid1` the file behind the epoll entry that `idx2` points at (a [`EpollSlot`])?
pub const KCMP_EPOLL_TFD: libc::c_int = 7;

/// `struct kcmp_epoll_slot`.
#[repr(C)]
pub struct EpollSlot {
    pub efd: u32,
    pub tfd: u32,
    pub toff: u32,
}

/// Ok(true) when the two are the same object, Ok(false) when they differ, the errno otherwise
/// (ENOSYS without CONFIG_KCMP, EPERM, EBADF for a closed fd, ...).
pub fn same(
    pid1: i32,
    pid2: i32,
    kind: libc::c_int,
    idx1: libc::c_ulong,
    idx2: libc::c_ulong,
) -> io::Result<bool> {
    // SAFETY: kcmp takes integers, except KCMP_EPOLL_TFD's idx2, which the caller passes as the
    // address of an EpollSlot it keeps alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, kind, idx1, idx2) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r == 0)
}
