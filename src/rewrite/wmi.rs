//! Rewriting the WMI (CIM) repository of Windows Vista and later
//! (`Windows\System32\wbem\Repository`: `OBJECTS.DATA`, `INDEX.BTR`, `MAPPING1..3.MAP`) so that
//! the old machine SID becomes the new one and every checksum sidfs knows stays valid. Event
//! filter and consumer instances (`__EventFilter`, `__EventConsumer` subclasses) carry a binary
//! `CreatorSID`: the SID of the account that registered them.
//!
//! [`rewrite_wmi`] is a pure function from (the master's `OBJECTS.DATA` and mapping files,
//! [`SidMapping`]) to the clone's files plus a [`WmiReport`], or a [`WmiError`] saying why the
//! repository cannot be rewritten faithfully (the caller then refuses the master: docs/SEMANTICS.md
//! invariant 8).
//!
//! Layout, format version 2.1 [libyal dtformats, "WMI repository file format", sections "The
//! mapping file" and "The objects data file"; all fields little-endian u32]; see
//! docs/SEMANTICS.md, "WMI repository", for what is a published fact and what is an assumption:
//! - `OBJECTS.DATA` is an array of 8192-byte pages. A page that starts a record begins with an
//!   array of 16-byte object descriptors (identifier, data offset from the page start, data size,
//!   data checksum: a CRC-32 with polynomial 0xedb88320 of the record data) ended by an all-zero
//!   descriptor; a record longer than the rest of its page continues over the following
//!   *logical* pages, whole pages without descriptors.
//! - A mapping file holds a 24-byte header (signature 0xabcd, sequence number, two identifiers,
//!   physical page count, entry count), the objects mapping table of 24-byte entries (physical
//!   page number in the low 30 bits, page checksum, free space, used space, two identifiers),
//!   a free-page table (count, then 32-bit entries), the footer 0xdcba, and then the same for
//!   `INDEX.BTR`. The file with the highest sequence number is the current one; the two others
//!   are older generations.
//! - The notes call the entry's page checksum "unknown (CRC-32?)". sidfs treats it as the CRC-32
//!   of the whole 8192-byte physical page only where the master's value is exactly that: then it
//!   is recomputed for the clone's page. A current entry whose non-zero value is something else,
//!   on a page that changes, is a checksum sidfs cannot recompute: an error.
//! - `INDEX.BTR` keys are hashes of upper-case names and `page.id.size` triples of the records:
//!   a same-size replacement changes none of them, except where the hashed name is an instance's
//!   key value that holds the SID: that is an error ([`keys`]). A SID inside `INDEX.BTR` itself
//!   (whose pages have checksums in the mapping files too) is an error.
//!
//! What it does: replaces the SID in every form record by record (so that an occurrence split
//! across the pages of one record is found), then in the rest of the file (free space, deleted
//! records), recomputes the data checksum of every record that changed (the master's must be
//! valid), and then the page checksums as above, in every mapping file.
//!
//! Bounded: every offset is range-checked; descriptors per page and pages per record are bounded
//! by the page and file sizes.

#![forbid(unsafe_code)]

use std::fmt;

use serde::Serialize;

use super::hive::FormCounts;
use super::mapping::{Form, SidMapping};
use crate::image::partition::crc32::crc32;

/// Size of an `OBJECTS.DATA` (and `INDEX.BTR`) page.
pub const PAGE_SIZE: usize = 0x2000;
/// Signature of a mapping file header (and of each of its two tables' headers).
pub const MAPPING_SIGNATURE: u32 = 0xabcd;
/// Signature that ends a mapping table.
pub const MAPPING_FOOTER: u32 = 0xdcba;
/// Version 2.1 mapping header and entry sizes.
pub const MAPPING_HEADER_LEN: usize = 24;
pub const MAPPING_ENTRY_LEN: usize = 24;
/// Object descriptor size.
pub const DESCRIPTOR_LEN: usize = 16;
/// The low 30 bits of a mapping entry are the physical page number; this value is "unmapped".
pub const PAGE_NUMBER_MASK: u32 = 0x3fff_ffff;

// Mapping header fields.
const MH_SEQUENCE: usize = 4;
const MH_ENTRY_COUNT: usize = 20;
// Mapping entry fields.
const ME_PAGE_CHECKSUM: usize = 4;
// Object descriptor fields.
const OD_OFFSET: usize = 4;
const OD_SIZE: usize = 8;
const OD_CHECKSUM: usize = 12;

