//! Turning a surveyed master and a seed into the clone's SID and its patch stage.

use crate::rewrite::derive::{check_explicit_sid, derive_new_sid};
use crate::rewrite::ese::{rewrite_ese, EseError};
use crate::rewrite::ese_structure::EseStructure;
use crate::rewrite::model::WindowsSurvey;
use crate::rewrite::sqlite_wal::rewrite_wal;
use crate::rewrite::stage::{SidPatchStage, Structure};
use crate::rewrite::structures::{EvtxStructure, HiveStructure, SecureStructure};
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

pub fn choose_sid(survey: &WindowsSurvey, source: SidSource<'_>) -> Result<SidChoice, String> {
    let old = survey.old_sid;
    match source {
        SidSource::Recorded(o, n) => {
            let recorded_old: MachineSid = o
                .parse()
                .map_err(|e| format!("state records SID {o:?}: {e}"))?;
            let new: MachineSid = n
                .parse()
                .map_err(|e| format!("state records SID {n:?}: {e}"))?;
            if recorded_old != old {
                // On a data disk the old SID is the one --old-sid gave; on a Windows master it is
                // read from the registry.
                return Err(if survey.windows().is_some() {
                    format!(
                        "the clone was made for machine SID {recorded_old}, but the master's registry now says {old}: mount the master the clone was made from, or pass another --state for a new clone"
                    )
                } else {
                    format!(
                        "the clone was made with --old-sid {recorded_old}, not {old}: pass --old-sid {recorded_old} as when it was created, or another --state for a clone that replaces {old}"
                    )
                });
            }
            Ok(SidChoice { old, new })
        }
        SidSource::Explicit(new) => {
            check_explicit_sid(&old, &new, &survey.constraints).map_err(|e| e.to_string())?;
            Ok(SidChoice { old, new })
        }
        SidSource::Seed(seed) => {
            let new = derive_new_sid(&old, seed, &survey.constraints).map_err(|e| e.to_string())?;
            Ok(SidChoice { old, new })
        }
    }
}

/// The whole structures transformed on first touch (hives, `$Secure`, event logs).
pub fn structures(
    survey: &WindowsSurvey,
    map: &SidMapping,
) -> Result<Vec<Box<dyn Structure>>, String> {
    structures_with_identity(survey, map, None)
}

/// Whether a structure's bytes hold the old machine SID in any form.
fn holds_sid(map: &SidMapping, bytes: &[u8]) -> bool {
    !map.find_all(bytes, true).is_empty()
}

