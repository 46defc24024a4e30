//! Key values (vk records), value lists and the location of value data.
//!
//! vk layout [Suhanov "Key value"; libregf "Value key"]:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x00 | 2 | Signature "vk" |
//! | 0x02 | 2 | Name length (bytes; 0 for the default value) |
//! | 0x04 | 4 | Data size (bit 31 set: data stored in the data-offset field) |
//! | 0x08 | 4 | Data offset, or the data itself (≤ 4 bytes) |
//! | 0x0C | 4 | Data type |
//! | 0x10 | 2 | Flags (0x0001 VALUE_COMP_NAME) |
//! | 0x12 | 2 | Spare |
//! | 0x14 | … | Value name |
//!
//! A value list is a cell of u32 vk offsets, as many as the key's value count; it is not sorted.
//! Data larger than 16344 bytes in a hive of version 1.4+ is held in a db record
//! ([`super::BigData`]).

use super::big_data::{BigData, BIG_DATA_SEGMENT_SIZE};
use super::{u16_at, u32_at, Cell, CellOffset, FileOffset, Hive, HiveError, Name, Result};

const SIGNATURE: u64 = 0x00;
const NAME_LENGTH: usize = 0x02;
const DATA_SIZE: usize = 0x04;
const DATA_OFFSET: u64 = 0x08;
const DATA_TYPE: usize = 0x0C;
const FLAGS: usize = 0x10;
const VALUE_NAME: u64 = 0x14;

/// Bit 31 of the data size: the data is stored in the data-offset field.
const DATA_INLINE: u32 = 0x8000_0000;
/// At most 4 bytes fit in the data-offset field.
const MAX_INLINE: u32 = 4;
/// VALUE_COMP_NAME: the value name is stored one byte per character.
pub const VALUE_COMP_NAME: u16 = 0x0001;

/// Registry value types [MS-RRP 3.1.1.5 / winnt.h].
pub mod value_type {
    pub const REG_NONE: u32 = 0;
    pub const REG_SZ: u32 = 1;
    pub const REG_EXPAND_SZ: u32 = 2;
    pub const REG_BINARY: u32 = 3;
    pub const REG_DWORD: u32 = 4;
    pub const REG_DWORD_BIG_ENDIAN: u32 = 5;
    pub const REG_LINK: u32 = 6;
    pub const REG_MULTI_SZ: u32 = 7;
    pub const REG_QWORD: u32 = 11;
}

/// Where a value's data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStorage {
    /// No data (size 0).
    Empty,
    /// In the vk's data-offset field.
    Inline,
    /// In one data cell.
    Cell,
    /// In db segments.
    BigData,
}

/// A contiguous run of value data in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSegment<'h> {
    /// Absolute offset of the first data byte of this run.
    pub file_offset: FileOffset,
    /// The bytes of this run.
    pub bytes: &'h [u8],
}

/// A value's data: its storage and the file segments it occupies, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueData<'h> {
    pub storage: DataStorage,
    pub segments: Vec<DataSegment<'h>>,
}

