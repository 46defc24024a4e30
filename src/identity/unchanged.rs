//! Per-machine identifiers sidfs knows but does not change: `sidfs inspect` lists each one that
//! the master carries, with why it stays (docs/IDENTIFIERS.md, "What sidfs knowingly does not
//! change"). Their owners (licensing, telemetry, management and security agents, the DHCPv6
//! client) have their own reset procedures, and sidfs does not know every place they copy them.

use serde::{Deserialize, Serialize};

use super::{Location, SMSCFG_INI, SOFTWARE_HIVE, SYSTEM_HIVE};
use crate::hive::{value_type, Hive};

/// One identifier found in the master and left as it is in every clone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnchangedIdentifier {
    /// A stable short name: `kms-client-machine-id`, `sqm-machine-id`, `sccm-sms-guid`,
    /// `defender-sense-guid`, `dhcpv6-duid`.
    pub name: String,
    /// The value as text (binary data as lowercase hex).
    pub value: String,
    /// Where it was read: a hive location, or a file's volume path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Why sidfs leaves it, and what the user does about it.
    pub why: String,
}

const SPP_KEY: &str = r"Microsoft\Windows NT\CurrentVersion\SoftwareProtectionPlatform";
const SQM_KEY: &str = r"Microsoft\SQMClient";
const ATP_KEY: &str = r"Microsoft\Windows Advanced Threat Protection";
const TCPIP6_PARAMETERS: &str = r"Services\Tcpip6\Parameters";
const SMS_UNIQUE_ID: &str = "SMS Unique Identifier";

const WHY_KMS: &str = "the KMS client machine ID (CMID) is reset by the licensing service \
     (sysprep /generalize runs slmgr /rearm); a KMS host counts clones that share it as one \
     client: run slmgr /rearm in each clone if KMS activation counts matter";
const WHY_SQM: &str = "the telemetry (SQM/CEIP) machine id belongs to Windows' reporting \
     services, which recreate it when it is deleted: delete HKLM\\SOFTWARE\\Microsoft\\SQMClient \
     MachineId in the master (as sysprep /generalize does) so each clone creates its own";
const WHY_SMS: &str = "the Configuration Manager client's SMS GUID: clones sharing it are one \
     client to the site; remove SMSCFG.INI and the client's certificates from the master as \
     Microsoft's imaging guidance says, or reset the clients after first boot";
const WHY_ATP: &str = "the Defender for Endpoint sensor id: clones sharing it report as one \
     device; onboard the master as a golden image (delete senseGuid before capture, as \
     Microsoft's VDI onboarding guidance says)";
const WHY_DUID: &str = "the DHCPv6 client's DUID: clones sharing it get the same DHCPv6 lease \
     and address; delete Tcpip6\\Parameters Dhcpv6DUID in the master, and Windows creates a new \
     one at boot";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value as text: strings as they are (without the terminating NULs), other types as hex.
fn value_text(hive: &Hive<'_>, key: &str, value: &str) -> Option<String> {
    let v = hive.open_key(key).ok()??.value(value).ok()??;
    let data = v.data().ok()?;
    let text = match v.data_type() {
        value_type::REG_SZ | value_type::REG_EXPAND_SZ => {
            data.to_utf16_string().trim_end_matches('\0').to_string()
        }
        _ => hex(&data.to_vec()),
    };
    (!text.is_empty()).then_some(text)
}

fn from_hive(
    hive: &Hive<'_>,
    hive_path: &str,
    key: &str,
    value: &str,
    name: &str,
    why: &str,
) -> Option<UnchangedIdentifier> {
    Some(UnchangedIdentifier {
        name: name.into(),
        value: value_text(hive, key, value)?,
        location: Some(Location {
            hive: hive_path.into(),
            key: key.into(),
            value: Some(value.into()),
        }),
        file: None,
        why: why.into(),
    })
}

