//! Building the clone's patch stage from a surveyed master: the SID choice (recorded, explicit or
//! from the seed), the whole structures it registers (each checked to fail closed), and the stage.

use crate::rewrite::derive::{check_explicit_sid, derive_new_sid};
use crate::rewrite::error::{Checksums, Result, RewriteError};
use crate::rewrite::ese::{rewrite_ese, EseError};
use crate::rewrite::ese_structure::EseStructure;
use crate::rewrite::sqlite_wal::rewrite_wal;
use crate::rewrite::stage::{SidPatchStage, Structure};
use crate::rewrite::stream::STRUCTURE_LIMIT;
use crate::rewrite::structures::{EvtxStructure, HiveStructure, SecureStructure};
use crate::rewrite::survey::{EseFile, WindowsSurvey};
use crate::rewrite::wal_structure::WalStructure;
use crate::rewrite::SidMapping;
use crate::sid::MachineSid;

/// The clone's identity: the master's machine SID and the one that replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SidChoice {
    pub old: MachineSid,
    pub new: MachineSid,
}

/// How the new SID is decided, in order of precedence.
pub enum SidSource<'a> {
    /// Recorded in the clone's state by an earlier mount (old, new as strings).
    Recorded(&'a str, &'a str),
    /// Given with `--sid`.
    Explicit(MachineSid),
    /// Derived from the seed.
    Seed(u64),
}

fn recorded_sid(recorded: &str) -> Result<MachineSid> {
    recorded
        .parse()
        .map_err(|source| RewriteError::RecordedSid {
            recorded: recorded.to_string(),
            source,
        })
}

pub fn choose_sid(survey: &WindowsSurvey, source: SidSource<'_>) -> Result<SidChoice> {
    let old = survey.old_sid;
    match source {
        SidSource::Recorded(o, n) => {
            let recorded_old = recorded_sid(o)?;
            let new = recorded_sid(n)?;
            if recorded_old != old {
                // On a data disk the old SID is the one --old-sid gave; on a Windows master it is
                // read from the registry.
                return Err(RewriteError::RecordedSidMismatch {
                    recorded: recorded_old,
                    master: old,
                    windows: survey.windows().is_some(),
                });
            }
            Ok(SidChoice { old, new })
        }
        SidSource::Explicit(new) => {
            check_explicit_sid(&old, &new, &survey.constraints)?;
            Ok(SidChoice { old, new })
        }
        SidSource::Seed(seed) => {
            let new = derive_new_sid(&old, seed, &survey.constraints)?;
            Ok(SidChoice { old, new })
        }
    }
}

/// The whole structures transformed on first touch (hives, `$Secure`, event logs).
pub fn structures(survey: &WindowsSurvey, map: &SidMapping) -> Result<Vec<Box<dyn Structure>>> {
    structures_with_identity(survey, map, None)
}

/// Whether a structure's bytes hold the old machine SID in any form.
fn holds_sid(map: &SidMapping, bytes: &[u8]) -> bool {
    !map.find_all(bytes, true).is_empty()
}

/// [`structures`], whose hives also get the clone's other identifiers.
///
/// Fails closed (docs/SEMANTICS.md invariant 8): a hive or `$Secure` that holds the old SID but cannot be
/// rewritten as a whole (a layout sidfs does not follow, a master already inconsistent, a
/// compressed or encrypted stream) is an error naming it, never left to the byte-level rewrite,
/// which would leave its hashes, checksums and order stale. One that does not hold the SID is
/// left as it is (the byte-level rewrite finds nothing in it either).
pub fn structures_with_identity(
    survey: &WindowsSurvey,
    map: &SidMapping,
    identity: Option<std::sync::Arc<crate::identity::IdentityMapping>>,
) -> Result<Vec<Box<dyn Structure>>> {
    let mut out: Vec<Box<dyn Structure>> = Vec::new();
    let windows = survey.windows();
    for h in &survey.hives {
        if h.extents().is_empty() {
            continue;
        }
        let bytes = match windows {
            Some(w) => w
                .volume
                .read_file(&h.path, "", STRUCTURE_LIMIT)
                .map_err(|e| RewriteError::image(format!("cannot read hive {}", h.path), e))?,
            None => continue,
        };
        let problem = if !h.layout.is_plain() {
            Some(RewriteError::NotPlain)
        } else {
            super::hive::check_hive(&bytes)
                .err()
                .map(RewriteError::Hive)
        };
        match problem {
            None => out.push(Box::new(
                HiveStructure::new(h, &survey.tasks).with_identity(identity.clone()),
            )),
            Some(why) if holds_sid(map, &bytes) => {
                return Err(RewriteError::HiveNotRewritable {
                    path: h.path.clone(),
                    cause: Box::new(why),
                })
            }
            Some(why) => log::info!(
                "hive {}: {why}; it holds no machine SID, kept as it is",
                h.path
            ),
        }
    }
    out.extend(
        survey
            .event_logs
            .iter()
            .filter_map(EvtxStructure::new)
            .map(|e| Box::new(e) as Box<dyn Structure>),
    );
    out.extend(ese_structures(survey, map)?);
    out.extend(wal_structures(survey, map)?);
    out.extend(super::wmi_structure::wmi_structures(survey, map)?);
    super::shadow::check_shadow_copies(survey, map)?;
    super::efs::check_efs(survey, map)?;
    super::ese_logs::check_ese_logs(survey, map)?;
    for part in &survey.volumes {
        // No exemption for a `$Secure` that "seems" to hold no SID: without its layout there is
        // no faithful way to read it, and every Windows volume's descriptors name local accounts.
        let secure = SecureStructure::locate(&survey.image, part).map_err(|why| {
            RewriteError::SecureNotRewritable {
                partition: part.partition.index,
                cause: Box::new(why),
            }
        })?;
        out.push(Box::new(secure));
    }
    Ok(out)
}

