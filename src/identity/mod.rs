//! Per-machine identifiers besides the SID: the computer name, `MachineGuid`, the WSUS
//! `SusClientId` and the MSDTC contact ids (CIDs). See docs/IDENTIFIERS.md.
//!
//! This module finds them in a master's hives ([`discover`]), derives the clone's values from the
//! seed ([`derive_hostname`], [`derive_guid`]), validates a `--hostname` ([`check_hostname`]),
//! records the choice ([`IdentityChoice`], kept in the clone's state.json) and turns it into a
//! byte-level [`IdentityMapping`]. [`hive::rewrite_identifiers`] applies the mapping to a hive
//! file after the SID rewrite, keeping every structure valid.
//!
//! One job per file: `discover.rs` finds the identifiers, `machine_keys.rs` the files named after
//! `MachineGuid`, `choice.rs` decides the new values (`derive.rs` derives them, `hostname.rs`
//! checks a `--hostname`, `guid.rs` reads and writes GUIDs), `mapping.rs` finds and replaces
//! their bytes.

#![forbid(unsafe_code)]

pub mod error;
pub mod hive;
pub mod unchanged;
pub mod value_data;

pub use choice::{
    parse_keep_list, Change, HeldIdentifier, IdentifierKind, IdentityChoice, IdentityRequest,
};
pub use derive::{derive_guid, derive_hostname};
pub use discover::{
    discover, discover_on, discover_on_volume, read_volume_file, FoundIdentifier, Location,
    SECURITY_HIVE, SMSCFG_INI, SOFTWARE_HIVE, SYSTEM_HIVE,
};
pub use error::IdentityError;
pub use guid::{format_guid_like, guid_binary, parse_guid};
pub use hostname::{check_hostname, NETBIOS_MAX};
pub use machine_keys::{is_container_of, MACHINE_KEY_DIRS};
pub(crate) use mapping::utf16;
pub use mapping::{IdOccurrence, IdentityMapping, NameChange};

mod choice;
mod derive;
mod discover;
mod guid;
mod hostname;
mod machine_keys;
mod mapping;

#[cfg(test)]
mod tests;
