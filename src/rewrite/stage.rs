//! The SID rewrite as the overlay's patch stage: every byte the clone shows that the delta does
//! not hold is computed here from the master, lazily, on read.
//!
//! For a read of `[offset, offset + len)` the stage:
//! 1. runs every whole-structure transform (a hive, `$Secure`) whose trigger ranges meet the
//!    window around the read, unless an earlier read did, and keeps its output (the changed bytes
//!    only) in memory;
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
//!
//! A structure's transform runs on one thread at a time; the others that need it wait for its
//! result. A permanent result is kept for the life of the stage: the output, or the error of a
//! structure the master's bytes make impossible to rewrite (every later read of it fails the
//! same way, without running the transform again). A transient error (an I/O error reading the
//! master) fails only the read that ran the transform; the next read (also one that was
//! waiting) runs it again. A
//! transform that panics is a bug: the panic is contained, logged with the structure, and kept
//! as a permanent error, so that the guest's retries are answered EIO at once instead of
//! running (and panicking in) the transform again and again; a remount tries again.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use log::{error, info, warn};
use parking_lot::Mutex;

use super::error::RewriteError;
use super::mapping::{SidMapping, SEARCH_CONTEXT};
use crate::image::ntfs_volume::fixup::FIXUP_BLOCK;
use crate::image::ntfs_volume::multi_sector::{find_records, MAX_RECORD};
use crate::overlay::{MasterImage, OverlayError, PatchStage, Result};
use crate::panics::panic_message;

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
    /// The structure's changed bytes. An error that [`RewriteError::is_transient`] says is
    /// transient is retried by a later read; any other is kept.
    fn transform(
        &self,
        master: &MasterImage,
        map: &SidMapping,
    ) -> std::result::Result<StructureOutput, RewriteError>;
}

/// A structure's result, once it is permanent.
#[derive(Clone)]
enum Outcome {
    Rewritten(Arc<StructureOutput>),
    Failed(Arc<RewriteError>),
}

impl Outcome {
    fn result(&self) -> std::result::Result<Arc<StructureOutput>, Arc<RewriteError>> {
        match self {
            Outcome::Rewritten(out) => Ok(Arc::clone(out)),
            Outcome::Failed(e) => Err(Arc::clone(e)),
        }
    }
}

struct Registered {
    structure: Box<dyn Structure>,
    owned: Vec<Range<u64>>,
    triggers: Vec<Range<u64>>,
    /// Set once the result is permanent; never holds a transient error.
    outcome: OnceLock<Outcome>,
    /// Held while the transform runs, so that one thread computes the structure at a time.
    computing: Mutex<()>,
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
                outcome: OnceLock::new(),
                computing: Mutex::new(()),
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

    /// Every structure's output, computed now where no read did yet (for
    /// `super::sid_ranges::may_differ`: the edits a clone makes in its structures).
    pub fn structure_outputs(&self, master: &MasterImage) -> Result<Vec<Arc<StructureOutput>>> {
        self.structures
            .iter()
            .map(|reg| {
                self.output_of(reg, master)
                    .map_err(|e| OverlayError::Patch {
                        offset: reg.owned.first().map_or(0, |r| r.start),
                        source: Box::new(e),
                    })
            })
            .collect()
    }

    pub fn excluded(&self) -> &[Range<u64>] {
        &self.excluded
    }

    pub fn structure_names(&self) -> Vec<String> {
        self.structures.iter().map(|s| s.structure.name()).collect()
    }

