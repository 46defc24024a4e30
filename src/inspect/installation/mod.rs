//! The Windows installation on one NTFS volume: volume state, hives, machine SID, domain,
//! accounts, profiles, special files. Anything that cannot be read becomes a refusal with reason
//! `unreadable`; the rest of the report is still filled in.
//!
//! This file walks the installation and judges its hives; [`stores`] lists its stores with
//! checksums as the clone's own checks decide them; [`volume`] judges the NTFS volume and its special files; [`profiles`] places each
//! user profile and its hives.

mod profiles;
mod stores;
mod volume;

use profiles::profile_report;
#[cfg(test)]
pub(in crate::inspect) use profiles::profile_volume_path;
pub(super) use stores::store_reports;
use volume::{special_files, volume_state};

use super::finding::{Refusal, RefusalReason, Warning, WarningReason};
use super::hive_file::{self, HiveCheck};
use super::report::{
    AccountReport, DomainReport, HiveLogReport, HiveReport, MachineSidSources, ProfileReport,
    SidSource, WindowsReport,
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
        // Filled in by [`store_reports`], from the clone's own survey of the master.
        stores: Vec::new(),
    }
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
