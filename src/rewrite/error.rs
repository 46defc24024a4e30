//! Errors of the rewrite layer: building the patch stage (the SID choice, the structures it
//! registers, the fragment junctions) and transforming a structure on first touch.
//!
//! Each error keeps the typed cause of the layer below (`overlay`, `image`, the structure
//! transforms) and says which structure and where. [`RewriteError::is_transient`] tells an I/O
//! error reading the master (a later read may succeed: never kept) from a permanent one (the
//! master's bytes are what they are: may be kept for the life of the mount).

use std::fmt;

use super::derive::DeriveError;
use super::ese::EseError;
use super::evtx::EvtxError;
use super::hive::HiveRewriteError;
use super::secure::SecureError;
use super::sqlite_wal::WalError;
use super::wmi::WmiError;
use crate::image::ImageError;
use crate::overlay::OverlayError;
use crate::sid::{MachineSid, SidError};

/// The checksums a store keeps over its content, for the refusal that names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksums {
    /// ESE page checksums.
    Page,
    /// SQLite write-ahead-log frame checksums.
    Frame,
}

impl fmt::Display for Checksums {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Checksums::Page => "page checksums",
            Checksums::Frame => "frame checksums",
        })
    }
}

#[derive(Debug)]
pub enum RewriteError {
    /// Reading the master failed.
    Master(OverlayError),
    /// Reading or understanding the image (partition map, NTFS volume) failed.
    Image {
        context: String,
        source: ImageError,
    },
    Hive(HiveRewriteError),
    Secure(SecureError),
    Ese(EseError),
    Wmi(WmiError),
    Evtx(EvtxError),
    Wal(WalError),
    /// The clone's other identifiers (computer name, GUIDs) could not be replaced in a hive.
    Identifiers(crate::identity::IdentityError),
    /// The SID a clone's state records cannot be parsed.
    RecordedSid {
        recorded: String,
        source: SidError,
    },
    /// The state records a clone of another machine SID than the master's.
    RecordedSidMismatch {
        recorded: MachineSid,
        master: MachineSid,
        /// Whether the master holds a Windows installation (else the old SID came from
        /// `--old-sid`).
        windows: bool,
    },
    Derive(DeriveError),
    /// The new SID has another number of digits in some sub-authority than the old one.
    SidShape {
        old: MachineSid,
        new: MachineSid,
    },
    /// The new SID is the old one.
    SameSid(MachineSid),
    /// A structure larger than the rewrite holds in memory.
    TooLarge {
        size: u64,
        limit: u64,
    },
    /// A structure's bytes on disk are not what its format requires.
    Invalid {
        offset: u64,
        what: &'static str,
    },
    /// A stream's rewrite would change bytes where it has no clusters.
    InHole {
        stream: &'static str,
    },
    /// A data run of MFT record `record` points past the end of its volume.
    RunPastVolume {
        record: u64,
    },
    /// The stream is stored compressed or encrypted, so its bytes on disk are not its content.
    NotPlain,
    /// A structure's transform panicked (a bug in sidfs); the panic was contained.
    Panicked {
        message: String,
    },
    /// The transform of one structure failed.
    Structure {
        name: String,
        /// Disk offset of the structure's first owned byte.
        offset: u64,
        cause: Box<RewriteError>,
    },
    /// A hive that holds the machine SID cannot be rewritten as a whole.
    HiveNotRewritable {
        path: String,
        cause: Box<RewriteError>,
    },
    /// `$Secure` of a volume cannot be rewritten with its hashes and indexes.
    SecureNotRewritable {
        partition: u32,
        cause: Box<RewriteError>,
    },
    /// The master's `$Secure` fails its own consistency checks.
    SecureInconsistent(SecureError),
    /// A store with checksums that holds the machine SID cannot be rewritten with valid ones.
    StoreNotRewritable {
        /// The store and its partition (`ESE database \...\SRUDB.dat (partition 3)`).
        store: String,
        checksums: Checksums,
        cause: Box<RewriteError>,
        /// What to do, one clause.
        advice: String,
    },
    /// A WMI repository (`the WMI repository ... (partition N)`) whose files cannot be read.
    WmiUnreadable {
        store: String,
        reason: super::wmi_structure::WmiFileError,
    },
    /// A WMI repository that holds the machine SID but cannot be rewritten with valid checksums.
    WmiNotRewritable {
        store: String,
        reason: super::wmi_structure::WmiRefusal,
    },
    /// A shadow copy store of partition `partition` (of `stores`) that cannot be searched.
    ShadowUnsearchable {
        partition: u32,
        stores: usize,
        reason: super::shadow::ShadowSearchError,
    },
    /// A shadow copy store that holds the machine SID in old copies of the volume's blocks.
    ShadowHoldsSid {
        partition: u32,
        stores: usize,
        store: String,
    },
    /// The encrypted files of a partition cannot be checked for the machine SID.
    EfsUncheckable {
        partition: u32,
        reason: String,
    },
    /// The `$EFS` of an encrypted file holds the machine SID.
    EfsHoldsSid {
        path: String,
        partition: u32,
    },
    /// An ESE transaction log cannot be read (the reason names it).
    EseLogUnreadable {
        reason: String,
    },
    /// An ESE transaction log holds the machine SID under its segment checksums.
    EseLogHoldsSid {
        path: String,
        partition: u32,
    },
    /// A store with checksums cannot be read whole to rewrite it.
    StoreUnreadable {
        store: String,
        checksums: Checksums,
        source: ImageError,
        advice: String,
    },
}

