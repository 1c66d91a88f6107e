//! /proc/PID/mountinfo: mount points are escaped octal and may contain anything.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ptyreap::testing::procfs;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for m in procfs::parse_mountinfo(&text) {
        let _ = m.super_option("max");
    }
});
