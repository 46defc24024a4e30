//! What the rewrite needs to know about a master, learned once when a clone is mounted: the
//! Windows volume, the machine SID, the names that constrain the new SID's order, the ranges never
//! to touch, and the whole structures (hives, `$Secure`, event logs, ESE databases, SQLite
//! write-ahead logs) to transform on first touch.
//!
//! Cost: it reads the partition table, a few MFT records, the SECURITY and SAM hives, and walks
//! the key names of every hive (to find SID-named keys), lists the event-log directory, looks up
//! the known ESE database and SQLite write-ahead log paths and walks at most
//! [`EVENT_LOG_WALK_BUDGET`] directory entries per volume for event logs (and `*-wal` files)
//! elsewhere; no scan of the disk's data. The chosen SID is stored in the clone's state, so a remount does not depend on this being repeated
//! identically.
//!
//! What of this depends on the master only (inspect's verdict, the store candidates, the
//! order-constraint names) is kept across clones by [`super::survey_cache`].

use std::ops::Range;
use std::path::Path;

use crate::hive::{windows, Hive, HiveError};
use crate::image::{
    FileSystemKind, HiveFileKind, HiveLocation, ImageError, ImageFile, NtfsVolume, Partition,
    PartitionTable, StreamLocation,
};
use crate::rewrite::survey_cache::SurveyFacts;
use crate::rewrite::OrderConstraints;
use crate::sid::MachineSid;

mod stores;

use stores::{event_logs_of, stores_of};
pub use stores::{
    store_paths, store_paths_with_wals, EseFile, EventLogFile, ESE_PATHS, EVENT_LOG_COUNT_LIMIT,
    EVENT_LOG_DIR, EVENT_LOG_SIZE_LIMIT, EVENT_LOG_WALK_BUDGET, PROFILE_ESE_PATH, STORE_KINDS,
    WAL_PATHS,
};

/// Why a master cannot be surveyed. Each message is one sentence part that callers prefix with
/// "cannot clone MASTER: ".
#[derive(Debug)]
pub enum SurveyError {
    /// The image, its partition map or a volume's metadata cannot be read.
    Image(ImageError),
    /// An NTFS partition does not open as a volume.
    Partition { index: u32, source: ImageError },
    /// A hive of the Windows volume cannot be read from the volume.
    ReadHive {
        hive: &'static str,
        source: ImageError,
    },
    /// A hive's bytes are not a sound hive.
    Hive {
        hive: &'static str,
        source: HiveError,
    },
    /// SECURITY has no `Policy\PolAcDmS`.
    NoMachineSid,
    /// SAM and SECURITY name different machine SIDs.
    Inconsistent {
        sam: MachineSid,
        security: MachineSid,
    },
    /// `--old-sid` names another SID than the Windows installation's.
    NotTheGivenSid {
        found: MachineSid,
        given: MachineSid,
    },
}

impl std::fmt::Display for SurveyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SurveyError::Image(e) => write!(f, "{e}"),
            SurveyError::Partition { index, source } => {
                write!(f, "NTFS partition {index}: {source}")
            }
            SurveyError::ReadHive { hive, source } => {
                write!(f, "cannot read the {hive} hive: {source}")
            }
            SurveyError::Hive { hive, source } => write!(f, "{hive} hive: {source}"),
            SurveyError::NoMachineSid => {
                write!(f, "the SECURITY hive has no machine SID (Policy\\PolAcDmS)")
            }
            SurveyError::Inconsistent { sam, security } => write!(
                f,
                "SAM says the machine SID is {sam} but SECURITY says {security}: the image is inconsistent"
            ),
            SurveyError::NotTheGivenSid { found, given } => write!(
                f,
                "the master's machine SID is {found}, not {given}; leave out --old-sid for a Windows master"
            ),
        }
    }
}