/// What Windows does when an ESE database is deleted from the master, for the refusal's advice.
fn when_deleted(path: &str) -> &'static str {
    let name = path
        .rsplit('\\')
        .next()
        .unwrap_or(path)
        .to_ascii_lowercase();
    match name.as_str() {
        "srudb.dat" => {
            "the System Resource Usage Monitor creates a new one and its usage history starts empty"
        }
        "windows.edb" => "Windows Search creates a new index and re-indexes",
        "qmgr.db" => "BITS creates a new one with an empty job queue",
        "datastore.edb" => "Windows Update creates a new one and its update history starts empty",
        "webcachev01.dat" => "the user's web cache is created anew at the next logon",
        "current.mdb" => "User Access Logging starts a new database",
        _ => "its service creates a new one",
    }
}

/// A store with checksums (an ESE database, a SQLite write-ahead log) as the checks before its
/// registration see it: its name (`KIND PATH (partition N)`), its bytes read whole, and how a
/// refusal of it reads.
struct StoreCheck {
    name: String,
    partition: u32,
    bytes: Vec<u8>,
    checksums: Checksums,
    advice: String,
}

impl StoreCheck {
    /// `Ok(None)`: the file's volume is not in the survey. Without its bytes there is no telling
    /// whether it holds the SID: an unreadable store is refused as well.
    fn read(
        survey: &WindowsSurvey,
        f: &EseFile,
        kind: &str,
        checksums: Checksums,
        advice: String,
    ) -> Result<Option<Self>> {
        let Some(part) = survey.volumes.get(f.volume) else {
            return Ok(None);
        };
        let partition = part.partition.index;
        let name = format!("{kind} {} (partition {partition})", f.path);
        let bytes = part
            .volume
            .read_file(&f.path, "", STRUCTURE_LIMIT)
            .map_err(|source| RewriteError::StoreUnreadable {
                store: name.clone(),
                checksums,
                source,
                advice: advice.clone(),
            })?;
        Ok(Some(StoreCheck {
            name,
            partition,
            bytes,
            checksums,
            advice,
        }))
    }

    /// The refusal of this store, which holds the SID but cannot be rewritten because of `why`.
    fn refuse(&self, why: RewriteError) -> RewriteError {
        RewriteError::StoreNotRewritable {
            store: self.name.clone(),
            checksums: self.checksums,
            cause: Box::new(why),
            advice: self.advice.clone(),
        }
    }
}

/// What the clone does with one store: `Some` structure rewrites it, `None` keeps it as it is (no
/// machine SID), an error refuses it.
type Registered = Result<Option<Box<dyn Structure>>>;

/// The advice of an ESE database's refusal: delete it, and what Windows then does.
fn ese_advice(path: &str) -> String {
    format!(
        "delete that file from the master before capturing it ({})",
        when_deleted(path)
    )
}

/// The ESE databases of the survey as structures, checked first (docs/SEMANTICS.md invariant 8): one that
/// holds the old SID (or hides it 7-bit compressed, or in a compressed value, or has compressed
/// values sidfs cannot read) but cannot be rewritten with valid page checksums is an error naming
/// it and what deleting it costs; one without the SID is left alone.
fn ese_structures(survey: &WindowsSurvey, map: &SidMapping) -> Result<Vec<Box<dyn Structure>>> {
    let mut out: Vec<Box<dyn Structure>> = Vec::new();
    for f in &survey.ese_databases {
        let advice = ese_advice(&f.path);
        let Some(store) = StoreCheck::read(survey, f, "ESE database", Checksums::Page, advice)?
        else {
            continue;
        };
        out.extend(ese_structure(f, &store, map)?);
    }
    Ok(out)
}

