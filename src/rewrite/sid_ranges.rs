//! Where a clone can differ from its master, so that the qcow2 export of a later clone compares
//! only those places instead of the whole disk.
//!
//! [`super::stage::SidPatchStage::patch`] changes a master byte only (a) where its byte search
//! finds the old SID, in the raw bytes or in a multi-sector record with its fixups undone, and
//! then anywhere in that record (its update sequence array and sector ends), or (b) at an edit a
//! structure transform or the fragment-junction pass decided (owned edits, record edits inside a
//! record, fixed edits). (a) depends on the master and the old SID only: [`scan`] finds it once
//! and the survey cache keeps it. (b) is the clone's own: [`may_differ`] adds it per clone.
//! Both are widened by [`MARGIN`] (a whole record and the search context), so every byte the
//! stage may change lies inside; the export still compares those ranges byte for byte.

use std::sync::Arc;

use super::mapping::{SidMapping, SEARCH_CONTEXT};
use super::stage::SidPatchStage;
use crate::image::ntfs_volume::multi_sector::{record_at, MAX_RECORD};
use crate::overlay::{MasterImage, PatchStage, Result};

/// How far around an occurrence or a record edit the stage may change bytes: the largest
/// multi-sector record the occurrence may lie in, and the context of a string search.
pub const MARGIN: u64 = (MAX_RECORD + SEARCH_CONTEXT) as u64;
/// Master bytes searched per step.
const STEP: u64 = 8 << 20;
/// Sectors of a multi-sector record (fixups are per 512 bytes).
const SECTOR: usize = 512;

/// The SID rewrite shared between the disk that serves it and the export that asks it where it
/// can differ.
impl PatchStage for Arc<SidPatchStage> {
    fn name(&self) -> &'static str {
        SidPatchStage::name(self)
    }

    fn read_pristine(&self, master: &MasterImage, offset: u64, buf: &mut [u8]) -> Result<()> {
        SidPatchStage::read_pristine(self, master, offset, buf)
    }
}

/// Sorts and merges ranges (touching ones too), clamped to `size`.
pub fn merge(mut ranges: Vec<(u64, u64)>, size: u64) -> Vec<(u64, u64)> {
    ranges.retain(|r| r.0 < r.1.min(size));
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        let e = e.min(size);
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn widen(at: u64, len: u64, size: u64) -> (u64, u64) {
    (
        at.saturating_sub(MARGIN),
        at.saturating_add(len).saturating_add(MARGIN).min(size),
    )
}

/// Every place of the master where the old SID of `map` occurs in any form, in the raw bytes or
/// inside any multi-sector record (at every 512-byte boundary, whichever record the stage's
/// window would see there) with that record's fixups undone; each widened by [`MARGIN`],
/// merged. Holes of the master read as zeros and are searched only at their edges.
pub fn scan(master: &MasterImage, map: &SidMapping) -> Result<Vec<(u64, u64)>> {
    let size = master.size();
    let context = SEARCH_CONTEXT as u64;
    let mut found = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Some(data) = master.next_data(pos)? else {
            break;
        };
        let hole = master.next_hole(data)?.min(size);
        let mut at = data;
        while at < hole {
            let end = at.saturating_add(STEP).min(hole);
            // Aligned like the disk's sectors, with room for a whole record past `end`.
            let ws = at.saturating_sub(context) / SECTOR as u64 * SECTOR as u64;
            let we = end.saturating_add(MARGIN).min(size);
            let mut w = vec![0u8; (we - ws) as usize];
            master.read_at(ws, &mut w)?;
            for occ in map.find_all(&w, true) {
                found.push(widen(ws + occ.offset as u64, occ.len as u64, size));
            }
            // Records starting in [ws, end): each seen with its fixups undone, with the search
            // context on both sides.
            let mut rec_at = 0usize;
            while rec_at < w.len() && ws + (rec_at as u64) < end {
                if let Some(rec) = record_at(&w, rec_at) {
                    let from = rec_at.saturating_sub(SEARCH_CONTEXT);
                    let to = (rec_at + rec.len + SEARCH_CONTEXT).min(w.len());
                    let mut view = w[from..to].to_vec();
                    if let Some(local) = record_at(&view, rec_at - from) {
                        local.unfix(&mut view);
                    }
                    for occ in map.find_all(&view, true) {
                        let abs = ws + (from + occ.offset) as u64;
                        found.push(widen(abs, occ.len as u64, size));
                    }
                }
                rec_at += SECTOR;
            }
            at = end;
        }
        pos = hole;
    }
    Ok(merge(found, size))
}