/// Why a repository could not be rewritten with valid checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WmiError {
    /// `OBJECTS.DATA` is not a whole number of pages.
    ObjectsSize { len: usize },
    /// A mapping file that is not a version 2.1 mapping (Windows XP/2003 use 2.0).
    Mapping { file: usize, at: usize, why: String },
    /// No mapping file could be read.
    NoMapping,
    /// An object descriptor that does not fit its page or the file.
    Descriptor {
        page: u32,
        at: usize,
        why: &'static str,
    },
    /// A record that holds the SID but whose data checksum is already wrong in the master.
    RecordChecksum {
        page: u32,
        id: u32,
        stored: u32,
        computed: u32,
    },
    /// A page that changes whose checksum in the current mapping file is not the CRC-32 of the
    /// page.
    PageChecksum {
        page: u32,
        stored: u32,
        computed: u32,
    },
    /// `INDEX.BTR` holds the SID.
    SidInIndex,
    /// A record holds the SID in a string that `INDEX.BTR` names an object by (the hash of a key
    /// value, [`keys`]): the rewritten instance could not be found by its new key.
    SidInKey {
        page: u32,
        id: u32,
        /// The instance's class, when its name hash could be resolved.
        class: Option<String>,
        key: String,
    },
}

impl fmt::Display for WmiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WmiError::ObjectsSize { len } => write!(
                f,
                "OBJECTS.DATA is {len} bytes, not a whole number of {PAGE_SIZE}-byte pages"
            ),
            WmiError::Mapping { file, at, why } => write!(
                f,
                "MAPPING{file}.MAP at {at:#x}: {why} (only the version 2.1 mapping of Windows Vista and later is followed)"
            ),
            WmiError::NoMapping => write!(f, "none of MAPPING1..3.MAP is a mapping file"),
            WmiError::Descriptor { page, at, why } => write!(
                f,
                "OBJECTS.DATA physical page {page}: object descriptor at {at:#x} {why}"
            ),
            WmiError::RecordChecksum {
                page,
                id,
                stored,
                computed,
            } => write!(
                f,
                "OBJECTS.DATA physical page {page}: record {id} holds the SID but its data checksum is {stored:#010x}, not the CRC-32 {computed:#010x} of its data, in the master"
            ),
            WmiError::PageChecksum {
                page,
                stored,
                computed,
            } => write!(
                f,
                "the current mapping file gives OBJECTS.DATA physical page {page} the checksum {stored:#010x}, not the CRC-32 {computed:#010x} of the page, which sidfs could recompute"
            ),
            WmiError::SidInIndex => write!(
                f,
                "INDEX.BTR holds the SID (its pages have checksums in the mapping files that sidfs does not recompute)"
            ),
            WmiError::SidInKey {
                page,
                id,
                class,
                key,
            } => write!(
                f,
                "OBJECTS.DATA physical page {page}: record {id} ({}) holds the SID in a key property: INDEX.BTR finds that instance by the hash of its key value \"{key}\", which a same-length rewrite would leave stale (the instance could no longer be found by its new key)",
                class.as_deref().map_or_else(
                    || "an instance of a class sidfs cannot name".to_string(),
                    |c| format!("an instance of {c}")
                )
            ),
        }
    }
}

impl std::error::Error for WmiError {}

/// What [`rewrite_wmi`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WmiReport {
    pub replaced: FormCounts,
    /// Records (object descriptors) of the pages the current mapping uses.
    pub records: usize,
    pub records_changed: usize,
    /// Physical pages of `OBJECTS.DATA` whose bytes changed.
    pub pages_changed: usize,
    /// Page checksums recomputed, over all mapping files.
    pub page_checksums_updated: usize,
    /// Sequence number of the current mapping file.
    pub sequence: u32,
}