    /// The structure's output: kept from an earlier read, or computed now (by one thread at a
    /// time; see the module docs for what is kept).
    fn output_of(
        &self,
        reg: &Registered,
        master: &MasterImage,
    ) -> std::result::Result<Arc<StructureOutput>, Arc<RewriteError>> {
        if let Some(done) = reg.outcome.get() {
            return done.result();
        }
        let _one_at_a_time = reg.computing.lock();
        // Another thread may have finished it while this one waited.
        if let Some(done) = reg.outcome.get() {
            return done.result();
        }
        let name = reg.structure.name();
        let offset = reg.owned.first().map_or(0, |r| r.start);
        let started = std::time::Instant::now();
        // The transform only reads the master and builds its own output, and its output is kept
        // only when it returns: a panic leaves nothing half done behind.
        let cause = match catch_unwind(AssertUnwindSafe(|| {
            reg.structure.transform(master, &self.map)
        })) {
            Ok(Ok(out)) => {
                info!("rewrote {name} in {:?}: {}", started.elapsed(), out.summary);
                let out = Arc::new(out);
                let _ = reg.outcome.set(Outcome::Rewritten(Arc::clone(&out)));
                return Ok(out);
            }
            Ok(Err(e)) => e,
            Err(payload) => RewriteError::Panicked {
                message: panic_message(&*payload),
            },
        };
        let err = Arc::new(cause.in_structure(name, offset));
        if err.is_transient() {
            warn!("cannot rewrite {err}; the next read of it tries again");
        } else {
            error!("cannot rewrite {err}");
            let _ = reg.outcome.set(Outcome::Failed(Arc::clone(&err)));
        }
        Err(err)
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
                let out = self
                    .output_of(reg, master)
                    .map_err(|e| OverlayError::Patch {
                        offset,
                        source: Box::new(e),
                    })?;
                outputs.push((reg, out));
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

    fn read_pristine(&self, master: &MasterImage, offset: u64, buf: &mut [u8]) -> Result<()> {
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
    use crate::sid::MachineSid;
    use crate::testutil::TempDir;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn old() -> MachineSid {
        MachineSid::new(4070822719, 3404542230, 2541167049)
    }
    fn new_sid() -> MachineSid {
        MachineSid::new(4111111111, 3222222222, 2333333333)
    }
    /// Where the test structure lies on the 1 MiB test disk, and its length.
    const AT: u64 = 0x40000;
    const LEN: usize = 0x1000;

    /// What the test structure's transform does.
    #[derive(Clone, Copy, PartialEq)]
    enum Behaviour {
        /// Reads its bytes from the master and replaces the SID (a master read error is
        /// transient).
        Rewrite,
        /// Says the master's bytes cannot be rewritten (permanent).
        Invalid,
        /// A bug: panics.
        Panic,
    }

    /// A test structure of `LEN` bytes at `AT` that counts its transforms.
    struct TestStructure {
        behaviour: Behaviour,
        calls: Arc<AtomicUsize>,
        /// Held in each transform, to widen the window for concurrent readers.
        pause: std::time::Duration,
    }

    impl Structure for TestStructure {
        fn name(&self) -> String {
            "test structure".to_string()
        }
        fn owned(&self) -> Vec<Range<u64>> {
            std::iter::once(AT..AT + LEN as u64).collect()
        }
        fn transform(
            &self,
            master: &MasterImage,
            map: &SidMapping,
        ) -> std::result::Result<StructureOutput, RewriteError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.pause);
            match self.behaviour {
                Behaviour::Rewrite => {}
                Behaviour::Invalid => {
                    return Err(RewriteError::Invalid {
                        offset: AT,
                        what: "test structure is damaged",
                    })
                }
                Behaviour::Panic => panic!("test structure has a bug"),
            }
            let mut bytes = vec![0u8; LEN];
            master.read_at(AT, &mut bytes)?;
            let original = bytes.clone();
            map.replace_all(&mut bytes);
            Ok(StructureOutput {
                owned_edits: diff_runs(&original, &bytes)
                    .into_iter()
                    .map(|(at, run)| (AT + at as u64, run))
                    .collect(),
                record_edits: Vec::new(),
                summary: String::new(),
            })
        }
    }

