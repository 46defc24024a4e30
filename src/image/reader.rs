//! Positional, bounded reads from the master image.
//!
//! All I/O goes through `FileExt::read_exact_at`: there is no shared seek cursor, so many
//! readers (partitions, threads) can use one `File` at once. [`PartitionReader`] gives the
//! `ntfs` crate the `Read + Seek` view it needs, with its own private cursor, bounded to one
//! partition so that a hostile data run cannot read outside it.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use super::error::{ImageError, Result};

/// A byte offset from the start of the whole image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ImageOffset(pub u64);

/// A byte offset from the start of one partition (what the `ntfs` crate calls a position).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartitionOffset(pub u64);

impl ImageOffset {
    /// `self + delta`, or `None` on overflow.
    pub fn checked_add(self, delta: u64) -> Option<ImageOffset> {
        self.0.checked_add(delta).map(ImageOffset)
    }
}

impl fmt::Display for ImageOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "image offset {:#x}", self.0)
    }
}

impl fmt::Display for PartitionOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition offset {:#x}", self.0)
    }
}

/// A disk image opened read-only: a regular file or a block device, and its length.
#[derive(Debug)]
pub struct OpenedDisk {
    pub file: File,
    /// Length in bytes: a file's length, or a block device's size (which its metadata reports as
    /// 0).
    pub len: u64,
    pub is_block_device: bool,
}

/// Opens `path` read-only as a disk image and learns its size: the one place where sidfs opens a
/// master or an image to read (inspect, survey, mount, export, verify).
///
/// Only a regular file or a block device is a disk. Anything else is refused before a byte is
/// read: opening a FIFO for reading would block until a writer appears, so the open is
/// non-blocking and the type is checked on the opened descriptor (O_NONBLOCK has no effect on
/// reads of regular files and block devices). A block device's size comes from seeking to its
/// end, since its metadata says 0.
pub fn open_disk(path: &Path) -> io::Result<OpenedDisk> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Some("a directory")
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_socket() {
        Some("a socket")
    } else if ft.is_char_device() {
        Some("a character device")
    } else if ft.is_file() || ft.is_block_device() {
        None
    } else {
        Some("not a disk")
    };
    if let Some(kind) = kind {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a disk image: give a disk image file or a block device"),
        ));
    }
    let len = if ft.is_block_device() {
        (&file).seek(SeekFrom::End(0))?
    } else {
        meta.len()
    };
    Ok(OpenedDisk {
        file,
        len,
        is_block_device: ft.is_block_device(),
    })
}

/// The read-only master image: a shared file handle and its length, read only positionally.
#[derive(Clone, Debug)]
pub struct ImageFile {
    file: Arc<File>,
    len: u64,
}

impl ImageFile {
    /// Opens a disk image read-only (see [`open_disk`]).
    pub fn open(path: &Path) -> Result<ImageFile> {
        let disk = open_disk(path).map_err(|source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ImageFile {
            file: Arc::new(disk.file),
            len: disk.len,
        })
    }

    /// Length of the image in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty image file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying file.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Fills `buf` from `offset`; an error if the range is not entirely inside the image.
    pub fn read_exact_at(
        &self,
        offset: ImageOffset,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<()> {
        let needed = buf.len() as u64;
        let end = offset.0.checked_add(needed);
        if end.is_none_or(|end| end > self.len) {
            return Err(ImageError::Truncated {
                offset,
                what,
                needed,
                available: self.len.saturating_sub(offset.0),
            });
        }
        self.file
            .read_exact_at(buf, offset.0)
            .map_err(|source| ImageError::Io {
                offset,
                len: needed,
                source,
            })
    }

    /// Reads `len` bytes at `offset` into a new buffer, refusing lengths above `limit` so that a
    /// corrupt length field cannot make us allocate without bound.
    pub fn read_vec(
        &self,
        offset: ImageOffset,
        len: u64,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>> {
        if len > limit {
            return Err(ImageError::TooLarge {
                what: format!("{what} at {offset}"),
                size: len,
                limit,
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact_at(offset, &mut buf, what)?;
        Ok(buf)
    }
}

/// A `Read + Seek` view of `len` bytes of the image starting at `base`, with a private cursor.
///
/// Reads past the end return end-of-file, never bytes from outside the range.
#[derive(Clone, Debug)]
pub struct PartitionReader {
    image: ImageFile,
    base: ImageOffset,
    len: u64,
    pos: u64,
}

impl PartitionReader {
    /// A reader over `[base, base + len)`; the range is clipped to the image's end.
    pub fn new(image: ImageFile, base: ImageOffset, len: u64) -> PartitionReader {
        let available = image.len().saturating_sub(base.0);
        PartitionReader {
            image,
            base,
            len: len.min(available),
            pos: 0,
        }
    }

    /// Image offset of the start of this view.
    pub fn base(&self) -> ImageOffset {
        self.base
    }

    /// Length of this view in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if this view is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Converts an offset inside this view to an image offset.
    pub fn to_image(&self, offset: PartitionOffset) -> Option<ImageOffset> {
        self.base.checked_add(offset.0)
    }
}

impl Read for PartitionReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(remaining) as usize;
        if n == 0 {
            return Ok(0);
        }
        // The sum cannot overflow: pos < len and base + len <= image length.
        let at = self.base.0 + self.pos;
        self.image.file().read_exact_at(&mut buf[..n], at)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Where a seek to `pos` lands in a stream of `len` bytes read up to `current`: a seek before
/// the start (or past `u64::MAX`) is an error, as `Seek` asks.
pub(crate) fn seek_target(pos: SeekFrom, len: u64, current: u64) -> io::Result<u64> {
    let new = match pos {
        SeekFrom::Start(p) => Some(p),
        SeekFrom::End(d) => len.checked_add_signed(d),
        SeekFrom::Current(d) => current.checked_add_signed(d),
    };
    new.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "seek before the start or past u64::MAX",
        )
    })
}

impl Seek for PartitionReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(pos, self.len, self.pos)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sidfs-reader-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Prove that a FIFO is refused at once (an ordinary open for reading would wait for a
    /// writer forever), and a directory too, while a regular file opens with its length.
    #[test]
    fn only_files_and_block_devices_are_disks() {
        let dir = scratch("kinds");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = open_disk(&fifo).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains("a FIFO"), "{err}");
        }
        let err = open_disk(&dir).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let file = dir.join("disk.img");
        std::fs::write(&file, vec![7u8; 1536]).unwrap();
        let disk = open_disk(&file).unwrap();
        assert_eq!(disk.len, 1536);
        assert!(!disk.is_block_device);
        let image = ImageFile::open(&file).unwrap();
        assert_eq!(image.len(), 1536);
        let _ = std::fs::remove_dir_all(&dir);
    }
    /// A seek lands where `Seek` says, and one before the start is an error, not a wrap.
    #[test]
    fn seek_target_checks_the_arithmetic() {
        assert_eq!(seek_target(SeekFrom::Start(7), 10, 3).unwrap(), 7);
        assert_eq!(seek_target(SeekFrom::End(-2), 10, 3).unwrap(), 8);
        assert_eq!(seek_target(SeekFrom::Current(4), 10, 3).unwrap(), 7);
        for pos in [SeekFrom::End(-11), SeekFrom::Current(-4)] {
            let e = seek_target(pos, 10, 3).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        assert!(seek_target(SeekFrom::Current(1), 0, u64::MAX).is_err());
    }
}
