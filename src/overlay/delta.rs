//! The per-clone delta: every block that differs from the master (guest writes and patched
//! blocks), in a sparse file laid out like the disk, plus a persistent map of which blocks it holds.
//!
//! Files in the state directory:
//! - `delta.bin`: sparse, as large as the disk; block `i` lives at byte `i * block_size`, so the
//!   delta costs only what it holds and is readable with ordinary tools.
//! - `map.bin`: a 4 KiB header (magic `SIDFSMAP`, version, block size, block count) followed by
//!   a bitmap, bit `i` (LSB first) set when block `i` is in the delta.
//!
//! Crash safety rests on one ordering rule: a map bit reaches the disk only after the block data it
//! vouches for is durable. [`DeltaStore::sync`] snapshots the bitmap, `fdatasync`s the delta, and
//! only then writes the snapshot's dirty map pages and `fdatasync`s the map. Bits only ever go from
//! 0 to 1, so a torn map write can only lose bits set since the last sync (those blocks read from
//! the master again, as before the unsynced write) and never expose a block whose data was not
//! written. Blocks already in the delta are overwritten in place; like a disk, a write that was not
//! followed by fsync may be lost or torn by a crash, and one that was is not.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::error::{OverlayError, Result};
use super::units::{BlockIndex, Geometry};

pub const DELTA_FILE: &str = "delta.bin";
pub const MAP_FILE: &str = "map.bin";

const MAP_MAGIC: &[u8; 8] = b"SIDFSMAP";
const MAP_VERSION: u32 = 1;
/// The map header is one page so that bitmap pages stay page-aligned in the file.
const MAP_HEADER_LEN: u64 = 4096;
/// The unit in which the bitmap is written back; one page covers 32768 blocks (128 MiB of disk).
const MAP_PAGE_LEN: u64 = 4096;
const WORDS_PER_PAGE: usize = (MAP_PAGE_LEN / 8) as usize;
/// Copy-on-write of a block not yet in the delta is serialized per block through one of these
/// striped locks (a lock per block would cost memory proportional to the disk).
const LOCK_STRIPES: usize = 256;

pub struct DeltaStore {
    geometry: Geometry,
    delta: File,
    delta_path: PathBuf,
    map: File,
    map_path: PathBuf,
    bits: Vec<AtomicU64>,
    dirty_pages: Mutex<BTreeSet<usize>>,
    stripes: Vec<Mutex<()>>,
    sync_lock: Mutex<()>,
}

