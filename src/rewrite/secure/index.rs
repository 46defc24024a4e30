//! The two view indexes of `$Secure` (`$SII`, `$SDH`): an `$INDEX_ROOT` value and INDX blocks
//! in `$INDEX_ALLOCATION`, walked in order from the root through subnode VCNs.
//!
//! [ntfs-3g layout.h INDEX_ROOT, INDEX_HEADER, INDEX_BLOCK, INDEX_ENTRY; docs/FORMAT-FACTS.md §3
//! "Indexes"]: INDEX_ROOT +0x04 collation, +0x08 index block size, +0x0C clusters (or 512-byte
//! units) per index block, +0x10 INDEX_HEADER. INDX block: "INDX", update sequence array,
//! +0x10 VCN, +0x18 INDEX_HEADER. INDEX_HEADER (offsets from itself): +0x00 entries offset,
//! +0x04 index length. INDEX_ENTRY of a view: +0x00 data offset (u16), +0x02 data length (u16),
//! +0x08 length, +0x0A key length, +0x0C flags (1 NODE, 2 END), +0x10 key; with NODE, the last
//! 8 bytes are the VCN of the subnode holding the entries that precede this one.
//!
//! Only blocks reached from the root are read: the allocation `$BITMAP` is not needed, and
//! stale blocks in unused space are left untouched.

use std::collections::HashSet;

use super::{Part, SecureError};
use crate::image::ntfs_volume::fixup::apply_fixups;
use crate::image::ntfs_volume::multi_sector::redo_fixups;
use crate::image::ImageOffset;
use crate::le;

/// Multi-sector fixup granule, whatever the sector size [mst.c].
const FIXUP_BLOCK: usize = 512;
const ROOT_COLLATION: usize = 0x04;
const ROOT_BLOCK_SIZE: usize = 0x08;
const ROOT_UNITS_PER_BLOCK: usize = 0x0C;
const ROOT_INDEX_HEADER: usize = 0x10;
const INDX_MAGIC: &[u8; 4] = b"INDX";
const INDX_VCN: usize = 0x10;
const INDX_INDEX_HEADER: usize = 0x18;
const INDEX_HEADER_LEN: usize = 0x10;
const ENTRY_DATA_OFFSET: usize = 0x00;
const ENTRY_DATA_LENGTH: usize = 0x02;
const ENTRY_LENGTH: usize = 0x08;
const ENTRY_KEY_LENGTH: usize = 0x0A;
const ENTRY_FLAGS: usize = 0x0C;
const ENTRY_KEY: usize = 0x10;
const ENTRY_NODE: u16 = 0x0001;
const ENTRY_END: u16 = 0x0002;
const VCN_LEN: usize = 8;
/// Deeper than any real B+ tree of 2^32 entries; bounds the recursion on hostile input.
const MAX_DEPTH: usize = 32;
/// Largest index block we accept (NTFS uses 4 KiB; 64 KiB is the largest cluster).
const MAX_BLOCK_SIZE: usize = 64 * 1024;

/// Undoes the update-sequence fixups of a multi-sector record (`base`: its offset in `part`,
/// for messages), through the volume's one multi-sector owner
/// (`image::ntfs_volume::fixup`): every 512-byte block must end with the USN.
pub fn unfix(buf: &mut [u8], part: Part, base: u64) -> Result<(), SecureError> {
    apply_fixups(buf, ImageOffset(base), "index block").map_err(|e| {
        SecureError::corrupt(
            part,
            base,
            "update sequence array",
            "valid fixups (a whole, untorn record)",
            e.to_string(),
        )
    })
}

/// Redoes the fixups of a record whose fixups [`unfix`] undid.
pub fn refix(buf: &mut [u8]) {
    redo_fixups(buf);
}

/// One INDX block reached from the root, with its fixups undone.
#[derive(Clone, Debug)]
struct Block {
    alloc_offset: usize,
    data: Vec<u8>,
}

/// An entry that carries a key, in the order of the in-order traversal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// 0 for the root, i + 1 for the i-th loaded block.
    node: usize,
    /// Start of the entry in its node's buffer.
    offset: usize,
    /// Entry length.
    len: usize,
    flags: u16,
}

/// An index (root and reached blocks, fixups undone) that can be edited and stored back.
#[derive(Clone, Debug)]
pub struct IndexTree {
    root_part: Part,
    alloc_part: Part,
    root: Vec<u8>,
    blocks: Vec<Block>,
}

/// What loading needs while walking.
struct Walk<'a> {
    alloc: &'a [u8],
    block_size: usize,
    vcn_unit: u64,
    visited: HashSet<u64>,
    slots: Vec<Slot>,
}