/// [`structures`], whose hives also get the clone's other identifiers.
///
/// Fails closed (DESIGN invariant 8): a hive or `$Secure` that holds the old SID but cannot be
/// rewritten as a whole (a layout sidfs does not follow, a master already inconsistent, a
/// compressed or encrypted stream) is an error naming it, never left to the byte-level rewrite,
/// which would leave its hashes, checksums and order stale. One that does not hold the SID is
/// left as it is (the byte-level rewrite finds nothing in it either).
pub fn structures_with_identity(
    survey: &WindowsSurvey,
    map: &SidMapping,
    identity: Option<std::sync::Arc<crate::identity::IdentityMapping>>,
) -> Result<Vec<Box<dyn Structure>>, String> {
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
                .map_err(|e| format!("cannot read hive {}: {e}", h.path))?,
            None => continue,
        };
        let problem = if !h.layout.is_plain() {
            Some("it is stored compressed or encrypted".to_string())
        } else {
            super::hive::check_hive(&bytes).err().map(|e| e.to_string())
        };
        match problem {
            None => out.push(Box::new(
                HiveStructure::new(h, &survey.tasks).with_identity(identity.clone()),
            )),
            Some(why) if holds_sid(map, &bytes) => {
                return Err(format!(
                    "hive {} holds the machine SID but cannot be rewritten faithfully: {why}; repair or delete that file in the master (a stale backup copy can go) and capture it again",
                    h.path
                ))
            }
            Some(why) => log::info!("hive {}: {why}; it holds no machine SID, kept as it is", h.path),
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
            format!(
                "the security descriptors ($Secure) of partition {} cannot be rewritten with their hashes and indexes: {why}; run chkdsk /f on that volume in Windows, then capture the master again",
                part.partition.index
            )
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

/// The ESE databases of the survey as structures, checked first (DESIGN invariant 8): one that
/// holds the old SID (or hides it 7-bit compressed) but cannot be rewritten with valid page
/// checksums is an error naming it and what deleting it costs; one without the SID is left alone.
fn ese_structures(
    survey: &WindowsSurvey,
    map: &SidMapping,
) -> Result<Vec<Box<dyn Structure>>, String> {
    let mut out: Vec<Box<dyn Structure>> = Vec::new();
    for f in &survey.ese_databases {
        let Some(part) = survey.volumes.get(f.volume) else {
            continue;
        };
        let name = format!(
            "ESE database {} (partition {})",
            f.path, part.partition.index
        );
        let refuse = |why: String| {
            format!(
                "{name} holds the machine SID but cannot be rewritten with valid page checksums: {why}; delete that file from the master before capturing it ({})",
                when_deleted(&f.path)
            )
        };
        // Without its bytes there is no telling whether it holds the SID: refused as well.
        let bytes = part
            .volume
            .read_file(&f.path, "", STRUCTURE_LIMIT)
            .map_err(|e| {
                format!(
                    "{name} cannot be read whole to rewrite the machine SID in it with valid page checksums ({e}); delete that file from the master before capturing it ({})",
                    when_deleted(&f.path)
                )
            })?;
        let holds = holds_sid(map, &bytes);
        let checked = if f.layout.is_plain() {
            rewrite_ese(&bytes, map).map(|_| ())
        } else {
            Ok(())
        };
        match checked {
            Err(e) if holds || matches!(e, EseError::CompressedSid { .. }) => {
                return Err(refuse(e.to_string()))
            }
            Err(e) => log::info!("{name}: {e}; it holds no machine SID, kept as it is"),
            Ok(()) if !holds => log::info!("{name}: holds no machine SID, kept as it is"),
            Ok(()) => match EseStructure::new(f, part.partition.index) {
                Some(s) => out.push(Box::new(s)),
                None => return Err(refuse("it is stored compressed or encrypted".into())),
            },
        }
    }
    Ok(out)
}

/// The SQLite write-ahead logs of the survey as structures, checked first (DESIGN invariant 8):
/// one that holds the old SID but cannot be rewritten with valid frame checksums (unknown format
/// version or page size, compressed or unreadable) is an error naming it; one without the SID is
/// left alone. The database file beside it has no page checksums and gets the generic rewrite.
fn wal_structures(
    survey: &WindowsSurvey,
    map: &SidMapping,
) -> Result<Vec<Box<dyn Structure>>, String> {
    let mut out: Vec<Box<dyn Structure>> = Vec::new();
    for f in &survey.sqlite_wals {
        let Some(part) = survey.volumes.get(f.volume) else {
            continue;
        };
        let name = format!(
            "SQLite write-ahead log {} (partition {})",
            f.path, part.partition.index
        );
        let advice = "checkpoint it into its database in the master (stop the service that uses it and run sqlite3 DATABASE \"PRAGMA wal_checkpoint(TRUNCATE)\", or shut Windows down cleanly) and capture it again";
        let bytes = part
            .volume
            .read_file(&f.path, "", STRUCTURE_LIMIT)
            .map_err(|e| {
                format!(
                    "{name} cannot be read whole to rewrite the machine SID in it with valid frame checksums ({e}); {advice}"
                )
            })?;
        if !holds_sid(map, &bytes) {
            log::info!("{name}: holds no machine SID, kept as it is");
            continue;
        }
        let checked = if f.layout.is_plain() {
            rewrite_wal(&bytes, map)
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            Err("it is stored compressed or encrypted".to_string())
        };
        let refuse = |why: String| {
            format!(
                "{name} holds the machine SID but cannot be rewritten with valid frame checksums: {why}; {advice}"
            )
        };
        match checked {
            Err(why) => return Err(refuse(why)),
            Ok(()) => match WalStructure::new(f, part.partition.index) {
                Some(s) => out.push(Box::new(s)),
                None => return Err(refuse("it is stored compressed or encrypted".into())),
            },
        }
    }
    Ok(out)
}

pub fn build_stage(
    survey: &WindowsSurvey,
    choice: &SidChoice,
    disk_size: u64,
) -> Result<SidPatchStage, String> {
    build_stage_with_identity(survey, choice, None, disk_size)
}

/// [`build_stage`] that also replaces the clone's other identifiers in the hives.
pub fn build_stage_with_identity(
    survey: &WindowsSurvey,
    choice: &SidChoice,
    identity: Option<std::sync::Arc<crate::identity::IdentityMapping>>,
    disk_size: u64,
) -> Result<SidPatchStage, String> {
    let map = SidMapping::new(choice.old, choice.new)?;
    let excluded = survey.excluded.iter().map(|(r, _)| r.clone()).collect();
    let structures = structures_with_identity(survey, &map, identity)?;
    let started = std::time::Instant::now();
    let junctions = super::junction::junction_edits(&survey.image, &survey.volumes, &map)?;
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

/// The largest structure (hive, `$SDS`) transformed in memory; a hostile size field above it is
/// an error, not an allocation.
pub const STRUCTURE_LIMIT: u64 = 1 << 30;

/// Reads a stream's bytes from the master through its extents (holes read as zeros).
pub fn read_stream(
    master: &crate::overlay::MasterImage,
    extents: &[crate::image::Extent],
    size: u64,
) -> Result<Vec<u8>, String> {
    if size > STRUCTURE_LIMIT {
        return Err(format!(
            "a {size}-byte structure is larger than the {STRUCTURE_LIMIT} bytes sidfs rewrites in memory"
        ));
    }
    let len = usize::try_from(size).map_err(|_| "stream too large".to_string())?;
    let mut out = vec![0u8; len];
    for e in extents {
        let (Some(at), Ok(start)) = (e.image_offset, usize::try_from(e.logical_offset)) else {
            continue;
        };
        let end = (start as u64 + e.len).min(size) as usize;
        if start >= end {
            continue;
        }
        master
            .read_at(at.0, &mut out[start..end])
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Maps changed runs of a stream (stream offset, new bytes) to disk edits through its extents.
pub fn runs_to_disk(
    runs: Vec<(usize, Vec<u8>)>,
    extents: &[crate::image::Extent],
) -> Vec<(u64, Vec<u8>)> {
    let mut edits = Vec::new();
    for (start, bytes) in runs {
        let mut pos = start as u64;
        let end = pos + bytes.len() as u64;
        while pos < end {
            let Some(e) = extents
                .iter()
                .find(|e| pos >= e.logical_offset && pos < e.logical_offset + e.len)
            else {
                pos += 1;
                continue;
            };
            let piece_end = end.min(e.logical_offset + e.len);
            if let Some(at) = e.image_offset {
                let from = (pos - start as u64) as usize;
                let to = (piece_end - start as u64) as usize;
                edits.push((at.0 + (pos - e.logical_offset), bytes[from..to].to_vec()));
            }
            pos = piece_end;
        }
    }
    edits.sort_by_key(|(o, _)| *o);
    edits
}

/// Whether any changed run (stream offset, bytes) falls, even partly, where the stream has no
/// clusters (a sparse hole), where `runs_to_disk` could not store it.
pub fn edits_in_holes(runs: &[(usize, Vec<u8>)], extents: &[crate::image::Extent]) -> bool {
    runs.iter().any(|(start, bytes)| {
        let (s, e) = (*start as u64, *start as u64 + bytes.len() as u64);
        let mut covered = 0u64;
        for x in extents.iter().filter(|x| x.image_offset.is_some()) {
            let (a, b) = (x.logical_offset.max(s), (x.logical_offset + x.len).min(e));
            covered += b.saturating_sub(a);
        }
        covered < e - s
    })
}

/// Disk ranges covered by a stream's extents.
pub fn extent_ranges(extents: &[crate::image::Extent]) -> Vec<std::ops::Range<u64>> {
    let mut r: Vec<_> = extents
        .iter()
        .filter_map(|e| e.image_offset.map(|at| at.0..at.0 + e.len))
        .collect();
    r.sort_by_key(|x| x.start);
    r
}
