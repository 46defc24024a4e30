//! `sidfs verify`: checks an image (a mounted clone's disk, an export, any raw image) for
//! occurrences of an old machine SID and for broken structures.
//!
//! Every occurrence is found the way the rewrite sees the disk: in raw bytes and inside NTFS
//! multi-sector records with their fixups undone. An occurrence inside a range the rewrite keeps
//! on purpose (`$LogFile`, `pagefile.sys`, … see docs/SEMANTICS.md) is reported as expected.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::hive::HIVE_SIZE_LIMIT;
use crate::hive::{check::check_hive, Hive};
use crate::identity::{IdentityChoice, IdentityMapping};
use crate::image::ntfs_volume::multi_sector::{find_records, MAX_RECORD};
use crate::overlay::{MasterImage, OverlayError};
use crate::rewrite::derive::DeriveError;
use crate::rewrite::mapping::SEARCH_CONTEXT;
use crate::rewrite::secure::{verify_secure, SecureParts};
use crate::rewrite::{derive_new_sid, Form, OrderConstraints, SidMapping};
use crate::sid::MachineSid;

const CHUNK: u64 = 4 << 20;
/// Occurrences listed in full; beyond this only counted.
const MAX_LISTED: usize = 200;

/// Why an image could not be verified at all (problems found in it are in the report instead).
#[derive(Debug)]
pub enum VerifyError {
    /// The image cannot be opened or read.
    Image(OverlayError),
    /// No stand-in SID can be derived from the old one (to search for it).
    Derive(DeriveError),
    /// The old SID cannot be searched for, in the words of the rewrite's mapping.
    Mapping(Box<crate::rewrite::RewriteError>),
    /// The image's Windows installation (or NTFS volumes) cannot be surveyed.
    Survey(Box<crate::rewrite::survey::SurveyError>),
    /// The recorded identifiers cannot be searched for, in the words of identity.
    Identity(Box<crate::identity::IdentityError>),
    /// The clone.json given (or beside the image) is not readable as one.
    CloneJson { path: PathBuf },
    /// No old SID given, and no clone.json that records one.
    NoOldSid,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Image(e) => write!(f, "{e}"),
            VerifyError::Derive(e) => write!(f, "{e}"),
            VerifyError::Mapping(e) => write!(f, "{e}"),
            VerifyError::Identity(e) => write!(f, "{e}"),
            VerifyError::Survey(e) => write!(f, "cannot read the Windows installation: {e}"),
            VerifyError::CloneJson { path } => {
                write!(f, "cannot read {} as a clone.json", path.display())
            }
            VerifyError::NoOldSid => {
                f.write_str("give --old-sid S-1-5-21-... (the master's machine SID)")
            }
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VerifyError::Image(e) => Some(e),
            VerifyError::Derive(e) => Some(e),
            VerifyError::Mapping(e) => Some(&**e),
            VerifyError::Survey(e) => Some(&**e),
            VerifyError::Identity(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<OverlayError> for VerifyError {
    fn from(e: OverlayError) -> Self {
        VerifyError::Image(e)
    }
}

/// What `sidfs verify IMAGE` checks against: the old SID (given, or recorded in the clone.json)
/// and the recorded identifiers. `clone_json` defaults to the clone.json beside IMAGE (a mounted
/// clone's disk.img), if there is one.
pub fn verify_target(
    image: &Path,
    old: Option<MachineSid>,
    clone_json: Option<PathBuf>,
) -> Result<(MachineSid, Option<IdentityChoice>), VerifyError> {
    let beside = image.parent().map(|d| d.join(crate::fuse::INFO_NAME));
    let info_path = clone_json.or(beside.filter(|p| p.exists()));
    let info: Option<serde_json::Value> = match &info_path {
        Some(p) => match std::fs::read(p).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(v)) => Some(v),
            _ => return Err(VerifyError::CloneJson { path: p.clone() }),
        },
        None => None,
    };
    let old = old
        .or_else(|| info.as_ref()?["old_sid"].as_str()?.parse().ok())
        .ok_or(VerifyError::NoOldSid)?;
    let identity = info
        .as_ref()
        .and_then(|i| serde_json::from_value(i["identity"].clone()).ok());
    Ok((old, identity))
}

#[derive(Debug, serde::Serialize)]
pub struct FoundSid {
    pub offset: u64,
    pub form: Form,
    /// Where it is: the excluded file or hive it lies in, if known.
    pub region: Option<String>,
    /// Inside a range the rewrite deliberately keeps.
    pub expected: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct VerifyReport {
    pub image: PathBuf,
    pub old_sid: String,
    pub windows_found: bool,
    pub unexpected: usize,
    pub expected: usize,
    pub occurrences: Vec<FoundSid>,
    pub structures_checked: Vec<String>,
    pub problems: Vec<String>,
    /// Old identifier values still in a hive: (identifier, hive, count).
    pub residual_identifiers: Vec<(String, String, usize)>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.unexpected == 0 && self.problems.is_empty() && self.residual_identifiers.is_empty()
    }
}

