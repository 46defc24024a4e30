//! `$SDS` entries and the self-relative security descriptors inside them.
//!
//! Entry [ntfs-3g layout.h SECURITY_DESCRIPTOR_HEADER / SDS_ENTRY; docs/FORMAT-FACTS.md §3]:
//! +0x00 hash (u32), +0x04 security_id (u32), +0x08 offset of this entry in `$SDS` (u64),
//! +0x10 length = 20 + descriptor length (u32), +0x14 the self-relative descriptor.
//! Entries are 16-byte aligned and never cross a 256 KiB boundary; the stream alternates
//! 256 KiB blocks of entries with 256 KiB blocks holding their mirrors, so each entry has a
//! second, identical copy (header included) at offset + 0x40000 [security.c
//! `entersecurity_data`, `ALIGN_SDS_BLOCK`, `ALIGN_SDS_ENTRY`].
//!
//! Descriptor [MS-DTYP 2.4.6; docs/FORMAT-FACTS.md §1 "Security descriptor"]: rev, sbz, control (u16,
//! 0x8000 = self-relative), then u32 offsets of owner, group, SACL, DACL from its start.

use std::collections::HashSet;
use std::ops::Range;

use super::{Part, SecureError};
use crate::le::{u16_at, u32_at, u64_at};

/// Distance from an entry to its mirror, and the size of the blocks entries may not cross.
pub const SDS_BLOCK: u64 = 0x40000;
/// Entries start on 16-byte boundaries.
pub const SDS_ENTRY_ALIGN: u64 = 16;
/// hash + security_id + offset + length.
pub const SDS_HEADER_LEN: usize = 20;
/// The fixed part of a self-relative descriptor.
const SD_HEADER_LEN: usize = 20;
const SD_CONTROL: usize = 2;
const SD_OWNER: usize = 4;
const SD_GROUP: usize = 8;
const SD_SACL: usize = 12;
const SD_DACL: usize = 16;
/// SE_SELF_RELATIVE.
const SE_SELF_RELATIVE: u16 = 0x8000;
/// ACL header: rev, sbz1, size (u16), count (u16), sbz2.
const ACL_HEADER_LEN: usize = 8;
/// ACE header: type, flags, size (u16).
const ACE_HEADER_LEN: usize = 4;
/// SID: rev, count, 6-byte big-endian authority, then count × u32.
const SID_HEADER_LEN: usize = 8;
const SID_MAX_SUBAUTHORITIES: usize = 15;
/// The NT authority {0,0,0,0,0,5} and SECURITY_NT_NON_UNIQUE (21), the first sub-authority of
/// machine and domain SIDs.
const NT_AUTHORITY: [u8; 6] = [0, 0, 0, 0, 0, 5];
const NT_NON_UNIQUE: u32 = 21;
/// ACE_OBJECT_TYPE_PRESENT and ACE_INHERITED_OBJECT_TYPE_PRESENT of an object ACE's flags.
const ACE_OBJECT_TYPE_PRESENT: u32 = 1;
const ACE_INHERITED_OBJECT_TYPE_PRESENT: u32 = 2;
const GUID_LEN: usize = 16;

/// The header of an `$SDS` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdsHeader {
    pub hash: u32,
    pub security_id: u32,
    /// Offset of the primary copy in `$SDS`.
    pub offset: u64,
    /// Header plus descriptor.
    pub length: u32,
}

impl SdsHeader {
    /// The header at the start of `b`; `None` when `b` is shorter than a header.
    fn parse(b: &[u8]) -> Option<SdsHeader> {
        Some(SdsHeader {
            hash: u32_at(b, 0)?,
            security_id: u32_at(b, 4)?,
            offset: u64_at(b, 8)?,
            length: u32_at(b, 16)?,
        })
    }

    pub fn to_bytes(&self) -> [u8; SDS_HEADER_LEN] {
        let mut b = [0u8; SDS_HEADER_LEN];
        b[0..4].copy_from_slice(&self.hash.to_le_bytes());
        b[4..8].copy_from_slice(&self.security_id.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..20].copy_from_slice(&self.length.to_le_bytes());
        b
    }
}

