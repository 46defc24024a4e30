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
//! The result is a pure function of the master and the SID mapping. A master byte changes only
//! at an occurrence of the old SID (and in the record around it) or at a structure's or fixed
//! edit: `super::sid_ranges` relies on this to tell a later clone's qcow2 export where to look,
//! so a new kind of change here must be added there too.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use log::{error, info};

use super::mapping::{SidMapping, SEARCH_CONTEXT};
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

    /// The disk bytes decided up front ([`SidPatchStage::with_fixed_edits`]).
    pub fn fixed_edits(&self) -> &[(u64, Vec<u8>)] {
        &self.fixed_edits
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
        let margin = (MAX_RECORD + SEARCH_CONTEXT) as u64;
        let ws = offset.saturating_sub(margin) / 512 * 512;
        let we = (offset + len + margin).min(self.disk_size.max(offset + len));
        let window = ws..we;

        let mut outputs = Vec::new();
        for reg in &self.structures {
            if reg.triggers.iter().any(|r| overlaps(r, &window)) {
                outputs.push((reg, self.output_of(reg, master)?));
            }
        }

        let mut w = vec![0u8; (we - ws) as usize];
        master.read_at(ws, &mut w)?;
        // The master's bytes are needed again only where an excluded or owned range lies.
        let keeps_raw = self.excluded.iter().any(|x| overlaps(x, &window))
            || outputs
                .iter()
                .any(|(reg, _)| reg.owned.iter().any(|o| overlaps(o, &window)));
        let raw = if keeps_raw { w.clone() } else { Vec::new() };

        let in_special = |r: &Range<u64>| {
            self.excluded.iter().any(|x| overlaps(x, r))
                || outputs
                    .iter()
                    .any(|(reg, _)| reg.owned.iter().any(|o| overlaps(o, r)))
        };
        let records: Vec<_> = find_records(&w, ws)
            .into_iter()
            .filter(|rec| {
                let r = ws + rec.start as u64..ws + (rec.start + rec.len) as u64;
                overlaps(&r, &target) && !in_special(&r)
            })
            .collect();
        for rec in &records {
            rec.unfix(&mut w);
        }
        // Replace over the read and the whole of every record it overlaps.
        let mut span = target.clone();
        for rec in &records {
            span.start = span.start.min(ws + rec.start as u64);
            span.end = span.end.max(ws + (rec.start + rec.len) as u64);
        }
        let local = (span.start - ws) as usize..(span.end - ws) as usize;
        self.map.replace_in(&mut w, local, we >= self.disk_size);
        for (_, out) in &outputs {
            for rec in &records {
                let r = ws + rec.start as u64..ws + (rec.start + rec.len) as u64;
                apply_edits(&mut w, ws, &out.record_edits, &r);
            }
        }
        for rec in &records {
            rec.refix(&mut w);
        }
        apply_edits(&mut w, ws, &self.fixed_edits, &window);
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
                    apply_edits(&mut w, ws, &out.owned_edits, o);
                }
            }
        }
        let from = (offset - ws) as usize;
        buf.copy_from_slice(&w[from..from + buf.len()]);
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

    #[test]
    fn apply_edits_respects_limits() {
        let mut buf = vec![0u8; 10];
        let edits = vec![(98u64, vec![1, 2, 3, 4]), (105, vec![9])];
        apply_edits(&mut buf, 100, &edits, &(100..104));
        assert_eq!(buf, vec![3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
