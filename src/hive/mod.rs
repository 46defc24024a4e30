//! Registry hive (regf) reader that exposes every structure with its exact byte offsets.
//!
//! The SID rewrite patches hives in place, so each structure here reports the absolute file
//! offset ([`FileOffset`]) of the fields it may have to change: key-name bytes, value-data
//! segments, sk security descriptors and subkey-list entries. Cell references inside the hive are
//! [`CellOffset`]s, relative to the start of the hive-bins data; the two never mix implicitly.
//!
//! Sources: msuhanov/regf `Windows registry file format specification.md` ([Suhanov]) and
//! libyal/libregf `Windows NT Registry File (REGF) format.asciidoc` ([libregf]); see
//! docs/FORMAT-FACTS.md section 2.
//!
//! Hostile input: every offset computation is checked, every count is bounded by the bytes that
//! hold it, and every traversal keeps a visited set or a depth bound. A damaged hive yields a
//! [`HiveError`], never a panic, a hang or an unbounded allocation.

#![forbid(unsafe_code)]

mod base_block;
mod big_data;
mod bin;
mod cell;
pub mod check;
mod error;
mod key_node;
mod name;
mod security;
mod subkey_list;
mod value;
mod walk;
pub mod windows;

#[cfg(test)]
mod damaged_tests;
#[cfg(test)]
mod test_hives;

use std::fmt;

pub use base_block::{compute_checksum, BaseBlock, BASE_BLOCK_SIZE};
pub use big_data::{BigData, BIG_DATA_SEGMENT_SIZE};
pub use bin::{HiveBin, HBIN_HEADER_SIZE};
pub use cell::Cell;
pub use error::{HiveError, Result};
pub use key_node::{
    KeyNode, KEY_COMP_NAME, KEY_HIVE_ENTRY, KEY_HIVE_EXIT, KEY_NO_DELETE, KEY_SYM_LINK,
    KEY_VOLATILE,
};
pub use name::Name;
pub use security::SecurityKey;
pub use subkey_list::{
    compare_names, lf_hint, lh_hash, upcase, LeafEntry, LeafTag, SubkeyList, SubkeyListKind,
};
pub use value::{value_type, DataSegment, DataStorage, ValueData, ValueKey, VALUE_COMP_NAME};
pub use walk::{KeyWalk, WalkedKey, MAX_KEY_DEPTH};

/// The largest hive file sidfs reads into memory, for inspect, the rewrite and verify alike (a
/// hive that one of them read and another refused would make inspect and mount disagree). Real
/// SOFTWARE and COMPONENTS hives reach a few hundred MiB; anything larger is refused rather than
/// allocated.
pub const HIVE_SIZE_LIMIT: u64 = 1 << 30;

/// An offset relative to the start of the hive-bins data (file offset 4096), as stored in every
/// cell reference of a hive. 0xFFFFFFFF means "no cell" [Suhanov].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellOffset(pub u32);

impl CellOffset {
    /// The nil reference.
    pub const NIL: CellOffset = CellOffset(u32::MAX);

    /// True for the nil reference 0xFFFFFFFF.
    pub fn is_nil(self) -> bool {
        self == CellOffset::NIL
    }

    /// Absolute offset in the hive file: 4096 + self. Cannot overflow (u32 + 4096 fits in u64).
    pub fn to_file(self) -> FileOffset {
        FileOffset(BASE_BLOCK_SIZE as u64 + u64::from(self.0))
    }
}

impl fmt::Display for CellOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cell {:#x}", self.0)
    }
}

/// An absolute offset in the hive file (the base block starts at 0, the first hbin at 4096).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileOffset(pub u64);

impl FileOffset {
    /// `self + delta`, or `None` on overflow.
    pub fn checked_add(self, delta: u64) -> Option<FileOffset> {
        self.0.checked_add(delta).map(FileOffset)
    }

    /// `self + delta` where the caller has already bounded both by the file size (so the sum
    /// cannot overflow u64); saturates instead of panicking if that invariant is ever broken.
    pub(crate) fn plus(self, delta: u64) -> FileOffset {
        FileOffset(self.0.saturating_add(delta))
    }

    /// The cell offset this file offset corresponds to, if it lies after the base block.
    pub fn to_cell(self) -> Option<CellOffset> {
        let relative = self.0.checked_sub(BASE_BLOCK_SIZE as u64)?;
        u32::try_from(relative).ok().map(CellOffset)
    }
}

impl fmt::Display for FileOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

pub(crate) use crate::le::{u16_at, u32_at, u64_at};

/// A parsed hive file held in memory: the base block plus the list of hive bins.
///
/// Structures borrow from the file bytes (`'a`); keys, values and lists borrow the `Hive`.
#[derive(Debug, Clone)]
pub struct Hive<'a> {
    data: &'a [u8],
    base_block: BaseBlock,
    bins: Vec<HiveBin>,
    bins_error: Option<HiveError>,
}