impl RewriteError {
    /// Whether a later attempt may succeed: an I/O error reading the master or the image. Such an
    /// error is never kept; everything else follows from the master's bytes and may be.
    pub fn is_transient(&self) -> bool {
        match self {
            RewriteError::Master(e) => matches!(e, OverlayError::Io { .. }),
            RewriteError::Image { source, .. } => matches!(source, ImageError::Io { .. }),
            RewriteError::Structure { cause, .. } => cause.is_transient(),
            _ => false,
        }
    }

    pub fn image(context: impl Into<String>, source: ImageError) -> Self {
        RewriteError::Image {
            context: context.into(),
            source,
        }
    }

    /// This error as the cause of structure `name`'s failure.
    pub fn in_structure(self, name: String, offset: u64) -> Self {
        RewriteError::Structure {
            name,
            offset,
            cause: Box::new(self),
        }
    }
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewriteError::Master(e) => write!(f, "{e}"),
            RewriteError::Image { context, source } => write!(f, "{context}: {source}"),
            RewriteError::Hive(e) => write!(f, "{e}"),
            RewriteError::Secure(e) => write!(f, "{e}"),
            RewriteError::Ese(e) => write!(f, "{e}"),
            RewriteError::Wmi(e) => write!(f, "{e}"),
            RewriteError::Evtx(e) => write!(f, "{e}"),
            RewriteError::Wal(e) => write!(f, "{e}"),
            RewriteError::Identifiers(e) => write!(f, "identifiers: {e}"),
            RewriteError::RecordedSid { recorded, source } => {
                write!(f, "state records SID {recorded:?}: {source}")
            }
            RewriteError::RecordedSidMismatch {
                recorded,
                master,
                windows: true,
            } => write!(
                f,
                "the clone was made for machine SID {recorded}, but the master's registry now says {master}: mount the master the clone was made from, or pass another --state for a new clone"
            ),
            RewriteError::RecordedSidMismatch {
                recorded,
                master,
                windows: false,
            } => write!(
                f,
                "the clone was made with --old-sid {recorded}, not {master}: pass --old-sid {recorded} as when it was created, or another --state for a clone that replaces {master}"
            ),
            RewriteError::Derive(e) => write!(f, "{e}"),
            RewriteError::SidShape { old, new } => write!(
                f,
                "the new SID {new} must have as many digits in each sub-authority as the old SID {old} ({:?}), so that every string keeps its length",
                old.digits()
            ),
            RewriteError::SameSid(sid) => write!(f, "the new SID {sid} is the old SID"),
            RewriteError::TooLarge { size, limit } => write!(
                f,
                "a {size}-byte structure is larger than the {limit} bytes sidfs rewrites in memory"
            ),
            RewriteError::Invalid { offset, what } => write!(f, "at {offset:#x}: {what}"),
            RewriteError::InHole { stream } => write!(
                f,
                "{stream}: the rewrite would change bytes in a sparse hole of the stream"
            ),
            RewriteError::RunPastVolume { record } => write!(
                f,
                "record {record}: a data run points past the end of the volume"
            ),
            RewriteError::NotPlain => write!(f, "it is stored compressed or encrypted"),
            RewriteError::Panicked { message } => write!(
                f,
                "its rewrite panicked (a bug in sidfs; reads of it fail until the clone is mounted again): {message}"
            ),
            RewriteError::Structure {
                name,
                offset,
                cause,
            } => write!(f, "{name} (at disk offset {offset:#x}): {cause}"),
            RewriteError::HiveNotRewritable { path, cause } => write!(
                f,
                "hive {path} holds the machine SID but cannot be rewritten faithfully: {cause}; repair or delete that file in the master (a stale backup copy can go) and capture it again"
            ),
            RewriteError::SecureNotRewritable { partition, cause } => write!(
                f,
                "the security descriptors ($Secure) of partition {partition} cannot be rewritten with their hashes and indexes: {cause}; run chkdsk /f on that volume in Windows, then capture the master again"
            ),
            RewriteError::SecureInconsistent(e) => {
                write!(f, "it is inconsistent in the master ({e})")
            }
            RewriteError::StoreNotRewritable {
                store,
                checksums,
                cause,
                advice,
            } if matches!(
                **cause,
                RewriteError::Ese(
                    super::ese::EseError::UnreadableValue { .. }
                        | super::ese::EseError::ValueStructure { .. }
                )
            ) =>
            {
                // A value sidfs cannot read may or may not hold the SID: say only what is known.
                write!(
                    f,
                    "{store} cannot be cloned faithfully (it may hold the machine SID where sidfs cannot see it, and its {checksums} would then go stale): {cause}; {advice}"
                )
            }
            RewriteError::StoreNotRewritable {
                store,
                checksums,
                cause,
                advice,
            } => write!(
                f,
                "{store} holds the machine SID but cannot be rewritten with valid {checksums}: {cause}; {advice}"
            ),
            RewriteError::WmiUnreadable { store, reason } => write!(
                f,
                "{store} cannot be read whole to rewrite the machine SID in it with valid checksums ({reason}); {}",
                super::wmi_structure::ADVICE
            ),
            RewriteError::WmiNotRewritable { store, reason } => write!(
                f,
                "{store} holds the machine SID but cannot be rewritten with valid checksums: {reason}; {}",
                super::wmi_structure::ADVICE
            ),
            RewriteError::ShadowUnsearchable {
                partition,
                stores,
                reason,
            } => write!(
                f,
                "partition {partition} has {stores} shadow copies, and {reason}; {}",
                super::shadow::ADVICE
            ),
            RewriteError::ShadowHoldsSid {
                partition,
                stores,
                store,
            } => write!(
                f,
                "partition {partition} has {stores} shadow copies whose store {store} holds the machine SID in old copies of the volume's blocks, which sidfs cannot rewrite faithfully; {}",
                super::shadow::ADVICE
            ),
            RewriteError::EfsUncheckable { partition, reason } => write!(
                f,
                "EFS-encrypted files of partition {partition} cannot be checked for the machine SID: {reason}; decrypt them in the master before capturing it (cipher /d)"
            ),
            RewriteError::EfsHoldsSid { path, partition } => write!(
                f,
                "the EFS metadata ($EFS) of {path} (partition {partition}) holds the machine SID next to hashes sidfs cannot recompute, and its key is protected under that SID; {}",
                super::efs::ADVICE
            ),
            RewriteError::EseLogUnreadable { reason } => {
                write!(f, "{reason}; {}", super::ese_logs::ADVICE)
            }
            RewriteError::EseLogHoldsSid { path, partition } => write!(
                f,
                "the ESE transaction log {path} (partition {partition}) holds the machine SID, and a byte replacement would break its segment checksums, which ESE checks at every start; {}",
                super::ese_logs::ADVICE
            ),
            RewriteError::StoreUnreadable {
                store,
                checksums,
                source,
                advice,
            } => write!(
                f,
                "{store} cannot be read whole to rewrite the machine SID in it with valid {checksums} ({source}); {advice}"
            ),
        }
    }
}

