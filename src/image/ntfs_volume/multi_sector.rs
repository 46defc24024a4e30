//! NTFS multi-sector records (FILE records, INDX blocks, `$LogFile` pages) inside a buffer of
//! disk bytes: the one place that finds a record, undoes its fixups and redoes them, used by the
//! patch stage, `verify`, `$Secure`'s index blocks and MFT record edits.
//!
//! The last two bytes of every 512-byte sector of such a record are replaced on disk by the
//! update sequence number; the real bytes live in the update sequence array (docs/FORMAT-FACTS.md §3
//! "Fixups"). A SID that crosses a sector end is therefore invisible in the raw bytes: the
//! rewrite undoes the fixups of every record it sees, patches the logical bytes, and redoes them.
//! Records are recognized by signature and a consistent update sequence array, wherever they are
//! (the MFT, every directory's index blocks, `$Secure`'s and `$Quota`'s indexes), so no index has
//! to be enumerated up front. Old copies count too: a shadow-copy store, a free cluster or any
//! file's data can hold a FILE/INDX record, or a `$LogFile` page (RSTR restart page, RCRD log
//! record page: the same update sequence array) that a SID crosses a sector end of.

use super::fixup::{apply_fixups, FIXUP_BLOCK};
use crate::image::ImageOffset;

/// The largest record recognized: 8 KiB (FILE records are 1 or 4 KiB, INDX blocks and `$LogFile`
/// pages 4 KiB).
pub const MAX_RECORD: usize = 8192;
/// FILE (MFT record), INDX (index block), RSTR/CHKD (`$LogFile` restart page, CHKD after chkdsk),
/// RCRD (`$LogFile` log record page): every multi-sector structure NTFS writes
/// [ntfs-3g include/ntfs-3g/layout.h, NTFS_RECORD_TYPES]. `$LogFile` itself is excluded from the rewrite;
/// its pages are recognized for their copies elsewhere.
const SIGNATURES: [&[u8; 4]; 5] = [b"FILE", b"INDX", b"RSTR", b"CHKD", b"RCRD"];

/// One record found in a buffer: its position and size, and its update sequence array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiSectorRecord {
    pub start: usize,
    pub len: usize,
    usa_ofs: usize,
}

/// If a valid multi-sector record starts at `buf[at..]` and lies wholly in `buf`, describes it.
pub fn record_at(buf: &[u8], at: usize) -> Option<MultiSectorRecord> {
    let head = buf.get(at..at + 8)?;
    if !SIGNATURES.iter().any(|s| &head[..4] == *s) {
        return None;
    }
    let usa_ofs = u16::from_le_bytes([head[4], head[5]]) as usize;
    let usa_count = u16::from_le_bytes([head[6], head[7]]) as usize;
    let sectors = usa_count.checked_sub(1)?;
    let len = sectors * FIXUP_BLOCK;
    if sectors == 0 || len > MAX_RECORD || !usa_ofs.is_multiple_of(2) || usa_ofs < 8 {
        return None;
    }
    if usa_ofs + 2 * usa_count > FIXUP_BLOCK - 2 {
        return None;
    }
    let rec = buf.get(at..at + len)?;
    let usn = &rec[usa_ofs..usa_ofs + 2];
    let consistent = (1..=sectors).all(|s| &rec[s * FIXUP_BLOCK - 2..s * FIXUP_BLOCK] == usn);
    consistent.then_some(MultiSectorRecord {
        start: at,
        len,
        usa_ofs,
    })
}

/// Every record wholly inside `buf` whose start is 512-aligned on the disk (`buf[0]` is at disk
/// offset `base`).
pub fn find_records(buf: &[u8], base: u64) -> Vec<MultiSectorRecord> {
    let mut out = Vec::new();
    let first = ((FIXUP_BLOCK as u64 - base % FIXUP_BLOCK as u64) % FIXUP_BLOCK as u64) as usize;
    let mut at = first;
    while at + FIXUP_BLOCK <= buf.len() {
        if let Some(r) = record_at(buf, at) {
            out.push(r);
            at += r.len;
        } else {
            at += FIXUP_BLOCK;
        }
    }
    out
}

impl MultiSectorRecord {
    /// Replaces the sector-end bytes by their real values from the update sequence array.
    pub fn unfix(&self, buf: &mut [u8]) {
        let rec = &mut buf[self.start..self.start + self.len];
        // `record_at` checked the array, so this cannot fail.
        let _ = apply_fixups(rec, ImageOffset(0), "record");
    }

