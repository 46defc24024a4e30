//! The NTFS volume that holds Windows: its dirty flag, journal and hibernation state, and the
//! special files (EFS-encrypted, compressed) a byte-level rewrite cannot follow.

use super::Findings;
use crate::image::ntfs_volume::HibernationState;
use crate::image::{NtfsVolume, Partition};
use crate::inspect::finding::{RefusalReason, WarningReason};
use crate::inspect::report::{SpecialFilesReport, VolumeReport};
use crate::inspect::{SPECIAL_FILE_EXAMPLES, SPECIAL_FILE_SCAN_LIMIT};

/// $Volume flags, $LogFile and hiberfil.sys, with their refusals.
pub(super) fn volume_state(
    partition: &Partition,
    volume: &NtfsVolume,
    f: &mut Findings<'_>,
) -> VolumeReport {
    let mut report = VolumeReport {
        start: partition.start.0,
        size: partition.len,
        cluster_size: 0,
        ntfs_version: String::new(),
        serial_number: String::new(),
        label: None,
        dirty: false,
        log_file_clean: None,
        log_file_version: None,
        hibernation: "unknown".to_string(),
    };
    match volume.facts() {
        Ok(facts) => {
            report.cluster_size = facts.cluster_size;
            report.ntfs_version = format!("{}.{}", facts.ntfs_major, facts.ntfs_minor);
            report.serial_number = format!("{:016x}", facts.serial_number);
            report.label = facts.volume_name.clone();
            report.dirty = facts.is_dirty();
            if facts.is_dirty() {
                f.refuse(
                    RefusalReason::NtfsDirty,
                    format!(
                        "The Windows volume (partition {}) is marked dirty, so its metadata may \
                         be inconsistent: boot the master, run chkdsk /f on it, shut down \
                         cleanly and capture it again.",
                        partition.index
                    ),
                );
            }
        }
        Err(e) => f.unreadable("The Windows volume's $Volume record", e),
    }
    match volume.log_file_state() {
        Ok(log) => {
            report.log_file_clean = Some(log.clean);
            if !log.emptied {
                report.log_file_version =
                    Some(format!("{}.{}", log.major_version, log.minor_version));
            }
            if !log.clean {
                f.refuse(
                    RefusalReason::LogFileUnclean,
                    "The NTFS journal ($LogFile) of the Windows volume has operations that were \
                     never applied, so the volume was not shut down cleanly: boot the master \
                     and shut it down completely (shutdown /s /t 0) before capturing it."
                        .to_string(),
                );
            } else if log.is_version_2() {
                f.refuse(
                    RefusalReason::FastRestart,
                    "The NTFS journal ($LogFile) has a version 2.0 restart page, which Windows \
                     Fast Startup writes when it may keep file-system metadata cached: disable \
                     Fast Startup (powercfg /h off) in the master, shut down and capture it \
                     again."
                        .to_string(),
                );
            }
        }
        Err(e) => f.unreadable("The Windows volume's $LogFile", e),
    }
    // The security descriptors every clone rewrites live in $Secure:$SDS.
    if let Err(e) = volume.stream_layout("$Secure", "$SDS") {
        f.unreadable(
            "The Windows volume's security descriptors ($Secure:$SDS)",
            e,
        );
    }
    match volume.hibernation_state() {
        Ok(state) => {
            report.hibernation = match &state {
                HibernationState::Absent => "absent",
                HibernationState::Clean { .. } => "clean",
                HibernationState::Hibernated { .. } => "hibernated",
                HibernationState::Wake { .. } => "wake",
                HibernationState::Restore { .. } => "restore",
                HibernationState::Unknown { .. } => "unknown",
            }
            .to_string();
            match state {
                HibernationState::Hibernated { signature, .. } => f.refuse(
                    RefusalReason::Hibernated,
                    format!(
                        "hiberfil.sys holds a hibernation or Fast Startup image (signature {:?}), \
                         so Windows would resume a state that does not match the clone: boot the \
                         master, disable Fast Startup (powercfg /h off), shut down and capture it \
                         again.",
                        String::from_utf8_lossy(&signature)
                    ),
                ),
                HibernationState::Restore { .. } => f.refuse(
                    RefusalReason::Hibernated,
                    "hiberfil.sys says a resume from hibernation was in progress (RSTR): boot \
                     the master, let it finish, disable hibernation (powercfg /h off) and \
                     capture it again."
                        .to_string(),
                ),
                HibernationState::Unknown { size, signature } => f.warn(
                    WarningReason::HibernationUnknown,
                    format!(
                        "hiberfil.sys ({size} bytes) starts with {signature:02X?}, which is \
                         neither a hibernation image nor a cleared one; if the master was \
                         hibernated, resume and shut it down before cloning."
                    ),
                ),
                _ => {}
            }
        }
        Err(e) => f.unreadable("The Windows volume's hiberfil.sys", e),
    }
    report
}

/// Refusals and warnings for one hive's state.
/// EFS-encrypted and compressed files, from a bounded MFT walk.
pub(super) fn special_files(volume: &NtfsVolume, f: &mut Findings<'_>) -> SpecialFilesReport {
    let scan = match volume.scan_special_files(SPECIAL_FILE_SCAN_LIMIT, SPECIAL_FILE_EXAMPLES) {
        Ok(s) => s,
        Err(e) => {
            f.unreadable("The Windows volume's MFT", e);
            return SpecialFilesReport::default();
        }
    };
    if scan.encrypted > 0 {
        f.warn(
            WarningReason::EfsFiles,
            format!(
                "{} EFS-encrypted file(s) (e.g. {}) hold their users' SIDs in encrypted form and \
                 their keys are DPAPI-protected by those SIDs, so local users cannot open them in \
                 a clone: decrypt them in the master (cipher /d) if clones need them.",
                scan.encrypted,
                scan.encrypted_examples.join(", ")
            ),
        );
    }
    if scan.compressed > 0 {
        f.warn(
            WarningReason::CompressedFiles,
            format!(
                "{} NTFS-compressed file(s) (e.g. {}) are not searched for the SID, so any SID \
                 inside them stays the master's: uncompress them in the master (compact /u) if \
                 they may carry it.",
                scan.compressed,
                scan.compressed_examples.join(", ")
            ),
        );
    }
    if scan.truncated {
        f.warn(
            WarningReason::ScanIncomplete,
            format!(
                "Only the first {} MFT records were checked for encrypted and compressed files; \
                 the counts above may be incomplete.",
                scan.records_scanned
            ),
        );
    }
    SpecialFilesReport {
        records_scanned: scan.records_scanned,
        truncated: scan.truncated,
        encrypted: scan.encrypted,
        compressed: scan.compressed,
        encrypted_examples: scan.encrypted_examples,
        compressed_examples: scan.compressed_examples,
        unreadable: scan.unreadable,
    }
}