/// What the clone does with one ESE database read whole: `Some` rewrites it as a structure,
/// `None` keeps it as it is (no machine SID), an error refuses it.
fn ese_structure(f: &EseFile, store: &StoreCheck, map: &SidMapping) -> Registered {
    let name = &store.name;
    let holds = holds_sid(map, &store.bytes);
    let checked = if f.layout.is_plain() {
        rewrite_ese(&store.bytes, map).map(|_| ())
    } else {
        Ok(())
    };
    match checked {
        Err(e)
            if holds
                || matches!(
                    e,
                    EseError::CompressedSid { .. }
                        | EseError::CompressedValueSid { .. }
                        | EseError::SplitLongValueSid { .. }
                        | EseError::UnreadableValue { .. }
                        | EseError::ValueStructure { .. }
                ) =>
        {
            Err(store.refuse(RewriteError::Ese(e)))
        }
        Err(e) => {
            log::info!("{name}: {e}; it holds no machine SID, kept as it is");
            Ok(None)
        }
        Ok(()) if !holds => {
            log::info!("{name}: holds no machine SID, kept as it is");
            Ok(None)
        }
        Ok(()) => match EseStructure::new(f, store.partition) {
            Some(s) => Ok(Some(Box::new(s))),
            None => Err(store.refuse(RewriteError::NotPlain)),
        },
    }
}

/// The SQLite write-ahead logs of the survey as structures, checked first (docs/SEMANTICS.md invariant 8):
/// one that holds the old SID but cannot be rewritten with valid frame checksums (unknown format
/// version or page size, compressed or unreadable) is an error naming it; one without the SID is
/// left alone. The database file beside it has no page checksums and gets the generic rewrite.
fn wal_structures(survey: &WindowsSurvey, map: &SidMapping) -> Result<Vec<Box<dyn Structure>>> {
    let mut out: Vec<Box<dyn Structure>> = Vec::new();
    for f in &survey.sqlite_wals {
        let Some(store) = StoreCheck::read(
            survey,
            f,
            "SQLite write-ahead log",
            Checksums::Frame,
            WAL_ADVICE.to_string(),
        )?
        else {
            continue;
        };
        out.extend(wal_structure(f, &store, map)?);
    }
    Ok(out)
}

/// The advice of a SQLite write-ahead log's refusal.
const WAL_ADVICE: &str = "checkpoint it into its database in the master (stop the service that uses it and run sqlite3 DATABASE \"PRAGMA wal_checkpoint(TRUNCATE)\", or shut Windows down cleanly) and capture it again";

/// What the clone does with one SQLite write-ahead log read whole: `Some` rewrites it as a
/// structure, `None` keeps it as it is (no machine SID), an error refuses it.
fn wal_structure(f: &EseFile, store: &StoreCheck, map: &SidMapping) -> Registered {
    if !holds_sid(map, &store.bytes) {
        log::info!("{}: holds no machine SID, kept as it is", store.name);
        return Ok(None);
    }
    let checked = if f.layout.is_plain() {
        rewrite_wal(&store.bytes, map)
            .map(|_| ())
            .map_err(RewriteError::Wal)
    } else {
        Err(RewriteError::NotPlain)
    };
    match checked {
        Err(why) => Err(store.refuse(why)),
        Ok(()) => match WalStructure::new(f, store.partition) {
            Some(s) => Ok(Some(Box::new(s))),
            None => Err(store.refuse(RewriteError::NotPlain)),
        },
    }
}

/// What the clone does with one store with checksums, decided by the same checks that register
/// (or refuse) it when a clone is built: `sidfs inspect --old-sid` lists these.
#[derive(Debug)]
pub struct StoreDecision {
    /// The store's kind as inspect names it (`crate::rewrite::survey::STORE_KINDS`).
    pub kind: &'static str,
    /// Path on its volume.
    pub path: String,
    /// Index of its partition.
    pub partition: u32,
    pub size: u64,
    /// Machine-SID occurrences in its bytes, every form.
    pub sid_occurrences: usize,
    /// `Ok(true)`: rewritten with its checksums; `Ok(false)`: kept as it is (no machine SID);
    /// `Err`: the clone refuses it, with the sentence `sidfs mount` prints.
    pub outcome: Result<bool>,
}

