//! Subkey lists: index leaf (li), fast leaf (lf), hash leaf (lh) and index root (ri), plus the
//! name hash, hint and ordering that Windows keeps in them.
//!
//! Layout [Suhanov "Subkeys list"; libregf "Sub keys list"]:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x00 | 2 | Signature "li", "lf", "lh" or "ri" |
//! | 0x02 | 2 | Number of elements |
//! | 0x04 | … | Elements: li/ri a u32 cell offset each; lf a u32 key-node offset + 4-byte name hint; lh a u32 key-node offset + u32 name hash |
//!
//! An ri points to leaves (li, lf or lh), never to another ri; the concatenated leaves are sorted
//! by [`compare_names`] [Suhanov]. lf hint: the first 4 characters of the name as bytes,
//! NUL-padded, the first byte 0 if a character does not fit a byte [Suhanov; ReactOS
//! `CmpAddToLeaf`]. lh hash: H = 37·H + upcase(c) per character [Suhanov; ReactOS
//! `CmpComputeHashKey`].

use std::cmp::Ordering;
use std::collections::HashSet;

use super::{u16_at, u32_at, Cell, CellOffset, FileOffset, Hive, HiveError, Result};

const SIGNATURE: u64 = 0x00;
const NUMBER_OF_ELEMENTS: usize = 0x02;
const ELEMENTS: u64 = 0x04;

/// The four kinds of subkey list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubkeyListKind {
    /// "li": key-node offsets only.
    IndexLeaf,
    /// "lf": key-node offset + 4-byte name hint.
    FastLeaf,
    /// "lh": key-node offset + name hash.
    HashLeaf,
    /// "ri": offsets of leaves.
    IndexRoot,
}

impl SubkeyListKind {
    /// Size of one element in bytes.
    pub fn element_size(self) -> u64 {
        match self {
            SubkeyListKind::IndexLeaf | SubkeyListKind::IndexRoot => 4,
            SubkeyListKind::FastLeaf | SubkeyListKind::HashLeaf => 8,
        }
    }

    fn from_signature(signature: [u8; 2]) -> Option<SubkeyListKind> {
        match &signature {
            b"li" => Some(SubkeyListKind::IndexLeaf),
            b"lf" => Some(SubkeyListKind::FastLeaf),
            b"lh" => Some(SubkeyListKind::HashLeaf),
            b"ri" => Some(SubkeyListKind::IndexRoot),
            _ => None,
        }
    }
}

/// What a leaf element stores next to the key-node offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafTag {
    /// li: nothing.
    None,
    /// lf: the name hint.
    Hint([u8; 4]),
    /// lh: the name hash.
    Hash(u32),
}

impl LeafTag {
    /// Whether this tag is the one a key named `name` (UTF-16 code units) must have: its lh
    /// hash or lf hint; li entries have none.
    pub fn matches(&self, name: &[u16]) -> bool {
        match *self {
            LeafTag::Hash(h) => h == lh_hash(name),
            LeafTag::Hint(h) => h == lf_hint(name),
            LeafTag::None => true,
        }
    }
}

/// One element of a leaf (li, lf or lh), with the absolute offset of the element so that a
/// rewrite can patch its hash or permute elements in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafEntry {
    /// The leaf that holds this element.
    pub list: CellOffset,
    /// The leaf kind (element size 4 for li, 8 for lf/lh).
    pub kind: SubkeyListKind,
    /// Index of the element in its leaf.
    pub index: usize,
    /// Absolute offset of the element (its key-node offset field; the tag follows at +4).
    pub file_offset: FileOffset,
    /// The key node it points to.
    pub key: CellOffset,
    /// Hint or hash.
    pub tag: LeafTag,
}

/// A subkey list record, borrowed from its hive.
#[derive(Debug, Clone, Copy)]
pub struct SubkeyList<'h> {
    hive: &'h Hive<'h>,
    cell: Cell<'h>,
    kind: SubkeyListKind,
    count: u16,
}

