//! The Windows installation on one NTFS volume: volume state, hives, machine SID, domain,
//! accounts, profiles, special files. Anything that cannot be read becomes a refusal with reason
//! `unreadable`; the rest of the report is still filled in.
//!
//! This file walks the installation and judges its hives and stores; [`volume`] judges the
//! NTFS volume and its special files; [`profiles`] places each user profile and its hives.

mod profiles;
mod volume;

use profiles::profile_report;
#[cfg(test)]
pub(in crate::inspect) use profiles::profile_volume_path;
use volume::{special_files, volume_state};

use super::finding::{Refusal, RefusalReason, Warning, WarningReason};
use super::hive_file::{self, HiveCheck};
use super::report::{
    AccountReport, DomainReport, HiveLogReport, HiveReport, MachineSidSources, ProfileReport,
    SidSource, StoreReport, WindowsReport,
};
use crate::hive::windows::{
    self, DomainControllerEvidence, MachineSidRecord, POL_AC_DM_S, SAM_ACCOUNT,
};
use crate::hive::Hive;
use crate::image::{HiveFileKind, HiveLocation, HiveRole, NtfsVolume, Partition};
use crate::sid::MachineSid;

/// Collects refusals and warnings while the installation is inspected.
struct Findings<'a> {
    refusals: &'a mut Vec<Refusal>,
    warnings: &'a mut Vec<Warning>,
}

impl Findings<'_> {
    fn refuse(&mut self, reason: RefusalReason, message: String) {
        self.refusals.push(Refusal::new(reason, message));
    }

    fn warn(&mut self, reason: WarningReason, message: String) {
        self.warnings.push(Warning::new(reason, message));
    }

    fn unreadable(&mut self, what: &str, error: impl std::fmt::Display) {
        self.refuse(
            RefusalReason::Unreadable,
            format!(
                "{what} cannot be read ({error}): check the master with chkdsk in Windows and \
                 capture it again."
            ),
        );
    }
}

/// Facts taken from SYSTEM.
#[derive(Default)]
struct SystemFacts {
    computer_name: Option<String>,
    hostname: Option<String>,
    product_type: Option<String>,
}

/// Facts taken from SOFTWARE.
#[derive(Default)]
struct SoftwareFacts {
    product_name: Option<String>,
    build: Option<String>,
    display_version: Option<String>,
    profiles: Vec<windows::UserProfile>,
}

/// Facts taken from SECURITY.
#[derive(Default)]
struct SecurityFacts {
    machine_sid: Option<MachineSidRecord>,
    account_domain_name: Option<String>,
    primary_domain: Option<windows::PrimaryDomain>,
}

/// Facts taken from SAM.
#[derive(Default)]
struct SamFacts {
    machine_sid: Option<MachineSidRecord>,
    accounts: Vec<windows::LocalAccount>,
}

