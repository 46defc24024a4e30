//! The stores with checksums of a Windows installation (ESE databases and their logs, event
//! logs, SQLite write-ahead logs, the WMI repository, `$EFS`): what the clone does with each, and
//! the refusals `sidfs mount` would give. Inspect decides nothing of its own here: the clone's
//! own survey of the master finds the stores, and the clone's own checks
//! ([`crate::rewrite::stage_builder::store_decisions`]) decide each, in mount's words — the same
//! home the data-disk inspection ([`crate::inspect::data_disk`]) asks.

use std::path::Path;

use crate::inspect::data_disk::{clone_words, reason_of};
use crate::inspect::finding::{Refusal, RefusalReason};
use crate::inspect::report::StoreReport;
use crate::rewrite::survey::{survey_with, EVENT_LOG_DIR};
use crate::rewrite::survey_cache::SurveyCache;

/// The stores with checksums of the Windows volume in partition `windows_partition` of the master
/// at `master`, each with its SID occurrences and what the clone does; every store the clone
/// refuses (on any volume) is a refusal with mount's sentence. The survey is the one `sidfs
/// mount` makes, through the same survey cache. A master the survey cannot read gives no stores;
/// mount's refusal of it is listed when inspect has no other.
pub(in crate::inspect) fn store_reports(
    master: &Path,
    windows_partition: u32,
    refusals: &mut Vec<Refusal>,
) -> Vec<StoreReport> {
    let mut cache = SurveyCache::open(master);
    let surveyed = survey_with(master, false, None, &mut cache.facts);
    cache.store();
    let mut surveyed = match surveyed {
        Ok(Some(s)) => s,
        Ok(None) => return Vec::new(),
        Err(e) => {
            // The machine SID, the hives and the volumes are inspect's own findings already;
            // anything else is mount's refusal, in its words (`CloneError::Survey`).
            if refusals.is_empty() {
                refusals.push(Refusal::new(
                    RefusalReason::Unreadable,
                    format!("cannot clone {}: {e}", master.display()),
                ));
            }
            return Vec::new();
        }
    };
    // The clone's new SID is chosen later; every check depends on its digits only, which any
    // new SID shares with the old one.
    let Some(map) = crate::rewrite::ese::probe_mapping(surveyed.old_sid) else {
        return Vec::new();
    };
    // The logs of `winevt\Logs` are every installation's own (rewritten with their CRCs, like
    // every event log); only the ones elsewhere are listed as extra stores.
    let in_log_dir = |path: &str| {
        path.get(..EVENT_LOG_DIR.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(EVENT_LOG_DIR))
            && path.as_bytes().get(EVENT_LOG_DIR.len()) == Some(&b'\\')
    };
    surveyed.event_logs.retain(|l| !in_log_dir(&l.path));
    // Shadow copy stores: mount's own check, in its words (inspect adds only the count warning).
    if let Err(e) = crate::rewrite::shadow::check_shadow_copies(&surveyed, &map) {
        refusals.push(Refusal::new(reason_of(&e), e.to_string()));
    }
    let mut out = Vec::new();
    for d in crate::rewrite::stage_builder::store_decisions(&surveyed, &map) {
        if let Err(e) = &d.outcome {
            refusals.push(Refusal::new(reason_of(e), e.to_string()));
        }
        if d.partition != windows_partition {
            continue;
        }
        out.push(StoreReport {
            clone: clone_words(d.kind, &d.outcome),
            path: d.path,
            kind: d.kind.to_string(),
            size: d.size,
            sid_occurrences: d.sid_occurrences,
        });
    }
    out
}
