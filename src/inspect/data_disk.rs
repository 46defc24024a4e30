//! `sidfs inspect --old-sid SID`: a disk without a Windows installation (a data disk of the
//! machine whose SID is SID) inspected as `sidfs mount --old-sid SID` clones it. The clone's own
//! survey finds the stores with checksums on every NTFS volume, and the clone's own checks
//! ([`crate::rewrite::stage_builder::store_decisions`], [`crate::rewrite::stage_builder::structures`])
//! say what happens to each and what mount refuses, in mount's words: inspect decides nothing of
//! its own here.

use std::path::Path;

use super::finding::{Refusal, RefusalReason};
use super::report::{DataDiskReport, DataDiskStoreReport, InspectReport};
use super::InspectError;
use crate::rewrite::survey::{survey, SurveyError};
use crate::rewrite::RewriteError;
use crate::sid::MachineSid;

/// On a Windows master, `--old-sid` must name its machine SID: the clone's survey refuses another
/// one, and so does inspect, with the same sentence.
pub(super) fn check_windows_sid(path: &Path, given: MachineSid) -> Result<(), InspectError> {
    match survey(path, false, Some(given)) {
        Err(source @ SurveyError::NotTheGivenSid { .. }) => Err(InspectError::Survey {
            path: path.to_path_buf(),
            source: Box::new(source),
        }),
        // Anything else wrong with the master is inspect's own refusal already.
        _ => Ok(()),
    }
}

/// The data disk at `path` as a clone that replaces `old_sid` surveys it: its stores and what the
/// clone does with each; the first refusal `sidfs mount --old-sid` would give goes to `report`.
pub(super) fn inspect_data_disk(
    path: &Path,
    old_sid: MachineSid,
    report: &mut InspectReport,
) -> Result<DataDiskReport, InspectError> {
    let mut out = DataDiskReport {
        old_sid: old_sid.to_string(),
        stores: Vec::new(),
    };
    let surveyed = survey(path, false, Some(old_sid)).map_err(|source| InspectError::Survey {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    // The clone's new SID is chosen later; every check depends on its digits only, which any
    // new SID shares with the old one.
    let (Some(surveyed), Some(map)) = (surveyed, crate::rewrite::ese::probe_mapping(old_sid))
    else {
        return Ok(out);
    };
    for d in crate::rewrite::stage_builder::store_decisions(&surveyed, &map) {
        out.stores.push(DataDiskStoreReport {
            partition: d.partition,
            clone: clone_words(d.kind, &d.outcome),
            path: d.path,
            kind: d.kind.to_string(),
            size: d.size,
            sid_occurrences: d.sid_occurrences,
        });
    }
    // The checks `sidfs mount` makes before it registers a structure, in its order: its first
    // refusal, word for word.
    if let Err(e) = crate::rewrite::stage_builder::structures(&surveyed, &map) {
        report
            .refusals
            .push(Refusal::new(reason_of(&e), e.to_string()));
    }
    Ok(out)
}

/// How inspect names what the clone does with a store of `kind` (a data disk's or a Windows
/// master's): the outcome of its decision ([`crate::rewrite::stage_builder::StoreDecision`]).
pub(super) fn clone_words(kind: &str, outcome: &Result<bool, RewriteError>) -> String {
    match outcome {
        Ok(true) => match kind {
            "ese" => "rewritten with its page checksums",
            "sqlite-wal" => "rewritten with its frame checksums",
            "wmi" => "rewritten with its record and page checksums",
            _ => "rewritten with its CRCs",
        }
        .to_string(),
        Ok(false) => "kept as it is (no machine SID)".to_string(),
        Err(e) => format!("refused: {e}"),
    }
}

/// The refusal reason of one of mount's refusals.
pub(super) fn reason_of(e: &RewriteError) -> RefusalReason {
    match e {
        RewriteError::StoreNotRewritable { .. }
        | RewriteError::StoreUnreadable { .. }
        | RewriteError::WmiUnreadable { .. }
        | RewriteError::WmiNotRewritable { .. }
        | RewriteError::ShadowUnsearchable { .. }
        | RewriteError::ShadowHoldsSid { .. }
        | RewriteError::EfsUncheckable { .. }
        | RewriteError::EfsHoldsSid { .. }
        | RewriteError::EseLogUnreadable { .. }
        | RewriteError::EseLogHoldsSid { .. } => RefusalReason::StoreNotRewritable,
        _ => RefusalReason::Unreadable,
    }
}
