//! One pass over every record of a volume's MFT, by our own record parser: the layout of every
//! fragmented non-resident stream, with its pieces in extension records joined through the base
//! record they point back to (which is what an `$ATTRIBUTE_LIST` lists). `$MFT`'s own `$DATA` is
//! followed the same way, also when record 0 has an attribute list.
//!
//! Used to find fragment junctions: places where a stream's consecutive bytes lie in clusters
//! that are not adjacent on disk, so that a byte search over the disk does not see a pattern
//! that crosses them.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use super::record::{
    is_file_record, AttributeValue, FileRecord, Run, ATTR_FLAG_COMPRESSED, ATTR_FLAG_ENCRYPTED,
    TYPE_ATTRIBUTE_LIST, TYPE_DATA,
};
use super::VolumeFacts;
use crate::image::error::{ImageError, Result};
use crate::image::reader::{ImageFile, ImageOffset};

/// MFT bytes read at once.
const READ_CHUNK: u64 = 1 << 20;
/// Largest MFT scanned (a volume with tens of millions of files).
const MAX_MFT_BYTES: u64 = 64 << 30;
/// Most pieces kept for one stream.
const MAX_PIECES: usize = 1 << 16;

/// A non-resident stream's runs, joined from all its pieces, on one volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRuns {
    /// The base record of the file.
    pub record: u64,
    pub ty: u32,
    pub name: String,
    /// Flags of the piece at VCN 0 (compressed, encrypted, sparse).
    pub flags: u16,
    pub data_size: u64,
    /// Sorted by VCN, contiguous in VCN.
    pub runs: Vec<Run>,
}

/// Where a stream's bytes jump: the byte at stream offset `logical` is the first of a run whose
/// clusters do not follow the previous run's on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Junction {
    pub logical: u64,
}

impl StreamRuns {
    /// Whether its bytes on disk are its content (not compressed or encrypted).
    pub fn is_plain(&self) -> bool {
        self.flags & (ATTR_FLAG_COMPRESSED | ATTR_FLAG_ENCRYPTED) == 0
    }

    /// The junctions inside `[0, data_size)` between two allocated runs that are not adjacent on
    /// disk (a hole on either side is not a junction: it reads as zeros).
    pub fn junctions(&self, cluster: u64) -> Vec<Junction> {
        let mut out = Vec::new();
        for pair in self.runs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (Some(la), Some(lb)) = (a.lcn, b.lcn) else {
                continue;
            };
            if la.checked_add(a.clusters) == Some(lb) {
                continue;
            }
            let Some(logical) = b.vcn.checked_mul(cluster) else {
                continue;
            };
            if logical < self.data_size {
                out.push(Junction { logical });
            }
        }
        out
    }

    /// The partition offset of stream byte `logical`, or `None` in a hole or past the runs.
    pub fn partition_offset(&self, logical: u64, cluster: u64) -> Option<u64> {
        let vcn = logical / cluster;
        let i = self.runs.partition_point(|r| r.vcn + r.clusters <= vcn);
        let r = self.runs.get(i)?;
        if vcn < r.vcn {
            return None;
        }
        let lcn = r.lcn?;
        (lcn + (vcn - r.vcn))
            .checked_mul(cluster)?
            .checked_add(logical % cluster)
    }
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct MftScan {
    pub records_in_use: u64,
    /// Streams of the wanted types with more than one run (the only ones with junctions).
    pub streams: Vec<StreamRuns>,
}

/// One piece of a stream as found in one record.
#[derive(Clone)]
pub(crate) struct Piece {
    pub(crate) lowest_vcn: u64,
    pub(crate) data_size: u64,
    pub(crate) flags: u16,
    pub(crate) runs: Vec<Run>,
}

pub(crate) type StreamKey = (u64, u32, String);

/// Reads the `record_size` bytes at `at` and parses them.
pub(crate) fn read_record(
    image: &ImageFile,
    at: ImageOffset,
    record_size: u64,
) -> Result<FileRecord> {
    let mut buf = image.read_vec(at, record_size, 1 << 16, "MFT record")?;
    FileRecord::parse(&mut buf, at)
}

