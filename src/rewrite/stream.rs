//! A whole structure's stream on the disk: read through its extents into memory, and its changed
//! runs mapped back to disk edits ([`FileStream`]; the structures of `super::structures`,
//! `super::ese_structure`, `super::wal_structure` and `super::wmi_structure` are built on it).

use super::error::{Result, RewriteError};
use super::stage::{diff_runs, Structure, StructureOutput};
use super::SidMapping;

/// The largest structure (hive, `$SDS`) transformed in memory; a hostile size field above it is
/// an error, not an allocation.
pub const STRUCTURE_LIMIT: u64 = 1 << 30;

/// Reads a stream's bytes from the master through its extents (holes read as zeros).
fn read_stream(
    master: &crate::overlay::MasterImage,
    extents: &[crate::image::Extent],
    size: u64,
) -> Result<Vec<u8>> {
    let too_large = RewriteError::TooLarge {
        size,
        limit: STRUCTURE_LIMIT,
    };
    if size > STRUCTURE_LIMIT {
        return Err(too_large);
    }
    let len = usize::try_from(size).map_err(|_| too_large)?;
    let mut out = vec![0u8; len];
    for e in extents {
        let (Some(at), Ok(start)) = (e.image_offset, usize::try_from(e.logical_offset)) else {
            continue;
        };
        let end = (start as u64 + e.len).min(size) as usize;
        if start >= end {
            continue;
        }
        master.read_at(at.0, &mut out[start..end])?;
    }
    Ok(out)
}

/// Maps changed runs of a stream (stream offset, new bytes) to disk edits through its extents.
fn runs_to_disk(
    runs: Vec<(usize, Vec<u8>)>,
    extents: &[crate::image::Extent],
) -> Vec<(u64, Vec<u8>)> {
    let mut edits = Vec::new();
    for (start, bytes) in runs {
        let mut pos = start as u64;
        let end = pos + bytes.len() as u64;
        while pos < end {
            let Some(e) = extents
                .iter()
                .find(|e| pos >= e.logical_offset && pos < e.logical_offset + e.len)
            else {
                pos += 1;
                continue;
            };
            let piece_end = end.min(e.logical_offset + e.len);
            if let Some(at) = e.image_offset {
                let from = (pos - start as u64) as usize;
                let to = (piece_end - start as u64) as usize;
                edits.push((at.0 + (pos - e.logical_offset), bytes[from..to].to_vec()));
            }
            pos = piece_end;
        }
    }
    edits.sort_by_key(|(o, _)| *o);
    edits
}

/// Whether any changed run (stream offset, bytes) falls, even partly, where the stream has no
/// clusters (a sparse hole), where `runs_to_disk` could not store it.
fn edits_in_holes(runs: &[(usize, Vec<u8>)], extents: &[crate::image::Extent]) -> bool {
    runs.iter().any(|(start, bytes)| {
        let (s, e) = (*start as u64, *start as u64 + bytes.len() as u64);
        let mut covered = 0u64;
        for x in extents.iter().filter(|x| x.image_offset.is_some()) {
            let (a, b) = (x.logical_offset.max(s), (x.logical_offset + x.len).min(e));
            covered += b.saturating_sub(a);
        }
        covered < e - s
    })
}

/// Disk ranges covered by a stream's extents.
fn extent_ranges(extents: &[crate::image::Extent]) -> Vec<std::ops::Range<u64>> {
    let mut r: Vec<_> = extents
        .iter()
        .filter_map(|e| e.image_offset.map(|at| at.0..at.0 + e.len))
        .collect();
    r.sort_by_key(|x| x.start);
    r
}

/// One plain stream of a whole structure (its extents and size): what every structure of one
/// file or more does with it, read it whole from the master and turn its changed bytes into
/// disk edits, in one place.
pub struct FileStream {
    extents: Vec<crate::image::Extent>,
    size: u64,
}

impl FileStream {
    /// A stream by its extents and size, as they are (a resident one has no extents).
    pub fn new(layout: &crate::image::StreamLayout) -> Self {
        Self::from_extents(layout.extents(), layout.size)
    }