/// The survey's ESE databases, SQLite write-ahead logs, event logs, WMI repositories, `$EFS`
/// streams with the SID and ESE logs, each with what the clone does with it ([`ese_structure`],
/// [`wal_structure`], the event-log, WMI, EFS and ESE-log checks: those
/// [`structures_with_identity`] makes).
pub fn store_decisions(survey: &WindowsSurvey, map: &SidMapping) -> Vec<StoreDecision> {
    let mut out = Vec::new();
    let checked = |f: &EseFile,
                   kind: &'static str,
                   read: Result<Option<StoreCheck>>,
                   decide: &dyn Fn(&StoreCheck) -> Registered| {
        let partition = survey.volumes.get(f.volume).map(|p| p.partition.index)?;
        let (size, sid_occurrences, outcome) = match read {
            Ok(None) => return None,
            Ok(Some(store)) => (
                store.bytes.len() as u64,
                map.find_all(&store.bytes, true).len(),
                decide(&store).map(|s| s.is_some()),
            ),
            Err(e) => (f.layout.size, 0, Err(e)),
        };
        Some(StoreDecision {
            kind,
            path: f.path.clone(),
            partition,
            size,
            sid_occurrences,
            outcome,
        })
    };
    for f in &survey.ese_databases {
        let read = StoreCheck::read(
            survey,
            f,
            "ESE database",
            Checksums::Page,
            ese_advice(&f.path),
        );
        out.extend(checked(f, "ese", read, &|s| ese_structure(f, s, map)));
    }
    for f in &survey.sqlite_wals {
        let read = StoreCheck::read(
            survey,
            f,
            "SQLite write-ahead log",
            Checksums::Frame,
            WAL_ADVICE.to_string(),
        );
        out.extend(checked(f, "sqlite-wal", read, &|s| {
            wal_structure(f, s, map)
        }));
    }
    for log in &survey.event_logs {
        let Some(part) = survey.volumes.iter().find(|p| {
            log.layout.image_offset_of(0).is_some_and(|at| {
                at.0 >= p.partition.start.0
                    && at.0 < p.partition.start.0.saturating_add(p.partition.len)
            })
        }) else {
            continue;
        };
        let Ok(bytes) = part.volume.read_file(&log.path, "", STRUCTURE_LIMIT) else {
            continue;
        };
        let sids = map.find_all(&bytes, true).len();
        out.push(StoreDecision {
            kind: "evtx",
            path: log.path.clone(),
            partition: part.partition.index,
            size: bytes.len() as u64,
            sid_occurrences: sids,
            // Every event log is registered as a structure (`EvtxStructure`); one without the
            // SID comes out as it was.
            outcome: Ok(sids > 0 && EvtxStructure::new(log).is_some()),
        });
    }
    for part in &survey.volumes {
        out.extend(super::wmi_structure::wmi_decision(part, map));
        out.extend(super::efs::efs_decision(part, map));
    }
    out.extend(super::ese_logs::ese_log_decisions(survey, map));
    out
}

pub fn build_stage(
    survey: &WindowsSurvey,
    choice: &SidChoice,
    disk_size: u64,
) -> Result<SidPatchStage> {
    build_stage_with_identity(survey, choice, None, disk_size)
}

/// [`build_stage`] that also replaces the clone's other identifiers in the hives.
pub fn build_stage_with_identity(
    survey: &WindowsSurvey,
    choice: &SidChoice,
    identity: Option<std::sync::Arc<crate::identity::IdentityMapping>>,
    disk_size: u64,
) -> Result<SidPatchStage> {
    let mut facts = super::survey_cache::SurveyFacts::default();
    build_stage_cached(survey, choice, identity, disk_size, &mut facts)
}

/// [`build_stage_with_identity`], taking the fragment-junction pass's findings from the survey
/// cache's `facts` when they are for this old SID, and adding them otherwise.
pub fn build_stage_cached(
    survey: &WindowsSurvey,
    choice: &SidChoice,
    identity: Option<std::sync::Arc<crate::identity::IdentityMapping>>,
    disk_size: u64,
    facts: &mut super::survey_cache::SurveyFacts,
) -> Result<SidPatchStage> {
    let map = SidMapping::new(choice.old, choice.new)?;
    let excluded = survey.excluded.iter().map(|(r, _)| r.clone()).collect();
    let structures = structures_with_identity(survey, &map, identity)?;
    let started = std::time::Instant::now();
    let old_sid = map.old().to_string();
    let scan = match facts.junctions.take() {
        Some(cached) if cached.old_sid == old_sid => cached,
        _ => super::junction::junction_scan(&survey.image, &survey.volumes, &map)?,
    };
    let junctions = super::junction::edits_from(&scan, &map);
    facts.junctions = Some(scan);
    log::info!(
        "fragment junctions: {} fragmented streams, {} junctions, {} SIDs across them ({} compressed or encrypted streams skipped) in {:?}",
        junctions.streams,
        junctions.junctions,
        junctions.replaced,
        junctions.not_plain,
        started.elapsed()
    );
    Ok(SidPatchStage::new(map, excluded, structures, disk_size).with_fixed_edits(junctions.edits))
}
