//! Per-machine identifiers besides the SID: the computer name, `MachineGuid`, the WSUS
//! `SusClientId` and the MSDTC contact ids (CIDs). See docs/IDENTIFIERS.md.
//!
//! This module finds them in a master's hives ([`discover`]), derives the clone's values from the
//! seed ([`derive_hostname`], [`derive_guid`]), validates a `--hostname` ([`check_hostname`]),
//! records the choice ([`IdentityChoice`], kept in the clone's state.json) and turns it into a
//! byte-level [`IdentityMapping`]. [`hive::rewrite_identifiers`] applies the mapping to a hive
//! file after the SID rewrite, keeping every structure valid.

#![forbid(unsafe_code)]

pub mod error;
pub mod hive;
pub mod unchanged;
pub mod value_data;

pub use error::IdentityError;

use std::fmt;
use std::str::FromStr;

use memchr::memmem::Finder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hive::{value_type, Hive};

/// Domain-separation prefix of every derivation (docs/IDENTIFIERS.md); bump the version to
/// change an algorithm, never silently.
const DERIVATION_TAG: &[u8] = b"sidfs-identifier-v1";

/// Longest NetBIOS computer name (the 16th byte is the service suffix).
pub const NETBIOS_MAX: usize = 15;

/// Which identifier; the names are the words of `--keep`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentifierKind {
    Hostname,
    MachineGuid,
    Wsus,
    Msdtc,
}

impl IdentifierKind {
    pub const ALL: [IdentifierKind; 4] = [
        IdentifierKind::Hostname,
        IdentifierKind::MachineGuid,
        IdentifierKind::Wsus,
        IdentifierKind::Msdtc,
    ];

    pub fn word(self) -> &'static str {
        match self {
            IdentifierKind::Hostname => "hostname",
            IdentifierKind::MachineGuid => "machine-guid",
            IdentifierKind::Wsus => "wsus",
            IdentifierKind::Msdtc => "msdtc",
        }
    }
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl FromStr for IdentifierKind {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        IdentifierKind::ALL
            .into_iter()
            .find(|k| k.word().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| IdentityError::UnknownIdentifier { word: s.into() })
    }
}

/// Parses `--keep hostname,machine-guid` into its kinds.
pub fn parse_keep_list(s: &str) -> Result<Vec<IdentifierKind>, IdentityError> {
    let mut out = Vec::new();
    for word in s.split(',').filter(|w| !w.trim().is_empty()) {
        let kind: IdentifierKind = word.parse()?;
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    out.sort();
    Ok(out)
}

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

fn string_value(hive: &Hive<'_>, key: &str, value: &str) -> Option<String> {
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

/// A GUID string `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, optionally in braces, parsed to its
/// 16 bytes in textual order.
pub fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let s = s
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(s);
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = (b[i] as char).to_digit(16)?;
        let lo = (b[i + 1] as char).to_digit(16)?;
        out[n] = (hi * 16 + lo) as u8;
        n += 1;
        i += 2;
    }
    Some(out)
}

/// The GUID's textual bytes as the little-endian `GUID` structure Windows stores in binary.
pub fn guid_binary(text_order: &[u8; 16]) -> [u8; 16] {
    let t = text_order;
    [
        t[3], t[2], t[1], t[0], t[5], t[4], t[7], t[6], t[8], t[9], t[10], t[11], t[12], t[13],
        t[14], t[15],
    ]
}

/// Formats 16 bytes (textual order) like `template` (braces, letter case).
pub fn format_guid_like(bytes: &[u8; 16], template: &str) -> String {
    let hex = |r: std::ops::Range<usize>| -> String {
        bytes[r].iter().map(|b| format!("{b:02x}")).collect()
    };
    let mut s = format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    );
    if template.chars().any(|c| c.is_ascii_uppercase()) {
        s = s.to_ascii_uppercase();
    }
    if template.starts_with('{') {
        s = format!("{{{s}}}");
    }
    s
}

/// Where Windows keeps machine key containers, each a file named
/// `<MD5 of the container name>_<MachineGuid>` (docs/IDENTIFIERS.md): CryptoAPI machine keys,
/// CNG machine keys, and CNG keys of LocalSystem.
pub const MACHINE_KEY_DIRS: [&str; 3] = [
    r"ProgramData\Microsoft\Crypto\RSA\MachineKeys",
    r"ProgramData\Microsoft\Crypto\Keys",
    r"ProgramData\Microsoft\Crypto\SystemKeys",
];

