//! One attribute-layout lookup: (record, type, name) → where the attribute's value lies, resident
//! (in which record, at which offset) or non-resident (extents joined from every piece), following
//! the base record's `$ATTRIBUTE_LIST` into extension records. Used for attributes the `ntfs`
//! crate does not locate for us (it follows lists for `$DATA` only, and not when the base record
//! holds the first piece).
//!
//! `$ATTRIBUTE_LIST` entry [flatcap.github.io/linux-ntfs "Attribute - $ATTRIBUTE_LIST";
//! ntfs-3g layout.h ATTR_LIST_ENTRY]: 0x00 type (u32), 0x04 entry length (u16), 0x06 name length
//! in UTF-16 units (u8), 0x07 name offset (u8), 0x08 lowest VCN (u64), 0x10 file reference of the
//! record holding the piece (u64: 48-bit number, 16-bit sequence), 0x18 attribute id (u16).
#![forbid(unsafe_code)]

use super::extent::Extent;
use super::mft_scan::{join, mft_runs, Piece, StreamRuns};
use super::record::{AttributeValue, FileRecord, TYPE_ATTRIBUTE_LIST};
use super::VolumeFacts;
use crate::image::error::{ImageError, Result};
use crate::image::reader::{ImageFile, ImageOffset};

const ENTRY_TYPE: usize = 0x00;
const ENTRY_LENGTH: usize = 0x04;
const ENTRY_NAME_LENGTH: usize = 0x06;
const ENTRY_NAME_OFFSET: usize = 0x07;
const ENTRY_VCN: usize = 0x08;
const ENTRY_REFERENCE: usize = 0x10;
/// The smallest entry (up to the attribute id).
const ENTRY_MIN: usize = 0x1A;
/// Largest attribute list read (a file with thousands of pieces stays far below).
const MAX_LIST_BYTES: u64 = 1 << 22;
/// Most distinct records one attribute's pieces are looked for in.
const MAX_PIECE_RECORDS: usize = 1 << 14;

/// Where an attribute's value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeLayout {
    /// Inside an MFT record (maybe an extension record): `len` bytes at `value_offset` into the
    /// `record_size`-byte record at `record_offset` (fixups undone).
    Resident {
        record: u64,
        record_offset: ImageOffset,
        record_size: u32,
        value_offset: u32,
        len: u32,
    },
    /// Clusters outside the MFT, every piece joined, clipped to the data size.
    NonResident {
        data_size: u64,
        initialized_size: u64,
        flags: u16,
        extents: Vec<Extent>,
    },
}

/// The MFT of one volume: where each record lies.
#[derive(Debug)]
pub struct MftMap {
    runs: StreamRuns,
    cluster: u64,
    volume: ImageOffset,
    volume_len: u64,
    record_size: u64,
}

impl MftMap {
    pub fn open(image: &ImageFile, facts: &VolumeFacts) -> Result<MftMap> {
        Ok(MftMap {
            runs: mft_runs(image, facts)?,
            cluster: u64::from(facts.cluster_size),
            volume: facts.start,
            volume_len: facts.len,
            record_size: u64::from(facts.file_record_size),
        })
    }

    /// Image offset of record `n`; an error if the MFT does not hold it contiguously.
    pub fn record_offset(&self, n: u64) -> Result<ImageOffset> {
        let logical = n.checked_mul(self.record_size).filter(|l| {
            l.checked_add(self.record_size)
                .is_some_and(|e| e <= self.runs.data_size)
        });
        let first = logical.and_then(|l| self.runs.partition_offset(l, self.cluster));
        let last = logical.and_then(|l| {
            self.runs
                .partition_offset(l + self.record_size - 1, self.cluster)
        });
        match (first, last) {
            (Some(a), Some(b)) if b == a + self.record_size - 1 => {
                Ok(ImageOffset(self.volume.0 + a))
            }
            _ => Err(ImageError::invalid(
                self.volume,
                "MFT record location",
                format!("record {n} stored contiguously inside the MFT"),
                "outside the MFT, in a hole or split across runs".to_string(),
            )),
        }
    }