impl std::error::Error for RewriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RewriteError::Master(e) => Some(e),
            RewriteError::Image { source, .. } | RewriteError::StoreUnreadable { source, .. } => {
                Some(source)
            }
            RewriteError::Hive(e) => Some(e),
            RewriteError::Secure(e) | RewriteError::SecureInconsistent(e) => Some(e),
            RewriteError::Ese(e) => Some(e),
            RewriteError::Wmi(e) => Some(e),
            RewriteError::Evtx(e) => Some(e),
            RewriteError::Wal(e) => Some(e),
            RewriteError::RecordedSid { source, .. } => Some(source),
            RewriteError::Derive(e) => Some(e),
            RewriteError::Identifiers(e) => Some(e),
            RewriteError::Structure { cause, .. }
            | RewriteError::HiveNotRewritable { cause, .. }
            | RewriteError::SecureNotRewritable { cause, .. }
            | RewriteError::StoreNotRewritable { cause, .. } => Some(&**cause),
            RewriteError::WmiUnreadable { reason, .. } => Some(reason),
            RewriteError::WmiNotRewritable { reason, .. } => Some(reason),
            RewriteError::ShadowUnsearchable { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl From<OverlayError> for RewriteError {
    fn from(e: OverlayError) -> Self {
        RewriteError::Master(e)
    }
}

impl From<HiveRewriteError> for RewriteError {
    fn from(e: HiveRewriteError) -> Self {
        RewriteError::Hive(e)
    }
}

impl From<SecureError> for RewriteError {
    fn from(e: SecureError) -> Self {
        RewriteError::Secure(e)
    }
}

impl From<EseError> for RewriteError {
    fn from(e: EseError) -> Self {
        RewriteError::Ese(e)
    }
}

impl From<EvtxError> for RewriteError {
    fn from(e: EvtxError) -> Self {
        RewriteError::Evtx(e)
    }
}

impl From<WalError> for RewriteError {
    fn from(e: WalError) -> Self {
        RewriteError::Wal(e)
    }
}

impl From<DeriveError> for RewriteError {
    fn from(e: DeriveError) -> Self {
        RewriteError::Derive(e)
    }
}

pub type Result<T, E = RewriteError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Prove that an I/O error reading the master is transient also under a structure's
    /// context, and that what follows from the master's bytes is not.
    #[test]
    fn only_read_errors_are_transient() {
        let io = || {
            OverlayError::io(
                "read at 0x1000 of master",
                "/m.img",
                std::io::Error::from_raw_os_error(libc::EIO),
            )
        };
        assert!(RewriteError::Master(io()).is_transient());
        let nested = RewriteError::Master(io()).in_structure("hive X".into(), 0x1000);
        assert!(nested.is_transient());
        assert!(nested
            .to_string()
            .starts_with("hive X (at disk offset 0x1000): read at"));
        let invalid = RewriteError::Invalid {
            offset: 0x1000,
            what: "MFT record 9 has invalid fixups",
        };
        assert!(!invalid.in_structure("$Secure".into(), 0).is_transient());
        assert!(!RewriteError::Panicked {
            message: "bug".into()
        }
        .is_transient());
        assert!(!RewriteError::TooLarge { size: 2, limit: 1 }.is_transient());
    }
    /// The survey's refusals of whole stores read as the one-line sentences they were before
    /// they had variants of their own (the mount tests compare them).
    #[test]
    fn store_refusals_keep_their_sentences() {
        let efs = RewriteError::EfsHoldsSid {
            path: r"Users\u\secret.txt".into(),
            partition: 2,
        };
        assert_eq!(
            efs.to_string(),
            format!(
                "the EFS metadata ($EFS) of Users\\u\\secret.txt (partition 2) holds the machine SID next to hashes sidfs cannot recompute, and its key is protected under that SID; {}",
                super::super::efs::ADVICE
            )
        );
        let shadow = RewriteError::ShadowUnsearchable {
            partition: 3,
            stores: 1,
            reason: super::super::shadow::ShadowSearchError::NotPlain { path: "X".into() },
        };
        assert_eq!(
            shadow.to_string(),
            format!(
                "partition 3 has 1 shadow copies, and X is compressed or encrypted: its bytes cannot be searched; {}",
                super::super::shadow::ADVICE
            )
        );
        let log = RewriteError::EseLogUnreadable {
            reason: "the ESE log L cannot be read (gone)".into(),
        };
        assert_eq!(
            log.to_string(),
            format!(
                "the ESE log L cannot be read (gone); {}",
                super::super::ese_logs::ADVICE
            )
        );
        let wmi = RewriteError::WmiNotRewritable {
            store: "the WMI repository R (partition 1)".into(),
            reason: super::super::wmi_structure::WmiRefusal::NotInPlace {
                file: "OBJECTS.DATA",
                resident: true,
            },
        };
        assert_eq!(
            wmi.to_string(),
            format!(
                "the WMI repository R (partition 1) holds the machine SID but cannot be rewritten with valid checksums: OBJECTS.DATA would change but is stored inside its MFT record (resident); {}",
                super::super::wmi_structure::ADVICE
            )
        );
        assert!(!wmi.is_transient());
        // The causes are typed, not sentences: the chain reaches them.
        let cause = std::error::Error::source(&wmi);
        assert!(cause.is_some_and(|c| c.is::<super::super::wmi_structure::WmiRefusal>()));
        let cause = std::error::Error::source(&shadow);
        assert!(cause.is_some_and(|c| c.is::<super::super::shadow::ShadowSearchError>()));
    }
}
