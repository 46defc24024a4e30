//! Key properties of stored instances: a SID in one cannot be rewritten in place.
//!
//! Facts [libyal dtformats, "WMI repository file format", "Identifier strings"; python
//! dissect.cim `index.py`, `Key._path`, read for facts only]: format version 2.1 names every
//! object in `INDEX.BTR` by strings like `NS_<digest>/CI_<digest>/IL_<digest>.<page>.<id>.<size>`,
//! where each digest is the SHA-256 of the upper-cased name in UTF-16LE, in 64 upper-case hex
//! digits; for an instance (`IL_`) the name is its key value. So an instance whose key value
//! holds the SID is indexed under the hash of the old SID string: a same-length rewrite of the
//! record would leave the index pointing at the old hash, and the instance could not be found
//! by its new key.
//!
//! sidfs does not walk class definitions for their `key` qualifiers. It decides fail closed
//! instead: for every string occurrence of the SID in a record, every candidate key string around
//! it (each start from the beginning of the run of printable characters the occurrence lies in
//! up to the occurrence, each end at the end of the SID, at the end of its RID, or at the end of
//! the run) is hashed as WMI hashes names, and a digest `INDEX.BTR` holds anywhere (after any
//! prefix: `IL_`, `KI_`, ...) means the SID lies in a key. A 256-bit digest does not match by
//! chance. Not covered: a key whose index name is not the plain string (compound keys, reference
//! paths), and binary SIDs (key properties are scalar strings or numbers).

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::rewrite::mapping::{Form, Occurrence};

/// Hex digits of a SHA-256 digest in an index string.
const DIGEST_HEX: usize = 64;
/// Characters considered on each side of an occurrence; a key value is a short string.
const MAX_RUN_CHARS: usize = 1024;
/// Names of the classes whose instances hold SIDs in `root\subscription`, to name a class from
/// its hash when `OBJECTS.DATA` does not spell it out.
const KNOWN_CLASSES: [&str; 9] = [
    "__EventFilter",
    "__EventConsumer",
    "__FilterToConsumerBinding",
    "CommandLineEventConsumer",
    "ActiveScriptEventConsumer",
    "LogFileEventConsumer",
    "NTEventLogEventConsumer",
    "SMTPEventConsumer",
    "__namespace",
];

/// The digest WMI (format version 2.1) indexes `name` under: SHA-256 of the upper-cased name in
/// UTF-16LE, 64 upper-case hex digits.
pub fn name_digest(name: &[u16]) -> [u8; DIGEST_HEX] {
    let mut h = Sha256::new();
    for &unit in name {
        let upper = match char::from_u32(u32::from(unit)) {
            Some(c) if c.is_ascii() => c.to_ascii_uppercase() as u16,
            Some(c) => {
                let mut up = c.to_uppercase();
                match (up.next(), up.next()) {
                    (Some(u), None) if (u as u32) <= 0xffff => u as u16,
                    _ => unit,
                }
            }
            None => unit,
        };
        h.update(upper.to_le_bytes());
    }
    let mut out = [0u8; DIGEST_HEX];
    for (i, b) in h.finalize().iter().enumerate() {
        out[2 * i] = b"0123456789ABCDEF"[usize::from(b >> 4)];
        out[2 * i + 1] = b"0123456789ABCDEF"[usize::from(b & 0xf)];
    }
    out
}

/// Every digest `INDEX.BTR` holds: runs of exactly 64 upper-case hex digits after a `_`.
pub fn index_digests(index: &[u8]) -> HashSet<[u8; DIGEST_HEX]> {
    let hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    let mut out = HashSet::new();
    let mut i = 0;
    while i < index.len() {
        if index[i] != b'_' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < index.len() && hex(index[end]) {
            end += 1;
        }
        if end - start == DIGEST_HEX {
            let mut d = [0u8; DIGEST_HEX];
            d.copy_from_slice(&index[start..end]);
            out.insert(d);
        }
        i = end.max(i + 1);
    }
    out
}

