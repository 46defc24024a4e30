//! The clone's virtual disk: reads resolve each byte range to the delta or to the patch stage;
//! writes go copy-on-write into the delta.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::delta::DeltaStore;
use super::error::{OverlayError, Result};
use super::master::MasterImage;
use super::patch::{MasterPassthrough, PatchStage};
use super::units::{BlockIndex, Geometry};
use crate::panics::panic_message;

pub struct CloneDisk {
    master: Arc<MasterImage>,
    delta: DeltaStore,
    stage: Box<dyn PatchStage>,
    read_only: bool,
    times: Mutex<DiskTimes>,
}

/// The disk's modification and change times, as `stat` shows them: they start at the delta's
/// last modification and advance with every write, so that mtime-based tools see a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskTimes {
    pub modified: SystemTime,
    pub changed: SystemTime,
}

/// `now`, or just after `previous` when the clock has not moved past it: a later change never
/// shows an earlier or equal time.
fn later_than(previous: SystemTime, now: SystemTime) -> SystemTime {
    let next = previous + Duration::from_nanos(1);
    now.max(next)
}

/// Where one piece of a read comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    Delta,
    Pristine,
}

impl CloneDisk {
    pub fn new(
        master: Arc<MasterImage>,
        delta: DeltaStore,
        stage: Box<dyn PatchStage>,
        read_only: bool,
    ) -> Self {
        let t = delta.modified();
        CloneDisk {
            master,
            delta,
            stage,
            read_only,
            times: Mutex::new(DiskTimes {
                modified: t,
                changed: t,
            }),
        }
    }

    pub fn times(&self) -> DiskTimes {
        *self.times.lock()
    }

    /// Sets the modification time (`touch`, `utimensat`); the change time becomes now.
    pub fn set_modified(&self, modified: SystemTime) {
        let mut t = self.times.lock();
        t.modified = modified;
        t.changed = later_than(t.changed, SystemTime::now());
    }

    /// Records a write: both times advance.
    fn touch(&self) {
        let mut t = self.times.lock();
        let now = SystemTime::now();
        t.modified = later_than(t.modified, now);
        t.changed = later_than(t.changed, now);
    }

    pub fn size(&self) -> u64 {
        self.delta.geometry().disk_size
    }

    pub fn geometry(&self) -> Geometry {
        self.delta.geometry()
    }

    pub fn delta(&self) -> &DeltaStore {
        &self.delta
    }

    pub fn master(&self) -> &MasterImage {
        &self.master
    }