impl<'h> SubkeyList<'h> {
    /// Reads the list at `offset`; the element count must fit in the cell.
    pub fn parse(hive: &'h Hive<'h>, offset: CellOffset) -> Result<SubkeyList<'h>> {
        let cell = hive.cell(offset)?;
        cell.expect_len(ELEMENTS, "subkey list header")?;
        let signature = cell.signature().unwrap_or_default();
        let kind =
            SubkeyListKind::from_signature(signature).ok_or_else(|| HiveError::BadSignature {
                offset: cell.data_file_offset(),
                expected: "li, lf, lh or ri",
                found: signature.to_vec(),
            })?;
        let count = u16_at(cell.data(), NUMBER_OF_ELEMENTS).unwrap_or(0);
        let max = (cell.data().len() as u64 - ELEMENTS) / kind.element_size();
        if u64::from(count) > max {
            return Err(HiveError::CountTooLarge {
                offset: cell.data_file_offset(),
                what: "subkey list elements",
                count: u64::from(count),
                max,
            });
        }
        Ok(SubkeyList {
            hive,
            cell,
            kind,
            count,
        })
    }

    /// The list kind.
    pub fn kind(&self) -> SubkeyListKind {
        self.kind
    }

    /// The stored element count.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The cell holding the list.
    pub fn cell(&self) -> Cell<'h> {
        self.cell
    }

    /// Absolute offset of the list's signature.
    pub fn file_offset(&self) -> FileOffset {
        self.cell.data_file_offset().plus(SIGNATURE)
    }

    /// Absolute offset of element `index`.
    fn element_offset(&self, index: usize) -> FileOffset {
        self.cell
            .data_file_offset()
            .plus(ELEMENTS + index as u64 * self.kind.element_size())
    }

    fn element_u32(&self, index: usize, field: u64) -> u32 {
        let at = ELEMENTS + index as u64 * self.kind.element_size() + field;
        // parse() checked count * element_size fits in the cell.
        u32_at(self.cell.data(), at as usize).unwrap_or(0)
    }

    /// The elements of this list if it is a leaf; an empty vector for an ri.
    pub fn own_leaf_entries(&self) -> Vec<LeafEntry> {
        if self.kind == SubkeyListKind::IndexRoot {
            return Vec::new();
        }
        (0..usize::from(self.count))
            .map(|index| {
                let tag = match self.kind {
                    SubkeyListKind::FastLeaf => {
                        LeafTag::Hint(self.element_u32(index, 4).to_le_bytes())
                    }
                    SubkeyListKind::HashLeaf => LeafTag::Hash(self.element_u32(index, 4)),
                    _ => LeafTag::None,
                };
                LeafEntry {
                    list: self.cell.offset(),
                    kind: self.kind,
                    index,
                    file_offset: self.element_offset(index),
                    key: CellOffset(self.element_u32(index, 0)),
                    tag,
                }
            })
            .collect()
    }

    /// The leaves this list resolves to: itself for a leaf, its children for an ri (each must be
    /// a leaf, and each may appear only once).
    pub fn leaves(&self) -> Result<Vec<SubkeyList<'h>>> {
        if self.kind != SubkeyListKind::IndexRoot {
            return Ok(vec![*self]);
        }
        let mut seen = HashSet::new();
        let mut leaves = Vec::with_capacity(usize::from(self.count));
        for index in 0..usize::from(self.count) {
            let offset = CellOffset(self.element_u32(index, 0));
            if !seen.insert(offset) {
                return Err(HiveError::Cycle {
                    offset: offset.to_file(),
                    what: "leaf listed twice in an index root",
                });
            }
            let leaf = SubkeyList::parse(self.hive, offset)?;
            if leaf.kind == SubkeyListKind::IndexRoot {
                return Err(HiveError::BadSignature {
                    offset: leaf.file_offset(),
                    expected: "li, lf or lh (an ri may only point to leaves)",
                    found: b"ri".to_vec(),
                });
            }
            leaves.push(leaf);
        }
        Ok(leaves)
    }

    /// Every leaf element reachable from this list, in order (ri leaves concatenated).
    pub fn leaf_entries(&self) -> Result<Vec<LeafEntry>> {
        Ok(self
            .leaves()?
            .iter()
            .flat_map(|leaf| leaf.own_leaf_entries())
            .collect())
    }
}

