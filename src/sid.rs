//! Security identifiers (SIDs) and the machine (account-domain) SID.
//!
//! Binary layout [MS-DTYP 2.4.2.2; libyal/libfwnt:documentation/Security Descriptor.asciidoc]:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 1 | Revision, must be 1 |
//! | 1 | 1 | SubAuthorityCount, at most 15 |
//! | 2 | 6 | IdentifierAuthority, 48-bit **big-endian** |
//! | 8 | 4·n | SubAuthority\[n\], u32 **little-endian** |
//!
//! String form [MS-DTYP 2.4.2.1]: `"S-1-" IdentifierAuthority 1*("-" 1*10DIGIT)`; the authority is
//! decimal when it is below 2^32, otherwise `0x` and 12 hex digits; sub-authorities are decimal
//! without leading zeros.
//!
//! A machine SID is the account-domain SID `S-1-5-21-a-b-c` ([`MachineSid`]); every local account
//! and group SID is that prefix plus a RID. The SID rewrite searches for the 12-byte little-endian
//! triple `a,b,c` and for the string `S-1-5-21-a-b-c` in ASCII and UTF-16LE.

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

/// Offset of the revision byte in a binary SID.
const SID_REVISION: usize = 0;
/// Offset of the sub-authority count byte.
const SID_SUB_AUTHORITY_COUNT: usize = 1;
/// Offset of the 6-byte big-endian identifier authority.
const SID_IDENTIFIER_AUTHORITY: usize = 2;
/// Offset of the first little-endian u32 sub-authority.
const SID_SUB_AUTHORITY: usize = 8;

/// The only SID revision defined by MS-DTYP.
pub const SID_REVISION_1: u8 = 1;
/// MS-DTYP limits a SID to 15 sub-authorities.
pub const MAX_SUB_AUTHORITIES: usize = 15;
/// The NT identifier authority (`S-1-5-...`).
pub const NT_AUTHORITY: u64 = 5;
/// First sub-authority of account-domain SIDs: SECURITY_NT_NON_UNIQUE.
pub const SECURITY_NT_NON_UNIQUE: u32 = 21;
/// Identifier authorities at or above this value are written in hexadecimal (MS-DTYP 2.4.2.1).
const AUTHORITY_DECIMAL_LIMIT: u64 = 1 << 32;
/// The identifier authority is a 48-bit value.
const AUTHORITY_MAX: u64 = (1 << 48) - 1;

/// Why a SID could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SidError {
    /// Fewer bytes than the header or the sub-authority count requires.
    Truncated { needed: usize, available: usize },
    /// The revision byte is not 1.
    BadRevision { found: u8 },
    /// More than [`MAX_SUB_AUTHORITIES`] sub-authorities, or none.
    BadSubAuthorityCount { found: usize },
    /// The string is not of the form `S-1-<authority>-<sub>...`.
    BadString { text: String, reason: &'static str },
    /// The SID is valid but is not an account-domain SID `S-1-5-21-a-b-c`.
    NotMachineSid { sid: String },
}

impl fmt::Display for SidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SidError::Truncated { needed, available } => write!(
                f,
                "binary SID truncated: expected {needed} bytes, found {available}"
            ),
            SidError::BadRevision { found } => {
                write!(f, "SID revision: expected 1, found {found}")
            }
            SidError::BadSubAuthorityCount { found } => write!(
                f,
                "SID sub-authority count: expected 1..={MAX_SUB_AUTHORITIES}, found {found}"
            ),
            SidError::BadString { text, reason } => {
                write!(f, "bad SID string {text:?}: {reason}")
            }
            SidError::NotMachineSid { sid } => {
                write!(f, "{sid} is not an account-domain SID S-1-5-21-a-b-c")
            }
        }
    }
}

impl std::error::Error for SidError {}

/// Any SID: revision 1, a 48-bit identifier authority and 1 to 15 sub-authorities.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid {
    authority: u64,
    sub_authorities: Vec<u32>,
}

impl Sid {
    /// Builds a SID. Fails when the authority does not fit in 48 bits or the sub-authority count
    /// is not 1..=15.
    pub fn new(authority: u64, sub_authorities: &[u32]) -> Result<Sid, SidError> {
        if authority > AUTHORITY_MAX {
            return Err(SidError::BadString {
                text: format!("{authority}"),
                reason: "identifier authority exceeds 48 bits",
            });
        }
        if sub_authorities.is_empty() || sub_authorities.len() > MAX_SUB_AUTHORITIES {
            return Err(SidError::BadSubAuthorityCount {
                found: sub_authorities.len(),
            });
        }
        Ok(Sid {
            authority,
            sub_authorities: sub_authorities.to_vec(),
        })
    }

