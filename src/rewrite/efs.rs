//! EFS metadata (`$EFS`, the `$LOGGED_UTILITY_STREAM` of an encrypted file): what a clone does
//! with one that holds the old SID (docs/SEMANTICS.md, "EFS").
//!
//! Facts [libyal libfsntfs, "EFS attribute"; the notes call most fields "possible"]: a header of
//! the attribute's length, a state (0), the EFS version (2) and a crypto API version (0), then
//! three 16-byte fields described as possible MD5 hashes (of the decrypted file encryption key,
//! of the data decryption fields, of the data recovery fields), then the offsets of the DDF and
//! DRF arrays. Each DDF/DRF entry holds the SID of a user (or recovery agent), the certificate's
//! thumbprint and container and provider names, and the file encryption key encrypted with that
//! user's public key.
//!
//! No faithful rewrite exists: the hash fields' inputs are not published (changing a SID inside
//! a DDF could make Windows reject the whole `$EFS`), and the DDF's private key is protected by
//! DPAPI under the user's SID, so a local user cannot decrypt the file in a clone anyway. So an
//! `$EFS` that holds the old SID is refused (docs/SEMANTICS.md invariant 8), naming the file, with what the
//! user does: decrypt it in the master before capture (`cipher /d`), or let the users re-create
//! their EFS keys and re-encrypt in the clones.

#![forbid(unsafe_code)]

use super::error::RewriteError;
use super::SidMapping;
use crate::image::NtfsVolume;

/// The largest `$EFS` value read (real ones are a few KiB; one per certificate).
pub const EFS_LIMIT: u64 = 1 << 20;
/// MFT records walked for encrypted files (as `sidfs inspect`'s special-file scan).
pub const EFS_SCAN_LIMIT: u64 = 1 << 18;

/// What the user does about an encrypted file whose `$EFS` holds the machine SID.
pub const ADVICE: &str = "decrypt it in the master before capturing it (cipher /d FILE, as its owner) or delete it there; users then re-create their EFS keys (cipher /k) and encrypt again in each clone";

/// The first encrypted file (path, SID occurrences in its `$EFS`) whose `$EFS` holds the old SID, among the encrypted files of
/// a bounded MFT walk; an `$EFS` that cannot be read is an error naming its file.
pub fn first_efs_with_sid(
    volume: &NtfsVolume,
    map: &SidMapping,
    limit: u64,
) -> Result<Option<(String, usize)>, String> {
    let scan = volume
        .scan_special_files(limit, 0)
        .map_err(|e| format!("the MFT walk for encrypted files failed ({e})"))?;
    for record in scan.encrypted_records {
        let efs = volume.efs_of(record, EFS_LIMIT).map_err(|e| {
            format!(
                "the $EFS of {} cannot be read ({e})",
                volume.path_of(record)
            )
        })?;
        let n = efs.map_or(0, |v| map.find_all(&v, true).len());
        if n > 0 {
            return Ok(Some((volume.path_of(record), n)));
        }
    }
    Ok(None)
}

/// The refusal for mount (one line), or `Ok` when no `$EFS` of any volume holds the old SID.
pub fn check_efs(
    survey: &super::survey::WindowsSurvey,
    map: &SidMapping,
) -> Result<(), RewriteError> {
    for part in &survey.volumes {
        efs_check(part, map)?;
    }
    Ok(())
}

/// An `$EFS` that holds the old SID: its file's path, the occurrences and mount's refusal.
type Found = Option<(String, usize, RewriteError)>;

/// The first `$EFS` of one volume that holds the old SID, as (path, occurrences) and mount's
/// refusal of it; `Ok(None)` when none does; `Err` when its encrypted files cannot be checked.
fn efs_with_sid(part: &super::survey::NtfsPart, map: &SidMapping) -> Result<Found, RewriteError> {
    let partition = part.partition.index;
    let found = first_efs_with_sid(&part.volume, map, EFS_SCAN_LIMIT)
        .map_err(|reason| RewriteError::EfsUncheckable { partition, reason })?;
    Ok(found.map(|(path, n)| {
        let refusal = RewriteError::EfsHoldsSid {
            path: path.clone(),
            partition,
        };
        (path, n, refusal)
    }))
}

/// Mount's check of one volume's `$EFS` streams.
fn efs_check(part: &super::survey::NtfsPart, map: &SidMapping) -> Result<(), RewriteError> {
    match efs_with_sid(part, map)? {
        Some((_, _, refusal)) => Err(refusal),
        None => Ok(()),
    }
}

/// The encrypted file of one volume whose `$EFS` holds the old SID, refused as mount refuses it
/// ([`check_efs`]), for `sidfs inspect --old-sid`; `None` when there is none (encrypted files
/// that cannot be checked are mount's refusal, which inspect reports as such).
pub fn efs_decision(
    part: &super::survey::NtfsPart,
    map: &SidMapping,
) -> Option<super::stage_builder::StoreDecision> {
    let (path, sid_occurrences, refusal) = efs_with_sid(part, map).ok()??;
    Some(super::stage_builder::StoreDecision {
        kind: "efs",
        path,
        partition: part.partition.index,
        size: 0,
        sid_occurrences,
        outcome: Err(refusal),
    })
}
