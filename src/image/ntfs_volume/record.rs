//! MFT FILE records read by our own code: the record header, its attributes, and the mapping
//! pairs (data runs) of non-resident attributes. Used where the `ntfs` crate does not serve: a
//! pass over every record of the MFT (the crate assumes `$MFT` has no attribute list, and opens
//! files one at a time through path lookups).
//!
//! Layouts [ntfs-3g include/ntfs-3g/layout.h MFT_RECORD, ATTR_RECORD; libntfs-3g/runlist.c
//! `ntfs_mapping_pairs_decompress`; flatcap.github.io/linux-ntfs "Attribute - $ATTRIBUTE_LIST"]:
//! every offset below is checked against the record, so a hostile record is an error, never a
//! panic or an unbounded allocation.
#![forbid(unsafe_code)]

use super::fixup::apply_fixups;
use crate::image::error::{ImageError, Result};
use crate::image::reader::ImageOffset;
use crate::le::{u16_at, u32_at, u64_at};

/// Record header fields (offsets into the record).
const RECORD_MAGIC: &[u8; 4] = b"FILE";
const RECORD_FIRST_ATTRIBUTE: usize = 0x14;
const RECORD_FLAGS: usize = 0x16;
const RECORD_BYTES_IN_USE: usize = 0x18;
/// The base record's file reference (0 in a base record, non-zero in an extension record).
const RECORD_BASE_REFERENCE: usize = 0x20;
/// `MFT_RECORD_IN_USE` in the record flags.
const FLAG_IN_USE: u16 = 0x0001;

/// Attribute header fields (offsets into the attribute).
const ATTR_TYPE: usize = 0x00;
const ATTR_LENGTH: usize = 0x04;
const ATTR_NON_RESIDENT: usize = 0x08;
const ATTR_NAME_LENGTH: usize = 0x09;
const ATTR_NAME_OFFSET: usize = 0x0A;
const ATTR_FLAGS: usize = 0x0C;
const RESIDENT_VALUE_LENGTH: usize = 0x10;
const RESIDENT_VALUE_OFFSET: usize = 0x14;
const NONRES_LOWEST_VCN: usize = 0x10;
const NONRES_MAPPING_PAIRS: usize = 0x20;
const NONRES_DATA_SIZE: usize = 0x30;
const NONRES_INITIALIZED_SIZE: usize = 0x38;
/// The smallest non-resident attribute header (up to the initialized size).
const NONRES_HEADER_LEN: usize = 0x40;
const TYPE_END: u32 = 0xFFFF_FFFF;

/// Attribute types this module names.
pub const TYPE_ATTRIBUTE_LIST: u32 = 0x20;
pub const TYPE_DATA: u32 = 0x80;
pub const TYPE_INDEX_ROOT: u32 = 0x90;
pub const TYPE_INDEX_ALLOCATION: u32 = 0xA0;
pub const TYPE_LOGGED_UTILITY_STREAM: u32 = 0x100;

/// Attribute flags: compressed (0x0001), encrypted (0x4000), sparse (0x8000).
pub const ATTR_FLAG_COMPRESSED: u16 = 0x0001;
pub const ATTR_FLAG_ENCRYPTED: u16 = 0x4000;
pub const ATTR_FLAG_SPARSE: u16 = 0x8000;

/// Most runs decoded for one attribute piece (a 4 KiB record holds far fewer).
const MAX_RUNS_PER_PIECE: usize = 4096;
/// Most attributes walked in one record.
const MAX_ATTRIBUTES: usize = 512;

/// One data run of a non-resident attribute piece: `clusters` clusters from `vcn`, stored at
/// `lcn` (or a hole when `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub vcn: u64,
    pub lcn: Option<u64>,
    pub clusters: u64,
}

/// How an attribute's value is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeValue {
    /// Inside the record: `len` bytes at `offset` (into the record, fixups undone).
    Resident { offset: usize, len: usize },
    /// A piece of a non-resident value: its runs from `lowest_vcn`; `data_size` is meaningful
    /// only in the piece at VCN 0.
    NonResident {
        lowest_vcn: u64,
        data_size: u64,
        initialized_size: u64,
        runs: Vec<Run>,
    },
}

/// One attribute of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Offset of the attribute header in its record.
    pub at: usize,
    pub ty: u32,
    /// The attribute name, UTF-16 units decoded lossily ("" for none).
    pub name: String,
    pub flags: u16,
    pub value: AttributeValue,
}

/// A FILE record with its fixups undone and its attributes parsed.
#[derive(Clone, Debug)]
pub struct FileRecord {
    pub in_use: bool,
    /// Record number of the base record, for an extension record.
    pub base_record: Option<u64>,
    pub attributes: Vec<Attribute>,
}