impl std::error::Error for SurveyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SurveyError::Image(e)
            | SurveyError::Partition { source: e, .. }
            | SurveyError::ReadHive { source: e, .. } => Some(e),
            SurveyError::Hive { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ImageError> for SurveyError {
    fn from(e: ImageError) -> Self {
        SurveyError::Image(e)
    }
}

// Largest hive read into memory: the one limit of the hive layer.
use crate::hive::HIVE_SIZE_LIMIT as HIVE_LIMIT;
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

/// One NTFS volume of the master.
pub struct NtfsPart {
    pub partition: Partition,
    pub volume: NtfsVolume,
    /// Holds `Windows\System32\config\SYSTEM`.
    pub is_windows: bool,
}

/// A task file under `Windows\System32\Tasks`: its Task Scheduler path (`\Folder\Name`) and
/// the master's bytes (for the TaskCache hash).
pub struct TaskFile {
    pub task_path: String,
    pub bytes: Vec<u8>,
}

pub struct WindowsSurvey {
    pub image: ImageFile,
    /// Every NTFS volume that opened; the Windows one (if any) first.
    pub volumes: Vec<NtfsPart>,
    pub old_sid: MachineSid,
    pub constraints: OrderConstraints,
    /// Disk ranges kept as in the master, with the file they belong to.
    pub excluded: Vec<(Range<u64>, String)>,
    /// Primary hive files of the Windows volume (not logs).
    pub hives: Vec<HiveLocation>,
    /// Scheduled tasks of the Windows volume.
    pub tasks: Vec<TaskFile>,
    /// Event logs: `*.evtx` in [`EVENT_LOG_DIR`] of the Windows volume, and every `*.evtx` that
    /// starts with "ElfFile\0" anywhere on every NTFS volume.
    pub event_logs: Vec<EventLogFile>,
    /// ESE databases ([`ESE_PATHS`], per-profile web caches) on every NTFS volume.
    pub ese_databases: Vec<EseFile>,
    /// SQLite write-ahead logs ([`WAL_PATHS`], any `*-wal` of the walk) that start with a WAL
    /// magic, on every NTFS volume.
    pub sqlite_wals: Vec<EseFile>,
}

impl WindowsSurvey {
    pub fn windows(&self) -> Option<&NtfsPart> {
        self.volumes.iter().find(|v| v.is_windows)
    }
}

/// The machine SID recorded in the Windows volume's SECURITY (and SAM, which must agree).
fn machine_sid_of(volume: &NtfsVolume) -> Result<MachineSid, SurveyError> {
    let hive_error = |hive| move |source| SurveyError::Hive { hive, source };
    let security = volume
        .read_file(r"Windows\System32\config\SECURITY", "", HIVE_LIMIT)
        .map_err(|source| SurveyError::ReadHive {
            hive: "SECURITY",
            source,
        })?;
    let security = Hive::parse(&security).map_err(hive_error("SECURITY"))?;
    let from_security = windows::machine_sid_from_security(&security)
        .map_err(hive_error("SECURITY"))?
        .ok_or(SurveyError::NoMachineSid)?;
    if let Ok(sam) = volume.read_file(r"Windows\System32\config\SAM", "", HIVE_LIMIT) {
        let sam = Hive::parse(&sam).map_err(hive_error("SAM"))?;
        if let Some(from_sam) = windows::machine_sid_from_sam(&sam).map_err(hive_error("SAM"))? {
            if from_sam.sid != from_security.sid {
                return Err(SurveyError::Inconsistent {
                    sam: from_sam.sid,
                    security: from_security.sid,
                });
            }
        }
    }
    Ok(from_security.sid)
}

/// Every file below `dir` (bounded), as paths relative to the volume.
fn files_below(volume: &NtfsVolume, dir: &str, out: &mut Vec<String>, budget: &mut usize) {
    let Ok(entries) = volume.list_dir(dir) else {
        return;
    };
    for e in entries {
        if *budget == 0 || e.name == "." || e.name == ".." {
            continue;
        }
        *budget -= 1;
        let path = format!(r"{dir}\{}", e.name);
        if e.is_directory {
            files_below(volume, &path, out, budget);
        } else {
            out.push(path);
        }
    }
}

/// The names on the volumes that may sort next to the machine SID's (SID-named hive keys and
/// entries of [`SID_NAMED_DIRS`] and the profiles' key folders), upper case, those that start
/// with `S-1-5-21-` only (the others never constrain the order).
fn constraint_names(volumes: &[NtfsPart], hives: &[HiveLocation]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("S-1-5-21-") && !names.contains(&upper) {
            names.push(upper);
        }
    };
    for part in volumes {
        let volume = &part.volume;
        if part.is_windows {
            for h in hives {
                let Ok(bytes) = volume.read_file(&h.path, "", HIVE_LIMIT) else {
                    continue;
                };
                let Ok(hive) = Hive::parse_unvalidated(&bytes) else {
                    continue;
                };
                for key in hive.walk().flatten() {
                    add(&key.key.name().to_string_lossy());
                }
            }
        }
        let mut dirs: Vec<String> = SID_NAMED_DIRS.iter().map(|s| s.to_string()).collect();
        for profile_root in ["Users", "Documents and Settings"] {
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
                    add(&e.name);
                }
            }
        }
    }
    names
}

/// Surveys the master. `Ok(None)`: a readable disk without a Windows installation, and no
/// `old_sid` given (which a new clone refuses: [`crate::clone::open_clone`]); an image whose
/// partition map cannot be read is an error. With `old_sid`, a disk without Windows (a data disk of the same machine) is
/// rewritten for that SID; with Windows, `old_sid` must be the installation's SID.
pub fn survey(
    master: &Path,
    with_constraints: bool,
    old_sid: Option<MachineSid>,
) -> Result<Option<WindowsSurvey>, SurveyError> {
    survey_with(
        master,
        with_constraints,
        old_sid,
        &mut SurveyFacts::default(),
    )
}

