//! What the rewrite needs to know about a master, learned once when a clone is mounted: the
//! Windows volume, the machine SID, the names that constrain the new SID's order, the ranges never
//! to touch, and the whole structures (hives, `$Secure`) to transform on first touch.
//!
//! Cost: it reads the partition table, a few MFT records, the SECURITY and SAM hives, and walks
//! the key names of every hive (to find SID-named keys); no scan of the disk's data. The chosen
//! SID is stored in the clone's state, so a remount does not depend on this being repeated
//! identically.

use std::ops::Range;
use std::path::Path;

use crate::hive::{windows, Hive};
use crate::image::{
    find_windows_volume, HiveFileKind, HiveLocation, ImageFile, NtfsVolume, Partition,
    StreamLocation,
};
use crate::rewrite::OrderConstraints;
use crate::sid::MachineSid;

/// Largest hive read into memory; real SOFTWARE hives are ~100 MiB.
pub const HIVE_LIMIT: u64 = 1 << 30;
/// Files whose content is never rewritten, with the reason (docs/SEMANTICS.md).
pub const EXCLUDED_FILES: [(&str, &str); 4] = [
    (
        "$LogFile",
        "the NTFS journal: replaying it must find the bytes it logged; a clean volume ignores it",
    ),
    ("pagefile.sys", "virtual memory contents, discarded at boot"),
    ("swapfile.sys", "virtual memory contents, discarded at boot"),
    (
        "hiberfil.sys",
        "a hibernation image is refused; a clean one is discarded at boot",
    ),
];
/// Directories whose entries are commonly named after SIDs; their names constrain the new SID's
/// order. (`Users\*\...` profile directories are added per profile.)
const SID_NAMED_DIRS: [&str; 4] = [
    "$Recycle.Bin",
    "RECYCLER",
    r"Windows\System32\Microsoft\Protect",
    r"ProgramData\Microsoft\Crypto\RSA",
];

pub struct WindowsSurvey {
    pub image: ImageFile,
    pub partition: Partition,
    pub volume: NtfsVolume,
    pub old_sid: MachineSid,
    pub constraints: OrderConstraints,
    /// Disk ranges kept as in the master, with the file they belong to.
    pub excluded: Vec<(Range<u64>, String)>,
    /// Primary hive files (not logs).
    pub hives: Vec<HiveLocation>,
}

/// Surveys the master. `Ok(None)`: no Windows installation (the clone is then the master).
pub fn survey(master: &Path, with_constraints: bool) -> Result<Option<WindowsSurvey>, String> {
    let image = ImageFile::open(master).map_err(|e| e.to_string())?;
    let Some((partition, volume)) = find_windows_volume(&image).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let security = volume
        .read_file(r"Windows\System32\config\SECURITY", "", HIVE_LIMIT)
        .map_err(|e| format!("cannot read the SECURITY hive: {e}"))?;
    let security = Hive::parse(&security).map_err(|e| format!("SECURITY hive: {e}"))?;
    let from_security = windows::machine_sid_from_security(&security)
        .map_err(|e| format!("SECURITY hive: {e}"))?
        .ok_or("the SECURITY hive has no machine SID (Policy\\PolAcDmS)")?;
    if let Ok(sam) = volume.read_file(r"Windows\System32\config\SAM", "", HIVE_LIMIT) {
        let sam = Hive::parse(&sam).map_err(|e| format!("SAM hive: {e}"))?;
        if let Some(from_sam) =
            windows::machine_sid_from_sam(&sam).map_err(|e| format!("SAM hive: {e}"))?
        {
            if from_sam.sid != from_security.sid {
                return Err(format!(
                    "SAM says the machine SID is {} but SECURITY says {}: the image is inconsistent",
                    from_sam.sid, from_security.sid
                ));
            }
        }
    }
    let old_sid = from_security.sid;

    let mut excluded = Vec::new();
    for (name, _) in EXCLUDED_FILES {
        if volume
            .try_lookup(name)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            continue;
        }
        let layout = volume.stream_layout(name, "").map_err(|e| e.to_string())?;
        if let StreamLocation::NonResident { extents } = &layout.location {
            for e in extents {
                if let Some(at) = e.image_offset {
                    excluded.push((at.0..at.0 + e.len, name.to_string()));
                }
            }
        }
    }

    let all_hives = volume.locate_hives().map_err(|e| e.to_string())?;
    let hives: Vec<HiveLocation> = all_hives
        .into_iter()
        .filter(|h| h.kind == HiveFileKind::Primary)
        .collect();

    let mut constraints = OrderConstraints::new();
    for h in hives.iter().filter(|_| with_constraints) {
        let Ok(bytes) = volume.read_file(&h.path, "", HIVE_LIMIT) else {
            continue;
        };
        let Ok(hive) = Hive::parse_unvalidated(&bytes) else {
            continue;
        };
        for key in hive.walk().flatten() {
            let name = key.key.name().to_string_lossy();
            if name.len() > 9 && name[..9].eq_ignore_ascii_case("S-1-5-21-") {
                constraints.add_name(&name);
            }
        }
    }
    let mut dirs: Vec<String> = SID_NAMED_DIRS.iter().map(|s| s.to_string()).collect();
    if !with_constraints {
        dirs.clear();
    }
    for profile_root in ["Users", "Documents and Settings"]
        .iter()
        .filter(|_| with_constraints)
    {
        if let Ok(entries) = volume.list_dir(profile_root) {
            for e in entries.iter().filter(|e| e.is_directory) {
                dirs.push(format!(
                    r"{profile_root}\{}\AppData\Roaming\Microsoft\Protect",
                    e.name
                ));
                dirs.push(format!(
                    r"{profile_root}\{}\AppData\Roaming\Microsoft\Crypto\RSA",
                    e.name
                ));
            }
        }
    }
    for d in dirs {
        if let Ok(entries) = volume.list_dir(&d) {
            for e in entries {
                constraints.add_name(&e.name);
            }
        }
    }
    Ok(Some(WindowsSurvey {
        image,
        partition,
        volume,
        old_sid,
        constraints,
        excluded,
        hives,
    }))
}
