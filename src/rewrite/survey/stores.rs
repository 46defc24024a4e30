//! The stores with checksums a survey looks for (event logs, ESE databases, SQLite
//! write-ahead logs): where Windows keeps them, the bounded walk for more, and the check of each
//! candidate's signature.

use super::NtfsPart;
use crate::image::{ImageFile, NtfsVolume, StreamLayout};
use crate::rewrite::survey_cache::{SurveyFacts, VolumeStores};

/// Where Windows (Vista and later) keeps its event logs: `%SystemRoot%\System32\winevt\Logs`
/// [libevtx documentation, "Windows XML Event Log (EVTX)"].
pub const EVENT_LOG_DIR: &str = r"Windows\System32\winevt\Logs";
/// At most this many event logs are rewritten as structures (a Windows 10 installation has a few
/// hundred); any beyond it get the generic rewrite and a warning.
pub const EVENT_LOG_COUNT_LIMIT: usize = 4096;
/// Largest event log rewritten as a structure (read into memory once, on first touch). Larger
/// logs get the generic rewrite, which leaves their changed chunks' CRCs stale; a warning says so.
pub const EVENT_LOG_SIZE_LIMIT: u64 = 1 << 30;

/// One `*.evtx` file of the Windows volume.
pub struct EventLogFile {
    /// Path on the volume, with the name as listed.
    pub path: String,
    pub layout: StreamLayout,
}

/// Where Windows keeps its ESE (JET Blue) databases, relative to a volume [issue 11]: System
/// Resource Usage Monitor, Windows Search, BITS, Windows Update, User Access Logging (servers).
/// Each profile's `AppData\Local\Microsoft\Windows\WebCache\WebCacheV01.dat` is added per profile.
pub const ESE_PATHS: [&str; 5] = [
    r"Windows\System32\sru\SRUDB.dat",
    r"ProgramData\Microsoft\Search\Data\Applications\Windows\Windows.edb",
    r"ProgramData\Microsoft\Network\Downloader\qmgr.db",
    r"Windows\SoftwareDistribution\DataStore\DataStore.edb",
    r"Windows\System32\LogFiles\Sum\Current.mdb",
];
/// Per-profile ESE database (Internet Explorer / Edge legacy web cache).
pub const PROFILE_ESE_PATH: &str = r"AppData\Local\Microsoft\Windows\WebCache\WebCacheV01.dat";
/// At most this many directory entries of each volume are listed looking for `*.evtx` files
/// outside [`EVENT_LOG_DIR`]; a volume with more is searched that far, and a warning says so.
pub const EVENT_LOG_WALK_BUDGET: usize = 200_000;

/// Where Windows keeps SQLite write-ahead logs next to their databases, relative to a volume
/// [issue 11]: the AppX state repository and the Windows 11 search index. Any other `*-wal` met
/// by the bounded walk for event logs is checked too.
pub const WAL_PATHS: [&str; 3] = [
    r"ProgramData\Microsoft\Windows\AppRepository\StateRepository-Machine.srd-wal",
    r"ProgramData\Microsoft\Windows\AppRepository\StateRepository-Deployment.srd-wal",
    r"ProgramData\Microsoft\Search\Data\Applications\Windows\Windows.db-wal",
];

/// Every kind of store with checksums a survey finds, as inspect names it (`StoreReport::kind`,
/// the `--json` "kind"), each with the words by which docs/SEMANTICS.md's store table ("Stores
/// with checksums") says what the clone does with it. A new kind needs a row there: the unit
/// test `the_store_table_names_every_store_kind` fails until it has one.
pub const STORE_KINDS: [(&str, &str); 6] = [
    ("ese", "ESE transform"),
    ("ese-log", "ESE transaction log"),
    ("evtx", "EVTX transform"),
    ("sqlite-wal", "WAL transform"),
    ("wmi", "WMI transform"),
    ("efs", "`$EFS`"),
];

/// One ESE database (or SQLite write-ahead log) found by path and signature.
pub struct EseFile {
    /// Path on its volume, with the name as listed.
    pub path: String,
    /// Index of its volume in [`super::WindowsSurvey::volumes`].
    pub volume: usize,
    pub layout: StreamLayout,
}

/// The `*.evtx` files directly in [`EVENT_LOG_DIR`] (bounded by [`EVENT_LOG_COUNT_LIMIT`] and
/// [`EVENT_LOG_SIZE_LIMIT`]); those skipped are logged.
pub(super) fn event_logs_of(volume: &NtfsVolume) -> Vec<EventLogFile> {
    let Ok(entries) = volume.list_dir(EVENT_LOG_DIR) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        if e.is_directory || !e.name.to_ascii_lowercase().ends_with(".evtx") {
            continue;
        }
        if out.len() >= EVENT_LOG_COUNT_LIMIT {
            log::warn!(
                "more than {EVENT_LOG_COUNT_LIMIT} event logs: the rest get the generic rewrite"
            );
            break;
        }
        let path = format!(r"{EVENT_LOG_DIR}\{}", e.name);
        match volume.stream_layout(&path, "") {
            Ok(layout) if layout.size > EVENT_LOG_SIZE_LIMIT => log::warn!(
                "{path}: {} bytes, over {EVENT_LOG_SIZE_LIMIT}: generic rewrite, CRCs of changed chunks go stale",
                layout.size
            ),
            Ok(layout) => out.push(EventLogFile { path, layout }),
            Err(err) => log::warn!("{path}: {err}"),
        }
    }
    out
}

