//! /proc/PID/fdinfo/FD: a PTY master's tty-index, an epoll set's tfd lines.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ptyreap::testing::procfs;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = procfs::parse_tty_index(&text);
    let _ = procfs::parse_fd_flags(&text);
    let tfds = procfs::parse_epoll_tfds(&text);
    assert!(tfds.len() <= text.matches("tfd:").count());
});
