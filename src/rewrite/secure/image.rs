//! Where the parts of `$Secure` live in an image: reading them from an [`NtfsVolume`] and
//! writing a rewrite back into (a copy of) the image.
//!
//! `$SDS` is a named `$DATA` stream, located by [`NtfsVolume::stream_layout_by_record`]. The
//! index attributes (`$INDEX_ROOT` and `$INDEX_ALLOCATION` named `$SII` / `$SDH`) are found by
//! walking MFT record 9 ourselves [layout.h ATTR_RECORD; FORMAT-FACTS §3 "Attribute header",
//! "Data runs"]. A `$Secure` whose index attributes moved to extension records (an attribute
//! list) is refused with an error.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::index::{refix, unfix};
use super::{Part, SecureError, SecureParts};
use crate::image::{Extent, ImageFile, ImageOffset, NtfsVolume, StreamLocation};

/// MFT record number of `$Secure`.
pub const SECURE_RECORD: u64 = 9;
/// Largest `$SDS` or index allocation we read (a big server's `$SDS` is tens of MiB).
const MAX_STREAM: u64 = 1 << 30;
const RECORD_MAGIC: &[u8; 4] = b"FILE";
const RECORD_FIRST_ATTRIBUTE: usize = 0x14;
const RECORD_BYTES_IN_USE: usize = 0x18;
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
const TYPE_ATTRIBUTE_LIST: u32 = 0x20;
const TYPE_INDEX_ROOT: u32 = 0x90;
const TYPE_INDEX_ALLOCATION: u32 = 0xA0;
const TYPE_END: u32 = 0xFFFF_FFFF;
/// Compressed, encrypted or sparse attribute flags: not patchable in place.
const ATTR_FLAGS_NOT_PLAIN: u16 = 0x0001 | 0x4000 | 0x8000;

/// A resident attribute value inside an MFT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidentValue {
    /// Image offset of the MFT record (whose fixups cover the value).
    pub record_offset: ImageOffset,
    pub record_size: u32,
    /// Offset of the value inside the record (fixups undone).
    pub value_offset: u32,
    pub len: u32,
}

/// Where each part of `$Secure` lies in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureLayout {
    pub sds: Vec<Extent>,
    pub sii_root: ResidentValue,
    /// Empty when the index has no allocation.
    pub sii_alloc: Vec<Extent>,
    pub sdh_root: ResidentValue,
    pub sdh_alloc: Vec<Extent>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The index attributes found in record 9.
#[derive(Default)]
struct IndexAttributes {
    sii_root: Option<ResidentValue>,
    sdh_root: Option<ResidentValue>,
    sii_alloc: Option<Vec<Extent>>,
    sdh_alloc: Option<Vec<Extent>>,
    has_attribute_list: bool,
}