/// [`survey`], taking what `facts` (the master's survey cache) knows instead of computing it,
/// and adding to `facts` what it computes.
pub fn survey_with(
    master: &Path,
    with_constraints: bool,
    old_sid: Option<MachineSid>,
    facts: &mut SurveyFacts,
) -> Result<Option<WindowsSurvey>, SurveyError> {
    let image = ImageFile::open(master)?;
    // Neither a partitioned disk nor an NTFS volume: nothing sidfs can understand, so nothing
    // it may clone with a new SID (fail closed; `--keep-sid` copies it without a survey).
    let table = PartitionTable::read(&image)?;
    let mut volumes = Vec::new();
    for partition in table.partitions {
        if partition.file_system != FileSystemKind::Ntfs {
            continue;
        }
        let volume =
            NtfsVolume::open(&image, &partition).map_err(|source| SurveyError::Partition {
                index: partition.index,
                source,
            })?;
        let is_windows = volume.holds_windows()?;
        volumes.push(NtfsPart {
            partition,
            volume,
            is_windows,
        });
    }
    volumes.sort_by_key(|v| !v.is_windows);
    let found = match volumes.iter().find(|v| v.is_windows) {
        Some(w) => Some(machine_sid_of(&w.volume)?),
        None => None,
    };
    let old_sid = match (found, old_sid) {
        (Some(found), Some(given)) if found != given => {
            return Err(SurveyError::NotTheGivenSid { found, given })
        }
        (Some(f), _) => f,
        (None, Some(given)) => given,
        (None, None) => return Ok(None),
    };

    let mut excluded = Vec::new();
    for part in &volumes {
        for (name, _) in EXCLUDED_FILES {
            if part.volume.try_lookup(name)?.is_none() {
                continue;
            }
            let layout = part.volume.stream_layout(name, "")?;
            if let StreamLocation::NonResident { extents } = &layout.location {
                for e in extents {
                    if let Some(at) = e.image_offset {
                        excluded.push((at.0..at.0 + e.len, name.to_string()));
                    }
                }
            }
        }
    }

    let mut hives = Vec::new();
    let mut tasks = Vec::new();
    let mut event_logs = Vec::new();
    let mut constraints = OrderConstraints::new();
    if let Some(w) = volumes.iter().find(|v| v.is_windows) {
        let volume = &w.volume;
        hives = volume
            .locate_hives()?
            .into_iter()
            .filter(|h| h.kind == HiveFileKind::Primary)
            .collect();
        let mut files = Vec::new();
        let mut budget = 20_000;
        files_below(volume, r"Windows\System32\Tasks", &mut files, &mut budget);
        for f in files {
            if let Ok(bytes) = volume.read_file(&f, "", 16 << 20) {
                let task_path = f["Windows\\System32\\Tasks".len()..].to_string();
                tasks.push(TaskFile { task_path, bytes });
            }
        }
        event_logs = event_logs_of(volume);
    }
    let (ese_databases, more_logs, sqlite_wals) = stores_of(&image, &volumes, facts);
    event_logs.extend(more_logs);
    if with_constraints {
        let names = match facts.constraint_names.take() {
            Some(names) => names,
            None => constraint_names(&volumes, &hives),
        };
        for name in &names {
            constraints.add_name(name);
        }
        facts.constraint_names = Some(names);
    }
    Ok(Some(WindowsSurvey {
        image,
        volumes,
        old_sid,
        constraints,
        excluded,
        hives,
        tasks,
        event_logs,
        ese_databases,
        sqlite_wals,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prove that a disk sidfs cannot read is a typed image error naming the cause, not a string.
    #[test]
    fn unreadable_disk_is_an_image_error() {
        let dir = std::env::temp_dir().join(format!("sidfs-survey-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("zeros.img");
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let err = survey(&path, false, None).err().expect("no partition map");
        assert!(matches!(err, SurveyError::Image(_)), "{err:?}");
        assert!(!err.to_string().is_empty());
        let gone = survey(&dir.join("missing.img"), false, None)
            .err()
            .expect("no file");
        assert!(
            matches!(gone, SurveyError::Image(ImageError::Open { .. })),
            "{gone:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn messages_keep_their_wording() {
        let a: MachineSid = "S-1-5-21-1-2-3".parse().unwrap();
        let b: MachineSid = "S-1-5-21-4-5-6".parse().unwrap();
        let e = SurveyError::NotTheGivenSid { found: a, given: b };
        assert_eq!(
            e.to_string(),
            "the master's machine SID is S-1-5-21-1-2-3, not S-1-5-21-4-5-6; leave out --old-sid for a Windows master"
        );
        assert_eq!(
            SurveyError::NoMachineSid.to_string(),
            r"the SECURITY hive has no machine SID (Policy\PolAcDmS)"
        );
    }
}
