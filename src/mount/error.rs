//! Why a mount, unmount, status or mount daemon failed: one variant per refusal, carrying the
//! paths and the underlying error; `Display` is the one sentence the user reads (exit status 1),
//! saying why and what to do (docs/TROUBLESHOOTING.md lists them).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::overlay::{state::LOG_FILE, OverlayError};

/// A failure to mount, unmount or describe a clone.
#[derive(Debug)]
pub enum MountError {
    /// The master image does not exist.
    MasterMissing { master: PathBuf },
    /// The master's metadata cannot be read.
    MasterUnreadable { master: PathBuf, source: io::Error },
    /// The master is a directory.
    MasterIsDirectory { master: PathBuf },
    /// The master is neither a regular file nor a block device (a FIFO, a socket, ...).
    MasterNotDisk { master: PathBuf },
    /// The master cannot be opened for reading.
    MasterNotOpenable { master: PathBuf, source: io::Error },
    /// The mountpoint is neither a directory nor a regular file.
    MountpointKind { mountpoint: PathBuf },
    /// The mountpoint holds a FUSE mount whose process is gone (ENOTCONN).
    MountpointDead { mountpoint: PathBuf },
    /// The mountpoint does not exist.
    MountpointMissing { mountpoint: PathBuf },
    /// The mountpoint's metadata cannot be read.
    MountpointUnusable {
        mountpoint: PathBuf,
        source: io::Error,
    },
    /// Something is already mounted at the mountpoint: a sidfs clone (with its state
    /// directory) or another file system (with its type).
    MountpointBusy {
        mountpoint: PathBuf,
        occupant: Occupant,
    },
    /// The mountpoint is the master image itself.
    MountpointIsMaster,
    /// The state directory is the mountpoint or inside it.
    StateUnderMountpoint {
        state_dir: PathBuf,
        mountpoint: PathBuf,
        same: bool,
    },
    /// /dev/fuse does not exist.
    NoFuseDevice,
    /// The state directory cannot be resolved to an absolute path.
    StateDirUnresolvable {
        state_dir: PathBuf,
        source: io::Error,
    },
    /// The delta could not be marked as in use before mounting.
    SessionStart {
        mountpoint: PathBuf,
        source: OverlayError,
    },
    /// The kernel refused the FUSE mount.
    Kernel {
        mountpoint: PathBuf,
        source: io::Error,
    },
    /// A thread of the daemon could not be started.
    Thread {
        name: &'static str,
        source: io::Error,
    },
    /// The clone was unmounted but the final sync of its state failed.
    FinalSync {
        mountpoint: PathBuf,
        source: OverlayError,
    },
    /// The FUSE session ended with an error.
    Serving {
        mountpoint: PathBuf,
        source: io::Error,
    },
    /// `sidfs umount` of a path where nothing is mounted.
    NotMounted { mountpoint: PathBuf },
    /// `sidfs umount` of another file system's mount.
    NotSidfs {
        mountpoint: PathBuf,
        fs_type: String,
    },
    /// The unmount is refused because a program has the disk open.
    Busy { mountpoint: PathBuf },
    /// fusermount3 refused the unmount; `message` is its own.
    Unmount {
        mountpoint: PathBuf,
        message: String,
    },
    /// fusermount3 cannot be run.
    NoFusermount { source: io::Error },
    /// The daemon still syncs after the unmount's wait.
    StillSyncing {
        mountpoint: PathBuf,
        pid: u32,
        waited_secs: u64,
    },
    /// The daemon ended without marking its state synced: writes since the last fsync are lost.
    SyncLost {
        mountpoint: PathBuf,
        pid: u32,
        state_dir: PathBuf,
    },
    /// Whether the daemon synced its state cannot be read.
    SyncUnknown {
        mountpoint: PathBuf,
        pid: u32,
        source: OverlayError,
    },
    /// `sidfs status` of a path that is neither a mounted clone nor a state directory.
    NotAClone { target: PathBuf },
    /// The state's block map cannot be read.
    BlockMapUnreadable {
        state_dir: PathBuf,
        source: io::Error,
    },
    /// The state directory cannot be listed.
    StateDirUnlistable {
        state_dir: PathBuf,
        source: io::Error,
    },
    /// The daemon's log cannot be opened.
    Log { path: PathBuf, source: io::Error },
    /// The readiness pipe to the daemon cannot be created.
    Pipe { source: io::Error },
    /// The path of this executable (to start the daemon) cannot be found.
    OwnExecutable { source: io::Error },
    /// The daemon cannot be started.
    DaemonSpawn { source: io::Error },
    /// The daemon did not report ready in time.
    DaemonTimeout { waited_secs: u64, log: PathBuf },
    /// The daemon reported that mounting failed; `message` is its one-line refusal.
    DaemonFailed { message: String },
    /// The daemon exited without reporting.
    DaemonExited { log: PathBuf },
    /// The clone state (delta, block map, state.json, lock) refused.
    Overlay(OverlayError),
    /// Clone assembly refused (the survey, the SID choice, the state's record).
    Clone(Box<crate::clone::CloneError>),
    /// The raw or qcow2 export refused.
    Export(Box<crate::export::ExportError>),
    /// A `--hostname` or `--keep` the clone cannot take, or identifiers it cannot write.
    Identity(crate::identity::IdentityError),
}