impl IndexTree {
    /// Parses the root, loads every block reachable from it and returns the keyed entries in
    /// order. The root's collation must be `collation`.
    pub fn load(
        root: &[u8],
        alloc: &[u8],
        root_part: Part,
        alloc_part: Part,
        collation: u32,
    ) -> Result<(IndexTree, Vec<Slot>), SecureError> {
        if root.len() < ROOT_INDEX_HEADER + INDEX_HEADER_LEN {
            return Err(SecureError::corrupt(
                root_part,
                0,
                "index root",
                format!("at least {} bytes", ROOT_INDEX_HEADER + INDEX_HEADER_LEN),
                format!("{} bytes", root.len()),
            ));
        }
        let found = le::u32_at(root, ROOT_COLLATION).unwrap_or_default();
        if found != collation {
            return Err(SecureError::corrupt(
                root_part,
                ROOT_COLLATION as u64,
                "collation rule",
                format!("{collation:#x}"),
                format!("{found:#x}"),
            ));
        }
        let block_size = le::u32_at(root, ROOT_BLOCK_SIZE).unwrap_or_default() as usize;
        let units = root[ROOT_UNITS_PER_BLOCK] as usize;
        // The VCN unit is the cluster when blocks are at least a cluster, else 512 bytes; the
        // root's per-block count is in that unit, so the unit is block size / count.
        let unit_ok = units > 0 && units <= 128 && block_size.is_multiple_of(units) && {
            let unit = block_size / units;
            unit >= FIXUP_BLOCK && unit.is_power_of_two()
        };
        if !(FIXUP_BLOCK..=MAX_BLOCK_SIZE).contains(&block_size)
            || !block_size.is_multiple_of(FIXUP_BLOCK)
            || !unit_ok
        {
            return Err(SecureError::corrupt(
                root_part,
                ROOT_BLOCK_SIZE as u64,
                "index block size and units per block",
                "a block of 512 to 65536 bytes (a multiple of 512) of whole units",
                format!("{block_size} bytes, {units} units"),
            ));
        }
        let mut tree = IndexTree {
            root_part,
            alloc_part,
            root: root.to_vec(),
            blocks: Vec::new(),
        };
        let mut walk = Walk {
            alloc,
            block_size,
            vcn_unit: (block_size / units) as u64,
            visited: HashSet::new(),
            slots: Vec::new(),
        };
        tree.visit(0, &mut walk, 0)?;
        Ok((tree, walk.slots))
    }

    fn buf(&self, node: usize) -> &[u8] {
        if node == 0 {
            &self.root
        } else {
            &self.blocks[node - 1].data
        }
    }

    fn buf_mut(&mut self, node: usize) -> &mut [u8] {
        if node == 0 {
            &mut self.root
        } else {
            &mut self.blocks[node - 1].data
        }
    }

    /// The part and the offset in it of `at` in node `node`.
    fn place(&self, node: usize, at: usize) -> (Part, u64) {
        if node == 0 {
            (self.root_part, at as u64)
        } else {
            (
                self.alloc_part,
                (self.blocks[node - 1].alloc_offset + at) as u64,
            )
        }
    }

    fn corrupt_at(
        &self,
        node: usize,
        at: usize,
        what: &'static str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> SecureError {
        let (part, offset) = self.place(node, at);
        SecureError::corrupt(part, offset, what, expected, found)
    }

    /// The little-endian u16 at `at` in node `node`; a field past the node's end is corrupt.
    fn u16_in(&self, node: usize, at: usize) -> Result<u16, SecureError> {
        le::u16_at(self.buf(node), at).ok_or_else(|| self.field_past_end(node, at))
    }

    /// The little-endian u32 at `at` in node `node`; a field past the node's end is corrupt.
    fn u32_in(&self, node: usize, at: usize) -> Result<u32, SecureError> {
        le::u32_at(self.buf(node), at).ok_or_else(|| self.field_past_end(node, at))
    }

    fn field_past_end(&self, node: usize, at: usize) -> SecureError {
        let len = self.buf(node).len();
        self.corrupt_at(
            node,
            at,
            "index field",
            format!("a field inside the node's {len} bytes"),
            "the end of the node",
        )
    }

    /// An error about the entry in `slot`.
    pub fn corrupt(
        &self,
        slot: &Slot,
        what: &'static str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> SecureError {
        self.corrupt_at(slot.node, slot.offset, what, expected, found)
    }

