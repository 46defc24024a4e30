//! The master image: opened read-only, read with positional I/O only, never written.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{OverlayError, Result};

/// How many bytes of the master the fingerprint hashes: the first and last MiB (partition tables,
/// GPT backup) and `SAMPLE_COUNT` evenly spread 64 KiB windows. Hashing the whole master would
/// make every mount of a 128 GiB image take minutes; size + mtime + samples catch every real-world
/// change (a rewrite, a resize, a different image under the same name) in milliseconds.
const EDGE_BYTES: u64 = 1 << 20;
const SAMPLE_BYTES: u64 = 64 << 10;
const SAMPLE_COUNT: u64 = 64;

/// What identifies a master: a clone's state records it and refuses any other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterFingerprint {
    pub size: u64,
    pub mtime_ns: i128,
    pub sample_sha256: String,
}

pub struct MasterImage {
    file: File,
    path: PathBuf,
    size: u64,
    is_block_device: bool,
    /// The same file opened again with `O_DIRECT` on first use (through `/proc/self/fd`, so it
    /// is the same inode), for clients that read the clone with `O_DIRECT`; `None` where the
    /// file system refuses it.
    direct: OnceLock<Option<File>>,
    /// Cleared when a direct read is refused (`EINVAL`): every later read is buffered.
    direct_works: AtomicBool,
}

/// The alignment of offset, length and buffer address of a direct read of the master (the
/// largest logical block size of common devices; the page size).
pub const DIRECT_ALIGN: usize = 4096;

impl MasterImage {
    /// Opens the master read-only: a regular file or a block device (with its real size);
    /// anything else is refused before it is read ([`crate::image::open_disk`]).
    pub fn open(path: &Path) -> Result<Self> {
        let disk = crate::image::reader::open_disk(path)
            .map_err(|e| OverlayError::io("cannot open master", path, e))?;
        Ok(MasterImage {
            file: disk.file,
            path: path.to_path_buf(),
            size: disk.len,
            is_block_device: disk.is_block_device,
            direct: OnceLock::new(),
            direct_works: AtomicBool::new(true),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads master bytes at `offset`; bytes past the end of the master read as zeros.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let avail = self.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        self.file.read_exact_at(head, offset).map_err(|e| {
            OverlayError::io(format!("read at {offset:#x} of master"), &self.path, e)
        })?;
        tail.fill(0);
        Ok(())
    }

    /// Reads master bytes at `offset` past the page cache (`O_DIRECT`): no cache fill, no
    /// readahead, one copy less. Only where offset, length and buffer address are multiples of
    /// [`DIRECT_ALIGN`], the range lies within the master and its file system allows it;
    /// otherwise (`Ok(false)`) nothing was read and the caller uses [`Self::read_at`].
    pub fn read_direct_at(&self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        let align = DIRECT_ALIGN as u64;
        let aligned = offset.is_multiple_of(align)
            && buf.len().is_multiple_of(DIRECT_ALIGN)
            && (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
        let inside = offset
            .checked_add(buf.len() as u64)
            .is_some_and(|end| end <= self.size);
        if !aligned || !inside || buf.is_empty() || !self.direct_works.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let Some(file) = self.direct.get_or_init(|| self.open_direct()) else {
            return Ok(false);
        };
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            match file.read_at(&mut buf[done..], at) {
                Ok(0) => {
                    return Err(OverlayError::io(
                        format!("read at {at:#x} of master"),
                        &self.path,
                        std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                    ))
                }
                // A short direct read stops on an aligned boundary; the rest, if not, is read
                // through the page cache.
                Ok(n) => {
                    done += n;
                    if !done.is_multiple_of(DIRECT_ALIGN) {
                        let rest = offset + done as u64;
                        self.read_at(rest, &mut buf[done..])?;
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && done == 0 => {
                    self.direct_works.store(false, Ordering::Relaxed);
                    return Ok(false);
                }
                Err(e) => {
                    return Err(OverlayError::io(
                        format!("read at {at:#x} of master"),
                        &self.path,
                        e,
                    ))
                }
            }
        }
        Ok(true)
    }

    fn open_direct(&self) -> Option<File> {
        let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(proc_path)
            .map_err(|e| log::info!("master {}: no direct reads ({e})", self.path.display()))
            .ok()
    }

    /// Bytes the master occupies on its file system (what is not a hole).
    pub fn allocated_bytes(&self) -> u64 {
        if self.is_block_device {
            // A device has no holes to report, and its metadata counts no blocks.
            return self.size;
        }
        self.file
            .metadata()
            .map(|m| m.blocks() * 512)
            .unwrap_or(self.size)
    }

    pub fn fingerprint(&self) -> Result<MasterFingerprint> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| OverlayError::io("cannot stat master", &self.path, e))?;
        // A block device's node has no meaningful modification time (it is the device node's,
        // not the data's, and may change when the device is set up again): its content samples
        // alone identify it.
        let mtime_ns = if self.is_block_device {
            0
        } else {
            i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
        };
        let mut hasher = Sha256::new();
        hasher.update(self.size.to_le_bytes());
        let mut windows = vec![(0, EDGE_BYTES.min(self.size))];
        if self.size > EDGE_BYTES {
            let start = self.size.saturating_sub(EDGE_BYTES);
            windows.push((start, self.size - start));
        }
        let stride = self.size / (SAMPLE_COUNT + 1);
        if stride > SAMPLE_BYTES {
            for i in 1..=SAMPLE_COUNT {
                windows.push((i * stride, SAMPLE_BYTES));
            }
        }
        let mut buf = vec![0u8; EDGE_BYTES as usize];
        for (start, len) in windows {
            let chunk = &mut buf[..len as usize];
            self.read_at(start, chunk)?;
            hasher.update(start.to_le_bytes());
            hasher.update(&*chunk);
        }
        let digest = hasher.finalize();
        Ok(MasterFingerprint {
            size: self.size,
            mtime_ns,
            sample_sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// The first offset >= `offset` where the master holds data (SEEK_DATA), or `None` if only a
    /// hole follows. A file system without hole support reports everything as data.
    pub fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        self.seek(offset, libc::SEEK_DATA)
    }

    /// The first offset >= `offset` that is in a hole (SEEK_HOLE); the end of the master counts as
    /// a hole.
    pub fn next_hole(&self, offset: u64) -> Result<u64> {
        Ok(self.seek(offset, libc::SEEK_HOLE)?.unwrap_or(self.size))
    }

    fn seek(&self, offset: u64, whence: i32) -> Result<Option<u64>> {
        if offset >= self.size {
            return Ok(None);
        }
        let Ok(off) = libc::off_t::try_from(offset) else {
            return Ok(None);
        };
        // SAFETY: lseek on a file descriptor we own; it only moves the descriptor's offset, which
        // nothing else uses (all reads are positional), so concurrent calls cannot interfere.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), off, whence) };
        if r < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENXIO) => Ok(None),
                // Not supported (block devices, some file systems): all of it is data.
                Some(libc::EINVAL) if whence == libc::SEEK_DATA => Ok(Some(offset)),
                Some(libc::EINVAL) => Ok(Some(self.size)),
                _ => Err(OverlayError::io("cannot seek in master", &self.path, err)),
            };
        }
        Ok(Some(r as u64))
    }
}