/// Whether `buf` starts with a FILE record signature (a record not yet written reads as zeros).
pub fn is_file_record(buf: &[u8]) -> bool {
    buf.get(..4) == Some(RECORD_MAGIC)
}

impl FileRecord {
    /// Parses the record in `buf` (read from image offset `at`), undoing its fixups in place.
    pub fn parse(buf: &mut [u8], at: ImageOffset) -> Result<FileRecord> {
        let bad = |rel: usize, what: &'static str, expected: String, found: String| {
            ImageError::invalid(ImageOffset(at.0 + rel as u64), what, expected, found)
        };
        if !is_file_record(buf) {
            return Err(bad(
                0,
                "MFT record",
                "the signature FILE".into(),
                format!("{:02x?}", &buf[..buf.len().min(4)]),
            ));
        }
        apply_fixups(buf, at, "MFT record")?;
        let flags = u16_at(buf, RECORD_FLAGS).unwrap_or(0);
        let used = u32_at(buf, RECORD_BYTES_IN_USE).unwrap_or(0) as usize;
        if used > buf.len() || used < RECORD_BASE_REFERENCE + 8 {
            return Err(bad(
                RECORD_BYTES_IN_USE,
                "MFT record bytes in use",
                format!("at most the record size {}", buf.len()),
                format!("{used}"),
            ));
        }
        // A file reference: 48-bit record number, 16-bit sequence number. The whole field is 0
        // in a base record; an extension record of record 0 ($MFT) has number 0 and sequence 1.
        let base_reference = u64_at(buf, RECORD_BASE_REFERENCE).unwrap_or(0);
        let base = base_reference & 0x0000_FFFF_FFFF_FFFF;
        let mut attributes = Vec::new();
        let mut p = u16_at(buf, RECORD_FIRST_ATTRIBUTE).unwrap_or(0) as usize;
        loop {
            let Some(ty) = u32_at(&buf[..used], p + ATTR_TYPE) else {
                return Err(bad(
                    p,
                    "attribute",
                    format!("an attribute or the end marker before {used:#x}"),
                    "the end of the record".into(),
                ));
            };
            if ty == TYPE_END {
                break;
            }
            if attributes.len() >= MAX_ATTRIBUTES {
                return Err(bad(
                    p,
                    "attributes",
                    format!("at most {MAX_ATTRIBUTES}"),
                    "more".into(),
                ));
            }
            let len = u32_at(buf, p + ATTR_LENGTH).unwrap_or(0) as usize;
            if len < 0x18 || !len.is_multiple_of(8) || p.saturating_add(len) > used {
                return Err(bad(
                    p + ATTR_LENGTH,
                    "attribute length",
                    format!("a multiple of 8, at least 24, ending by {used:#x}"),
                    format!("{len}"),
                ));
            }
            let attr = &buf[p..p + len];
            let mut parsed = parse_attribute(attr, ty)
                .map_err(|(rel, what, expected, found)| bad(p + rel, what, expected, found))?;
            parsed.at = p;
            attributes.push(parsed);
            p += len;
        }
        Ok(FileRecord {
            in_use: flags & FLAG_IN_USE != 0,
            base_record: (base_reference != 0).then_some(base),
            attributes,
        })
    }
}