/// Uppercases one UTF-16 code unit the way key names are compared: the simple one-to-one Unicode
/// uppercase mapping of that code unit if it maps to a single BMP code unit, else the unit
/// itself (surrogates, and characters whose uppercase is several characters, such as ß).
///
/// Windows uses its own NLS upcase table (`RtlUpcaseUnicodeChar`); it can differ from Unicode for
/// characters added to Unicode casing recently (e.g. Georgian Mtavruli, Unicode 11). The tests
/// check every list in the real hives against this function.
pub fn upcase(unit: u16) -> u16 {
    if unit < 0x80 {
        return u16::from(u8::try_from(unit).unwrap_or(0).to_ascii_uppercase());
    }
    let Some(c) = char::from_u32(u32::from(unit)) else {
        return unit;
    };
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u16::try_from(u32::from(u)).unwrap_or(unit),
        _ => unit,
    }
}

/// The lh name hash: H = 0; for each code unit of the name, H = 37·H + upcase(unit) (mod 2^32).
/// For a compressed (Latin-1) name each byte is one unit [Suhanov; ReactOS `CmpComputeHashKey`].
pub fn lh_hash(name: &[u16]) -> u32 {
    name.iter().fold(0u32, |hash, &unit| {
        hash.wrapping_mul(37).wrapping_add(u32::from(upcase(unit)))
    })
}

/// The lf name hint: the first four code units as bytes (case kept), NUL-padded; if one of them
/// does not fit in a byte, the first byte is 0 [Suhanov; ReactOS `CmpAddToLeaf`].
pub fn lf_hint(name: &[u16]) -> [u8; 4] {
    let mut hint = [0u8; 4];
    for (slot, &unit) in hint.iter_mut().zip(name) {
        match u8::try_from(unit) {
            Ok(byte) => *slot = byte,
            Err(_) => {
                hint[0] = 0;
                break;
            }
        }
    }
    hint
}

/// The order of subkeys in a list: code units compared after [`upcase`]; when one name is a
/// prefix of the other, the shorter sorts first [Suhanov; ReactOS `CmpCompareCompressedName`,
/// `RtlCompareUnicodeString(.., TRUE)`]. `Equal` means "the same key name" to Windows.
pub fn compare_names(a: &[u16], b: &[u16]) -> Ordering {
    for (&x, &y) in a.iter().zip(b) {
        match upcase(x).cmp(&upcase(y)) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(text: &str) -> Vec<u16> {
        text.encode_utf16().collect()
    }

    #[test]
    fn hash_is_uppercase_37() {
        assert_eq!(lh_hash(&[]), 0);
        assert_eq!(lh_hash(&units("a")), u32::from(b'A'));
        assert_eq!(lh_hash(&units("ab")), 37 * 65 + 66);
        assert_eq!(lh_hash(&units("Policy")), lh_hash(&units("POLICY")));
        // Long names wrap around instead of overflowing.
        let long = units(&"z".repeat(255));
        let expected = long.iter().fold(0u64, |h, _| (h * 37 + 90) % (1 << 32));
        assert_eq!(u64::from(lh_hash(&long)), expected);
        assert_eq!(lh_hash(&units("é")), 0xC9);
    }

    #[test]
    fn hint_keeps_case_and_pads() {
        assert_eq!(lf_hint(&units("Policy")), *b"Poli");
        assert_eq!(lf_hint(&units("ab")), *b"ab\0\0");
        assert_eq!(lf_hint(&units("S-1-5-21")), *b"S-1-");
        assert_eq!(lf_hint(&units("\u{43A}xyz"))[0], 0);
    }

    #[test]
    fn order_is_case_insensitive_shorter_first() {
        assert_eq!(compare_names(&units("abc"), &units("ABC")), Ordering::Equal);
        assert_eq!(compare_names(&units("ab"), &units("abc")), Ordering::Less);
        assert_eq!(
            compare_names(&units("abd"), &units("ABC")),
            Ordering::Greater
        );
        // '_' (0x5F) sorts after uppercase letters, which is why the comparison uppercases.
        assert_eq!(compare_names(&units("a_"), &units("AZ")), Ordering::Greater);
        assert_eq!(
            compare_names(&units("S-1-5"), &units("S-1-5-21-226059406")),
            Ordering::Less
        );
        assert_eq!(
            compare_names(&units("S-1-5-21-226059406"), &units("S-1-5-21-4070822719")),
            Ordering::Less
        );
        assert_eq!(upcase(0xE9), 0xC9);
        assert_eq!(upcase(0xDF), 0xDF, "ß has no single-character uppercase");
        assert_eq!(upcase(0xD800), 0xD800);
    }
}