    /// A 1 MiB master whose test structure holds the old SID, its stage and the call counter.
    fn setup(
        dir: &TempDir,
        behaviour: Behaviour,
        pause: std::time::Duration,
    ) -> (
        std::path::PathBuf,
        MasterImage,
        SidPatchStage,
        Arc<AtomicUsize>,
    ) {
        let path = dir.path("master.img");
        let mut disk = vec![0x11u8; 1 << 20];
        let sid = format!("{}-500;", old());
        disk[AT as usize + 16..AT as usize + 16 + sid.len()].copy_from_slice(sid.as_bytes());
        std::fs::write(&path, &disk).unwrap();
        let master = MasterImage::open(&path).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let structure = TestStructure {
            behaviour,
            calls: Arc::clone(&calls),
            pause,
        };
        let map = SidMapping::new(old(), new_sid()).unwrap();
        let stage = SidPatchStage::new(map, Vec::new(), vec![Box::new(structure)], 1 << 20);
        (path, master, stage, calls)
    }

    fn shows_new_sid(buf: &[u8]) -> bool {
        let text = String::from_utf8_lossy(buf);
        text.contains(&format!("{}-500;", new_sid())) && !text.contains(&old().to_string())
    }

    /// Prove that a transient error (the master's bytes cannot be read for a while: here the
    /// file is cut short under the open master, then restored) fails only the reads that met
    /// it, and that the next read runs the transform again and serves the rewritten structure.
    #[test]
    fn a_transient_master_error_is_not_kept() {
        let dir = TempDir::new("stage-transient");
        let (path, master, stage, calls) =
            setup(&dir, Behaviour::Rewrite, std::time::Duration::ZERO);
        let whole = std::fs::read(&path).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(AT).unwrap();
        let mut buf = vec![0u8; 4096];
        let err = stage.patch(&master, AT, &mut buf).unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // The master is whole again: the same read now succeeds.
        std::os::unix::fs::FileExt::write_all_at(&file, &whole[AT as usize..], AT).unwrap();
        stage.patch(&master, AT, &mut buf).unwrap();
        assert!(shows_new_sid(&buf));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // The success is kept: no third transform.
        stage.patch(&master, AT, &mut buf).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// Prove that concurrent first reads of one structure run its transform once, and all get
    /// its output.
    #[test]
    fn one_thread_computes_a_structure() {
        let dir = TempDir::new("stage-once");
        let (_path, master, stage, calls) = setup(
            &dir,
            Behaviour::Rewrite,
            std::time::Duration::from_millis(50),
        );
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut buf = vec![0u8; 4096];
                    barrier.wait();
                    stage.patch(&master, AT, &mut buf).unwrap();
                    assert!(shows_new_sid(&buf));
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Prove that a permanent error is kept (the transform does not run again) and that reads
    /// away from the structure are served.
    #[test]
    fn a_permanent_error_is_kept() {
        let dir = TempDir::new("stage-permanent");
        let (_path, master, stage, calls) =
            setup(&dir, Behaviour::Invalid, std::time::Duration::ZERO);
        let mut buf = vec![0u8; 4096];
        for _ in 0..3 {
            let err = stage.patch(&master, AT, &mut buf).unwrap_err();
            assert!(
                err.to_string().contains("test structure is damaged"),
                "{err}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        stage.patch(&master, 0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0x11));
    }

    /// Prove that a panic in a transform is contained: the read fails with EIO naming the
    /// structure, the panic is not run again on the next read, and the rest of the disk is
    /// served.
    #[test]
    fn a_panicking_structure_fails_its_reads_without_retrying() {
        let dir = TempDir::new("stage-panic");
        let (_path, master, stage, calls) =
            setup(&dir, Behaviour::Panic, std::time::Duration::ZERO);
        let mut buf = vec![0u8; 4096];
        for _ in 0..3 {
            let err = stage.patch(&master, AT, &mut buf).unwrap_err();
            assert_eq!(err.errno(), libc::EIO);
            let text = err.to_string();
            assert!(
                text.contains("test structure") && text.contains("test structure has a bug"),
                "{text}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        stage.patch(&master, 0x80000, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0x11));
    }

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