/// A character that can be part of a key value's text.
fn printable(unit: u16) -> bool {
    unit >= 0x20 && unit != 0x7f && !(0xd800..=0xdfff).contains(&unit) && unit < 0xfffe
}

/// The code units of `data` around a string occurrence, as (units, index of the occurrence's
/// first unit, index just past it); `None` for a binary occurrence.
fn run_around(data: &[u8], occ: &Occurrence) -> Option<(Vec<u16>, usize, usize)> {
    let width = match occ.form {
        Form::Binary => return None,
        Form::Ascii => 1,
        Form::Utf16 => 2,
    };
    let unit_at = |at: usize| -> Option<u16> {
        match width {
            1 => data.get(at).map(|&b| u16::from(b)).filter(|&u| u < 0x7f),
            _ => data
                .get(at..at.checked_add(2)?)
                .map(|b| u16::from_le_bytes([b[0], b[1]])),
        }
        .filter(|&u| printable(u))
    };
    let mut before = Vec::new();
    let mut at = occ.offset;
    while before.len() < MAX_RUN_CHARS && at >= width {
        match unit_at(at - width) {
            Some(u) => before.push(u),
            None => break,
        }
        at -= width;
    }
    before.reverse();
    let mut units = before;
    let first = units.len();
    let mut at = occ.offset;
    let end_of_sid = occ.offset.checked_add(occ.len)?;
    while at < end_of_sid {
        units.push(unit_at(at)?);
        at += width;
    }
    let past = units.len();
    let mut after = 0;
    while after < MAX_RUN_CHARS {
        match unit_at(at) {
            Some(u) => units.push(u),
            None => break,
        }
        at += width;
        after += 1;
    }
    Some((units, first, past))
}

/// The key value a SID occurrence lies in, when `INDEX.BTR` (its digests: [`index_digests`])
/// names an object by the hash of one of the candidate strings around it.
pub fn indexed_key(
    data: &[u8],
    occ: &Occurrence,
    digests: &HashSet<[u8; DIGEST_HEX]>,
) -> Option<String> {
    let (units, first, past) = run_around(data, occ)?;
    // The RID: "-" and decimal digits after the SID.
    let mut rid_end = past;
    if units.get(past) == Some(&u16::from(b'-')) {
        let mut e = past + 1;
        while units.get(e).is_some_and(|&u| (0x30..=0x39).contains(&u)) {
            e += 1;
        }
        if e > past + 1 {
            rid_end = e;
        }
    }
    let mut ends = vec![past, rid_end, units.len()];
    ends.dedup();
    for start in 0..=first {
        for &end in &ends {
            let candidate = &units[start..end];
            if digests.contains(&name_digest(candidate)) {
                return Some(String::from_utf16_lossy(candidate));
            }
        }
    }
    None
}

/// The name of the class an instance record belongs to (its first 128 bytes are the class
/// name's digest in UTF-16 hex digits), when a known class or an ASCII string of `objects` (a
/// class definition spells its name) hashes to it.
pub fn class_name(record: &[u8], objects: &[u8]) -> Option<String> {
    let digest: Vec<u8> = record
        .get(..2 * DIGEST_HEX)?
        .chunks_exact(2)
        .map(|c| if c[1] == 0 { c[0] } else { 0 })
        .collect();
    if !digest
        .iter()
        .all(|&b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    let utf16 = |s: &str| -> Vec<u16> { s.encode_utf16().collect() };
    if let Some(known) = KNOWN_CLASSES
        .iter()
        .find(|n| name_digest(&utf16(n))[..] == digest[..])
    {
        return Some((*known).to_string());
    }
    // Class names are identifiers: runs of letters, digits and `_`.
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < objects.len() {
        if !ident(objects[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < objects.len() && ident(objects[i]) {
            i += 1;
        }
        let run = &objects[start..i];
        if run.len() <= 256 {
            let units: Vec<u16> = run.iter().map(|&b| u16::from(b)).collect();
            if name_digest(&units)[..] == digest[..] {
                return Some(String::from_utf8_lossy(run).into_owned());
            }
        }
    }
    None
}
