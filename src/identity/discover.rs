//! Finding a master's identifiers: in its hives, and the files named after `MachineGuid`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::guid::parse_guid;
use super::machine_keys::{is_container_of, MACHINE_KEY_DIRS};
use super::IdentifierKind;
use crate::hive::{value_type, Hive, HIVE_SIZE_LIMIT};
use crate::image::NtfsVolume;

/// Where an identifier lives: a hive (volume path), a key path below its root and a value name
/// (`None` when the identifier is the key's name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub hive: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) if v.is_empty() => write!(f, "{} {} [(default)]", self.hive, self.key),
            Some(v) => write!(f, "{} {} [{}]", self.hive, self.key, v),
            None => write!(f, "{} {} (key name)", self.hive, self.key),
        }
    }
}

/// One identifier found in a master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundIdentifier {
    pub kind: IdentifierKind,
    /// For MSDTC, the endpoint's `Description` (`MSDTC`, `MSDTCUIS`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub value: String,
    /// The places Windows reads it from (sidfs also replaces every other occurrence in the hives).
    pub locations: Vec<Location>,
    /// Volume paths of files whose names carry the value: for `MachineGuid`, the machine key
    /// containers `<hash>_<MachineGuid>` ([`MACHINE_KEY_DIRS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_files: Vec<String>,
}

pub const SYSTEM_HIVE: &str = r"Windows\System32\config\SYSTEM";
pub const SOFTWARE_HIVE: &str = r"Windows\System32\config\SOFTWARE";
pub const SECURITY_HIVE: &str = r"Windows\System32\config\SECURITY";
/// The Configuration Manager client's identity file (`%windir%\SMSCFG.INI`).
pub const SMSCFG_INI: &str = r"Windows\SMSCFG.INI";

/// Computer-name values of one control set: (key below the control set, value).
const NAME_VALUES: [(&str, &str); 4] = [
    (r"Control\ComputerName\ComputerName", "ComputerName"),
    (r"Control\ComputerName\ActiveComputerName", "ComputerName"),
    (r"Services\Tcpip\Parameters", "Hostname"),
    (r"Services\Tcpip\Parameters", "NV Hostname"),
];
const WINLOGON: &str = r"Microsoft\Windows NT\CurrentVersion\Winlogon";
const MACHINE_GUID_KEY: &str = r"Microsoft\Cryptography";
const WSUS_KEY: &str = r"Microsoft\Windows\CurrentVersion\WindowsUpdate";
const CID_KEY: &str = r"Classes\CID";

pub(super) fn string_value(hive: &Hive<'_>, key: &str, value: &str) -> Option<String> {
    let k = hive.open_key(key).ok()??;
    let v = k.value(value).ok()??;
    match v.data_type() {
        value_type::REG_SZ | value_type::REG_EXPAND_SZ => {
            let s = v.data().ok()?.to_utf16_string();
            Some(s.trim_end_matches('\0').to_string())
        }
        _ => None,
    }
}

/// Every identifier of a Windows installation. `read` returns a hive file's bytes by volume
/// path (`None` if absent). Unreadable hives simply contribute nothing. Files named after an
/// identifier are not looked for: see [`discover_on`].
pub fn discover(read: &dyn Fn(&str) -> Option<Vec<u8>>) -> Vec<FoundIdentifier> {
    discover_on(read, &|_| None)
}

/// [`discover`], and `list` (the file names in a volume directory, `None` if absent) finds the
/// machine key containers named after `MachineGuid`.
pub fn discover_on(
    read: &dyn Fn(&str) -> Option<Vec<u8>>,
    list: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Vec<FoundIdentifier> {
    let mut found = discover_in_hives(read);
    for f in found
        .iter_mut()
        .filter(|f| f.kind == IdentifierKind::MachineGuid)
    {
        for dir in MACHINE_KEY_DIRS {
            let mut names: Vec<String> = list(dir)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| is_container_of(n, &f.value))
                .collect();
            names.sort();
            f.named_files
                .extend(names.into_iter().map(|n| format!("{dir}\\{n}")));
        }
    }
    found
}

/// A hive file's bytes on `volume` by volume path, as [`discover`] reads it (`None` if absent
/// or unreadable, or larger than a hive may be).
pub fn read_volume_file(volume: &NtfsVolume, path: &str) -> Option<Vec<u8>> {
    volume.read_file(path, "", HIVE_SIZE_LIMIT).ok()
}

/// The names of the files (not directories) in a directory of `volume` (`None` if absent).
fn list_volume_files(volume: &NtfsVolume, dir: &str) -> Option<Vec<String>> {
    let entries = volume.list_dir(dir).ok()?;
    Some(
        entries
            .into_iter()
            .filter(|e| !e.is_directory)
            .map(|e| e.name)
            .collect(),
    )
}

/// [`discover_on`] over a Windows installation's NTFS volume.
pub fn discover_on_volume(volume: &NtfsVolume) -> Vec<FoundIdentifier> {
    discover_on(
        &|path: &str| read_volume_file(volume, path),
        &|dir: &str| list_volume_files(volume, dir),
    )
}