    /// Stores the sector-end bytes in the update sequence array and writes the update sequence
    /// number back at every sector end (the same USN: the record is not a new version on disk,
    /// only the clone's view of it).
    pub fn refix(&self, buf: &mut [u8]) {
        redo_fixups(&mut buf[self.start..self.start + self.len]);
    }
}

/// Redoes the fixups of a whole record `rec` whose fixups were undone: each sector end goes into
/// the update sequence array and the (unchanged) update sequence number onto the sector end.
/// Reads the array's place from the header; a header that does not fit the record changes
/// nothing.
pub fn redo_fixups(rec: &mut [u8]) {
    let field = |at: usize| {
        rec.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let (Some(usa_ofs), Some(usa_count)) = (field(4), field(6)) else {
        return;
    };
    let sectors = rec.len() / FIXUP_BLOCK;
    if usa_count != sectors + 1 || usa_ofs + 2 * usa_count > FIXUP_BLOCK - 2 {
        return;
    }
    let usn = [rec[usa_ofs], rec[usa_ofs + 1]];
    for s in 1..=sectors {
        let end = s * FIXUP_BLOCK - 2;
        let slot = usa_ofs + 2 * s;
        rec[slot] = rec[end];
        rec[slot + 1] = rec[end + 1];
        rec[end] = usn[0];
        rec[end + 1] = usn[1];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sig: &[u8; 4], len: usize, fill: u8) -> Vec<u8> {
        let mut r = vec![fill; len];
        r[..4].copy_from_slice(sig);
        let usa_ofs = 0x30usize;
        let count = len / 512 + 1;
        r[4..6].copy_from_slice(&(usa_ofs as u16).to_le_bytes());
        r[6..8].copy_from_slice(&(count as u16).to_le_bytes());
        r[usa_ofs] = 0x07;
        r[usa_ofs + 1] = 0x00;
        // Logical bytes at sector ends: 0xAA 0xBB; on disk the USN, real bytes in the array.
        for s in 1..count {
            r[usa_ofs + 2 * s] = 0xAA;
            r[usa_ofs + 2 * s + 1] = 0xBB;
            r[s * 512 - 2] = 0x07;
            r[s * 512 - 1] = 0x00;
        }
        r
    }

    #[test]
    fn finds_unfixes_and_refixes_records() {
        let mut buf = vec![0u8; 512];
        buf.extend(record(b"FILE", 1024, 1));
        buf.extend(record(b"INDX", 4096, 2));
        buf.extend(vec![b'F'; 700]);
        let orig = buf.clone();
        let recs = find_records(&buf, 0);
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].start, recs[0].len), (512, 1024));
        assert_eq!((recs[1].start, recs[1].len), (1536, 4096));
        for r in &recs {
            r.unfix(&mut buf);
        }
        assert_eq!(&buf[512 + 510..512 + 512], &[0xAA, 0xBB]);
        for r in &recs {
            r.refix(&mut buf);
        }
        assert_eq!(buf, orig);
    }

    #[test]
    fn log_file_pages_are_records_too() {
        // An old `$LogFile` page (RCRD) in a free cluster, with a UTF-16 SID crossing its first
        // sector end: the logical bytes are only seen with the fixups undone.
        let mut buf = record(b"RCRD", 4096, 3);
        let recs = find_records(&buf, 0);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].len, 4096);
        recs[0].unfix(&mut buf);
        assert_eq!(&buf[510..512], &[0xAA, 0xBB]);
        for sig in [b"RSTR", b"CHKD"] {
            assert_eq!(find_records(&record(sig, 4096, 4), 0).len(), 1);
        }
        assert!(find_records(&record(b"BAAD", 4096, 4), 0).is_empty());
    }

    #[test]
    fn rejects_torn_or_misaligned_records() {
        let mut r = record(b"FILE", 1024, 1);
        r[1022] = 9; // torn: a sector end without the USN
        assert!(record_at(&r, 0).is_none());
        let mut buf = vec![0u8; 100];
        buf.extend(record(b"FILE", 1024, 1));
        // Starts at disk offset 100: not 512-aligned, so not a record.
        assert!(find_records(&buf, 0).is_empty());
        assert_eq!(find_records(&buf, 412).len(), 1);
    }
}
