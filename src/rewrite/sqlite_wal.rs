//! Rewriting one SQLite write-ahead log (`StateRepository-Machine.srd-wal`, `Windows.db-wal`, any
//! `*-wal` next to its database) so that the old machine SID becomes the new one and every frame
//! SQLite would replay from the master's log is replayed from the clone's.
//!
//! [`rewrite_wal`] is a pure function from (master file bytes, [`SidMapping`]) to the clone's file
//! bytes plus a [`WalReport`], or a [`WalError`] saying why the file cannot be rewritten
//! faithfully (the caller then refuses the master: docs/SEMANTICS.md invariant 8).
//!
//! Layout [sqlite.org/fileformat2.html, "The WAL file format"; all fields big-endian u32]:
//! - a 32-byte header: magic 0x377f0682 or 0x377f0683, format version 3007000, page size,
//!   checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2 (over the first 24 bytes);
//! - then frames: a 24-byte frame header (page number, database size after a commit or 0,
//!   salt-1, salt-2, checksum-1, checksum-2) and one page;
//! - checksums are cumulative: (s0, s1) start at 0, run over the header's first 24 bytes, then for
//!   each frame over the first 8 bytes of its header and its page, continuing from the previous
//!   frame's values ([`wal_checksum`]); the magic's low bit picks the byte order of the words
//!   (1: big-endian, 0: little-endian);
//! - a frame is valid if its salts equal the header's and its checksums match; SQLite stops at the
//!   first frame that is not valid and ignores it and everything after it; a header whose
//!   checksum is wrong makes the whole log empty.
//!
//! What it does: replaces the SID in every form in the whole file (sizes kept), then recomputes
//! the header checksum (if the master's was valid) and, in order, the checksums of every frame
//! that was valid in the master. Bytes after the master's valid frames (frames of an older
//! generation, a torn write) get the byte replacement without checksums: SQLite ignores them in
//! the master and in the clone alike, and no old SID remains in the file. The result is checked:
//! the clone's log must have exactly as many valid frames as the master's.
//!
//! Bounded: one pass over the file; every offset is range-checked.

#![forbid(unsafe_code)]

use std::fmt;

use serde::Serialize;

use super::hive::FormCounts;
use super::mapping::SidMapping;

/// Magic with little-endian checksum words.
pub const MAGIC_LE: u32 = 0x377f_0682;
/// Magic with big-endian checksum words.
pub const MAGIC_BE: u32 = 0x377f_0683;
/// The only WAL format version SQLite has written (3.7.0 and later).
pub const FORMAT_VERSION: u32 = 3_007_000;
/// Header and frame header lengths.
pub const HEADER_LEN: usize = 32;
pub const FRAME_HEADER_LEN: usize = 24;
/// Page sizes SQLite uses: powers of two from 512 to 65536.
pub const PAGE_SIZE_MIN: u32 = 512;
pub const PAGE_SIZE_MAX: u32 = 65536;

/// Why a file could not be rewritten as a SQLite write-ahead log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalError {
    /// Shorter than the WAL header.
    Truncated { len: usize },
    /// No WAL magic at 0.
    NotWal { found: u32 },
    /// A format version other than 3007000.
    UnknownVersion { found: u32 },
    /// A page size SQLite does not use.
    PageSize { found: u32 },
    /// After the rewrite the log would replay a different number of frames (the SID crossed a
    /// salt, so a frame would no longer belong to the log).
    FramesLost { master: usize, clone: usize },
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Truncated { len } => write!(
                f,
                "{len} bytes, shorter than a SQLite WAL header ({HEADER_LEN})"
            ),
            WalError::NotWal { found } => write!(
                f,
                "no SQLite WAL magic at 0 (expected {MAGIC_LE:#010x} or {MAGIC_BE:#010x}, found {found:#010x})"
            ),
            WalError::UnknownVersion { found } => write!(
                f,
                "WAL format version {found}, which sidfs does not know (it knows {FORMAT_VERSION})"
            ),
            WalError::PageSize { found } => write!(
                f,
                "page size {found}, which SQLite does not use (a power of two from {PAGE_SIZE_MIN} to {PAGE_SIZE_MAX})"
            ),
            WalError::FramesLost { master, clone } => write!(
                f,
                "the master's log replays {master} frames but the rewritten one would replay {clone} (the SID overlaps a salt)"
            ),
        }
    }
}

impl std::error::Error for WalError {}

/// What [`rewrite_wal`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WalReport {
    /// Every occurrence replaced, by form.
    pub replaced: FormCounts,
    pub page_size: u32,
    /// Whole frames in the file.
    pub frames: usize,
    /// Frames SQLite replays from the master's log (the valid prefix).
    pub valid_frames: usize,
    /// The master's header checksum was valid (otherwise SQLite ignores the whole log).
    pub header_valid: bool,
    /// Valid frames whose bytes changed (their checksums, and those of every later valid frame,
    /// were recomputed).
    pub frames_changed: usize,
}

