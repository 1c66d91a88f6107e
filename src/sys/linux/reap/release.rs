//! Step 6 and the check of step 7: the releases as system calls on the stopped thread
//! (`close_range` over runs, `dup3` for merge and devnull), then each result confirmed from
//! outside.

use super::*;

/// The rows of `go` (all planned for release) that `method` releases.
fn rows_by(rows: &[MasterRow], go: &[usize], method: Method) -> Vec<usize> {
    go.iter()
        .copied()
        .filter(|&i| rows[i].action.method().unwrap_or(Method::Close) == method)
        .collect()
}

/// Runs the releases. Each row's result is recorded as soon as its own calls have returned; the
/// first call that fails as a whole (the thread could not be used, a deadline) ends the run and
/// is returned: rows not reached are left unsettled, and `reconcile` then reads what the kernel
/// really did to each.
pub(super) fn release(
    inj: &mut Injector<'_>,
    rows: &mut [MasterRow],
    go: &[usize],
    keeper: Option<i32>,
    pidfd: &Pidfd,
) -> Result<(), String> {
    // close: runs of consecutive fds, one close_range each
    let closing = rows_by(rows, go, Method::Close);
    let mut fds: Vec<i32> = closing.iter().flat_map(|&i| fds_of(&rows[i])).collect();
    fds.sort_unstable();
    fds.dedup();
    let mut failed: Vec<(i32, String)> = Vec::new();
    // fds whose calls returned (whatever they returned)
    let mut done: std::collections::HashSet<i32> = std::collections::HashSet::new();
    let mut aborted: Option<String> = None;
    'runs: for (first, last) in runs(&fds) {
        let range = [first as u64, last as u64, 0, 0, 0, 0];
        if first != last && inj.permits(nr::CLOSE_RANGE, range).is_ok() {
            match syscall(inj, nr::CLOSE_RANGE, range) {
                Ok(r) if r >= 0 => {
                    done.extend(first..=last);
                    continue;
                }
                // ENOSYS before Linux 5.9; EPERM or another errno from a seccomp filter that
                // lists close but not close_range: one close each, below.
                Ok(_) => {}
                Err(why) => {
                    aborted = Some(why);
                    break 'runs;
                }
            }
        }
        // One close each; a call the thread's seccomp filters would not let run is not made.
        for fd in first..=last {
            let args = [fd as u64, 0, 0, 0, 0, 0];
            if let Err(denied) = inj.permits(nr::CLOSE, args) {
                failed.push((fd, denied.to_string()));
                done.insert(fd);
                continue;
            }
            match syscall(inj, nr::CLOSE, args) {
                Ok(r) => {
                    if r < 0 {
                        failed.push((fd, errno_text(r)));
                    }
                    done.insert(fd);
                }
                Err(why) => {
                    aborted = Some(why);
                    break 'runs;
                }
            }
        }
    }
    for &i in &closing {
        if !fds_of(&rows[i]).all(|fd| done.contains(&fd)) {
            continue; // not reached: reconciled from the fd table
        }
        let errs: Vec<String> = fds_of(&rows[i])
            .filter_map(|fd| {
                failed
                    .iter()
                    .find(|(f, _)| *f == fd)
                    .map(|(f, e)| format!("close({f}): {e}"))
            })
            .collect();
        set_result(&mut rows[i], errs);
    }
    if let Some(why) = aborted {
        return Err(why);
    }

    // merge: dup3(keeper, fd)
    let merging = rows_by(rows, go, Method::Merge);
    if !merging.is_empty() {
        let keeper = keeper.ok_or("merge without a keeper")?;
        for &i in &merging {
            let errs = dup_over(inj, pidfd.pid(), keeper, &rows[i])?;
            set_result(&mut rows[i], errs);
        }
    }

    // devnull: dup3(a /dev/null of the target, fd)
    let nulling = rows_by(rows, go, Method::Devnull);
    if !nulling.is_empty() {
        let (null_fd, opened) = match existing_devnull(pidfd) {
            Some(fd) => (fd, false),
            None => (open_devnull(inj, pidfd)?, true),
        };
        for &i in &nulling {
            match dup_over(inj, pidfd.pid(), null_fd, &rows[i]) {
                Ok(errs) => set_result(&mut rows[i], errs),
                Err(why) => {
                    if opened {
                        let _ = syscall(inj, nr::CLOSE, [null_fd as u64, 0, 0, 0, 0, 0]);
                    }
                    return Err(why);
                }
            }
        }
        if opened {
            syscall(inj, nr::CLOSE, [null_fd as u64, 0, 0, 0, 0, 0])?;
        }
    }
    Ok(())
}

