//! The byte-level form of an [`IdentityChoice`]: every pattern of an old identifier and its
//! replacement, found in and applied to a buffer.

use memchr::memmem::Finder;

use super::guid::{guid_binary, parse_guid};
use super::{IdentifierKind, IdentityChoice, IdentityError};

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