impl ValueData<'_> {
    /// Total data length.
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.bytes.len()).sum()
    }

    /// True when there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data, concatenated.
    pub fn to_vec(&self) -> Vec<u8> {
        self.segments
            .iter()
            .flat_map(|s| s.bytes.iter().copied())
            .collect()
    }

    /// The data as UTF-16LE text up to the first NUL (REG_SZ / REG_EXPAND_SZ).
    pub fn to_utf16_string(&self) -> String {
        let bytes = self.to_vec();
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16_lossy(&units)
    }

    /// The data as a little-endian u32 (REG_DWORD), if it is exactly 4 bytes.
    pub fn to_u32(&self) -> Option<u32> {
        let bytes = self.to_vec();
        (bytes.len() == 4).then(|| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

/// A vk record, borrowed from its hive.
#[derive(Debug, Clone, Copy)]
pub struct ValueKey<'h> {
    hive: &'h Hive<'h>,
    cell: Cell<'h>,
}

impl<'h> ValueKey<'h> {
    /// Reads the vk record at `offset`, checking the signature and that the name fits.
    pub fn parse(hive: &'h Hive<'h>, offset: CellOffset) -> Result<ValueKey<'h>> {
        let cell = hive.cell(offset)?;
        cell.expect_signature("vk")?;
        cell.expect_len(VALUE_NAME, "vk record")?;
        let value = ValueKey { hive, cell };
        cell.sub_range(VALUE_NAME, u64::from(value.name_len()), "vk value name")?;
        Ok(value)
    }

    /// Reads the `count` values of the value list at `offset` (nothing when `count` is 0). The
    /// count must fit in the list cell.
    pub fn list(hive: &'h Hive<'h>, offset: CellOffset, count: u32) -> Result<Vec<ValueKey<'h>>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let list = hive.cell(offset)?;
        let max = list.data().len() as u64 / 4;
        if u64::from(count) > max {
            return Err(HiveError::CountTooLarge {
                offset: list.data_file_offset(),
                what: "value list",
                count: u64::from(count),
                max,
            });
        }
        (0..count as usize)
            .map(|i| {
                let vk = CellOffset(u32_at(list.data(), i * 4).unwrap_or(u32::MAX));
                ValueKey::parse(hive, vk)
            })
            .collect()
    }

    /// The cell holding this record.
    pub fn cell(&self) -> Cell<'h> {
        self.cell
    }

    /// Absolute offset of the "vk" signature.
    pub fn file_offset(&self) -> FileOffset {
        self.cell.data_file_offset().plus(SIGNATURE)
    }

    fn u32_field(&self, at: usize) -> u32 {
        // parse() checked the 0x14 fixed bytes.
        u32_at(self.cell.data(), at).unwrap_or(0)
    }

    /// The name length in bytes.
    pub fn name_len(&self) -> u16 {
        u16_at(self.cell.data(), NAME_LENGTH).unwrap_or(0)
    }

    /// The flags.
    pub fn flags(&self) -> u16 {
        u16_at(self.cell.data(), FLAGS).unwrap_or(0)
    }

    /// The value name ("" for the default value) with the absolute offset of its bytes.
    pub fn name(&self) -> Name<'h> {
        let start = VALUE_NAME as usize;
        let len = usize::from(self.name_len());
        Name::new(
            // parse() checked that the name fits.
            self.cell.data().get(start..start + len).unwrap_or(&[]),
            self.flags() & VALUE_COMP_NAME != 0,
            self.cell.data_file_offset().plus(VALUE_NAME),
        )
    }

    /// The data type (REG_*; the value type of SAM `Names\<user>` keys holds the RID).
    pub fn data_type(&self) -> u32 {
        self.u32_field(DATA_TYPE)
    }

    /// The data size in bytes, with the inline bit masked off.
    pub fn data_size(&self) -> u32 {
        self.u32_field(DATA_SIZE) & !DATA_INLINE
    }

    /// True when the data lives in the data-offset field.
    pub fn is_inline(&self) -> bool {
        self.u32_field(DATA_SIZE) & DATA_INLINE != 0
    }

    /// The data-offset field (a cell offset unless the data is inline).
    pub fn data_offset(&self) -> CellOffset {
        CellOffset(self.u32_field(DATA_OFFSET as usize))
    }

    /// Locates the data: inline, one cell, or db segments. Fails when the data does not fit
    /// where the vk says it is.
    pub fn data(&self) -> Result<ValueData<'h>> {
        let size = self.data_size();
        if self.is_inline() {
            if size > MAX_INLINE {
                return Err(HiveError::BadValueData {
                    offset: self.file_offset(),
                    reason: "inline data size",
                    expected: u64::from(MAX_INLINE),
                    found: u64::from(size),
                });
            }
            let (file_offset, bytes) =
                self.cell
                    .sub_range(DATA_OFFSET, u64::from(size), "inline value data")?;
            let segments = if size == 0 {
                Vec::new()
            } else {
                vec![DataSegment { file_offset, bytes }]
            };
            let storage = if size == 0 {
                DataStorage::Empty
            } else {
                DataStorage::Inline
            };
            return Ok(ValueData { storage, segments });
        }
        if size == 0 {
            return Ok(ValueData {
                storage: DataStorage::Empty,
                segments: Vec::new(),
            });
        }
        if self.hive.base_block().supports_big_data() && size > BIG_DATA_SEGMENT_SIZE {
            let big = BigData::parse(self.hive, self.data_offset())?;
            return Ok(ValueData {
                storage: DataStorage::BigData,
                segments: big.segments(size)?,
            });
        }
        let cell = self.hive.cell(self.data_offset())?;
        if u64::from(size) > cell.data().len() as u64 {
            return Err(HiveError::BadValueData {
                offset: cell.data_file_offset(),
                reason: "size larger than its cell",
                expected: cell.data().len() as u64,
                found: u64::from(size),
            });
        }
        let (file_offset, bytes) = cell.sub_range(0, u64::from(size), "value data")?;
        Ok(ValueData {
            storage: DataStorage::Cell,
            segments: vec![DataSegment { file_offset, bytes }],
        })
    }
}