    /// Parses a binary SID at the start of `bytes`. Trailing bytes are ignored; use
    /// [`Sid::binary_len`] to learn how many were consumed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sid, SidError> {
        if bytes.len() < SID_SUB_AUTHORITY {
            return Err(SidError::Truncated {
                needed: SID_SUB_AUTHORITY,
                available: bytes.len(),
            });
        }
        let revision = bytes[SID_REVISION];
        if revision != SID_REVISION_1 {
            return Err(SidError::BadRevision { found: revision });
        }
        let count = usize::from(bytes[SID_SUB_AUTHORITY_COUNT]);
        if count == 0 || count > MAX_SUB_AUTHORITIES {
            return Err(SidError::BadSubAuthorityCount { found: count });
        }
        // count <= 15, so this cannot overflow.
        let needed = SID_SUB_AUTHORITY + 4 * count;
        if bytes.len() < needed {
            return Err(SidError::Truncated {
                needed,
                available: bytes.len(),
            });
        }
        let authority = bytes[SID_IDENTIFIER_AUTHORITY..SID_SUB_AUTHORITY]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let sub_authorities = bytes[SID_SUB_AUTHORITY..needed]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Sid {
            authority,
            sub_authorities,
        })
    }

    /// The 48-bit identifier authority (5 for NT).
    pub fn authority(&self) -> u64 {
        self.authority
    }

    /// The sub-authorities, in order.
    pub fn sub_authorities(&self) -> &[u32] {
        &self.sub_authorities
    }

    /// The last sub-authority (the RID for account SIDs).
    pub fn rid(&self) -> u32 {
        // Invariant: a Sid always has at least one sub-authority.
        self.sub_authorities.last().copied().unwrap_or_default()
    }

    /// Size of the binary form: 8 + 4·n.
    pub fn binary_len(&self) -> usize {
        SID_SUB_AUTHORITY + 4 * self.sub_authorities.len()
    }

    /// The binary form (revision, count, big-endian authority, little-endian sub-authorities).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.binary_len());
        out.push(SID_REVISION_1);
        // Invariant: at most 15 sub-authorities.
        out.push(self.sub_authorities.len() as u8);
        out.extend_from_slice(&self.authority.to_be_bytes()[2..8]);
        for s in &self.sub_authorities {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    /// This SID with `rid` appended (domain SID → account SID).
    pub fn with_rid(&self, rid: u32) -> Result<Sid, SidError> {
        let mut subs = self.sub_authorities.clone();
        subs.push(rid);
        Sid::new(self.authority, &subs)
    }

    /// The SID without its last sub-authority (account SID → domain SID), if at least one remains.
    pub fn domain(&self) -> Option<Sid> {
        if self.sub_authorities.len() < 2 {
            return None;
        }
        Some(Sid {
            authority: self.authority,
            sub_authorities: self.sub_authorities[..self.sub_authorities.len() - 1].to_vec(),
        })
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.authority < AUTHORITY_DECIMAL_LIMIT {
            write!(f, "S-1-{}", self.authority)?;
        } else {
            write!(f, "S-1-0x{:012X}", self.authority)?;
        }
        for s in &self.sub_authorities {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

/// Parses one decimal component of at most 10 digits, no sign, no leading zeros (MS-DTYP says
/// sub-authorities are written without them; "0" itself is allowed).
fn parse_decimal(text: &str, part: &str) -> Result<u64, SidError> {
    let bad = |reason| SidError::BadString {
        text: text.to_owned(),
        reason,
    };
    if part.is_empty() || part.len() > 10 || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("component is not 1 to 10 decimal digits"));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(bad("component has a leading zero"));
    }
    part.parse::<u64>()
        .map_err(|_| bad("component out of range"))
}

impl FromStr for Sid {
    type Err = SidError;

    /// Parses `S-1-<authority>-<sub>...`; the authority may be decimal or `0x` + 12 hex digits.
    fn from_str(text: &str) -> Result<Sid, SidError> {
        let bad = |reason| SidError::BadString {
            text: text.to_owned(),
            reason,
        };
        let rest = text
            .strip_prefix("S-1-")
            .ok_or_else(|| bad("does not start with S-1-"))?;
        let mut parts = rest.split('-');
        let authority_text = parts.next().ok_or_else(|| bad("no authority"))?;
        let authority = if let Some(hex) = authority_text
            .strip_prefix("0x")
            .or_else(|| authority_text.strip_prefix("0X"))
        {
            if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("hex authority is not 12 hex digits"));
            }
            u64::from_str_radix(hex, 16).map_err(|_| bad("hex authority out of range"))?
        } else {
            let value = parse_decimal(text, authority_text)?;
            if value >= AUTHORITY_DECIMAL_LIMIT {
                return Err(bad("decimal authority must be below 2^32"));
            }
            value
        };
        let mut subs = Vec::new();
        for part in parts {
            if subs.len() == MAX_SUB_AUTHORITIES {
                return Err(SidError::BadSubAuthorityCount {
                    found: MAX_SUB_AUTHORITIES + 1,
                });
            }
            let value = parse_decimal(text, part)?;
            let value = u32::try_from(value).map_err(|_| bad("sub-authority exceeds u32"))?;
            subs.push(value);
        }
        Sid::new(authority, &subs)
    }
}