impl<'a> Hive<'a> {
    /// Parses and validates a clean primary hive: base-block signature, checksum, equal sequence
    /// numbers, version 1.3–1.6, primary file type, hive-bins size within the file, and every hbin
    /// header. Fails on a dirty hive; use [`Hive::parse_unvalidated`] to read one anyway.
    pub fn parse(data: &'a [u8]) -> Result<Hive<'a>> {
        let base_block = BaseBlock::parse(data)?;
        base_block.validate(data)?;
        let (bins, bins_error) = bin::read_bins(data, &base_block);
        if let Some(error) = bins_error {
            return Err(error);
        }
        Ok(Hive {
            data,
            base_block,
            bins,
            bins_error: None,
        })
    }

    /// Parses a hive without checking the checksum, the sequence numbers, the version or the
    /// hive-bins size: for dirty or damaged images. The "regf" signature and a complete base block
    /// are still required. Bins are read up to the first bad hbin header (see
    /// [`Hive::bins_error`]); cells after it are reported as outside every bin.
    pub fn parse_unvalidated(data: &'a [u8]) -> Result<Hive<'a>> {
        let base_block = BaseBlock::parse(data)?;
        let (bins, bins_error) = bin::read_bins(data, &base_block);
        Ok(Hive {
            data,
            base_block,
            bins,
            bins_error,
        })
    }

    /// The whole hive file.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The parsed base block.
    pub fn base_block(&self) -> &BaseBlock {
        &self.base_block
    }

    /// True when the hive needs its transaction logs replayed: primary != secondary sequence
    /// number, or a base-block checksum that does not match [Suhanov].
    pub fn is_dirty(&self) -> bool {
        self.base_block.is_dirty()
    }

    /// The hive bins found (all of them for a validated hive).
    pub fn bins(&self) -> &[HiveBin] {
        &self.bins
    }

    /// Why bin reading stopped early, for a hive parsed without validation.
    pub fn bins_error(&self) -> Option<&HiveError> {
        self.bins_error.as_ref()
    }

    /// `len` bytes at `offset`, or [`HiveError::OutOfBounds`].
    pub fn slice(&self, offset: FileOffset, len: u64, what: &'static str) -> Result<&'a [u8]> {
        let available = self.data.len() as u64;
        let out_of_bounds = || HiveError::OutOfBounds {
            offset,
            needed: len,
            available: available.saturating_sub(offset.0),
            what,
        };
        let end = offset.0.checked_add(len).ok_or_else(out_of_bounds)?;
        if end > available {
            return Err(out_of_bounds());
        }
        // Both bounds are <= data.len(), which is a usize.
        Ok(&self.data[offset.0 as usize..end as usize])
    }

    /// The allocated cell at `offset`, checked to lie inside one hive bin.
    pub fn cell(&self, offset: CellOffset) -> Result<Cell<'a>> {
        cell::read_cell(self, offset)
    }

    /// Every cell of every bin, allocated or free, in file order. Stops after the first error.
    pub fn cells(&self) -> impl Iterator<Item = Result<Cell<'a>>> + '_ {
        bin::all_cells(self)
    }

    /// The key node at `offset`.
    pub fn key(&self, offset: CellOffset) -> Result<KeyNode<'_>> {
        KeyNode::parse(self, offset)
    }

    /// The root key (the base block's root cell).
    pub fn root_key(&self) -> Result<KeyNode<'_>> {
        self.key(self.base_block.root_cell)
    }

    /// Opens a key by its path below the root (`"Policy\\PolAcDmS"`), comparing each component
    /// case-insensitively as Windows does. The empty path is the root. `Ok(None)` if a component
    /// is missing.
    pub fn open_key(&self, path: &str) -> Result<Option<KeyNode<'_>>> {
        let mut key = self.root_key()?;
        let mut depth = 0usize;
        for component in path.split('\\').filter(|c| !c.is_empty()) {
            depth += 1;
            if depth > MAX_KEY_DEPTH {
                return Err(HiveError::TooDeep {
                    offset: key.file_offset(),
                    depth: MAX_KEY_DEPTH,
                });
            }
            match key.subkey(component)? {
                Some(child) => key = child,
                None => return Ok(None),
            }
        }
        Ok(Some(key))
    }

    /// A depth-first walk over every key reachable from the root, with its path. Bounded: each
    /// key cell is visited at most once and depth is limited to [`MAX_KEY_DEPTH`].
    pub fn walk(&self) -> KeyWalk<'_> {
        KeyWalk::new(self)
    }

    /// All sk cells, following the Flink list from the root key's sk. Fails on a broken or
    /// cyclic list (one that does not return to its start).
    pub fn security_keys(&self) -> Result<Vec<SecurityKey<'_>>> {
        security::security_list(self)
    }

    /// All allocated cells whose signature is "sk", found by walking the bins.
    pub fn security_keys_in_cells(&self) -> Result<Vec<SecurityKey<'_>>> {
        security::security_cells(self)
    }
}