    /// Reads and parses record `n`; returns its bytes (fixups undone) too.
    pub fn read(&self, image: &ImageFile, n: u64) -> Result<(Vec<u8>, FileRecord)> {
        let at = self.record_offset(n)?;
        let mut buf = image.read_vec(at, self.record_size, 1 << 16, "MFT record")?;
        let rec = FileRecord::parse(&mut buf, at)?;
        Ok((buf, rec))
    }

    pub fn record_size(&self) -> u32 {
        self.record_size as u32
    }

    pub fn cluster(&self) -> u64 {
        self.cluster
    }

    /// Size of the MFT's `$DATA` in bytes.
    pub fn data_size(&self) -> u64 {
        self.runs.data_size
    }

    /// Partition offset of byte `logical` of the MFT (`None` in a hole or past the runs).
    pub fn partition_offset(&self, logical: u64) -> Option<u64> {
        self.runs.partition_offset(logical, self.cluster)
    }

    fn extents(&self, runs: &[super::record::Run], size: u64) -> Vec<Extent> {
        let mut out = Vec::new();
        for r in runs {
            let logical = r.vcn.saturating_mul(self.cluster);
            if logical >= size {
                break;
            }
            let len = r.clusters.saturating_mul(self.cluster).min(size - logical);
            out.push(Extent {
                logical_offset: logical,
                len,
                image_offset: r
                    .lcn
                    .and_then(|l| l.checked_mul(self.cluster))
                    .map(|p| ImageOffset(self.volume.0 + p)),
            });
        }
        out
    }

    /// Reads a non-resident value through its runs (holes read as zeros).
    fn read_runs(
        &self,
        image: &ImageFile,
        runs: &[super::record::Run],
        size: u64,
    ) -> Result<Vec<u8>> {
        read_runs(image, self.volume, self.cluster, runs, size)
    }
}

/// Reads a non-resident attribute list (or any small value) through its runs; holes read as
/// zeros; at most [`MAX_LIST_BYTES`].
pub(crate) fn read_runs(
    image: &ImageFile,
    volume: ImageOffset,
    cluster: u64,
    runs: &[super::record::Run],
    size: u64,
) -> Result<Vec<u8>> {
    if size > MAX_LIST_BYTES {
        return Err(ImageError::TooLarge {
            what: "attribute list".into(),
            size,
            limit: MAX_LIST_BYTES,
        });
    }
    let mut out = vec![0u8; size as usize];
    for r in runs {
        let logical = r.vcn.saturating_mul(cluster);
        if logical >= size {
            break;
        }
        let len = r.clusters.saturating_mul(cluster).min(size - logical);
        if let Some(p) = r.lcn.and_then(|l| l.checked_mul(cluster)) {
            let s = logical as usize;
            image.read_exact_at(
                ImageOffset(volume.0 + p),
                &mut out[s..s + len as usize],
                "attribute list",
            )?;
        }
    }
    Ok(out)
}

/// The records that hold pieces of (`ty`, `name`), from an attribute list's bytes, once each.
fn listed_records(list: &[u8], ty: u32, name: &str, at: ImageOffset) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for (record, _) in listed_pieces(list, ty, name, at)? {
        if !out.contains(&record) {
            out.push(record);
        }
    }
    Ok(out)
}

