//! Windows facts read from parsed hives: the machine SID (from SECURITY and from SAM), the AD
//! domain, local accounts, domain-controller evidence, the computer name and the Windows version.
//!
//! Each function takes a parsed [`Hive`] of the right kind and returns typed structs; a missing
//! key or value gives `Ok(None)` (or an empty list), a value of the wrong shape a
//! [`HiveError::UnexpectedValue`]. Sources are cited per function; see docs/FORMAT-FACTS.md §1–2.

use super::{u16_at, u32_at, value_type, FileOffset, Hive, HiveError, KeyNode, Result, ValueData};
use crate::sid::{MachineSid, Sid};

/// SECURITY key holding the account-domain (machine) SID as its default value.
pub const POL_AC_DM_S: &str = "Policy\\PolAcDmS";
/// SECURITY key holding the account-domain name.
pub const POL_AC_DM_N: &str = "Policy\\PolAcDmN";
/// SECURITY key holding the primary (AD) domain SID; empty or absent when not joined.
pub const POL_PR_DM_S: &str = "Policy\\PolPrDmS";
/// SECURITY key holding the primary (AD) domain name.
pub const POL_PR_DM_N: &str = "Policy\\PolPrDmN";
/// SAM key whose value `V` ends with the account-domain SID.
pub const SAM_ACCOUNT: &str = "SAM\\Domains\\Account";
/// SAM key whose subkeys are the local user names.
pub const SAM_USER_NAMES: &str = "SAM\\Domains\\Account\\Users\\Names";
/// SAM key whose subkeys are the local users by RID (8 hex digits).
pub const SAM_USERS: &str = "SAM\\Domains\\Account\\Users";

/// `SAM\Domains\Account\V` header: 4 descriptors of {u32 offset, u32 length, u32 unknown}; data
/// offsets are relative to the end of the header [docs/FORMAT-FACTS.md §2, winreg-kb Domains.md].
const ACCOUNT_V_DESCRIPTOR_SIZE: usize = 12;
const ACCOUNT_V_HEADER_SIZE: usize = 0x30;
/// Descriptor 1 of Account\V is the domain SID.
const ACCOUNT_V_SID_DESCRIPTOR: usize = 1;
/// A machine SID S-1-5-21-a-b-c is 24 bytes.
const MACHINE_SID_SIZE: usize = 24;

/// UNICODE_STRING-like header of PolPrDmN / PolAcDmN: u16 length (bytes), u16 maximum length,
/// u32 offset of the UTF-16LE text from the start of the value data [observed in the
/// STUDENT-PC8 SECURITY hive: `10 00 12 00 08 00 00 00` + "INTERNAL\0"].
const POLICY_NAME_LENGTH: usize = 0;
const POLICY_NAME_OFFSET: usize = 4;
const POLICY_NAME_HEADER_SIZE: usize = 8;

/// ProductType of a domain controller [learn.microsoft.com ProductOptions: WinNT workstation,
/// ServerNT member server, LanmanNT domain controller].
pub const PRODUCT_TYPE_DOMAIN_CONTROLLER: &str = "LanmanNT";

/// A machine SID and the absolute file offset of its 24 binary bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineSidRecord {
    pub sid: MachineSid,
    /// Offset of the SID's first byte (revision) in the hive file.
    pub file_offset: FileOffset,
}

/// The primary (AD) domain the machine is joined to, from SECURITY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryDomain {
    /// `PolPrDmN` (for a workgroup machine, the workgroup name).
    pub name: Option<String>,
    /// `PolPrDmS`; `None` when the value is absent or empty (not joined to a domain).
    pub sid: Option<Sid>,
}

/// A local account from SAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAccount {
    /// The user name (the `Users\Names\<name>` key name).
    pub name: String,
    /// The RID (the value type of that key's default value).
    pub rid: u32,
    /// machine SID + RID.
    pub sid: Sid,
    /// True when `Users\<RID as 8 hex digits>` exists too.
    pub has_user_key: bool,
}

/// Evidence that an image is a domain controller (whose SIDs must not be rewritten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainControllerEvidence {
    /// The account-domain SID equals the primary-domain SID (true on DCs).
    pub account_is_primary_domain: bool,
    /// SYSTEM `ProductOptions\ProductType`, if a SYSTEM hive was given and holds it.
    pub product_type: Option<String>,
}