/// The clone's files.
#[derive(Debug)]
pub struct WmiOutput {
    pub objects: Vec<u8>,
    /// The mapping files, in the order given.
    pub mappings: Vec<Vec<u8>>,
    pub report: WmiReport,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    if let Some(b) = bytes.get_mut(at..at + 4) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// One entry of the objects mapping table.
#[derive(Debug, Clone, Copy)]
struct MappingEntry {
    /// Physical page ([`PAGE_NUMBER_MASK`] when unmapped).
    page: u32,
    /// Offset of the page checksum in the mapping file.
    checksum_at: usize,
    checksum: u32,
}

/// The objects mapping table of one version 2.1 mapping file.
struct MappingFile {
    sequence: u32,
    entries: Vec<MappingEntry>,
}

/// Parses the objects mapping table of a version 2.1 mapping file (`file` is its number, for
/// errors).
fn parse_mapping(bytes: &[u8], file: usize) -> Result<MappingFile, WmiError> {
    let bad = |at: usize, why: String| WmiError::Mapping { file, at, why };
    let sig = u32_at(bytes, 0).ok_or_else(|| bad(0, "shorter than its header".into()))?;
    if sig != MAPPING_SIGNATURE {
        return Err(bad(
            0,
            format!("signature {sig:#x}, not {MAPPING_SIGNATURE:#x}"),
        ));
    }
    let sequence = u32_at(bytes, MH_SEQUENCE).unwrap_or(0);
    let count = u32_at(bytes, MH_ENTRY_COUNT)
        .ok_or_else(|| bad(MH_ENTRY_COUNT, "shorter than its header".into()))?
        as usize;
    let table_end = count
        .checked_mul(MAPPING_ENTRY_LEN)
        .and_then(|n| n.checked_add(MAPPING_HEADER_LEN))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            bad(
                MH_ENTRY_COUNT,
                format!("{count} entries do not fit the file"),
            )
        })?;
    let free = u32_at(bytes, table_end)
        .ok_or_else(|| bad(table_end, "no free-page table after the entries".into()))?
        as usize;
    let footer_at = free
        .checked_mul(4)
        .and_then(|n| n.checked_add(table_end + 4))
        .filter(|&at| at.checked_add(4).is_some_and(|end| end <= bytes.len()))
        .ok_or_else(|| {
            bad(
                table_end,
                format!("{free} free-page entries do not fit the file"),
            )
        })?;
    let footer = u32_at(bytes, footer_at).unwrap_or(0);
    if footer != MAPPING_FOOTER {
        return Err(bad(
            footer_at,
            format!("footer {footer:#x}, not {MAPPING_FOOTER:#x}"),
        ));
    }
    let entries = (0..count)
        .map(|i| {
            let at = MAPPING_HEADER_LEN + i * MAPPING_ENTRY_LEN;
            MappingEntry {
                page: u32_at(bytes, at).unwrap_or(u32::MAX) & PAGE_NUMBER_MASK,
                checksum_at: at + ME_PAGE_CHECKSUM,
                checksum: u32_at(bytes, at + ME_PAGE_CHECKSUM).unwrap_or(0),
            }
        })
        .collect();
    Ok(MappingFile { sequence, entries })
}

/// One record: its descriptor and the file ranges that hold its data, in order.
struct Record {
    page: u32,
    id: u32,
    descriptor_at: usize,
    checksum: u32,
    pieces: Vec<std::ops::Range<usize>>,
}

impl Record {
    fn gather(&self, file: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.pieces {
            out.extend_from_slice(&file[p.clone()]);
        }
        out
    }

    fn scatter(&self, file: &mut [u8], data: &[u8]) {
        let mut from = 0;
        for p in &self.pieces {
            let n = p.len();
            file[p.clone()].copy_from_slice(&data[from..from + n]);
            from += n;
        }
    }
}

/// The records of every page the current mapping uses, in logical page order.
fn records(objects: &[u8], map: &MappingFile) -> Result<Vec<Record>, WmiError> {
    let pages = objects.len() / PAGE_SIZE;
    let physical = |logical: usize| -> Option<usize> {
        let e = map.entries.get(logical)?;
        let p = e.page as usize;
        (e.page != PAGE_NUMBER_MASK && p < pages).then_some(p)
    };
    let mut out = Vec::new();
    // Records do not overlap: together they hold at most the file's bytes. This bounds the work
    // (and memory) a hostile descriptor array can ask for.
    let mut claimed = 0usize;
    let mut logical = 0usize;
    while logical < map.entries.len() {
        let Some(p) = physical(logical) else {
            logical += 1;
            continue;
        };
        let base = p * PAGE_SIZE;
        let mut next_logical = logical + 1;
        for i in 0..PAGE_SIZE / DESCRIPTOR_LEN {
            let at = base + i * DESCRIPTOR_LEN;
            let d = &objects[at..at + DESCRIPTOR_LEN];
            if d.iter().all(|&b| b == 0) {
                break;
            }
            let err = |why| WmiError::Descriptor {
                page: p as u32,
                at,
                why,
            };
            let id = u32_at(d, 0).unwrap_or(0);
            let offset = u32_at(d, OD_OFFSET).unwrap_or(0) as usize;
            let size = u32_at(d, OD_SIZE).unwrap_or(0) as usize;
            if offset < (i + 1) * DESCRIPTOR_LEN || offset >= PAGE_SIZE {
                return Err(err("points outside its page's data"));
            }
            claimed = claimed.saturating_add(size);
            if claimed > objects.len() {
                return Err(err(
                    "makes the records claim more bytes than the file holds",
                ));
            }
            let first = size.min(PAGE_SIZE - offset);
            let mut pieces = Vec::with_capacity(1 + (size - first) / PAGE_SIZE + 1);
            pieces.push(base + offset..base + offset + first);
            let mut left = size - first;
            let mut cont = logical + 1;
            while left > 0 {
                let q = physical(cont).ok_or(err("continues onto a page that is not mapped"))?;
                let n = left.min(PAGE_SIZE);
                pieces.push(q * PAGE_SIZE..q * PAGE_SIZE + n);
                left -= n;
                cont += 1;
            }
            // Pages a record continues on carry no descriptors.
            next_logical = next_logical.max(cont);
            out.push(Record {
                page: p as u32,
                id,
                descriptor_at: at,
                checksum: u32_at(d, OD_CHECKSUM).unwrap_or(0),
                pieces,
            });
        }
        logical = next_logical;
    }
    Ok(out)
}

