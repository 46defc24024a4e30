//! The stores with checksums of a Windows installation (ESE databases and their logs, event
//! logs, SQLite write-ahead logs, the WMI repository, `$EFS`): what the clone does with each, and
//! the refusals `sidfs mount` would give.

use super::Findings;
use crate::image::NtfsVolume;
use crate::inspect::finding::RefusalReason;
use crate::inspect::report::StoreReport;
use crate::sid::MachineSid;

/// The stores with checksums of the Windows volume (`crate::rewrite::survey::store_paths`), each
/// with its SID occurrences and what the clone does; an ESE database the clone cannot rewrite is
/// a refusal, as `sidfs mount` refuses it.
pub(super) fn store_reports(
    volume: &NtfsVolume,
    machine_sid: Option<MachineSid>,
    f: &mut Findings<'_>,
) -> Vec<StoreReport> {
    use crate::rewrite::ese::{probe_mapping, rewrite_ese, EseError, EseHeader};
    let map = machine_sid.and_then(probe_mapping);
    let (ese, logs, wals) = crate::rewrite::survey::store_paths_with_wals(volume, true);
    let mut out = Vec::new();
    let limit = crate::rewrite::stream::STRUCTURE_LIMIT;
    for (path, kind) in ese
        .iter()
        .map(|p| (p, "ese"))
        .chain(logs.iter().map(|p| (p, "evtx")))
        .chain(wals.iter().map(|p| (p, "sqlite-wal")))
    {
        let bytes = match volume.read_file(path, "", limit) {
            Ok(b) => b,
            Err(e) if kind == "ese" => {
                f.refuse(
                    RefusalReason::StoreNotRewritable,
                    format!("The ESE database {path} cannot be read whole ({e}): delete it from the master before capturing it (docs/SEMANTICS.md, \"Stores with checksums\")."),
                );
                continue;
            }
            Err(_) => continue,
        };
        let signed = match kind {
            "ese" => EseHeader::has_signature(&bytes),
            "sqlite-wal" => bytes.get(..4).is_some_and(|m| {
                let m = u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
                m == crate::rewrite::sqlite_wal::MAGIC_LE
                    || m == crate::rewrite::sqlite_wal::MAGIC_BE
            }),
            _ => bytes.starts_with(crate::rewrite::evtx::FILE_SIGNATURE),
        };
        if !signed {
            continue;
        }
        let sids = map.as_ref().map_or(0, |m| m.find_all(&bytes, true).len());
        let clone = match (kind, &map) {
            ("ese", Some(map)) => match rewrite_ese(&bytes, map) {
                Ok(_) if sids == 0 => "kept as it is (no machine SID)".to_string(),
                Ok(_) => "rewritten with its page checksums".to_string(),
                Err(
                    e @ (EseError::CompressedValueSid { .. }
                    | EseError::UnreadableValue { .. }
                    | EseError::ValueStructure { .. }),
                ) => {
                    f.refuse(
                        RefusalReason::StoreNotRewritable,
                        format!("The ESE database {path} cannot be cloned faithfully: {e}; delete it from the master before capturing it (docs/SEMANTICS.md, \"ESE logs and compressed values\")."),
                    );
                    format!("refused: {e}")
                }
                Err(e) => {
                    f.refuse(
                        RefusalReason::StoreNotRewritable,
                        format!("The ESE database {path} holds the machine SID but cannot be rewritten with valid page checksums ({e}): delete it from the master before capturing it (docs/SEMANTICS.md, \"Stores with checksums\")."),
                    );
                    format!("refused: {e}")
                }
            },
            _ if sids == 0 => "kept as it is (no machine SID)".to_string(),
            ("sqlite-wal", Some(map)) => match crate::rewrite::sqlite_wal::rewrite_wal(&bytes, map)
            {
                Ok(_) => "rewritten with its frame checksums".to_string(),
                Err(e) => {
                    f.refuse(
                        RefusalReason::StoreNotRewritable,
                        format!("The SQLite write-ahead log {path} holds the machine SID but cannot be rewritten with valid frame checksums ({e}): checkpoint it in the master (PRAGMA wal_checkpoint(TRUNCATE)) or delete it before capturing (docs/SEMANTICS.md, \"Stores with checksums\")."),
                    );
                    format!("refused: {e}")
                }
            },
            _ => "rewritten with its CRCs".to_string(),
        };
        out.push(StoreReport {
            path: path.clone(),
            kind: kind.to_string(),
            size: bytes.len() as u64,
            sid_occurrences: sids,
            clone,
        });
    }
    out.extend(wmi_store(volume, map.as_ref(), f));
    out.extend(efs_store(volume, map.as_ref(), f));
    out.extend(ese_log_stores(volume, &ese, map.as_ref(), f));
    out
}

