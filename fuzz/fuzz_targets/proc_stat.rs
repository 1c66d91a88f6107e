//! /proc/PID/stat: `comm` is chosen by the process and may contain anything.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ptyreap::testing::procfs;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(stat) = procfs::parse_stat(&text) {
        // what parsed must be what stood between the first '(' and the last ')'
        let open = text.find('(').unwrap();
        let close = text.rfind(')').unwrap();
        assert_eq!(stat.comm, &text[open + 1..close]);
    }
});