pub fn verify(image: &Path, old: MachineSid) -> Result<VerifyReport, VerifyError> {
    verify_with_identity(image, old, None)
}

/// Like [`verify`], and also reports, per identifier, every old value of `identity` (a clone's
/// recorded computer name, MachineGuid, WSUS and MSDTC ids) still present in the image's hives.
pub fn verify_with_identity(
    image: &Path,
    old: MachineSid,
    identity: Option<&IdentityChoice>,
) -> Result<VerifyReport, VerifyError> {
    let master = MasterImage::open(image)?;
    let dummy = derive_new_sid(&old, 0, &OrderConstraints::new()).map_err(VerifyError::Derive)?;
    let finder = SidMapping::new(old, dummy).map_err(|e| VerifyError::Mapping(Box::new(e)))?;
    // A clone's own SID is not `old`: survey it as it is; a disk without Windows is surveyed as
    // a data disk of the machine whose SID is `old`.
    let win = crate::clone::survey_image(
        image,
        false,
        None,
        Some(old),
        &mut crate::rewrite::survey_cache::SurveyFacts::default(),
    )
    .map_err(|e| VerifyError::Survey(Box::new(e)))?;

    let mut regions: Vec<(Range<u64>, String, bool)> = Vec::new();
    let mut problems = Vec::new();
    let mut structures_checked = Vec::new();
    let mut residual_identifiers = Vec::new();
    let id_mapping = match identity {
        Some(choice) if !choice.changes.is_empty() => {
            Some(IdentityMapping::new(choice).map_err(|e| VerifyError::Identity(Box::new(e)))?)
        }
        _ => None,
    };
    if let Some(w) = &win {
        for (r, name) in &w.excluded {
            regions.push((r.clone(), name.clone(), true));
        }
        for part in &w.volumes {
            match SecureParts::read(&w.image, &part.volume) {
                Ok((parts, _)) => match verify_secure(&parts) {
                    Ok(_) => structures_checked
                        .push(format!("$Secure of partition {}", part.partition.index)),
                    Err(e) => problems.push(format!(
                        "$Secure of partition {}: {e}",
                        part.partition.index
                    )),
                },
                Err(e) => problems.push(format!(
                    "$Secure of partition {}: cannot read: {e}",
                    part.partition.index
                )),
            }
        }
        // Every file read through its extents: an old SID across a fragment junction is not
        // seen by the byte scan of the disk.
        match crate::rewrite::junction::junction_edits(&w.image, &w.volumes, &finder) {
            Ok(j) => {
                let unexpected: Vec<u64> = j
                    .crossings
                    .iter()
                    .copied()
                    .filter(|at| !regions.iter().any(|(r, _, exp)| *exp && r.contains(at)))
                    .collect();
                if let Some(first) = unexpected.first() {
                    problems.push(format!(
                        "old SID across a fragment junction at {first:#x} ({} such occurrences): a file's content still holds it",
                        unexpected.len()
                    ));
                }
                structures_checked.push(format!(
                    "fragment junctions ({} in {} fragmented streams)",
                    j.junctions, j.streams
                ));
            }
            Err(e) => problems.push(format!("fragment junctions: {e}")),
        }
        let Some(windows) = w.windows() else {
            let findings = Findings {
                regions,
                problems,
                structures_checked,
                residual_identifiers,
                windows_found: true,
            };
            return scan(image, old, &master, &finder, findings);
        };
        for h in &w.hives {
            for e in h.extents() {
                if let Some(at) = e.image_offset {
                    regions.push((at.0..at.0 + e.len, h.path.clone(), false));
                }
            }
            let bytes = match windows.volume.read_file(&h.path, "", HIVE_SIZE_LIMIT) {
                Ok(b) => b,
                Err(e) => {
                    problems.push(format!("{}: cannot read: {e}", h.path));
                    continue;
                }
            };
            if let Some(mapping) = &id_mapping {
                let mut per_kind = std::collections::BTreeMap::new();
                for occ in mapping.find_all(&bytes, true) {
                    *per_kind.entry(occ.kind.to_string()).or_insert(0usize) += 1;
                }
                // A computer name of another length is replaced in string values only.
                if let Ok(n) = Hive::parse(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|h| Ok(crate::identity::hive::name_residual(&h, mapping)?))
                {
                    if n > 0 {
                        *per_kind.entry("hostname".into()).or_insert(0usize) += n;
                    }
                }
                for (kind, n) in per_kind {
                    residual_identifiers.push((kind, h.path.clone(), n));
                }
            }
            match Hive::parse(&bytes) {
                Ok(hive) => {
                    for p in check_hive(&hive) {
                        problems.push(format!("{}: {p}", h.path));
                    }
                    structures_checked.push(h.path.clone());
                }
                Err(e) => problems.push(format!("{}: {e}", h.path)),
            }
        }
    }

    let findings = Findings {
        regions,
        problems,
        structures_checked,
        residual_identifiers,
        windows_found: win.is_some(),
    };
    scan(image, old, &master, &finder, findings)
}