/// Inspects the Windows installation on `volume`.
pub(super) fn inspect_installation(
    partition: &Partition,
    volume: &NtfsVolume,
    refusals: &mut Vec<Refusal>,
    warnings: &mut Vec<Warning>,
) -> WindowsReport {
    let mut findings = Findings { refusals, warnings };
    let volume_report = volume_state(partition, volume, &mut findings);

    let locations = match volume.locate_hives() {
        Ok(l) => l,
        Err(e) => {
            findings.unreadable("The list of registry hives on the Windows volume", e);
            Vec::new()
        }
    };
    let mut hives = Vec::new();
    let mut system = SystemFacts::default();
    let mut software = SoftwareFacts::default();
    let mut security = SecurityFacts::default();
    let mut sam = SamFacts::default();
    for location in locations.iter().filter(|l| l.kind == HiveFileKind::Primary) {
        let logs: Vec<HiveLogReport> = locations
            .iter()
            .filter(|l| {
                matches!(l.kind, HiveFileKind::Log(suffix)
                    if l.path.eq_ignore_ascii_case(&format!("{}{suffix}", location.path)))
            })
            .map(|l| HiveLogReport {
                path: l.path.clone(),
                size: l.size,
            })
            .collect();
        if location.layout.compressed || location.layout.encrypted {
            findings.refuse(
                RefusalReason::HiveNotPatchable,
                format!(
                    "The hive {} is stored {} by NTFS, so its SIDs cannot be patched in place: \
                     uncompress or decrypt it in the master (compact /u, cipher /d) and capture \
                     it again.",
                    location.path,
                    if location.layout.encrypted {
                        "encrypted"
                    } else {
                        "compressed"
                    }
                ),
            );
        }
        let check = hive_file::read_and_check(volume, location);
        judge_hive(location, &check, &logs, &mut findings);
        if check.error.is_none() || check.dirty {
            extract_facts(
                location,
                &check,
                &mut system,
                &mut software,
                &mut security,
                &mut sam,
                &mut findings,
            );
        }
        hives.push(HiveReport {
            role: role_name(&location.role).to_string(),
            path: location.path.clone(),
            profile: location.profile.clone(),
            size: location.size,
            state: if check.dirty {
                "dirty"
            } else if check.error.is_some() {
                "unreadable"
            } else {
                "clean"
            }
            .to_string(),
            primary_sequence: check.primary_sequence,
            secondary_sequence: check.secondary_sequence,
            logs,
            error: check.error.as_ref().map(ToString::to_string),
        });
    }
    for (role, name) in [
        (HiveRole::System, "SYSTEM"),
        (HiveRole::Software, "SOFTWARE"),
        (HiveRole::Sam, "SAM"),
        (HiveRole::Security, "SECURITY"),
    ] {
        let present = locations
            .iter()
            .any(|l| l.role == role && l.kind == HiveFileKind::Primary);
        if !present && !locations.is_empty() {
            findings.refuse(
                RefusalReason::Unreadable,
                format!(
                    "The {name} hive is missing from Windows\\System32\\config, so the \
                     installation is incomplete: capture the master again from a complete \
                     Windows system."
                ),
            );
        }
    }

    let sources = MachineSidSources {
        security: security.machine_sid.map(|r| SidSource {
            sid: r.sid.to_string(),
            hive: hive_path(&locations, HiveRole::Security),
            key: format!("{POL_AC_DM_S} (default)"),
            hive_offset: r.file_offset.0,
        }),
        sam: sam.machine_sid.map(|r| SidSource {
            sid: r.sid.to_string(),
            hive: hive_path(&locations, HiveRole::Sam),
            key: format!("{SAM_ACCOUNT} V"),
            hive_offset: r.file_offset.0,
        }),
        agree: matches!((security.machine_sid, sam.machine_sid), (Some(a), Some(b)) if a.sid == b.sid),
    };
    let primary_sid = security.primary_domain.as_ref().and_then(|d| d.sid.clone());
    let evidence = DomainControllerEvidence {
        account_is_primary_domain: security.machine_sid.is_some()
            && security.machine_sid.map(|r| r.sid.to_sid()) == primary_sid,
        product_type: system.product_type.clone(),
    };
    let domain_controller = evidence.is_domain_controller();
    if domain_controller {
        findings.refuse(
            RefusalReason::DomainController,
            format!(
                "This image is a domain controller ({}), whose SIDs belong to the domain and \
                 must not be changed: clone member servers or workstations instead and promote \
                 new domain controllers with dcpromo or Install-ADDSDomainController.",
                if evidence.account_is_primary_domain {
                    "the account domain SID equals the primary domain SID"
                } else {
                    "ProductType is LanmanNT"
                }
            ),
        );
    }
    let machine_sid: Option<MachineSid> = match (security.machine_sid, sam.machine_sid) {
        (Some(a), Some(b)) if a.sid == b.sid => Some(a.sid),
        // On a domain controller PolAcDmS is the domain's SID and SAM holds the DSRM
        // accounts' own SID; the domain-controller refusal already covers it.
        (Some(_), Some(_)) if domain_controller => None,
        (Some(a), Some(b)) => {
            findings.refuse(
                RefusalReason::SidMismatch,
                format!(
                    "SECURITY names the machine SID {} but SAM names {}, so the master's \
                     identity is inconsistent: repair the master (or run Sysprep) so that both \
                     agree before cloning.",
                    a.sid, b.sid
                ),
            );
            None
        }
        (a, b) => {
            let missing: Vec<&str> = [
                (a.is_none(), "SECURITY Policy\\PolAcDmS"),
                (b.is_none(), "SAM Domains\\Account V"),
            ]
            .iter()
            .filter(|(m, _)| *m)
            .map(|(_, n)| *n)
            .collect();
            findings.refuse(
                RefusalReason::SidMissing,
                format!(
                    "The machine SID could not be read from {}, so sidfs does not know which SID \
                     to replace: check that the SAM and SECURITY hives are complete.",
                    missing.join(" and ")
                ),
            );
            a.or(b).map(|r| r.sid)
        }
    };

    let (domain, workgroup) = match &security.primary_domain {
        Some(d) => match &d.sid {
            Some(sid) => (
                Some(DomainReport {
                    name: d.name.clone(),
                    sid: sid.to_string(),
                }),
                None,
            ),
            None => (None, d.name.clone()),
        },
        None => (None, None),
    };

    if let (Some(a), Some(b)) = (&system.computer_name, &system.hostname) {
        if !a.eq_ignore_ascii_case(b) {
            findings.warn(
                WarningReason::NamesDiffer,
                format!(
                    "SYSTEM names the computer {a} but its TCP/IP host name is {b}; every clone \
                     keeps both names, so rename the clones after first boot."
                ),
            );
        }
    }

    let mut accounts: Vec<AccountReport> = sam
        .accounts
        .iter()
        .map(|a| AccountReport {
            name: a.name.clone(),
            rid: a.rid,
            sid: a.sid.to_string(),
        })
        .collect();
    accounts.sort_by_key(|a| a.rid);

    let domain_sid = primary_sid.clone();
    let profiles: Vec<ProfileReport> = software
        .profiles
        .iter()
        .map(|p| profile_report(volume, p, &locations, machine_sid, domain_sid.as_ref()))
        .collect();
    for p in &profiles {
        if let (Some(keys), "local") = (&p.dpapi_master_keys, p.kind.as_str()) {
            let user = accounts
                .iter()
                .find(|a| a.sid == p.sid)
                .map(|a| a.name.clone())
                .unwrap_or_else(|| p.sid.clone());
            findings.warn(
                WarningReason::DpapiMasterKeys,
                format!(
                    "Local user {user} has DPAPI master keys in {keys}; under a clone's new SID \
                     they will not decrypt, so that user's saved passwords, certificates' \
                     private keys and EFS keys are lost in every clone unless you remove them \
                     from the master or re-create them after cloning."
                ),
            );
        }
    }

    let special_files = special_files(volume, &mut findings);
    let identifiers = crate::identity::discover_on_volume(volume);
    let read = |path: &str| crate::identity::read_volume_file(volume, path);
    let unchanged_identifiers = crate::identity::unchanged::discover_unchanged(&read);

    let stores = store_reports(volume, machine_sid, &mut findings);

    WindowsReport {
        partition_index: partition.index,
        volume: volume_report,
        product_name: software.product_name,
        build: software.build,
        display_version: software.display_version,
        computer_name: system.computer_name,
        hostname: system.hostname,
        product_type: system.product_type,
        machine_sid: if sources.agree {
            machine_sid.map(|s| s.to_string())
        } else {
            None
        },
        machine_sid_sources: sources,
        account_domain_name: security.account_domain_name,
        domain,
        workgroup,
        domain_controller,
        local_accounts: accounts,
        profiles,
        hives,
        special_files,
        identifiers,
        unchanged_identifiers,
        stores,
    }
}