    /// A stream of `size` bytes stored in `extents`.
    pub fn from_extents(extents: &[crate::image::Extent], size: u64) -> Self {
        FileStream {
            extents: extents.to_vec(),
            size,
        }
    }

    /// `None` for a stream that cannot be patched byte for byte (resident, compressed or
    /// encrypted).
    pub fn plain(layout: &crate::image::StreamLayout) -> Option<Self> {
        if !layout.is_plain() || layout.extents().is_empty() {
            return None;
        }
        Some(Self::new(layout))
    }

    /// Whether the stream has no clusters (resident or empty).
    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Disk ranges the stream covers.
    pub fn owned(&self) -> Vec<std::ops::Range<u64>> {
        extent_ranges(&self.extents)
    }

    /// The stream's bytes in the master.
    pub fn read(&self, master: &crate::overlay::MasterImage) -> Result<Vec<u8>> {
        read_stream(master, &self.extents, self.size)
    }

    /// The disk edits that turn `old` (the stream as read) into `new`; a change where the stream
    /// has no clusters is dropped.
    pub fn edits(&self, old: &[u8], new: &[u8]) -> Vec<(u64, Vec<u8>)> {
        runs_to_disk(diff_runs(old, new), &self.extents)
    }

    /// Like [`FileStream::edits`], but a change in a sparse hole is an error naming `stream`.
    pub fn edits_checked(
        &self,
        stream: &'static str,
        old: &[u8],
        new: &[u8],
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let runs = diff_runs(old, new);
        if edits_in_holes(&runs, &self.extents) {
            return Err(RewriteError::InHole { stream });
        }
        Ok(runs_to_disk(runs, &self.extents))
    }
}

/// A file's bytes in the clone and the summary line of their rewrite.
pub type Rewritten = (Vec<u8>, String);

/// A whole structure of one plain file: only what is its own (its name, its stream, its pure
/// rewrite with the summary line); its [`Structure`] follows from them.
pub trait FileStructure: Send + Sync {
    fn name(&self) -> String;
    fn stream(&self) -> &FileStream;
    /// The clone's bytes of the whole file (the master's are `original`) and the summary line.
    fn rewrite(&self, original: &[u8], map: &SidMapping) -> Result<Rewritten>;
}

impl<T: FileStructure> Structure for T {
    fn name(&self) -> String {
        FileStructure::name(self)
    }

    fn owned(&self) -> Vec<std::ops::Range<u64>> {
        self.stream().owned()
    }

    fn transform(
        &self,
        master: &crate::overlay::MasterImage,
        map: &SidMapping,
    ) -> Result<StructureOutput> {
        let original = self.stream().read(master)?;
        let (bytes, summary) = self.rewrite(&original, map)?;
        Ok(StructureOutput {
            owned_edits: self.stream().edits(&original, &bytes),
            record_edits: Vec::new(),
            summary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Extent, ImageOffset};

    /// A stream of 8 bytes: 4 at disk offset 0x1000, then a 4-byte sparse hole.
    fn sparse() -> FileStream {
        let extents = [
            Extent {
                logical_offset: 0,
                len: 4,
                image_offset: Some(ImageOffset(0x1000)),
            },
            Extent {
                logical_offset: 4,
                len: 4,
                image_offset: None,
            },
        ];
        FileStream::from_extents(&extents, 8)
    }

    /// A change in the clusters maps to a disk edit; one in the hole is dropped by `edits` and
    /// refused by `edits_checked`, which names the stream.
    #[test]
    fn edits_in_clusters_and_holes() {
        let s = sparse();
        assert_eq!(s.owned(), vec![0x1000..0x1004]);
        let old = [0u8; 8];
        let mut new = old;
        new[1] = 7;
        assert_eq!(s.edits(&old, &new), vec![(0x1001, vec![7])]);
        assert_eq!(
            s.edits_checked("X", &old, &new).unwrap(),
            vec![(0x1001, vec![7])]
        );
        // One run now (changes closer than 8 bytes merge): its part in the clusters is kept.
        new[6] = 9;
        assert_eq!(s.edits(&old, &new), vec![(0x1001, vec![7, 0, 0])]);
        assert!(matches!(
            s.edits_checked("X", &old, &new),
            Err(RewriteError::InHole { stream: "X" })
        ));
    }
}