impl DomainControllerEvidence {
    /// True if any of the evidence says "domain controller".
    pub fn is_domain_controller(&self) -> bool {
        self.account_is_primary_domain
            || self.product_type.as_deref() == Some(PRODUCT_TYPE_DOMAIN_CONTROLLER)
    }
}

/// The two names a SYSTEM hive gives the computer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputerNames {
    /// `ControlSet00N\Control\ComputerName\ComputerName` value `ComputerName`.
    pub computer_name: Option<String>,
    /// `ControlSet00N\Services\Tcpip\Parameters` value `Hostname`.
    pub hostname: Option<String>,
}

/// Version facts from SOFTWARE `Microsoft\Windows NT\CurrentVersion`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsVersion {
    pub product_name: Option<String>,
    /// `CurrentBuild`, or `CurrentBuildNumber` when the former is absent.
    pub current_build: Option<String>,
    /// `DisplayVersion` (Windows 10 20H2 and later).
    pub display_version: Option<String>,
}

/// A user profile from SOFTWARE `...\ProfileList\<SID>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    /// The key name as stored.
    pub key_name: String,
    /// The key name parsed as a SID (`None` for names that are not SIDs, e.g. `.bak` copies).
    pub sid: Option<Sid>,
    /// `ProfileImagePath`.
    pub profile_image_path: Option<String>,
}

fn unexpected(key: &KeyNode<'_>, value: &str, expected: &'static str, found: String) -> HiveError {
    HiveError::UnexpectedValue {
        path: format!("key at {}", key.file_offset()),
        value: value.to_owned(),
        expected,
        found,
    }
}

/// The data of `value` under the key at `path`, or `None` if either is missing.
fn value_data<'h>(hive: &'h Hive<'h>, path: &str, value: &str) -> Result<Option<ValueData<'h>>> {
    let Some(key) = hive.open_key(path)? else {
        return Ok(None);
    };
    match key.value(value)? {
        Some(v) => v.data().map(Some),
        None => Ok(None),
    }
}

/// A REG_SZ / REG_EXPAND_SZ value as a string (up to the first NUL).
fn string_value(key: &KeyNode<'_>, value: &str) -> Result<Option<String>> {
    let Some(v) = key.value(value)? else {
        return Ok(None);
    };
    match v.data_type() {
        value_type::REG_SZ | value_type::REG_EXPAND_SZ => Ok(Some(v.data()?.to_utf16_string())),
        other => Err(unexpected(
            key,
            value,
            "REG_SZ or REG_EXPAND_SZ",
            format!("type {other}"),
        )),
    }
}

/// Absolute offset of byte `index` of value data, found through its segments.
fn data_byte_offset(data: &ValueData<'_>, index: usize) -> Option<FileOffset> {
    let mut skipped = 0usize;
    for segment in &data.segments {
        if index < skipped + segment.bytes.len() {
            return segment.file_offset.checked_add((index - skipped) as u64);
        }
        skipped += segment.bytes.len();
    }
    None
}

/// Parses a 24-byte machine SID stored at `start` of `data`.
fn machine_sid_at(
    data: &ValueData<'_>,
    bytes: &[u8],
    start: usize,
    what: &str,
) -> Result<MachineSidRecord> {
    let sid_bytes = start
        .checked_add(MACHINE_SID_SIZE)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| HiveError::UnexpectedValue {
            path: what.to_owned(),
            value: String::new(),
            expected: "a 24-byte machine SID inside the value",
            found: format!("{} bytes, SID at {start}", bytes.len()),
        })?;
    let sid = MachineSid::from_bytes(sid_bytes).map_err(|e| HiveError::UnexpectedValue {
        path: what.to_owned(),
        value: String::new(),
        expected: "a machine SID S-1-5-21-a-b-c",
        found: e.to_string(),
    })?;
    let file_offset = data_byte_offset(data, start).ok_or(HiveError::UnexpectedValue {
        path: what.to_owned(),
        value: String::new(),
        expected: "SID bytes inside the value data",
        found: format!("offset {start}"),
    })?;
    Ok(MachineSidRecord { sid, file_offset })
}