/// The descriptor hash [security.c `ntfs_security_hash`]: over the LE u32 words of the
/// descriptor (a trailing partial word is ignored), `h = rol32(h, 3) + w`.
pub fn sd_hash(sd: &[u8]) -> u32 {
    sd.chunks_exact(4).fold(0u32, |h, w| {
        h.rotate_left(3)
            .wrapping_add(u32::from_le_bytes(w.try_into().expect("4 bytes")))
    })
}

/// The byte range of an entry's descriptor (primary copy). Valid for headers from [`walk`].
pub fn descriptor_range(h: &SdsHeader) -> Range<usize> {
    let start = h.offset as usize + SDS_HEADER_LEN;
    start..h.offset as usize + h.length as usize
}

pub fn descriptor<'a>(sds: &'a [u8], h: &SdsHeader) -> &'a [u8] {
    &sds[descriptor_range(h)]
}

/// Copies the primary entry (header and descriptor) over its mirror.
pub fn copy_to_mirror(sds: &mut [u8], h: &SdsHeader) {
    let start = h.offset as usize;
    let len = h.length as usize;
    let mirror = start + SDS_BLOCK as usize;
    sds.copy_within(start..start + len, mirror);
}

/// Every entry of `$SDS`, in stream order. Within a primary block, entries follow each other
/// (16-byte aligned) until a header whose length is zero or until too little room is left;
/// then the walk continues at the next primary block. Each header must name its own offset,
/// hold at least a descriptor header, not cross its block, have a mirror inside the stream equal
/// to it, and carry a security_id not seen before.
pub fn walk(sds: &[u8]) -> Result<Vec<SdsHeader>, SecureError> {
    let size = sds.len() as u64;
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let mut pos = 0u64;
    while pos < size {
        let block_start = pos - pos % (2 * SDS_BLOCK);
        let block_end = block_start + SDS_BLOCK;
        let next_block = block_start + 2 * SDS_BLOCK;
        if pos + SDS_HEADER_LEN as u64 > block_end.min(size) {
            pos = next_block;
            continue;
        }
        let at = pos as usize;
        // (The check above leaves room for a header: `None` cannot happen.)
        let Some(h) = sds.get(at..).and_then(SdsHeader::parse) else {
            pos = next_block;
            continue;
        };
        if h.length == 0 {
            pos = next_block;
            continue;
        }
        if h.offset != pos {
            return Err(SecureError::corrupt(
                Part::Sds,
                pos,
                "entry offset field",
                format!("{pos:#x}"),
                format!("{:#x}", h.offset),
            ));
        }
        let min = (SDS_HEADER_LEN + SD_HEADER_LEN) as u32;
        if h.length < min || pos + h.length as u64 > block_end {
            return Err(SecureError::corrupt(
                Part::Sds,
                pos + 16,
                "entry length",
                format!(
                    "{min} to {} bytes (inside the 256 KiB block)",
                    block_end - pos
                ),
                format!("{}", h.length),
            ));
        }
        let end = pos + h.length as u64;
        let mirror = pos + SDS_BLOCK;
        if mirror + h.length as u64 > size {
            return Err(SecureError::corrupt(
                Part::Sds,
                mirror,
                "entry mirror",
                format!("{} bytes inside the stream", h.length),
                format!("a stream of {size} bytes"),
            ));
        }
        if sds[at..end as usize] != sds[mirror as usize..(mirror + h.length as u64) as usize] {
            return Err(SecureError::corrupt(
                Part::Sds,
                mirror,
                "entry mirror",
                format!("a copy of the entry at {pos:#x}"),
                "different bytes",
            ));
        }
        if !ids.insert(h.security_id) {
            return Err(SecureError::corrupt(
                Part::Sds,
                pos + 4,
                "security_id",
                "an id used once",
                format!("{:#x} again", h.security_id),
            ));
        }
        out.push(h);
        pos = end.div_ceil(SDS_ENTRY_ALIGN) * SDS_ENTRY_ALIGN;
    }
    Ok(out)
}

/// What parsing one descriptor did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorOutcome {
    pub replaced: usize,
    pub unparsed_aces: usize,
}