    pub fn stage_name(&self) -> &'static str {
        self.stage.name()
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Reads the clone at `offset`. Returns the number of bytes read: fewer than `buf.len()` only
    /// at the end of the disk.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.read_with(offset, buf, false)
    }

    /// [`Self::read`] for a client that reads with `O_DIRECT`: where the clone is the master
    /// (the identity stage, blocks not in the delta), aligned pieces are read from the master
    /// past its page cache too. The bytes are the same; only the caching differs.
    pub fn read_direct(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.read_with(offset, buf, self.stage.name() == MasterPassthrough.name())
    }

    fn read_with(&self, offset: u64, buf: &mut [u8], direct: bool) -> Result<usize> {
        let size = self.size();
        if offset >= size {
            return Ok(0);
        }
        let len = (size - offset).min(buf.len() as u64) as usize;
        let buf = &mut buf[..len];
        let g = self.geometry();
        let mut pos = 0usize;
        while pos < len {
            let at = offset + pos as u64;
            let block = g.block_of(at);
            let source = if self.delta.contains(block) {
                Source::Delta
            } else {
                Source::Pristine
            };
            // Extend the piece over every following block with the same source.
            let last_block = g.block_of(offset + len as u64 - 1);
            let limit = BlockIndex(last_block.0 + 1);
            let next = self
                .delta
                .next_with(block, limit, source == Source::Pristine)
                .unwrap_or(limit);
            let piece_end = (g.block_start(next)).min(offset + len as u64);
            let piece_len = (piece_end - at) as usize;
            let piece = &mut buf[pos..pos + piece_len];
            match source {
                Source::Delta => self.delta.read_at(at, piece)?,
                Source::Pristine => {
                    if !(direct && self.master.read_direct_at(at, piece)?) {
                        self.pristine(at, piece)?
                    }
                }
            }
            pos += piece_len;
        }
        Ok(len)
    }

    /// The stage's pristine bytes at `offset`. A panic in the stage is a bug, but it fails this
    /// request only (EIO, logged at the FUSE boundary with the stage and the range): the mount
    /// keeps serving. Nothing the panic interrupted is shared: `buf` is this request's, and a
    /// stage keeps a result for later reads only once it is complete.
    fn pristine(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let stage = &*self.stage;
        let master = &*self.master;
        let len = buf.len() as u64;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            stage.read_pristine(master, offset, buf)
        }))
        .unwrap_or_else(|payload| {
            Err(OverlayError::StagePanic {
                stage: stage.name(),
                offset,
                len,
                message: panic_message(&*payload),
            })
        })
    }

    /// Writes `data` at `offset`, copy-on-write. A write past the end of the disk is refused; the
    /// disk never grows.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<usize> {
        if self.read_only {
            return Err(OverlayError::ReadOnly);
        }
        let size = self.size();
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|end| end > size) {
            return Err(OverlayError::OutOfRange {
                offset,
                len: data.len() as u64,
                disk_size: size,
            });
        }
        if data.is_empty() {
            return Ok(0);
        }
        self.delta.check_durable()?;
        let g = self.geometry();
        let end = offset + data.len() as u64;
        let first = g.block_of(offset);
        let last = g.block_of(end - 1);

        // Partial head and tail blocks first (each takes and drops its own stripe lock), then the
        // whole blocks in between in one positional write.
        let mut whole_start = first;
        let mut whole_end = BlockIndex(last.0 + 1);
        if offset != g.block_start(first) || end < g.block_start(first) + g.block_len(first) as u64
        {
            self.write_partial(first, offset, data)?;
            whole_start = BlockIndex(first.0 + 1);
        }
        if last != first && end != g.block_start(last) + g.block_len(last) as u64 {
            self.write_partial(last, offset, data)?;
            whole_end = last;
        }
        if whole_start < whole_end {
            let from = g.block_start(whole_start);
            let to = (g.block_start(whole_end)).min(size);
            let slice = &data[(from - offset) as usize..(to - offset) as usize];
            self.write_whole(whole_start, whole_end, from, slice)?;
        }
        self.touch();
        Ok(data.len())
    }

    /// Writes the part of `data` (which starts at disk offset `offset`) that falls in `block`,
    /// which the write covers only partly.
    fn write_partial(&self, block: BlockIndex, offset: u64, data: &[u8]) -> Result<()> {
        let g = self.geometry();
        let bstart = g.block_start(block);
        let blen = g.block_len(block);
        let from = offset.max(bstart);
        let to = (offset + data.len() as u64).min(bstart + blen as u64);
        let part = &data[(from - offset) as usize..(to - offset) as usize];
        if self.delta.contains(block) {
            return self.delta.write_at(from, part);
        }
        // Copy-on-write: take the block as the clone shows it now, then overlay the new bytes.
        // The stage runs without the stripe lock held (a whole-structure transform on first touch
        // may take long, and would stall every write to the blocks of that stripe); pristine
        // content is a pure function of the master, so computing it outside the lock is safe.
        let mut whole = vec![0u8; blen];
        self.pristine(bstart, &mut whole)?;
        let _guard = self.delta.stripe(block).lock();
        if self.delta.contains(block) {
            // Another write added the block meanwhile: write our bytes on top of what the delta
            // holds now.
            return self.delta.write_at(from, part);
        }
        let rel = (from - bstart) as usize;
        whole[rel..rel + part.len()].copy_from_slice(part);
        self.delta.reserve(bstart, blen as u64)?;
        self.delta.write_at(bstart, &whole)?;
        self.delta.mark_present(block);
        Ok(())
    }

    /// Writes whole blocks `[start, end)`; `data` is exactly their bytes.
    fn write_whole(
        &self,
        start: BlockIndex,
        end: BlockIndex,
        from: u64,
        data: &[u8],
    ) -> Result<()> {
        let absent = self.delta.next_with(start, end, false);
        if absent.is_none() {
            return self.delta.write_at(from, data);
        }
        // Some blocks are new to the delta: reserve their space first, so that a full state file
        // system fails this write rather than a later sync. Hold their stripe locks (in ascending
        // stripe order, so concurrent writers cannot deadlock) while writing, so that a
        // concurrent partial write of one of them, which copies the block's pristine bytes in,
        // cannot overwrite this write's data.
        let mut stripes: Vec<usize> = (start.0..end.0)
            .map(BlockIndex)
            .filter(|&b| !self.delta.contains(b))
            .map(DeltaStore::stripe_index)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        self.delta.reserve(from, data.len() as u64)?;
        let _guards: Vec<_> = stripes
            .iter()
            .map(|&s| self.delta.stripe_at(s).lock())
            .collect();
        self.delta.write_at(from, data)?;
        for b in start.0..end.0 {
            self.delta.mark_present(BlockIndex(b));
        }
        Ok(())
    }

    /// Makes every completed write durable.
    pub fn sync(&self) -> Result<()> {
        self.delta.sync()
    }

    /// SEEK_DATA: the first offset >= `offset` holding data, where data is the master's data plus
    /// every block the delta holds. `None` past the last data.
    pub fn seek_data(&self, offset: u64) -> Result<Option<u64>> {
        let size = self.size();
        if offset >= size {
            return Ok(None);
        }
        let g = self.geometry();
        // The master's next data bounds the scan of the delta's block map: only a delta block
        // before it can come first. Without the bound every call scanned the map to the end of
        // the disk (2 MiB of map for 64 GiB), once per data extent of a sequential reader.
        let from_master = self.master.next_data(offset)?;
        let limit = match from_master {
            Some(m) => BlockIndex(g.block_of(m).0.saturating_add(1).min(g.block_count())),
            None => BlockIndex(g.block_count()),
        };
        let from_delta = self
            .delta
            .next_with(g.block_of(offset), limit, true)
            .map(|b| g.block_start(b).max(offset));
        Ok(match (from_delta, from_master) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// SEEK_HOLE: the first offset >= `offset` in a hole of both the master and the delta; the
    /// end of the disk counts as a hole.
    pub fn seek_hole(&self, offset: u64) -> Result<u64> {
        let size = self.size();
        let g = self.geometry();
        let limit = BlockIndex(g.block_count());
        let mut pos = offset;
        while pos < size {
            let block = g.block_of(pos);
            if self.delta.contains(block) {
                let next_absent = self.delta.next_with(block, limit, false).unwrap_or(limit);
                pos = g.block_start(next_absent).min(size);
                continue;
            }
            let hole = self.master.next_hole(pos)?;
            if hole > pos {
                pos = hole;
                continue;
            }
            // `pos` is in a master hole and its block is not in the delta.
            return Ok(pos);
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;

    /// A small deterministic PRNG for test workloads (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sidfs-clone-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A sparse master: data in a few extents, holes elsewhere, size not block-aligned.
    fn make_master(dir: &std::path::Path, size: u64) -> (PathBuf, Vec<u8>) {
        let path = dir.join("master.img");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap();
        let mut model = vec![0u8; size as usize];
        let mut rng = Rng(0x5eed);
        for start in [0u64, 3 << 20, size - 70_000] {
            let chunk: Vec<u8> = (0..65_536).map(|_| rng.next() as u8).collect();
            f.write_all_at(&chunk, start).unwrap();
            model[start as usize..start as usize + chunk.len()].copy_from_slice(&chunk);
        }
        (path, model)
    }

    fn open_disk(dir: &std::path::Path, master: &std::path::Path, create: bool) -> CloneDisk {
        let master = Arc::new(MasterImage::open(master).unwrap());
        let g = Geometry::new(master.size(), 4096);
        let delta = if create {
            DeltaStore::create(dir, g).unwrap()
        } else {
            DeltaStore::open(dir, g).unwrap()
        };
        CloneDisk::new(master, delta, Box::new(MasterPassthrough), false)
    }

    /// Prove that unaligned random writes, a sync and a reopen give exactly the reference model,
    /// and that blocks never written are still served from the master (not the delta).
    #[test]
    fn random_unaligned_writes_match_model_across_reopen() {
        let dir = tempdir("model");
        let size = 8 * 1024 * 1024 + 1234;
        let (master_path, mut model) = make_master(&dir, size);
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let mut rng = Rng(42);
        {
            let disk = open_disk(&state, &master_path, true);
            for _ in 0..400 {
                let len = 1 + rng.below(20_000);
                let off = rng.below(size - len);
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                assert_eq!(disk.write(off, &data).unwrap(), data.len());
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            disk.sync().unwrap();
        }
        let disk = open_disk(&state, &master_path, false);
        let mut got = vec![0u8; size as usize];
        // Read in odd-sized pieces to exercise piece splitting.
        let mut pos = 0u64;
        while pos < size {
            let n = (1 + rng.below(300_000)).min(size - pos) as usize;
            assert_eq!(
                disk.read(pos, &mut got[pos as usize..pos as usize + n])
                    .unwrap(),
                n
            );
            pos += n as u64;
        }
        assert!(got == model, "clone differs from the reference model");
        // Untouched blocks are not in the delta.
        let g = disk.geometry();
        let written = disk.delta().present_blocks();
        assert!(
            written < g.block_count(),
            "every block ended up in the delta"
        );
        // Past the end: short read, refused write.
        let mut tail = [0u8; 100];
        assert_eq!(disk.read(size - 10, &mut tail).unwrap(), 10);
        assert!(disk.write(size - 10, &[0u8; 11]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn seek_data_and_hole_combine_master_and_delta() {
        let dir = tempdir("seek");
        let size = 16 * 1024 * 1024;
        let (master_path, _) = make_master(&dir, size);
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let disk = open_disk(&state, &master_path, true);
        // Master data at [0, 64K), [3M, 3M+64K), [size-70000, size-70000+64K).
        assert_eq!(disk.seek_data(0).unwrap(), Some(0));
        assert_eq!(disk.seek_hole(0).unwrap(), 65_536);
        assert_eq!(disk.seek_data(65_536).unwrap(), Some(3 << 20));
        disk.write(8 << 20, b"x").unwrap();
        assert_eq!(disk.seek_data(65_536).unwrap(), Some(3 << 20));
        assert_eq!(disk.seek_data((3 << 20) + 65_536).unwrap(), Some(8 << 20));
        assert_eq!(disk.seek_hole(8 << 20).unwrap(), (8 << 20) + 4096);
        assert_eq!(disk.seek_data(size).unwrap(), None);
        // The last data extent ends 4464 bytes before the end; the host FS may round it up.
        assert!(disk.seek_hole(size - 1).unwrap() >= size - 1);
        assert_eq!(disk.seek_hole(size - 70_000).unwrap() % 4096, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Prove that SEEK_DATA finds a delta block before and inside the master's data extents,
    /// and past the master's last data, where the master alone reports none.
    #[test]
    fn seek_data_finds_delta_blocks_around_master_data() {
        let dir = tempdir("seek-delta");
        let size: u64 = 16 * 1024 * 1024;
        // Master data at [1M, 1M+64K) and [3M, 3M+64K) only; a hole to the end.
        let master_path = dir.join("master.img");
        let f = std::fs::File::create(&master_path).unwrap();
        f.set_len(size).unwrap();
        for start in [1u64 << 20, 3 << 20] {
            f.write_all_at(&[0x5a; 65_536], start).unwrap();
        }
        drop(f);
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let disk = open_disk(&state, &master_path, true);
        let end_of_data = (3 << 20) + 65_536;
        disk.write(4096 + 5, b"a").unwrap();
        disk.write((3 << 20) - 4096 + 100, b"b").unwrap();
        let tail = 12 << 20;
        disk.write(tail + 1, b"c").unwrap();
        assert_eq!(disk.seek_data(0).unwrap(), Some(4096));
        assert_eq!(disk.seek_data(4096 + 7).unwrap(), Some(4096 + 7));
        assert_eq!(disk.seek_data(8192).unwrap(), Some(1 << 20));
        assert_eq!(
            disk.seek_data((1 << 20) + 65_536).unwrap(),
            Some((3 << 20) - 4096)
        );
        assert_eq!(disk.seek_data((3 << 20) - 1).unwrap(), Some((3 << 20) - 1));
        assert_eq!(disk.seek_data(3 << 20).unwrap(), Some(3 << 20));
        assert_eq!(disk.master().next_data(end_of_data).unwrap(), None);
        assert_eq!(disk.seek_data(end_of_data).unwrap(), Some(tail));
        assert_eq!(disk.seek_data(tail + 4095).unwrap(), Some(tail + 4095));
        assert_eq!(disk.seek_data(tail + 4096).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Prove that a direct read gives exactly the bytes of a buffered one: aligned and unaligned
    /// ranges, an unaligned buffer, across delta blocks and the disk's unaligned end.
    #[test]
    fn direct_reads_match_buffered_reads() {
        let dir = tempdir("direct");
        let size = 8 * 1024 * 1024 + 1234;
        let (master_path, _) = make_master(&dir, size);
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let disk = open_disk(&state, &master_path, true);
        disk.write(5000, &[7u8; 10_000]).unwrap();
        disk.write(3 << 20, &[9u8; 4096]).unwrap();
        let mut raw = vec![0u8; (2 << 20) + 8192];
        let start = raw.as_ptr().align_offset(4096);
        let mut want = vec![0u8; 2 << 20];
        let mut rng = Rng(9);
        let cases = [
            (0u64, 1 << 20, 0usize),
            (4096, 16_384, 0),
            ((3 << 20) - 4096, 1 << 20, 0),
            (size - 4096 - 1234, 8192, 0),
            (100, 5000, 0),
            (8192, 8192, 1),
        ];
        let random = (0..40).map(|_| {
            let at = rng.below(size / 4096) * 4096;
            (at, 4096 * (1 + rng.below(64)) as usize, 0)
        });
        for (at, len, skew) in cases.into_iter().chain(random) {
            let got = &mut raw[start + skew..start + skew + len];
            let n = disk.read_direct(at, got).unwrap();
            let m = disk.read(at, &mut want[..len]).unwrap();
            assert_eq!(n, m);
            assert!(
                got[..n] == want[..m],
                "direct read at {at} len {len} differs"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Prove that the disk's times start at the delta's modification and advance strictly with
    /// every write, also when the clock has not moved, and that setting the mtime sticks.
    #[test]
    fn times_advance_with_every_write() {
        let dir = tempdir("times");
        let size = 4 << 20;
        let (master_path, _) = make_master(&dir, size);
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let disk = open_disk(&state, &master_path, true);
        let t0 = disk.times();
        assert_eq!(t0.modified, disk.delta().modified());
        let mut last = t0;
        for i in 0..50u64 {
            disk.write(i * 100, b"tick").unwrap();
            let t = disk.times();
            assert!(t.modified > last.modified && t.changed > last.changed);
            last = t;
        }
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        disk.set_modified(past);
        assert_eq!(disk.times().modified, past);
        assert!(disk.times().changed > last.changed);
        // A failed write changes nothing.
        assert!(disk.write(size, b"x").is_err());
        assert_eq!(disk.times().modified, past);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stage that transforms a whole "structure" (blocks 10..20) on first touch and keeps it in
    /// memory, as the SID rewrite does.
    struct StructureStage;
    impl PatchStage for StructureStage {
        fn name(&self) -> &'static str {
            "structure"
        }
        fn read_pristine(&self, master: &MasterImage, offset: u64, buf: &mut [u8]) -> Result<()> {
            master.read_at(offset, buf)?;
            let (s, e) = (10 * 4096, 20 * 4096);
            for (i, byte) in buf.iter_mut().enumerate() {
                if (s..e).contains(&(offset + i as u64)) {
                    *byte = 0xAB;
                }
            }
            Ok(())
        }
    }

    /// Prove the stage contract: a read never adds a block to the delta (only the guest's writes
    /// are there), and the guest's write wins over the structure's pristine bytes.
    #[test]
    fn reads_never_store_pristine_blocks_and_guest_writes_win() {
        let dir = tempdir("structure");
        let (master_path, _) = make_master(&dir, 8 << 20);
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let master = Arc::new(MasterImage::open(&master_path).unwrap());
        let delta = DeltaStore::create(&state, Geometry::new(master.size(), 4096)).unwrap();
        let disk = CloneDisk::new(master, delta, Box::new(StructureStage), false);
        // A guest write into the structure before it is first read.
        disk.write(15 * 4096 + 7, b"guest").unwrap();
        assert_eq!(disk.delta().present_blocks(), 1);
        let mut buf = vec![0u8; 4096];
        disk.read(12 * 4096, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0xAB));
        let mut all = vec![0u8; 30 * 4096];
        disk.read(0, &mut all).unwrap();
        assert_eq!(disk.delta().present_blocks(), 1, "a read stored blocks");
        disk.read(15 * 4096, &mut buf).unwrap();
        assert_eq!(&buf[7..12], b"guest");
        assert_eq!(buf[6], 0xAB);
        assert_eq!(buf[12], 0xAB);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stage with a bug: it panics for any range that meets block 7.
    struct PanickingStage;
    impl PatchStage for PanickingStage {
        fn name(&self) -> &'static str {
            "panicking"
        }
        fn read_pristine(&self, master: &MasterImage, offset: u64, buf: &mut [u8]) -> Result<()> {
            if offset < 8 * 4096 && offset + buf.len() as u64 > 7 * 4096 {
                panic!("test stage panics at block 7");
            }
            master.read_at(offset, buf)
        }
    }

    /// Prove that a panic in the stage fails only the request that hit it (EIO, naming the stage
    /// and the range), that a partial write into that block fails without adding it to the delta,
    /// and that the disk keeps serving every other read and write, on this thread and others.
    #[test]
    fn a_panicking_stage_fails_the_request_only() {
        let dir = tempdir("panic");
        let (master_path, model) = make_master(&dir, 4 << 20);
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let master = Arc::new(MasterImage::open(&master_path).unwrap());
        let delta = DeltaStore::create(&state, Geometry::new(master.size(), 4096)).unwrap();
        let disk = CloneDisk::new(master, delta, Box::new(PanickingStage), false);
        let mut buf = vec![0u8; 3 * 4096];
        for _ in 0..2 {
            let err = disk.read(6 * 4096, &mut buf).unwrap_err();
            assert_eq!(err.errno(), libc::EIO);
            let text = err.to_string();
            assert!(
                text.contains("panicking") && text.contains("0x6000"),
                "{text}"
            );
            assert!(text.contains("test stage panics at block 7"), "{text}");
        }
        assert!(disk.write(7 * 4096 + 1, b"x").is_err());
        assert_eq!(disk.delta().present_blocks(), 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut other = vec![0u8; 4096];
                disk.read(0, &mut other).unwrap();
                assert!(other[..] == model[..4096]);
            });
        });
        disk.write(100, b"still serving").unwrap();
        disk.read(0, &mut buf).unwrap();
        assert_eq!(&buf[100..113], b"still serving");
        // A whole-block write needs no pristine bytes: the guest can overwrite the block.
        disk.write(7 * 4096, &[5u8; 4096]).unwrap();
        disk.read(7 * 4096, &mut buf[..4096]).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