/// The machine SID from SECURITY `Policy\PolAcDmS` (default value, 24 bytes) [docs/FORMAT-FACTS.md §2;
/// ReactOS `LsarSetAccountDomain`]. `Ok(None)` if the key or value is missing.
pub fn machine_sid_from_security(security: &Hive<'_>) -> Result<Option<MachineSidRecord>> {
    let Some(data) = value_data(security, POL_AC_DM_S, "")? else {
        return Ok(None);
    };
    let bytes = data.to_vec();
    if bytes.len() != MACHINE_SID_SIZE {
        return Err(HiveError::UnexpectedValue {
            path: POL_AC_DM_S.to_owned(),
            value: String::new(),
            expected: "24 bytes",
            found: format!("{} bytes", bytes.len()),
        });
    }
    machine_sid_at(&data, &bytes, 0, POL_AC_DM_S).map(Some)
}

/// The machine SID from SAM `SAM\Domains\Account` value `V`: descriptor 1 of the 4-descriptor
/// header, offset relative to 0x30, 24 bytes [docs/FORMAT-FACTS.md §2; regipy reads the last 24 bytes].
/// Fails if descriptor 1 and the last 24 bytes disagree. `Ok(None)` if the key or value is
/// missing.
pub fn machine_sid_from_sam(sam: &Hive<'_>) -> Result<Option<MachineSidRecord>> {
    let Some(data) = value_data(sam, SAM_ACCOUNT, "V")? else {
        return Ok(None);
    };
    let bytes = data.to_vec();
    let at = ACCOUNT_V_SID_DESCRIPTOR * ACCOUNT_V_DESCRIPTOR_SIZE;
    let (Some(offset), Some(length)) = (u32_at(&bytes, at), u32_at(&bytes, at + 4)) else {
        return Err(HiveError::UnexpectedValue {
            path: SAM_ACCOUNT.to_owned(),
            value: "V".to_owned(),
            expected: "a 0x30-byte descriptor header",
            found: format!("{} bytes", bytes.len()),
        });
    };
    if length as usize != MACHINE_SID_SIZE {
        return Err(HiveError::UnexpectedValue {
            path: SAM_ACCOUNT.to_owned(),
            value: "V".to_owned(),
            expected: "descriptor 1 (domain SID) of 24 bytes",
            found: format!("{length} bytes"),
        });
    }
    let start = ACCOUNT_V_HEADER_SIZE.saturating_add(offset as usize);
    let record = machine_sid_at(&data, &bytes, start, "SAM\\Domains\\Account\\V")?;
    let last = bytes.len().saturating_sub(MACHINE_SID_SIZE);
    if start != last {
        let tail = MachineSid::from_bytes(&bytes[last..]).ok();
        if tail != Some(record.sid) {
            return Err(HiveError::UnexpectedValue {
                path: SAM_ACCOUNT.to_owned(),
                value: "V".to_owned(),
                expected: "descriptor 1 SID equal to the last 24 bytes",
                found: format!("{} vs {tail:?}", record.sid),
            });
        }
    }
    Ok(Some(record))
}

/// Reads a PolPrDmN/PolAcDmN name: the UNICODE_STRING-like header then UTF-16LE text.
fn policy_name(security: &Hive<'_>, path: &str) -> Result<Option<String>> {
    let Some(data) = value_data(security, path, "")? else {
        return Ok(None);
    };
    let bytes = data.to_vec();
    let bad = |found: String| HiveError::UnexpectedValue {
        path: path.to_owned(),
        value: String::new(),
        expected: "u16 length, u16 max length, u32 offset, UTF-16LE text inside the value",
        found,
    };
    if bytes.len() < POLICY_NAME_HEADER_SIZE {
        return Err(bad(format!("{} bytes", bytes.len())));
    }
    let length = usize::from(u16_at(&bytes, POLICY_NAME_LENGTH).unwrap_or(0));
    let offset = u32_at(&bytes, POLICY_NAME_OFFSET).unwrap_or(0) as usize;
    let text = offset
        .checked_add(length)
        .and_then(|end| bytes.get(offset..end))
        .filter(|_| length % 2 == 0)
        .ok_or_else(|| {
            bad(format!(
                "length {length} at offset {offset} in {} bytes",
                bytes.len()
            ))
        })?;
    let units: Vec<u16> = text
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok(Some(String::from_utf16_lossy(&units)))
}

