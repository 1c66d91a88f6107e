//! Finding a syscall instruction in the target, and the memory around it.
//!
//! An injected call needs a real syscall instruction in executable memory of the target: we
//! never write code into it. The best one is the instruction the stopped thread itself entered
//! the kernel through (inject.rs checks its bytes). Otherwise the vDSO, which the kernel maps
//! into every process: its address comes from the auxiliary vector (`AT_SYSINFO_EHDR`), its
//! contents are an ELF image we read from the target's memory and parse with goblin to scan only
//! its executable sections (the clock_gettime fallbacks contain syscall instructions). Last,
//! libc's text, then any executable mapping, scanned from memory.
//!
//! All reads go through `/proc/PID/mem`, which the tracer may read and write whatever the page
//! protections (FOLL_FORCE), and which fails cleanly on unmapped addresses.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use goblin::elf::{program_header, section_header, Elf};

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub path: String,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(6, ' ');
            let range = it.next()?;
            let perms = it.next()?.as_bytes();
            let _offset = it.next()?;
            let _dev = it.next()?;
            let _inode = it.next()?;
            let path = it.next().unwrap_or("").trim_start().to_string();
            let (s, e) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                readable: perms.first() == Some(&b'r'),
                writable: perms.get(1) == Some(&b'w'),
                executable: perms.get(2) == Some(&b'x'),
                path,
            })
        })
        .collect()
}

pub fn read_maps(pid: i32) -> io::Result<Vec<Mapping>> {
    Ok(parse_maps(&std::fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

const AT_SYSINFO_EHDR: u64 = 33;

/// The vDSO's address, from the target's auxiliary vector.
pub fn vdso_base(pid: i32) -> io::Result<Option<u64>> {
    let auxv = std::fs::read(format!("/proc/{pid}/auxv"))?;
    Ok(auxv
        .chunks_exact(16)
        .map(|p| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
            (word(&p[..8]), word(&p[8..]))
        })
        .find(|&(k, _)| k == AT_SYSINFO_EHDR)
        .map(|(_, v)| v)
        .filter(|&v| v != 0))
}

/// The offsets in `bytes` where `insn` starts, at multiples of `align`.
pub fn scan<'a>(bytes: &'a [u8], insn: &[u8], align: u64) -> impl Iterator<Item = usize> + 'a {
    let insn = insn.to_vec();
    (0..bytes.len().saturating_sub(insn.len() - 1))
        .step_by(align as usize)
        .filter(move |&i| bytes[i..i + insn.len()] == insn[..])
}

/// Syscall instructions in an ELF image, within its executable sections (or, for an image
/// without section headers, its executable segments): offsets from the image's start.
pub fn scan_elf(image: &[u8], insn: &[u8], align: u64) -> Result<Vec<u64>, goblin::error::Error> {
    let elf = Elf::parse(image)?;
    let mut ranges: Vec<(u64, u64)> = elf
        .section_headers
        .iter()
        .filter(|s| {
            s.sh_flags & u64::from(section_header::SHF_EXECINSTR) != 0
                && s.sh_type != section_header::SHT_NOBITS
        })
        .map(|s| (s.sh_offset, s.sh_size))
        .collect();
    if ranges.is_empty() {
        ranges = elf
            .program_headers
            .iter()
            .filter(|p| {
                p.p_type == program_header::PT_LOAD && p.p_flags & program_header::PF_X != 0
            })
            .map(|p| (p.p_offset, p.p_filesz))
            .collect();
    }
    let mut found = Vec::new();
    for (off, size) in ranges {
        let (start, end) = (off as usize, off.saturating_add(size) as usize);
        let Some(text) = image.get(start..end.min(image.len())) else {
            continue;
        };
        // Offsets stay aligned as long as the section is (sections of code are).
        found.extend(scan(text, insn, align).map(|i| off + i as u64));
    }
    Ok(found)
}

/// Syscall instructions in the target's vDSO, as addresses.
pub fn find_in_vdso(pid: i32, mem: &File, insn: &[u8], align: u64) -> io::Result<Vec<u64>> {
    let Some(base) = vdso_base(pid)? else {
        return Ok(Vec::new());
    };
    let mut head = [0u8; 64];
    mem.read_exact_at(&mut head, base)?;
    let h = Elf::parse_header(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let size = (h.e_shoff + u64::from(h.e_shnum) * u64::from(h.e_shentsize))
        .max(h.e_phoff + u64::from(h.e_phnum) * u64::from(h.e_phentsize));
    if size > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "implausible vDSO size",
        ));
    }
    let mut image = vec![0u8; size as usize];
    mem.read_exact_at(&mut image, base)?;
    let found =
        scan_elf(&image, insn, align).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(found.into_iter().map(|off| base + off).collect())
}

