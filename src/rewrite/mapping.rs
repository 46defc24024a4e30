//! Finding and replacing the machine SID in bytes.

use memchr::memmem::Finder;

use super::error::RewriteError;
use crate::sid::MachineSid;

/// The encoding of one occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Form {
    /// The 12-byte little-endian sub-authority triple a, b, c.
    Binary,
    /// `S-1-5-21-a-b-c` in ASCII (or Latin-1), `S` or `s`, followed by a non-digit.
    Ascii,
    /// The same in UTF-16LE, followed by a code unit that is not an ASCII digit.
    Utf16,
}

/// One occurrence of the old SID: its offset in the searched buffer, its form and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub offset: usize,
    pub form: Form,
    pub len: usize,
}

struct Pattern {
    form: Form,
    old: Vec<u8>,
    new: Vec<u8>,
    finder: Finder<'static>,
}

/// Replaces one machine SID by another of the same shape (same number of decimal digits in each
/// sub-authority), so that every replacement keeps the size of what it replaces.
pub struct SidMapping {
    old: MachineSid,
    new: MachineSid,
    patterns: Vec<Pattern>,
}

/// Bytes of context a search needs on each side of a range so that every occurrence overlapping
/// the range is seen whole, with the code unit that follows it: the longest form is UTF-16 of
/// `S-1-5-21-` plus three 10-digit numbers and two dashes (82 bytes) plus one code unit.
pub const SEARCH_CONTEXT: usize = 84;

impl SidMapping {
    /// Fails if the two SIDs differ in the number of digits of any sub-authority (every string
    /// occurrence must keep its length) or are equal.
    pub fn new(old: MachineSid, new: MachineSid) -> Result<SidMapping, RewriteError> {
        if old.digits() != new.digits() {
            return Err(RewriteError::SidShape { old, new });
        }
        if old == new {
            return Err(RewriteError::SameSid(new));
        }
        let mut raw: Vec<(Form, Vec<u8>, Vec<u8>)> = vec![
            (
                Form::Binary,
                old.binary_pattern().to_vec(),
                new.binary_pattern().to_vec(),
            ),
            (Form::Ascii, old.ascii(), new.ascii()),
            (Form::Utf16, old.utf16le(), new.utf16le()),
        ];
        // Lower-case `s-1-5-21-…` forms appear in some logs and paths.
        let mut lower_ascii = old.ascii();
        lower_ascii[0] = b's';
        let mut lower_ascii_new = new.ascii();
        lower_ascii_new[0] = b's';
        raw.push((Form::Ascii, lower_ascii, lower_ascii_new));
        let mut lower_utf16 = old.utf16le();
        lower_utf16[0] = b's';
        let mut lower_utf16_new = new.utf16le();
        lower_utf16_new[0] = b's';
        raw.push((Form::Utf16, lower_utf16, lower_utf16_new));
        let patterns = raw
            .into_iter()
            .map(|(form, old, new)| {
                let finder = Finder::new(&old).into_owned();
                Pattern {
                    form,
                    old,
                    new,
                    finder,
                }
            })
            .collect();
        Ok(SidMapping { old, new, patterns })
    }

    pub fn old(&self) -> MachineSid {
        self.old
    }

    pub fn new_sid(&self) -> MachineSid {
        self.new
    }

    /// Every occurrence of the old SID in `buf`, by offset. A string occurrence at the very end of
    /// `buf` (no following code unit to check) counts only if `end_is_final`.
    pub fn find_all(&self, buf: &[u8], end_is_final: bool) -> Vec<Occurrence> {
        let mut found = Vec::new();
        for p in &self.patterns {
            for at in p.finder.find_iter(buf) {
                let after = at + p.old.len();
                let followed_ok = match p.form {
                    Form::Binary => true,
                    Form::Ascii => match buf.get(after) {
                        Some(b) => !b.is_ascii_digit(),
                        None => end_is_final,
                    },
                    Form::Utf16 => match (buf.get(after), buf.get(after + 1)) {
                        (Some(&lo), Some(&hi)) => !(hi == 0 && lo.is_ascii_digit()),
                        _ => end_is_final,
                    },
                };
                if followed_ok {
                    found.push(Occurrence {
                        offset: at,
                        form: p.form,
                        len: p.old.len(),
                    });
                }
            }
        }
        found.sort_by_key(|o| o.offset);
        found
    }