/// The first `n` bytes of a plain stream (read from the image), if it has them.
fn head_of(image: &ImageFile, layout: &StreamLayout, n: usize) -> Option<Vec<u8>> {
    if !layout.is_plain() || layout.size < n as u64 {
        return None;
    }
    let at = layout.image_offset_of(0)?;
    let mut buf = vec![0u8; n];
    image
        .read_exact_at(at, &mut buf, "a store's signature")
        .ok()?;
    Some(buf)
}

/// Directories deeper than this below the root are not searched for event logs (Windows paths
/// are at most 32,767 characters; a hostile image's directory cycle must not recurse without end).
const EVENT_LOG_WALK_DEPTH: usize = 64;

/// Every `*.evtx` on the volume, breadth first, bounded by `budget` directory entries and
/// [`EVENT_LOG_WALK_DEPTH`] levels; an explicit queue, so a deep or cyclic tree cannot exhaust the
/// stack.
fn evtx_below(
    volume: &NtfsVolume,
    out: &mut Vec<String>,
    wals: &mut Vec<String>,
    budget: &mut usize,
) {
    let mut queue = std::collections::VecDeque::from([(String::new(), 0usize)]);
    while let Some((dir, depth)) = queue.pop_front() {
        let Ok(entries) = volume.list_dir(&dir) else {
            continue;
        };
        for e in entries {
            if *budget == 0 {
                return;
            }
            if e.name == "." || e.name == ".." {
                continue;
            }
            // NTFS metadata files ($Extend, ...); the recycle bin is searched.
            if dir.is_empty()
                && e.name.starts_with('$')
                && !e.name.eq_ignore_ascii_case("$Recycle.Bin")
            {
                continue;
            }
            *budget -= 1;
            let path = if dir.is_empty() {
                e.name.clone()
            } else {
                format!(r"{dir}\{}", e.name)
            };
            if e.is_directory {
                if depth < EVENT_LOG_WALK_DEPTH {
                    queue.push_back((path, depth + 1));
                }
            } else if e.name.to_ascii_lowercase().ends_with(".evtx") {
                out.push(path);
            } else if e.name.to_ascii_lowercase().ends_with("-wal") {
                wals.push(path);
            }
        }
    }
}

/// Candidate stores with checksums of one volume, by path (issue 11): the ESE database paths that
/// exist ([`ESE_PATHS`], each profile's [`PROFILE_ESE_PATH`]), and every `*.evtx` outside the
/// Windows volume's [`EVENT_LOG_DIR`] (whose logs [`event_logs_of`] lists), found by a walk of at
/// most [`EVENT_LOG_WALK_BUDGET`] entries. Their signatures are checked by the caller.
pub fn store_paths(volume: &NtfsVolume, is_windows: bool) -> (Vec<String>, Vec<String>) {
    let (ese, logs, _) = store_paths_with_wals(volume, is_windows);
    (ese, logs)
}

/// [`store_paths`] and the SQLite write-ahead log candidates: the [`WAL_PATHS`] that exist and
/// every `*-wal` of the same walk (deduplicated, case-insensitively).
pub fn store_paths_with_wals(
    volume: &NtfsVolume,
    is_windows: bool,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut candidates: Vec<String> = ESE_PATHS.iter().map(|p| p.to_string()).collect();
    if let Ok(entries) = volume.list_dir("Users") {
        for e in entries
            .iter()
            .filter(|e| e.is_directory && e.name != "." && e.name != "..")
        {
            candidates.push(format!(r"Users\{}\{PROFILE_ESE_PATH}", e.name));
        }
    }
    let ese = candidates
        .into_iter()
        .filter(|p| matches!(volume.try_lookup(p), Ok(Some(_))))
        .collect();
    let mut found = Vec::new();
    let mut wals: Vec<String> = WAL_PATHS
        .iter()
        .filter(|p| matches!(volume.try_lookup(p), Ok(Some(_))))
        .map(|p| p.to_string())
        .collect();
    let mut walked = Vec::new();
    let mut budget = EVENT_LOG_WALK_BUDGET;
    evtx_below(volume, &mut found, &mut walked, &mut budget);
    for w in walked {
        if !wals.iter().any(|k| k.eq_ignore_ascii_case(&w)) {
            wals.push(w);
        }
    }
    if budget == 0 {
        log::warn!(
            "the volume at {} has more than {EVENT_LOG_WALK_BUDGET} directory entries; event logs beyond them get the generic rewrite",
            volume.start()
        );
    }
    let prefix = format!("{EVENT_LOG_DIR}\\").to_ascii_lowercase();
    found.retain(|path| {
        !(is_windows
            && path.to_ascii_lowercase().starts_with(&prefix)
            && !path[prefix.len()..].contains('\\'))
    });
    (ese, found, wals)
}

