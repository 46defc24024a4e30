//! Refusals (the image must not be cloned) and warnings (it may, but the user should know).
//!
//! Each finding has a stable machine-readable `reason` and one sentence that says what is wrong
//! and what to do. The reasons follow invariant 6 of docs/SEMANTICS.md and the refusals docs/FORMAT-FACTS.md
//! implies (§2 dirty hives, §3 NTFS and hibernation states).

use serde::{Deserialize, Serialize};

/// Why an image cannot be cloned safely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalReason {
    /// A partition is BitLocker-encrypted ("-FVE-FS-"): its content cannot be patched.
    Bitlocker,
    /// hiberfil.sys holds a hibernation or Fast Startup image (`hibr`/`HIBR`, or `RSTR`).
    Hibernated,
    /// $Volume has the DIRTY flag.
    NtfsDirty,
    /// $LogFile has clients in use and no CLEAN flag: the journal must be replayed.
    #[serde(rename = "logfile-unclean")]
    LogFileUnclean,
    /// $LogFile restart page version 2.0: Windows Fast Startup may have cached metadata.
    FastRestart,
    /// A hive is dirty and has transaction logs that must be replayed.
    #[serde(rename = "hive-dirty")]
    DirtyHive,
    /// A hive is dirty and has no (or only empty) transaction logs to recover it from.
    #[serde(rename = "hive-dirty-no-logs")]
    DirtyHiveWithoutLogs,
    /// The image is a domain controller: its SIDs belong to the domain.
    DomainController,
    /// SECURITY PolAcDmS and SAM Domains\Account V name different machine SIDs.
    SidMismatch,
    /// SECURITY or SAM holds no machine SID.
    SidMissing,
    /// A hive that carries the SID is compressed or encrypted and cannot be patched in place.
    HiveNotPatchable,
    /// No NTFS volume holds `Windows\System32\config\SYSTEM`.
    NoWindows,
    /// Part of the Windows volume (a hive, $Volume, $LogFile, ...) cannot be read.
    Unreadable,
    /// The image is shorter than a partition or NTFS volume in it: the volume's end is missing.
    Truncated,
    /// A store with checksums (an ESE database) holds the SID but cannot be rewritten validly.
    StoreNotRewritable,
}

/// Something the user should know about a clonable image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningReason {
    /// A local user has DPAPI master keys; they will not decrypt under the new SID.
    DpapiMasterKeys,
    /// EFS-encrypted files exist; their keys are DPAPI-protected by the user's SID.
    EfsFiles,
    /// Compressed files exist; a SID inside them is not rewritten.
    CompressedFiles,
    /// hiberfil.sys has an unexpected signature or is too short to judge.
    HibernationUnknown,
    /// A backup hive (RegBack) is dirty; Windows does not load it.
    DirtyBackupHive,
    /// The MFT walk for special files stopped at its limit.
    ScanIncomplete,
    /// The two SYSTEM names of the computer differ.
    NamesDiffer,
    /// A volume has Volume Shadow Copies (old copies of its blocks).
    ShadowCopies,
}

/// One reason to refuse cloning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub reason: RefusalReason,
    /// One sentence: what is wrong and what to do.
    pub message: String,
}

/// One thing the user should know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub reason: WarningReason,
    /// One sentence: what it means for the clones.
    pub message: String,
}

impl Refusal {
    pub fn new(reason: RefusalReason, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: one_sentence(message.into()),
        }
    }
}

impl Warning {
    pub fn new(reason: WarningReason, message: impl Into<String>) -> Warning {
        Warning {
            reason,
            message: one_sentence(message.into()),
        }
    }
}

/// Keeps a message on one line (error texts from lower layers could carry line breaks).
fn one_sentence(message: String) -> String {
    if message.contains(['\n', '\r']) {
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        message
    }
}

impl RefusalReason {
    /// The kebab-case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Bitlocker => "bitlocker",
            RefusalReason::Hibernated => "hibernated",
            RefusalReason::NtfsDirty => "ntfs-dirty",
            RefusalReason::LogFileUnclean => "logfile-unclean",
            RefusalReason::FastRestart => "fast-restart",
            RefusalReason::DirtyHive => "hive-dirty",
            RefusalReason::DirtyHiveWithoutLogs => "hive-dirty-no-logs",
            RefusalReason::DomainController => "domain-controller",
            RefusalReason::SidMismatch => "sid-mismatch",
            RefusalReason::SidMissing => "sid-missing",
            RefusalReason::HiveNotPatchable => "hive-not-patchable",
            RefusalReason::NoWindows => "no-windows",
            RefusalReason::Unreadable => "unreadable",
            RefusalReason::Truncated => "truncated",
            RefusalReason::StoreNotRewritable => "store-not-rewritable",
        }
    }
}

impl WarningReason {
    /// The kebab-case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            WarningReason::DpapiMasterKeys => "dpapi-master-keys",
            WarningReason::EfsFiles => "efs-files",
            WarningReason::CompressedFiles => "compressed-files",
            WarningReason::HibernationUnknown => "hibernation-unknown",
            WarningReason::DirtyBackupHive => "dirty-backup-hive",
            WarningReason::ScanIncomplete => "scan-incomplete",
            WarningReason::NamesDiffer => "names-differ",
            WarningReason::ShadowCopies => "shadow-copies",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON names are the ones `as_str` gives (the CLI's text and the JSON agree).
    #[test]
    fn json_names_match_as_str() {
        for reason in [
            RefusalReason::Bitlocker,
            RefusalReason::Hibernated,
            RefusalReason::NtfsDirty,
            RefusalReason::LogFileUnclean,
            RefusalReason::FastRestart,
            RefusalReason::DirtyHive,
            RefusalReason::DirtyHiveWithoutLogs,
            RefusalReason::DomainController,
            RefusalReason::SidMismatch,
            RefusalReason::SidMissing,
            RefusalReason::HiveNotPatchable,
            RefusalReason::NoWindows,
            RefusalReason::Unreadable,
            RefusalReason::StoreNotRewritable,
        ] {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
        for reason in [
            WarningReason::DpapiMasterKeys,
            WarningReason::EfsFiles,
            WarningReason::CompressedFiles,
            WarningReason::HibernationUnknown,
            WarningReason::DirtyBackupHive,
            WarningReason::ScanIncomplete,
            WarningReason::NamesDiffer,
            WarningReason::ShadowCopies,
        ] {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }

    #[test]
    fn messages_are_one_line() {
        let r = Refusal::new(RefusalReason::Unreadable, "a\nb  c");
        assert_eq!(r.message, "a b c");
    }
}