/// The account-domain name (`PolAcDmN`; the computer's NetBIOS name).
pub fn account_domain_name(security: &Hive<'_>) -> Result<Option<String>> {
    policy_name(security, POL_AC_DM_N)
}

/// The primary domain from SECURITY `PolPrDmN` and `PolPrDmS`. `Ok(None)` when neither key
/// exists. The SID must never be rewritten: it belongs to the AD domain, not to this machine.
pub fn primary_domain(security: &Hive<'_>) -> Result<Option<PrimaryDomain>> {
    let name = policy_name(security, POL_PR_DM_N)?;
    let sid = match value_data(security, POL_PR_DM_S, "")? {
        Some(data) if !data.is_empty() => {
            let bytes = data.to_vec();
            let sid = Sid::from_bytes(&bytes).map_err(|e| HiveError::UnexpectedValue {
                path: POL_PR_DM_S.to_owned(),
                value: String::new(),
                expected: "a binary SID",
                found: e.to_string(),
            })?;
            Some(sid)
        }
        _ => None,
    };
    if name.is_none() && sid.is_none() && security.open_key(POL_PR_DM_S)?.is_none() {
        return Ok(None);
    }
    Ok(Some(PrimaryDomain { name, sid }))
}

/// Local accounts from SAM `Users\Names\<name>` (the default value's type is the RID), with their
/// SIDs built from the SAM machine SID. Empty when the Names key is missing.
pub fn local_accounts(sam: &Hive<'_>) -> Result<Vec<LocalAccount>> {
    let Some(names) = sam.open_key(SAM_USER_NAMES)? else {
        return Ok(Vec::new());
    };
    let machine = machine_sid_from_sam(sam)?.ok_or(HiveError::UnexpectedValue {
        path: SAM_ACCOUNT.to_owned(),
        value: "V".to_owned(),
        expected: "the account-domain SID (needed to build account SIDs)",
        found: "nothing".to_owned(),
    })?;
    let users = sam.open_key(SAM_USERS)?;
    let mut accounts = Vec::new();
    for key in names.subkeys()? {
        let name = key.name().to_string_lossy();
        let default = key.value("")?.ok_or_else(|| {
            unexpected(
                &key,
                "",
                "a default value whose type is the RID",
                "none".into(),
            )
        })?;
        let rid = default.data_type();
        let has_user_key = match &users {
            Some(users) => users.subkey(&format!("{rid:08X}"))?.is_some(),
            None => false,
        };
        accounts.push(LocalAccount {
            name,
            rid,
            sid: machine.sid.account(rid),
            has_user_key,
        });
    }
    Ok(accounts)
}

/// The current control set name (`ControlSet001`, ...) from SYSTEM `Select\Current`.
pub fn current_control_set(system: &Hive<'_>) -> Result<Option<String>> {
    let Some(select) = system.open_key("Select")? else {
        return Ok(None);
    };
    let Some(current) = select.value("Current")? else {
        return Ok(None);
    };
    let number = current.data()?.to_u32().ok_or_else(|| {
        unexpected(
            &select,
            "Current",
            "a 4-byte REG_DWORD",
            "other size".into(),
        )
    })?;
    Ok(Some(format!("ControlSet{number:03}")))
}

/// A string value under `<current control set>\<path>`.
fn control_set_string(system: &Hive<'_>, path: &str, value: &str) -> Result<Option<String>> {
    let Some(set) = current_control_set(system)? else {
        return Ok(None);
    };
    match system.open_key(&format!("{set}\\{path}"))? {
        Some(key) => string_value(&key, value),
        None => Ok(None),
    }
}

/// SYSTEM `ControlSet00N\Control\ProductOptions` `ProductType` (WinNT, ServerNT, LanmanNT).
pub fn product_type(system: &Hive<'_>) -> Result<Option<String>> {
    control_set_string(system, "Control\\ProductOptions", "ProductType")
}

