//! Rewriting one Windows XML Event Log (.evtx) file: the old machine SID becomes the new one
//! everywhere in the file, and every checksum that was valid in the master is valid in the clone.
//!
//! [`rewrite_evtx`] is a pure function from (master file bytes, [`SidMapping`]) to the clone's file
//! bytes plus an [`EvtxReport`]. The caller diffs the result against the master and maps the
//! changed bytes onto the disk.
//!
//! Layout [libyal/libevtx `documentation/Windows XML Event Log (EVTX).asciidoc`;
//! williballenthin/python-evtx `Evtx/Evtx.py` (`FileHeader`, `ChunkHeader`); docs/FORMAT-FACTS.md §5]:
//! - a 4096-byte file header, "ElfFile\0", whose CRC32 at 124 covers bytes [0, 120);
//! - then 64 KiB chunks, "ElfChnk\0", each with a 512-byte header: the free-space offset at 0x30
//!   (where the records end), the records CRC32 at 0x34 over [0x200, free-space offset), and the
//!   header CRC32 at 0x7C over [0, 0x78) ∪ [0x80, 0x200) — which includes the records CRC, so the
//!   records CRC is computed first;
//! - records (`2a 2a 00 00`, size, id, FILETIME, binary XML, size copy) never cross a chunk. A SID
//!   is stored in binary XML as a SidType (0x13) value (the 12-byte sub-authority triple inside
//!   it) and in strings as UTF-16LE text; both keep their length under the mapping.
//!
//! What it does:
//! 1. Validates the file header (signature, header block size) and remembers, for the file header
//!    and for every full chunk that has the chunk signature, which stored CRCs are valid.
//! 2. Replaces every occurrence of the old SID in every form in the whole file (the mapping keeps
//!    every length).
//! 3. For every chunk whose bytes changed: recomputes the records CRC if it was valid in the master,
//!    then the header CRC if it was valid in the master. A CRC that was already wrong in the master
//!    is left exactly as it was and reported, so the clone is never more broken than the master
//!    and never silently repaired. The same for the file header.
//!
//! CRC-32 is the zlib one (RFC 1952: reflected polynomial 0xEDB88320, initial value and final XOR
//! 0xFFFFFFFF), as python-evtx computes it with `binascii.crc32`; `crate::image::partition::crc32`
//! implements exactly that (its test checks the standard check value).
//!
//! Bounded: one pass over the file; no offset read from the file is used without a range check.

#![forbid(unsafe_code)]

use std::fmt;

use serde::Serialize;

use super::hive::FormCounts;
use super::mapping::SidMapping;
use crate::image::partition::crc32::crc32;
use crate::le::u32_at;

/// "ElfFile\0" at the start of the file [libevtx "File header"].
pub const FILE_SIGNATURE: &[u8; 8] = b"ElfFile\0";
/// "ElfChnk\0" at the start of every chunk in use [libevtx "Chunk header"].
pub const CHUNK_SIGNATURE: &[u8; 8] = b"ElfChnk\0";
/// The file header block: chunks start after it [libevtx: "header block size ... 4096"].
pub const FILE_HEADER_BLOCK: usize = 0x1000;
/// Every chunk is 64 KiB [libevtx "Chunk"].
pub const CHUNK_SIZE: usize = 0x1_0000;

/// File header: header block size (u16), expected [`FILE_HEADER_BLOCK`] [libevtx; python-evtx
/// `header_chunk_size`].
const FILE_HEADER_BLOCK_SIZE: usize = 0x28;
/// File header: the checksummed bytes are [0, 120) [libevtx "checksum ... CRC32 of the first 120
/// bytes"; python-evtx `calculate_checksum` over 0x78 bytes].
const FILE_CHECKSUMMED_END: usize = 0x78;
/// File header: CRC32 field (u32) at 124.
const FILE_CHECKSUM: usize = 0x7C;

/// Chunk header: free-space offset (u32), relative to the chunk: where the last record ends.
const CHUNK_FREE_SPACE: usize = 0x30;
/// Chunk header: event records CRC32 (u32) over [0x200, free-space offset).
const CHUNK_RECORDS_CHECKSUM: usize = 0x34;
/// Chunk header: the first checksummed header range is [0, 0x78) ...
const CHUNK_HEADER_PART1_END: usize = 0x78;
/// ... and the second [0x80, 0x200): the string and template offset tables.
const CHUNK_HEADER_PART2: usize = 0x80;
/// Chunk header: header CRC32 (u32).
const CHUNK_HEADER_CHECKSUM: usize = 0x7C;
/// The chunk header is 512 bytes; records start here.
pub const CHUNK_RECORDS_START: usize = 0x200;

/// Which CRC of a chunk or of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Checksum {
    /// The file header CRC at 124.
    FileHeader,
    /// A chunk's records CRC at 0x34.
    ChunkRecords,
    /// A chunk's header CRC at 0x7C.
    ChunkHeader,
}

