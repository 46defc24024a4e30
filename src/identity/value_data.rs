//! Giving a value new data of another length inside an existing hive, without changing the
//! hive file's length [Suhanov "Cell", "Key value"; docs/FORMAT-FACTS.md §2]:
//!
//! * data of at most 4 bytes is stored in the vk record itself (data size with bit 31 set, the
//!   bytes in the data-offset field); a data cell it leaves is freed;
//! * data that fits the value's current data cell is written there with the new data size (a
//!   smaller size inside the same cell is valid; the cell keeps its size);
//! * data that does not fit gets a free cell of an existing hbin (the first one large enough, in
//!   file order); the cell is split so that the cells still tile the bin (the rest stays a free
//!   cell), and the old data cell is freed and merged with free neighbours.
//!
//! A freed cell's data is zeroed, so that no copy of an old identifier stays in the hive. No hbin
//! is added: when no free cell is large enough the rewrite is refused ([`IdentityError::NoFreeCell`]).

use super::IdentityError;
use crate::hive::{DataStorage, BASE_BLOCK_SIZE};

/// vk fields, relative to the "vk" signature [Suhanov "Key value"].
const VK_DATA_SIZE: usize = 0x04;
const VK_DATA_OFFSET: usize = 0x08;
/// Bit 31 of the data size: the data is in the data-offset field.
const DATA_INLINE: u32 = 0x8000_0000;
/// At most 4 bytes fit in the data-offset field.
const MAX_INLINE: usize = 4;
/// The cell size field, before the cell data.
const CELL_SIZE_FIELD: usize = 4;
/// Cells are multiples of 8 bytes.
const CELL_ALIGNMENT: usize = 8;

/// A value whose data may be replaced: where its vk is and where its data is now.
#[derive(Clone, Debug)]
pub struct ValueSlot {
    pub key: String,
    pub name: String,
    /// File offset of the "vk" signature.
    pub vk: usize,
    pub storage: DataStorage,
    /// File offset of the data cell's size field (`storage == Cell`).
    pub cell: Option<usize>,
    /// File offset of the data and its length now.
    pub data_at: usize,
    pub len: usize,
}

/// The free cells of a hive (file offset of the size field, total size), in file order.
#[derive(Clone, Debug, Default)]
pub struct FreeCells {
    cells: Vec<(usize, usize)>,
    /// Cells taken from the free list.
    pub allocated: usize,
}

impl FreeCells {
    pub fn new(mut cells: Vec<(usize, usize)>) -> FreeCells {
        cells.sort();
        FreeCells {
            cells,
            allocated: 0,
        }
    }

    fn largest(&self) -> usize {
        self.cells.iter().map(|c| c.1).max().unwrap_or(0)
    }

    /// Takes a cell of `needed` bytes (a multiple of 8) from the first free cell large enough,
    /// splitting it; writes both size fields into `out`. Returns the file offset of the cell.
    fn take(&mut self, needed: usize, out: &mut [u8]) -> Option<usize> {
        let i = self.cells.iter().position(|&(_, size)| size >= needed)?;
        let (at, size) = self.cells[i];
        let rest = size - needed;
        write_size(out, at, -(i32::try_from(needed).ok()?))?;
        if rest == 0 {
            self.cells.remove(i);
        } else {
            let rest_at = at.checked_add(needed)?;
            write_size(out, rest_at, i32::try_from(rest).ok()?)?;
            self.cells[i] = (rest_at, rest);
        }
        self.allocated += 1;
        Some(at)
    }

    /// Frees the allocated cell at `at`: zeroed data, merged with a free cell right before
    /// and right after it (adjacent cells in the list are in one bin: a bin's first cell follows
    /// its header), positive size; it joins the free list.
    fn release(&mut self, at: usize, out: &mut [u8]) -> Option<()> {
        let raw = i32::from_le_bytes(out.get(at..at.checked_add(4)?)?.try_into().ok()?);
        let size = usize::try_from(raw.checked_neg()?).ok()?;
        let end = at.checked_add(size)?;
        out.get_mut(at.checked_add(CELL_SIZE_FIELD)?..end)?.fill(0);
        let mut pos = self.cells.partition_point(|c| c.0 < at);
        let (mut start, mut total) = (at, size);
        if let Some(&(next, next_size)) = self.cells.get(pos) {
            if next == end {
                out.get_mut(next..next.checked_add(CELL_SIZE_FIELD)?)?
                    .fill(0);
                total = total.checked_add(next_size)?;
                self.cells.remove(pos);
            }
        }
        if pos > 0 {
            let (prev, prev_size) = self.cells[pos - 1];
            if prev.checked_add(prev_size)? == at {
                out.get_mut(at..at.checked_add(CELL_SIZE_FIELD)?)?.fill(0);
                start = prev;
                total = total.checked_add(prev_size)?;
                pos -= 1;
                self.cells.remove(pos);
            }
        }
        write_size(out, start, i32::try_from(total).ok()?)?;
        self.cells.insert(pos, (start, total));
        Some(())
    }
}