type FieldError = (usize, &'static str, String, String);

fn parse_attribute(attr: &[u8], ty: u32) -> std::result::Result<Attribute, FieldError> {
    let len = attr.len();
    let name_len = attr[ATTR_NAME_LENGTH] as usize;
    let name_off = u16_at(attr, ATTR_NAME_OFFSET).unwrap_or(0) as usize;
    let name_bytes = attr
        .get(name_off..name_off.saturating_add(2 * name_len))
        .ok_or((
            ATTR_NAME_OFFSET,
            "attribute name",
            "a name inside the attribute".to_string(),
            format!("{name_len} characters at {name_off}"),
        ))?;
    let units: Vec<u16> = name_bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let name = String::from_utf16_lossy(&units);
    let flags = u16_at(attr, ATTR_FLAGS).unwrap_or(0);
    let value = if attr[ATTR_NON_RESIDENT] == 0 {
        let value_len = u32_at(attr, RESIDENT_VALUE_LENGTH).unwrap_or(0) as usize;
        let value_off = u16_at(attr, RESIDENT_VALUE_OFFSET).unwrap_or(0) as usize;
        if value_off.saturating_add(value_len) > len {
            return Err((
                RESIDENT_VALUE_OFFSET,
                "resident value",
                format!("inside the {len}-byte attribute"),
                format!("{value_len} bytes at {value_off}"),
            ));
        }
        AttributeValue::Resident {
            offset: value_off,
            len: value_len,
        }
    } else {
        if len < NONRES_HEADER_LEN {
            return Err((
                ATTR_LENGTH,
                "non-resident attribute",
                format!("at least {NONRES_HEADER_LEN} bytes"),
                format!("{len}"),
            ));
        }
        let lowest_vcn = u64_at(attr, NONRES_LOWEST_VCN).unwrap_or(0);
        let data_size = u64_at(attr, NONRES_DATA_SIZE).unwrap_or(0);
        let initialized_size = u64_at(attr, NONRES_INITIALIZED_SIZE).unwrap_or(0);
        let pairs_at = u16_at(attr, NONRES_MAPPING_PAIRS).unwrap_or(0) as usize;
        let runs = decode_mapping_pairs(attr, pairs_at, lowest_vcn)
            .map_err(|(at, expected, found)| (at, "mapping pairs", expected, found))?;
        AttributeValue::NonResident {
            lowest_vcn,
            data_size,
            initialized_size,
            runs,
        }
    };
    Ok(Attribute {
        at: 0,
        ty,
        name,
        flags,
        value,
    })
}

/// Decodes the mapping pairs at `at` in `attr` [runlist.c]: a header byte (low nibble: bytes of
/// the run length, high nibble: bytes of the signed LCN delta, 0 for a hole), the length and the
/// delta; a zero header ends the list. The LCN delta restarts from 0 in every attribute piece.
pub fn decode_mapping_pairs(
    attr: &[u8],
    mut at: usize,
    lowest_vcn: u64,
) -> std::result::Result<Vec<Run>, (usize, String, String)> {
    let mut runs = Vec::new();
    let mut vcn = lowest_vcn;
    let mut lcn: i64 = 0;
    loop {
        let Some(&header) = attr.get(at) else {
            return Err((at, "a run header".into(), "the end of the attribute".into()));
        };
        if header == 0 {
            return Ok(runs);
        }
        if runs.len() >= MAX_RUNS_PER_PIECE {
            return Err((
                at,
                format!("at most {MAX_RUNS_PER_PIECE} runs"),
                "more".into(),
            ));
        }
        let (len_bytes, off_bytes) = ((header & 0x0F) as usize, (header >> 4) as usize);
        if len_bytes == 0 || len_bytes > 8 || off_bytes > 8 {
            return Err((at, "a valid run header".into(), format!("{header:#04x}")));
        }
        let Some(bytes) = attr.get(at + 1..at + 1 + len_bytes + off_bytes) else {
            return Err((at, "a whole run".into(), "the end of the attribute".into()));
        };
        let mut clusters = 0u64;
        for (i, b) in bytes[..len_bytes].iter().enumerate() {
            clusters |= (*b as u64) << (8 * i);
        }
        if clusters == 0 || clusters > i64::MAX as u64 {
            return Err((
                at,
                "a run of 1 or more clusters".into(),
                format!("{clusters}"),
            ));
        }
        let position = if off_bytes == 0 {
            None
        } else {
            let mut delta = 0i64;
            for (i, b) in bytes[len_bytes..].iter().enumerate() {
                delta |= (*b as i64) << (8 * i);
            }
            let shift = 64 - 8 * off_bytes as u32;
            if shift > 0 {
                delta = (delta << shift) >> shift;
            }
            lcn = lcn.checked_add(delta).filter(|l| *l >= 0).ok_or((
                at,
                "an LCN inside the volume".to_string(),
                format!("delta {delta}"),
            ))?;
            Some(lcn as u64)
        };
        runs.push(Run {
            vcn,
            lcn: position,
            clusters,
        });
        vcn = vcn.checked_add(clusters).ok_or((
            at,
            "VCNs below 2^64".to_string(),
            "an overflow".to_string(),
        ))?;
        at += 1 + len_bytes + off_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 KiB record with fixups and the given attributes (already 8-aligned).
    pub fn record_with(attrs: &[Vec<u8>], base: u64) -> Vec<u8> {
        let mut r = vec![0u8; 1024];
        r[..4].copy_from_slice(b"FILE");
        r[4..6].copy_from_slice(&0x30u16.to_le_bytes());
        r[6..8].copy_from_slice(&3u16.to_le_bytes());
        r[RECORD_FIRST_ATTRIBUTE..RECORD_FIRST_ATTRIBUTE + 2]
            .copy_from_slice(&0x38u16.to_le_bytes());
        r[RECORD_FLAGS..RECORD_FLAGS + 2].copy_from_slice(&1u16.to_le_bytes());
        r[RECORD_BASE_REFERENCE..RECORD_BASE_REFERENCE + 8].copy_from_slice(&base.to_le_bytes());
        let mut p = 0x38;
        for a in attrs {
            r[p..p + a.len()].copy_from_slice(a);
            p += a.len();
        }
        r[p..p + 4].copy_from_slice(&TYPE_END.to_le_bytes());
        r[RECORD_BYTES_IN_USE..RECORD_BYTES_IN_USE + 4]
            .copy_from_slice(&((p + 8) as u32).to_le_bytes());
        // Fixups: USN 1, saved bytes in the array.
        r[0x30..0x32].copy_from_slice(&[1, 0]);
        for s in 1..=2 {
            let end = s * 512 - 2;
            r[0x30 + 2 * s] = r[end];
            r[0x30 + 2 * s + 1] = r[end + 1];
            r[end..end + 2].copy_from_slice(&[1, 0]);
        }
        r
    }

    pub fn non_resident(ty: u32, name: &str, lowest_vcn: u64, size: u64, pairs: &[u8]) -> Vec<u8> {
        let name16: Vec<u8> = name.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let name_off = NONRES_HEADER_LEN;
        let pairs_off = (name_off + name16.len()).next_multiple_of(8);
        let len = (pairs_off + pairs.len() + 1).next_multiple_of(8);
        let mut a = vec![0u8; len];
        a[0..4].copy_from_slice(&ty.to_le_bytes());
        a[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        a[ATTR_NON_RESIDENT] = 1;
        a[ATTR_NAME_LENGTH] = name.encode_utf16().count() as u8;
        a[ATTR_NAME_OFFSET..ATTR_NAME_OFFSET + 2].copy_from_slice(&(name_off as u16).to_le_bytes());
        a[NONRES_LOWEST_VCN..NONRES_LOWEST_VCN + 8].copy_from_slice(&lowest_vcn.to_le_bytes());
        a[NONRES_MAPPING_PAIRS..NONRES_MAPPING_PAIRS + 2]
            .copy_from_slice(&(pairs_off as u16).to_le_bytes());
        a[NONRES_DATA_SIZE..NONRES_DATA_SIZE + 8].copy_from_slice(&size.to_le_bytes());
        a[name_off..name_off + name16.len()].copy_from_slice(&name16);
        a[pairs_off..pairs_off + pairs.len()].copy_from_slice(pairs);
        a
    }

    #[test]
    fn decodes_runs_holes_and_negative_deltas() {
        // 4 clusters at LCN 0x100, a hole of 2, 3 clusters at 0x100 - 0x10 = 0xF0.
        let pairs = [0x21, 0x04, 0x00, 0x01, 0x01, 0x02, 0x11, 0x03, 0xF0, 0x00];
        let runs = decode_mapping_pairs(&pairs, 0, 10).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    vcn: 10,
                    lcn: Some(0x100),
                    clusters: 4
                },
                Run {
                    vcn: 14,
                    lcn: None,
                    clusters: 2
                },
                Run {
                    vcn: 16,
                    lcn: Some(0xF0),
                    clusters: 3
                },
            ]
        );
    }

    #[test]
    fn rejects_hostile_runs() {
        // A delta below LCN 0, a truncated run, a zero-length run, a bad header.
        for pairs in [
            &[0x11, 0x01, 0xFF, 0][..],
            &[0x21, 0x01][..],
            &[0x11, 0x00, 0x05, 0][..],
            &[0x90, 0][..],
        ] {
            assert!(decode_mapping_pairs(pairs, 0, 0).is_err(), "{pairs:02x?}");
        }
    }

    #[test]
    fn parses_a_record_with_fixups() {
        let data = non_resident(TYPE_DATA, "", 0, 3 * 4096, &[0x11, 0x03, 0x20, 0]);
        let mut rec = record_with(&[data], 0);
        let f = FileRecord::parse(&mut rec, ImageOffset(0)).unwrap();
        assert!(f.in_use);
        assert_eq!(f.base_record, None);
        assert_eq!(f.attributes.len(), 1);
        assert_eq!(
            f.attributes[0].value,
            AttributeValue::NonResident {
                lowest_vcn: 0,
                data_size: 3 * 4096,
                initialized_size: 0,
                runs: vec![Run {
                    vcn: 0,
                    lcn: Some(0x20),
                    clusters: 3
                }],
            }
        );
        let mut ext = record_with(&[], 0x0001_0000_0000_0007);
        assert_eq!(
            FileRecord::parse(&mut ext, ImageOffset(0))
                .unwrap()
                .base_record,
            Some(7)
        );
    }

    #[test]
    fn hostile_records_are_errors() {
        let data = non_resident(TYPE_DATA, "", 0, 4096, &[0x11, 0x01, 0x20, 0]);
        let good = record_with(&[data], 0);
        // Each single-byte corruption of the header area gives an error or a record, never a panic.
        for at in 0..0x80 {
            for v in [0u8, 0x7F, 0xFF] {
                let mut r = good.clone();
                r[at] = v;
                let _ = FileRecord::parse(&mut r, ImageOffset(0));
            }
        }
        let mut torn = good.clone();
        torn[1022] = 9;
        assert!(FileRecord::parse(&mut torn, ImageOffset(0)).is_err());
    }
}