/// Joins the pieces of one stream; an error if they do not cover it contiguously from VCN 0.
pub(crate) fn join(
    key: &StreamKey,
    mut pieces: Vec<Piece>,
    volume: ImageOffset,
) -> Result<StreamRuns> {
    pieces.sort_by_key(|p| p.lowest_vcn);
    let bad = |expected: String, found: String| {
        ImageError::invalid(volume, "attribute pieces", expected, found)
    };
    let Some(first) = pieces.first() else {
        return Err(bad(format!("pieces of record {}", key.0), "none".into()));
    };
    if first.lowest_vcn != 0 {
        return Err(bad(
            format!("a piece at VCN 0 of record {} type {:#x}", key.0, key.1),
            format!("the first at VCN {}", first.lowest_vcn),
        ));
    }
    let (data_size, flags) = (first.data_size, first.flags);
    let mut runs: Vec<Run> = Vec::new();
    let mut next = 0u64;
    for p in pieces {
        if p.lowest_vcn != next {
            return Err(bad(
                format!(
                    "a piece at VCN {next} of record {} type {:#x} {:?}",
                    key.0, key.1, key.2
                ),
                format!("a piece at VCN {}", p.lowest_vcn),
            ));
        }
        for r in p.runs {
            next = r.vcn + r.clusters;
            runs.push(r);
        }
    }
    Ok(StreamRuns {
        record: key.0,
        ty: key.1,
        name: key.2.clone(),
        flags,
        data_size,
        runs,
    })
}

/// The runs of `$MFT`'s own `$DATA`: the pieces in record 0, and, when record 0 has an attribute
/// list, the pieces in the extension records that point back to it (found within the part of
/// the MFT already known).
pub(crate) fn mft_runs(image: &ImageFile, facts: &VolumeFacts) -> Result<StreamRuns> {
    let record_size = u64::from(facts.file_record_size);
    let cluster = u64::from(facts.cluster_size);
    let volume = facts.start;
    let rec0 = read_record(image, facts.mft_offset, record_size)?;
    let mut own: Vec<Piece> = Vec::new();
    let mut has_list = false;
    for a in &rec0.attributes {
        has_list |= a.ty == TYPE_ATTRIBUTE_LIST;
        if let (
            TYPE_DATA,
            true,
            AttributeValue::NonResident {
                lowest_vcn,
                data_size,
                runs,
                ..
            },
        ) = (a.ty, a.name.is_empty(), &a.value)
        {
            own.push(Piece {
                lowest_vcn: *lowest_vcn,
                data_size: *data_size,
                flags: a.flags,
                runs: runs.clone(),
            });
        }
    }
    let key: StreamKey = (0, TYPE_DATA, String::new());
    let mut joined = join(&key, own.clone(), volume)?;
    if !has_list {
        return Ok(joined);
    }
    // Extension records of $MFT: the records record 0's attribute list names for its $DATA,
    // read in VCN order through the part of the MFT already known.
    let Some(list_attr) = rec0.attributes.iter().find(|a| a.ty == TYPE_ATTRIBUTE_LIST) else {
        return Ok(joined);
    };
    let list = match &list_attr.value {
        AttributeValue::Resident { offset, len } => {
            let mut rec0_bytes =
                image.read_vec(facts.mft_offset, record_size, 1 << 16, "MFT record")?;
            FileRecord::parse(&mut rec0_bytes, facts.mft_offset)?;
            let start = list_attr.at + offset;
            rec0_bytes
                .get(start..start + len)
                .ok_or_else(|| {
                    ImageError::invalid(
                        facts.mft_offset,
                        "$MFT attribute list",
                        "a value inside record 0".to_string(),
                        format!("{len} bytes at {start}"),
                    )
                })?
                .to_vec()
        }
        AttributeValue::NonResident {
            data_size, runs, ..
        } => super::attribute::read_runs(image, volume, cluster, runs, *data_size)?,
    };
    let mut all = own;
    let mut seen = vec![0u64];
    for (n, _) in super::attribute::listed_pieces(&list, TYPE_DATA, "", facts.mft_offset)? {
        if seen.contains(&n) {
            continue;
        }
        seen.push(n);
        let at = n
            .checked_mul(record_size)
            .and_then(|l| joined.partition_offset(l, cluster))
            .ok_or_else(|| {
                ImageError::invalid(
                    facts.mft_offset,
                    "$MFT extension record",
                    format!("record {n} inside the part of the MFT already known"),
                    "a record beyond it".to_string(),
                )
            })?;
        let rec = read_record(image, ImageOffset(volume.0 + at), record_size)?;
        if rec.base_record != Some(0) {
            return Err(ImageError::invalid(
                facts.mft_offset,
                "$MFT extension record",
                format!("record {n} pointing back to record 0"),
                format!("a record whose base is {:?}", rec.base_record),
            ));
        }
        for a in rec.attributes {
            if let (
                TYPE_DATA,
                true,
                AttributeValue::NonResident {
                    lowest_vcn, runs, ..
                },
            ) = (a.ty, a.name.is_empty(), a.value)
            {
                all.push(Piece {
                    lowest_vcn,
                    data_size: 0,
                    flags: a.flags,
                    runs,
                });
            }
        }
        joined = join(&key, all.clone(), volume)?;
    }
    Ok(joined)
}