/// Replaces the old machine SID by the new one in every SID of the self-relative descriptor
/// `sd` (at `base` in `$SDS`, for messages): the owner, the group, and the SID of every ACE of
/// the SACL and DACL. A SID is changed when it is S-1-5-21-a-b-c or S-1-5-21-a-b-c-… with a, b,
/// c the old triple; every other SID is left as is.
pub fn rewrite_descriptor(
    sd: &mut [u8],
    base: u64,
    old: &[u8; 12],
    new: &[u8; 12],
) -> Result<DescriptorOutcome, SecureError> {
    let err = |at: usize, what: &'static str, expected: String, found: String| {
        SecureError::corrupt(Part::Sds, base + at as u64, what, expected, found)
    };
    if sd.len() < SD_HEADER_LEN {
        return Err(err(
            0,
            "security descriptor",
            format!("at least {SD_HEADER_LEN} bytes"),
            format!("{}", sd.len()),
        ));
    }
    let control = sd_u16(sd, SD_CONTROL, base)?;
    if sd[0] != 1 || control & SE_SELF_RELATIVE == 0 {
        return Err(err(
            0,
            "security descriptor header",
            "revision 1, self-relative (control 0x8000)".into(),
            format!("revision {}, control {control:#06x}", sd[0]),
        ));
    }
    let mut outcome = DescriptorOutcome::default();
    for field in [SD_OWNER, SD_GROUP] {
        let at = sd_u32(sd, field, base)? as usize;
        if at != 0 {
            let end = sid_end(sd, at, sd.len(), base)?;
            outcome.replaced += replace_sid(&mut sd[at..end], old, new);
        }
    }
    for field in [SD_SACL, SD_DACL] {
        let at = sd_u32(sd, field, base)? as usize;
        if at != 0 {
            rewrite_acl(sd, at, base, old, new, &mut outcome)?;
        }
    }
    Ok(outcome)
}

/// The little-endian u16 at `at` of the descriptor `sd` (at `base` in `$SDS`).
fn sd_u16(sd: &[u8], at: usize, base: u64) -> Result<u16, SecureError> {
    u16_at(sd, at).ok_or_else(|| field_past_end(sd, at, base))
}

/// The little-endian u32 at `at` of the descriptor `sd` (at `base` in `$SDS`).
fn sd_u32(sd: &[u8], at: usize, base: u64) -> Result<u32, SecureError> {
    u32_at(sd, at).ok_or_else(|| field_past_end(sd, at, base))
}

fn field_past_end(sd: &[u8], at: usize, base: u64) -> SecureError {
    SecureError::corrupt(
        Part::Sds,
        base.saturating_add(at as u64),
        "security descriptor field",
        format!("a field inside the {}-byte descriptor", sd.len()),
        "its end",
    )
}

/// The end of the SID at `at`, which must lie inside `..limit`.
fn sid_end(sd: &[u8], at: usize, limit: usize, base: u64) -> Result<usize, SecureError> {
    let bad = |expected: String, found: String| {
        SecureError::corrupt(Part::Sds, base + at as u64, "SID", expected, found)
    };
    if at.checked_add(SID_HEADER_LEN).is_none_or(|e| e > limit) {
        return Err(bad(
            format!("a SID header before {:#x}", base + limit as u64),
            "too little room".into(),
        ));
    }
    let count = sd[at + 1] as usize;
    if sd[at] != 1 || count == 0 || count > SID_MAX_SUBAUTHORITIES {
        return Err(bad(
            "revision 1 and 1 to 15 sub-authorities".into(),
            format!("revision {}, {count} sub-authorities", sd[at]),
        ));
    }
    let end = at + SID_HEADER_LEN + 4 * count;
    if end > limit {
        return Err(bad(
            format!("{count} sub-authorities before {:#x}", base + limit as u64),
            format!("a SID ending at {:#x}", base + end as u64),
        ));
    }
    Ok(end)
}

