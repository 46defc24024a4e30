//! The master image: opened read-only, read with positional I/O only, never written.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

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
}

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
