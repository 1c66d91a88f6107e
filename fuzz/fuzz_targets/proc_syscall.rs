//! /proc/PID/task/TID/syscall: the call a thread waits in, and its arguments.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ptyreap::testing::procfs;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some((nr, _)) = procfs::parse_syscall(&text) {
        assert!(nr >= 0);
    }
});