/// The pieces of (`ty`, `name`) an attribute list names: (record, lowest VCN), in VCN order.
/// Names compare case-insensitively (ASCII), as NTFS compares stream names.
pub(crate) fn listed_pieces(
    list: &[u8],
    ty: u32,
    name: &str,
    at: ImageOffset,
) -> Result<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut p = 0usize;
    while p + ENTRY_MIN <= list.len() {
        let e = &list[p..];
        let len = u16::from_le_bytes([e[ENTRY_LENGTH], e[ENTRY_LENGTH + 1]]) as usize;
        if len < ENTRY_MIN || p + len > list.len() {
            return Err(ImageError::invalid(
                at,
                "attribute list entry",
                format!("an entry of at least {ENTRY_MIN} bytes inside the list"),
                format!("length {len} at {p}"),
            ));
        }
        let entry_ty = u32::from_le_bytes(e[ENTRY_TYPE..ENTRY_TYPE + 4].try_into().unwrap());
        let name_len = e[ENTRY_NAME_LENGTH] as usize;
        let name_off = e[ENTRY_NAME_OFFSET] as usize;
        let Some(raw) = e[..len].get(name_off..name_off + 2 * name_len) else {
            return Err(ImageError::invalid(
                at,
                "attribute list entry name",
                "a name inside the entry".to_string(),
                format!("{name_len} characters at {name_off}"),
            ));
        };
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        if entry_ty == ty && String::from_utf16_lossy(&units).eq_ignore_ascii_case(name) {
            let reference =
                u64::from_le_bytes(e[ENTRY_REFERENCE..ENTRY_REFERENCE + 8].try_into().unwrap());
            let vcn = u64::from_le_bytes(e[ENTRY_VCN..ENTRY_VCN + 8].try_into().unwrap());
            if out.len() >= MAX_PIECE_RECORDS {
                return Err(ImageError::TooLarge {
                    what: "pieces of one attribute".into(),
                    size: out.len() as u64,
                    limit: MAX_PIECE_RECORDS as u64,
                });
            }
            out.push((reference & 0x0000_FFFF_FFFF_FFFF, vcn));
        }
        p += len;
    }
    out.sort_by_key(|(_, vcn)| *vcn);
    Ok(out)
}

