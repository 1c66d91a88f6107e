//! Whether ptyreap can release fds inside a macOS process, decided before any plan is shown, and
//! the ways out when it cannot — ranked, with this machine's numbers.
//!
//! What decides it (all readable from outside, without the task port):
//! - **root**: only root gets other processes' task ports (`task_for_pid`).
//! - **code signing** (`csops(pid, CS_OPS_STATUS)`): an Apple platform binary
//!   (`CS_PLATFORM_BINARY`) is refused outright — even where SIP would hand out its task port,
//!   `thread_set_state` on it raises a fatal `kGUARD_EXC_THREAD_SET_STATE` on the *caller*
//!   (xnu thread_act.c `thread_set_state_allowed`), which would kill ptyreap inside the window
//!   inside the window. The same guard covers `TFRO_HARDENED` tasks, which exec marks for the
//!   web-browser-engine entitlements (`com.apple.developer.web-browser-engine.*`, kern_exec.c),
//!   read here from the entitlements blob (`CS_OPS_ENTITLEMENTS_BLOB`). An app with the hardened
//!   runtime (`CS_RUNTIME`, every notarized app) and no `get-task-allow` is not guarded so, but
//!   while System Integrity Protection restricts debugging (`csr_check(CSR_ALLOW_TASK_FOR_PID)`
//!   fails) macOS refuses its task port even to root; with that restriction lifted
//!   (`csrutil enable --without debug`) it is releasable.
//! - **the code's architecture**: arm64e (pointer authentication) refuses foreign thread states;
//!   Rosetta-translated code has none ptyreap could set; a ptyreap of the other architecture
//!   cannot call into it (`refusals::arch_refusal`).
//!
//! Pure, so every combination is tested on Linux.

use super::ffi;
use super::refusals::{self, Arch, TargetCode};

/// The entitlement prefixes exec turns into `TFRO_HARDENED` (bsd/kern/kern_exec.c
/// `encode_HR_entitlement` of the four `kCSWebBrowser*Entitlement`s): the public keys and the
/// private ones Apple's own engines carry (xnu's tests/entitlements/
/// hardened-binary-entitlements-1.plist lists both for each mask).
pub const BROWSER_ENGINE_ENTITLEMENTS: [&[u8]; 2] = [
    b"com.apple.developer.web-browser-engine.",
    b"com.apple.private.web-browser-engine.",
];

/// Whether an entitlements blob names a web-browser engine.
pub fn names_browser_engine(blob: &[u8]) -> bool {
    BROWSER_ENGINE_ENTITLEMENTS
        .iter()
        .any(|key| blob.windows(key.len()).any(|w| w == *key))
}

/// xnu's hard cap on `kern.tty.ptmx_max` (bsd/kern/tty_ptmx.c `PTMX_MAX_HARD`).
pub const PTMX_MAX_HARD: u64 = 999;

/// What is known about a process, for the decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    pub is_root: bool,
    /// `csops(CS_OPS_STATUS)`; None when it could not be read.
    pub cs_flags: Option<u32>,
    /// SIP restricts debugging: `csr_check(CSR_ALLOW_TASK_FOR_PID)` is not 0.
    pub sip_restricts_debugging: bool,
    /// Its entitlements name a web-browser engine (`TFRO_HARDENED`); None when unreadable.
    pub browser_engine: Option<bool>,
    /// None when its architecture could not be read.
    pub code: Option<TargetCode>,
}

/// Why fds cannot be released in a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotRoot,
    /// Its code-signing status could not be read (it may have exited).
    Unreadable,
    PlatformBinary,
    /// A hardened task (`TFRO_HARDENED`: browser-engine entitlements).
    BrowserEngine,
    /// Hardened runtime whose entitlements could not be read: whether it is a hardened task is
    /// unknown.
    EntitlementsUnreadable,
    /// Hardened runtime without get-task-allow, while SIP restricts debugging.
    HardenedUnderSip,
    /// arm64e, Rosetta, another architecture: `refusals::arch_refusal`'s words.
    Code(String),
}

