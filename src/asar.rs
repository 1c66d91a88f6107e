//! Reading one file out of an Electron app's `app.asar` without running anything: how a bug
//! report names the node-pty an app ships (`node_modules/node-pty/package.json`).
//!
//! The format (electron/asar): a Chromium pickle holding one u32, the header's size; then the
//! header, a pickle holding a string, the JSON index of every file (`{"files": {name: entry}}`,
//! an entry a directory with `files`, or a file with `size`, `offset` — a decimal string,
//! relative to the end of the header — and `unpacked` when it lives beside the archive in
//! `app.asar.unpacked/`). All little-endian u32s:
//!
//! ```text
//! 0: 4 (the first pickle's payload size)   4: H (the header pickle's size)
//! 8: H - 4 (its payload size)             12: L (the JSON's length)   16: the JSON   8 + H: data
//! ```
//! The archive is someone else's file, read as root: every size and offset is checked against
//! the file before anything is read, the header is bounded, and nothing here can panic.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// More header than any real app's (VS Code's is a few MiB).
const MAX_HEADER: u64 = 64 << 20;
/// More than any package.json.
const MAX_FILE: u64 = 1 << 20;

/// Where a file of the archive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// At this offset of the archive, this many bytes.
    Packed { offset: u64, size: u64 },
    /// In `app.asar.unpacked/`, beside the archive.
    Unpacked,
}

/// The JSON index and where the data begins, from the archive's first bytes.
pub fn parse_header(prefix: &[u8], file_len: u64) -> Result<(serde_json::Value, u64), String> {
    let word = |at: usize| -> Result<u64, String> {
        prefix
            .get(at..at + 4)
            .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .ok_or_else(|| "too short for an asar header".to_string())
    };
    if word(0)? != 4 {
        return Err("not an asar archive (bad first pickle)".into());
    }
    let header = word(4)?;
    if header > MAX_HEADER || 8 + header > file_len {
        return Err(format!("header of {header} bytes does not fit the file"));
    }
    let json_len = word(12)?;
    if json_len + 8 > header {
        return Err("header string longer than the header".into());
    }
    let json = prefix
        .get(16..16 + json_len as usize)
        .ok_or_else(|| "header cut short".to_string())?;
    let index: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("header is not JSON: {e}"))?;
    Ok((index, 8 + header))
}

/// Where `inner` (a path like `node_modules/node-pty/package.json`) is in the index.
pub fn locate(index: &serde_json::Value, inner: &str) -> Option<Location> {
    let mut node = index;
    for part in inner.split('/').filter(|p| !p.is_empty()) {
        node = node.get("files")?.get(part)?;
    }
    if node.get("unpacked").and_then(|u| u.as_bool()) == Some(true) {
        return Some(Location::Unpacked);
    }
    let size = node.get("size")?.as_u64()?;
    let offset = match node.get("offset")? {
        serde_json::Value::String(s) => s.parse().ok()?,
        v => v.as_u64()?,
    };
    Some(Location::Packed { offset, size })
}

