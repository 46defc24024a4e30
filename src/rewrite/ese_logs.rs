//! ESE transaction logs (`*.log`) and reserve logs (`*.jrs`) beside the ESE databases of
//! `super::survey::ESE_PATHS`: what a clone does with one that holds the old SID
//! (docs/SEMANTICS.md, "ESE logs and compressed values").
//!
//! Facts [microsoft/Extensible-Storage-Engine, `dev/ese/src/inc/logstream.hxx`, `logread`]: a log
//! file is a header followed by 4096-byte segments, each starting with a segment header whose
//! first field is a checksum of the same kind as a database page's (`XECHECKSUM`) and whose
//! second is the segment's log position; the log reader classifies a segment whose checksum does
//! not match as corrupt (`eLCSegmentCorrupt`, `eLCCorruptHeader`), and every start of an ESE
//! instance with logging (`ErrLGSoftStart`) reads the logs from the checkpoint on. A byte
//! replacement inside a log therefore leaves a corrupt segment that ESE meets at the service's
//! next start. sidfs does not rewrite log segments, so a log that holds the old SID is refused;
//! the way out, for a database shut down cleanly (which the ESE transform already requires), is
//! to delete its log, reserve-log and checkpoint files in the master: ESE starts new ones.

#![forbid(unsafe_code)]

use super::error::RewriteError;
use super::SidMapping;

/// Log files larger than this are not read whole (real ones are 64 KiB to 5 MiB).
const LOG_LIMIT: u64 = 64 << 20;

/// What the user does about a log that holds the machine SID.
pub const ADVICE: &str = "stop the service that uses the database (or shut Windows down cleanly) and delete the database's log files (*.log, *.jrs, *.chk in that folder) in the master before capturing it; ESE creates new ones at the next start";

fn is_log_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".log") || lower.ends_with(".jrs")
}

/// The ESE log and reserve-log files in the folders of the survey's ESE databases, on each
/// volume: (volume index, path).
pub fn ese_logs(survey: &super::survey::WindowsSurvey) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for db in &survey.ese_databases {
        let Some(part) = survey.volumes.get(db.volume) else {
            continue;
        };
        out.extend(
            logs_beside(&part.volume, &db.path)
                .into_iter()
                .map(|p| (db.volume, p)),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// The `*.log`/`*.jrs` files in the folder of `db_path` (and its `Logs` subfolder, where Windows
/// Update keeps them).
pub fn logs_beside(volume: &crate::image::NtfsVolume, db_path: &str) -> Vec<String> {
    let Some((dir, _)) = db_path.rsplit_once('\\') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for d in [dir.to_string(), format!(r"{dir}\Logs")] {
        let Ok(entries) = volume.list_dir(&d) else {
            continue;
        };
        for e in entries {
            if !e.is_directory && is_log_name(&e.name) {
                out.push(format!(r"{d}\{}", e.name));
            }
        }
    }
    out
}

/// The first log file (path) that holds the old SID, or an error naming a log that cannot be
/// read.
pub fn first_log_with_sid(
    volume: &crate::image::NtfsVolume,
    logs: &[String],
    map: &SidMapping,
) -> Result<Option<String>, String> {
    for path in logs {
        let bytes = volume
            .read_file(path, "", LOG_LIMIT)
            .map_err(|e| format!("the ESE log {path} cannot be read ({e})"))?;
        if !map.find_all(&bytes, true).is_empty() {
            return Ok(Some(path.clone()));
        }
    }
    Ok(None)
}

/// The refusal for mount (one line), or `Ok` when no ESE log holds the old SID.
pub fn check_ese_logs(
    survey: &super::survey::WindowsSurvey,
    map: &SidMapping,
) -> Result<(), RewriteError> {
    for (volume, path) in ese_logs(survey) {
        let Some(part) = survey.volumes.get(volume) else {
            continue;
        };
        check_ese_log(part, &path, map)?;
    }
    Ok(())
}

/// Mount's check of one ESE log of volume `part`: refused when it holds the old SID or cannot
/// be read.
fn check_ese_log(
    part: &super::survey::NtfsPart,
    path: &str,
    map: &SidMapping,
) -> Result<(), RewriteError> {
    let found = first_log_with_sid(&part.volume, &[path.to_string()], map)
        .map_err(|reason| RewriteError::EseLogUnreadable { reason })?;
    match found {
        Some(path) => Err(RewriteError::EseLogHoldsSid {
            path,
            partition: part.partition.index,
        }),
        None => Ok(()),
    }
}

/// The ESE logs beside the survey's databases, each with what the clone does ([`check_ese_log`],
/// mount's check), for `sidfs inspect --old-sid`.
pub fn ese_log_decisions(
    survey: &super::survey::WindowsSurvey,
    map: &SidMapping,
) -> Vec<super::stage_builder::StoreDecision> {
    let mut out = Vec::new();
    for (volume, path) in ese_logs(survey) {
        let Some(part) = survey.volumes.get(volume) else {
            continue;
        };
        let bytes = part
            .volume
            .read_file(&path, "", LOG_LIMIT)
            .unwrap_or_default();
        out.push(super::stage_builder::StoreDecision {
            kind: "ese-log",
            partition: part.partition.index,
            size: bytes.len() as u64,
            sid_occurrences: map.find_all(&bytes, true).len(),
            outcome: check_ese_log(part, &path, map).map(|()| false),
            path,
        });
    }
    out
}