/// The decision, in the order a user can act on: root first, then what only quitting or
/// Recovery can change.
pub fn decide(facts: &Facts, ours: Arch, pid: i32, name: &str) -> Option<Refusal> {
    if let Some(code) = &facts.code {
        if code.self_translated {
            return refusals::arch_refusal(ours, code, pid, name).map(Refusal::Code);
        }
    }
    if !facts.is_root {
        return Some(Refusal::NotRoot);
    }
    let Some(flags) = facts.cs_flags else {
        return Some(Refusal::Unreadable);
    };
    if flags & ffi::CS_PLATFORM_BINARY != 0 {
        return Some(Refusal::PlatformBinary);
    }
    if facts.browser_engine == Some(true) {
        return Some(Refusal::BrowserEngine);
    }
    let hardened_runtime = flags & ffi::CS_RUNTIME != 0 && flags & ffi::CS_GET_TASK_ALLOW == 0;
    if hardened_runtime && facts.sip_restricts_debugging {
        return Some(Refusal::HardenedUnderSip);
    }
    if flags & ffi::CS_RUNTIME != 0 && facts.browser_engine.is_none() {
        return Some(Refusal::EntitlementsUnreadable);
    }
    let Some(code) = &facts.code else {
        return Some(Refusal::Unreadable);
    };
    refusals::arch_refusal(ours, code, pid, name).map(Refusal::Code)
}

/// This machine's numbers, for the ways out.
#[derive(Debug, Clone)]
pub struct Machine<'a> {
    pub limit: u64,
    pub in_use: u64,
    /// The process's PTY masters (what quitting it frees).
    pub masters: usize,
    /// ptyreap's own path, for the commands it suggests.
    pub exe: &'a str,
}