/// A checksum that was already wrong in the master: left as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleChecksum {
    /// Absolute file offset of the stored CRC field.
    pub at: usize,
    pub which: Checksum,
    pub stored: u32,
    /// What the master's bytes actually give.
    pub computed: u32,
}

/// A chunk-sized block whose records CRC cannot even be computed (its free-space offset is out of
/// range): its SIDs are replaced, its checksums left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadableChunk {
    /// Absolute file offset of the chunk.
    pub at: usize,
    pub free_space_offset: u32,
}

/// What [`rewrite_evtx`] changed and what it left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EvtxReport {
    /// Every occurrence replaced, by form.
    pub replaced: FormCounts,
    /// Full 64 KiB blocks after the file header that carry the chunk signature.
    pub chunks: usize,
    /// Full blocks without the chunk signature (preallocated, never used): SIDs are replaced in
    /// them too, but they have no checksum.
    pub blocks_without_signature: usize,
    /// Bytes after the last full chunk (not a chunk; no checksum).
    pub trailing_bytes: usize,
    /// Chunks whose bytes changed.
    pub chunks_changed: usize,
    /// Records CRCs recomputed (valid in the master, and the chunk changed).
    pub records_checksums_updated: usize,
    /// Header CRCs recomputed.
    pub header_checksums_updated: usize,
    /// The file header changed and its CRC was recomputed.
    pub file_checksum_updated: bool,
    /// CRCs that were wrong in the master, of a part that changed: left as they were.
    pub stale_checksums: Vec<StaleChecksum>,
    /// Chunks with an out-of-range free-space offset.
    pub unreadable_chunks: Vec<UnreadableChunk>,
}

/// The clone's log file and what changed.
#[derive(Debug, Clone)]
pub struct EvtxRewrite {
    /// The whole clone file, as long as the master's.
    pub bytes: Vec<u8>,
    pub report: EvtxReport,
}

/// Why a file could not be rewritten as an event log. Offsets are absolute file offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvtxError {
    /// Shorter than the file header block.
    Truncated { len: usize },
    /// The file does not start with "ElfFile\0".
    NotEvtx { found: [u8; 8] },
    /// The header block size field is not 4096: a layout this module does not know.
    HeaderBlockSize { at: usize, found: u16 },
}

impl fmt::Display for EvtxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvtxError::Truncated { len } => write!(
                f,
                "at 0x0: expected an event log of at least {FILE_HEADER_BLOCK:#x} bytes, found {len:#x}"
            ),
            EvtxError::NotEvtx { found } => write!(
                f,
                "at 0x0: expected the signature \"ElfFile\\0\", found {:02x?}",
                found
            ),
            EvtxError::HeaderBlockSize { at, found } => write!(
                f,
                "at {at:#x}: expected a header block size of {FILE_HEADER_BLOCK:#x}, found {found:#x}"
            ),
        }
    }
}

impl std::error::Error for EvtxError {}

fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// The file header CRC: CRC32 of bytes [0, 120). `header` is at least 120 bytes long.
pub fn file_header_checksum(header: &[u8]) -> u32 {
    crc32(&header[..FILE_CHECKSUMMED_END])
}

/// A chunk's records CRC: CRC32 of [0x200, free-space offset), or `None` if the free-space offset
/// is outside [0x200, chunk length]. `chunk` is one whole chunk.
pub fn chunk_records_checksum(chunk: &[u8]) -> Option<u32> {
    let free = u32_at(chunk, CHUNK_FREE_SPACE)? as usize;
    if free < CHUNK_RECORDS_START {
        return None;
    }
    Some(crc32(chunk.get(CHUNK_RECORDS_START..free)?))
}

/// A chunk's header CRC: CRC32 of [0, 0x78) followed by [0x80, 0x200). `chunk` is at least 512
/// bytes long.
pub fn chunk_header_checksum(chunk: &[u8]) -> u32 {
    let mut covered = [0u8; CHUNK_HEADER_PART1_END + (CHUNK_RECORDS_START - CHUNK_HEADER_PART2)];
    covered[..CHUNK_HEADER_PART1_END].copy_from_slice(&chunk[..CHUNK_HEADER_PART1_END]);
    covered[CHUNK_HEADER_PART1_END..]
        .copy_from_slice(&chunk[CHUNK_HEADER_PART2..CHUNK_RECORDS_START]);
    crc32(&covered)
}

/// The state of one chunk's checksums in the master.
struct ChunkState {
    at: usize,
    /// `Some(valid)` if the records CRC can be computed.
    records_valid: Option<bool>,
    header_valid: bool,
}