/// Where the clone `stage` serves can differ from `master`: the master's SID places
/// (`sid_ranges`, from [`scan`]) and every edit of the stage's structures and fixed edits (the
/// structures are transformed now), merged.
pub fn may_differ(
    stage: &SidPatchStage,
    master: &MasterImage,
    sid_ranges: &[(u64, u64)],
) -> Result<Vec<(u64, u64)>> {
    let size = master.size();
    let mut all = sid_ranges.to_vec();
    for out in stage.structure_outputs(master)? {
        for (at, bytes) in &out.owned_edits {
            all.push((*at, at.saturating_add(bytes.len() as u64)));
        }
        for (at, bytes) in &out.record_edits {
            all.push(widen(*at, bytes.len() as u64, size));
        }
    }
    for (at, bytes) in stage.fixed_edits() {
        all.push((*at, at.saturating_add(bytes.len() as u64)));
    }
    Ok(merge(all, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sorts_joins_and_clamps() {
        let m = merge(vec![(10, 20), (0, 5), (5, 8), (15, 30), (90, 200)], 100);
        assert_eq!(m, vec![(0, 8), (10, 30), (90, 100)]);
        assert!(merge(vec![(100, 120)], 100).is_empty());
    }

    /// Prove that the scan finds a SID in plain bytes and one that straddles a sector end of a
    /// multi-sector record (where the raw bytes hold the update sequence number instead).
    #[test]
    fn scan_finds_plain_and_fixed_up_occurrences() {
        use crate::sid::MachineSid;
        let old = MachineSid::new(4070822719, 3404542230, 2541167049);
        let new = MachineSid::new(4111111111, 3222222222, 2333333333);
        let map = SidMapping::new(old, new).unwrap();
        let dir = std::env::temp_dir().join(format!("sidfs-sidranges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.img");
        let mut disk = vec![0u8; 4 << 20];
        let plain = 3 << 20;
        disk[plain..plain + 12].copy_from_slice(&old.binary_pattern());
        // A FILE record at 1 MiB: 1024 bytes, update sequence array at 0x30 (USN + 2 entries).
        let rec = 1 << 20;
        disk[rec..rec + 4].copy_from_slice(b"FILE");
        disk[rec + 4..rec + 6].copy_from_slice(&0x30u16.to_le_bytes());
        disk[rec + 6..rec + 8].copy_from_slice(&3u16.to_le_bytes());
        disk[rec + 0x1c..rec + 0x20].copy_from_slice(&1024u32.to_le_bytes());
        let pattern = old.binary_pattern();
        // The SID crosses the first sector end (bytes 510, 511 of the record).
        let sid_at = rec + 504;
        disk[sid_at..sid_at + 12].copy_from_slice(&pattern);
        let usn = [0x07u8, 0x00];
        disk[rec + 0x30..rec + 0x32].copy_from_slice(&usn);
        disk.copy_within(rec + 510..rec + 512, rec + 0x32);
        disk.copy_within(rec + 1022..rec + 1024, rec + 0x34);
        disk[rec + 510..rec + 512].copy_from_slice(&usn);
        disk[rec + 1022..rec + 1024].copy_from_slice(&usn);
        std::fs::write(&path, &disk).unwrap();
        let master = MasterImage::open(&path).unwrap();
        assert!(
            map.find_all(&disk, true).len() == 1,
            "only the plain SID is visible raw"
        );
        let ranges = scan(&master, &map).unwrap();
        let inside = |p: usize| ranges.iter().any(|r| r.0 <= p as u64 && (p as u64) < r.1);
        assert!(inside(plain) && inside(plain + 11));
        assert!(inside(sid_at) && inside(rec) && inside(rec + 1023));
        assert!(!inside(0) && !inside(2 << 20));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
