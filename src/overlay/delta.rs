//! The per-clone delta: every block that differs from the master (guest writes and patched
//! blocks), in a sparse file laid out like the disk, plus a persistent map of which blocks it holds.
//!
//! Files in the state directory:
//! - `delta.bin`: sparse, as large as the disk; block `i` lives at byte `i * block_size`, so the
//!   delta costs only what it holds and is readable with ordinary tools.
//! - `map.bin`: a 4 KiB header (magic `SIDFSMAP`, version, block size, block count, session
//!   marker) followed by a bitmap, bit `i` (LSB first) set when block `i` is in the delta. The
//!   whole file is allocated when it is created, so writing the map never needs new space.
//!
//! Crash safety rests on one ordering rule: a map bit reaches the disk only after the block data it
//! vouches for is durable. [`DeltaStore::sync`] snapshots the bitmap, `fdatasync`s the delta, and
//! only then writes the snapshot's dirty map pages and `fdatasync`s the map. Bits only ever go from
//! 0 to 1, so a torn map write can only lose bits set since the last sync (those blocks read from
//! the master again, as before the unsynced write) and never expose a block whose data was not
//! written. Blocks already in the delta are overwritten in place; like a disk, a write that was not
//! followed by fsync may be lost or torn by a crash, and one that was is not.
//!
//! A full or failing state file system never turns into a lost acknowledged write: space for a
//! block new to the delta is reserved (`fallocate`) before its write is acknowledged, so a write
//! that finds no room fails with ENOSPC; a sync that fails fails its fsync, and after an
//! `fdatasync` of the delta failed (the kernel may then have dropped the data and would not
//! report it again) every later sync and write of the session fails. The header's session marker
//! says whether the last mount ended with its state synced (see [`DeltaStore::begin_session`]).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

use log::warn;

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
/// Where the session marker lives in the map header (after magic, version, block size and block
/// count). Readers of map version 1 that predate it ignore these bytes, and zeros (what older
/// maps hold) mean "synced".
const SESSION_AT: u64 = 24;
/// The session marker while a mount serves the clone, and after a mount whose final sync failed.
const SESSION_UNSYNCED: &[u8; 8] = b"UNSYNCED";
/// The session marker once a mount ended with its state synced.
const SESSION_SYNCED: &[u8; 8] = &[0; 8];
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
    /// Delta data was written since the last sync began (overwrites in place set no map bit).
    data_dirty: AtomicBool,
    /// Whether the host file system can preallocate (`fallocate`); cleared when it says it cannot.
    preallocates: AtomicBool,
    /// Why the delta can no longer be made durable in this session (an `fdatasync` failed).
    lost: OnceLock<String>,
    /// The delta file's modification time when it was opened: the last time the clone changed.
    modified: SystemTime,
}

