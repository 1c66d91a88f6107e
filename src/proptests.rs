//! Property tests of everything that parses untrusted text: /proc files (a process chooses its
//! own `comm`, paths may contain anything), durations and fd lists typed by people, fd sets and
//! pollfd arrays read from a target's memory. Never a panic; round trips where a format has a
//! writer. The cargo-fuzz targets (fuzz/) drive the same parsers with coverage guidance.

use crate::duration;
use crate::plan::parse_fd_list;
use crate::sys::linux::procfs;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn proc_parsers_never_panic(text in ".{0,400}") {
        let _ = procfs::parse_stat(&text);
        let _ = procfs::parse_tty_index(&text);
        let _ = procfs::parse_fd_flags(&text);
        let _ = procfs::parse_epoll_tfds(&text);
        let _ = procfs::parse_mountinfo(&text);
        let _ = procfs::parse_syscall(&text);
    }

    #[test]
    fn proc_parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = procfs::parse_stat(&text);
        let _ = procfs::parse_mountinfo(&text);
        let _ = procfs::parse_syscall(&text);
    }

    #[test]
    fn stat_survives_any_comm(comm in "[^\u{0}]{0,16}", pid in 1i32..4_000_000, start in any::<u64>(),
                              flags in any::<u32>(), state in "[RSDZTtXI]") {
        let line = format!(
            "{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 {flags} 0 0 0 0 1 2 0 0 20 0 1 0 {start} 1000 200 18446744073709551615"
        );
        let s = procfs::parse_stat(&line).expect("a well-formed stat line parses");
        prop_assert_eq!(s.comm, comm);
        prop_assert_eq!(s.start_time, start);
        prop_assert_eq!(s.flags, u64::from(flags));
        prop_assert_eq!(s.state, state.chars().next().unwrap());
    }

    #[test]
    fn mountinfo_paths_round_trip(path in "/[a-z \\t\\\\]{1,30}", max in proptest::option::of(1u32..100_000)) {
        let escaped: String = path.chars().map(|c| match c {
            ' ' => "\\040".to_string(),
            '\t' => "\\011".to_string(),
            '\\' => "\\134".to_string(),
            c => c.to_string(),
        }).collect();
        let opts = match max { Some(m) => format!("rw,mode=600,max={m}"), None => "rw,mode=600".into() };
        let line = format!("90 25 0:51 / {escaped} rw,relatime shared:7 - devpts devpts {opts}\n");
        let m = procfs::parse_mountinfo(&line);
        prop_assert_eq!(m.len(), 1);
        prop_assert_eq!(&m[0].mount_point, &path);
        prop_assert_eq!(m[0].super_option("max").map(|v| v.parse::<u32>().unwrap()), max);
    }

    #[test]
    fn syscall_lines_round_trip(nr in 0i64..1000, args in proptest::array::uniform6(any::<u64>())) {
        let line = format!("{nr} {} 0x7ffd0ff0 0x7f00aa\n",
            args.iter().map(|a| format!("{a:#x}")).collect::<Vec<_>>().join(" "));
        prop_assert_eq!(procfs::parse_syscall(&line), Some((nr, args)));
    }

    #[test]
    fn durations_round_trip(secs in 0u64..10_000_000) {
        let text = format!("{}d{}h{}m{}s", secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
        prop_assert_eq!(duration::parse(&text).unwrap().as_secs(), secs);
        prop_assert_eq!(duration::parse(&format!("{secs}s")).unwrap().as_secs(), secs);
        // a bare number is seconds to some and minutes to others: only 0 needs no unit
        prop_assert_eq!(duration::parse(&secs.to_string()).is_ok(), secs == 0);
        // people see at most two units, never more than the value
        let shown = duration::human(secs);
        prop_assert!(shown.split(' ').count() <= 2);
        prop_assert!(duration::parse(&shown.replace(' ', "")).unwrap().as_secs() <= secs);
    }

    #[test]
    fn typed_text_never_panics(text in ".{0,40}") {
        let _ = duration::parse(&text);
        let _ = parse_fd_list(&text);
    }

    #[test]
    fn fd_lists_round_trip(fds in proptest::collection::btree_set(0i32..5000, 1..40)) {
        let text = fds.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        prop_assert_eq!(parse_fd_list(&text).unwrap(), fds);
    }

    #[test]
    fn fd_sets_round_trip(fds in proptest::collection::btree_set(0usize..1024, 0..64), extra in 0usize..64) {
        let nfds = fds.iter().max().map_or(0, |m| m + 1) + extra;
        let mut raw = vec![0u8; nfds.div_ceil(64) * 8];
        for &fd in &fds {
            raw[fd / 8] |= 1 << (fd % 8);
        }
        let got: Vec<usize> = crate::sys::linux::watchers::fd_set_from_bytes(&raw, nfds)
            .into_iter().map(|fd| fd as usize).collect();
        prop_assert_eq!(got, fds.into_iter().collect::<Vec<_>>());
    }
}
