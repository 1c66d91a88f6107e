//! A thread stopped inside a restartable sequence: where the kernel would have sent it (see the
//! module doc of inject).

use super::*;

/// `struct rseq_cs` (include/uapi/linux/rseq.h): version, flags, start_ip, post_commit_offset,
/// abort_ip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RseqCs {
    pub start_ip: u64,
    pub post_commit_offset: u64,
    pub abort_ip: u64,
}

impl RseqCs {
    pub(crate) fn from_bytes(b: &[u8; 32]) -> RseqCs {
        let word = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        RseqCs {
            start_ip: word(8),
            post_commit_offset: word(16),
            abort_ip: word(24),
        }
    }

    /// Where the kernel would send a thread whose pc is `pc` (`rseq_ip_fixup`): the abort
    /// handler when pc is inside the critical section, else nowhere.
    pub(crate) fn abort_for(&self, pc: u64) -> Option<u64> {
        let inside = pc.wrapping_sub(self.start_ip) < self.post_commit_offset;
        inside.then_some(self.abort_ip)
    }
}

/// If the thread sits inside an rseq critical section: the abort handler the kernel would move
/// it to on its way back to user mode (see the module doc). A section the kernel would refuse
/// (bad signature; it would kill the thread with SIGSEGV) makes the thread unusable.
pub(super) fn rseq_abort_target(s: &Session, regs: &Regs) -> Result<Option<u64>, InjectError> {
    let Ok(Some((area, signature))) = raw::rseq_configuration(s.tid) else {
        return Ok(None);
    };
    let mut word = [0u8; 8];
    if s.mem.read_exact_at(&mut word, area + 8).is_err() {
        return Ok(None);
    }
    let cs_addr = u64::from_ne_bytes(word);
    if cs_addr == 0 {
        return Ok(None);
    }
    let mut raw_cs = [0u8; 32];
    if s.mem.read_exact_at(&mut raw_cs, cs_addr).is_err() {
        return Ok(None);
    }
    let cs = RseqCs::from_bytes(&raw_cs);
    let Some(abort) = cs.abort_for(regs.pc()) else {
        return Ok(None);
    };
    let mut sig = [0u8; 4];
    let signed = s.mem.read_exact_at(&mut sig, abort.wrapping_sub(4)).is_ok()
        && u32::from_ne_bytes(sig) == signature;
    if !signed {
        return Err(InjectError::Unexpected(format!(
            "thread {} is inside an rseq critical section with a bad abort handler",
            s.tid
        )));
    }
    Ok(Some(abort))
}