/// Replaces the triple of a validated SID if it is the old machine SID or one of its accounts.
fn replace_sid(sid: &mut [u8], old: &[u8; 12], new: &[u8; 12]) -> usize {
    let count = sid[1] as usize;
    if count >= 4
        && sid[2..8] == NT_AUTHORITY
        && u32_at(sid, SID_HEADER_LEN) == Some(NT_NON_UNIQUE)
        && sid[12..24] == old[..]
    {
        sid[12..24].copy_from_slice(new);
        1
    } else {
        0
    }
}

/// Where an ACE of type `ty` keeps its SID, relative to the ACE (`None` for types whose layout
/// we do not parse: the compound ACE and unknown types). [MS-DTYP 2.4.4; winnt.h ACE types]
fn ace_sid_offset(ty: u8, ace: &[u8]) -> Option<usize> {
    match ty {
        // Basic layout: header, mask, SID (callback and resource-attribute ACEs add data
        // after the SID): ACCESS_ALLOWED, ACCESS_DENIED, SYSTEM_AUDIT, SYSTEM_ALARM,
        // *_CALLBACK, SYSTEM_MANDATORY_LABEL, SYSTEM_RESOURCE_ATTRIBUTE,
        // SYSTEM_SCOPED_POLICY_ID, SYSTEM_PROCESS_TRUST_LABEL, SYSTEM_ACCESS_FILTER.
        0x00..=0x03 | 0x09 | 0x0A | 0x0D | 0x0E | 0x11..=0x15 => Some(ACE_HEADER_LEN + 4),
        // Object layout: header, mask, flags, optional GUIDs, SID: *_OBJECT and
        // *_CALLBACK_OBJECT.
        0x05..=0x08 | 0x0B | 0x0C | 0x0F | 0x10 => {
            let flags_at = ACE_HEADER_LEN + 4;
            let flags = u32_at(ace, flags_at)?;
            let mut at = flags_at + 4;
            if flags & ACE_OBJECT_TYPE_PRESENT != 0 {
                at += GUID_LEN;
            }
            if flags & ACE_INHERITED_OBJECT_TYPE_PRESENT != 0 {
                at += GUID_LEN;
            }
            Some(at)
        }
        _ => None,
    }
}

fn rewrite_acl(
    sd: &mut [u8],
    at: usize,
    base: u64,
    old: &[u8; 12],
    new: &[u8; 12],
    outcome: &mut DescriptorOutcome,
) -> Result<(), SecureError> {
    let err = |off: usize, what: &'static str, expected: String, found: String| {
        SecureError::corrupt(Part::Sds, base + off as u64, what, expected, found)
    };
    if at.checked_add(ACL_HEADER_LEN).is_none_or(|e| e > sd.len()) {
        return Err(err(
            at,
            "ACL header",
            format!("8 bytes inside the {}-byte descriptor", sd.len()),
            "too little room".into(),
        ));
    }
    let size = usize::from(sd_u16(sd, at + 2, base)?);
    let count = usize::from(sd_u16(sd, at + 4, base)?);
    let end = at + size;
    if size < ACL_HEADER_LEN || end > sd.len() {
        return Err(err(
            at + 2,
            "ACL size",
            format!("8 to {} bytes", sd.len() - at),
            format!("{size}"),
        ));
    }
    let mut p = at + ACL_HEADER_LEN;
    for i in 0..count {
        if p + ACE_HEADER_LEN > end {
            return Err(err(
                p,
                "ACE",
                format!("{count} ACEs inside the ACL of {size} bytes"),
                format!("ACE {i} starting at its end"),
            ));
        }
        let ty = sd[p];
        let ace_size = usize::from(sd_u16(sd, p + 2, base)?);
        if ace_size < ACE_HEADER_LEN || p + ace_size > end {
            return Err(err(
                p + 2,
                "ACE size",
                format!("4 to {} bytes", end - p),
                format!("{ace_size}"),
            ));
        }
        match ace_sid_offset(ty, &sd[p..p + ace_size]) {
            Some(rel) => {
                let sid_at = p + rel;
                let sid_stop = sid_end(sd, sid_at, p + ace_size, base)?;
                outcome.replaced += replace_sid(&mut sd[sid_at..sid_stop], old, new);
            }
            None => outcome.unparsed_aces += 1,
        }
        p += ace_size;
    }
    Ok(())
}
