//! Where the parts of `$Secure` live in an image: reading them from an [`NtfsVolume`] and
//! writing a rewrite back into (a copy of) the image.
//!
//! `$SDS` (a named `$DATA` stream) and the index attributes (`$INDEX_ROOT` and
//! `$INDEX_ALLOCATION` named `$SII` / `$SDH`) are located by the volume's one attribute-layout
//! lookup (`image::ntfs_volume::attribute`), which follows record 9's `$ATTRIBUTE_LIST` into
//! extension records: on volumes Windows (or ntfs-3g) has written for a while, the index roots
//! and pieces of `$SDS` and of the index allocations live there.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::index::{refix, unfix};
use super::{Part, SecureError, SecureParts};
use crate::image::ntfs_volume::attribute::{attribute_layout, AttributeLayout, MftMap};
use crate::image::ntfs_volume::record::{
    ATTR_FLAG_COMPRESSED, ATTR_FLAG_ENCRYPTED, TYPE_DATA, TYPE_INDEX_ALLOCATION, TYPE_INDEX_ROOT,
};
use crate::image::{Extent, ImageFile, ImageOffset, NtfsVolume};

/// MFT record number of `$Secure`.
pub const SECURE_RECORD: u64 = 9;
/// Largest `$SDS` or index allocation we read (a big server's `$SDS` is tens of MiB).
const MAX_STREAM: u64 = 1 << 30;
/// Compressed or encrypted attribute flags: not patchable in place. (The sparse flag is allowed:
/// ntfs-3g and Windows mark `$SDS` sparse; an actual hole is refused when the stream is read.)
const ATTR_FLAGS_NOT_PLAIN: u16 = ATTR_FLAG_COMPRESSED | ATTR_FLAG_ENCRYPTED;

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

impl SecureParts {
    /// Reads the five parts of `$Secure` from `volume` (in `image`) and says where they are,
    /// wherever record 9's attribute list put them (extension records included).
    pub fn read(
        image: &ImageFile,
        volume: &NtfsVolume,
    ) -> Result<(SecureParts, SecureLayout), SecureError> {
        let facts = volume.facts()?;
        let mft = MftMap::open(image, &facts)?;
        let record_offset = mft.record_offset(SECURE_RECORD)?;
        let lookup = |ty: u32, name: &str| {
            attribute_layout(image, &mft, SECURE_RECORD, ty, name).map_err(SecureError::from)
        };
        let bad = |part: Part, what: &'static str, expected: &str, found: String| {
            SecureError::corrupt(part, record_offset.0, what, expected, found)
        };
        let plain_stream = |layout: Option<AttributeLayout>,
                            part: Part,
                            what: &'static str,
                            required: bool|
         -> Result<(Vec<Extent>, u64), SecureError> {
            match layout {
                None if !required => Ok((Vec::new(), 0)),
                Some(AttributeLayout::NonResident {
                    data_size,
                    initialized_size,
                    flags,
                    extents,
                }) if flags & ATTR_FLAGS_NOT_PLAIN == 0 && initialized_size == data_size => {
                    if data_size > MAX_STREAM {
                        return Err(bad(
                            part,
                            what,
                            "a stream of at most 1 GiB",
                            format!("{data_size} bytes"),
                        ));
                    }
                    Ok((extents, data_size))
                }
                other => Err(bad(
                    part,
                    what,
                    "a plain non-resident stream (initialized in full)",
                    format!("{other:?}"),
                )),
            }
        };
        let (sds_extents, sds_size) =
            plain_stream(lookup(TYPE_DATA, "$SDS")?, Part::Sds, "$SDS", true)?;
        let sds = read_extents(image, &sds_extents, sds_size, Part::Sds)?;
        let root = |name: &'static str| -> Result<(ResidentValue, Vec<u8>), SecureError> {
            match lookup(TYPE_INDEX_ROOT, name)? {
                Some(AttributeLayout::Resident {
                    record_offset,
                    record_size,
                    value_offset,
                    len,
                    ..
                }) => {
                    let mut rec = image.read_vec(
                        record_offset,
                        u64::from(record_size),
                        1 << 16,
                        "$Secure index root record",
                    )?;
                    unfix(&mut rec, Part::MftRecord, record_offset.0)?;
                    let value = rec
                        .get(value_offset as usize..(value_offset + len) as usize)
                        .ok_or_else(|| {
                            bad(
                                Part::MftRecord,
                                "$INDEX_ROOT value",
                                "inside its record",
                                format!("{len} bytes at {value_offset}"),
                            )
                        })?
                        .to_vec();
                    Ok((
                        ResidentValue {
                            record_offset,
                            record_size,
                            value_offset,
                            len,
                        },
                        value,
                    ))
                }
                other => Err(bad(
                    Part::MftRecord,
                    "$INDEX_ROOT",
                    "a resident index root",
                    format!("{other:?}"),
                )),
            }
        };
        let (sii_root, sii_root_value) = root("$SII")?;
        let (sdh_root, sdh_root_value) = root("$SDH")?;
        let (sii_alloc, sii_size) = plain_stream(
            lookup(TYPE_INDEX_ALLOCATION, "$SII")?,
            Part::SiiAllocation,
            "$SII $INDEX_ALLOCATION",
            false,
        )?;
        let (sdh_alloc, sdh_size) = plain_stream(
            lookup(TYPE_INDEX_ALLOCATION, "$SDH")?,
            Part::SdhAllocation,
            "$SDH $INDEX_ALLOCATION",
            false,
        )?;
        let parts = SecureParts {
            sds,
            sii_root: sii_root_value,
            sii_alloc: read_extents(image, &sii_alloc, sii_size, Part::SiiAllocation)?,
            sdh_root: sdh_root_value,
            sdh_alloc: read_extents(image, &sdh_alloc, sdh_size, Part::SdhAllocation)?,
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

/// Reads a stream of `size` bytes through its extents; holes read as zeros.
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
    let _ = part;
    let mut out = vec![0u8; size as usize];
    for e in extents {
        // A sparse hole (the unused tail of `$SDS`) reads as zeros; the stage refuses a rewrite
        // that would change bytes in one (`rewrite::stream::FileStream::edits_checked`).
        let Some(at) = e.image_offset else {
            continue;
        };
        let start = e.logical_offset as usize;
        let end = e.logical_offset.saturating_add(e.len).min(size) as usize;
        if start < end {
            image.read_exact_at(at, &mut out[start..end], "$Secure stream")?;
        }
    }
    Ok(out)
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
