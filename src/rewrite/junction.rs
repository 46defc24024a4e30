//! SIDs across fragment junctions: a file whose consecutive bytes lie in clusters far apart on
//! disk can hold a SID whose first bytes end one fragment and whose last bytes start the next.
//! A search over the disk's bytes sees neither half, so such SIDs are found here, once, when the
//! stage is built: every fragmented stream of every NTFS volume (one pass over the MFT by
//! `image::ntfs_volume::mft_scan`) has its junctions joined, and each SID that crosses one is
//! replaced in both fragments, as fixed edits of the disk bytes. They are a pure function of the
//! master and the SID mapping, like everything the stage serves.

use super::error::{Result, RewriteError};
use super::mapping::{SidMapping, SEARCH_CONTEXT};
use super::survey::NtfsPart;
pub use super::survey_cache::{JunctionScan, JunctionSid};
use crate::image::ntfs_volume::mft_scan::{self, StreamRuns};
use crate::image::ntfs_volume::record::{TYPE_DATA, TYPE_LOGGED_UTILITY_STREAM};
use crate::image::{ImageFile, ImageOffset};

/// Records 0-2 ($MFT, $MFTMirr, $LogFile) are not searched.
const LAST_SKIPPED_RECORD: u64 = 2;

/// What the junction pass found.
#[derive(Debug, Default)]
pub struct JunctionEdits {
    /// Disk offset and the clone's bytes there, sorted, non-overlapping.
    pub edits: Vec<(u64, Vec<u8>)>,
    pub streams: usize,
    pub junctions: usize,
    /// SID occurrences across a junction (each replaced in both fragments).
    pub replaced: usize,
    /// Fragmented streams stored compressed or encrypted: their SIDs are not visible on disk.
    pub not_plain: usize,
    /// Disk offset of the first byte of each SID occurrence across a junction.
    pub crossings: Vec<u64>,
}

/// Reads stream bytes `[from, to)` through its runs (holes read as zeros).
fn read_logical(
    image: &ImageFile,
    volume: ImageOffset,
    volume_len: u64,
    stream: &StreamRuns,
    cluster: u64,
    from: u64,
    to: u64,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; (to - from) as usize];
    let mut at = from;
    while at < to {
        let piece_end = ((at / cluster) + 1).saturating_mul(cluster).min(to);
        if let Some(p) = stream.partition_offset(at, cluster) {
            if p.saturating_add(piece_end - at) > volume_len {
                return Err(RewriteError::RunPastVolume {
                    record: stream.record,
                });
            }
            let dst = &mut out[(at - from) as usize..(piece_end - from) as usize];
            image
                .read_exact_at(ImageOffset(volume.0 + p), dst, "fragmented stream")
                .map_err(|e| RewriteError::image("fragmented stream", e))?;
        }
        at = piece_end;
    }
    Ok(out)
}

/// The edits for every SID across a fragment junction on the master's NTFS volumes.
pub fn junction_edits(
    image: &ImageFile,
    volumes: &[NtfsPart],
    map: &SidMapping,
) -> Result<JunctionEdits> {
    Ok(edits_from(&junction_scan(image, volumes, map)?, map))
}

/// Every SID of the old SID across a fragment junction on the master's NTFS volumes (one pass
/// over each MFT): what depends on the master and the old SID only, which the survey cache keeps.
pub fn junction_scan(
    image: &ImageFile,
    volumes: &[NtfsPart],
    map: &SidMapping,
) -> Result<JunctionScan> {
    let mut found = JunctionScan {
        old_sid: map.old().to_string(),
        ..JunctionScan::default()
    };
    for part in volumes {
        let facts = part.volume.facts().map_err(|e| {
            RewriteError::image(format!("NTFS partition {}", part.partition.index), e)
        })?;
        let cluster = u64::from(facts.cluster_size);
        let scan = mft_scan::scan(image, &facts, |ty| {
            ty == TYPE_DATA || ty == TYPE_LOGGED_UTILITY_STREAM
        })
        .map_err(|e| {
            RewriteError::image(
                format!(
                    "cannot read the MFT of partition {} to find fragmented files",
                    part.partition.index
                ),
                e,
            )
        })?;
        for stream in &scan.streams {
            // $MFT, $MFTMirr (multi-sector records, which never straddle a junction of
            // clusters at least as large as a record) and $LogFile (kept as in the master).
            if stream.record <= LAST_SKIPPED_RECORD {
                continue;
            }
            let junctions = stream.junctions(cluster);
            if junctions.is_empty() {
                continue;
            }
            if !stream.is_plain() {
                found.not_plain += 1;
                continue;
            }
            found.streams += 1;
            for j in junctions {
                found.junctions += 1;
                let lo = j.logical.saturating_sub(SEARCH_CONTEXT as u64);
                let hi = j
                    .logical
                    .saturating_add(SEARCH_CONTEXT as u64)
                    .min(stream.data_size);
                let joined = read_logical(image, facts.start, facts.len, stream, cluster, lo, hi)?;
                for occ in map.find_all(&joined, hi == stream.data_size) {
                    let (s, e) = (lo + occ.offset as u64, lo + (occ.offset + occ.len) as u64);
                    if !(s < j.logical && j.logical < e) {
                        continue;
                    }
                    found.sids.push(JunctionSid {
                        old: joined[occ.offset..occ.offset + occ.len].to_vec(),
                        at: (s..e)
                            .map(|l| {
                                stream
                                    .partition_offset(l, cluster)
                                    .map(|p| facts.start.0 + p)
                            })
                            .collect(),
                    });
                }
            }
        }
    }
    Ok(found)
}

/// The edits that replace each SID `scan` found (in both fragments).
pub fn edits_from(scan: &JunctionScan, map: &SidMapping) -> JunctionEdits {
    let mut found = JunctionEdits {
        streams: scan.streams,
        junctions: scan.junctions,
        not_plain: scan.not_plain,
        ..JunctionEdits::default()
    };
    let mut bytes: Vec<(u64, u8)> = Vec::new();
    for sid in &scan.sids {
        let whole = map
            .find_all(&sid.old, true)
            .into_iter()
            .find(|o| o.offset == 0 && o.len == sid.old.len());
        let Some(occ) = whole else {
            continue;
        };
        found.replaced += 1;
        if let Some(Some(first)) = sid.at.first() {
            found.crossings.push(*first);
        }
        let new = map.replacement(&sid.old, &occ);
        for (b, at) in new.iter().zip(&sid.at) {
            if let Some(p) = at {
                bytes.push((*p, *b));
            }
        }
    }
    bytes.sort_by_key(|(at, _)| *at);
    bytes.dedup_by_key(|(at, _)| *at);
    for (at, b) in bytes {
        match found.edits.last_mut() {
            Some((start, run)) if *start + run.len() as u64 == at => run.push(b),
            _ => found.edits.push((at, vec![b])),
        }
    }
    found
}