fn discover_in_hives(read: &dyn Fn(&str) -> Option<Vec<u8>>) -> Vec<FoundIdentifier> {
    let mut found = Vec::new();
    let system = read(SYSTEM_HIVE);
    let software = read(SOFTWARE_HIVE);
    let security = read(SECURITY_HIVE);
    let system = system.as_deref().and_then(|b| Hive::parse(b).ok());
    let software = software.as_deref().and_then(|b| Hive::parse(b).ok());
    let security = security.as_deref().and_then(|b| Hive::parse(b).ok());

    if let Some(sys) = &system {
        let mut sets: Vec<String> = sys
            .root_key()
            .and_then(|r| r.subkeys())
            .map(|ks| {
                ks.iter()
                    .map(|k| k.name().to_string_lossy())
                    .filter(|n| {
                        n.len() == 13
                            && n[..10].eq_ignore_ascii_case("ControlSet")
                            && n[10..].bytes().all(|b| b.is_ascii_digit())
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The current control set first: its ComputerName is the machine's name.
        let current = current_control_set_number(sys).map(|n| format!("ControlSet{n:03}"));
        if let Some(c) = &current {
            sets.sort_by_key(|s| !s.eq_ignore_ascii_case(c));
        }
        let mut name: Option<String> = None;
        let mut locations = Vec::new();
        for set in &sets {
            for (key, value) in NAME_VALUES {
                let path = format!("{set}\\{key}");
                let Some(v) = string_value(sys, &path, value) else {
                    continue;
                };
                if name.is_none() && !v.is_empty() {
                    name = Some(v.clone());
                }
                if name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&v)) {
                    locations.push(Location {
                        hive: SYSTEM_HIVE.into(),
                        key: path,
                        value: Some(value.into()),
                    });
                }
            }
        }
        if let Some(name) = name {
            if let Some(sec) = &security {
                if policy_account_domain_name(sec).is_some_and(|n| n.eq_ignore_ascii_case(&name)) {
                    locations.push(Location {
                        hive: SECURITY_HIVE.into(),
                        key: r"Policy\PolAcDmN".into(),
                        value: Some(String::new()),
                    });
                }
            }
            if let Some(sw) = &software {
                for value in ["DefaultDomainName", "AltDefaultDomainName"] {
                    if string_value(sw, WINLOGON, value)
                        .is_some_and(|v| v.eq_ignore_ascii_case(&name))
                    {
                        locations.push(Location {
                            hive: SOFTWARE_HIVE.into(),
                            key: WINLOGON.into(),
                            value: Some(value.into()),
                        });
                    }
                }
            }
            found.push(FoundIdentifier {
                kind: IdentifierKind::Hostname,
                label: None,
                value: name,
                locations,
                named_files: Vec::new(),
            });
        }
    }

    if let Some(sw) = &software {
        for (kind, key, value) in [
            (IdentifierKind::MachineGuid, MACHINE_GUID_KEY, "MachineGuid"),
            (IdentifierKind::Wsus, WSUS_KEY, "SusClientId"),
        ] {
            if let Some(v) = string_value(sw, key, value).filter(|v| parse_guid(v).is_some()) {
                found.push(FoundIdentifier {
                    kind,
                    label: None,
                    value: v,
                    locations: vec![Location {
                        hive: SOFTWARE_HIVE.into(),
                        key: key.into(),
                        value: Some(value.into()),
                    }],
                    named_files: Vec::new(),
                });
            }
        }
        let cids = sw
            .open_key(CID_KEY)
            .ok()
            .flatten()
            .and_then(|k| k.subkeys().ok())
            .unwrap_or_default();
        for cid in cids {
            let name = cid.name().to_string_lossy();
            if parse_guid(&name).is_none() {
                continue;
            }
            let path = format!("{CID_KEY}\\{name}");
            let label = string_value(sw, &format!("{path}\\Description"), "");
            if !label.as_deref().is_some_and(|l| l.starts_with("MSDTC")) {
                continue;
            }
            found.push(FoundIdentifier {
                kind: IdentifierKind::Msdtc,
                label,
                value: name,
                locations: vec![Location {
                    hive: SOFTWARE_HIVE.into(),
                    key: path,
                    value: None,
                }],
                named_files: Vec::new(),
            });
        }
    }
    found
}

/// The number of the current control set: SYSTEM `Select` `Current` (`None` when unreadable).
pub(super) fn current_control_set_number(sys: &Hive<'_>) -> Option<u32> {
    sys.open_key("Select")
        .ok()
        .flatten()
        .and_then(|k| k.value("Current").ok().flatten())
        .and_then(|v| v.data().ok()?.to_u32())
}

/// SECURITY `Policy\PolAcDmN`: the account domain's name (the computer name on a workstation),
/// stored as a self-relative UNICODE_STRING (Length, MaximumLength, offset 8 of the buffer).
pub(super) fn policy_account_domain_name(security: &Hive<'_>) -> Option<String> {
    let key = security.open_key(r"Policy\PolAcDmN").ok()??;
    let data = key.value("").ok()??.data().ok()?.to_vec();
    let len = usize::from(u16::from_le_bytes([*data.first()?, *data.get(1)?]));
    let at = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?) as usize;
    let units: Vec<u16> = data
        .get(at..at.checked_add(len)?)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}