/// Domain-controller evidence from SECURITY (account SID == primary SID) and, if given, SYSTEM
/// (ProductType == LanmanNT).
pub fn domain_controller_evidence(
    security: &Hive<'_>,
    system: Option<&Hive<'_>>,
) -> Result<DomainControllerEvidence> {
    let account = machine_sid_from_security(security)?.map(|r| r.sid.to_sid());
    let primary = primary_domain(security)?.and_then(|d| d.sid);
    let product_type = match system {
        Some(system) => product_type(system)?,
        None => None,
    };
    Ok(DomainControllerEvidence {
        account_is_primary_domain: account.is_some() && account == primary,
        product_type,
    })
}

/// The computer name and TCP/IP host name from SYSTEM (current control set).
pub fn computer_names(system: &Hive<'_>) -> Result<Option<ComputerNames>> {
    if current_control_set(system)?.is_none() {
        return Ok(None);
    }
    Ok(Some(ComputerNames {
        computer_name: control_set_string(
            system,
            "Control\\ComputerName\\ComputerName",
            "ComputerName",
        )?,
        hostname: control_set_string(system, "Services\\Tcpip\\Parameters", "Hostname")?,
    }))
}

/// SOFTWARE key with the version values and ProfileList.
pub const CURRENT_VERSION: &str = "Microsoft\\Windows NT\\CurrentVersion";

/// Windows version facts from SOFTWARE. `Ok(None)` when CurrentVersion is missing.
pub fn windows_version(software: &Hive<'_>) -> Result<Option<WindowsVersion>> {
    let Some(key) = software.open_key(CURRENT_VERSION)? else {
        return Ok(None);
    };
    let current_build = match string_value(&key, "CurrentBuild")? {
        Some(build) => Some(build),
        None => string_value(&key, "CurrentBuildNumber")?,
    };
    Ok(Some(WindowsVersion {
        product_name: string_value(&key, "ProductName")?,
        current_build,
        display_version: string_value(&key, "DisplayVersion")?,
    }))
}