/// The candidate store `path` of volume `index` when its stream is plain and its first `n` bytes
/// pass `signed`; otherwise `None`, logged (`unsigned` says what it lacks).
fn signed_store(
    image: &ImageFile,
    volume: &NtfsVolume,
    index: usize,
    path: String,
    n: usize,
    signed: impl Fn(&[u8]) -> bool,
    unsigned: &str,
) -> Option<EseFile> {
    match volume.stream_layout(&path, "") {
        Ok(layout) if layout.is_plain() => {
            let head = head_of(image, &layout, n).unwrap_or_default();
            if signed(&head) {
                return Some(EseFile {
                    path,
                    volume: index,
                    layout,
                });
            }
            log::info!("{path}: {unsigned}");
        }
        Ok(_) => log::warn!("{path}: stored compressed or encrypted; its bytes are not searched"),
        Err(err) => log::warn!("{path}: {err}"),
    }
    None
}

/// The stores with checksums found on every volume ([`store_paths`]): ESE databases that carry
/// the ESE signature, and event logs that start with "ElfFile\0".
pub(super) fn stores_of(
    image: &ImageFile,
    volumes: &[NtfsPart],
    facts: &mut SurveyFacts,
) -> (Vec<EseFile>, Vec<EventLogFile>, Vec<EseFile>) {
    // The walk for candidates is most of the survey's time on a volume with many files: its
    // paths come from the cache when it has them for as many volumes (their signatures and
    // layouts are checked again below).
    let cached = facts
        .stores
        .take()
        .filter(|s| s.len() == volumes.len())
        .unwrap_or_else(|| {
            volumes
                .iter()
                .map(|part| {
                    let (ese, logs, wals) = store_paths_with_wals(&part.volume, part.is_windows);
                    VolumeStores { ese, logs, wals }
                })
                .collect()
        });
    facts.stores = Some(cached.clone());
    let mut ese = Vec::new();
    let mut logs = Vec::new();
    let mut wals = Vec::new();
    for ((index, part), paths) in volumes.iter().enumerate().zip(cached) {
        let volume = &part.volume;
        let VolumeStores {
            ese: ese_paths,
            logs: log_paths,
            wals: wal_paths,
        } = paths;
        wals.extend(wal_paths.into_iter().filter_map(|path| {
            signed_store(
                image,
                volume,
                index,
                path,
                4,
                crate::rewrite::sqlite_wal::has_magic,
                "no SQLite WAL magic, not rewritten as a log",
            )
        }));
        ese.extend(ese_paths.into_iter().filter_map(|path| {
            signed_store(
                image,
                volume,
                index,
                path,
                8,
                crate::rewrite::ese::EseHeader::has_signature,
                "no ESE signature, not rewritten as a database",
            )
        }));
        for path in log_paths {
            match volume.stream_layout(&path, "") {
                Ok(layout) if layout.size > EVENT_LOG_SIZE_LIMIT => log::warn!(
                    "{path}: {} bytes, over {EVENT_LOG_SIZE_LIMIT}: generic rewrite, CRCs of changed chunks go stale",
                    layout.size
                ),
                Ok(layout)
                    if head_of(image, &layout, 8).as_deref()
                        == Some(&crate::rewrite::evtx::FILE_SIGNATURE[..]) =>
                {
                    logs.push(EventLogFile { path, layout })
                }
                Ok(_) => log::info!("{path}: not an event log (no ElfFile signature)"),
                Err(err) => log::warn!("{path}: {err}"),
            }
        }
    }
    (ese, logs, wals)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the store table of docs/SEMANTICS.md ("Stores with checksums").
    fn store_table() -> Vec<&'static str> {
        let doc = include_str!("../../../docs/SEMANTICS.md");
        let section = doc
            .split("\n## Stores with checksums")
            .nth(1)
            .expect("docs/SEMANTICS.md has a section \"Stores with checksums\"");
        section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .collect()
    }

    /// Prove that docs/SEMANTICS.md's store table has a row for every kind of store inspect
    /// reports and names every path the survey looks at, so that a new store kind or path without
    /// a row in the table fails here.
    #[test]
    fn the_store_table_names_every_store_kind() {
        let rows = store_table();
        assert!(rows.len() >= STORE_KINDS.len(), "{rows:?}");
        for (kind, words) in STORE_KINDS {
            assert!(
                rows.iter().any(|r| r.contains(words)),
                "docs/SEMANTICS.md's store table has no row for store kind {kind:?} (one saying {words:?})"
            );
        }
        let paths = ESE_PATHS
            .iter()
            .chain(&WAL_PATHS)
            .chain([&PROFILE_ESE_PATH, &EVENT_LOG_DIR]);
        for path in paths {
            // A row names a path in full, or by its file name after a sibling's full path.
            let name = path.rsplit('\\').next().unwrap_or(path);
            assert!(
                rows.iter().any(|r| r.contains(path) || r.contains(name)),
                "docs/SEMANTICS.md's store table does not name {path}"
            );
        }
    }
}
