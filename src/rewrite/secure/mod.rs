//! The `$Secure` rewrite: every security descriptor of an NTFS volume that names the old machine
//! SID (or an account of it) names the new one, and `$SDS`, `$SII` and `$SDH` stay consistent.
//!
//! `$Secure` (MFT record 9) holds [docs/FORMAT-FACTS.md §3 "$Secure"; ntfs-3g layout.h, security.c]:
//! - `$SDS`, a named `$DATA` stream of entries {hash, security_id, offset, length, SD}, each
//!   written twice (the mirror at offset + 0x40000);
//! - `$SII`, an index keyed by security_id whose data is the 20-byte `$SDS` entry header;
//! - `$SDH`, an index keyed by {hash, security_id} (collated by hash, then id) with the same data.
//!
//! A SID change inside a descriptor changes its hash, so [`rewrite_secure`] rewrites both `$SDS`
//! copies with new hashes, the hash in every `$SII` data, and the `$SDH` keys and data in their
//! new order. Every `$SDH` entry has the same size, so the re-sorted sequence is written into the
//! existing in-order slots: the tree keeps its shape and every buffer keeps its length.
//!
//! The transform is pure (bytes in, bytes out); [`image`] reads the parts from an image and
//! writes the results back. [`verify_secure`] checks the invariants on any set of parts.
#![forbid(unsafe_code)]

pub mod image;
pub mod index;
pub mod sds;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::image::ImageError;
use crate::rewrite::mapping::{Occurrence, SidMapping};

pub use image::{apply_to_image, ResidentValue, SecureLayout};
use index::{IndexTree, Slot};
use sds::{SdsHeader, SDS_HEADER_LEN};

/// Which part of `$Secure` an offset refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Sds,
    SiiRoot,
    SiiAllocation,
    SdhRoot,
    SdhAllocation,
    /// MFT record 9 itself (offsets are image offsets).
    MftRecord,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Sds => "$Secure:$SDS",
            Part::SiiRoot => "$Secure:$SII $INDEX_ROOT",
            Part::SiiAllocation => "$Secure:$SII $INDEX_ALLOCATION",
            Part::SdhRoot => "$Secure:$SDH $INDEX_ROOT",
            Part::SdhAllocation => "$Secure:$SDH $INDEX_ALLOCATION",
            Part::MftRecord => "$Secure MFT record",
        })
    }
}

/// What went wrong, with the offset inside the part and what was expected and found.
#[derive(Debug)]
pub enum SecureError {
    Corrupt {
        part: Part,
        offset: u64,
        what: &'static str,
        expected: String,
        found: String,
    },
    Image(ImageError),
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl SecureError {
    pub(crate) fn corrupt(
        part: Part,
        offset: u64,
        what: &'static str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> SecureError {
        SecureError::Corrupt {
            part,
            offset,
            what,
            expected: expected.into(),
            found: found.into(),
        }
    }
}

impl fmt::Display for SecureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecureError::Corrupt {
                part,
                offset,
                what,
                expected,
                found,
            } => write!(
                f,
                "{part} at {offset:#x}: {what}: expected {expected}, found {found}"
            ),
            SecureError::Image(e) => write!(f, "$Secure: {e}"),
            SecureError::Io { what, source } => write!(f, "$Secure: {what}: {source}"),
        }
    }
}

impl std::error::Error for SecureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SecureError::Image(e) => Some(e),
            SecureError::Io { source, .. } => Some(source),
            SecureError::Corrupt { .. } => None,
        }
    }
}

impl From<ImageError> for SecureError {
    fn from(e: ImageError) -> SecureError {
        SecureError::Image(e)
    }
}

/// The master's bytes of the three parts of `$Secure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecureParts {
    /// The whole `$SDS` stream (its data size).
    pub sds: Vec<u8>,
    /// The `$SII` `$INDEX_ROOT` attribute value (resident, logical bytes: no fixups inside).
    pub sii_root: Vec<u8>,
    /// The `$SII` `$INDEX_ALLOCATION` stream as on disk (INDX blocks with their sector ends
    /// replaced by the update sequence number). Empty if the index has no allocation.
    pub sii_alloc: Vec<u8>,
    pub sdh_root: Vec<u8>,
    pub sdh_alloc: Vec<u8>,
}

