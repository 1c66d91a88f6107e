//! Safe wrappers over the libproc calls the backend uses. Each returns an `io::Error` with the
//! errno libproc left (ESRCH: gone; EPERM: another user's process and we are not root; EBADF:
//! the fd was closed meanwhile).

use super::ffi;
use std::ffi::c_void;
use std::io;
use std::mem::size_of;

fn last_error() -> io::Error {
    let e = io::Error::last_os_error();
    // libproc returns 0 on failure; errno is then set, but 0 bytes with errno 0 can happen
    if e.raw_os_error() == Some(0) {
        io::Error::from_raw_os_error(libc::ESRCH)
    } else {
        e
    }
}

fn clear_errno() {
    // SAFETY: __error returns this thread's errno location.
    unsafe { *libc::__error() = 0 };
}

/// Every pid on the machine.
pub fn all_pids() -> io::Result<Vec<i32>> {
    // SAFETY: a null buffer asks for the count.
    let n = unsafe { libc::proc_listallpids(std::ptr::null_mut(), 0) };
    if n <= 0 {
        return Err(last_error());
    }
    // room for processes started meanwhile
    let mut pids = vec![0i32; n as usize + 64];
    let bytes = (pids.len() * size_of::<i32>()) as i32;
    // SAFETY: the buffer holds `bytes` bytes.
    let n = unsafe { libc::proc_listallpids(pids.as_mut_ptr().cast(), bytes) };
    if n <= 0 {
        return Err(last_error());
    }
    pids.truncate(n as usize);
    pids.retain(|&p| p > 0);
    pids.sort_unstable();
    Ok(pids)
}

/// PROC_PIDTBSDINFO: name, status, start time, controlling terminal, flags.
pub fn bsd_info(pid: i32) -> io::Result<ffi::ProcBsdInfo> {
    let mut info = ffi::ProcBsdInfo::default();
    let size = size_of::<ffi::ProcBsdInfo>() as i32;
    // SAFETY: `info` is a valid buffer of `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            ffi::PROC_PIDTBSDINFO,
            0,
            (&mut info as *mut ffi::ProcBsdInfo).cast(),
            size,
        )
    };
    if n != size {
        return Err(last_error());
    }
    Ok(info)
}

/// PROC_PIDARCHINFO (private flavor): cpu type and subtype of the process's executable.
pub fn arch_info(pid: i32) -> io::Result<ffi::ProcArchInfo> {
    let mut info = ffi::ProcArchInfo::default();
    let size = size_of::<ffi::ProcArchInfo>() as i32;
    // SAFETY: `info` is a valid buffer of `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            ffi::PROC_PIDARCHINFO,
            0,
            (&mut info as *mut ffi::ProcArchInfo).cast(),
            size,
        )
    };
    if n != size {
        return Err(last_error());
    }
    Ok(info)
}

/// Every fd of the process with its type.
pub fn list_fds(pid: i32) -> io::Result<Vec<ffi::ProcFdInfo>> {
    let entry = size_of::<ffi::ProcFdInfo>();
    // SAFETY: a null buffer asks for the size needed.
    let need = unsafe { libc::proc_pidinfo(pid, ffi::PROC_PIDLISTFDS, 0, std::ptr::null_mut(), 0) };
    if need <= 0 {
        return Err(last_error());
    }
    let mut fds = vec![ffi::ProcFdInfo::default(); need as usize / entry + 32];
    let bytes = (fds.len() * entry) as i32;
    // SAFETY: the buffer holds `bytes` bytes.
    let n =
        unsafe { libc::proc_pidinfo(pid, ffi::PROC_PIDLISTFDS, 0, fds.as_mut_ptr().cast(), bytes) };
    if n <= 0 {
        return Err(last_error());
    }
    fds.truncate(n as usize / entry);
    Ok(fds)
}

/// PROC_PIDFDVNODEPATHINFO for one fd: its file status flags, the vnode's stat and path.
pub fn vnode_path_info(pid: i32, fd: i32) -> io::Result<ffi::VnodeFdInfoWithPath> {
    let mut info = ffi::VnodeFdInfoWithPath::default();
    let size = size_of::<ffi::VnodeFdInfoWithPath>() as i32;
    // SAFETY: `info` is a valid buffer of `size` bytes.
    let n = unsafe {
        libc::proc_pidfdinfo(
            pid,
            fd,
            ffi::PROC_PIDFDVNODEPATHINFO,
            (&mut info as *mut ffi::VnodeFdInfoWithPath).cast::<c_void>(),
            size,
        )
    };
    if n != size {
        return Err(last_error());
    }
    Ok(info)
}

/// The knotes of kqueue `kq` of the process (`kq` = -1: its workqueue kqueue, where libdispatch
/// keeps the sources of its global concurrent queues). EBADF: the fd was closed meanwhile.
pub fn kqueue_knotes(pid: i32, kq: i32) -> io::Result<Vec<ffi::KeventExtinfo>> {
    knotes_with(|buf, bytes| {
        // SAFETY: the buffer holds `bytes` bytes of records.
        unsafe {
            libc::proc_pidfdinfo(
                pid,
                kq,
                ffi::PROC_PIDFDKQUEUE_EXTINFO,
                buf.cast::<c_void>(),
                bytes,
            )
        }
    })
}

