//! Which sidfs clones are mounted where, read from /proc/self/mountinfo.
//!
//! A sidfs mount's source is `sidfs:` followed by its state directory (its type is `fuse` when
//! mounted directly by root, `fuse.sidfs` through fusermount3), so the mount table alone maps a
//! mountpoint back to its clone.

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
        self.source.strip_prefix(SOURCE_PREFIX).map(PathBuf::from)
    }
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
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mounts()
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == want || m.mountpoint == path)
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
}