/// What [`rewrite_secure`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecureReport {
    /// Entries in `$SDS` (each counted once, not per copy).
    pub descriptors: usize,
    /// Entries whose descriptor changed (and so got a new hash).
    pub descriptors_changed: usize,
    /// SIDs replaced by parsing the descriptors (owner, group, ACE SIDs), primary copies only.
    pub sids_replaced: usize,
    /// ACEs of a type whose layout we do not parse (their bytes are still covered by the
    /// safety net).
    pub unparsed_aces: usize,
    /// Occurrences of the old SID in `$SDS` that the descriptor parse did not explain (slack,
    /// unused space, callback data, unknown ACEs), offsets in `$SDS`. They are replaced too.
    pub unexplained: Vec<Occurrence>,
    pub sii_entries: usize,
    pub sii_entries_changed: usize,
    pub sdh_entries: usize,
    /// `$SDH` slots whose content changed (new hash or a new entry moved in).
    pub sdh_slots_changed: usize,
}

/// The clone's versions of the five buffers (same lengths as the master's) and a report.
#[derive(Clone, Debug)]
pub struct SecureRewrite {
    pub parts: SecureParts,
    pub report: SecureReport,
}

/// What [`verify_secure`] found in a consistent `$Secure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecureSummary {
    pub descriptors: usize,
    pub sii_entries: usize,
    pub sdh_entries: usize,
    /// `$SDS` entries that neither index names (allowed, reported).
    pub unindexed_descriptors: usize,
}

/// `$SII`: collation COLLATION_NTOFS_ULONG [layout.h COLLATION_RULES].
const COLLATION_NTOFS_ULONG: u32 = 0x10;
/// `$SDH`: collation COLLATION_NTOFS_SECURITY_HASH.
const COLLATION_NTOFS_SECURITY_HASH: u32 = 0x12;
/// `$SII` key: the security_id (u32).
const SII_KEY_LEN: usize = 4;
/// `$SDH` key: {hash, security_id}.
const SDH_KEY_LEN: usize = 8;
/// `$SDH` data is followed by 4 bytes ("I\0I\0" or zeros) not counted in data_length
/// [security.c `entersecurity_indexes`].
const SDH_PADDING: usize = 4;

/// One `$SDH` entry's content, which moves between slots when the order changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SdhContent {
    hash: u32,
    security_id: u32,
    data: [u8; SDS_HEADER_LEN],
    padding: [u8; SDH_PADDING],
}

/// A validated `$Secure`: the `$SDS` entries, both index trees (fixups undone) and their slots.
struct Analysis {
    headers: Vec<SdsHeader>,
    sii: IndexTree,
    sii_slots: Vec<Slot>,
    sdh: IndexTree,
    sdh_slots: Vec<Slot>,
    sdh_contents: Vec<SdhContent>,
    unindexed: usize,
}

