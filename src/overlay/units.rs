//! Units of the delta: block indexes and the disk geometry that maps them to byte offsets.

/// The index of one delta block: bytes `[index * block_size, (index + 1) * block_size)` of the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockIndex(pub u64);

/// The block size the delta tracks. 4 KiB matches the NTFS cluster and the page size, so a guest
/// write of one cluster never needs a copy-on-write read, and the block map of a 128 GiB disk is
/// 4 MiB.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;

/// Geometry shared by the delta and the read/write paths: disk size and block size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub disk_size: u64,
    pub block_size: u32,
}

impl Geometry {
    pub fn new(disk_size: u64, block_size: u32) -> Self {
        assert!(block_size.is_power_of_two() && block_size >= 512);
        Geometry {
            disk_size,
            block_size,
        }
    }

    pub fn block_count(&self) -> u64 {
        self.disk_size.div_ceil(u64::from(self.block_size))
    }

    pub fn block_of(&self, offset: u64) -> BlockIndex {
        BlockIndex(offset / u64::from(self.block_size))
    }

    pub fn block_start(&self, block: BlockIndex) -> u64 {
        block.0 * u64::from(self.block_size)
    }

    /// Length of a block; the last block of a disk whose size is not a multiple of the block
    /// size is shorter.
    pub fn block_len(&self, block: BlockIndex) -> usize {
        let start = self.block_start(block);
        let end = (start + u64::from(self.block_size)).min(self.disk_size);
        end.saturating_sub(start) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_block_is_short_when_size_is_unaligned() {
        let g = Geometry::new(10_000, 4096);
        assert_eq!(g.block_count(), 3);
        assert_eq!(g.block_len(BlockIndex(0)), 4096);
        assert_eq!(g.block_len(BlockIndex(2)), 10_000 - 8192);
        assert_eq!(g.block_of(8191), BlockIndex(1));
    }
}
