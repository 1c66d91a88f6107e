//! /proc/PID/maps, read to find the vDSO and executable text for a syscall instruction.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ptyreap::testing::gadget;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for m in gadget::parse_maps(&text) {
        let _ = m.contains(m.start);
    }
});