/// Reserves the space of `[offset, offset + len)` in `file` (within its size), so that writes
/// there need no new space. `Ok(false)`: the file system cannot preallocate.
fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    loop {
        // SAFETY: fallocate on a descriptor we own; no memory is involved.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Allocates the whole block map file: with `fallocate`, or by writing its zeros where the file
/// system cannot preallocate.
fn allocate_map(map: &File, len: u64) -> io::Result<()> {
    if preallocate(map, 0, len)? {
        return Ok(());
    }
    let zeros = vec![0u8; MAP_PAGE_LEN as usize];
    let mut at = MAP_HEADER_LEN;
    while at < len {
        let n = (len - at).min(MAP_PAGE_LEN) as usize;
        map.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

fn map_len(geometry: Geometry) -> u64 {
    MAP_HEADER_LEN + geometry.block_count().div_ceil(64) * 8
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
            .and_then(|_| map.set_len(map_len(geometry)))
            .and_then(|_| allocate_map(&map, map_len(geometry)))
            .and_then(|_| map.sync_all())
            .and_then(|_| delta.sync_all())
            .map_err(|e| OverlayError::io("cannot initialise block map", &map_path, e))?;
        let bits = (0..words).map(|_| AtomicU64::new(0)).collect();
        let modified = modified_time(&delta, &delta_path)?;
        Ok(Self::assemble(
            geometry, delta, delta_path, map, map_path, bits, modified,
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
        let modified = modified_time(&delta, &delta_path)?;
        let store = Self::assemble(geometry, delta, delta_path, map, map_path, bits, modified);
        if len < geometry.disk_size {
            // `create` sizes the delta to the disk, so it was cut short. Blocks the map holds
            // beyond its end would read as zeros if it were extended again: refuse. Without such
            // blocks nothing is lost, and extending it restores the layout.
            let cut = BlockIndex(len / u64::from(geometry.block_size));
            let limit = BlockIndex(geometry.block_count());
            if let Some(first) = store.next_with(cut, limit, true) {
                return Err(OverlayError::StateCorrupt {
                    path: store.delta_path.clone(),
                    reason: format!(
                        "{DELTA_FILE} is {len} bytes, shorter than the {}-byte disk it was created for, and {} blocks the block map holds lie beyond its end (the first at disk offset {:#x}): the delta was truncated and those blocks are lost; restore {DELTA_FILE} from a backup, or pass another --state for a new clone",
                        geometry.disk_size,
                        store.present_from(cut),
                        geometry.block_start(first)
                    ),
                });
            }
            store
                .delta
                .set_len(geometry.disk_size)
                .map_err(|e| OverlayError::io("cannot size delta", &store.delta_path, e))?;
        }
        // A map written by an older sidfs may be sparse: allocate it now while there is room, so
        // that its writes need no space later. Without room the clone still mounts, and an fsync
        // that cannot write the map fails.
        if let Err(e) = allocate_map(&store.map, map_len(geometry)) {
            warn!(
                "cannot preallocate block map {}: {e}; syncs fail while its file system is full",
                store.map_path.display()
            );
        }
        Ok(store)
    }

    fn assemble(
        geometry: Geometry,
        delta: File,
        delta_path: PathBuf,
        map: File,
        map_path: PathBuf,
        bits: Vec<AtomicU64>,
        modified: SystemTime,
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
            data_dirty: AtomicBool::new(false),
            preallocates: AtomicBool::new(true),
            lost: OnceLock::new(),
            modified,
        }
    }

    /// The delta file's modification time when it was opened (created: its creation time).
    pub fn modified(&self) -> SystemTime {
        self.modified
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

    /// Number of blocks the delta holds at or after `from`.
    fn present_from(&self, from: BlockIndex) -> u64 {
        let word = (from.0 / 64) as usize;
        let Some(first) = self.bits.get(word) else {
            return 0;
        };
        let head = first.load(Ordering::Relaxed) & (!0u64 << (from.0 % 64));
        u64::from(head.count_ones())
            + self.bits[word + 1..]
                .iter()
                .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
                .sum::<u64>()
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
        let written = self.delta.write_all_at(data, offset);
        // Set after the write (also a failed one, which may have written part): a sync that
        // clears the flag before this point syncs after the write, one that clears it later
        // leaves it set for the next.
        self.data_dirty.store(true, Ordering::Release);
        written.map_err(|e| {
            OverlayError::io(
                format!("write at {offset:#x} of delta"),
                &self.delta_path,
                e,
            )
        })
    }

    /// Reserves the delta's space for `[offset, offset + len)` (blocks about to enter the delta),
    /// so that their write, once acknowledged, needs no space when the kernel writes it back. A
    /// full state file system fails here, before anything is acknowledged (ENOSPC).
    pub fn reserve(&self, offset: u64, len: u64) -> Result<()> {
        if !self.preallocates.load(Ordering::Relaxed) {
            return Ok(());
        }
        match preallocate(&self.delta, offset, len) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.preallocates.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(OverlayError::io(
                format!("cannot reserve space at {offset:#x}+{len:#x} of delta"),
                &self.delta_path,
                e,
            )),
        }
    }

    /// Fails when an earlier sync of this session failed in a way that may have lost data, so
    /// that nothing more is acknowledged on top of it.
    pub fn check_durable(&self) -> Result<()> {
        match self.lost.get() {
            Some(cause) => Err(OverlayError::NotDurable {
                path: self.delta_path.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
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

    /// Stores one whole block unless the delta already holds it. Returns whether it was stored.
    /// Only the tests of this module add blocks so; the clone's writes go through `CloneDisk`.
    #[cfg(test)]
    fn store_if_absent(&self, block: BlockIndex, data: &[u8]) -> Result<bool> {
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
        let start = self.geometry.block_start(block);
        self.reserve(start, data.len() as u64)?;
        self.write_at(start, data)?;
        self.mark_present(block);
        Ok(true)
    }

    /// Makes every write completed before this call durable, data before map (see module docs).
    /// After an `fdatasync` of the delta failed, this and every later sync fail.
    pub fn sync(&self) -> Result<()> {
        let _serial = self.sync_lock.lock();
        self.check_durable()?;
        // Cleared before the data sync: a write racing with it sets the flag again.
        self.data_dirty.store(false, Ordering::Release);
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
            // The kernel may have dropped the pages it could not write and will not report that
            // again: no later fdatasync can vouch for the data, so the session stays failed.
            let _ = self.lost.set(format!("syncing it failed ({e})"));
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

    /// Whether anything was written (delta data or map bits) since the last sync began.
    pub fn has_unsynced_changes(&self) -> bool {
        self.data_dirty.load(Ordering::Acquire) || !self.dirty_pages.lock().is_empty()
    }

    /// Marks the state as being served (the session marker reads `UNSYNCED`, durably) until
    /// [`end_session`](Self::end_session) records that it was synced at the end.
    pub fn begin_session(&self) -> Result<()> {
        self.write_session_marker(SESSION_UNSYNCED)
    }

    /// Syncs everything and then records in the map header that the state was synced at the end
    /// of the session. A failure leaves the marker at `UNSYNCED`.
    pub fn end_session(&self) -> Result<()> {
        self.sync()?;
        self.write_session_marker(SESSION_SYNCED)
    }

    fn write_session_marker(&self, marker: &[u8; 8]) -> Result<()> {
        let _serial = self.sync_lock.lock();
        self.map
            .write_all_at(marker, SESSION_AT)
            .and_then(|_| self.map.sync_data())
            .map_err(|e| OverlayError::io("cannot write block map header", &self.map_path, e))
    }

    /// Whether the last mount of the state in `dir` ended with its state synced (read without
    /// the state's lock, after its process exited). A mount still serving it reads as unsynced.
    pub fn last_session_synced(dir: &Path) -> Result<bool> {
        let path = dir.join(MAP_FILE);
        let map = File::open(&path).map_err(|e| OverlayError::io("cannot open", &path, e))?;
        let mut marker = [0u8; 8];
        map.read_exact_at(&mut marker, SESSION_AT)
            .map_err(|e| OverlayError::io("cannot read the header of", &path, e))?;
        Ok(&marker != SESSION_UNSYNCED)
    }
}

fn modified_time(delta: &File, path: &Path) -> Result<SystemTime> {
    delta
        .metadata()
        .and_then(|m| m.modified())
        .map_err(|e| OverlayError::io("cannot stat delta", path, e))
}

#[cfg(test)]
mod tests;
