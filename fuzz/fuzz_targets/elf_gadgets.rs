//! The syscall-instruction finder over an ELF image (a vDSO or libc read from a target's memory).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ptyreap::testing::gadget;

fuzz_target!(|data: &[u8]| {
    for (insn, align) in [(&[0x0f, 0x05][..], 1), (&[0x01, 0x00, 0x00, 0xd4][..], 4)] {
        if let Ok(found) = gadget::scan_elf(data, insn, align) {
            for off in found {
                let at = off as usize;
                assert_eq!(&data[at..at + insn.len()], insn, "a reported gadget is not one");
            }
        }
    }
});