pub(super) fn dup_over(
    inj: &mut Injector<'_>,
    pid: i32,
    source: i32,
    row: &MasterRow,
) -> Result<Vec<String>, String> {
    let mut errs = Vec::new();
    for fd in fds_of(row).filter(|&fd| fd != source) {
        // dup3 gives the new fd the flags we pass, not the old fd's: keep its close-on-exec.
        let flags = match close_on_exec(pid, fd) {
            Some(true) => libc::O_CLOEXEC as u64,
            Some(false) => 0,
            None => {
                errs.push(format!("fd {fd}: cannot read its flags; left alone"));
                continue;
            }
        };
        let args = [source as u64, fd as u64, flags, 0, 0, 0];
        if let Err(denied) = inj.permits(nr::DUP3, args) {
            errs.push(format!("dup3({source}, {fd}): {denied}"));
            continue;
        }
        let r = syscall(inj, nr::DUP3, args)?;
        if r != fd as i64 {
            errs.push(format!("dup3({source}, {fd}): {}", errno_text(r)));
        }
    }
    Ok(errs)
}

pub(super) fn set_result(row: &mut MasterRow, errs: Vec<String>) {
    if errs.is_empty() {
        row.result = Some(Outcome::Closed);
    } else {
        reap::settle(row, Outcome::Failed, errs.join("; "));
    }
}

/// Whether the target's `fd` is close-on-exec (fdinfo shows O_CLOEXEC for FD_CLOEXEC).
pub(super) fn close_on_exec(pid: i32, fd: i32) -> Option<bool> {
    super::super::procfs::fd_flags(pid, fd).map(|f| f & libc::O_CLOEXEC as u32 != 0)
}

/// Whether our copy is the null device itself (character device 1:3), whatever its path says.
pub(super) fn is_null_device(copy: &OwnedFd) -> bool {
    pty::fstat(copy.as_raw_fd()).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && libc::major(st.st_rdev) == 1
            && libc::minor(st.st_rdev) == 3
    })
}

/// A /dev/null the target already has open read-write, if any: named /dev/null and, on a copy,
/// really the null device.
pub(super) fn existing_devnull(pidfd: &Pidfd) -> Option<i32> {
    let pid = pidfd.pid();
    super::super::scan::fds_linked_to(pid, b"/dev/null")
        .into_iter()
        .find(|&fd| {
            super::super::procfs::fd_flags(pid, fd)
                .is_some_and(|flags| flags & 3 == libc::O_RDWR as u32)
                && pidfd.get_fd(fd).is_ok_and(|c| is_null_device(&c))
        })
}

/// Opens /dev/null in the target (the path goes in scratch memory, restored by the injector),
/// and checks that what it opened is the null device (the target's /dev may be its own).
pub(super) fn open_devnull(inj: &mut Injector<'_>, pidfd: &Pidfd) -> Result<i32, String> {
    let r = inj
        .open("/dev/null", libc::O_RDWR | libc::O_CLOEXEC, 0)
        .map_err(|e| e.to_string())?;
    if r < 0 {
        return Err(format!(
            "opening /dev/null in the target: {}",
            errno_text(r)
        ));
    }
    let fd = r as i32;
    if !pidfd.get_fd(fd).is_ok_and(|c| is_null_device(&c)) {
        syscall(inj, nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0])?;
        return Err("the target's /dev/null is not the null device".into());
    }
    Ok(fd)
}