// libproc_private.h, exported by libSystem, absent from the libc crate. Resolved at run time:
// both arrived with workloops themselves (xnu-4570, macOS 10.13), so a system without them has
// no workloop kqueue to list, and a link-time reference would keep ptyreap from starting there.
type ListDynKqueueIds = unsafe extern "C" fn(pid: i32, buf: *mut u64, bufsz: u32) -> i32;
type PidDynKqueueInfo = unsafe extern "C" fn(
    pid: i32,
    flavor: i32,
    kq_id: u64,
    buffer: *mut c_void,
    buffersize: i32,
) -> i32;

fn dynkqueue_calls() -> Option<(ListDynKqueueIds, PidDynKqueueInfo)> {
    static CALLS: std::sync::OnceLock<Option<(ListDynKqueueIds, PidDynKqueueInfo)>> =
        std::sync::OnceLock::new();
    *CALLS.get_or_init(|| {
        // SAFETY: dlsym with NUL-terminated names; a non-null result is that function, whose
        // C prototype the types above transcribe.
        unsafe {
            let list = libc::dlsym(libc::RTLD_DEFAULT, c"proc_list_dynkqueueids".as_ptr());
            let info = libc::dlsym(libc::RTLD_DEFAULT, c"proc_piddynkqueueinfo".as_ptr());
            if list.is_null() || info.is_null() {
                return None;
            }
            Some((
                std::mem::transmute::<*mut c_void, ListDynKqueueIds>(list),
                std::mem::transmute::<*mut c_void, PidDynKqueueInfo>(info),
            ))
        }
    })
}

fn missing_dynkqueue_api() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "this macOS's libproc has no proc_list_dynkqueueids/proc_piddynkqueueinfo",
    )
}