/// ESE transaction logs beside the ESE databases (`crate::rewrite::ese_logs`): one that holds
/// the machine SID is refused, as `sidfs mount` refuses it.
fn ese_log_stores(
    volume: &NtfsVolume,
    databases: &[String],
    map: Option<&crate::rewrite::SidMapping>,
    f: &mut Findings<'_>,
) -> Vec<StoreReport> {
    use crate::rewrite::ese_logs::{logs_beside, ADVICE};
    let mut logs: Vec<String> = databases
        .iter()
        .flat_map(|d| logs_beside(volume, d))
        .collect();
    logs.sort();
    logs.dedup();
    let mut out = Vec::new();
    for path in logs {
        let Ok(bytes) = volume.read_file(&path, "", crate::rewrite::stream::STRUCTURE_LIMIT) else {
            continue;
        };
        let sids = map.map_or(0, |m| m.find_all(&bytes, true).len());
        let clone = if sids == 0 {
            "kept as it is (no machine SID)".to_string()
        } else {
            f.refuse(
                RefusalReason::StoreNotRewritable,
                format!("The ESE transaction log {path} holds the machine SID, and a byte replacement would break its segment checksums: {ADVICE} (docs/SEMANTICS.md, \"ESE logs and compressed values\")."),
            );
            "refused: segment checksums".to_string()
        };
        out.push(StoreReport {
            path,
            kind: "ese-log".to_string(),
            size: bytes.len() as u64,
            sid_occurrences: sids,
            clone,
        });
    }
    out
}

/// An encrypted file whose `$EFS` holds the machine SID (`crate::rewrite::efs`): refused, as
/// `sidfs mount` refuses it.
fn efs_store(
    volume: &NtfsVolume,
    map: Option<&crate::rewrite::SidMapping>,
    f: &mut Findings<'_>,
) -> Option<StoreReport> {
    use crate::rewrite::efs::{first_efs_with_sid, ADVICE};
    let map = map?;
    match first_efs_with_sid(volume, map, crate::inspect::SPECIAL_FILE_SCAN_LIMIT) {
        Ok(None) => None,
        Ok(Some((path, sids))) => {
            f.refuse(
                RefusalReason::StoreNotRewritable,
                format!("The EFS metadata ($EFS) of {path} holds the machine SID next to hashes sidfs cannot recompute, and its key is protected under that SID: {ADVICE} (docs/SEMANTICS.md, \"EFS\")."),
            );
            Some(StoreReport {
                path,
                kind: "efs".to_string(),
                size: 0,
                sid_occurrences: sids,
                clone: "refused: $EFS holds the machine SID".to_string(),
            })
        }
        Err(e) => {
            f.refuse(
                RefusalReason::StoreNotRewritable,
                format!("The EFS-encrypted files cannot be checked for the machine SID ({e}): decrypt them in the master before capturing it (cipher /d) (docs/SEMANTICS.md, \"EFS\")."),
            );
            None
        }
    }
}

/// The WMI repository (`crate::rewrite::wmi_structure`), as `sidfs mount` treats it: rewritten
/// with its record and page checksums, or refused.
fn wmi_store(
    volume: &NtfsVolume,
    map: Option<&crate::rewrite::SidMapping>,
    f: &mut Findings<'_>,
) -> Option<StoreReport> {
    use crate::rewrite::wmi_structure::{Repository, ADVICE, OBJECTS, WMI_DIR};
    let path = format!(r"{WMI_DIR}\{OBJECTS}");
    let repo = match Repository::read(volume) {
        Ok(r) => r?,
        Err(e) => {
            f.refuse(
                RefusalReason::StoreNotRewritable,
                format!("The WMI repository {WMI_DIR} cannot be read whole ({e}): {ADVICE} (docs/SEMANTICS.md, \"WMI repository\")."),
            );
            return None;
        }
    };
    let sids = map.map_or(0, |m| m.find_all(&repo.objects.bytes, true).len());
    let clone = match map {
        _ if sids == 0 => "kept as it is (no machine SID)".to_string(),
        Some(map) => match repo.rewrite(map) {
            Ok(_) => "rewritten with its record and page checksums".to_string(),
            Err(e) => {
                f.refuse(
                    RefusalReason::StoreNotRewritable,
                    format!("The WMI repository {WMI_DIR} holds the machine SID but cannot be rewritten with valid checksums ({e}): {ADVICE} (docs/SEMANTICS.md, \"WMI repository\")."),
                );
                format!("refused: {e}")
            }
        },
        None => "kept as it is (no machine SID)".to_string(),
    };
    Some(StoreReport {
        path,
        kind: "wmi".to_string(),
        size: repo.objects.bytes.len() as u64,
        sid_occurrences: sids,
        clone,
    })
}
