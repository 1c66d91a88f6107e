//! Whether a call can run in a target (architecture, dyld shared cache, a task suspended as a
//! whole), and the plain words for every way macOS refuses (task port, thread state). Pure, so
//! it is unit-tested on Linux.

use super::ffi::{
    self, kern_name, KERN_FAILURE, KERN_NO_ACCESS, KERN_PROTECTION_FAILURE, KERN_SUCCESS,
};

/// Why a task suspended as a whole (a debugger's stop, `pid_suspend`, with no SSTOP) is refused:
/// a thread created in it is held too (`ffi::MachTaskBasicInfo`), so the first call would only
/// time out and be misreported. `count`: MACH_TASK_BASIC_INFO's, None when unreadable.
pub fn task_suspended_refusal(count: Option<i32>) -> Option<String> {
    match count {
        Some(0) => None,
        Some(n) => Some(format!(
            "it is suspended as a whole ({n} task suspension{}: a debugger, or pid_suspend), so \
             no thread can run in it: resume it first",
            if n == 1 { "" } else { "s" }
        )),
        None => Some("cannot read whether it is suspended as a whole".into()),
    }
}

/// The two instruction sets a Mac runs natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Arm64,
    X86_64,
}

impl Arch {
    pub fn ours() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }
}

/// What we know about a target's code, for deciding whether a call can be run in it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetCode {
    pub cputype: i32,
    pub cpusubtype: i32,
    /// PROC_FLAG_ROSETTA: translated x86_64 code on an Apple-silicon kernel.
    pub rosetta: bool,
    /// ptyreap itself runs translated.
    pub self_translated: bool,
}

/// Why a call cannot be run in this target, or None when its code is plain arm64 or x86_64 like
/// ours. arm64e processes refuse foreign thread states (pointer authentication:
/// KERN_PROTECTION_FAILURE); Rosetta-translated ones have no x86 thread state we could set on an
/// arm64 kernel.
pub fn arch_refusal(ours: Arch, code: &TargetCode, pid: i32, name: &str) -> Option<String> {
    let who = format!("pid {pid} ({name})");
    if code.self_translated {
        return Some(format!(
            "ptyreap itself runs under Rosetta: it cannot run calls in {who}; \
             use the native arm64 build of ptyreap"
        ));
    }
    if code.rosetta {
        return Some(format!(
            "{who} runs translated by Rosetta: macOS gives no thread state of it that ptyreap \
             could set, so its PTYs cannot be released from outside; quitting it frees them"
        ));
    }
    let subtype = (code.cpusubtype as u32 & !ffi::CPU_SUBTYPE_MASK) as i32;
    match code.cputype {
        ffi::CPU_TYPE_ARM64 if subtype == ffi::CPU_SUBTYPE_ARM64E => Some(format!(
            "{who} is an arm64e process (pointer authentication): macOS refuses thread states \
             from other processes for it, so its PTYs cannot be released from outside; \
             quitting it frees them"
        )),
        ffi::CPU_TYPE_ARM64 if ours == Arch::Arm64 => None,
        ffi::CPU_TYPE_X86_64 if ours == Arch::X86_64 => None,
        ffi::CPU_TYPE_ARM64 | ffi::CPU_TYPE_X86_64 => {
            let theirs = if code.cputype == ffi::CPU_TYPE_ARM64 {
                Arch::Arm64
            } else {
                Arch::X86_64
            };
            Some(format!(
                "{who} is {} code and this ptyreap is {}: use a ptyreap built for {}",
                theirs.name(),
                ours.name(),
                theirs.name()
            ))
        }
        other => Some(format!(
            "{who} has an unsupported cpu type {other:#x}: ptyreap runs calls only in arm64 and \
             x86_64 processes"
        )),
    }
}

/// Who the refusal is about, and how ptyreap was run (for the commands it suggests).
#[derive(Debug, Clone)]
pub struct RefusalContext<'a> {
    pub pid: i32,
    pub name: &'a str,
    /// ptyreap's own path, for the suggested commands.
    pub exe: &'a str,
    /// The target is an Apple platform binary (CS_PLATFORM_BINARY).
    pub platform_binary: bool,
}

