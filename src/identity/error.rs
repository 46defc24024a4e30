//! The identity layer's error type: every refusal of a `--hostname` or `--keep`, and every way a
//! hive's identifiers cannot be rewritten, with the place and the values involved. Each message
//! is one line (docs/TROUBLESHOOTING.md).

use std::fmt;

use super::IdentifierKind;
use crate::hive::HiveError;

/// Why an identifier cannot be chosen or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// A `--hostname` that is no valid computer name; `reason` says which rule it breaks.
    InvalidHostname { name: String, reason: String },
    /// A `--keep` word that names no identifier.
    UnknownIdentifier { word: String },
    /// `--hostname` together with `--keep hostname`.
    HostnameKept,
    /// `--hostname` on a master without a computer name.
    NoComputerName,
    /// A GUID change whose values differ in length or are not ASCII (GUIDs are replaced in
    /// place; only the computer name may change length).
    NotInPlace {
        kind: IdentifierKind,
        old: String,
        new: String,
    },
    /// A GUID identifier whose value does not parse as a GUID.
    NotAGuid { kind: IdentifierKind, value: String },
    /// The hive (or, with `context`, the result of a step) does not parse or walk.
    Hive {
        context: &'static str,
        source: HiveError,
    },
    /// A structure found by the walk lies outside the hive file.
    OutsideHive { offset: u64, what: &'static str },
    /// A value that must grow finds no free cell large enough in the hive's bins.
    NoFreeCell {
        key: String,
        value: String,
        needed: u32,
        largest: u32,
    },
    /// Two subkeys of one key would have the same name after the change.
    DuplicateSubkey { path: String, name: String },
    /// The result fails a check that the rewrite should have guaranteed.
    Bug { path: String, what: String },
}

impl IdentityError {
    pub(crate) fn hive(context: &'static str) -> impl FnOnce(HiveError) -> IdentityError {
        move |source| IdentityError::Hive { context, source }
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::InvalidHostname { name, reason } => {
                write!(f, "invalid --hostname {name:?}: {reason}")
            }
            IdentityError::UnknownIdentifier { word } => write!(
                f,
                "unknown identifier {word:?}: expected hostname, machine-guid, wsus or msdtc"
            ),
            IdentityError::HostnameKept => {
                f.write_str("--hostname and --keep hostname contradict each other")
            }
            IdentityError::NoComputerName => f.write_str(
                "--hostname was given but the master has no computer name (SYSTEM ControlSet00N\\Control\\ComputerName)",
            ),
            IdentityError::NotInPlace { kind, old, new } => write!(
                f,
                "{kind}: {new:?} cannot replace {old:?} in place (length or characters differ)"
            ),
            IdentityError::NotAGuid { kind, value } => write!(f, "{kind}: {value:?} is not a GUID"),
            IdentityError::Hive { context, source } => write!(f, "{context}: {source}"),
            IdentityError::OutsideHive { offset, what } => {
                write!(f, "{what} at {offset:#x} lies outside the hive")
            }
            IdentityError::NoFreeCell {
                key,
                value,
                needed,
                largest,
            } => write!(
                f,
                "no free cell of {needed} bytes for {key} [{value}] (the largest free cell has {largest}; sidfs does not add hive bins)"
            ),
            IdentityError::DuplicateSubkey { path, name } => {
                write!(f, "{path}: two subkeys would be named {name:?} after the change")
            }
            IdentityError::Bug { path, what } => write!(f, "{path}: {what} (a sidfs bug)"),
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdentityError::Hive { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<IdentityError> for String {
    fn from(e: IdentityError) -> String {
        e.to_string()
    }
}

impl From<IdentityError> for crate::mount::MountError {
    fn from(e: IdentityError) -> crate::mount::MountError {
        crate::mount::MountError::Identity(e)
    }
}