/// User profiles from SOFTWARE `...\CurrentVersion\ProfileList`. Empty when it is missing.
pub fn user_profiles(software: &Hive<'_>) -> Result<Vec<UserProfile>> {
    let Some(list) = software.open_key(&format!("{CURRENT_VERSION}\\ProfileList"))? else {
        return Ok(Vec::new());
    };
    list.subkeys()?
        .into_iter()
        .map(|key| {
            let key_name = key.name().to_string_lossy();
            Ok(UserProfile {
                sid: key_name.parse().ok(),
                profile_image_path: string_value(&key, "ProfileImagePath")?,
                key_name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hive::test_hives::{realdata, student_hive, system_b, STUDENT_PC8_MACHINE_SID};
    use std::process::Command;

    #[test]
    fn student_pc8_machine_sid_from_security_and_sam() {
        let security_bytes = student_hive("SECURITY");
        let security = Hive::parse(&security_bytes).unwrap();
        let sam_bytes = student_hive("SAM");
        let sam = Hive::parse(&sam_bytes).unwrap();
        let from_security = machine_sid_from_security(&security).unwrap().unwrap();
        let from_sam = machine_sid_from_sam(&sam).unwrap().unwrap();
        assert_eq!(from_security.sid.to_string(), STUDENT_PC8_MACHINE_SID);
        assert_eq!(from_sam.sid, from_security.sid);
        // The reported offsets hold the binary SID.
        for (bytes, record) in [(&security_bytes, from_security), (&sam_bytes, from_sam)] {
            let at = record.file_offset.0 as usize;
            assert_eq!(bytes[at..at + 24], record.sid.to_sid().to_bytes()[..]);
        }
        // A SAM hive has no PolAcDmS and a SECURITY hive no Account\V.
        assert_eq!(machine_sid_from_security(&sam).unwrap(), None);
        assert_eq!(machine_sid_from_sam(&security).unwrap(), None);
    }

    #[test]
    fn student_pc8_domains() {
        let bytes = student_hive("SECURITY");
        let security = Hive::parse(&bytes).unwrap();
        let primary = primary_domain(&security).unwrap().unwrap();
        assert_eq!(primary.name.as_deref(), Some("INTERNAL"));
        assert_eq!(
            primary.sid.unwrap().to_string(),
            "S-1-5-21-226059406-2984137831-1201299043"
        );
        assert_eq!(
            account_domain_name(&security).unwrap().as_deref(),
            Some("STUDENT-PC8")
        );
        let evidence = domain_controller_evidence(&security, None).unwrap();
        assert!(!evidence.account_is_primary_domain);
        assert!(!evidence.is_domain_controller());
    }

    #[test]
    fn student_pc8_local_accounts() {
        let bytes = student_hive("SAM");
        let sam = Hive::parse(&bytes).unwrap();
        let mut accounts = local_accounts(&sam).unwrap();
        accounts.sort_by_key(|a| a.rid);
        let summary: Vec<(u32, &str)> = accounts.iter().map(|a| (a.rid, a.name.as_str())).collect();
        assert_eq!(
            summary,
            [
                (500, "Administrator"),
                (501, "Guest"),
                (1001, "gold_administrator")
            ]
        );
        for account in &accounts {
            assert!(
                account.has_user_key,
                "{} has no Users\\<RID> key",
                account.name
            );
            assert_eq!(
                account.sid.to_string(),
                format!("{STUDENT_PC8_MACHINE_SID}-{}", account.rid)
            );
        }
    }

    #[test]
    fn system_b_computer_name_and_product_type() {
        let Some(data) = system_b() else { return };
        let system = Hive::parse_unvalidated(data).unwrap();
        let set = current_control_set(&system).unwrap().unwrap();
        assert!(set.starts_with("ControlSet00"), "{set}");
        let names = computer_names(&system).unwrap().unwrap();
        assert_eq!(names.computer_name.as_deref(), Some("DESKTOP-PM6C56D"));
        assert_eq!(names.hostname.as_deref(), Some("DESKTOP-PM6C56D"));
        let product = product_type(&system).unwrap();
        assert_eq!(product.as_deref(), Some("WinNT"));
        // A workstation SYSTEM hive with a non-DC SECURITY hive is no DC.
        let security_bytes = student_hive("SECURITY");
        let security = Hive::parse(&security_bytes).unwrap();
        let evidence = domain_controller_evidence(&security, Some(&system)).unwrap();
        assert!(!evidence.is_domain_controller());
        // Facts from the wrong hive are absent, not errors.
        assert_eq!(windows_version(&system).unwrap(), None);
        assert_eq!(computer_names(&security).unwrap(), None);
    }

    /// SOFTWARE facts, on a hive made by hivex (hivexsh) from a temporary copy of SECURITY.
    #[test]
    fn software_version_and_profiles_from_a_hivex_built_hive() {
        if Command::new("hivexsh").arg("-h").output().is_err() {
            println!("SKIPPED: hivexsh is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("sidfs-software-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("SOFTWARE");
        std::fs::copy(realdata("winreg-kb-STUDENT-PC8/SECURITY"), &path).unwrap();
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        std::fs::set_permissions(&path, permissions).unwrap();
        let profile = format!("{STUDENT_PC8_MACHINE_SID}-1001");
        let script = format!(
            "add Microsoft\ncd Microsoft\nadd Windows NT\ncd Windows NT\nadd CurrentVersion\n\
             cd CurrentVersion\nsetval 3\nProductName\nstring:Windows 10 Pro\n\
             CurrentBuildNumber\nstring:19045\nDisplayVersion\nstring:22H2\n\
             add ProfileList\ncd ProfileList\nadd {profile}\ncd {profile}\nsetval 1\n\
             ProfileImagePath\nexpandstring:C:\\Users\\gold_administrator\ncommit\n"
        );
        let mut child = Command::new("hivexsh")
            .arg("-w")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let software = Hive::parse(&bytes).unwrap();
        let version = windows_version(&software).unwrap().unwrap();
        assert_eq!(version.product_name.as_deref(), Some("Windows 10 Pro"));
        assert_eq!(version.current_build.as_deref(), Some("19045"));
        assert_eq!(version.display_version.as_deref(), Some("22H2"));
        let profiles = user_profiles(&software).unwrap();
        assert_eq!(profiles.len(), 1);
        assert_eq!(profiles[0].key_name, profile);
        assert_eq!(profiles[0].sid.as_ref().unwrap().rid(), 1001);
        assert_eq!(
            profiles[0].profile_image_path.as_deref(),
            Some("C:\\Users\\gold_administrator")
        );
    }
}