/// Length of the hash part of a container file name: 16 MD5 bytes as hex.
const CONTAINER_HASH_LEN: usize = 32;

/// True when `file_name` is a key container named after `machine_guid`:
/// `<32 hex digits>_<MachineGuid>` (the GUID compared without braces, in any case).
pub fn is_container_of(file_name: &str, machine_guid: &str) -> bool {
    let guid = machine_guid.trim_start_matches('{').trim_end_matches('}');
    let Some((hash, suffix)) = file_name.split_once('_') else {
        return false;
    };
    hash.len() == CONTAINER_HASH_LEN
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && suffix.eq_ignore_ascii_case(guid)
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
        let current = sys
            .open_key("Select")
            .ok()
            .flatten()
            .and_then(|k| k.value("Current").ok().flatten())
            .and_then(|v| v.data().ok()?.to_u32())
            .map(|n| format!("ControlSet{n:03}"));
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

/// SECURITY `Policy\PolAcDmN`: the account domain's name (the computer name on a workstation),
/// stored as a self-relative UNICODE_STRING (Length, MaximumLength, offset 8 of the buffer).
fn policy_account_domain_name(security: &Hive<'_>) -> Option<String> {
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

fn digest(kind: &str, old: &str, seed: u64, round: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DERIVATION_TAG);
    h.update([0]);
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(old.as_bytes());
    h.update([0]);
    h.update(seed.to_le_bytes());
    h.update(round.to_le_bytes());
    h.finalize().into()
}

/// The clone's computer name for `seed`: as long as `old`, an uppercase letter then uppercase
/// letters and digits, from SHA-256 (docs/IDENTIFIERS.md). Never equal to `old`.
pub fn derive_hostname(old: &str, seed: u64) -> String {
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let len = old.chars().count().clamp(1, NETBIOS_MAX);
    let upper = old.to_ascii_uppercase();
    for round in 0.. {
        let d = digest("hostname", &upper, seed, round);
        let name: String = (0..len)
            .map(|i| {
                let set = if i == 0 { LETTERS } else { ALNUM };
                set[usize::from(d[i]) % set.len()] as char
            })
            .collect();
        if !name.eq_ignore_ascii_case(old) {
            return name;
        }
    }
    unreachable!("the rounds are unbounded")
}

/// The clone's GUID for `seed`, replacing `old` of identifier `kind`: a version-4 (random
/// form) GUID from SHA-256, formatted like `old` (braces, case).
pub fn derive_guid(kind: IdentifierKind, old: &str, seed: u64) -> String {
    let canonical = old
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase();
    for round in 0.. {
        let d = digest(kind.word(), &canonical, seed, round);
        let mut g = [0u8; 16];
        g.copy_from_slice(&d[..16]);
        g[6] = (g[6] & 0x0F) | 0x40; // version 4 [RFC 4122 4.4]
        g[8] = (g[8] & 0x3F) | 0x80; // variant 10
        let s = format_guid_like(&g, old);
        if !s.eq_ignore_ascii_case(old) {
            return s;
        }
    }
    unreachable!("the rounds are unbounded")
}

/// Checks a computer name given with `--hostname`: a NetBIOS name of at most 15 characters that
/// is also a DNS label: ASCII letters, digits and hyphens, not starting or ending with a hyphen,
/// not only digits.
pub fn check_hostname(name: &str) -> Result<(), IdentityError> {
    let bad = |why: &str| {
        Err(IdentityError::InvalidHostname {
            name: name.into(),
            reason: why.into(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > NETBIOS_MAX {
        return bad(&format!(
            "it has {} characters; a computer name has at most {NETBIOS_MAX}",
            name.chars().count()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return bad(&format!(
            "{c:?} is not allowed; use letters A-Z, digits and hyphens"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it must not start or end with a hyphen");
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return bad("it must not be only digits");
    }
    Ok(())
}

/// One identifier's old and new value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: IdentifierKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub old: String,
    pub new: String,
    /// For the computer name: the DNS host name (Tcpip `Hostname`, `NV Hostname`) when it is
    /// not `new` itself: a `--hostname` as the user gave it, where `new` is its upper-case
    /// NetBIOS form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
}

impl Change {
    /// The DNS host name this change writes: [`Change::dns`], else the new value.
    pub fn dns_name(&self) -> &str {
        self.dns.as_deref().unwrap_or(&self.new)
    }
}

/// The clone's identifiers: recorded in state.json (key `identity`) on first mount, shown in
/// clone.json and `sidfs status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityChoice {
    /// What changes.
    pub changes: Vec<Change>,
    /// What the user kept with `--keep` (found in the master, left as it is).
    #[serde(default)]
    pub kept: Vec<IdentifierKind>,
    /// What sidfs keeps by default because changing it would break the clone
    /// (docs/IDENTIFIERS.md): `MachineGuid` when machine key containers are named after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldIdentifier>,
}

/// An identifier kept as in the master although the user did not ask for it, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldIdentifier {
    pub kind: IdentifierKind,
    pub value: String,
    pub reason: String,
}

/// Why `MachineGuid` stays when files are named after it.
fn machine_guid_held(f: &FoundIdentifier) -> Option<HeldIdentifier> {
    (f.kind == IdentifierKind::MachineGuid && !f.named_files.is_empty()).then(|| HeldIdentifier {
        kind: f.kind,
        value: f.value.clone(),
        reason: format!(
            "{} machine key container(s) (e.g. {}) are named after it and Windows looks \
             containers up under the current MachineGuid, so a new one would orphan the \
             machine's private keys (docs/IDENTIFIERS.md)",
            f.named_files.len(),
            f.named_files[0]
        ),
    })
}

/// What the user asked for at mount or export.
#[derive(Clone, Debug, Default)]
pub struct IdentityRequest {
    pub hostname: Option<String>,
    pub keep: Vec<IdentifierKind>,
}

impl IdentityChoice {
    /// Decides the clone's identifiers for a master holding `found`.
    pub fn decide(
        found: &[FoundIdentifier],
        req: &IdentityRequest,
        seed: u64,
    ) -> Result<IdentityChoice, IdentityError> {
        if let Some(h) = &req.hostname {
            check_hostname(h)?;
            if req.keep.contains(&IdentifierKind::Hostname) {
                return Err(IdentityError::HostnameKept);
            }
        }
        let mut changes = Vec::new();
        let mut held = Vec::new();
        for f in found {
            if req.keep.contains(&f.kind) {
                continue;
            }
            if let Some(h) = machine_guid_held(f) {
                held.push(h);
                continue;
            }
            let mut dns = None;
            let new = match f.kind {
                // Any valid length: a name that grows or shrinks is written value by value
                // (hive::rewrite_identifiers). Windows stores the NetBIOS name upper case and
                // the DNS host name as given.
                IdentifierKind::Hostname => match &req.hostname {
                    Some(h) => {
                        if *h == f.value {
                            continue;
                        }
                        let upper = h.to_ascii_uppercase();
                        if upper != *h {
                            dns = Some(h.clone());
                        }
                        upper
                    }
                    None => derive_hostname(&f.value, seed),
                },
                kind => derive_guid(kind, &f.value, seed),
            };
            changes.push(Change {
                kind: f.kind,
                label: f.label.clone(),
                old: f.value.clone(),
                new,
                dns,
            });
        }
        if req.hostname.is_some() && !found.iter().any(|f| f.kind == IdentifierKind::Hostname) {
            return Err(IdentityError::NoComputerName);
        }
        Ok(IdentityChoice {
            changes,
            kept: req.keep.clone(),
            held,
        })
    }

    pub fn new_value(&self, kind: IdentifierKind) -> Option<&str> {
        self.changes
            .iter()
            .find(|c| c.kind == kind)
            .map(|c| c.new.as_str())
    }
}

/// How an occurrence must be delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boundary {
    /// Binary form: no condition.
    None,
    /// Text: the characters on both sides must not be ASCII letters, digits, `-` or `_`.
    Word,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Width {
    Byte,
    Utf16,
}

/// (kind, old bytes, new bytes, width, boundary) before its finder is built.
type RawPattern = (IdentifierKind, Vec<u8>, Vec<u8>, Width, Boundary);

struct Pattern {
    kind: IdentifierKind,
    old: Vec<u8>,
    new: Vec<u8>,
    width: Width,
    boundary: Boundary,
    finder: Finder<'static>,
}

/// One occurrence of an old identifier in a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdOccurrence {
    pub offset: usize,
    pub len: usize,
    pub kind: IdentifierKind,
    pattern: usize,
}

/// Replaces old identifiers by new ones of the same length, in every form: ASCII and UTF-16LE
/// text in upper and lower case (the case of each occurrence is kept), and GUIDs also as the
/// 16-byte binary `GUID`.
///
/// A computer name of another length, or whose DNS host name differs from its NetBIOS form, is
/// not a byte-for-byte pattern: it is kept as a [`NameChange`] that the hive rewrite applies
/// value by value (string values and `PolAcDmN` may grow or shrink there).
pub struct IdentityMapping {
    patterns: Vec<Pattern>,
    name: Option<NameChange>,
    /// The old computer name as UTF-16LE text (upper, lower, as found), delimited, each with
    /// its new NetBIOS form: what [`NameChange`] rewrites inside string values.
    name_patterns: Vec<Pattern>,
    /// The old computer name as ASCII text: only counted ([`IdentityMapping::count_old_name`]).
    name_ascii: Vec<Pattern>,
}

/// The computer name when it is applied value by value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameChange {
    pub old: String,
    /// The NetBIOS name (upper case).
    pub netbios: String,
    /// The DNS host name, as given.
    pub dns: String,
    /// The NetBIOS name has another length than the old one: the flat byte replacement is off
    /// and string values are resized.
    pub resized: bool,
}

/// The case forms of an identifier: upper to upper, lower to lower, and the form found (when it
/// is neither) to upper.
fn case_variants(old: &str, new: &str) -> Vec<(String, String)> {
    let mut variants = vec![
        (old.to_ascii_uppercase(), new.to_ascii_uppercase()),
        (old.to_ascii_lowercase(), new.to_ascii_lowercase()),
    ];
    if !variants.iter().any(|(o, _)| o == old) {
        variants.push((old.to_string(), new.to_ascii_uppercase()));
    }
    variants
}

fn build_patterns(raw: Vec<RawPattern>) -> Vec<Pattern> {
    raw.into_iter()
        .map(|(kind, old, new, width, boundary)| Pattern {
            finder: Finder::new(&old).into_owned(),
            kind,
            old,
            new,
            width,
            boundary,
        })
        .collect()
}

pub(crate) fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn is_word_unit(u: u16) -> bool {
    u < 0x80 && {
        let b = u as u8;
        b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
    }
}

impl IdentityMapping {
    pub fn new(choice: &IdentityChoice) -> Result<IdentityMapping, IdentityError> {
        let mut raw: Vec<RawPattern> = Vec::new();
        let mut name = None;
        let mut name_raw: Vec<RawPattern> = Vec::new();
        let mut ascii_raw: Vec<RawPattern> = Vec::new();
        for c in &choice.changes {
            let not_in_place = || IdentityError::NotInPlace {
                kind: c.kind,
                old: c.old.clone(),
                new: c.new.clone(),
            };
            if !c.old.is_ascii() || !c.new.is_ascii() || !c.dns_name().is_ascii() {
                return Err(not_in_place());
            }
            if c.kind == IdentifierKind::Hostname {
                let resized = c.old.len() != c.new.len();
                if resized || c.dns_name() != c.new {
                    name = Some(NameChange {
                        old: c.old.clone(),
                        netbios: c.new.clone(),
                        dns: c.dns_name().to_string(),
                        resized,
                    });
                    for (o, n) in case_variants(&c.old, &c.new) {
                        name_raw.push((c.kind, utf16(&o), utf16(&n), Width::Utf16, Boundary::Word));
                        ascii_raw.push((
                            c.kind,
                            o.into_bytes(),
                            n.into_bytes(),
                            Width::Byte,
                            Boundary::Word,
                        ));
                    }
                }
                if resized {
                    continue;
                }
            } else if c.old.len() != c.new.len() {
                return Err(not_in_place());
            }
            let (old, new) = match c.kind {
                IdentifierKind::Hostname => (c.old.clone(), c.new.clone()),
                _ => (
                    c.old
                        .trim_start_matches('{')
                        .trim_end_matches('}')
                        .to_string(),
                    c.new
                        .trim_start_matches('{')
                        .trim_end_matches('}')
                        .to_string(),
                ),
            };
            for (o, n) in case_variants(&old, &new) {
                raw.push((
                    c.kind,
                    o.clone().into_bytes(),
                    n.clone().into_bytes(),
                    Width::Byte,
                    Boundary::Word,
                ));
                raw.push((c.kind, utf16(&o), utf16(&n), Width::Utf16, Boundary::Word));
            }
            if c.kind != IdentifierKind::Hostname {
                let (Some(o), Some(n)) = (parse_guid(&old), parse_guid(&new)) else {
                    return Err(IdentityError::NotAGuid {
                        kind: c.kind,
                        value: c.old.clone(),
                    });
                };
                raw.push((
                    c.kind,
                    guid_binary(&o).to_vec(),
                    guid_binary(&n).to_vec(),
                    Width::Byte,
                    Boundary::None,
                ));
            }
        }
        Ok(IdentityMapping {
            patterns: build_patterns(raw),
            name,
            name_patterns: build_patterns(name_raw),
            name_ascii: build_patterns(ascii_raw),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && self.name.is_none()
    }

    /// The computer name when it is applied value by value (see [`NameChange`]).
    pub fn name_change(&self) -> Option<&NameChange> {
        self.name.as_ref()
    }

    /// Every occurrence in `buf` of an identifier replaced byte for byte, sorted,
    /// non-overlapping (the first found wins). A text match at the end of `buf` counts only if
    /// `end_is_final`.
    pub fn find_all(&self, buf: &[u8], end_is_final: bool) -> Vec<IdOccurrence> {
        Self::find_in(&self.patterns, buf, end_is_final)
    }

    /// Every occurrence of the old computer name as UTF-16LE text at an even offset of `buf`
    /// (a string value's data), when the name is applied value by value; replace them with
    /// [`IdentityMapping::name_replacement`].
    pub fn find_name(&self, buf: &[u8]) -> Vec<IdOccurrence> {
        let mut v = Self::find_in(&self.name_patterns, buf, true);
        v.retain(|o| o.offset % 2 == 0);
        v
    }

    /// Occurrences of the old computer name (UTF-16LE at any offset, and ASCII) in `buf`, when
    /// the name is applied value by value: what stays where a new length cannot go.
    pub fn count_old_name(&self, buf: &[u8]) -> usize {
        Self::find_in(&self.name_patterns, buf, true).len()
            + Self::find_in(&self.name_ascii, buf, true).len()
    }

    /// The new bytes for an occurrence found by [`IdentityMapping::find_name`].
    pub fn name_replacement(&self, occ: &IdOccurrence) -> &[u8] {
        &self.name_patterns[occ.pattern].new
    }

    fn find_in(patterns: &[Pattern], buf: &[u8], end_is_final: bool) -> Vec<IdOccurrence> {
        let mut found = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            for at in p.finder.find_iter(buf) {
                if p.boundary == Boundary::Word && !delimited(p, buf, at, end_is_final) {
                    continue;
                }
                found.push(IdOccurrence {
                    offset: at,
                    len: p.old.len(),
                    kind: p.kind,
                    pattern: i,
                });
            }
        }
        found.sort_by_key(|o| (o.offset, o.pattern));
        let mut out: Vec<IdOccurrence> = Vec::new();
        for o in found {
            if out.last().is_some_and(|l| l.offset + l.len > o.offset) {
                continue;
            }
            out.push(o);
        }
        out
    }
}

fn delimited(p: &Pattern, buf: &[u8], at: usize, end_is_final: bool) -> bool {
    let after = at + p.old.len();
    match p.width {
        Width::Byte => {
            let before_ok = at == 0 || !is_word_unit(u16::from(buf[at - 1]));
            let after_ok = match buf.get(after) {
                Some(&b) => !is_word_unit(u16::from(b)),
                None => end_is_final,
            };
            before_ok && after_ok
        }
        Width::Utf16 => {
            let before_ok = at < 2 || !is_word_unit(u16::from_le_bytes([buf[at - 2], buf[at - 1]]));
            let after_ok = match (buf.get(after), buf.get(after + 1)) {
                (Some(&lo), Some(&hi)) => !is_word_unit(u16::from_le_bytes([lo, hi])),
                _ => end_is_final,
            };
            before_ok && after_ok
        }
    }
}

impl IdentityMapping {
    /// The new bytes for an occurrence.
    pub fn replacement(&self, occ: &IdOccurrence) -> &[u8] {
        &self.patterns[occ.pattern].new
    }

    /// Replaces every occurrence in `buf`; returns how many.
    pub fn replace_all(&self, buf: &mut [u8]) -> usize {
        let occs = self.find_all(buf, true);
        for o in &occs {
            buf[o.offset..o.offset + o.len].copy_from_slice(self.replacement(o));
        }
        occs.len()
    }
}

#[cfg(test)]
mod tests;
