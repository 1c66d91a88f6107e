//! An Electron app's app.asar is someone else's file, read as root: its header reader must never
//! panic, whatever the sizes and the JSON say, and what it locates must lie inside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ptyreap::testing::asar;

fuzz_target!(|data: &[u8]| {
    if let Ok((index, data_start)) = asar::parse_header(data, data.len() as u64) {
        assert!(data_start <= data.len() as u64);
        let _ = asar::locate(&index, "node_modules/node-pty/package.json");
    }
});
