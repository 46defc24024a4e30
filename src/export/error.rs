//! Why `sidfs export` (raw or qcow2) refused or failed: one variant per refusal, carrying the
//! paths, the values and the underlying error; `Display` is the one sentence the user reads
//! (docs/TROUBLESHOOTING.md lists them).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::overlay::state::STATE_FILE;
use crate::qcow2::{Qcow2Error, MAX_BACKING_NAME};

/// How an export's output overlaps the master.
#[derive(Debug)]
pub enum MasterOverlap {
    /// The same file (a path, a symlink or a hard link).
    Same,
    /// The same block device, a partition of it, or the disk it is a partition of.
    SharesBlocks,
    /// A loop device of the same file as the master (a loop device too).
    LoopOfSameFile { file: PathBuf },
    /// A loop device backed by the master file.
    LoopOfMaster,
    /// The block device (or a whole disk of it) the master's file system is on.
    HoldsFileSystem,
}

/// A refusal or failure of `sidfs export`.
#[derive(Debug)]
pub enum ExportError {
    /// Neither `--seed`, `--sid`, `--keep-sid` nor `--state` says which clone to export.
    NoCloneGiven,
    /// The output is, or holds, the master.
    OutputIsMaster {
        out: PathBuf,
        master: PathBuf,
        overlap: MasterOverlap,
    },
    /// The output is neither a regular file nor a block device.
    OutputKind { out: PathBuf },
    /// The output file exists and `--force` was not given.
    OutputExists { out: PathBuf },
    /// `--state` names a directory that does not exist.
    StateMissing { state_dir: PathBuf },
    /// `--state` names a directory without a state file.
    NotAState { state_dir: PathBuf },
    /// The temporary output file cannot be created.
    CreatePartial {
        partial: PathBuf,
        out: PathBuf,
        source: io::Error,
    },
    /// The finished temporary file cannot be renamed to the output.
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    /// The output's directory cannot be synced after the rename.
    SyncDirectory { dir: PathBuf, source: io::Error },
    /// The output block device cannot be opened for writing.
    OpenDevice { out: PathBuf, source: io::Error },
    /// The output's size cannot be read or set.
    Size { out: PathBuf, source: io::Error },
    /// The output block device is smaller than the clone.
    DeviceTooSmall { out: PathBuf, room: u64, size: u64 },
    /// Writing to the output failed.
    Write { out: PathBuf, source: io::Error },
    /// Syncing the output failed.
    Sync { out: PathBuf, source: io::Error },
    /// A qcow2 export of a disk that is not a whole number of sectors.
    NotWholeSectors { master: PathBuf, size: u64 },
    /// Writing the qcow2 overlay's metadata failed.
    Qcow2Write { out: PathBuf, source: Qcow2Error },
    /// Writing a qcow2 cluster failed.
    Qcow2(Qcow2Error),
    /// A qcow2 export onto a block device.
    Qcow2OnDevice { out: PathBuf },
    /// A qcow2 export onto something that is not a regular file.
    Qcow2OutputKind { out: PathBuf },
    /// A qcow2 export over its own backing file.
    Qcow2OutputIsMaster { out: PathBuf, master: PathBuf },
    /// The directory of the master or of the output cannot be resolved.
    DirectoryUnresolvable { path: PathBuf, source: io::Error },
    /// The master path names no file.
    MasterNoFileName { master: PathBuf },
    /// The backing file name does not fit in a qcow2 header.
    BackingNameTooLong { name: PathBuf, len: usize },
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ExportError::*;
        match self {
            NoCloneGiven => {
                f.write_str("give --seed N or --sid SID (or --state DIR to export an existing clone)")
            }
            OutputIsMaster {
                out,
                master,
                overlap,
            } => {
                write!(f, "the output {} ", out.display())?;
                let master = master.display();
                match overlap {
                    MasterOverlap::Same => write!(f, "is the master {master} itself"),
                    MasterOverlap::SharesBlocks => {
                        write!(f, "shares blocks with the master's device {master}")
                    }
                    MasterOverlap::LoopOfSameFile { file } => write!(
                        f,
                        "is a loop device of the same file {} as the master {master}",
                        file.display()
                    ),
                    MasterOverlap::LoopOfMaster => {
                        write!(f, "is a loop device backed by the master {master}")
                    }
                    MasterOverlap::HoldsFileSystem => {
                        write!(f, "holds the file system of the master {master}")
                    }
                }?;
                f.write_str(
                    ": writing the clone there would destroy the master; give another output",
                )
            }
            OutputKind { out } => write!(
                f,
                "{} is neither a regular file nor a block device: give the path of an image file to create, or a block device",
                out.display()
            ),
            OutputExists { out } => write!(
                f,
                "{} already exists; remove it or pass --force to overwrite it",
                out.display()
            ),
            StateMissing { state_dir } => write!(
                f,
                "state directory {} does not exist: give the --state of an existing clone, or leave out --state to export a new clone",
                state_dir.display()
            ),
            NotAState { state_dir } => write!(
                f,
                "{} is not a clone state (it has no {STATE_FILE}): give the --state of an existing clone, or leave out --state to export a new clone",
                state_dir.display()
            ),
            CreatePartial {
                partial,
                out,
                source,
            } => write!(
                f,
                "cannot create {} (the export is written there, then renamed to {}): {source}",
                partial.display(),
                out.display()
            ),
            Rename { from, to, source } => write!(
                f,
                "cannot rename {} to {}: {source}",
                from.display(),
                to.display()
            ),
            SyncDirectory { dir, source } => {
                write!(f, "cannot sync directory {}: {source}", dir.display())
            }
            OpenDevice { out, source } => {
                write!(f, "cannot open {} for writing: {source}", out.display())
            }
            Size { out, source } => write!(f, "cannot size {}: {source}", out.display()),
            DeviceTooSmall { out, room, size } => write!(
                f,
                "{} holds {room} bytes, but the clone is {size} bytes: give a device at least as large as the master",
                out.display()
            ),
            Write { out, source } => write!(f, "write to {} failed: {source}", out.display()),
            Sync { out, source } => write!(f, "cannot sync {}: {source}", out.display()),
            NotWholeSectors { master, size } => write!(
                f,
                "the master {} is {size} bytes, not a whole number of 512-byte sectors, which qemu cannot show as a qcow2 disk: export it with --format raw",
                master.display()
            ),
            Qcow2Write { out, source } => write!(f, "writing {}: {source}", out.display()),
            Qcow2(e) => write!(f, "{e}"),
            Qcow2OnDevice { out } => write!(
                f,
                "{} is a block device: a qcow2 export is an image file; give a file path, or write the clone onto the device with --format raw",
                out.display()
            ),
            Qcow2OutputKind { out } => write!(
                f,
                "{} is not a regular file: give the path of a qcow2 image file to create",
                out.display()
            ),
            Qcow2OutputIsMaster { out, master } => write!(
                f,
                "the output {} is the master {} itself: the overlay would replace its own backing file; give another output",
                out.display(),
                master.display()
            ),
            DirectoryUnresolvable { path, source } => write!(
                f,
                "cannot resolve the directory of {}: {source}",
                path.display()
            ),
            MasterNoFileName { master } => write!(
                f,
                "{} does not name a master file: give its path",
                master.display()
            ),
            BackingNameTooLong { name, len } => write!(
                f,
                "the master's path {} is {len} bytes long, more than a qcow2 backing file name holds ({MAX_BACKING_NAME}): give a shorter path (or a symlink to the master)",
                name.display()
            ),
        }
    }
}

impl std::error::Error for ExportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use ExportError::*;
        match self {
            CreatePartial { source, .. }
            | Rename { source, .. }
            | SyncDirectory { source, .. }
            | OpenDevice { source, .. }
            | Size { source, .. }
            | Write { source, .. }
            | Sync { source, .. }
            | DirectoryUnresolvable { source, .. } => Some(source),
            Qcow2Write { source, .. } | Qcow2(source) => Some(source),
            _ => None,
        }
    }
}