impl SecureParts {
    /// Reads the five parts of `$Secure` from `volume` (in `image`) and says where they are.
    pub fn read(
        image: &ImageFile,
        volume: &NtfsVolume,
    ) -> Result<(SecureParts, SecureLayout), SecureError> {
        let facts = volume.facts()?;
        let sds_layout = volume.stream_layout_by_record(SECURE_RECORD, "$SDS")?;
        let sds_extents = match &sds_layout.location {
            StreamLocation::NonResident { extents } if sds_layout.is_plain() => extents.clone(),
            _ => {
                return Err(SecureError::corrupt(
                    Part::Sds,
                    0,
                    "$SDS storage",
                    "a non-resident, uncompressed, unencrypted stream",
                    format!("{:?}", sds_layout.location),
                ))
            }
        };
        let sds = read_extents(image, &sds_extents, sds_layout.size, Part::Sds)?;

        let record_offset = volume.mft_record_offset(SECURE_RECORD)?;
        let record_size = facts.file_record_size;
        let mut record = image.read_vec(
            record_offset,
            record_size as u64,
            1 << 16,
            "$Secure MFT record",
        )?;
        if record.len() < 512 || &record[0..4] != RECORD_MAGIC {
            return Err(SecureError::corrupt(
                Part::MftRecord,
                record_offset.0,
                "record magic",
                "FILE",
                format!("{:02x?}", &record[..record.len().min(4)]),
            ));
        }
        unfix(&mut record, Part::MftRecord, record_offset.0)?;
        let found = index_attributes(
            &record,
            record_offset,
            record_size,
            facts.cluster_size as u64,
            volume.start(),
        )?;
        let missing = |name: &'static str| {
            SecureError::corrupt(
                Part::MftRecord,
                record_offset.0,
                name,
                "the attribute in record 9",
                if found.has_attribute_list {
                    "an attribute list (extension records are not supported)"
                } else {
                    "no such attribute"
                },
            )
        };
        let sii_root = found
            .sii_root
            .clone()
            .ok_or_else(|| missing("$SII $INDEX_ROOT"))?;
        let sdh_root = found
            .sdh_root
            .clone()
            .ok_or_else(|| missing("$SDH $INDEX_ROOT"))?;
        if found.has_attribute_list && (found.sii_alloc.is_none() || found.sdh_alloc.is_none()) {
            return Err(missing("$INDEX_ALLOCATION"));
        }
        let sii_alloc = found.sii_alloc.unwrap_or_default();
        let sdh_alloc = found.sdh_alloc.unwrap_or_default();
        let value = |v: &ResidentValue| {
            record[v.value_offset as usize..(v.value_offset + v.len) as usize].to_vec()
        };
        let total = |e: &[Extent]| e.iter().map(|e| e.len).sum::<u64>();
        let parts = SecureParts {
            sds,
            sii_root: value(&sii_root),
            sii_alloc: read_extents(image, &sii_alloc, total(&sii_alloc), Part::SiiAllocation)?,
            sdh_root: value(&sdh_root),
            sdh_alloc: read_extents(image, &sdh_alloc, total(&sdh_alloc), Part::SdhAllocation)?,
        };
        Ok((
            parts,
            SecureLayout {
                sds: sds_extents,
                sii_root,
                sii_alloc,
                sdh_root,
                sdh_alloc,
            },
        ))
    }
}

/// Reads a stream of `size` bytes through its extents; holes are refused (nothing to patch).
fn read_extents(
    image: &ImageFile,
    extents: &[Extent],
    size: u64,
    part: Part,
) -> Result<Vec<u8>, SecureError> {
    if size > MAX_STREAM {
        return Err(SecureError::corrupt(
            part,
            0,
            "stream size",
            format!("at most {MAX_STREAM} bytes"),
            format!("{size}"),
        ));
    }
    let mut out = vec![0u8; size as usize];
    for e in extents {
        let Some(at) = e.image_offset else {
            return Err(SecureError::corrupt(
                part,
                e.logical_offset,
                "stream storage",
                "allocated clusters",
                "a sparse hole",
            ));
        };
        let start = e.logical_offset as usize;
        let end = e.logical_offset.saturating_add(e.len).min(size) as usize;
        if start < end {
            image.read_exact_at(at, &mut out[start..end], "$Secure stream")?;
        }
    }
    Ok(out)
}