    /// Walks the entries of `node` in order, descending into subnodes first.
    fn visit(&mut self, node: usize, walk: &mut Walk<'_>, depth: usize) -> Result<(), SecureError> {
        if depth > MAX_DEPTH {
            return Err(self.corrupt_at(
                node,
                0,
                "index depth",
                format!("at most {MAX_DEPTH} levels"),
                "a deeper tree",
            ));
        }
        let header = if node == 0 {
            ROOT_INDEX_HEADER
        } else {
            INDX_INDEX_HEADER
        };
        let entries_offset = self.u32_in(node, header)? as usize;
        let index_length = self.u32_in(node, header + 4)? as usize;
        let buf = self.buf(node);
        let start = header.checked_add(entries_offset);
        let end = header.checked_add(index_length);
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if s >= header + INDEX_HEADER_LEN && s <= e && e <= buf.len() => {
                (s, e)
            }
            _ => {
                return Err(self.corrupt_at(
                    node,
                    header,
                    "index header",
                    format!("entries inside the node's {} bytes", buf.len()),
                    format!("entries offset {entries_offset}, index length {index_length}"),
                ))
            }
        };
        let mut p = start;
        loop {
            let buf = self.buf(node);
            if p + ENTRY_KEY > end {
                return Err(self.corrupt_at(
                    node,
                    p,
                    "index entry",
                    format!("an entry (ending with an END entry) before {end:#x}"),
                    "the end of the node",
                ));
            }
            let len = usize::from(self.u16_in(node, p + ENTRY_LENGTH)?);
            let flags = self.u16_in(node, p + ENTRY_FLAGS)?;
            let min = if flags & ENTRY_NODE != 0 {
                ENTRY_KEY + VCN_LEN
            } else {
                ENTRY_KEY
            };
            if len < min || !len.is_multiple_of(8) || p + len > end {
                return Err(self.corrupt_at(
                    node,
                    p + ENTRY_LENGTH,
                    "index entry length",
                    format!("a multiple of 8, at least {min}, ending by {end:#x}"),
                    format!("{len}"),
                ));
            }
            if flags & ENTRY_NODE != 0 {
                let vcn_at = p + len - VCN_LEN;
                let vcn = le::u64_at(buf, vcn_at).ok_or_else(|| {
                    self.corrupt_at(
                        node,
                        vcn_at,
                        "subnode VCN",
                        "8 bytes",
                        "the end of the node",
                    )
                })?;
                let child = self.load_block(node, vcn_at, vcn, walk)?;
                self.visit(child, walk, depth + 1)?;
            }
            if flags & ENTRY_END != 0 {
                return Ok(());
            }
            walk.slots.push(Slot {
                node,
                offset: p,
                len,
                flags,
            });
            p += len;
        }
    }

    /// Loads the block at `vcn` (named at `from_at` in node `from`), checks it and undoes its
    /// fixups. Each block may be reached once: a second visit means a cycle or shared subtree.
    fn load_block(
        &mut self,
        from: usize,
        from_at: usize,
        vcn: u64,
        walk: &mut Walk<'_>,
    ) -> Result<usize, SecureError> {
        let offset = vcn
            .checked_mul(walk.vcn_unit)
            .and_then(|o| usize::try_from(o).ok());
        let range = offset.and_then(|o| Some(o..o.checked_add(walk.block_size)?));
        let range = match range {
            Some(r) if r.end <= walk.alloc.len() => r,
            _ => {
                return Err(self.corrupt_at(
                    from,
                    from_at,
                    "subnode VCN",
                    format!(
                        "a block inside the {}-byte index allocation",
                        walk.alloc.len()
                    ),
                    format!("VCN {vcn}"),
                ))
            }
        };
        if !walk.visited.insert(vcn) {
            return Err(self.corrupt_at(
                from,
                from_at,
                "subnode VCN",
                "a block not yet reached (a tree)",
                format!("VCN {vcn} again (a cycle or a shared block)"),
            ));
        }
        let mut data = walk.alloc[range.clone()].to_vec();
        if &data[0..4] != INDX_MAGIC {
            return Err(SecureError::corrupt(
                self.alloc_part,
                range.start as u64,
                "index block magic",
                "INDX",
                format!("{:02x?}", &data[0..4]),
            ));
        }
        unfix(&mut data, self.alloc_part, range.start as u64)?;
        let found = u64::from_le_bytes(data[INDX_VCN..INDX_VCN + 8].try_into().expect("8"));
        if found != vcn {
            return Err(SecureError::corrupt(
                self.alloc_part,
                (range.start + INDX_VCN) as u64,
                "index block VCN",
                format!("{vcn}"),
                format!("{found}"),
            ));
        }
        self.blocks.push(Block {
            alloc_offset: range.start,
            data,
        });
        Ok(self.blocks.len())
    }

    /// The key and data of a slot, checking the entry's declared lengths against `key_len`
    /// and `data_len` and that both lie inside the entry (before a subnode VCN).
    pub fn key_and_data(
        &self,
        slot: &Slot,
        key_len: usize,
        data_len: usize,
    ) -> Result<(&[u8], &[u8]), SecureError> {
        let (key, data) = self.ranges(slot, key_len, data_len)?;
        let buf = self.buf(slot.node);
        Ok((&buf[key], &buf[data]))
    }

    fn ranges(
        &self,
        slot: &Slot,
        key_len: usize,
        data_len: usize,
    ) -> Result<(std::ops::Range<usize>, std::ops::Range<usize>), SecureError> {
        let p = slot.offset;
        let found_key = usize::from(self.u16_in(slot.node, p + ENTRY_KEY_LENGTH)?);
        let data_offset = usize::from(self.u16_in(slot.node, p + ENTRY_DATA_OFFSET)?);
        let found_data = usize::from(self.u16_in(slot.node, p + ENTRY_DATA_LENGTH)?);
        let content_end = self.content_end(slot);
        if found_key != key_len
            || found_data != data_len
            || data_offset < ENTRY_KEY + key_len
            || data_offset + data_len > content_end
        {
            return Err(self.corrupt(
                slot,
                "index entry layout",
                format!(
                    "a {key_len}-byte key and {data_len}-byte data inside the {}-byte entry",
                    content_end
                ),
                format!("key length {found_key}, data length {found_data} at offset {data_offset}"),
            ));
        }
        Ok((
            p + ENTRY_KEY..p + ENTRY_KEY + key_len,
            p + data_offset..p + data_offset + data_len,
        ))
    }

    /// Entry bytes usable for key and data (without a subnode VCN), relative to the entry.
    fn content_end(&self, slot: &Slot) -> usize {
        if slot.flags & ENTRY_NODE != 0 {
            slot.len - VCN_LEN
        } else {
            slot.len
        }
    }

    /// The `n` bytes after the data of a slot (the `$SDH` padding), inside the entry.
    pub fn after_data(&self, slot: &Slot, n: usize) -> Result<&[u8], SecureError> {
        let range = self.after_data_range(slot, n)?;
        Ok(&self.buf(slot.node)[range])
    }

    pub fn after_data_mut(&mut self, slot: &Slot, n: usize) -> Result<&mut [u8], SecureError> {
        let range = self.after_data_range(slot, n)?;
        Ok(&mut self.buf_mut(slot.node)[range])
    }

    fn after_data_range(
        &self,
        slot: &Slot,
        n: usize,
    ) -> Result<std::ops::Range<usize>, SecureError> {
        let p = slot.offset;
        let start = usize::from(self.u16_in(slot.node, p + ENTRY_DATA_OFFSET)?)
            + usize::from(self.u16_in(slot.node, p + ENTRY_DATA_LENGTH)?);
        if start + n > self.content_end(slot) {
            return Err(self.corrupt(
                slot,
                "index entry padding",
                format!("{n} bytes after the data inside the entry"),
                format!("data ending at {start} of {}", self.content_end(slot)),
            ));
        }
        Ok(p + start..p + start + n)
    }

    /// The key of a slot (its length as declared by the entry, checked by `key_and_data`).
    pub fn key_mut(&mut self, slot: &Slot) -> Result<&mut [u8], SecureError> {
        let key_len = usize::from(self.u16_in(slot.node, slot.offset + ENTRY_KEY_LENGTH)?);
        let data_len = usize::from(self.u16_in(slot.node, slot.offset + ENTRY_DATA_LENGTH)?);
        let (key, _) = self.ranges(slot, key_len, data_len)?;
        Ok(&mut self.buf_mut(slot.node)[key])
    }

    pub fn data_mut(&mut self, slot: &Slot) -> Result<&mut [u8], SecureError> {
        let key_len = usize::from(self.u16_in(slot.node, slot.offset + ENTRY_KEY_LENGTH)?);
        let data_len = usize::from(self.u16_in(slot.node, slot.offset + ENTRY_DATA_LENGTH)?);
        let (_, data) = self.ranges(slot, key_len, data_len)?;
        Ok(&mut self.buf_mut(slot.node)[data])
    }

    /// Redoes the fixups of every loaded block, writes them into `alloc` (the allocation as on
    /// disk, same length as at load) and returns the root value.
    pub fn store(&self, alloc: &mut [u8]) -> Vec<u8> {
        for block in &self.blocks {
            let mut data = block.data.clone();
            refix(&mut data);
            alloc[block.alloc_offset..block.alloc_offset + data.len()].copy_from_slice(&data);
        }
        self.root.clone()
    }
}