/// The clone's log and what changed.
#[derive(Debug, Clone)]
pub struct WalRewrite {
    /// The whole clone file, as long as the master's.
    pub bytes: Vec<u8>,
    pub report: WalReport,
}

fn be32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at.saturating_add(4))
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn put_be32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(b) = buf.get_mut(at..at.saturating_add(4)) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

/// True if `bytes` starts with a WAL magic.
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && matches!(be32(bytes, 0), MAGIC_LE | MAGIC_BE)
}

/// SQLite's WAL checksum of `data` (a multiple of 8 bytes; a tail shorter than 8 is ignored),
/// continuing from `(s0, s1)`, with words read big-endian if `big_endian`.
pub fn wal_checksum(data: &[u8], big_endian: bool, start: (u32, u32)) -> (u32, u32) {
    let (mut s0, mut s1) = start;
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let w = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        s0 = s0.wrapping_add(word(&pair[0..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..8])).wrapping_add(s0);
    }
    (s0, s1)
}

/// The validated header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub big_endian: bool,
    pub page_size: u32,
    pub salts: (u32, u32),
}

impl WalHeader {
    pub fn parse(bytes: &[u8]) -> Result<WalHeader, WalError> {
        if bytes.len() < HEADER_LEN {
            return Err(WalError::Truncated { len: bytes.len() });
        }
        let magic = be32(bytes, 0);
        if !matches!(magic, MAGIC_LE | MAGIC_BE) {
            return Err(WalError::NotWal { found: magic });
        }
        let version = be32(bytes, 4);
        if version != FORMAT_VERSION {
            return Err(WalError::UnknownVersion { found: version });
        }
        let page_size = be32(bytes, 8);
        if !(PAGE_SIZE_MIN..=PAGE_SIZE_MAX).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(WalError::PageSize { found: page_size });
        }
        Ok(WalHeader {
            big_endian: magic & 1 == 1,
            page_size,
            salts: (be32(bytes, 16), be32(bytes, 20)),
        })
    }
}

/// The frames of a log with a valid header: `(whole frames, header checksum valid, frames
/// SQLite replays)`.
pub fn valid_frames(bytes: &[u8], header: &WalHeader) -> (usize, bool, usize) {
    let frame_len = FRAME_HEADER_LEN + header.page_size as usize;
    let frames = bytes.len().saturating_sub(HEADER_LEN) / frame_len;
    let sums = wal_checksum(&bytes[..24], header.big_endian, (0, 0));
    if sums != (be32(bytes, 24), be32(bytes, 28)) {
        return (frames, false, 0);
    }
    let mut sums = sums;
    for index in 0..frames {
        let at = HEADER_LEN + index * frame_len;
        let frame = &bytes[at..at + frame_len];
        if (be32(frame, 8), be32(frame, 12)) != header.salts {
            return (frames, true, index);
        }
        sums = wal_checksum(&frame[..8], header.big_endian, sums);
        sums = wal_checksum(&frame[FRAME_HEADER_LEN..], header.big_endian, sums);
        if sums != (be32(frame, 16), be32(frame, 20)) {
            return (frames, true, index);
        }
    }
    (frames, true, frames)
}

/// Rewrites the SID in one write-ahead log (see the module documentation).
pub fn rewrite_wal(original: &[u8], map: &SidMapping) -> Result<WalRewrite, WalError> {
    let header = WalHeader::parse(original)?;
    let (frames, header_valid, valid) = valid_frames(original, &header);
    let mut report = WalReport {
        page_size: header.page_size,
        frames,
        valid_frames: valid,
        header_valid,
        ..WalReport::default()
    };
    for occ in map.find_all(original, true) {
        report.replaced.add(occ.form);
    }
    let mut bytes = original.to_vec();
    if report.replaced.total() == 0 {
        return Ok(WalRewrite { bytes, report });
    }
    map.replace_all(&mut bytes);
    if header_valid {
        let new_header = WalHeader::parse(&bytes)?;
        let frame_len = FRAME_HEADER_LEN + header.page_size as usize;
        let mut sums = wal_checksum(&bytes[..24], new_header.big_endian, (0, 0));
        put_be32(&mut bytes, 24, sums.0);
        put_be32(&mut bytes, 28, sums.1);
        for index in 0..valid {
            let at = HEADER_LEN + index * frame_len;
            if original[at..at + frame_len] != bytes[at..at + frame_len] {
                report.frames_changed += 1;
            }
            let frame = &mut bytes[at..at + frame_len];
            sums = wal_checksum(&frame[..8], new_header.big_endian, sums);
            sums = wal_checksum(&frame[FRAME_HEADER_LEN..], new_header.big_endian, sums);
            put_be32(frame, 16, sums.0);
            put_be32(frame, 20, sums.1);
        }
        let (_, clone_header_valid, clone_valid) = valid_frames(&bytes, &new_header);
        if !clone_header_valid || clone_valid != valid {
            return Err(WalError::FramesLost {
                master: valid,
                clone: if clone_header_valid { clone_valid } else { 0 },
            });
        }
    }
    Ok(WalRewrite { bytes, report })
}

#[cfg(test)]
mod tests;