/// The layout of attribute (`ty`, `name`) of the file whose base record is `record`, wherever its
/// pieces are; `None` if the file has no such attribute. Names compare case-insensitively
/// (ASCII), as NTFS compares stream names.
pub fn attribute_layout(
    image: &ImageFile,
    mft: &MftMap,
    record: u64,
    ty: u32,
    name: &str,
) -> Result<Option<AttributeLayout>> {
    let (base_bytes, base) = mft.read(image, record)?;
    let base_at = mft.record_offset(record)?;
    // The records to look in: the base record, plus those its attribute list names.
    let mut records = vec![record];
    if let Some(list) = base.attributes.iter().find(|a| a.ty == TYPE_ATTRIBUTE_LIST) {
        let bytes = match &list.value {
            AttributeValue::Resident { offset, len } => {
                let s = list.at + offset;
                base_bytes[s..s + len].to_vec()
            }
            AttributeValue::NonResident {
                data_size, runs, ..
            } => mft.read_runs(image, runs, *data_size)?,
        };
        for r in listed_records(&bytes, ty, name, base_at)? {
            if !records.contains(&r) {
                records.push(r);
            }
        }
    }
    let mut pieces = Vec::new();
    let mut head: Option<(u64, u16)> = None;
    for r in records {
        let (bytes, rec) = if r == record {
            (base_bytes.clone(), base.clone())
        } else {
            mft.read(image, r)?
        };
        if r != record && rec.base_record != Some(record) {
            return Err(ImageError::invalid(
                base_at,
                "attribute list",
                format!("extension record {r} pointing back to record {record}"),
                format!("a record whose base is {:?}", rec.base_record),
            ));
        }
        for a in rec.attributes {
            if a.ty != ty || !a.name.eq_ignore_ascii_case(name) {
                continue;
            }
            match a.value {
                AttributeValue::Resident { offset, len } => {
                    let _ = &bytes;
                    return Ok(Some(AttributeLayout::Resident {
                        record: r,
                        record_offset: mft.record_offset(r)?,
                        record_size: mft.record_size(),
                        value_offset: (a.at + offset) as u32,
                        len: len as u32,
                    }));
                }
                AttributeValue::NonResident {
                    lowest_vcn,
                    data_size,
                    initialized_size,
                    runs,
                } => {
                    if lowest_vcn == 0 {
                        head = Some((initialized_size, a.flags));
                    }
                    pieces.push(Piece {
                        lowest_vcn,
                        data_size,
                        flags: a.flags,
                        runs,
                    });
                }
            }
        }
    }
    if pieces.is_empty() {
        return Ok(None);
    }
    let joined = join(&(record, ty, name.to_string()), pieces, base_at)?;
    let covered = joined
        .runs
        .last()
        .map_or(0, |r| (r.vcn + r.clusters).saturating_mul(mft.cluster));
    if covered < joined.data_size {
        return Err(ImageError::invalid(
            base_at,
            "attribute runs",
            format!(
                "runs covering the data size {} of record {record}",
                joined.data_size
            ),
            format!("runs covering {covered} bytes"),
        ));
    }
    let (initialized_size, flags) = head.unwrap_or((0, 0));
    let extents = mft.extents(&joined.runs, joined.data_size);
    let volume_end = mft.volume.0.saturating_add(mft.volume_len);
    if let Some(e) = extents.iter().find(|e| {
        e.image_offset
            .is_some_and(|at| at.0.saturating_add(e.len) > volume_end)
    }) {
        return Err(ImageError::invalid(
            base_at,
            "data run",
            format!("clusters inside the volume (ending at image offset {volume_end:#x})"),
            format!("{} bytes at {:?}", e.len, e.image_offset),
        ));
    }
    Ok(Some(AttributeLayout::NonResident {
        data_size: joined.data_size,
        initialized_size,
        flags,
        extents,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ty: u32, name: &str, vcn: u64, record: u64) -> Vec<u8> {
        let units: Vec<u8> = name.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let len = (ENTRY_MIN + units.len()).next_multiple_of(8);
        let mut e = vec![0u8; len];
        e[0..4].copy_from_slice(&ty.to_le_bytes());
        e[4..6].copy_from_slice(&(len as u16).to_le_bytes());
        e[6] = name.encode_utf16().count() as u8;
        e[7] = ENTRY_MIN as u8;
        e[8..16].copy_from_slice(&vcn.to_le_bytes());
        e[16..24].copy_from_slice(&(record | 1 << 48).to_le_bytes());
        e[ENTRY_MIN..ENTRY_MIN + units.len()].copy_from_slice(&units);
        e
    }

    #[test]
    fn list_entries_name_the_records_of_each_attribute() {
        let mut list = entry(0x10, "", 0, 9);
        list.extend(entry(0x90, "$SII", 0, 4641));
        list.extend(entry(0x90, "$SDH", 0, 5911));
        list.extend(entry(0x80, "$SDS", 0, 9));
        list.extend(entry(0x80, "$SDS", 154, 3522));
        let at = ImageOffset(0);
        assert_eq!(listed_records(&list, 0x90, "$SII", at).unwrap(), vec![4641]);
        assert_eq!(
            listed_records(&list, 0x80, "$SDS", at).unwrap(),
            vec![9, 3522]
        );
        assert_eq!(
            listed_records(&list, 0x80, "$sds", at).unwrap(),
            vec![9, 3522]
        );
        assert!(listed_records(&list, 0x80, "", at).unwrap().is_empty());
        assert_eq!(
            listed_pieces(&list, 0x80, "$SDS", at).unwrap(),
            vec![(9, 0), (3522, 154)]
        );
        // A length that runs past the list, or below the minimum, is an error.
        let mut bad = list.clone();
        bad[4] = 0xF0;
        assert!(listed_records(&bad, 0x90, "$SII", at).is_err());
        let mut bad = list;
        bad[4] = 4;
        bad[5] = 0;
        assert!(listed_records(&bad, 0x90, "$SII", at).is_err());
    }
}