/// Walks the attributes of record 9 (fixups undone) for the `$SII` / `$SDH` index attributes.
fn index_attributes(
    record: &[u8],
    record_offset: ImageOffset,
    record_size: u32,
    cluster_size: u64,
    volume_start: ImageOffset,
) -> Result<IndexAttributes, SecureError> {
    let bad = |at: usize, what: &'static str, expected: String, found: String| {
        SecureError::corrupt(
            Part::MftRecord,
            record_offset.0 + at as u64,
            what,
            expected,
            found,
        )
    };
    let used = (u32_at(record, RECORD_BYTES_IN_USE) as usize).min(record.len());
    let mut p = u16_at(record, RECORD_FIRST_ATTRIBUTE) as usize;
    let mut found = IndexAttributes::default();
    loop {
        if p + 8 > used {
            return Err(bad(
                p,
                "attribute",
                format!("an attribute or the end marker before {used:#x}"),
                "the end of the record".into(),
            ));
        }
        let ty = u32_at(record, p + ATTR_TYPE);
        if ty == TYPE_END {
            return Ok(found);
        }
        let len = u32_at(record, p + ATTR_LENGTH) as usize;
        if len < 0x18 || !len.is_multiple_of(8) || p + len > used {
            return Err(bad(
                p + ATTR_LENGTH,
                "attribute length",
                format!("a multiple of 8, at least 24, ending by {used:#x}"),
                format!("{len}"),
            ));
        }
        let attr = &record[p..p + len];
        let name_len = attr[ATTR_NAME_LENGTH] as usize;
        let name_off = u16_at(attr, ATTR_NAME_OFFSET) as usize;
        let name: Vec<u16> = match attr.get(name_off..name_off + 2 * name_len) {
            Some(b) => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
            None => {
                return Err(bad(
                    p + ATTR_NAME_OFFSET,
                    "attribute name",
                    "a name inside the attribute".into(),
                    format!("{name_len} characters at {name_off}"),
                ))
            }
        };
        let name = String::from_utf16_lossy(&name);
        let resident = attr[ATTR_NON_RESIDENT] == 0;
        if ty == TYPE_ATTRIBUTE_LIST {
            found.has_attribute_list = true;
        }
        if ty == TYPE_INDEX_ROOT && (name == "$SII" || name == "$SDH") {
            if !resident {
                return Err(bad(
                    p,
                    "$INDEX_ROOT",
                    "a resident attribute".into(),
                    "non-resident".into(),
                ));
            }
            let value_len = u32_at(attr, RESIDENT_VALUE_LENGTH) as usize;
            let value_off = u16_at(attr, RESIDENT_VALUE_OFFSET) as usize;
            if value_off + value_len > len {
                return Err(bad(
                    p + RESIDENT_VALUE_OFFSET,
                    "resident value",
                    format!("inside the {len}-byte attribute"),
                    format!("{value_len} bytes at {value_off}"),
                ));
            }
            let v = ResidentValue {
                record_offset,
                record_size,
                value_offset: (p + value_off) as u32,
                len: value_len as u32,
            };
            if name == "$SII" {
                found.sii_root = Some(v);
            } else {
                found.sdh_root = Some(v);
            }
        }
        if ty == TYPE_INDEX_ALLOCATION && (name == "$SII" || name == "$SDH") {
            if resident || u16_at(attr, ATTR_FLAGS) & ATTR_FLAGS_NOT_PLAIN != 0 {
                return Err(bad(
                    p,
                    "$INDEX_ALLOCATION",
                    "a plain non-resident attribute".into(),
                    format!(
                        "resident {resident}, flags {:#06x}",
                        u16_at(attr, ATTR_FLAGS)
                    ),
                ));
            }
            if len < 0x40 || u64_at(attr, NONRES_LOWEST_VCN) != 0 {
                return Err(bad(
                    p + NONRES_LOWEST_VCN,
                    "$INDEX_ALLOCATION",
                    "a whole attribute starting at VCN 0".into(),
                    "a piece of a split attribute".into(),
                ));
            }
            let data_size = u64_at(attr, NONRES_DATA_SIZE);
            let initialized = u64_at(attr, NONRES_INITIALIZED_SIZE);
            if initialized != data_size || data_size > MAX_STREAM {
                return Err(bad(
                    p + NONRES_DATA_SIZE,
                    "$INDEX_ALLOCATION sizes",
                    format!("initialized size = data size <= {MAX_STREAM}"),
                    format!("data {data_size}, initialized {initialized}"),
                ));
            }
            let runs_at = u16_at(attr, NONRES_MAPPING_PAIRS) as usize;
            let extents = decode_runs(attr, runs_at, data_size, cluster_size, volume_start)
                .map_err(|(at, expected, found)| bad(p + at, "mapping pairs", expected, found))?;
            if name == "$SII" {
                found.sii_alloc = Some(extents);
            } else {
                found.sdh_alloc = Some(extents);
            }
        }
        p += len;
    }
}

type RunError = (usize, String, String);