/// The bytes of `inner` in the archive at `archive` (or its `.unpacked` directory).
pub fn read_file(archive: &Path, inner: &str) -> Result<Vec<u8>, String> {
    let mut f = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut first = [0u8; 16];
    f.read_exact(&mut first)
        .map_err(|_| "too short for an asar header".to_string())?;
    let header = u64::from(u32::from_le_bytes([first[4], first[5], first[6], first[7]]));
    if header > MAX_HEADER || 8 + header > len {
        return Err(format!("header of {header} bytes does not fit the file"));
    }
    let mut prefix = vec![0u8; 8 + header as usize];
    f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    f.read_exact(&mut prefix).map_err(|e| e.to_string())?;
    let (index, data) = parse_header(&prefix, len)?;
    match locate(&index, inner).ok_or_else(|| format!("{inner} is not in the archive"))? {
        Location::Unpacked => {
            let mut unpacked = PathBuf::from(format!("{}.unpacked", archive.display()));
            unpacked.push(inner);
            read_small(&unpacked)
        }
        Location::Packed { offset, size } => {
            let start = data
                .checked_add(offset)
                .filter(|s| s.checked_add(size).is_some_and(|end| end <= len))
                .ok_or_else(|| format!("{inner} lies outside the archive"))?;
            if size > MAX_FILE {
                return Err(format!("{inner}: {size} bytes is too large"));
            }
            let mut bytes = vec![0u8; size as usize];
            f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
            f.read_exact(&mut bytes).map_err(|e| e.to_string())?;
            Ok(bytes)
        }
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// An archive of `files` (path, bytes), as electron/asar writes one: for tests and fuzzing.
pub fn build(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut index = serde_json::json!({"files": {}});
    let mut data = Vec::new();
    for (path, bytes) in files {
        let mut node = &mut index;
        let parts: Vec<&str> = path.split('/').collect();
        for dir in &parts[..parts.len() - 1] {
            node = &mut node["files"][*dir];
            if node.get("files").is_none() {
                node["files"] = serde_json::json!({});
            }
        }
        node["files"][parts[parts.len() - 1]] =
            serde_json::json!({"size": bytes.len(), "offset": data.len().to_string()});
        data.extend_from_slice(bytes);
    }
    let mut out = with_header(index.to_string().as_bytes());
    out.extend_from_slice(&data);
    out
}

/// The two pickles that begin an archive, around `json` (whatever it says), padded to 4 bytes.
pub fn with_header(json: &[u8]) -> Vec<u8> {
    let header = 8 + json.len().next_multiple_of(4) as u32; // payload size + string length + string
    let mut out = Vec::new();
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&header.to_le_bytes());
    out.extend_from_slice(&(header - 4).to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    out.resize(8 + header as usize, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(bytes: &[u8]) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("app.asar");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let n = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                let p =
                    std::env::temp_dir().join(format!("ptyreap-asar-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn asar_reads_a_file_out_of_an_archive() {
        let pkg = br#"{"name":"node-pty","version":"1.1.0"}"#;
        let archive = build(&[
            ("package.json", br#"{"name":"app","version":"3.2.1"}"#),
            ("node_modules/node-pty/package.json", pkg),
        ]);
        let (_dir, path) = write(&archive);
        assert_eq!(
            read_file(&path, "node_modules/node-pty/package.json").unwrap(),
            pkg
        );
        assert!(read_file(&path, "node_modules/other/package.json").is_err());
    }

    #[test]
    fn asar_unpacked_files_are_read_beside_the_archive() {
        let archive = build(&[("x", b"x")]);
        // mark a file unpacked by hand, the way electron/asar does
        let (index, _) = parse_header(&archive, archive.len() as u64).unwrap();
        let mut index = index;
        index["files"]["node_modules"] = serde_json::json!({"files": {"node-pty": {"files": {
            "package.json": {"size": 9, "unpacked": true}}}}});
        let archive = with_header(index.to_string().as_bytes());
        let (dir, path) = write(&archive);
        let beside = dir.0.join("app.asar.unpacked/node_modules/node-pty");
        std::fs::create_dir_all(&beside).unwrap();
        std::fs::write(beside.join("package.json"), br#"{"v":"1"}"#).unwrap();
        assert_eq!(
            read_file(&path, "node_modules/node-pty/package.json").unwrap(),
            br#"{"v":"1"}"#
        );
    }

    #[test]
    fn asar_hostile_archives_are_refused_without_reading_outside() {
        let good = build(&[("a/b.json", b"{}")]);
        // truncated anywhere: an error, never a panic
        for cut in 0..good.len() {
            let (_d, p) = write(&good[..cut]);
            let _ = read_file(&p, "a/b.json");
        }
        // a header size past the end
        let mut big = good.clone();
        big[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let (_d, p) = write(&big);
        assert!(read_file(&p, "a/b.json")
            .unwrap_err()
            .contains("does not fit"));
        // an entry pointing outside the file, and huge numbers
        for entry in [
            r#"{"size": 5, "offset": "999999"}"#,
            r#"{"size": 18446744073709551615, "offset": "1"}"#,
            r#"{"size": 1, "offset": "18446744073709551615"}"#,
            r#"{"size": -1, "offset": "x"}"#,
        ] {
            let a = with_header(format!(r#"{{"files": {{"f": {entry}}}}}"#).as_bytes());
            let (_d, p) = write(&a);
            assert!(read_file(&p, "f").is_err(), "{entry}");
        }
        // deep nesting: serde_json's recursion limit, an error
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let a = with_header(deep.as_bytes());
        assert!(parse_header(&a, a.len() as u64).is_err());
    }
}