/// The ids of the process's dynamic kqueues (libdispatch workloops: no fd).
/// `proc_list_dynkqueueids` is `proc_info(PROC_INFO_CALL_PIDINFO, pid, PROC_PIDLISTDYNKQUEUES)`
/// unwrapped: -1 and errno on failure, else how many ids there are (possibly more than fit).
pub fn dynamic_kqueue_ids(pid: i32) -> io::Result<Vec<u64>> {
    let Some((list, _)) = dynkqueue_calls() else {
        // a macOS without the private calls still has workloops: unreadable, never "none"
        return Err(missing_dynkqueue_api());
    };
    let mut cap = 64usize;
    loop {
        let mut ids = vec![0u64; cap];
        let bytes = (cap * size_of::<u64>()) as u32;
        // SAFETY: the buffer holds `bytes` bytes.
        let n = unsafe { list(pid, ids.as_mut_ptr(), bytes) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n <= cap || cap >= ffi::PROC_PIDDYNKQUEUES_MAX {
            ids.truncate(n.min(cap));
            return Ok(ids);
        }
        cap = n.next_power_of_two().min(ffi::PROC_PIDDYNKQUEUES_MAX);
    }
}

/// The knotes of the process's dynamic kqueue `id` (PROC_PIDDYNKQUEUE_EXTINFO: the same
/// `kevent_extinfo` records as an fd kqueue's). ESRCH: the workloop is gone (or the process).
/// `proc_piddynkqueueinfo` is `proc_info(PROC_INFO_CALL_PIDDYNKQUEUEINFO, …)` with libproc's
/// usual 0-and-errno on failure.
pub fn dynamic_kqueue_knotes(pid: i32, id: u64) -> io::Result<Vec<ffi::KeventExtinfo>> {
    let Some((_, info)) = dynkqueue_calls() else {
        return Err(missing_dynkqueue_api());
    };
    knotes_with(|buf, bytes| {
        // SAFETY: the buffer holds `bytes` bytes of records.
        unsafe {
            info(
                pid,
                ffi::PROC_PIDDYNKQUEUE_EXTINFO,
                id,
                buf.cast::<c_void>(),
                bytes,
            )
        }
    })
}

/// Runs a knote-listing call with a growing buffer. Such calls return the number of knotes
/// (possibly more than fit), and libproc turns a failure into 0 with errno set.
fn knotes_with(
    mut call: impl FnMut(*mut ffi::KeventExtinfo, i32) -> i32,
) -> io::Result<Vec<ffi::KeventExtinfo>> {
    let entry = size_of::<ffi::KeventExtinfo>();
    let mut cap = 64usize;
    loop {
        let mut buf = vec![ffi::KeventExtinfo::default(); cap];
        // a knote count of 0 and a failure both return 0: tell them apart by errno
        clear_errno();
        let n = call(buf.as_mut_ptr(), (cap * entry) as i32);
        if n < 0 {
            return Err(last_error());
        }
        if n == 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(0) | None => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        let n = n as usize;
        if n <= cap || cap >= ffi::PROC_PIDFDKQUEUE_KNOTES_MAX {
            buf.truncate(n.min(cap));
            return Ok(buf);
        }
        cap = n.next_power_of_two().min(ffi::PROC_PIDFDKQUEUE_KNOTES_MAX);
    }
}

/// The path of the process's executable.
pub fn exe_path(pid: i32) -> Option<String> {
    let mut buf = vec![0u8; 4 * ffi::MAXPATHLEN];
    // SAFETY: the buffer holds its length.
    let n = unsafe { libc::proc_pidpath(pid, buf.as_mut_ptr().cast(), buf.len() as u32) };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Most regions one walk of a VM map visits (an Electron app maps a few thousand): a kernel
/// answer that never moves on must not keep us asking.
const MAX_REGIONS: usize = 100_000;

/// The paths of the files the process has mapped whose names end with `suffix` (".node": native
/// modules), each once, in address order. Read region by region with PROC_PIDREGIONPATHINFO,
/// which needs no task port (dyld's image list would, and hardened apps refuse it): it answers
/// for the region at or above an address, so the walk starts at 0 and resumes past each region.
/// It ends past the last one; a process gone or not ours to read leaves what was found so far.
pub fn mapped_paths(pid: i32, suffix: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut info = ffi::ProcRegionWithPathInfo::default();
    let size = size_of::<ffi::ProcRegionWithPathInfo>() as i32;
    let mut address = 0u64;
    for _ in 0..MAX_REGIONS {
        // SAFETY: `info` is a valid buffer of `size` bytes; the kernel fills all of it each time.
        let n = unsafe {
            libc::proc_pidinfo(
                pid,
                ffi::PROC_PIDREGIONPATHINFO,
                address,
                (&mut info as *mut ffi::ProcRegionWithPathInfo).cast(),
                size,
            )
        };
        if n != size {
            break;
        }
        let path = info.prp_vip.path_bytes();
        if !path.is_empty() && path.ends_with(suffix.as_bytes()) {
            let path = String::from_utf8_lossy(path);
            if !out.iter().any(|p| *p == path) {
                out.push(path.into_owned());
            }
        }
        // a region that ends at or below where we asked would have us ask again forever
        let region = info.prp_prinfo;
        match region.pri_address.checked_add(region.pri_size) {
            Some(next) if next > address => address = next,
            _ => break,
        }
    }
    out
}

extern "C" {
    /// bsd/sys/codesign.h (not in libc): code-signing operations on a process.
    fn csops(pid: i32, ops: u32, useraddr: *mut c_void, usersize: usize) -> i32;
}

/// The process's code-signing status flags (CS_*).
pub fn codesign_flags(pid: i32) -> Option<u32> {
    let mut flags = 0u32;
    // SAFETY: CS_OPS_STATUS writes one u32.
    let r = unsafe {
        csops(
            pid,
            ffi::CS_OPS_STATUS,
            (&mut flags as *mut u32).cast(),
            size_of::<u32>(),
        )
    };
    (r == 0).then_some(flags)
}

/// The process's entitlements blob (`CS_OPS_ENTITLEMENTS_BLOB`: an 8-byte big-endian header,
/// magic and total length, then the XML plist); empty when it has none, None when unreadable.
/// A buffer too small gets ERANGE and the header with the length needed.
pub fn entitlements(pid: i32) -> Option<Vec<u8>> {
    let mut head = [0u8; 8];
    // SAFETY: `head` holds 8 bytes.
    let r = unsafe {
        csops(
            pid,
            ffi::CS_OPS_ENTITLEMENTS_BLOB,
            head.as_mut_ptr().cast(),
            8,
        )
    };
    if r == 0 {
        return Some(Vec::new());
    }
    if last_error().raw_os_error() != Some(libc::ERANGE) {
        return None;
    }
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if !(8..=1 << 20).contains(&len) {
        return None;
    }
    let mut blob = vec![0u8; len];
    // SAFETY: `blob` holds `len` bytes.
    let r = unsafe {
        csops(
            pid,
            ffi::CS_OPS_ENTITLEMENTS_BLOB,
            blob.as_mut_ptr().cast(),
            len,
        )
    };
    (r == 0).then_some(blob)
}

/// Whether ptyreap itself runs translated by Rosetta (`sysctl.proc_translated`).
pub fn self_translated() -> bool {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>();
    // SAFETY: the name is NUL-terminated; the value is one int.
    let r = unsafe {
        libc::sysctlbyname(
            c"sysctl.proc_translated".as_ptr(),
            (&mut value as *mut i32).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    r == 0 && value == 1
}

/// An integer sysctl by name.
pub fn sysctl_int(name: &std::ffi::CStr) -> Option<i64> {
    let mut value = [0u8; 8];
    let mut len = value.len();
    // SAFETY: the buffer holds 8 bytes; the kernel writes `len` of them.
    let r = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    match (r, len) {
        (0, 4) => Some(i32::from_ne_bytes([value[0], value[1], value[2], value[3]]) as i64),
        (0, 8) => Some(i64::from_ne_bytes(value)),
        _ => None,
    }
}