/// The KMS CMID: value `CMID` of the SoftwareProtectionPlatform key or of one of its subkeys.
fn kms_client_machine_id(sw: &Hive<'_>) -> Option<UnchangedIdentifier> {
    let mut keys = vec![SPP_KEY.to_string()];
    if let Some(k) = sw.open_key(SPP_KEY).ok().flatten() {
        for sub in k.subkeys().unwrap_or_default() {
            keys.push(format!("{SPP_KEY}\\{}", sub.name().to_string_lossy()));
        }
    }
    keys.iter().find_map(|k| {
        from_hive(
            sw,
            SOFTWARE_HIVE,
            k,
            "CMID",
            "kms-client-machine-id",
            WHY_KMS,
        )
    })
}

/// `SMS Unique Identifier=...` of SMSCFG.INI (ANSI or UTF-16LE with BOM).
fn sms_guid(ini: &[u8]) -> Option<String> {
    let text = match ini {
        [0xFF, 0xFE, rest @ ..] => {
            let units: Vec<u16> = rest
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => String::from_utf8_lossy(ini).into_owned(),
    };
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(SMS_UNIQUE_ID) && !v.trim().is_empty())
            .then(|| v.trim().to_string())
    })
}

/// The current control set's name (`Select` `Current`), `ControlSet001` when unknown.
fn current_control_set(sys: &Hive<'_>) -> String {
    let n = super::discover::current_control_set_number(sys).unwrap_or(1);
    format!("ControlSet{n:03}")
}

/// Every identifier of [`UnchangedIdentifier`]'s list that the installation carries. `read`
/// returns a file's bytes by volume path (`None` if absent).
pub fn discover_unchanged(read: &dyn Fn(&str) -> Option<Vec<u8>>) -> Vec<UnchangedIdentifier> {
    let mut out = Vec::new();
    let software = read(SOFTWARE_HIVE);
    if let Some(sw) = software.as_deref().and_then(|b| Hive::parse(b).ok()) {
        out.extend(kms_client_machine_id(&sw));
        out.extend(from_hive(
            &sw,
            SOFTWARE_HIVE,
            SQM_KEY,
            "MachineId",
            "sqm-machine-id",
            WHY_SQM,
        ));
        out.extend(from_hive(
            &sw,
            SOFTWARE_HIVE,
            ATP_KEY,
            "senseGuid",
            "defender-sense-guid",
            WHY_ATP,
        ));
    }
    if let Some(value) = read(SMSCFG_INI).as_deref().and_then(sms_guid) {
        out.push(UnchangedIdentifier {
            name: "sccm-sms-guid".into(),
            value,
            location: None,
            file: Some(SMSCFG_INI.into()),
            why: WHY_SMS.into(),
        });
    }
    let system = read(SYSTEM_HIVE);
    if let Some(sys) = system.as_deref().and_then(|b| Hive::parse(b).ok()) {
        let key = format!("{}\\{TCPIP6_PARAMETERS}", current_control_set(&sys));
        out.extend(from_hive(
            &sys,
            SYSTEM_HIVE,
            &key,
            "Dhcpv6DUID",
            "dhcpv6-duid",
            WHY_DUID,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_guid_is_read_from_ansi_and_utf16_ini_files() {
        let ini = b"[Configuration - Client Properties]\r\nSMS Unique Identifier=GUID:AB-CD\r\n";
        assert_eq!(sms_guid(ini).as_deref(), Some("GUID:AB-CD"));
        let mut wide = vec![0xFF, 0xFE];
        for u in "[x]\r\nsms unique identifier = GUID:12\r\n".encode_utf16() {
            wide.extend(u.to_le_bytes());
        }
        assert_eq!(sms_guid(&wide).as_deref(), Some("GUID:12"));
        assert_eq!(sms_guid(b"SMS Unique Identifier=\r\n"), None);
        assert_eq!(
            sms_guid(&[0xFF, 0xFE, 0x41]),
            None,
            "odd UTF-16 is no panic"
        );
    }
}
