//! A whole structure's stream on the disk: read through its extents into memory, and its changed
//! runs mapped back to disk edits (the structures of `super::structures`, `super::ese_structure`
//! and `super::wal_structure` are built on these).

use super::error::{Result, RewriteError};

/// The largest structure (hive, `$SDS`) transformed in memory; a hostile size field above it is
/// an error, not an allocation.
pub const STRUCTURE_LIMIT: u64 = 1 << 30;

/// Reads a stream's bytes from the master through its extents (holes read as zeros).
pub fn read_stream(
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
pub fn runs_to_disk(
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
pub fn edits_in_holes(runs: &[(usize, Vec<u8>)], extents: &[crate::image::Extent]) -> bool {
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
pub fn extent_ranges(extents: &[crate::image::Extent]) -> Vec<std::ops::Range<u64>> {
    let mut r: Vec<_> = extents
        .iter()
        .filter_map(|e| e.image_offset.map(|at| at.0..at.0 + e.len))
        .collect();
    r.sort_by_key(|x| x.start);
    r
}