fn write_size(out: &mut [u8], at: usize, size: i32) -> Option<()> {
    out.get_mut(at..at.checked_add(4)?)?
        .copy_from_slice(&size.to_le_bytes());
    Some(())
}

fn write_u32(out: &mut [u8], at: usize, v: u32) -> Option<()> {
    out.get_mut(at..at.checked_add(4)?)?
        .copy_from_slice(&v.to_le_bytes());
    Some(())
}

/// Size of the cell that holds `len` data bytes.
fn cell_size_for(len: usize) -> Option<usize> {
    let raw = len.checked_add(CELL_SIZE_FIELD)?;
    raw.checked_add(CELL_ALIGNMENT - 1)
        .map(|n| n / CELL_ALIGNMENT * CELL_ALIGNMENT)
}

/// Replaces the data of `slot` in `out` by `data` (see the module comment).
pub fn set_value_data(
    out: &mut [u8],
    free: &mut FreeCells,
    slot: &ValueSlot,
    data: &[u8],
) -> Result<(), IdentityError> {
    let bug = |what: &str| IdentityError::Bug {
        path: format!("{} [{}]", slot.key, slot.name),
        what: what.to_string(),
    };
    let new_len = u32::try_from(data.len()).map_err(|_| bug("value data too long"))?;
    let size_at = slot.vk + VK_DATA_SIZE;
    let offset_at = slot.vk + VK_DATA_OFFSET;
    let capacity = match (slot.storage, slot.cell) {
        (DataStorage::Cell, Some(cell)) => {
            let raw = out
                .get(cell..cell + 4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bug("data cell outside the hive"))?;
            (raw.unsigned_abs() as usize).saturating_sub(CELL_SIZE_FIELD)
        }
        _ => 0,
    };
    if data.len() <= MAX_INLINE {
        let mut field = [0u8; 4];
        field[..data.len()].copy_from_slice(data);
        out.get_mut(offset_at..offset_at + 4)
            .ok_or_else(|| bug("vk outside the hive"))?
            .copy_from_slice(&field);
        write_u32(out, size_at, new_len | DATA_INLINE).ok_or_else(|| bug("vk outside the hive"))?;
        if let (DataStorage::Cell, Some(cell)) = (slot.storage, slot.cell) {
            free.release(cell, out)
                .ok_or_else(|| bug("cannot free the old data cell"))?;
        }
        return Ok(());
    }
    if slot.storage == DataStorage::Cell && data.len() <= capacity {
        let end = slot.data_at + slot.len.max(data.len());
        let region = out
            .get_mut(slot.data_at..end)
            .ok_or_else(|| bug("value data outside the hive"))?;
        region.fill(0);
        region[..data.len()].copy_from_slice(data);
        write_u32(out, size_at, new_len).ok_or_else(|| bug("vk outside the hive"))?;
        return Ok(());
    }
    let needed = cell_size_for(data.len()).ok_or_else(|| bug("value data too long"))?;
    let Some(cell) = free.take(needed, out) else {
        return Err(IdentityError::NoFreeCell {
            key: slot.key.clone(),
            value: slot.name.clone(),
            needed: u32::try_from(needed).unwrap_or(u32::MAX),
            largest: u32::try_from(free.largest()).unwrap_or(u32::MAX),
        });
    };
    let region = out
        .get_mut(cell + CELL_SIZE_FIELD..cell + needed)
        .ok_or_else(|| bug("free cell outside the hive"))?;
    region.fill(0);
    region[..data.len()].copy_from_slice(data);
    let reference = cell
        .checked_sub(BASE_BLOCK_SIZE)
        .and_then(|r| u32::try_from(r).ok())
        .ok_or_else(|| bug("free cell before the hive bins"))?;
    write_u32(out, offset_at, reference).ok_or_else(|| bug("vk outside the hive"))?;
    write_u32(out, size_at, new_len).ok_or_else(|| bug("vk outside the hive"))?;
    if let (DataStorage::Cell, Some(old)) = (slot.storage, slot.cell) {
        free.release(old, out)
            .ok_or_else(|| bug("cannot free the old data cell"))?;
    }
    Ok(())
}
