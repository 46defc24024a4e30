//! Machine key containers, the files named after `MachineGuid`, and why they hold it.

use super::{FoundIdentifier, HeldIdentifier, IdentifierKind};

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

/// Why `MachineGuid` stays when files are named after it.
pub(super) fn machine_guid_held(f: &FoundIdentifier) -> Option<HeldIdentifier> {
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
