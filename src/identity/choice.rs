//! What the clone's identifiers become: the kinds `--keep` names, what the user asked for
//! ([`IdentityRequest`]) and the decision ([`IdentityChoice::decide`]) kept in state.json.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::derive::{derive_guid, derive_hostname};
use super::discover::FoundIdentifier;
use super::hostname::check_hostname;
use super::machine_keys::machine_guid_held;
use super::IdentityError;

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
