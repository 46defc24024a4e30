//! Which sidfs clones are mounted where, read from /proc/self/mountinfo.
//!
//! A sidfs mount's source is `sidfs:` followed by its state directory (its type is `fuse` when
//! mounted directly by root, `fuse.sidfs` through fusermount3), so the mount table alone maps a
//! mountpoint back to its clone.
//!
//! The state directory travels in the FSName mount option, and mount options are split at
//! commas (fusermount3 would read `a,allow_other` as a second option), so the path is
//! percent-encoded: `%`, `,`, `\`, control characters and, in a path that is not UTF-8, every
//! byte above 0x7f become `%XX`. Both ways of mounting (mount(2) as root, fusermount3 otherwise)
//! then show the same source, which [`MountEntry::sidfs_state`] decodes.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The prefix of a sidfs mount's source field.
pub const SOURCE_PREFIX: &str = "sidfs:";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    /// The clone's state directory if this is a sidfs mount.
    pub fn sidfs_state(&self) -> Option<PathBuf> {
        if !self.fs_type.starts_with("fuse") {
            return None;
        }
        self.source.strip_prefix(SOURCE_PREFIX).map(decode_state)
    }
}

/// The FSName of a clone whose state is `state_dir`: [`SOURCE_PREFIX`] and the encoded path.
pub fn source_for(state_dir: &Path) -> String {
    let bytes = state_dir.as_os_str().as_bytes();
    let utf8 = std::str::from_utf8(bytes).is_ok();
    let mut out = String::from(SOURCE_PREFIX);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let special = matches!(b, b'%' | b',' | b'\\') || b < 0x20 || b == 0x7f;
        if special || (b >= 0x80 && !utf8) {
            out.push_str(&format!("%{b:02X}"));
            i += 1;
        } else if b < 0x80 {
            out.push(char::from(b));
            i += 1;
        } else {
            // A whole UTF-8 sequence, kept readable.
            let len = utf8_len(b);
            let end = i.saturating_add(len).min(bytes.len());
            out.push_str(std::str::from_utf8(&bytes[i..end]).unwrap_or("\u{fffd}"));
            i = end;
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        _ => 2,
    }
}

/// Undoes [`source_for`]'s encoding; a `%` not followed by two hex digits is itself (a mount
/// made by a release that did not encode).
fn decode_state(encoded: &str) -> PathBuf {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Undoes the octal escaping the kernel applies to spaces, tabs, newlines and backslashes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text: `id parent maj:min root mountpoint options [optional...] - type source super`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fs_type = r.next()?;
            let source = r.next().unwrap_or("");
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape(mountpoint)),
                fs_type: unescape(fs_type),
                source: unescape(source),
            })
        })
        .collect()
}

pub fn mounts() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// The mount whose mountpoint is `path` (the last one, if mounts are stacked).
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    let want = canonical_mountpoint(path);
    mounts()
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == want || m.mountpoint == path)
}

/// The absolute, resolved form of a mountpoint, also when it holds a dead FUSE mount (which
/// cannot be resolved itself: its parent is, and its name appended).
pub fn canonical_mountpoint(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(parent), path.file_name()) {
        (Ok(p), Some(name)) => p.join(name),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sidfs_entry_with_escaped_space() {
        let text = "36 35 98:0 / /mnt/clone\\0407 rw,nosuid - fuse sidfs:/var/state/sidfs/a\\040b rw,user_id=0\n\
                    40 35 0:5 / /proc rw shared:1 - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt/clone 7"));
        assert_eq!(
            m[0].sidfs_state(),
            Some(PathBuf::from("/var/state/sidfs/a b"))
        );
        assert_eq!(m[1].fs_type, "proc");
        assert_eq!(m[1].sidfs_state(), None);
    }

    /// Prove that a state path with commas, backslashes, percent signs and spaces survives
    /// encoding into the FSName and the kernel's octal escaping, and that the FSName holds no
    /// comma (which would split it into options such as `allow_other`).
    #[test]
    fn state_paths_with_commas_round_trip() {
        for path in [
            "/s/win10,v2-1a2b-seed1",
            "/s/x,allow_other",
            "/s/a\\b%41 c,%",
            "/s/caf\u{e9}",
            "/plain/state",
        ] {
            let source = source_for(Path::new(path));
            assert!(!source.contains(','), "{source}");
            let kernel = source.replace('\\', "\\134").replace(' ', "\\040");
            let line = format!("36 35 0:50 / /mnt/c rw - fuse.sidfs {kernel} rw,user_id=0\n");
            let m = parse_mountinfo(&line);
            assert_eq!(m[0].sidfs_state(), Some(PathBuf::from(path)), "{source}");
        }
        let raw = std::ffi::OsStr::from_bytes(b"/s/\xff,x");
        let source = source_for(Path::new(raw));
        assert_eq!(source, "sidfs:/s/%FF%2Cx");
        let entry = MountEntry {
            mountpoint: "/m".into(),
            fs_type: "fuse".into(),
            source,
        };
        assert_eq!(entry.sidfs_state(), Some(PathBuf::from(raw)));
    }
}
