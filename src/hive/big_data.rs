//! Big data (db) records: value data larger than 16344 bytes in hives of version 1.4 and later.
//!
//! Layout [Suhanov "Big data"; libregf "Data block key"]:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x00 | 2 | Signature "db" |
//! | 0x02 | 2 | Number of segments |
//! | 0x04 | 4 | Offset of the segment list (a cell of u32 segment cell offsets) |
//!
//! Every segment holds 16344 bytes of data except the last, which holds the rest.

use super::value::DataSegment;
use super::{u16_at, u32_at, Cell, CellOffset, FileOffset, Hive, HiveError, Result};

const SIGNATURE: u64 = 0x00;
const NUMBER_OF_SEGMENTS: usize = 0x02;
const SEGMENTS_LIST_OFFSET: usize = 0x04;
const HEADER_SIZE: u64 = 0x08;

/// Data bytes per db segment, 16344 (0x3FD8). Values up to this size use one plain data cell;
/// larger ones use db in hives of version 1.4+ [Suhanov; ReactOS `CM_KEY_VALUE_BIG`].
pub const BIG_DATA_SEGMENT_SIZE: u32 = 16344;

/// A db record, borrowed from its hive.
#[derive(Debug, Clone, Copy)]
pub struct BigData<'h> {
    hive: &'h Hive<'h>,
    cell: Cell<'h>,
}

impl<'h> BigData<'h> {
    /// Reads the db record at `offset`.
    pub fn parse(hive: &'h Hive<'h>, offset: CellOffset) -> Result<BigData<'h>> {
        let cell = hive.cell(offset)?;
        cell.expect_signature("db")?;
        cell.expect_len(HEADER_SIZE, "db record")?;
        Ok(BigData { hive, cell })
    }

    /// Absolute offset of the "db" signature.
    pub fn file_offset(&self) -> FileOffset {
        self.cell.data_file_offset().plus(SIGNATURE)
    }

    /// The stored number of segments.
    pub fn segment_count(&self) -> u16 {
        u16_at(self.cell.data(), NUMBER_OF_SEGMENTS).unwrap_or(0)
    }

    /// The cell offset of the segment list.
    pub fn segment_list_offset(&self) -> CellOffset {
        CellOffset(u32_at(self.cell.data(), SEGMENTS_LIST_OFFSET).unwrap_or(u32::MAX))
    }

    /// The segments holding `data_size` bytes: 16344 bytes from each segment cell, the rest from
    /// the last. The segment count must be exactly what the size needs.
    pub fn segments(&self, data_size: u32) -> Result<Vec<DataSegment<'h>>> {
        let needed = data_size.div_ceil(BIG_DATA_SEGMENT_SIZE);
        let count = u32::from(self.segment_count());
        if count != needed {
            return Err(HiveError::CountMismatch {
                offset: self.file_offset(),
                what: "db segment count for the value's data size",
                expected: u64::from(needed),
                found: u64::from(count),
            });
        }
        let list = self.hive.cell(self.segment_list_offset())?;
        let max = list.data().len() as u64 / 4;
        if u64::from(count) > max {
            return Err(HiveError::CountTooLarge {
                offset: list.data_file_offset(),
                what: "db segment list",
                count: u64::from(count),
                max,
            });
        }
        let mut remaining = data_size;
        let mut segments = Vec::with_capacity(count as usize);
        for index in 0..count as usize {
            let offset = CellOffset(u32_at(list.data(), index * 4).unwrap_or(u32::MAX));
            let segment = self.hive.cell(offset)?;
            let len = remaining.min(BIG_DATA_SEGMENT_SIZE);
            let (file_offset, bytes) = segment.sub_range(0, u64::from(len), "db segment data")?;
            segments.push(DataSegment { file_offset, bytes });
            remaining -= len;
        }
        Ok(segments)
    }
}