pub(super) fn syscall(inj: &mut Injector<'_>, nr: i64, args: [u64; 6]) -> Result<i64, String> {
    inj.syscall(nr, args).map_err(|e| e.to_string())
}

pub(super) fn errno_text(r: i64) -> String {
    std::io::Error::from_raw_os_error((-r) as i32).to_string()
}

/// Consecutive runs of sorted, distinct fds: [3,4,5,9] → (3,5), (9,9).
pub fn runs(fds: &[i32]) -> Vec<(i32, i32)> {
    let mut out: Vec<(i32, i32)> = Vec::new();
    for &fd in fds {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == fd => *last = fd,
            _ => out.push((fd, fd)),
        }
    }
    out
}

/// From outside, after detaching, when every call reported success: a master reported released
/// must no longer be the open file we pinned (the app may already have reused the number).
pub(super) fn verify_after(pidfd: &Pidfd, pins: &[(usize, Pinned)], rows: &mut [MasterRow]) {
    let own = std::process::id() as i32;
    for (i, pinned) in pins {
        let r = &mut rows[*i];
        if r.result == Some(Outcome::Closed)
            && same_file(own, pidfd.pid(), &pinned.master, r.evidence.fd) == Some(true)
        {
            reap::settle(r, Outcome::Failed, "still open after the reap");
        }
    }
}

/// Inside the stop, after the calls: what the kernel really did to each row of `go`, read from the
/// target's fd table with one kcmp per fd against our pinned copies (the stopped target cannot
/// have changed it; only our calls did). A row is released when none of its fds is the file it
/// was; one reported released that is still open, or reported failed (a later call failed, a
/// deadline was met after its call returned) that is gone, is corrected here. Without kcmp the
/// reported result stands.
pub(super) fn reconcile(
    pidfd: &Pidfd,
    pins: &[(usize, Pinned)],
    go: &[usize],
    rows: &mut [MasterRow],
) {
    let own = std::process::id() as i32;
    let pid = pidfd.pid();
    for (i, pinned) in pins.iter().filter(|(i, _)| go.contains(i)) {
        let r = &mut rows[*i];
        let copies = std::iter::once((r.evidence.fd, &pinned.master))
            .chain(pinned.slaves.iter().map(|(fd, c)| (*fd, c)));
        let mut still_open = Vec::new();
        for (fd, copy) in copies {
            match same_file(own, pid, copy, fd) {
                Some(true) => still_open.push(fd),
                Some(false) => {}
                None => return,
            }
        }
        let released = still_open.is_empty();
        match (r.result, released) {
            (Some(Outcome::Closed), true) => {}
            (Some(Outcome::Closed), false) => {
                let open: Vec<String> = still_open.iter().map(i32::to_string).collect();
                reap::settle(
                    r,
                    Outcome::Failed,
                    format!("fd {} still open after the reap", open.join(", ")),
                )
            }
            (_, true) => {
                r.result = Some(Outcome::Closed);
                r.detail = None;
            }
            (_, false) if still_open.len() < 1 + pinned.slaves.len() => {
                let open: Vec<String> = still_open.iter().map(i32::to_string).collect();
                let was = r.detail.take().unwrap_or_default();
                reap::settle(
                    r,
                    Outcome::Failed,
                    format!(
                        "only partly released: fd {} still open ({was})",
                        open.join(", ")
                    ),
                );
            }
            // not released: its own failure, or (not reached) the run's error
            (_, false) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn consecutive_runs() {
        assert_eq!(runs(&[3, 4, 5, 9, 11, 12]), vec![(3, 5), (9, 9), (11, 12)]);
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[7]), vec![(7, 7)]);
    }
}