/// Decodes mapping pairs at `at` in `attr` into extents covering `size` bytes [runlist.c]:
/// a header byte (low nibble: length bytes, high nibble: offset bytes), the run length, and a
/// signed LCN delta; a zero header ends the list. Holes are refused.
fn decode_runs(
    attr: &[u8],
    mut at: usize,
    size: u64,
    cluster: u64,
    volume_start: ImageOffset,
) -> Result<Vec<Extent>, RunError> {
    let mut extents = Vec::new();
    let mut lcn: i64 = 0;
    let mut logical = 0u64;
    while logical < size {
        let Some(&header) = attr.get(at) else {
            return Err((at, "a run header".into(), "the end of the attribute".into()));
        };
        let (len_bytes, off_bytes) = ((header & 0x0F) as usize, (header >> 4) as usize);
        if header == 0 || len_bytes == 0 || len_bytes > 8 || off_bytes == 0 || off_bytes > 8 {
            return Err((
                at,
                format!("an allocated run covering bytes from {logical} of {size}"),
                format!("run header {header:#04x}"),
            ));
        }
        let Some(bytes) = attr.get(at + 1..at + 1 + len_bytes + off_bytes) else {
            return Err((at, "a whole run".into(), "the end of the attribute".into()));
        };
        let mut count = 0u64;
        for (i, b) in bytes[..len_bytes].iter().enumerate() {
            count |= (*b as u64) << (8 * i);
        }
        let mut delta = 0i64;
        for (i, b) in bytes[len_bytes..].iter().enumerate() {
            delta |= (*b as i64) << (8 * i);
        }
        let shift = 64 - 8 * off_bytes as u32;
        delta = if shift < 64 {
            (delta << shift) >> shift
        } else {
            delta
        };
        lcn = lcn.checked_add(delta).unwrap_or(-1);
        let bytes_len = count.checked_mul(cluster);
        let start = u64::try_from(lcn)
            .ok()
            .and_then(|l| l.checked_mul(cluster))
            .and_then(|o| o.checked_add(volume_start.0));
        let (Some(bytes_len), Some(start)) = (bytes_len, start) else {
            return Err((at, "a run inside the volume".into(), format!("LCN {lcn}")));
        };
        if count == 0 {
            return Err((at, "a run of at least one cluster".into(), "0".into()));
        }
        let len = bytes_len.min(size - logical);
        extents.push(Extent {
            logical_offset: logical,
            len,
            image_offset: Some(ImageOffset(start)),
        });
        logical += len;
        at += 1 + len_bytes + off_bytes;
    }
    Ok(extents)
}

fn write_extents(copy: &File, extents: &[Extent], bytes: &[u8]) -> Result<(), SecureError> {
    for e in extents {
        let (Some(at), Some(chunk)) = (
            e.image_offset,
            bytes.get(e.logical_offset as usize..(e.logical_offset + e.len) as usize),
        ) else {
            return Err(SecureError::Io {
                what: format!("writing extent {e:?}"),
                source: std::io::Error::other("extent outside the buffer or a hole"),
            });
        };
        copy.write_all_at(chunk, at.0)
            .map_err(|source| SecureError::Io {
                what: format!("writing {} bytes at {at}", chunk.len()),
                source,
            })?;
    }
    Ok(())
}

/// Writes a resident value into its MFT record in `copy`: read the record, undo its fixups,
/// write the value, redo the fixups (same USN), write the record.
fn write_resident(copy: &File, v: &ResidentValue, value: &[u8]) -> Result<(), SecureError> {
    let io = |what: String| move |source| SecureError::Io { what, source };
    if value.len() != v.len as usize {
        return Err(SecureError::corrupt(
            Part::MftRecord,
            v.record_offset.0 + v.value_offset as u64,
            "new resident value",
            format!("{} bytes", v.len),
            format!("{}", value.len()),
        ));
    }
    let mut record = vec![0u8; v.record_size as usize];
    copy.read_exact_at(&mut record, v.record_offset.0)
        .map_err(io(format!("reading the MFT record at {}", v.record_offset)))?;
    unfix(&mut record, Part::MftRecord, v.record_offset.0)?;
    let start = v.value_offset as usize;
    let Some(target) = record.get_mut(start..start + value.len()) else {
        return Err(SecureError::corrupt(
            Part::MftRecord,
            v.record_offset.0,
            "resident value place",
            "inside the record",
            format!("{} bytes at {start}", value.len()),
        ));
    };
    target.copy_from_slice(value);
    refix(&mut record);
    copy.write_all_at(&record, v.record_offset.0)
        .map_err(io(format!("writing the MFT record at {}", v.record_offset)))
}

/// Writes a rewrite's parts into `copy` (a writable image, e.g. a copy of the master, or a
/// clone's overlay file) at the places `layout` names.
pub fn apply_to_image(
    copy: &File,
    layout: &SecureLayout,
    parts: &SecureParts,
) -> Result<(), SecureError> {
    write_extents(copy, &layout.sds, &parts.sds)?;
    write_extents(copy, &layout.sii_alloc, &parts.sii_alloc)?;
    write_extents(copy, &layout.sdh_alloc, &parts.sdh_alloc)?;
    write_resident(copy, &layout.sii_root, &parts.sii_root)?;
    write_resident(copy, &layout.sdh_root, &parts.sdh_root)?;
    Ok(())
}