/// One line: why, then the ways out, best first.
pub fn message(refusal: &Refusal, pid: i32, name: &str, m: &Machine<'_>) -> String {
    let who = format!("pid {pid} ({name})");
    let why = match refusal {
        Refusal::NotRoot => {
            let cmd = format!("{} --pid {pid} --yes", m.exe);
            return format!(
                "releasing PTYs inside {who} needs root: run `sudo {cmd}`; if sudo itself fails \
                 because no PTY is left (\"Device not configured\"), run it without a terminal: \
                 osascript -e 'do shell script \"{cmd}\" with administrator privileges'"
            );
        }
        Refusal::Unreadable => format!(
            "cannot read the code-signing status of {who} (did it exit?), so ptyreap will not \
             touch it"
        ),
        Refusal::PlatformBinary => format!(
            "{who} is an Apple platform binary: macOS kills any process that sets its thread \
             state, so ptyreap never touches it"
        ),
        Refusal::BrowserEngine => format!(
            "{who} carries a web-browser-engine entitlement, which makes it a hardened task: \
             macOS kills any process that sets its thread state, so ptyreap never touches it"
        ),
        Refusal::EntitlementsUnreadable => format!(
            "cannot read the entitlements of {who}, so whether macOS guards its thread state \
             (which would kill ptyreap inside the window) is unknown; ptyreap will not touch it"
        ),
        Refusal::HardenedUnderSip => format!(
            "macOS refuses to let any process, even root, control {who}: it is built with the \
             hardened runtime (as every notarized app is) without get-task-allow, and System \
             Integrity Protection forbids debugging it"
        ),
        Refusal::Code(why) => why.clone(),
    };
    let mut ways = Vec::new();
    if m.limit < PTMX_MAX_HARD {
        let cmd = format!("{} limit --set {PTMX_MAX_HARD}", m.exe);
        ways.push(format!(
            "raise the PTY limit now: `sudo {cmd}` ({} -> {PTMX_MAX_HARD}: {} more PTYs, {} in \
             use; until reboot; without a terminal: osascript -e 'do shell script \"{cmd}\" \
             with administrator privileges')",
            m.limit,
            PTMX_MAX_HARD - m.limit,
            m.in_use
        ));
    }
    ways.push(format!(
        "quit {name} when convenient: that frees its {} PTY master{}",
        m.masters,
        if m.masters == 1 { "" } else { "s" }
    ));
    if *refusal == Refusal::HardenedUnderSip {
        ways.push(
            "to release them without quitting it: start up in Recovery, run `csrutil enable \
             --without debug`, restart (undo it the same way with `csrutil enable`)"
                .to_string(),
        );
    }
    let ranked: Vec<String> = ways
        .iter()
        .enumerate()
        .map(|(i, w)| format!("({}) {w}", i + 1))
        .collect();
    format!(
        "{why}. Nothing was changed. Ways out, best first: {}",
        ranked.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARM: u32 = ffi::CPU_TYPE_ARM64 as u32;

    fn plain_arm64() -> Option<TargetCode> {
        Some(TargetCode {
            cputype: ARM as i32,
            ..TargetCode::default()
        })
    }

    fn facts(is_root: bool, cs_flags: Option<u32>, sip: bool) -> Facts {
        Facts {
            is_root,
            cs_flags,
            sip_restricts_debugging: sip,
            browser_engine: Some(false),
            code: plain_arm64(),
        }
    }

    const SIGNED: u32 = 0x1; // CS_VALID
    const HARDENED: u32 = SIGNED | ffi::CS_RUNTIME;

    /// Every combination of the flags that decide, with the expected refusal.
    #[test]
    fn the_decision_for_each_combination() {
        let arm64e = Some(TargetCode {
            cputype: ARM as i32,
            cpusubtype: 0x8000_0002u32 as i32,
            ..TargetCode::default()
        });
        let rosetta = Some(TargetCode {
            cputype: ffi::CPU_TYPE_X86_64,
            rosetta: true,
            ..TargetCode::default()
        });
        let translated_us = Some(TargetCode {
            cputype: ffi::CPU_TYPE_X86_64,
            self_translated: true,
            ..TargetCode::default()
        });
        type Case = (Facts, Option<&'static str>);
        let with_code = |f: Facts, code| Facts { code, ..f };
        let cases: Vec<Case> = vec![
            // plain signed code as root: releasable, with SIP on or off
            (facts(true, Some(SIGNED), true), None),
            (facts(true, Some(SIGNED), false), None),
            // hardened but debuggable (get-task-allow): releasable
            (
                facts(true, Some(HARDENED | ffi::CS_GET_TASK_ALLOW), true),
                None,
            ),
            (facts(false, Some(SIGNED), true), Some("NotRoot")),
            (facts(false, None, true), Some("NotRoot")),
            (facts(true, None, true), Some("Unreadable")),
            (
                facts(true, Some(SIGNED | ffi::CS_PLATFORM_BINARY), false),
                Some("PlatformBinary"),
            ),
            (
                facts(
                    true,
                    Some(HARDENED | ffi::CS_PLATFORM_BINARY | ffi::CS_GET_TASK_ALLOW),
                    true,
                ),
                Some("PlatformBinary"),
            ),
            (facts(true, Some(HARDENED), true), Some("HardenedUnderSip")),
            // SIP's debugging restriction lifted: a notarized app is releasable
            (facts(true, Some(HARDENED), false), None),
            // ... unless it is a hardened task, or that cannot be told
            (
                Facts {
                    browser_engine: Some(true),
                    ..facts(true, Some(HARDENED), false)
                },
                Some("BrowserEngine"),
            ),
            (
                Facts {
                    browser_engine: Some(true),
                    ..facts(true, Some(SIGNED), true)
                },
                Some("BrowserEngine"),
            ),
            (
                Facts {
                    browser_engine: None,
                    ..facts(true, Some(HARDENED), false)
                },
                Some("EntitlementsUnreadable"),
            ),
            (
                Facts {
                    browser_engine: None,
                    ..facts(true, Some(SIGNED), false)
                },
                None,
            ),
            (
                with_code(facts(true, Some(SIGNED), true), arm64e),
                Some("arm64e"),
            ),
            (
                with_code(facts(true, Some(SIGNED), true), rosetta),
                Some("Rosetta"),
            ),
            (
                with_code(facts(true, Some(SIGNED), true), None),
                Some("Unreadable"),
            ),
            // ptyreap translated itself: said first, even before root
            (
                with_code(facts(false, Some(SIGNED), true), translated_us),
                Some("ptyreap itself runs under Rosetta"),
            ),
        ];
        for (f, want) in cases {
            let got = decide(&f, Arch::Arm64, 9, "App");
            let shown = match &got {
                None => None,
                Some(Refusal::NotRoot) => Some("NotRoot".to_string()),
                Some(Refusal::Unreadable) => Some("Unreadable".into()),
                Some(Refusal::PlatformBinary) => Some("PlatformBinary".into()),
                Some(Refusal::BrowserEngine) => Some("BrowserEngine".into()),
                Some(Refusal::EntitlementsUnreadable) => Some("EntitlementsUnreadable".into()),
                Some(Refusal::HardenedUnderSip) => Some("HardenedUnderSip".into()),
                Some(Refusal::Code(why)) => Some(why.clone()),
            };
            match (want, &shown) {
                (None, None) => {}
                (Some(w), Some(s)) if s == w || s.contains(w) => {}
                _ => panic!("{f:?}: wanted {want:?}, got {shown:?}"),
            }
        }
    }

    fn machine(limit: u64) -> Machine<'static> {
        Machine {
            limit,
            in_use: 505,
            masters: 490,
            exe: "/usr/local/bin/ptyreap",
        }
    }

    #[test]
    fn the_seed_case_ranks_the_ways_out_with_this_machines_numbers() {
        let m = message(&Refusal::HardenedUnderSip, 812, "Claude", &machine(511));
        let raise = m.find("(1) raise the PTY limit now").expect(&m);
        let quit = m.find("(2) quit Claude when convenient").expect(&m);
        let csr = m.find("(3) to release them without quitting").expect(&m);
        assert!(raise < quit && quit < csr, "{m}");
        for needle in [
            "pid 812 (Claude)",
            "hardened runtime",
            "System Integrity Protection",
            "Nothing was changed",
            "`sudo /usr/local/bin/ptyreap limit --set 999`",
            "511 -> 999: 488 more PTYs, 505 in use",
            "osascript -e 'do shell script \"/usr/local/bin/ptyreap limit --set 999\" with administrator privileges'",
            "frees its 490 PTY masters",
            "Recovery",
            "csrutil enable --without debug",
            "`csrutil enable`",
        ] {
            assert!(m.contains(needle), "missing {needle:?} in {m}");
        }
        assert!(!m.contains('\n'), "one line: {m}");
    }

    #[test]
    fn at_the_cap_raising_is_not_offered_and_only_sip_suggests_recovery() {
        let m = message(&Refusal::HardenedUnderSip, 1, "App", &machine(999));
        assert!(!m.contains("limit --set"), "{m}");
        assert!(m.contains("(1) quit App"), "{m}");
        assert!(m.contains("(2) to release them"), "{m}");
        for r in [
            Refusal::PlatformBinary,
            Refusal::BrowserEngine,
            Refusal::EntitlementsUnreadable,
            Refusal::Unreadable,
            Refusal::Code("pid 1 (App) is an arm64e process".into()),
        ] {
            let m = message(&r, 1, "App", &machine(511));
            assert!(!m.contains("csrutil"), "{m}");
            assert!(m.contains("(1) raise the PTY limit now"), "{m}");
            assert!(m.contains("(2) quit App"), "{m}");
            assert!(m.contains("Nothing was changed"), "{m}");
        }
        let one = Machine {
            masters: 1,
            ..machine(511)
        };
        assert!(message(&Refusal::PlatformBinary, 1, "A", &one).ends_with("its 1 PTY master"));
    }

    #[test]
    fn browser_engine_entitlements_are_found_in_the_blob() {
        let plist = b"\xfa\xde\x71\x71\0\0\0\x90<plist><dict><key>com.apple.developer.web-browser-engine.webcontent</key><true/></dict></plist>";
        assert!(names_browser_engine(plist));
        assert!(names_browser_engine(
            b"<key>com.apple.private.web-browser-engine.gpu</key><true/>"
        ));
        assert!(!names_browser_engine(
            b"<key>com.apple.private.web-browser-engine</key><true/>"
        ));
        assert!(!names_browser_engine(
            b"<key>com.apple.security.cs.allow-jit</key><true/>"
        ));
        assert!(!names_browser_engine(b""));
    }

    #[test]
    fn not_root_is_told_how_to_become_root_without_a_terminal() {
        let m = message(&Refusal::NotRoot, 77, "Claude", &machine(511));
        assert!(
            m.contains("`sudo /usr/local/bin/ptyreap --pid 77 --yes`"),
            "{m}"
        );
        assert!(m.contains("osascript -e 'do shell script \"/usr/local/bin/ptyreap --pid 77 --yes\" with administrator privileges'"), "{m}");
    }
}
