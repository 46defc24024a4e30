//! Why a clone cannot be assembled: one variant per refusal of `crate::clone`, carrying the
//! paths, the values and the typed cause; `Display` is the one sentence the user reads
//! (docs/TROUBLESHOOTING.md lists them).

use std::fmt;
use std::path::PathBuf;

use crate::identity::{IdentifierKind, IdentityError};
use crate::inspect::{InspectError, RefusalReason};
use crate::rewrite::error::RewriteError;
use crate::rewrite::survey::SurveyError;
use crate::sid::{MachineSid, SidError};

/// A refusal to assemble (create, remount or export) a clone.
#[derive(Debug)]
pub enum CloneError {
    /// `--keep-sid` with an option that changes the identity.
    KeepSidWith { option: &'static str },
    /// `sidfs inspect` cannot read the master.
    Uninspectable { source: InspectError },
    /// `sidfs inspect` refuses the master: its first refusal, and how many more it has.
    InspectRefuses {
        master: PathBuf,
        reason: RefusalReason,
        message: String,
        more: usize,
    },
    /// The new computer name does not fit in a hive of the master.
    HostnameTooLong {
        master: PathBuf,
        new: String,
        old: String,
        hive: String,
        source: IdentityError,
    },
    /// The state's recorded old SID cannot be parsed.
    RecordedOldSidUnreadable {
        state_dir: PathBuf,
        text: String,
        source: SidError,
    },
    /// The master image has no bytes.
    MasterEmpty { master: PathBuf },
    /// `--old-sid` differs from the old SID the state records.
    OldSidMismatch {
        state_dir: PathBuf,
        recorded: MachineSid,
        given: MachineSid,
    },
    /// The master cannot be surveyed.
    Survey {
        master: PathBuf,
        source: SurveyError,
    },
    /// The survey found neither a Windows installation nor a machine SID.
    NoMachineSid { master: PathBuf },
    /// `--sid` differs from the new SID the state records.
    SidMismatch {
        state_dir: PathBuf,
        recorded: String,
        given: MachineSid,
    },
    /// The SID choice or the rewrite stage refused.
    Rewrite(RewriteError),
    /// The state's recorded identifiers cannot be read.
    RecordedIdentityUnreadable { source: serde_json::Error },
    /// `--hostname` differs from the computer name the state records.
    HostnameMismatch {
        state_dir: PathBuf,
        recorded: Option<String>,
        given: String,
    },
    /// `--keep` differs from what the state was created with.
    KeepMismatch {
        state_dir: PathBuf,
        recorded: Vec<IdentifierKind>,
    },
}

impl From<RewriteError> for CloneError {
    fn from(e: RewriteError) -> Self {
        CloneError::Rewrite(e)
    }
}

impl fmt::Display for CloneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CloneError::*;
        match self {
            KeepSidWith { option } => write!(
                f,
                "--keep-sid makes a plain copy that keeps the master's SID and identifiers, so {option} has no effect: leave out {option}, or leave out --keep-sid for a clone with a new identity"
            ),
            Uninspectable { source } => {
                let reason = source.to_string().replace(['\n', '\r'], " ");
                write!(
                    f,
                    "cannot clone {reason} (sidfs inspect refuses it too); pass --keep-sid for a plain copy that keeps the disk as it is"
                )
            }
            InspectRefuses {
                master,
                reason,
                message,
                more,
            } => {
                if *reason == RefusalReason::NoWindows {
                    // inspect's own advice names inspect; mount and export say what to pass them.
                    write!(
                        f,
                        "cannot clone {}: No Windows installation was found (no NTFS volume holds {}); pass --old-sid SID for a data disk or --keep-sid for a plain copy",
                        master.display(),
                        crate::image::WINDOWS_MARKER
                    )?;
                } else {
                    write!(
                        f,
                        "cannot clone {}: {}",
                        master.display(),
                        message.trim_end_matches('.')
                    )?;
                }
                if *more > 0 {
                    write!(f, " ({more} more reasons: sidfs inspect {})", master.display())?;
                }
                Ok(())
            }
            HostnameTooLong {
                master,
                new,
                old,
                hive,
                source,
            } => write!(
                f,
                "cannot clone {} with the computer name {new}: hive {hive}: {source}; choose a --hostname of at most {} characters (the master's {old} has that many) or keep the master's name",
                master.display(),
                old.len()
            ),
            RecordedOldSidUnreadable {
                state_dir,
                text,
                source,
            } => write!(
                f,
                "state {} records the old SID {text:?}, which sidfs cannot read ({source}): pass another --state",
                state_dir.display()
            ),
            MasterEmpty { master } => write!(f, "master image {} is empty", master.display()),
            OldSidMismatch {
                state_dir,
                recorded,
                given,
            } => write!(
                f,
                "state {} is the clone that replaces machine SID {recorded}, not {given}: leave out --old-sid (the state remembers {recorded}), or pass another --state for a clone of {given}",
                state_dir.display()
            ),
            Survey { master, source } => {
                write!(f, "cannot clone {}: {source}", master.display())
            }
            NoMachineSid { master } => write!(
                f,
                "cannot clone {}: no Windows installation or machine SID found; pass --old-sid SID for a data disk or --keep-sid for a plain copy",
                master.display()
            ),
            SidMismatch {
                state_dir,
                recorded,
                given,
            } => write!(
                f,
                "state {} is the clone with SID {recorded}, not {given}: pass another --state for a clone with that SID",
                state_dir.display()
            ),
            Rewrite(e) => write!(f, "{e}"),
            RecordedIdentityUnreadable { source } => {
                write!(f, "state records identifiers sidfs cannot read: {source}")
            }
            HostnameMismatch {
                state_dir,
                recorded,
                given,
            } => write!(
                f,
                "state {} is the clone with computer name {}, not {given}: pass another --state for a clone with that name",
                state_dir.display(),
                recorded.as_deref().unwrap_or("(kept from the master)")
            ),
            KeepMismatch {
                state_dir,
                recorded,
            } => write!(
                f,
                "state {} was created with --keep {}: pass the same or none, or another --state",
                state_dir.display(),
                if recorded.is_empty() {
                    "(nothing)".to_string()
                } else {
                    recorded
                        .iter()
                        .map(|k| k.word())
                        .collect::<Vec<_>>()
                        .join(",")
                }
            ),
        }
    }
}

impl std::error::Error for CloneError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use CloneError::*;
        match self {
            Uninspectable { source } => Some(source),
            HostnameTooLong { source, .. } => Some(source),
            RecordedOldSidUnreadable { source, .. } => Some(source),
            Survey { source, .. } => Some(source),
            Rewrite(source) => Some(source),
            RecordedIdentityUnreadable { source } => Some(source),
            _ => None,
        }
    }
}
