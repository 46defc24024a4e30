//! The hive layer's error type. Every variant that concerns a structure carries the absolute file
//! offset of that structure, and expected/found values where there are some, so that a message
//! reads `at 0x1020: expected ..., found ...`.

use std::fmt;

use super::FileOffset;

/// A hive could not be read as asked. Corrupt or hostile input always ends here, never in a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HiveError {
    /// A structure of `needed` bytes at `offset` does not fit in the `available` bytes of the file
    /// (or of the cell or bin that contains it).
    OutOfBounds {
        offset: FileOffset,
        needed: u64,
        available: u64,
        what: &'static str,
    },
    /// A signature did not match.
    BadSignature {
        offset: FileOffset,
        expected: &'static str,
        found: Vec<u8>,
    },
    /// The base-block checksum does not match the computed one.
    BadChecksum {
        offset: FileOffset,
        expected: u32,
        found: u32,
    },
    /// Primary and secondary sequence numbers differ: the hive was not written completely, and its
    /// transaction logs must be replayed.
    SequenceMismatch { primary: u32, secondary: u32 },
    /// A base-block field has a value this reader does not accept.
    BadBaseBlockField {
        offset: FileOffset,
        field: &'static str,
        expected: &'static str,
        found: u64,
    },
    /// An hbin header is inconsistent (its offset field or its size).
    BadBin {
        offset: FileOffset,
        field: &'static str,
        expected: u64,
        found: u64,
    },
    /// A cell size is impossible: zero, unaligned, or running past the end of its bin.
    BadCellSize {
        offset: FileOffset,
        size: i32,
        reason: &'static str,
    },
    /// A cell reference points at a free (positive-size) cell.
    CellNotAllocated { offset: FileOffset, size: i32 },
    /// A cell reference points outside every hive bin, into a bin header, or is not 8-aligned.
    BadCellReference {
        offset: FileOffset,
        reason: &'static str,
    },
    /// A count read from the hive needs more bytes than its cell holds.
    CountTooLarge {
        offset: FileOffset,
        what: &'static str,
        count: u64,
        max: u64,
    },
    /// The number of entries reached through a list differs from the count stored in the key.
    CountMismatch {
        offset: FileOffset,
        what: &'static str,
        expected: u64,
        found: u64,
    },
    /// A structure was reached twice along one path (cyclic subkey list, self-parenting key,
    /// looping sk list, ri pointing at ri).
    Cycle {
        offset: FileOffset,
        what: &'static str,
    },
    /// The key tree is deeper than Windows allows.
    TooDeep { offset: FileOffset, depth: usize },
    /// A value's data cannot be located as its vk cell describes.
    BadValueData {
        offset: FileOffset,
        reason: &'static str,
        expected: u64,
        found: u64,
    },
    /// A value exists but its contents are not what the Windows fact being read requires.
    UnexpectedValue {
        path: String,
        value: String,
        expected: &'static str,
        found: String,
    },
}

impl fmt::Display for HiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HiveError::OutOfBounds {
                offset,
                needed,
                available,
                what,
            } => write!(
                f,
                "at {offset}: {what}: expected {needed} bytes, found {available}"
            ),
            HiveError::BadSignature {
                offset,
                expected,
                found,
            } => write!(
                f,
                "at {offset}: expected signature {expected:?}, found {:?}",
                String::from_utf8_lossy(found)
            ),
            HiveError::BadChecksum {
                offset,
                expected,
                found,
            } => write!(
                f,
                "at {offset}: base-block checksum: expected {expected:#010x}, found {found:#010x}"
            ),
            HiveError::SequenceMismatch { primary, secondary } => write!(
                f,
                "dirty hive: primary sequence {primary} != secondary sequence {secondary}"
            ),
            HiveError::BadBaseBlockField {
                offset,
                field,
                expected,
                found,
            } => write!(
                f,
                "at {offset}: base block {field}: expected {expected}, found {found:#x}"
            ),
            HiveError::BadBin {
                offset,
                field,
                expected,
                found,
            } => write!(
                f,
                "at {offset}: hbin {field}: expected {expected:#x}, found {found:#x}"
            ),
            HiveError::BadCellSize {
                offset,
                size,
                reason,
            } => write!(f, "at {offset}: cell size {size}: {reason}"),
            HiveError::CellNotAllocated { offset, size } => write!(
                f,
                "at {offset}: expected an allocated cell (negative size), found free size {size}"
            ),
            HiveError::BadCellReference { offset, reason } => {
                write!(f, "at {offset}: bad cell reference: {reason}")
            }
            HiveError::CountTooLarge {
                offset,
                what,
                count,
                max,
            } => write!(
                f,
                "at {offset}: {what}: expected at most {max} entries, found count {count}"
            ),
            HiveError::CountMismatch {
                offset,
                what,
                expected,
                found,
            } => write!(f, "at {offset}: {what}: expected {expected}, found {found}"),
            HiveError::Cycle { offset, what } => {
                write!(f, "at {offset}: {what} reached twice (cycle)")
            }
            HiveError::TooDeep { offset, depth } => {
                write!(f, "at {offset}: key tree deeper than {depth} levels")
            }
            HiveError::BadValueData {
                offset,
                reason,
                expected,
                found,
            } => write!(
                f,
                "at {offset}: value data {reason}: expected {expected}, found {found}"
            ),
            HiveError::UnexpectedValue {
                path,
                value,
                expected,
                found,
            } => write!(
                f,
                "{path} value {value:?}: expected {expected}, found {found}"
            ),
        }
    }
}

impl std::error::Error for HiveError {}

/// Result of hive operations.
pub type Result<T> = std::result::Result<T, HiveError>;
