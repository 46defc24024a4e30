//! Hive bins (hbin) and the walk over their cells.
//!
//! hbin header, 32 bytes [Suhanov "Hive bin"; libregf "Hive bin header"]:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x00 | 4 | Signature "hbin" |
//! | 0x04 | 4 | Offset of this bin, relative to the hive-bins data |
//! | 0x08 | 4 | Size of this bin (a multiple of 4096) |
//! | 0x0C | 8 | Reserved |
//! | 0x14 | 8 | Timestamp (first bin only) |
//! | 0x1C | 4 | Spare |
//!
//! Cells follow the header and tile the bin with no gaps [Suhanov "Cell"].

use super::cell::{self, Cell};
use super::{u32_at, BaseBlock, FileOffset, Hive, HiveError, Result, BASE_BLOCK_SIZE};

/// Size of the hbin header; the first cell starts right after it.
pub const HBIN_HEADER_SIZE: u64 = 32;

const SIGNATURE: usize = 0x00;
const OFFSET: usize = 0x04;
const SIZE: usize = 0x08;

/// Bins are allocated in 4096-byte units [Suhanov].
const HBIN_ALIGNMENT: u32 = 4096;

/// One hive bin: where it is and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiveBin {
    /// Absolute offset of the "hbin" signature.
    pub file_offset: FileOffset,
    /// Size in bytes including the header.
    pub size: u32,
}

impl HiveBin {
    /// Absolute offset just past the bin.
    pub fn end(&self) -> FileOffset {
        self.file_offset.plus(u64::from(self.size))
    }

    /// Absolute offset of the first cell.
    pub fn first_cell(&self) -> FileOffset {
        self.file_offset.plus(HBIN_HEADER_SIZE)
    }

    /// True when `offset` lies inside this bin's cell area.
    pub fn contains_cell_area(&self, offset: FileOffset) -> bool {
        offset >= self.first_cell() && offset < self.end()
    }
}

/// Reads hbin headers from file offset 4096 up to the end of the hive-bins data given by the
/// base block (or the end of the file, if that comes first). Returns the good bins and, if the walk
/// stopped at a bad header, the error. Bins are at least 4096 bytes, so the vector is bounded by
/// the file size.
pub(crate) fn read_bins(data: &[u8], base_block: &BaseBlock) -> (Vec<HiveBin>, Option<HiveError>) {
    let end = base_block.bins_end().0.min(data.len() as u64);
    let mut bins = Vec::new();
    let mut position = BASE_BLOCK_SIZE as u64;
    while position < end {
        match read_bin(data, position, end) {
            Ok(bin) => {
                position = bin.end().0;
                bins.push(bin);
            }
            Err(error) => return (bins, Some(error)),
        }
    }
    (bins, None)
}

fn read_bin(data: &[u8], position: u64, end: u64) -> Result<HiveBin> {
    let offset = FileOffset(position);
    let header_end = position.saturating_add(HBIN_HEADER_SIZE);
    if header_end > end {
        return Err(HiveError::OutOfBounds {
            offset,
            needed: HBIN_HEADER_SIZE,
            available: end - position,
            what: "hbin header",
        });
    }
    // position < header_end <= end <= data.len().
    let header = &data[position as usize..header_end as usize];
    if &header[SIGNATURE..SIGNATURE + 4] != b"hbin" {
        return Err(HiveError::BadSignature {
            offset,
            expected: "hbin",
            found: header[SIGNATURE..SIGNATURE + 4].to_vec(),
        });
    }
    let relative = position - BASE_BLOCK_SIZE as u64;
    let stored_offset = u32_at(header, OFFSET).unwrap_or(0);
    if u64::from(stored_offset) != relative {
        return Err(HiveError::BadBin {
            offset,
            field: "offset",
            expected: relative,
            found: u64::from(stored_offset),
        });
    }
    let size = u32_at(header, SIZE).unwrap_or(0);
    if size < HBIN_ALIGNMENT || !size.is_multiple_of(HBIN_ALIGNMENT) {
        return Err(HiveError::BadBin {
            offset,
            field: "size (a non-zero multiple of 4096)",
            expected: u64::from(HBIN_ALIGNMENT),
            found: u64::from(size),
        });
    }
    if position.saturating_add(u64::from(size)) > end {
        return Err(HiveError::OutOfBounds {
            offset,
            needed: u64::from(size),
            available: end - position,
            what: "hbin",
        });
    }
    Ok(HiveBin {
        file_offset: offset,
        size,
    })
}

/// Iterator over every cell of every bin; see [`Hive::cells`].
struct CellWalk<'h, 'a> {
    hive: &'h Hive<'a>,
    bin_index: usize,
    position: FileOffset,
    failed: bool,
}

impl<'a> Iterator for CellWalk<'_, 'a> {
    type Item = Result<Cell<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let bin = *self.hive.bins().get(self.bin_index)?;
            if self.position < bin.first_cell() {
                self.position = bin.first_cell();
            }
            if self.position >= bin.end() {
                self.bin_index += 1;
                continue;
            }
            // Each cell is at least 8 bytes, so the walk always advances.
            let result = cell::read_cell_in_bin(self.hive, self.position, &bin);
            match &result {
                Ok(cell) => self.position = self.position.plus(u64::from(cell.size())),
                Err(_) => self.failed = true,
            }
            return Some(result);
        }
    }
}

/// See [`Hive::cells`].
pub(crate) fn all_cells<'h, 'a>(hive: &'h Hive<'a>) -> impl Iterator<Item = Result<Cell<'a>>> + 'h {
    CellWalk {
        hive,
        bin_index: 0,
        position: FileOffset(0),
        failed: false,
    }
}
