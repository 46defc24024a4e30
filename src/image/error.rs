//! Errors of the image layer: partition maps and NTFS volumes.
//!
//! Every variant that comes from the image's bytes carries the absolute image offset of the
//! structure that was wrong, and what was expected and found, so that a damaged image can be
//! diagnosed from the message alone. Corrupt metadata is an error, never a panic.

use std::fmt;
use std::io;

use super::reader::ImageOffset;

/// An error while reading or understanding a disk image.
#[derive(Debug)]
pub enum ImageError {
    /// The image cannot be opened, or is not a disk (a FIFO, a directory, ...).
    Open {
        path: std::path::PathBuf,
        source: io::Error,
    },
    /// The operating system failed a read.
    Io {
        offset: ImageOffset,
        len: u64,
        source: io::Error,
    },
    /// A structure extends past the end of the image (or of its partition).
    Truncated {
        offset: ImageOffset,
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// A structure's bytes are not what its format requires.
    Invalid {
        offset: ImageOffset,
        what: &'static str,
        expected: String,
        found: String,
    },
    /// The `ntfs` crate rejected a structure. `volume` is the image offset of the volume; the
    /// crate's message gives positions relative to that volume.
    Ntfs {
        volume: ImageOffset,
        context: String,
        message: String,
    },
    /// The `ntfs` crate panicked on hostile input; the panic was contained.
    NtfsPanic {
        volume: ImageOffset,
        context: String,
        message: String,
    },
    /// A path does not exist on the volume.
    NotFound { volume: ImageOffset, path: String },
    /// A value is larger than the caller's or the layer's limit.
    TooLarge { what: String, size: u64, limit: u64 },
    /// No NTFS file system at this place.
    NotNtfs { offset: ImageOffset, found: String },
}

impl ImageError {
    /// Convenience constructor for [`ImageError::Invalid`].
    pub fn invalid(
        offset: ImageOffset,
        what: &'static str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        ImageError::Invalid {
            offset,
            what,
            expected: expected.into(),
            found: found.into(),
        }
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Open { path, source } => {
                write!(f, "cannot open {}: {source}", path.display())
            }
            ImageError::Io {
                offset,
                len,
                source,
            } => write!(f, "at {offset}: reading {len} bytes failed: {source}"),
            ImageError::Truncated {
                offset,
                what,
                needed,
                available,
            } => write!(
                f,
                "at {offset}: {what} truncated: expected {needed} bytes, found {available}"
            ),
            ImageError::Invalid {
                offset,
                what,
                expected,
                found,
            } => write!(f, "at {offset}: {what}: expected {expected}, found {found}"),
            ImageError::Ntfs {
                volume,
                context,
                message,
            } => write!(
                f,
                "NTFS volume at {volume}: {context}: {message} (positions relative to the volume)"
            ),
            ImageError::NtfsPanic {
                volume,
                context,
                message,
            } => write!(
                f,
                "NTFS volume at {volume}: {context}: the ntfs crate panicked on corrupt metadata: {message}"
            ),
            ImageError::NotFound { volume, path } => {
                write!(f, "NTFS volume at {volume}: {path} not found")
            }
            ImageError::TooLarge { what, size, limit } => {
                write!(f, "{what}: size {size} exceeds the limit {limit}")
            }
            ImageError::NotNtfs { offset, found } => {
                write!(f, "at {offset}: expected an NTFS boot sector, found {found}")
            }
        }
    }
}

impl std::error::Error for ImageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ImageError::Io { source, .. } | ImageError::Open { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result of the image layer.
pub type Result<T> = std::result::Result<T, ImageError>;