/// Checks every invariant: `$SDS` entries well formed, hashes right, both copies equal; `$SII`
/// data equal to the `$SDS` headers; `$SDH` keys strictly sorted over the in-order traversal and
/// data equal to the headers; both indexes name the same ids.
fn analyze(parts: &SecureParts) -> Result<Analysis, SecureError> {
    let headers = sds::walk(&parts.sds)?;
    for h in &headers {
        let sd = sds::descriptor(&parts.sds, h);
        let computed = sds::sd_hash(sd);
        if computed != h.hash {
            return Err(SecureError::corrupt(
                Part::Sds,
                h.offset,
                "descriptor hash",
                format!("{computed:#010x} (computed)"),
                format!("{:#010x}", h.hash),
            ));
        }
    }
    let by_id: HashMap<u32, usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| (h.security_id, i))
        .collect();

    let (sii, sii_slots) = IndexTree::load(
        &parts.sii_root,
        &parts.sii_alloc,
        Part::SiiRoot,
        Part::SiiAllocation,
        COLLATION_NTOFS_ULONG,
    )?;
    let mut sii_ids = BTreeSet::new();
    let mut previous: Option<u32> = None;
    for slot in &sii_slots {
        let (key, data) = sii.key_and_data(slot, SII_KEY_LEN, SDS_HEADER_LEN)?;
        let id = u32::from_le_bytes(key.try_into().expect("4-byte key"));
        if previous.is_some_and(|p| p >= id) {
            return Err(sii.corrupt(
                slot,
                "$SII key order",
                format!("a security_id above {:#x}", previous.unwrap_or(0)),
                format!("{id:#x}"),
            ));
        }
        previous = Some(id);
        let header = by_id
            .get(&id)
            .map(|&i| &headers[i])
            .ok_or_else(|| sii.corrupt(slot, "$SII key", "an id present in $SDS", id_str(id)))?;
        if data != header.to_bytes() {
            return Err(sii.corrupt(
                slot,
                "$SII data",
                format!("the $SDS header {:02x?}", header.to_bytes()),
                format!("{data:02x?}"),
            ));
        }
        sii_ids.insert(id);
    }

    let (sdh, sdh_slots) = IndexTree::load(
        &parts.sdh_root,
        &parts.sdh_alloc,
        Part::SdhRoot,
        Part::SdhAllocation,
        COLLATION_NTOFS_SECURITY_HASH,
    )?;
    let mut sdh_contents = Vec::with_capacity(sdh_slots.len());
    let mut sdh_ids = BTreeSet::new();
    let mut previous: Option<(u32, u32)> = None;
    for slot in &sdh_slots {
        let (key, data) = sdh.key_and_data(slot, SDH_KEY_LEN, SDS_HEADER_LEN)?;
        let padding = sdh.after_data(slot, SDH_PADDING)?;
        let hash = u32::from_le_bytes(key[0..4].try_into().expect("4 bytes"));
        let id = u32::from_le_bytes(key[4..8].try_into().expect("4 bytes"));
        if previous.is_some_and(|p| p >= (hash, id)) {
            return Err(sdh.corrupt(
                slot,
                "$SDH key order (hash, then security_id)",
                format!("a key above {:x?}", previous.unwrap_or_default()),
                format!("({hash:#x}, {id:#x})"),
            ));
        }
        previous = Some((hash, id));
        let header = by_id
            .get(&id)
            .map(|&i| &headers[i])
            .ok_or_else(|| sdh.corrupt(slot, "$SDH key", "an id present in $SDS", id_str(id)))?;
        if hash != header.hash || data != header.to_bytes() {
            return Err(sdh.corrupt(
                slot,
                "$SDH key and data",
                format!("the $SDS header {:02x?}", header.to_bytes()),
                format!("key hash {hash:#x}, data {data:02x?}"),
            ));
        }
        if !sdh_ids.insert(id) {
            return Err(sdh.corrupt(slot, "$SDH key", "each id once", id_str(id)));
        }
        sdh_contents.push(SdhContent {
            hash,
            security_id: id,
            data: data.try_into().expect("20 bytes"),
            padding: padding.try_into().expect("4 bytes"),
        });
    }
    if sii_ids != sdh_ids {
        let only: Vec<_> = sii_ids.symmetric_difference(&sdh_ids).take(8).collect();
        return Err(SecureError::corrupt(
            Part::SdhRoot,
            0,
            "index contents",
            "the same security ids in $SII and $SDH",
            format!("ids in only one of them: {only:x?}"),
        ));
    }
    let unindexed = headers
        .iter()
        .filter(|h| !sii_ids.contains(&h.security_id))
        .count();
    Ok(Analysis {
        headers,
        sii,
        sii_slots,
        sdh,
        sdh_slots,
        sdh_contents,
        unindexed,
    })
}

fn id_str(id: u32) -> String {
    format!("security_id {id:#x}")
}

/// Checks that `parts` form a consistent `$Secure` (see [`rewrite_secure`] for the rules).
pub fn verify_secure(parts: &SecureParts) -> Result<SecureSummary, SecureError> {
    let a = analyze(parts)?;
    Ok(SecureSummary {
        descriptors: a.headers.len(),
        sii_entries: a.sii_slots.len(),
        sdh_entries: a.sdh_slots.len(),
        unindexed_descriptors: a.unindexed,
    })
}