    /// The replacement bytes for an occurrence found in `buf`.
    pub fn replacement(&self, buf: &[u8], occ: &Occurrence) -> Vec<u8> {
        let old = &buf[occ.offset..occ.offset + occ.len];
        self.patterns
            .iter()
            .find(|p| p.form == occ.form && p.old == old)
            .map(|p| p.new.clone())
            .unwrap_or_else(|| old.to_vec())
    }

    /// Replaces every occurrence in `buf` (whose end is the end of the data). Returns how many.
    pub fn replace_all(&self, buf: &mut [u8]) -> usize {
        self.replace_in(buf, 0..buf.len(), true)
    }

    /// Replaces the occurrences in `buf` that overlap `range`, writing only bytes inside `range`
    /// (the rest of `buf` is context). Returns how many occurrences overlapped the range.
    pub fn replace_in(
        &self,
        buf: &mut [u8],
        range: std::ops::Range<usize>,
        end_is_final: bool,
    ) -> usize {
        let occs = self.find_all(buf, end_is_final);
        let mut n = 0;
        for occ in occs {
            let (s, e) = (occ.offset, occ.offset + occ.len);
            if e <= range.start || s >= range.end {
                continue;
            }
            let new = self.replacement(buf, &occ);
            for (i, byte) in new.iter().enumerate() {
                let at = s + i;
                if range.contains(&at) {
                    buf[at] = *byte;
                }
            }
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> SidMapping {
        SidMapping::new(
            MachineSid::new(4070822719, 3404542230, 2541167049),
            MachineSid::new(4111111111, 3222222222, 2333333333),
        )
        .unwrap()
    }

    #[test]
    fn replaces_all_three_forms_and_respects_the_digit_rule() {
        let m = mapping();
        let mut buf = Vec::new();
        buf.extend_from_slice(b"xxS-1-5-21-4070822719-3404542230-2541167049-500;");
        buf.extend_from_slice(b"S-1-5-21-4070822719-3404542230-25411670491;"); // longer c: another SID
        buf.extend_from_slice(
            &MachineSid::new(4070822719, 3404542230, 2541167049).binary_pattern(),
        );
        buf.extend_from_slice(&MachineSid::new(4070822719, 3404542230, 2541167049).utf16le());
        buf.extend_from_slice(&[b'_', 0]);
        buf.extend_from_slice(b"s-1-5-21-4070822719-3404542230-2541167049");
        let n = m.replace_all(&mut buf);
        assert_eq!(n, 4);
        let s = String::from_utf8_lossy(&buf);
        assert!(s.contains("S-1-5-21-4111111111-3222222222-2333333333-500;"));
        assert!(s.contains("S-1-5-21-4070822719-3404542230-25411670491;"));
        assert!(s.ends_with("s-1-5-21-4111111111-3222222222-2333333333"));
        assert!(m.find_all(&buf, true).is_empty());
    }

    #[test]
    fn replace_in_writes_only_inside_the_range() {
        let m = mapping();
        let mut buf = b"....S-1-5-21-4070822719-3404542230-2541167049-1001".to_vec();
        let orig = buf.clone();
        // Only the second half of the occurrence is in range (a block boundary inside it).
        let len = buf.len();
        let n = m.replace_in(&mut buf, 30..len, true);
        assert_eq!(n, 1);
        assert_eq!(&buf[..30], &orig[..30]);
        assert_eq!(
            &buf[30..],
            &b"....S-1-5-21-4111111111-3222222222-2333333333-1001"[30..]
        );
    }

    #[test]
    fn refuses_a_sid_of_another_shape() {
        let old = MachineSid::new(4070822719, 3404542230, 2541167049);
        assert!(SidMapping::new(old, MachineSid::new(407082271, 3404542230, 2541167049)).is_err());
        assert!(SidMapping::new(old, old).is_err());
    }
}
