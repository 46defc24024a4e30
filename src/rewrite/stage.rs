//! The SID rewrite as the overlay's patch stage: every byte the clone shows that the delta does
//! not hold is computed here from the master, lazily, on read.
//!
//! For a read of `[offset, offset + len)` the stage:
//! 1. runs, once, every whole-structure transform (a hive, `$Secure`) whose trigger ranges meet the
//!    window around the read, and keeps its output (the changed bytes only) in memory;
//! 2. reads a window of master bytes wide enough to hold every multi-sector record overlapping the
//!    read and the context for SID strings straddling the read's edges;
//! 3. undoes the fixups of the FILE/INDX records in the window, replaces the machine SID in
//!    every form over the read (and the whole of each record it overlaps), applies the structures'
//!    record edits, and redoes the fixups;
//! 4. puts back the master's bytes in excluded ranges (`$LogFile`, `pagefile.sys`, …) and the
//!    structures' final bytes in the ranges they own.
//!
//! The result is a pure function of the master and the SID mapping.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use log::{error, info};

use super::mapping::{SidMapping, SEARCH_CONTEXT};
use crate::image::ntfs_volume::fixup::FIXUP_BLOCK;
use crate::image::ntfs_volume::multi_sector::{find_records, MAX_RECORD};
use crate::overlay::{DeltaSink, MasterImage, OverlayError, PatchStage, Result};

/// The changed bytes a structure transform produced.
#[derive(Debug, Default)]
pub struct StructureOutput {
    /// Raw disk bytes in the ranges the structure owns, sorted by offset, non-overlapping.
    pub owned_edits: Vec<(u64, Vec<u8>)>,
    /// Logical bytes (fixups undone) inside multi-sector records, sorted, non-overlapping.
    pub record_edits: Vec<(u64, Vec<u8>)>,
    /// One line for logs and `verify`.
    pub summary: String,
}

/// A structure rewritten as a whole on first touch.
pub trait Structure: Send + Sync {
    fn name(&self) -> String;
    /// Disk ranges whose clone bytes this structure decides entirely (sorted).
    fn owned(&self) -> Vec<Range<u64>>;
    /// Disk ranges whose first read must run the transform (defaults to the owned ranges).
    fn triggers(&self) -> Vec<Range<u64>> {
        self.owned()
    }
    fn transform(
        &self,
        master: &MasterImage,
        map: &SidMapping,
    ) -> std::result::Result<StructureOutput, String>;
}

struct Registered {
    structure: Box<dyn Structure>,
    owned: Vec<Range<u64>>,
    triggers: Vec<Range<u64>>,
    output: OnceLock<std::result::Result<Arc<StructureOutput>, String>>,
}

