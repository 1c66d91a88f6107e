//! /proc/PID/status fields (TracerPid, SigIgn, ...).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ptyreap::testing::procfs;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for key in ["TracerPid", "SigIgn", "SigBlk", "State", "Uid"] {
        if let Some(v) = procfs::status_field(&text, key) {
            assert_eq!(v, v.trim());
        }
    }
});