/// The stores with checksums of the Windows volume (`crate::rewrite::survey::store_paths`), each
/// with its SID occurrences and what the clone does; an ESE database the clone cannot rewrite is
/// a refusal, as `sidfs mount` refuses it.
fn store_reports(
    volume: &NtfsVolume,
    machine_sid: Option<MachineSid>,
    f: &mut Findings<'_>,
) -> Vec<StoreReport> {
    use crate::rewrite::ese::{probe_mapping, rewrite_ese, EseHeader};
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
    match first_efs_with_sid(volume, map, super::SPECIAL_FILE_SCAN_LIMIT) {
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

/// Refusals and warnings for one hive's state.
fn judge_hive(
    location: &HiveLocation,
    check: &HiveCheck,
    logs: &[HiveLogReport],
    f: &mut Findings<'_>,
) {
    let path = &location.path;
    if check.dirty {
        let sequences = format!(
            "sequence numbers {} and {}",
            check.primary_sequence.unwrap_or(0),
            check.secondary_sequence.unwrap_or(0)
        );
        if location.role == HiveRole::RegBack {
            f.warn(
                WarningReason::DirtyBackupHive,
                format!(
                    "The backup hive {path} is dirty ({sequences}); Windows does not load it, \
                     but do not restore it in a clone."
                ),
            );
        } else if logs.iter().all(|l| l.size == 0) {
            f.refuse(
                RefusalReason::DirtyHiveWithoutLogs,
                format!(
                    "The hive {path} is dirty ({sequences}) and has no transaction log with \
                     data to recover it from: repair it in the master (boot Windows, or restore the \
                     hive from a backup) and capture the master again."
                ),
            );
        } else {
            let names: Vec<&str> = logs
                .iter()
                .filter(|l| l.size > 0)
                .map(|l| l.path.rsplit('\\').next().unwrap_or(&l.path))
                .collect();
            f.refuse(
                RefusalReason::DirtyHive,
                format!(
                    "The hive {path} is dirty ({sequences}) and its changes are still in {}: \
                     boot the master once and shut it down cleanly so that Windows writes them \
                     into the hive, then capture it again.",
                    names.join(", ")
                ),
            );
        }
    } else if let Some(error) = &check.error {
        f.refuse(
            RefusalReason::Unreadable,
            format!(
                "The hive {path} cannot be read ({error}): restore it from a backup or repair \
                 the master, then capture it again."
            ),
        );
    }
}

/// Reads the facts of the four system hives; errors become `unreadable` refusals.
fn extract_facts(
    location: &HiveLocation,
    check: &HiveCheck,
    system: &mut SystemFacts,
    software: &mut SoftwareFacts,
    security: &mut SecurityFacts,
    sam: &mut SamFacts,
    f: &mut Findings<'_>,
) {
    let wanted = matches!(
        location.role,
        HiveRole::System | HiveRole::Software | HiveRole::Sam | HiveRole::Security
    );
    if !wanted {
        return;
    }
    let hive = match Hive::parse_unvalidated(&check.bytes) {
        Ok(h) => h,
        Err(e) => return f.unreadable(&format!("The hive {}", location.path), e),
    };
    let result = match location.role {
        HiveRole::System => (|| -> crate::hive::Result<()> {
            let names = windows::computer_names(&hive)?;
            system.computer_name = names.as_ref().and_then(|n| n.computer_name.clone());
            system.hostname = names.and_then(|n| n.hostname);
            system.product_type = windows::product_type(&hive)?;
            Ok(())
        })(),
        HiveRole::Software => (|| -> crate::hive::Result<()> {
            if let Some(v) = windows::windows_version(&hive)? {
                software.product_name = v.product_name;
                software.build = v.current_build;
                software.display_version = v.display_version;
            }
            software.profiles = windows::user_profiles(&hive)?;
            Ok(())
        })(),
        HiveRole::Security => (|| -> crate::hive::Result<()> {
            security.machine_sid = windows::machine_sid_from_security(&hive)?;
            security.account_domain_name = windows::account_domain_name(&hive)?;
            security.primary_domain = windows::primary_domain(&hive)?;
            Ok(())
        })(),
        HiveRole::Sam => (|| -> crate::hive::Result<()> {
            sam.machine_sid = windows::machine_sid_from_sam(&hive)?;
            if sam.machine_sid.is_some() {
                sam.accounts = windows::local_accounts(&hive)?;
            }
            Ok(())
        })(),
        _ => Ok(()),
    };
    if let Err(e) = result {
        if !check.dirty {
            f.unreadable(&format!("The hive {}", location.path), e);
        }
    }
}

fn hive_path(locations: &[HiveLocation], role: HiveRole) -> String {
    locations
        .iter()
        .find(|l| l.role == role && l.kind == HiveFileKind::Primary)
        .map(|l| l.path.clone())
        .unwrap_or_default()
}

/// The JSON name of a hive role.
pub(super) fn role_name(role: &HiveRole) -> &'static str {
    match role {
        HiveRole::Sam => "sam",
        HiveRole::Security => "security",
        HiveRole::Software => "software",
        HiveRole::System => "system",
        HiveRole::Default => "default",
        HiveRole::RegBack => "regback",
        HiveRole::UserNtuser => "ntuser",
        HiveRole::UserClasses => "usrclass",
        HiveRole::ServiceProfileNtuser => "service-ntuser",
        HiveRole::SystemProfileNtuser => "systemprofile-ntuser",
        HiveRole::Bcd => "bcd",
    }
}