/// What the structure checks found before the byte scan.
struct Findings {
    /// Known ranges: (range, name, occurrences there are expected).
    regions: Vec<(Range<u64>, String, bool)>,
    problems: Vec<String>,
    structures_checked: Vec<String>,
    residual_identifiers: Vec<(String, String, usize)>,
    windows_found: bool,
}

/// Scans every data extent of the image for the old SID (raw and behind fixups).
fn scan(
    image: &Path,
    old: MachineSid,
    master: &MasterImage,
    finder: &SidMapping,
    findings: Findings,
) -> Result<VerifyReport, VerifyError> {
    let Findings {
        regions,
        problems,
        structures_checked,
        residual_identifiers,
        windows_found,
    } = findings;
    let size = master.size();
    let mut occurrences = Vec::new();
    let (mut unexpected, mut expected) = (0usize, 0usize);
    let mut pos = 0;
    while let Some(d) = master.next_data(pos)? {
        let h = master.next_hole(d)?;
        let mut at = d;
        while at < h {
            let end = (at + CHUNK).min(h);
            let margin = (MAX_RECORD + SEARCH_CONTEXT) as u64;
            let ws = at.saturating_sub(margin) / 512 * 512;
            let we = (end + margin).min(size);
            let mut w = vec![0u8; (we - ws) as usize];
            master.read_at(ws, &mut w)?;
            let mut views = vec![w.clone()];
            let records = find_records(&w, ws);
            if !records.is_empty() {
                for r in &records {
                    r.unfix(&mut w);
                }
                views.push(w);
            }
            let mut seen = std::collections::BTreeSet::new();
            for view in &views {
                for occ in finder.find_all(view, we >= size) {
                    let off = ws + occ.offset as u64;
                    if off < at || off >= end || !seen.insert(off) {
                        continue;
                    }
                    let region = regions.iter().find(|(r, _, _)| r.contains(&off));
                    let is_expected = region.is_some_and(|(_, _, x)| *x);
                    if is_expected {
                        expected += 1;
                    } else {
                        unexpected += 1;
                    }
                    if occurrences.len() < MAX_LISTED {
                        occurrences.push(FoundSid {
                            offset: off,
                            form: occ.form,
                            region: region.map(|(_, n, _)| n.clone()),
                            expected: is_expected,
                        });
                    }
                }
            }
            at = end;
        }
        pos = h;
    }
    Ok(VerifyReport {
        image: image.to_path_buf(),
        old_sid: old.to_string(),
        windows_found,
        unexpected,
        expected,
        occurrences,
        structures_checked,
        problems,
        residual_identifiers,
    })
}

#[cfg(test)]
mod target_tests {
    use super::*;
    use crate::testutil::TempDir;

    /// Prove that `verify` takes its old SID from the command line first, then from the
    /// clone.json beside the image, and refuses (typed) when neither gives one or the
    /// clone.json is not one.
    #[test]
    fn the_old_sid_comes_from_the_option_or_the_clone_json_beside_the_image() {
        let dir = TempDir::new("verify-target");
        let image = dir.0.join("disk.img");
        let e = verify_target(&image, None, None).unwrap_err();
        assert!(matches!(e, VerifyError::NoOldSid), "{e:?}");
        assert_eq!(
            e.to_string(),
            "give --old-sid S-1-5-21-... (the master's machine SID)"
        );
        let given: MachineSid = "S-1-5-21-1-2-3".parse().unwrap();
        assert_eq!(verify_target(&image, Some(given), None).unwrap().0, given);

        let info = dir.0.join(crate::fuse::INFO_NAME);
        std::fs::write(&info, b"{ not json").unwrap();
        let e = verify_target(&image, None, None).unwrap_err();
        assert!(matches!(e, VerifyError::CloneJson { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("cannot read {} as a clone.json", info.display())
        );

        std::fs::write(&info, br#"{"old_sid": "S-1-5-21-10-20-30"}"#).unwrap();
        let (old, identity) = verify_target(&image, None, None).unwrap();
        assert_eq!(old.to_string(), "S-1-5-21-10-20-30");
        assert!(identity.is_none());
    }
}
