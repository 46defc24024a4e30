//! Key security (sk) records: the self-relative security descriptors shared by keys.
//!
//! Layout [Suhanov "Key security"; libregf "Security key"]:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x00 | 2 | Signature "sk" |
//! | 0x02 | 2 | Reserved |
//! | 0x04 | 4 | Flink (next sk) |
//! | 0x08 | 4 | Blink (previous sk) |
//! | 0x0C | 4 | Reference count (number of key nodes using it) |
//! | 0x10 | 4 | Security descriptor size |
//! | 0x14 | … | Security descriptor (self-relative) |
//!
//! All sk cells of a hive form one circular doubly linked list through Flink/Blink. No hash or
//! sort order is kept for them, so a SID inside a descriptor can be patched in place.

use std::collections::HashSet;

use super::{u32_at, Cell, CellOffset, FileOffset, Hive, HiveError, Result};

const SIGNATURE: u64 = 0x00;
const FLINK: usize = 0x04;
const BLINK: usize = 0x08;
const REFERENCE_COUNT: usize = 0x0C;
const SECURITY_DESCRIPTOR_SIZE: usize = 0x10;
const SECURITY_DESCRIPTOR: u64 = 0x14;

/// An sk record, borrowed from its hive.
#[derive(Debug, Clone, Copy)]
pub struct SecurityKey<'h> {
    cell: Cell<'h>,
}

impl<'h> SecurityKey<'h> {
    /// Reads the sk record at `offset`; its descriptor must fit in the cell.
    pub fn parse(hive: &'h Hive<'h>, offset: CellOffset) -> Result<SecurityKey<'h>> {
        let cell = hive.cell(offset)?;
        cell.expect_signature("sk")?;
        cell.expect_len(SECURITY_DESCRIPTOR, "sk record")?;
        let key = SecurityKey { cell };
        cell.sub_range(
            SECURITY_DESCRIPTOR,
            u64::from(key.descriptor_size()),
            "sk security descriptor",
        )?;
        Ok(key)
    }

    fn u32_field(&self, at: usize) -> u32 {
        // parse() checked the 0x14 fixed bytes.
        u32_at(self.cell.data(), at).unwrap_or(0)
    }

    /// The cell holding this record.
    pub fn cell(&self) -> Cell<'h> {
        self.cell
    }

    /// This record's cell offset.
    pub fn offset(&self) -> CellOffset {
        self.cell.offset()
    }

    /// Absolute offset of the "sk" signature.
    pub fn file_offset(&self) -> FileOffset {
        self.cell.data_file_offset().plus(SIGNATURE)
    }

    /// Next sk in the list.
    pub fn flink(&self) -> CellOffset {
        CellOffset(self.u32_field(FLINK))
    }

    /// Previous sk in the list.
    pub fn blink(&self) -> CellOffset {
        CellOffset(self.u32_field(BLINK))
    }

    /// Number of key nodes that reference this sk.
    pub fn reference_count(&self) -> u32 {
        self.u32_field(REFERENCE_COUNT)
    }

    /// Size of the security descriptor in bytes.
    pub fn descriptor_size(&self) -> u32 {
        self.u32_field(SECURITY_DESCRIPTOR_SIZE)
    }

    /// Absolute offset of the first byte of the security descriptor.
    pub fn descriptor_file_offset(&self) -> FileOffset {
        self.cell.data_file_offset().plus(SECURITY_DESCRIPTOR)
    }

    /// The self-relative security descriptor bytes.
    pub fn descriptor(&self) -> &'h [u8] {
        let start = SECURITY_DESCRIPTOR as usize;
        let len = self.descriptor_size() as usize;
        // parse() checked that the descriptor fits.
        self.cell
            .data()
            .get(start..start.saturating_add(len))
            .unwrap_or(&[])
    }
}

/// See [`Hive::security_keys`]: follows Flink from the root key's sk until it comes back,
/// checking each Blink on the way.
pub(crate) fn security_list<'h>(hive: &'h Hive<'h>) -> Result<Vec<SecurityKey<'h>>> {
    let start = hive.root_key()?.security_offset();
    let mut keys = vec![SecurityKey::parse(hive, start)?];
    let mut seen = HashSet::from([start]);
    loop {
        let current = keys[keys.len() - 1];
        let next_offset = current.flink();
        let next = SecurityKey::parse(hive, next_offset)?;
        if next.blink() != current.offset() {
            return Err(HiveError::CountMismatch {
                offset: next.file_offset(),
                what: "sk Blink (offset of the previous sk)",
                expected: u64::from(current.offset().0),
                found: u64::from(next.blink().0),
            });
        }
        if next_offset == start {
            return Ok(keys);
        }
        if !seen.insert(next_offset) {
            return Err(HiveError::Cycle {
                offset: next.file_offset(),
                what: "sk list loops without returning to its start",
            });
        }
        keys.push(next);
    }
}

/// See [`Hive::security_keys_in_cells`].
pub(crate) fn security_cells<'h>(hive: &'h Hive<'h>) -> Result<Vec<SecurityKey<'h>>> {
    let mut keys = Vec::new();
    for cell in hive.cells() {
        let cell = cell?;
        if cell.is_allocated() && cell.signature() == Some(*b"sk") {
            keys.push(SecurityKey::parse(hive, cell.offset())?);
        }
    }
    Ok(keys)
}