impl DeltaStore {
    /// Creates an empty delta in `dir` (files must not exist yet).
    pub fn create(dir: &Path, geometry: Geometry) -> Result<Self> {
        let delta_path = dir.join(DELTA_FILE);
        let map_path = dir.join(MAP_FILE);
        let delta = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&delta_path)
            .map_err(|e| OverlayError::io("cannot create delta", &delta_path, e))?;
        delta
            .set_len(geometry.disk_size)
            .map_err(|e| OverlayError::io("cannot size delta", &delta_path, e))?;
        let map = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&map_path)
            .map_err(|e| OverlayError::io("cannot create block map", &map_path, e))?;
        let words = geometry.block_count().div_ceil(64) as usize;
        let mut header = vec![0u8; MAP_HEADER_LEN as usize];
        header[0..8].copy_from_slice(MAP_MAGIC);
        header[8..12].copy_from_slice(&MAP_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&geometry.block_size.to_le_bytes());
        header[16..24].copy_from_slice(&geometry.block_count().to_le_bytes());
        map.write_all_at(&header, 0)
            .and_then(|_| map.set_len(MAP_HEADER_LEN + words as u64 * 8))
            .and_then(|_| map.sync_all())
            .and_then(|_| delta.sync_all())
            .map_err(|e| OverlayError::io("cannot initialise block map", &map_path, e))?;
        let bits = (0..words).map(|_| AtomicU64::new(0)).collect();
        Ok(Self::assemble(
            geometry, delta, delta_path, map, map_path, bits,
        ))
    }

    /// Opens an existing delta and loads its block map.
    pub fn open(dir: &Path, geometry: Geometry) -> Result<Self> {
        let delta_path = dir.join(DELTA_FILE);
        let map_path = dir.join(MAP_FILE);
        let delta = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&delta_path)
            .map_err(|e| OverlayError::io("cannot open delta", &delta_path, e))?;
        let map = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&map_path)
            .map_err(|e| OverlayError::io("cannot open block map", &map_path, e))?;
        let corrupt = |reason: String| OverlayError::StateCorrupt {
            path: map_path.clone(),
            reason,
        };
        let mut header = [0u8; 24];
        map.read_exact_at(&mut header, 0)
            .map_err(|_| corrupt("the block map header is truncated".into()))?;
        if &header[0..8] != MAP_MAGIC {
            return Err(corrupt("the block map has no SIDFSMAP magic".into()));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
        if version != MAP_VERSION {
            return Err(corrupt(format!(
                "block map version {version} is not supported by this sidfs (it reads version {MAP_VERSION})"
            )));
        }
        let block_size = u32::from_le_bytes(header[12..16].try_into().unwrap());
        let block_count = u64::from_le_bytes(header[16..24].try_into().unwrap());
        if block_size != geometry.block_size || block_count != geometry.block_count() {
            return Err(corrupt(format!(
                "the block map is for {block_count} blocks of {block_size} bytes, the disk has {} of {}",
                geometry.block_count(),
                geometry.block_size
            )));
        }
        let words = geometry.block_count().div_ceil(64) as usize;
        let mut raw = vec![0u8; words * 8];
        map.read_exact_at(&mut raw, MAP_HEADER_LEN)
            .map_err(|_| corrupt("the block map is truncated".into()))?;
        let bits = raw
            .chunks_exact(8)
            .map(|w| AtomicU64::new(u64::from_le_bytes(w.try_into().unwrap())))
            .collect();
        let len = delta
            .metadata()
            .map_err(|e| OverlayError::io("cannot stat delta", &delta_path, e))?
            .len();
        if len < geometry.disk_size {
            delta
                .set_len(geometry.disk_size)
                .map_err(|e| OverlayError::io("cannot size delta", &delta_path, e))?;
        }
        Ok(Self::assemble(
            geometry, delta, delta_path, map, map_path, bits,
        ))
    }

    fn assemble(
        geometry: Geometry,
        delta: File,
        delta_path: PathBuf,
        map: File,
        map_path: PathBuf,
        bits: Vec<AtomicU64>,
    ) -> Self {
        DeltaStore {
            geometry,
            delta,
            delta_path,
            map,
            map_path,
            bits,
            dirty_pages: Mutex::new(BTreeSet::new()),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            sync_lock: Mutex::new(()),
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn contains(&self, block: BlockIndex) -> bool {
        let word = (block.0 / 64) as usize;
        match self.bits.get(word) {
            Some(w) => w.load(Ordering::Acquire) & (1 << (block.0 % 64)) != 0,
            None => false,
        }
    }

    /// The first block at or after `from` (and before `limit`) whose presence is `present`.
    pub fn next_with(
        &self,
        from: BlockIndex,
        limit: BlockIndex,
        present: bool,
    ) -> Option<BlockIndex> {
        let mut b = from.0;
        while b < limit.0 {
            let word_index = (b / 64) as usize;
            let word = self.bits.get(word_index)?.load(Ordering::Acquire);
            let word = if present { word } else { !word };
            let masked = word & (!0u64 << (b % 64));
            if masked != 0 {
                let found = word_index as u64 * 64 + u64::from(masked.trailing_zeros());
                return (found < limit.0).then_some(BlockIndex(found));
            }
            b = (word_index as u64 + 1) * 64;
        }
        None
    }

    /// Number of blocks the delta holds.
    pub fn present_blocks(&self) -> u64 {
        self.bits
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Bytes the delta and its map occupy on the host file system.
    pub fn bytes_on_disk(&self) -> Result<u64> {
        let d = self
            .delta
            .metadata()
            .map_err(|e| OverlayError::io("cannot stat", &self.delta_path, e))?;
        let m = self
            .map
            .metadata()
            .map_err(|e| OverlayError::io("cannot stat", &self.map_path, e))?;
        Ok((d.blocks() + m.blocks()) * 512)
    }

    /// The lock that serializes adding `block` to the delta.
    pub fn stripe(&self, block: BlockIndex) -> &Mutex<()> {
        &self.stripes[(block.0 % LOCK_STRIPES as u64) as usize]
    }

    pub fn stripe_index(block: BlockIndex) -> usize {
        (block.0 % LOCK_STRIPES as u64) as usize
    }

    pub fn stripe_at(&self, index: usize) -> &Mutex<()> {
        &self.stripes[index]
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.delta.read_exact_at(buf, offset).map_err(|e| {
            OverlayError::io(format!("read at {offset:#x} of delta"), &self.delta_path, e)
        })
    }

    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.delta.write_all_at(data, offset).map_err(|e| {
            OverlayError::io(
                format!("write at {offset:#x} of delta"),
                &self.delta_path,
                e,
            )
        })
    }

    /// Records that `block` is in the delta. Call only after its data was written (and with the
    /// block's stripe lock held, so no one else adds it at the same time).
    pub fn mark_present(&self, block: BlockIndex) {
        let word = (block.0 / 64) as usize;
        let Some(w) = self.bits.get(word) else { return };
        let prev = w.fetch_or(1 << (block.0 % 64), Ordering::AcqRel);
        if prev & (1 << (block.0 % 64)) == 0 {
            self.dirty_pages.lock().insert(word / WORDS_PER_PAGE);
        }
    }

    /// Stores the clone's pristine content of `block` unless the delta already holds the block
    /// (the guest's own write always wins). Returns whether it was stored.
    pub fn store_if_absent(&self, block: BlockIndex, data: &[u8]) -> Result<bool> {
        if block.0 >= self.geometry.block_count() || data.len() != self.geometry.block_len(block) {
            return Err(OverlayError::OutOfRange {
                offset: self.geometry.block_start(block),
                len: data.len() as u64,
                disk_size: self.geometry.disk_size,
            });
        }
        let _guard = self.stripe(block).lock();
        if self.contains(block) {
            return Ok(false);
        }
        self.write_at(self.geometry.block_start(block), data)?;
        self.mark_present(block);
        Ok(true)
    }

    /// Makes every write completed before this call durable, data before map (see module docs).
    pub fn sync(&self) -> Result<()> {
        let _serial = self.sync_lock.lock();
        let pages: Vec<usize> = std::mem::take(&mut *self.dirty_pages.lock())
            .into_iter()
            .collect();
        // Snapshot the words of the dirty pages *before* syncing the data: every bit in the
        // snapshot was set after its block's data write returned, so that data is covered by the
        // fdatasync below. Bits set later stay in `dirty_pages` for the next sync.
        let snapshots: Vec<(usize, Vec<u8>)> = pages
            .iter()
            .map(|&page| {
                let first = page * WORDS_PER_PAGE;
                let last = (first + WORDS_PER_PAGE).min(self.bits.len());
                let bytes = self.bits[first..last]
                    .iter()
                    .flat_map(|w| w.load(Ordering::Acquire).to_le_bytes())
                    .collect();
                (page, bytes)
            })
            .collect();
        let restore = |this: &Self| this.dirty_pages.lock().extend(pages.iter().copied());
        if let Err(e) = self.delta.sync_data() {
            restore(self);
            return Err(OverlayError::io("cannot sync delta", &self.delta_path, e));
        }
        if snapshots.is_empty() {
            return Ok(());
        }
        for (page, bytes) in &snapshots {
            let at = MAP_HEADER_LEN + *page as u64 * MAP_PAGE_LEN;
            if let Err(e) = self.map.write_all_at(bytes, at) {
                restore(self);
                return Err(OverlayError::io(
                    "cannot write block map",
                    &self.map_path,
                    e,
                ));
            }
        }
        self.map.sync_data().map_err(|e| {
            restore(self);
            OverlayError::io("cannot sync block map", &self.map_path, e)
        })
    }

    pub fn has_unsynced_map(&self) -> bool {
        !self.dirty_pages.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sidfs-delta-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn map_survives_reopen_only_after_sync() {
        let dir = tempdir("reopen");
        let g = Geometry::new(1 << 30, 4096);
        {
            let d = DeltaStore::create(&dir, g).unwrap();
            assert!(d.store_if_absent(BlockIndex(5), &vec![7u8; 4096]).unwrap());
            assert!(!d.store_if_absent(BlockIndex(5), &vec![8u8; 4096]).unwrap());
            d.sync().unwrap();
            assert!(d
                .store_if_absent(BlockIndex(200_000), &vec![9u8; 4096])
                .unwrap());
            // dropped without sync: block 200000's bit must not be durable
        }
        let d = DeltaStore::open(&dir, g).unwrap();
        assert!(d.contains(BlockIndex(5)));
        assert!(!d.contains(BlockIndex(200_000)));
        let mut buf = vec![0u8; 4096];
        d.read_at(5 * 4096, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 7));
        assert_eq!(d.present_blocks(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn next_with_finds_runs_across_words() {
        let dir = tempdir("runs");
        let g = Geometry::new(4096 * 1000, 4096);
        let d = DeltaStore::create(&dir, g).unwrap();
        for b in [3u64, 64, 65, 130] {
            d.store_if_absent(BlockIndex(b), &vec![1; 4096]).unwrap();
        }
        let end = BlockIndex(1000);
        assert_eq!(d.next_with(BlockIndex(0), end, true), Some(BlockIndex(3)));
        assert_eq!(d.next_with(BlockIndex(4), end, true), Some(BlockIndex(64)));
        assert_eq!(
            d.next_with(BlockIndex(64), end, false),
            Some(BlockIndex(66))
        );
        assert_eq!(d.next_with(BlockIndex(131), end, true), None);
        assert_eq!(d.next_with(BlockIndex(0), BlockIndex(3), true), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_rejects_foreign_map() {
        let dir = tempdir("foreign");
        let g = Geometry::new(1 << 20, 4096);
        DeltaStore::create(&dir, g).unwrap();
        let other = Geometry::new(2 << 20, 4096);
        assert!(matches!(
            DeltaStore::open(&dir, other),
            Err(OverlayError::StateCorrupt { .. })
        ));
        std::fs::write(dir.join(MAP_FILE), b"garbage").unwrap();
        assert!(DeltaStore::open(&dir, g).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