/// Rewrites a whole .evtx file. See the module documentation.
pub fn rewrite_evtx(original: &[u8], map: &SidMapping) -> Result<EvtxRewrite, EvtxError> {
    if original.len() < FILE_HEADER_BLOCK {
        return Err(EvtxError::Truncated {
            len: original.len(),
        });
    }
    let mut signature = [0u8; 8];
    signature.copy_from_slice(&original[..8]);
    if &signature != FILE_SIGNATURE {
        return Err(EvtxError::NotEvtx { found: signature });
    }
    let block = u16::from_le_bytes([
        original[FILE_HEADER_BLOCK_SIZE],
        original[FILE_HEADER_BLOCK_SIZE + 1],
    ]);
    if usize::from(block) != FILE_HEADER_BLOCK {
        return Err(EvtxError::HeaderBlockSize {
            at: FILE_HEADER_BLOCK_SIZE,
            found: block,
        });
    }

    let mut report = EvtxReport::default();
    let file_stored = u32_at(original, FILE_CHECKSUM).unwrap_or(0);
    let file_computed = file_header_checksum(original);

    // 1. The master's checksums, chunk by chunk.
    let mut chunks = Vec::new();
    let mut at = FILE_HEADER_BLOCK;
    while let Some(chunk) = at
        .checked_add(CHUNK_SIZE)
        .and_then(|end| original.get(at..end))
    {
        if &chunk[..8] == CHUNK_SIGNATURE {
            report.chunks += 1;
            let records_valid = chunk_records_checksum(chunk)
                .map(|c| Some(c) == u32_at(chunk, CHUNK_RECORDS_CHECKSUM));
            let header_valid =
                Some(chunk_header_checksum(chunk)) == u32_at(chunk, CHUNK_HEADER_CHECKSUM);
            chunks.push(ChunkState {
                at,
                records_valid,
                header_valid,
            });
        } else {
            report.blocks_without_signature += 1;
        }
        at += CHUNK_SIZE;
    }
    report.trailing_bytes = original.len() - at;

    // 2. Every occurrence, in the whole file.
    let mut bytes = original.to_vec();
    for occ in map.find_all(original, true) {
        report.replaced.add(occ.form);
    }
    map.replace_all(&mut bytes);

    // 3. The checksums of what changed, records before header.
    for state in &chunks {
        let range = state.at..state.at + CHUNK_SIZE;
        if bytes[range.clone()] == original[range.clone()] {
            continue;
        }
        report.chunks_changed += 1;
        let master = &original[range.clone()];
        let chunk = &mut bytes[range];
        match state.records_valid {
            None => report.unreadable_chunks.push(UnreadableChunk {
                at: state.at,
                free_space_offset: u32_at(master, CHUNK_FREE_SPACE).unwrap_or(0),
            }),
            Some(true) => {
                // Computed over the clone's own free-space offset (a SID cannot change it
                // unless the header itself held the SID's bytes; then this follows the clone).
                if let Some(c) = chunk_records_checksum(chunk) {
                    if u32_at(chunk, CHUNK_RECORDS_CHECKSUM) != Some(c) {
                        put_u32(chunk, CHUNK_RECORDS_CHECKSUM, c);
                        report.records_checksums_updated += 1;
                    }
                }
            }
            Some(false) => {
                // In range: `records_valid` is `Some` only for a free-space offset in the chunk.
                let free = u32_at(master, CHUNK_FREE_SPACE).unwrap_or(0) as usize;
                let records = CHUNK_RECORDS_START..free;
                if master[records.clone()] != chunk[records] {
                    report.stale_checksums.push(StaleChecksum {
                        at: state.at + CHUNK_RECORDS_CHECKSUM,
                        which: Checksum::ChunkRecords,
                        stored: u32_at(master, CHUNK_RECORDS_CHECKSUM).unwrap_or(0),
                        computed: chunk_records_checksum(master).unwrap_or(0),
                    });
                }
            }
        }
        let header_changed = master[..CHUNK_RECORDS_START] != chunk[..CHUNK_RECORDS_START];
        if !header_changed {
            continue;
        }
        if state.header_valid {
            put_u32(chunk, CHUNK_HEADER_CHECKSUM, chunk_header_checksum(chunk));
            report.header_checksums_updated += 1;
        } else {
            report.stale_checksums.push(StaleChecksum {
                at: state.at + CHUNK_HEADER_CHECKSUM,
                which: Checksum::ChunkHeader,
                stored: u32_at(master, CHUNK_HEADER_CHECKSUM).unwrap_or(0),
                computed: chunk_header_checksum(master),
            });
        }
    }

    if bytes[..FILE_CHECKSUMMED_END] != original[..FILE_CHECKSUMMED_END] {
        if file_stored == file_computed {
            let crc = file_header_checksum(&bytes);
            put_u32(&mut bytes, FILE_CHECKSUM, crc);
            report.file_checksum_updated = true;
        } else {
            report.stale_checksums.push(StaleChecksum {
                at: FILE_CHECKSUM,
                which: Checksum::FileHeader,
                stored: file_stored,
                computed: file_computed,
            });
        }
    }
    Ok(EvtxRewrite { bytes, report })
}

#[cfg(test)]
mod tests;
