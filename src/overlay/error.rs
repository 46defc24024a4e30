//! Errors of the overlay layer, and their one mapping to errno for the FUSE boundary.

use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum OverlayError {
    /// An I/O error with what we were doing and on which file.
    Io {
        context: String,
        path: PathBuf,
        source: io::Error,
    },
    /// The state directory belongs to a different clone (another master, another seed).
    StateMismatch { state_dir: PathBuf, reason: String },
    /// The state directory is damaged or from an unknown version.
    StateCorrupt { path: PathBuf, reason: String },
    /// Another sidfs process is using this state directory.
    StateInUse {
        state_dir: PathBuf,
        pid: Option<u32>,
    },
    /// The patch stage could not produce the clone's bytes for a range; `source` is the stage's
    /// own typed error (for the SID rewrite, `crate::rewrite::RewriteError`).
    Patch {
        offset: u64,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The patch stage panicked (a bug): the panic was contained and failed this request only.
    StagePanic {
        stage: &'static str,
        offset: u64,
        len: u64,
        message: String,
    },
    /// An earlier sync of the delta failed in a way that may have lost data, so nothing more can
    /// be acknowledged as durable until the clone is mounted again.
    NotDurable { path: PathBuf, cause: String },
    /// A write to a read-only clone.
    ReadOnly,
    /// An access beyond the end of the disk.
    OutOfRange {
        offset: u64,
        len: u64,
        disk_size: u64,
    },
}

impl OverlayError {
    pub fn io(context: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> Self {
        OverlayError::Io {
            context: context.into(),
            path: path.into(),
            source,
        }
    }

    /// The errno a FUSE reply carries for this error. Corrupt data is EIO, never a panic.
    pub fn errno(&self) -> i32 {
        match self {
            OverlayError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            OverlayError::ReadOnly => libc::EROFS,
            OverlayError::OutOfRange { .. } => libc::EINVAL,
            OverlayError::StateInUse { .. } => libc::EBUSY,
            OverlayError::StateMismatch { .. }
            | OverlayError::StateCorrupt { .. }
            | OverlayError::Patch { .. }
            | OverlayError::StagePanic { .. }
            | OverlayError::NotDurable { .. } => libc::EIO,
        }
    }
}

impl std::fmt::Display for OverlayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverlayError::Io {
                context,
                path,
                source,
            } => write!(f, "{context} {}: {source}", path.display()),
            OverlayError::StateMismatch { state_dir, reason } => {
                write!(f, "state {} {reason}", state_dir.display())
            }
            OverlayError::StateCorrupt { path, reason } => {
                write!(f, "clone state {} is damaged: {reason}", path.display())
            }
            OverlayError::StateInUse { state_dir, pid } => match pid {
                Some(pid) => write!(
                    f,
                    "state {} is in use by sidfs process {pid}: unmount that clone first (sidfs umount)",
                    state_dir.display()
                ),
                None => write!(
                    f,
                    "state {} is in use by another sidfs process: unmount that clone first",
                    state_dir.display()
                ),
            },
            OverlayError::Patch { offset, source } => {
                write!(f, "patching the clone at disk offset {offset:#x} failed: {source}")
            }
            OverlayError::StagePanic {
                stage,
                offset,
                len,
                message,
            } => write!(
                f,
                "the {stage} patch stage panicked reading {offset:#x}+{len:#x} (a bug in sidfs; the read fails, the mount goes on): {message}"
            ),
            OverlayError::NotDurable { path, cause } => write!(
                f,
                "the clone's delta {} can no longer be made durable because {cause}: writes since the last successful fsync may be lost; unmount the clone, check the state's file system and mount it again",
                path.display()
            ),
            OverlayError::ReadOnly => write!(f, "the clone is mounted read-only"),
            OverlayError::OutOfRange {
                offset,
                len,
                disk_size,
            } => write!(
                f,
                "access at {offset:#x}+{len:#x} is beyond the end of the disk ({disk_size:#x} bytes)"
            ),
        }
    }
}

impl std::error::Error for OverlayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OverlayError::Io { source, .. } => Some(source),
            OverlayError::Patch { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

pub type Result<T, E = OverlayError> = std::result::Result<T, E>;