pub struct SidPatchStage {
    map: SidMapping,
    excluded: Vec<Range<u64>>,
    structures: Vec<Registered>,
    /// Disk bytes decided up front (SIDs across fragment junctions, `super::junction`), sorted,
    /// non-overlapping; applied after the byte search, under excluded and owned ranges.
    fixed_edits: Vec<(u64, Vec<u8>)>,
    disk_size: u64,
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Applies sorted edits (disk offset, bytes) to `buf`, which holds disk bytes from `base`,
/// only where they fall inside `limit`.
fn apply_edits(buf: &mut [u8], base: u64, edits: &[(u64, Vec<u8>)], limit: &Range<u64>) {
    let end = base + buf.len() as u64;
    let first = edits.partition_point(|(off, bytes)| off + bytes.len() as u64 <= base);
    for (off, bytes) in &edits[first..] {
        if *off >= end {
            break;
        }
        for (i, b) in bytes.iter().enumerate() {
            let at = off + i as u64;
            if at >= base && at < end && limit.contains(&at) {
                buf[(at - base) as usize] = *b;
            }
        }
    }
}

/// The largest window kept in a thread's buffers between reads (a 1 MiB FUSE read and its
/// margins); a larger one (an export's) is allocated for the call only.
const KEPT_WINDOW: usize = 2 << 20;

thread_local! {
    /// Each reading thread's window and raw-copy buffers, taken for one read and put back
    /// (a nested read finds them empty and allocates its own).
    static WINDOW_BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// The master bytes a read of `[offset, offset + len)` needs: every multi-sector record that may
/// overlap it (512-aligned, at most `MAX_RECORD` long) whole, and `SEARCH_CONTEXT` bytes around
/// them for SID strings crossing their edges; no more.
fn read_window(offset: u64, len: u64, disk_size: u64) -> Range<u64> {
    let sector = FIXUP_BLOCK as u64;
    let end = offset + len;
    // The first record that can overlap starts after `offset - MAX_RECORD`, on a sector.
    let first_record = offset
        .saturating_sub(MAX_RECORD as u64 - 1)
        .div_ceil(sector)
        * sector;
    let ws = first_record.saturating_sub(SEARCH_CONTEXT as u64) / sector * sector;
    // The last one starts on the last sector the read touches.
    let last_record = end.saturating_sub(1) / sector * sector;
    let we = last_record + (MAX_RECORD + SEARCH_CONTEXT) as u64;
    ws..we.min(disk_size.max(end))
}

impl SidPatchStage {
    pub fn new(
        map: SidMapping,
        mut excluded: Vec<Range<u64>>,
        structures: Vec<Box<dyn Structure>>,
        disk_size: u64,
    ) -> Self {
        excluded.sort_by_key(|r| r.start);
        let structures = structures
            .into_iter()
            .map(|s| Registered {
                owned: s.owned(),
                triggers: s.triggers(),
                structure: s,
                output: OnceLock::new(),
            })
            .collect();
        SidPatchStage {
            map,
            excluded,
            structures,
            fixed_edits: Vec::new(),
            disk_size,
        }
    }

    /// Adds disk bytes decided up front (sorted, non-overlapping edits).
    pub fn with_fixed_edits(mut self, edits: Vec<(u64, Vec<u8>)>) -> Self {
        self.fixed_edits = edits;
        self
    }

    pub fn mapping(&self) -> &SidMapping {
        &self.map
    }

    pub fn excluded(&self) -> &[Range<u64>] {
        &self.excluded
    }

    pub fn structure_names(&self) -> Vec<String> {
        self.structures.iter().map(|s| s.structure.name()).collect()
    }

    fn output_of(&self, reg: &Registered, master: &MasterImage) -> Result<Arc<StructureOutput>> {
        let out = reg.output.get_or_init(|| {
            let started = std::time::Instant::now();
            match reg.structure.transform(master, &self.map) {
                Ok(o) => {
                    info!(
                        "rewrote {} in {:?}: {}",
                        reg.structure.name(),
                        started.elapsed(),
                        o.summary
                    );
                    Ok(Arc::new(o))
                }
                Err(e) => {
                    error!("cannot rewrite {}: {e}", reg.structure.name());
                    Err(e)
                }
            }
        });
        out.clone().map_err(|reason| OverlayError::Patch {
            offset: reg.owned.first().map_or(0, |r| r.start),
            reason: format!("{}: {reason}", reg.structure.name()),
        })
    }

    /// Runs every structure transform now (for `export` and `verify`, and to fail early).
    pub fn transform_all(
        &self,
        master: &MasterImage,
    ) -> Result<Vec<(String, Arc<StructureOutput>)>> {
        self.structures
            .iter()
            .map(|r| Ok((r.structure.name(), self.output_of(r, master)?)))
            .collect()
    }

    /// The clone's bytes for `[offset, offset + buf.len())`.
    pub fn patch(&self, master: &MasterImage, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        let target = offset..offset + len;
        let window = read_window(offset, len, self.disk_size);
        let (ws, we) = (window.start, window.end);

        let mut outputs = Vec::new();
        for reg in &self.structures {
            if reg.triggers.iter().any(|r| overlaps(r, &window)) {
                outputs.push((reg, self.output_of(reg, master)?));
            }
        }

        // The window and, where needed, a copy of the master's bytes, in this thread's reused
        // buffers (no allocation or zeroing per read; `read_at` overwrites every byte).
        let wlen = (we - ws) as usize;
        let (mut w_buf, mut raw_buf) = WINDOW_BUFS.with(|b| b.take());
        if w_buf.len() < wlen {
            w_buf.resize(wlen, 0);
        }
        let w = &mut w_buf[..wlen];
        master.read_at(ws, w)?;
        // The master's bytes are needed again only where an excluded or owned range lies.
        let keeps_raw = self.excluded.iter().any(|x| overlaps(x, &window))
            || outputs
                .iter()
                .any(|(reg, _)| reg.owned.iter().any(|o| overlaps(o, &window)));
        let raw: &[u8] = if keeps_raw {
            raw_buf.clear();
            raw_buf.extend_from_slice(w);
            &raw_buf
        } else {
            &[]
        };

        let in_special = |r: &Range<u64>| {
            self.excluded.iter().any(|x| overlaps(x, r))
                || outputs
                    .iter()
                    .any(|(reg, _)| reg.owned.iter().any(|o| overlaps(o, r)))
        };
        let records: Vec<_> = find_records(w, ws)
            .into_iter()
            .filter(|rec| {
                let r = ws + rec.start as u64..ws + (rec.start + rec.len) as u64;
                overlaps(&r, &target) && !in_special(&r)
            })
            .collect();
        for rec in &records {
            rec.unfix(w);
        }
        // Replace over the read and the whole of every record it overlaps.
        let mut span = target.clone();
        for rec in &records {
            span.start = span.start.min(ws + rec.start as u64);
            span.end = span.end.max(ws + (rec.start + rec.len) as u64);
        }
        // The search covers the span and the context an occurrence overlapping it needs, not
        // the whole window (whose margins only hold records that may overlap the read).
        let cs = span.start.saturating_sub(SEARCH_CONTEXT as u64).max(ws);
        let ce = span.end.saturating_add(SEARCH_CONTEXT as u64).min(we);
        let local = (span.start - cs) as usize..(span.end - cs) as usize;
        let searched = &mut w[(cs - ws) as usize..(ce - ws) as usize];
        self.map
            .replace_in(searched, local, ce == we && we >= self.disk_size);
        for (_, out) in &outputs {
            for rec in &records {
                let r = ws + rec.start as u64..ws + (rec.start + rec.len) as u64;
                apply_edits(w, ws, &out.record_edits, &r);
            }
        }
        for rec in &records {
            rec.refix(w);
        }
        apply_edits(w, ws, &self.fixed_edits, &window);
        for x in &self.excluded {
            if overlaps(x, &span) {
                let s = x.start.max(ws);
                let e = x.end.min(we);
                w[(s - ws) as usize..(e - ws) as usize]
                    .copy_from_slice(&raw[(s - ws) as usize..(e - ws) as usize]);
            }
        }
        for (reg, out) in &outputs {
            for o in &reg.owned {
                if overlaps(o, &span) {
                    let s = o.start.max(ws);
                    let e = o.end.min(we);
                    w[(s - ws) as usize..(e - ws) as usize]
                        .copy_from_slice(&raw[(s - ws) as usize..(e - ws) as usize]);
                    apply_edits(w, ws, &out.owned_edits, o);
                }
            }
        }
        let from = (offset - ws) as usize;
        buf.copy_from_slice(&w[from..from + buf.len()]);
        if w_buf.len() <= KEPT_WINDOW {
            WINDOW_BUFS.with(|b| b.replace((w_buf, raw_buf)));
        }
        Ok(())
    }
}

impl PatchStage for SidPatchStage {
    fn name(&self) -> &'static str {
        "sid-rewrite"
    }

    fn read_pristine(
        &self,
        master: &MasterImage,
        offset: u64,
        buf: &mut [u8],
        _sink: &dyn DeltaSink,
    ) -> Result<()> {
        self.patch(master, offset, buf)
    }
}

/// Compares `old` and `new` (same length) and returns the changed runs as edits at
/// `base + position`, splitting nothing: the caller maps stream positions to disk offsets.
pub fn diff_runs(old: &[u8], new: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut runs = Vec::new();
    let mut i = 0;
    let n = old.len().min(new.len());
    while i < n {
        if old[i] == new[i] {
            i += 1;
            continue;
        }
        let start = i;
        // Merge changes separated by fewer than 8 equal bytes into one run.
        let mut last_diff = i;
        while i < n && i - last_diff < 8 {
            if old[i] != new[i] {
                last_diff = i;
            }
            i += 1;
        }
        runs.push((start, new[start..=last_diff].to_vec()));
        i = last_diff + 1;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_runs_finds_changed_bytes() {
        let a = b"aaaaXXaaaaaaaaaaaaaaYaaaaYa".to_vec();
        let b = b"aaaaYYaaaaaaaaaaaaaaZaaaaZa".to_vec();
        let runs = diff_runs(&a, &b);
        assert_eq!(runs, vec![(4, b"YY".to_vec()), (20, b"ZaaaaZ".to_vec())]);
    }

    /// Prove that the read window holds every record that may overlap the read, whole and with
    /// the search context on both sides, and is no wider than that (up to one sector each side).
    #[test]
    fn read_window_holds_every_overlapping_record_and_no_more() {
        let (max, ctx, sector) = (MAX_RECORD as u64, SEARCH_CONTEXT as u64, 512u64);
        let disk = 1u64 << 30;
        for offset in [
            0u64,
            1,
            511,
            512,
            4096,
            4097,
            8191,
            8192,
            20_000,
            1 << 20,
            disk - 4096,
        ] {
            for len in [1u64, 100, 512, 4096, 5000, 1 << 20] {
                let Some(end) = offset.checked_add(len).filter(|&e| e <= disk) else {
                    continue;
                };
                let w = read_window(offset, len, disk);
                assert!(w.start <= offset && w.end >= end);
                let mut lowest = None;
                let mut highest = None;
                let mut s = offset.saturating_sub(2 * max) / sector * sector;
                while s < end + max {
                    if s + max > offset && s < end {
                        lowest.get_or_insert(s);
                        highest = Some(s);
                        assert!(w.start + ctx <= s || w.start == 0, "{offset}+{len}: {s}");
                        assert!(
                            s + max + ctx <= w.end || w.end == disk,
                            "{offset}+{len}: {s}"
                        );
                    }
                    s += sector;
                }
                let (lo, hi) = (lowest.unwrap(), highest.unwrap());
                assert!(lo.saturating_sub(ctx + sector) <= w.start);
                assert!(w.end <= hi + max + ctx);
            }
        }
    }

    #[test]
    fn apply_edits_respects_limits() {
        let mut buf = vec![0u8; 10];
        let edits = vec![(98u64, vec![1, 2, 3, 4]), (105, vec![9])];
        apply_edits(&mut buf, 100, &edits, &(100..104));
        assert_eq!(buf, vec![3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