/// Scans every record of the MFT; keeps the non-resident streams of the types `want` accepts
/// that have more than one run or pieces in several records.
pub fn scan(image: &ImageFile, facts: &VolumeFacts, want: impl Fn(u32) -> bool) -> Result<MftScan> {
    let record_size = u64::from(facts.file_record_size);
    let cluster = u64::from(facts.cluster_size);
    let volume = facts.start;
    if record_size < 512 || !record_size.is_multiple_of(512) || cluster == 0 {
        return Err(ImageError::invalid(
            volume,
            "MFT record size",
            "a multiple of 512".to_string(),
            format!("{record_size}"),
        ));
    }
    let mft = mft_runs(image, facts)?;
    if mft.data_size > MAX_MFT_BYTES {
        return Err(ImageError::TooLarge {
            what: "$MFT".into(),
            size: mft.data_size,
            limit: MAX_MFT_BYTES,
        });
    }
    let mut out = MftScan::default();
    let mut multi: HashMap<StreamKey, Vec<Piece>> = HashMap::new();
    for run in &mft.runs {
        let Some(lcn) = run.lcn else { continue };
        let start_logical = run.vcn * cluster;
        if start_logical >= mft.data_size {
            break;
        }
        let len = (run.clusters * cluster).min(mft.data_size - start_logical);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(READ_CHUNK) / record_size * record_size;
            if n == 0 {
                break;
            }
            let at = ImageOffset(volume.0 + lcn * cluster + done);
            let mut chunk = image.read_vec(at, n, READ_CHUNK, "MFT")?;
            for (i, rec) in chunk.chunks_exact_mut(record_size as usize).enumerate() {
                if !is_file_record(rec) {
                    continue;
                }
                let number = (start_logical + done) / record_size + i as u64;
                let rec_at = ImageOffset(at.0 + i as u64 * record_size);
                // A record not in use may be half-written garbage: only in-use ones must parse.
                let in_use = rec.get(0x16).is_some_and(|f| f & 1 != 0);
                let parsed = match FileRecord::parse(rec, rec_at) {
                    Ok(p) => p,
                    Err(_) if !in_use => continue,
                    Err(e) => return Err(e),
                };
                if !parsed.in_use {
                    continue;
                }
                out.records_in_use += 1;
                let base = parsed.base_record.unwrap_or(number);
                let listed = parsed.base_record.is_some()
                    || parsed
                        .attributes
                        .iter()
                        .any(|a| a.ty == TYPE_ATTRIBUTE_LIST);
                for a in parsed.attributes {
                    if !want(a.ty) {
                        continue;
                    }
                    let AttributeValue::NonResident {
                        lowest_vcn,
                        data_size,
                        runs,
                        ..
                    } = a.value
                    else {
                        continue;
                    };
                    let piece = Piece {
                        lowest_vcn,
                        data_size,
                        flags: a.flags,
                        runs,
                    };
                    let key = (base, a.ty, a.name);
                    if listed || lowest_vcn > 0 {
                        let v = multi.entry(key).or_default();
                        if v.len() >= MAX_PIECES {
                            return Err(ImageError::TooLarge {
                                what: format!("pieces of a stream of record {base}"),
                                size: v.len() as u64,
                                limit: MAX_PIECES as u64,
                            });
                        }
                        v.push(piece);
                    } else if piece.runs.len() > 1 {
                        out.streams.push(join(&key, vec![piece], volume)?);
                    }
                }
            }
            done += n;
        }
    }
    for (key, pieces) in multi {
        let s = join(&key, pieces, volume)?;
        if s.runs.len() > 1 {
            out.streams.push(s);
        }
    }
    out.streams
        .sort_by(|a, b| (a.record, a.ty, &a.name).cmp(&(b.record, b.ty, &b.name)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(runs: Vec<Run>, size: u64) -> StreamRuns {
        StreamRuns {
            record: 40,
            ty: TYPE_DATA,
            name: String::new(),
            flags: 0,
            data_size: size,
            runs,
        }
    }

    #[test]
    fn junctions_are_non_adjacent_allocated_runs_inside_the_data() {
        let s = stream(
            vec![
                Run {
                    vcn: 0,
                    lcn: Some(100),
                    clusters: 2,
                },
                Run {
                    vcn: 2,
                    lcn: Some(102),
                    clusters: 1,
                }, // adjacent: no junction
                Run {
                    vcn: 3,
                    lcn: Some(500),
                    clusters: 1,
                }, // junction at 3 clusters
                Run {
                    vcn: 4,
                    lcn: None,
                    clusters: 1,
                }, // hole: none
                Run {
                    vcn: 5,
                    lcn: Some(9),
                    clusters: 3,
                }, // after a hole: none
                Run {
                    vcn: 8,
                    lcn: Some(20),
                    clusters: 1,
                }, // past the data size: none
            ],
            8 * 4096 - 10,
        );
        assert_eq!(s.junctions(4096), vec![Junction { logical: 3 * 4096 }]);
        assert_eq!(s.partition_offset(3 * 4096 + 7, 4096), Some(500 * 4096 + 7));
        assert_eq!(s.partition_offset(4 * 4096, 4096), None);
        assert_eq!(s.partition_offset(100 * 4096, 4096), None);
    }

    #[test]
    fn pieces_join_in_vcn_order_or_fail() {
        let key = (7, TYPE_DATA, String::new());
        let piece = |vcn, lcn, n| Piece {
            lowest_vcn: vcn,
            data_size: if vcn == 0 { 9 * 4096 } else { 0 },
            flags: 0,
            runs: vec![Run {
                vcn,
                lcn: Some(lcn),
                clusters: n,
            }],
        };
        let j = join(
            &key,
            vec![piece(4, 900, 5), piece(0, 10, 4)],
            ImageOffset(0),
        )
        .unwrap();
        assert_eq!(j.runs.len(), 2);
        assert_eq!(j.data_size, 9 * 4096);
        assert_eq!(j.junctions(4096), vec![Junction { logical: 4 * 4096 }]);
        // A gap between pieces, or no piece at VCN 0, is an error.
        assert!(join(
            &key,
            vec![piece(0, 10, 4), piece(5, 900, 5)],
            ImageOffset(0)
        )
        .is_err());
        assert!(join(&key, vec![piece(4, 900, 5)], ImageOffset(0)).is_err());
    }
}