/// The plain message for a failed `task_for_pid`, or None on success.
///
/// As root, KERN_FAILURE means System Integrity Protection and the target's hardened runtime
/// forbid debugging it (every notarized app, unless it carries get-task-allow); root does not
/// help, so say what does. Not root: task ports of other processes need root.
pub fn task_port_refusal(kr: i32, is_root: bool, ctx: &RefusalContext<'_>) -> Option<String> {
    if kr == KERN_SUCCESS {
        return None;
    }
    let who = format!("pid {} ({})", ctx.pid, ctx.name);
    let census = "`ptyreap` (the census) still shows the leak";
    if !is_root {
        let cmd = format!("{} --pid {} --yes", ctx.exe, ctx.pid);
        return Some(format!(
            "releasing PTYs inside {who} needs root ({}): run `sudo {cmd}`. If sudo itself fails \
             because no PTY is left (\"Device not configured\"), run it without a terminal: \
             osascript -e 'do shell script \"{cmd}\" with administrator privileges'",
            kern_name(kr)
        ));
    }
    if kr == KERN_FAILURE && ctx.platform_binary {
        return Some(format!(
            "macOS refuses to let any process, even root, control {who}: it is an Apple platform \
             binary, protected by System Integrity Protection. Nothing was changed; {census}, \
             and quitting it frees its PTYs; `sudo sysctl kern.tty.ptmx_max=999` raises the PTY \
             limit (511 by default, 999 at most) to buy time"
        ));
    }
    if kr == KERN_FAILURE {
        return Some(format!(
            "macOS refuses to let any process, even root, control {who}: System Integrity \
             Protection forbids debugging apps built with the hardened runtime (every notarized \
             app) unless they allow it (get-task-allow). Nothing was changed. What you can do: \
             {census}; quitting {} frees every PTY it holds; to lift the restriction, start up \
             in Recovery and run `csrutil enable --without debug` (undo it later with \
             `csrutil enable`); meanwhile `sudo sysctl kern.tty.ptmx_max=999` raises the PTY \
             limit (511 by default, 999 at most) to buy time",
            ctx.name
        ));
    }
    Some(format!(
        "cannot control {who}: task_for_pid failed with {}; nothing was changed ({census})",
        kern_name(kr)
    ))
}

/// The plain message when a thread state is refused (arm64e slips through the cpu subtype check
/// only if macOS reports it differently; say what it means anyway).
pub fn thread_state_refusal(kr: i32, pid: i32, name: &str) -> String {
    match kr {
        KERN_PROTECTION_FAILURE => format!(
            "macOS refused ptyreap's thread state for pid {pid} ({name}): it is an arm64e \
             (pointer-authenticated) process, whose PTYs cannot be released from outside; \
             quitting it frees them"
        ),
        KERN_NO_ACCESS => format!(
            "macOS refused ptyreap's thread state for pid {pid} ({name}): it is a hardened \
             process whose registers only Apple's tools may set; quitting it frees its PTYs"
        ),
        _ => format!(
            "cannot set up a call in pid {pid} ({name}): thread_set_state failed with {}",
            kern_name(kr)
        ),
    }
}

/// The shared cache as one process sees it: one slide per boot, so when the UUID and slide
/// match ours, every libsystem address of ours is valid in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCache {
    pub uuid: [u8; 16],
    pub slide: u64,
    pub base: u64,
}

impl SharedCache {
    pub fn from_head(head: &ffi::DyldAllImageInfosHead) -> Option<SharedCache> {
        if head.version < ffi::DYLD_ALL_IMAGE_INFOS_MIN_VERSION
            || head.shared_cache_base_address == 0
            || head.process_detached_from_shared_region != 0
        {
            return None;
        }
        Some(SharedCache {
            uuid: head.shared_cache_uuid,
            slide: head.shared_cache_slide,
            base: head.shared_cache_base_address,
        })
    }
}