/// The first syscall instruction in an executable mapping of the target: libc's first, then
/// any other. Scanned in chunks straight from memory.
pub fn find_in_text(maps: &[Mapping], mem: &File, insn: &[u8], align: u64) -> Option<u64> {
    find_in(maps, |m| m.executable, mem, insn, align)
}

/// The first copy of `bytes` in the target's read-only file mappings (a library's constants:
/// glibc's carry "/dev/null"), libc's first: data for a call that needs no write to the target.
pub fn find_in_read_only(maps: &[Mapping], mem: &File, bytes: &[u8]) -> Option<u64> {
    find_in(
        maps,
        |m| m.readable && !m.writable && !m.executable && m.path.starts_with('/'),
        mem,
        bytes,
        1,
    )
}

/// The first aligned copy of `needle` in the file mappings `wanted` picks, libc's first.
fn find_in(
    maps: &[Mapping],
    wanted: impl Fn(&Mapping) -> bool,
    mem: &File,
    insn: &[u8],
    align: u64,
) -> Option<u64> {
    let is_libc = |m: &&Mapping| {
        let name = m.path.rsplit('/').next().unwrap_or("");
        name.starts_with("libc.so") || name.starts_with("libc-")
    };
    let exec = maps
        .iter()
        .filter(|m| wanted(m) && !m.path.starts_with('['));
    let ordered = exec
        .clone()
        .filter(is_libc)
        .chain(exec.filter(|m| !is_libc(m)));
    const CHUNK: u64 = 64 * 1024;
    for m in ordered {
        let mut at = m.start;
        while at < m.end {
            // Overlap chunks by one instruction so none is split.
            let len = CHUNK.min(m.end - at);
            let mut buf = vec![0u8; len as usize];
            if mem.read_exact_at(&mut buf, at).is_err() {
                break;
            }
            if let Some(i) = scan(&buf, insn, align).next() {
                return Some(at + i as u64);
            }
            if at + len >= m.end {
                break;
            }
            at += len - (insn.len() as u64 - 1).next_multiple_of(align).min(len);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let text = "7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]\n\
                    55d0e000-55d0f000 rw-p 00002000 08:01 1234   /usr/bin/a b\n\
                    7f00-8f00 ---p 00000000 00:00 0 \n";
        let m = parse_maps(text);
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0].start, m[0].end, m[0].executable),
            (0x7ffd1000, 0x7ffd3000, true)
        );
        assert_eq!(m[0].path, "[vdso]");
        assert!(m[1].writable && !m[1].executable);
        assert_eq!(m[1].path, "/usr/bin/a b");
        assert!(!m[2].readable && m[2].path.is_empty());
    }

    #[test]
    fn scans_aligned() {
        let bytes = [0u8, 0x0f, 0x05, 0, 0x0f, 0x05];
        assert_eq!(
            scan(&bytes, &[0x0f, 0x05], 1).collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert_eq!(scan(&bytes, &[0x0f, 0x05], 2).collect::<Vec<_>>(), vec![4]);
        assert_eq!(scan(&bytes[..2], &[0x0f, 0x05], 1).count(), 0);
    }

    /// Our own vDSO (the same the kernel maps into every process) has a syscall instruction.
    #[test]
    fn inject_gadget_in_own_vdso() {
        let me = std::process::id() as i32;
        let mem = File::open("/proc/self/mem").unwrap();
        let arch = crate::sys::linux::arch::SYSCALL_INSN;
        let found = find_in_vdso(me, &mem, arch, crate::sys::linux::arch::INSN_ALIGN).unwrap();
        assert!(!found.is_empty(), "no syscall instruction in the vDSO");
        let mut b = vec![0u8; arch.len()];
        mem.read_exact_at(&mut b, found[0]).unwrap();
        assert_eq!(b, arch);
        let maps = read_maps(me).unwrap();
        let vdso = maps.iter().find(|m| m.path == "[vdso]").unwrap();
        assert!(found.iter().all(|&a| vdso.contains(a) && vdso.executable));
        let libc = find_in_text(&maps, &mem, arch, crate::sys::linux::arch::INSN_ALIGN).unwrap();
        assert!(maps.iter().any(|m| m.executable && m.contains(libc)));
    }

    /// glibc's constants include "/dev/null": found in a read-only mapping, as the bytes.
    #[test]
    fn dev_null_path_in_own_read_only_memory() {
        let me = std::process::id() as i32;
        let mem = File::open("/proc/self/mem").unwrap();
        let maps = read_maps(me).unwrap();
        let at = find_in_read_only(&maps, &mem, b"/dev/null\0").expect("no /dev/null in libc");
        let mut b = [0u8; 10];
        mem.read_exact_at(&mut b, at).unwrap();
        assert_eq!(&b, b"/dev/null\0");
        assert!(maps.iter().any(|m| m.contains(at) && !m.writable));
    }
}