/// The machine SID: the account-domain SID `S-1-5-21-a-b-c`, identified by the triple `a,b,c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineSid {
    triple: [u32; 3],
}

impl MachineSid {
    /// Builds `S-1-5-21-a-b-c` from its three sub-authorities.
    pub fn new(a: u32, b: u32, c: u32) -> MachineSid {
        MachineSid { triple: [a, b, c] }
    }

    /// Accepts exactly `S-1-5-21-a-b-c` (authority 5, four sub-authorities, the first 21).
    pub fn from_sid(sid: &Sid) -> Result<MachineSid, SidError> {
        match (sid.authority(), sid.sub_authorities()) {
            (NT_AUTHORITY, &[SECURITY_NT_NON_UNIQUE, a, b, c]) => Ok(MachineSid::new(a, b, c)),
            _ => Err(SidError::NotMachineSid {
                sid: sid.to_string(),
            }),
        }
    }

    /// Parses the 24-byte binary form (as stored in SECURITY `Policy\PolAcDmS`). Bytes after the
    /// 24 are rejected: a 28-byte account SID is not a machine SID.
    pub fn from_bytes(bytes: &[u8]) -> Result<MachineSid, SidError> {
        let sid = Sid::from_bytes(bytes)?;
        if sid.binary_len() != bytes.len() {
            return Err(SidError::NotMachineSid {
                sid: format!(
                    "{sid} followed by {} extra bytes",
                    bytes.len() - sid.binary_len()
                ),
            });
        }
        MachineSid::from_sid(&sid)
    }

    /// The sub-authorities `a, b, c`.
    pub fn triple(&self) -> [u32; 3] {
        self.triple
    }

    /// As a general [`Sid`].
    pub fn to_sid(&self) -> Sid {
        let [a, b, c] = self.triple;
        Sid {
            authority: NT_AUTHORITY,
            sub_authorities: vec![SECURITY_NT_NON_UNIQUE, a, b, c],
        }
    }

    /// The account SID `S-1-5-21-a-b-c-rid`.
    pub fn account(&self, rid: u32) -> Sid {
        let [a, b, c] = self.triple;
        Sid {
            authority: NT_AUTHORITY,
            sub_authorities: vec![SECURITY_NT_NON_UNIQUE, a, b, c, rid],
        }
    }

    /// The 12-byte pattern the rewrite searches for in binary SIDs: `a`, `b`, `c` as
    /// little-endian u32s.
    pub fn binary_pattern(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        for (chunk, value) in out.chunks_exact_mut(4).zip(self.triple) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// `S-1-5-21-a-b-c` as ASCII bytes.
    pub fn ascii(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// `S-1-5-21-a-b-c` as UTF-16LE bytes (no terminator).
    pub fn utf16le(&self) -> Vec<u8> {
        self.to_string()
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect()
    }

    /// The number of decimal digits of `a`, `b` and `c`. A replacement SID must have the same
    /// digits so that every string occurrence keeps its length.
    pub fn digits(&self) -> [u32; 3] {
        self.triple.map(decimal_digits)
    }
}

/// Number of decimal digits of `value` (1 for 0).
fn decimal_digits(value: u32) -> u32 {
    value.checked_ilog10().map_or(1, |l| l + 1)
}

impl fmt::Display for MachineSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.triple;
        write!(f, "S-1-5-21-{a}-{b}-{c}")
    }
}

impl FromStr for MachineSid {
    type Err = SidError;

