//! Cells: the allocation unit inside hive bins.
//!
//! A cell is an i32 size (including the size field itself, a multiple of 8) followed by the cell
//! data. Negative size = allocated, positive = free [Suhanov "Cell"; libregf "Hive bin cell"].
//! Records (nk, vk, sk, lists, data) live in the data part of allocated cells.

use super::{bin::HiveBin, CellOffset, FileOffset, Hive, HiveError, Result};

/// Size of the cell's size field.
const CELL_SIZE_FIELD: u64 = 4;
/// Cells are 8-byte aligned and at least 8 bytes long.
const CELL_ALIGNMENT: u32 = 8;

/// One cell, allocated or free, with its absolute position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell<'a> {
    file_offset: FileOffset,
    raw_size: i32,
    data: &'a [u8],
}

impl<'a> Cell<'a> {
    /// The cell's offset relative to the hive-bins data (what other cells store to refer to it).
    pub fn offset(&self) -> CellOffset {
        // Cells are only built from file offsets after the base block that fit a u32 reference.
        self.file_offset.to_cell().unwrap_or(CellOffset::NIL)
    }

    /// Absolute offset of the cell's size field.
    pub fn file_offset(&self) -> FileOffset {
        self.file_offset
    }

    /// Absolute offset of the cell's data (just after the size field).
    pub fn data_file_offset(&self) -> FileOffset {
        self.file_offset.plus(CELL_SIZE_FIELD)
    }

    /// The size field as stored (negative when allocated).
    pub fn raw_size(&self) -> i32 {
        self.raw_size
    }

    /// Total size of the cell in bytes, including the size field.
    pub fn size(&self) -> u32 {
        self.raw_size.unsigned_abs()
    }

    /// True for an allocated (negative-size) cell.
    pub fn is_allocated(&self) -> bool {
        self.raw_size < 0
    }

    /// The cell data (size − 4 bytes, including any slack after the record).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The first two data bytes (the record signature: "nk", "vk", "sk", "lf", ...), if present.
    pub fn signature(&self) -> Option<[u8; 2]> {
        match self.data {
            [a, b, ..] => Some([*a, *b]),
            _ => None,
        }
    }

    /// Fails unless the record in this cell starts with `expected`.
    pub fn expect_signature(&self, expected: &'static str) -> Result<()> {
        if self.data.get(..2) == Some(expected.as_bytes()) {
            Ok(())
        } else {
            Err(HiveError::BadSignature {
                offset: self.data_file_offset(),
                expected,
                found: self.data.get(..2).unwrap_or(self.data).to_vec(),
            })
        }
    }

    /// Fails unless the cell data holds at least `needed` bytes for the record `what`.
    pub fn expect_len(&self, needed: u64, what: &'static str) -> Result<()> {
        if (self.data.len() as u64) < needed {
            return Err(HiveError::OutOfBounds {
                offset: self.data_file_offset(),
                needed,
                available: self.data.len() as u64,
                what,
            });
        }
        Ok(())
    }

    /// `len` bytes of the cell data starting at `start`, with their absolute offset.
    pub fn sub_range(
        &self,
        start: u64,
        len: u64,
        what: &'static str,
    ) -> Result<(FileOffset, &'a [u8])> {
        let end = start.checked_add(len);
        match end {
            Some(end) if end <= self.data.len() as u64 => Ok((
                self.data_file_offset().plus(start),
                // start <= end <= data.len()
                &self.data[start as usize..end as usize],
            )),
            _ => Err(HiveError::OutOfBounds {
                offset: self.data_file_offset().plus(start),
                needed: len,
                available: (self.data.len() as u64).saturating_sub(start),
                what,
            }),
        }
    }
}

/// Reads the allocated cell referenced by `offset`: the reference must be 8-aligned and inside the
/// cell area of one bin, and the cell must be allocated and end inside that bin.
pub(crate) fn read_cell<'a>(hive: &Hive<'a>, offset: CellOffset) -> Result<Cell<'a>> {
    let file_offset = offset.to_file();
    if offset.is_nil() {
        return Err(HiveError::BadCellReference {
            offset: file_offset,
            reason: "nil reference (0xFFFFFFFF) where a cell is required",
        });
    }
    if !offset.0.is_multiple_of(CELL_ALIGNMENT) {
        return Err(HiveError::BadCellReference {
            offset: file_offset,
            reason: "not 8-byte aligned",
        });
    }
    let bins = hive.bins();
    let index = bins.partition_point(|bin| bin.end() <= file_offset);
    let bin = match bins.get(index) {
        Some(bin) if bin.contains_cell_area(file_offset) => bin,
        Some(_) => {
            return Err(HiveError::BadCellReference {
                offset: file_offset,
                reason: "points into an hbin header",
            })
        }
        None => {
            return Err(HiveError::BadCellReference {
                offset: file_offset,
                reason: "outside every hive bin",
            })
        }
    };
    let cell = read_cell_in_bin(hive, file_offset, bin)?;
    if !cell.is_allocated() {
        return Err(HiveError::CellNotAllocated {
            offset: file_offset,
            size: cell.raw_size,
        });
    }
    Ok(cell)
}

/// Reads the cell (allocated or free) whose size field is at `file_offset` inside `bin`.
pub(crate) fn read_cell_in_bin<'a>(
    hive: &Hive<'a>,
    file_offset: FileOffset,
    bin: &HiveBin,
) -> Result<Cell<'a>> {
    let available = bin.end().0.saturating_sub(file_offset.0);
    if available < CELL_SIZE_FIELD {
        return Err(HiveError::OutOfBounds {
            offset: file_offset,
            needed: CELL_SIZE_FIELD,
            available,
            what: "cell size",
        });
    }
    let size_bytes = hive.slice(file_offset, CELL_SIZE_FIELD, "cell size")?;
    let raw_size = i32::from_le_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]);
    let size = raw_size.unsigned_abs();
    if raw_size == 0 {
        return Err(HiveError::BadCellSize {
            offset: file_offset,
            size: raw_size,
            reason: "zero",
        });
    }
    if size < CELL_ALIGNMENT || size % CELL_ALIGNMENT != 0 {
        return Err(HiveError::BadCellSize {
            offset: file_offset,
            size: raw_size,
            reason: "not a multiple of 8",
        });
    }
    if u64::from(size) > available {
        return Err(HiveError::BadCellSize {
            offset: file_offset,
            size: raw_size,
            reason: "runs past the end of its hbin",
        });
    }
    let data = hive.slice(
        file_offset.plus(CELL_SIZE_FIELD),
        u64::from(size) - CELL_SIZE_FIELD,
        "cell data",
    )?;
    Ok(Cell {
        file_offset,
        raw_size,
        data,
    })
}