/// Rewrites `$Secure` for a clone: the old machine SID (and its account SIDs) becomes the new
/// one in every descriptor, found by parsing the descriptor (owner, group, SACL and DACL ACEs,
/// object ACEs included); hashes are recomputed and both `$SDS` copies written identically;
/// then [`SidMapping::replace_all`] runs over the whole `$SDS` as a safety net and whatever it
/// still finds is replaced and reported in [`SecureReport::unexplained`]. `$SII` data get the
/// new hashes; `$SDH` entries are re-sorted into the existing in-order slots.
///
/// The master must be consistent (what [`verify_secure`] checks); otherwise an error says where.
/// The result has the master's lengths and tree shapes; INDX blocks keep their update sequence
/// number, with fixups redone.
pub fn rewrite_secure(parts: &SecureParts, map: &SidMapping) -> Result<SecureRewrite, SecureError> {
    let Analysis {
        headers,
        mut sii,
        sii_slots,
        mut sdh,
        sdh_slots,
        sdh_contents,
        unindexed: _,
    } = analyze(parts)?;
    let old = map.old().binary_pattern();
    let new = map.new_sid().binary_pattern();
    let mut report = SecureReport {
        descriptors: headers.len(),
        sii_entries: sii_slots.len(),
        sdh_entries: sdh_slots.len(),
        ..Default::default()
    };

    // 1. Parse each descriptor and replace its SIDs; mirror the entry.
    let mut out = parts.sds.clone();
    for h in &headers {
        let range = sds::descriptor_range(h);
        let sd_offset = range.start as u64;
        let outcome = sds::rewrite_descriptor(&mut out[range], sd_offset, &old, &new)?;
        report.sids_replaced += outcome.replaced;
        report.unparsed_aces += outcome.unparsed_aces;
        sds::copy_to_mirror(&mut out, h);
    }
    // 2. Safety net: whatever the parse did not explain.
    report.unexplained = map.find_all(&out, true);
    map.replace_all(&mut out);
    // 3. New hashes, written into both copies.
    let mut new_hash: HashMap<u32, u32> = HashMap::new();
    for h in &headers {
        let range = sds::descriptor_range(h);
        if out[range.clone()] != parts.sds[range.clone()] {
            let hash = sds::sd_hash(&out[range]);
            let at = h.offset as usize;
            out[at..at + 4].copy_from_slice(&hash.to_le_bytes());
            new_hash.insert(h.security_id, hash);
            report.descriptors_changed += 1;
        }
        sds::copy_to_mirror(&mut out, h);
    }

    // 4. $SII: the hash field of the data (its first u32).
    for slot in &sii_slots {
        let (key, _) = sii.key_and_data(slot, SII_KEY_LEN, SDS_HEADER_LEN)?;
        let id = u32::from_le_bytes(key.try_into().expect("4-byte key"));
        if let Some(hash) = new_hash.get(&id) {
            sii.data_mut(slot)?[0..4].copy_from_slice(&hash.to_le_bytes());
            report.sii_entries_changed += 1;
        }
    }

    // 5. $SDH: new keys, sorted, written into the in-order slots.
    let mut sorted: Vec<SdhContent> = sdh_contents
        .iter()
        .map(|c| {
            let mut c = *c;
            if let Some(&hash) = new_hash.get(&c.security_id) {
                c.hash = hash;
                c.data[0..4].copy_from_slice(&hash.to_le_bytes());
            }
            c
        })
        .collect();
    sorted.sort_by_key(|c| (c.hash, c.security_id));
    for ((slot, content), before) in sdh_slots.iter().zip(&sorted).zip(&sdh_contents) {
        if content != before {
            report.sdh_slots_changed += 1;
            let mut key = [0u8; SDH_KEY_LEN];
            key[0..4].copy_from_slice(&content.hash.to_le_bytes());
            key[4..8].copy_from_slice(&content.security_id.to_le_bytes());
            sdh.key_mut(slot)?.copy_from_slice(&key);
            sdh.data_mut(slot)?.copy_from_slice(&content.data);
            sdh.after_data_mut(slot, SDH_PADDING)?
                .copy_from_slice(&content.padding);
        }
    }

    let mut result = SecureParts {
        sds: out,
        sii_root: Vec::new(),
        sii_alloc: parts.sii_alloc.clone(),
        sdh_root: Vec::new(),
        sdh_alloc: parts.sdh_alloc.clone(),
    };
    result.sii_root = sii.store(&mut result.sii_alloc);
    result.sdh_root = sdh.store(&mut result.sdh_alloc);
    Ok(SecureRewrite {
        parts: result,
        report,
    })
}