/// Rewrites the repository; `index` is `INDEX.BTR` (only checked), `mappings` are the mapping
/// files found (`MAPPING1..3.MAP`, in order; at least one).
pub fn rewrite_wmi(
    objects: &[u8],
    index: &[u8],
    mappings: &[Vec<u8>],
    sid: &SidMapping,
) -> Result<WmiOutput, WmiError> {
    if !objects.len().is_multiple_of(PAGE_SIZE) {
        return Err(WmiError::ObjectsSize { len: objects.len() });
    }
    if !sid.find_all(index, true).is_empty() {
        return Err(WmiError::SidInIndex);
    }
    let parsed: Vec<Result<MappingFile, WmiError>> = mappings
        .iter()
        .enumerate()
        .map(|(i, m)| parse_mapping(m, i + 1))
        .collect();
    // The current mapping (highest sequence number among the files with the signature) must be
    // readable; an older one that is not is only a stale backup.
    let current_index = mappings
        .iter()
        .enumerate()
        .filter(|(_, m)| u32_at(m, 0) == Some(MAPPING_SIGNATURE))
        .max_by_key(|(i, m)| (u32_at(m, MH_SEQUENCE).unwrap_or(0), usize::MAX - i))
        .map(|(i, _)| i)
        .ok_or(WmiError::NoMapping)?;
    let current = parsed[current_index].as_ref().map_err(Clone::clone)?;
    let records = records(objects, current)?;
    refuse_sid_in_key(objects, index, &records, sid)?;
    let mut report = WmiReport {
        records: records.len(),
        sequence: current.sequence,
        ..WmiReport::default()
    };
    let mut out = objects.to_vec();
    for r in &records {
        let mut data = r.gather(&out);
        for o in sid.find_all(&data, true) {
            report.replaced.add(o.form);
        }
        if sid.replace_all(&mut data) > 0 {
            r.scatter(&mut out, &data);
        }
    }
    // Free space and deleted records: no checksum covers them.
    for o in sid.find_all(&out, true) {
        report.replaced.add(o.form);
    }
    sid.replace_all(&mut out);
    for r in &records {
        let before = r.gather(objects);
        let after = r.gather(&out);
        if before == after {
            continue;
        }
        let computed = crc32(&before);
        if r.checksum != computed {
            return Err(WmiError::RecordChecksum {
                page: r.page,
                id: r.id,
                stored: r.checksum,
                computed,
            });
        }
        put_u32(&mut out, r.descriptor_at + OD_CHECKSUM, crc32(&after));
        report.records_changed += 1;
    }
    let mut new_mappings = mappings.to_vec();
    for p in 0..objects.len() / PAGE_SIZE {
        let range = p * PAGE_SIZE..(p + 1) * PAGE_SIZE;
        if objects[range.clone()] == out[range.clone()] {
            continue;
        }
        report.pages_changed += 1;
        let (old_crc, new_crc) = (crc32(&objects[range.clone()]), crc32(&out[range]));
        for (i, m) in parsed.iter().enumerate() {
            let Ok(m) = m else { continue };
            for e in m.entries.iter().filter(|e| e.page as usize == p) {
                if e.checksum == old_crc {
                    put_u32(&mut new_mappings[i], e.checksum_at, new_crc);
                    report.page_checksums_updated += 1;
                } else if i == current_index && e.checksum != 0 {
                    return Err(WmiError::PageChecksum {
                        page: p as u32,
                        stored: e.checksum,
                        computed: old_crc,
                    });
                }
            }
        }
    }
    Ok(WmiOutput {
        objects: out,
        mappings: new_mappings,
        report,
    })
}

/// An error when a record holds the SID in a string `INDEX.BTR` names an object by ([`keys`]).
fn refuse_sid_in_key(
    objects: &[u8],
    index: &[u8],
    records: &[Record],
    sid: &SidMapping,
) -> Result<(), WmiError> {
    let mut digests = None;
    for r in records {
        let data = r.gather(objects);
        for o in sid.find_all(&data, true) {
            if o.form == Form::Binary {
                continue;
            }
            let d = digests.get_or_insert_with(|| keys::index_digests(index));
            if let Some(key) = keys::indexed_key(&data, &o, d) {
                return Err(WmiError::SidInKey {
                    page: r.page,
                    id: r.id,
                    class: keys::class_name(&data, objects),
                    key,
                });
            }
        }
    }
    Ok(())
}

pub mod keys;
#[cfg(test)]
mod tests;
