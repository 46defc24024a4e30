//! The clone's new identifiers, derived from its seed with SHA-256 (docs/IDENTIFIERS.md).

use sha2::{Digest, Sha256};

use super::guid::format_guid_like;
use super::hostname::NETBIOS_MAX;
use super::IdentifierKind;

/// Domain-separation prefix of every derivation (docs/IDENTIFIERS.md); bump the version to
/// change an algorithm, never silently.
const DERIVATION_TAG: &[u8] = b"sidfs-identifier-v1";

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