    fn from_str(text: &str) -> Result<MachineSid, SidError> {
        MachineSid::from_sid(&text.parse::<Sid>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// STUDENT-PC8's machine SID as stored in SECURITY `Policy\PolAcDmS` (the winreg-kb STUDENT-PC8 test hives in ../shared/realdata).
    const STUDENT_PC8_HEX: &str = "0104000000000005150000003fd3a3f21631edcac9217797";

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn binary_machine_sid_parses_to_its_string() {
        let bytes = hex(STUDENT_PC8_HEX);
        let sid = Sid::from_bytes(&bytes).unwrap();
        assert_eq!(sid.to_string(), "S-1-5-21-4070822719-3404542230-2541167049");
        assert_eq!(sid.binary_len(), 24);
        assert_eq!(sid.to_bytes(), bytes);
        let machine = MachineSid::from_bytes(&bytes).unwrap();
        assert_eq!(machine.triple(), [4070822719, 3404542230, 2541167049]);
        assert_eq!(&machine.binary_pattern()[..], &bytes[12..]);
        assert_eq!(machine.to_sid(), sid);
    }

    #[test]
    fn string_round_trips() {
        for text in [
            "S-1-5-21-4070822719-3404542230-2541167049",
            "S-1-5-21-226059406-2984137831-1201299043-1107",
            "S-1-5-32-544",
            "S-1-1-0",
            "S-1-5-18",
            "S-1-0x000100000000-7",
            "S-1-5-21-0-0-0",
        ] {
            let sid: Sid = text.parse().unwrap();
            assert_eq!(sid.to_string(), text);
            let again = Sid::from_bytes(&sid.to_bytes()).unwrap();
            assert_eq!(again, sid);
        }
    }

    #[test]
    fn bad_strings_are_rejected() {
        for text in [
            "",
            "S-1",
            "S-1-5",
            "S-2-5-21",
            "s-1-5-21",
            "S-1-5-21-",
            "S-1-5--21",
            "S-1-5-021",
            "S-1-5-4294967296",
            "S-1-5-12345678901",
            "S-1-4294967296-1",
            "S-1-0x1234-1",
            "S-1-5-+1",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
        ] {
            assert!(text.parse::<Sid>().is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn bad_binary_is_rejected_without_panic() {
        let good = hex(STUDENT_PC8_HEX);
        for len in 0..good.len() {
            assert!(Sid::from_bytes(&good[..len]).is_err(), "len {len}");
        }
        let mut bad_rev = good.clone();
        bad_rev[0] = 2;
        assert_eq!(
            Sid::from_bytes(&bad_rev),
            Err(SidError::BadRevision { found: 2 })
        );
        let mut zero = good.clone();
        zero[1] = 0;
        assert!(Sid::from_bytes(&zero).is_err());
        let mut many = good.clone();
        many[1] = 16;
        many.resize(8 + 4 * 16, 0);
        assert!(Sid::from_bytes(&many).is_err());
        // An account SID (5 sub-authorities) is a SID but not a machine SID.
        let account = MachineSid::from_bytes(&good)
            .unwrap()
            .account(500)
            .to_bytes();
        assert!(Sid::from_bytes(&account).is_ok());
        assert!(MachineSid::from_bytes(&account).is_err());
        assert!(MachineSid::from_bytes(&account[..24]).is_err());
    }

    #[test]
    fn machine_sid_encodings() {
        let m: MachineSid = "S-1-5-21-4070822719-3404542230-2541167049".parse().unwrap();
        assert_eq!(
            m.ascii(),
            b"S-1-5-21-4070822719-3404542230-2541167049".to_vec()
        );
        let utf16 = m.utf16le();
        assert_eq!(utf16.len(), 2 * m.ascii().len());
        assert!(utf16
            .chunks_exact(2)
            .zip(m.ascii())
            .all(|(u, a)| u == [a, 0]));
        assert_eq!(m.digits(), [10, 10, 10]);
        assert_eq!(MachineSid::new(0, 9, 10).digits(), [1, 1, 2]);
        assert_eq!(
            MachineSid::new(u32::MAX, 999_999_999, 1).digits(),
            [10, 9, 1]
        );
        assert_eq!(
            m.account(1001).to_string(),
            "S-1-5-21-4070822719-3404542230-2541167049-1001"
        );
        assert_eq!(m.account(1001).domain().unwrap(), m.to_sid());
        assert_eq!(m.account(1001).rid(), 1001);
        assert!("S-1-5-32-544".parse::<MachineSid>().is_err());
        assert!("S-1-5-21-1-2".parse::<MachineSid>().is_err());
    }
}