/// What is already mounted at a mountpoint.
#[derive(Debug)]
pub enum Occupant {
    /// A sidfs clone with this state directory.
    Clone { state_dir: PathBuf },
    /// Another file system, of this type.
    Other { fs_type: String },
}

impl From<OverlayError> for MountError {
    fn from(e: OverlayError) -> Self {
        MountError::Overlay(e)
    }
}

impl From<crate::clone::CloneError> for MountError {
    fn from(e: crate::clone::CloneError) -> Self {
        MountError::Clone(Box::new(e))
    }
}

impl From<crate::export::ExportError> for MountError {
    fn from(e: crate::export::ExportError) -> Self {
        MountError::Export(Box::new(e))
    }
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MountError::*;
        match self {
            MasterMissing { master } => {
                write!(f, "master image {} does not exist", master.display())
            }
            MasterUnreadable { master, source } => {
                write!(f, "cannot read master image {}: {source}", master.display())
            }
            MasterIsDirectory { master } => write!(
                f,
                "master {} is a directory; give the disk image file (or block device)",
                master.display()
            ),
            MasterNotDisk { master } => write!(
                f,
                "master {} is not a regular file or block device",
                master.display()
            ),
            MasterNotOpenable { master, source } => write!(
                f,
                "cannot open master image {} for reading: {source}",
                master.display()
            ),
            MountpointKind { mountpoint } => write!(
                f,
                "mountpoint {} must be a directory or a regular file",
                mountpoint.display()
            ),
            MountpointDead { mountpoint } => write!(
                f,
                "mountpoint {} holds a dead sidfs mount (its process was killed); clear it with: sidfs umount {}",
                mountpoint.display(),
                mountpoint.display()
            ),
            MountpointMissing { mountpoint } => write!(
                f,
                "mountpoint {} does not exist; create a directory (mkdir -p) to get disk.img inside it, or an empty file (touch) to make the mount the disk itself",
                mountpoint.display()
            ),
            MountpointUnusable { mountpoint, source } => {
                write!(f, "cannot use mountpoint {}: {source}", mountpoint.display())
            }
            MountpointBusy {
                mountpoint,
                occupant,
            } => {
                let (hint, command) = match occupant {
                    Occupant::Clone { state_dir } => (
                        format!("a sidfs clone (state {})", state_dir.display()),
                        "sidfs umount",
                    ),
                    Occupant::Other { fs_type } => (format!("a {fs_type} file system"), "umount"),
                };
                write!(
                    f,
                    "mountpoint {} is busy: {hint} is already mounted there; unmount it first ({command} {}) or pick another mountpoint",
                    mountpoint.display(),
                    mountpoint.display()
                )
            }
            MountpointIsMaster => f.write_str("the mountpoint cannot be the master image itself"),
            StateUnderMountpoint {
                state_dir,
                mountpoint,
                same,
            } => write!(
                f,
                "state directory {} is {} the mountpoint {} (the mount would hide it): pass a --state outside it",
                state_dir.display(),
                if *same { "the same as" } else { "inside" },
                mountpoint.display()
            ),
            NoFuseDevice => f.write_str(
                "/dev/fuse is missing: load the FUSE module (modprobe fuse), or give the container the device (--device /dev/fuse)",
            ),
            StateDirUnresolvable { state_dir, source } => write!(
                f,
                "cannot resolve state directory {}: {source}",
                state_dir.display()
            ),
            SessionStart { mountpoint, source } => {
                write!(f, "cannot mount {}: {source}", mountpoint.display())
            }
            Kernel { mountpoint, source } => write!(
                f,
                "cannot mount {}: {}",
                mountpoint.display(),
                source.to_string().trim()
            ),
            Thread { name, source } => write!(f, "cannot start {name} thread: {source}"),
            FinalSync { mountpoint, source } => write!(
                f,
                "unmounted {}, but the final sync of its state failed: {source}",
                mountpoint.display()
            ),
            Serving { mountpoint, source } => {
                write!(f, "serving {} failed: {source}", mountpoint.display())
            }
            NotMounted { mountpoint } => write!(f, "{} is not mounted", mountpoint.display()),
            NotSidfs {
                mountpoint,
                fs_type,
            } => write!(
                f,
                "{} is a {fs_type} mount, not a sidfs clone: unmount it with umount {}",
                mountpoint.display(),
                mountpoint.display()
            ),
            Busy { mountpoint } => write!(
                f,
                "{} is busy: a program still has the disk open (find it with: fuser -vm {}); close it and retry",
                mountpoint.display(),
                mountpoint.display()
            ),
            Unmount {
                mountpoint,
                message,
            } => write!(f, "cannot unmount {}: {message}", mountpoint.display()),
            NoFusermount { source } => {
                write!(f, "cannot run fusermount3 (install fuse3): {source}")
            }
            StillSyncing {
                mountpoint,
                pid,
                waited_secs,
            } => write!(
                f,
                "unmounted {}, but sidfs process {pid} is still syncing the state after {waited_secs}s; it will finish on its own",
                mountpoint.display()
            ),
            SyncLost {
                mountpoint,
                pid,
                state_dir,
            } => write!(
                f,
                "unmounted {}, but sidfs process {pid} could not sync the clone's state at the end, so the guest's writes since its last successful fsync are lost (its log: {}): free space on or repair the file system of {}, then mount the clone again",
                mountpoint.display(),
                state_dir.join(LOG_FILE).display(),
                state_dir.display()
            ),
            SyncUnknown {
                mountpoint,
                pid,
                source,
            } => write!(
                f,
                "unmounted {}, but cannot tell whether sidfs process {pid} synced the clone's state: {source}",
                mountpoint.display()
            ),
            NotAClone { target } => write!(
                f,
                "{} is neither a mounted sidfs clone nor a clone state directory",
                target.display()
            ),
            BlockMapUnreadable { state_dir, source } => write!(
                f,
                "cannot read block map in {}: {source}",
                state_dir.display()
            ),
            StateDirUnlistable { state_dir, source } => {
                write!(f, "cannot list {}: {source}", state_dir.display())
            }
            Log { path, source } => write!(f, "cannot open log {}: {source}", path.display()),
            Pipe { source } => write!(f, "cannot create pipe: {source}"),
            OwnExecutable { source } => write!(f, "cannot find own executable: {source}"),
            DaemonSpawn { source } => write!(f, "cannot start the mount daemon: {source}"),
            DaemonTimeout { waited_secs, log } => write!(
                f,
                "the mount daemon did not report ready within {waited_secs}s; see {}",
                log.display()
            ),
            DaemonFailed { message } => f.write_str(message),
            DaemonExited { log } => write!(
                f,
                "the mount daemon exited before the mount was ready; see {}",
                log.display()
            ),
            Overlay(e) => write!(f, "{e}"),
            Clone(e) => write!(f, "{e}"),
            Export(e) => write!(f, "{e}"),
            Identity(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for MountError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use MountError::*;
        match self {
            MasterUnreadable { source, .. }
            | MasterNotOpenable { source, .. }
            | MountpointUnusable { source, .. }
            | StateDirUnresolvable { source, .. }
            | Kernel { source, .. }
            | Thread { source, .. }
            | Serving { source, .. }
            | NoFusermount { source }
            | BlockMapUnreadable { source, .. }
            | StateDirUnlistable { source, .. }
            | Log { source, .. }
            | Pipe { source }
            | OwnExecutable { source }
            | DaemonSpawn { source } => Some(source),
            SessionStart { source, .. }
            | FinalSync { source, .. }
            | SyncUnknown { source, .. }
            | Overlay(source) => Some(source),
            Identity(source) => Some(source),
            Clone(source) => Some(source.as_ref()),
            Export(source) => Some(source.as_ref()),
            _ => None,
        }
    }
}