/// Why our libsystem addresses are not valid in the target, or None when they are.
pub fn shared_cache_mismatch(
    ours: Option<SharedCache>,
    theirs: Option<SharedCache>,
    pid: i32,
    name: &str,
) -> Option<String> {
    match (ours, theirs) {
        (Some(a), Some(b)) if a == b => None,
        (None, _) => Some(
            "ptyreap cannot read its own dyld shared cache information: it cannot locate \
             libsystem's close() in another process"
                .into(),
        ),
        (_, None) => Some(format!(
            "pid {pid} ({name}) does not use the system's dyld shared cache (or has not \
             finished starting): ptyreap cannot locate libsystem's close() in it"
        )),
        (Some(_), Some(_)) => Some(format!(
            "pid {pid} ({name}) maps a different dyld shared cache than ptyreap (another cache \
             or slide, e.g. started before a system update): ptyreap cannot locate libsystem's \
             close() in it; quitting and restarting it frees its PTYs"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::macos::ffi::*;

    #[test]
    fn a_task_suspended_as_a_whole_is_refused() {
        assert_eq!(super::task_suspended_refusal(Some(0)), None);
        let one = super::task_suspended_refusal(Some(1)).unwrap();
        assert!(one.contains("(1 task suspension:"), "{one}");
        assert!(super::task_suspended_refusal(Some(2))
            .unwrap()
            .contains("2 task suspensions"));
        assert!(
            super::task_suspended_refusal(None).is_some(),
            "unreadable is no go-ahead"
        );
    }

    fn code(cputype: i32, cpusubtype: i32) -> TargetCode {
        TargetCode {
            cputype,
            cpusubtype,
            ..TargetCode::default()
        }
    }

    #[test]
    fn only_plain_native_code_is_called_into() {
        let arm = Arch::Arm64;
        assert_eq!(
            arch_refusal(arm, &code(ffi::CPU_TYPE_ARM64, 0), 9, "x"),
            None
        );
        // CPU_SUBTYPE_PTRAUTH_ABI | arm64e
        let e = arch_refusal(
            arm,
            &code(ffi::CPU_TYPE_ARM64, 0x8000_0002u32 as i32),
            9,
            "x",
        );
        assert!(e.unwrap().contains("arm64e"));
        let e = arch_refusal(arm, &code(ffi::CPU_TYPE_ARM64, 2), 9, "x");
        assert!(e.unwrap().contains("arm64e"));
        let mut rosetta = code(ffi::CPU_TYPE_X86_64, 3);
        rosetta.rosetta = true;
        assert!(arch_refusal(arm, &rosetta, 9, "x")
            .unwrap()
            .contains("Rosetta"));
        let mut us = code(ffi::CPU_TYPE_X86_64, 3);
        us.self_translated = true;
        assert!(arch_refusal(Arch::X86_64, &us, 9, "x")
            .unwrap()
            .contains("ptyreap itself runs under Rosetta"));
        assert_eq!(
            arch_refusal(Arch::X86_64, &code(ffi::CPU_TYPE_X86_64, 3), 9, "x"),
            None
        );
        assert!(
            arch_refusal(Arch::X86_64, &code(ffi::CPU_TYPE_ARM64, 0), 9, "x")
                .unwrap()
                .contains("built for arm64")
        );
        assert!(arch_refusal(arm, &code(7, 3), 9, "x")
            .unwrap()
            .contains("unsupported cpu type"));
    }

    fn ctx(platform_binary: bool) -> RefusalContext<'static> {
        RefusalContext {
            pid: 1234,
            name: "Claude",
            exe: "/usr/local/bin/ptyreap",
            platform_binary,
        }
    }

    #[test]
    fn success_is_no_refusal() {
        assert_eq!(task_port_refusal(KERN_SUCCESS, true, &ctx(false)), None);
        assert_eq!(task_port_refusal(KERN_SUCCESS, false, &ctx(false)), None);
    }

    #[test]
    fn kern_failure_as_root_is_sip_and_the_hardened_runtime() {
        let m = task_port_refusal(KERN_FAILURE, true, &ctx(false)).unwrap();
        for needle in [
            "pid 1234 (Claude)",
            "even root",
            "System Integrity Protection",
            "hardened runtime",
            "census",
            "quitting Claude frees",
            "csrutil enable --without debug",
            "Recovery",
            "sudo sysctl kern.tty.ptmx_max=999",
            "Nothing was changed",
        ] {
            assert!(m.contains(needle), "missing {needle:?} in {m}");
        }
        assert!(!m.contains("sudo ptyreap"), "{m}");
    }

    #[test]
    fn kern_failure_for_a_platform_binary_says_so() {
        let m = task_port_refusal(KERN_FAILURE, true, &ctx(true)).unwrap();
        assert!(m.contains("Apple platform binary"), "{m}");
        assert!(m.contains("kern.tty.ptmx_max=999"), "{m}");
        assert!(!m.contains("csrutil"), "{m}");
    }

    #[test]
    fn not_root_is_told_to_use_sudo_and_the_no_pty_way() {
        for kr in [
            KERN_FAILURE,
            KERN_PROTECTION_FAILURE,
            KERN_INVALID_ARGUMENT,
            77,
        ] {
            let m = task_port_refusal(kr, false, &ctx(false)).unwrap();
            assert!(
                m.contains("sudo /usr/local/bin/ptyreap --pid 1234 --yes"),
                "{m}"
            );
            assert!(m.contains("osascript -e 'do shell script \"/usr/local/bin/ptyreap --pid 1234 --yes\" with administrator privileges'"), "{m}");
            assert!(m.contains(&kern_name(kr)), "{m}");
        }
    }

    #[test]
    fn other_failures_as_root_name_the_code() {
        for (kr, name) in [
            (KERN_PROTECTION_FAILURE, "KERN_PROTECTION_FAILURE (2)"),
            (KERN_INVALID_ARGUMENT, "KERN_INVALID_ARGUMENT (4)"),
            (KERN_NO_ACCESS, "KERN_NO_ACCESS (8)"),
            (KERN_INVALID_TASK, "KERN_INVALID_TASK (16)"),
            (4242, "kern_return_t 4242"),
        ] {
            let m = task_port_refusal(kr, true, &ctx(false)).unwrap();
            assert!(m.contains(name), "{m}");
            assert!(m.contains("nothing was changed"), "{m}");
            assert!(!m.contains("csrutil"), "{m}");
        }
    }

    #[test]
    fn thread_state_refusals() {
        assert!(thread_state_refusal(KERN_PROTECTION_FAILURE, 5, "a").contains("arm64e"));
        assert!(thread_state_refusal(KERN_NO_ACCESS, 5, "a").contains("hardened process"));
        assert!(thread_state_refusal(KERN_TERMINATED, 5, "a").contains("KERN_TERMINATED (37)"));
    }

    fn head(version: u32, slide: u64, uuid: u8) -> ffi::DyldAllImageInfosHead {
        ffi::DyldAllImageInfosHead {
            version,
            shared_cache_slide: slide,
            shared_cache_uuid: [uuid; 16],
            shared_cache_base_address: 0x1_8000_0000 + slide,
            ..Default::default()
        }
    }

    #[test]
    fn the_shared_cache_must_match_exactly() {
        let ours = SharedCache::from_head(&head(17, 0x1000, 7));
        assert!(ours.is_some());
        assert_eq!(
            shared_cache_mismatch(ours, SharedCache::from_head(&head(16, 0x1000, 7)), 1, "a"),
            None
        );
        let other_slide = SharedCache::from_head(&head(17, 0x2000, 7));
        assert!(shared_cache_mismatch(ours, other_slide, 1, "a")
            .unwrap()
            .contains("different dyld shared cache"));
        let other_uuid = SharedCache::from_head(&head(17, 0x1000, 8));
        assert!(shared_cache_mismatch(ours, other_uuid, 1, "a").is_some());
        // too old a layout, or detached from the shared region: no cache to trust
        assert_eq!(SharedCache::from_head(&head(14, 0x1000, 7)), None);
        let mut detached = head(17, 0x1000, 7);
        detached.process_detached_from_shared_region = 1;
        assert_eq!(SharedCache::from_head(&detached), None);
        assert!(shared_cache_mismatch(ours, None, 1, "a")
            .unwrap()
            .contains("does not use"));
        assert!(shared_cache_mismatch(None, ours, 1, "a").is_some());
    }
}
