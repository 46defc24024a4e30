//! The base block: the first 4096 bytes of a hive file.
//!
//! Layout [Suhanov "Base block"; libregf "File header"]:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x000 | 4 | Signature "regf" |
//! | 0x004 | 4 | Primary sequence number |
//! | 0x008 | 4 | Secondary sequence number |
//! | 0x00C | 8 | Last written timestamp (FILETIME) |
//! | 0x014 | 4 | Major version (1) |
//! | 0x018 | 4 | Minor version (3..=6) |
//! | 0x01C | 4 | File type (0 primary) |
//! | 0x020 | 4 | File format (1) |
//! | 0x024 | 4 | Root cell offset |
//! | 0x028 | 4 | Hive bins data size (multiple of 4096) |
//! | 0x02C | 4 | Clustering factor |
//! | 0x030 | 64 | File name (UTF-16LE, debug only) |
//! | 0x1FC | 4 | Checksum (XOR of the 127 dwords before it) |

use super::{u32_at, u64_at, CellOffset, FileOffset, HiveError, Result};

/// Size of the base block; the hive bins start right after it.
pub const BASE_BLOCK_SIZE: usize = 4096;

const SIGNATURE: usize = 0x000;
const PRIMARY_SEQUENCE_NUMBER: usize = 0x004;
const SECONDARY_SEQUENCE_NUMBER: usize = 0x008;
const LAST_WRITTEN_TIMESTAMP: usize = 0x00C;
const MAJOR_VERSION: usize = 0x014;
const MINOR_VERSION: usize = 0x018;
const FILE_TYPE: usize = 0x01C;
const FILE_FORMAT: usize = 0x020;
const ROOT_CELL_OFFSET: usize = 0x024;
const HIVE_BINS_DATA_SIZE: usize = 0x028;
const CLUSTERING_FACTOR: usize = 0x02C;
const FILE_NAME: usize = 0x030;
/// FileName is 64 bytes (32 UTF-16 code units).
const FILE_NAME_SIZE: usize = 64;
const CHECKSUM: usize = 0x1FC;
/// The checksum covers the 127 dwords (508 bytes) before the checksum field.
const CHECKSUM_DWORDS: usize = 127;

const REGF_SIGNATURE: &[u8; 4] = b"regf";
/// File type of a primary hive file (1, 2 and 6 are transaction logs).
pub const FILE_TYPE_PRIMARY: u32 = 0;
/// Hive bins are allocated in 4096-byte units.
const HBIN_ALIGNMENT: u32 = 4096;

/// The fields of a base block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBlock {
    pub primary_sequence: u32,
    pub secondary_sequence: u32,
    pub last_written: u64,
    pub major_version: u32,
    pub minor_version: u32,
    pub file_type: u32,
    pub file_format: u32,
    pub root_cell: CellOffset,
    pub hive_bins_data_size: u32,
    pub clustering_factor: u32,
    /// FileName decoded up to the first NUL (lossy).
    pub file_name: String,
    /// The checksum stored at 0x1FC.
    pub stored_checksum: u32,
    /// The checksum computed over the stored bytes.
    pub computed_checksum: u32,
}

/// The regf base-block checksum of `base_block` (at least 508 bytes): XOR of the 127 leading
/// little-endian dwords, with 0 stored as 1 and 0xFFFFFFFF as 0xFFFFFFFE [Suhanov; ReactOS
/// `HvpHiveHeaderChecksum`]. Dwords missing from a shorter buffer count as zero.
pub fn compute_checksum(base_block: &[u8]) -> u32 {
    let mut sum = 0u32;
    for i in 0..CHECKSUM_DWORDS {
        sum ^= u32_at(base_block, i * 4).unwrap_or(0);
    }
    match sum {
        0 => 1,
        u32::MAX => u32::MAX - 1,
        other => other,
    }
}

impl BaseBlock {
    /// Reads the base block at the start of `data`, checking only the "regf" signature and that
    /// the full 4096 bytes are present.
    pub fn parse(data: &[u8]) -> Result<BaseBlock> {
        let block = data.get(..BASE_BLOCK_SIZE).ok_or(HiveError::OutOfBounds {
            offset: FileOffset(0),
            needed: BASE_BLOCK_SIZE as u64,
            available: data.len() as u64,
            what: "base block",
        })?;
        if &block[SIGNATURE..SIGNATURE + 4] != REGF_SIGNATURE {
            return Err(HiveError::BadSignature {
                offset: FileOffset(SIGNATURE as u64),
                expected: "regf",
                found: block[SIGNATURE..SIGNATURE + 4].to_vec(),
            });
        }
        // The block is 4096 bytes long, so every fixed field below is present.
        let field = |at| u32_at(block, at).unwrap_or(0);
        let name_units: Vec<u16> = block[FILE_NAME..FILE_NAME + FILE_NAME_SIZE]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Ok(BaseBlock {
            primary_sequence: field(PRIMARY_SEQUENCE_NUMBER),
            secondary_sequence: field(SECONDARY_SEQUENCE_NUMBER),
            last_written: u64_at(block, LAST_WRITTEN_TIMESTAMP).unwrap_or(0),
            major_version: field(MAJOR_VERSION),
            minor_version: field(MINOR_VERSION),
            file_type: field(FILE_TYPE),
            file_format: field(FILE_FORMAT),
            root_cell: CellOffset(field(ROOT_CELL_OFFSET)),
            hive_bins_data_size: field(HIVE_BINS_DATA_SIZE),
            clustering_factor: field(CLUSTERING_FACTOR),
            file_name: String::from_utf16_lossy(&name_units),
            stored_checksum: field(CHECKSUM),
            computed_checksum: compute_checksum(block),
        })
    }

    /// True when the sequence numbers differ or the checksum does not match.
    pub fn is_dirty(&self) -> bool {
        self.primary_sequence != self.secondary_sequence
            || self.stored_checksum != self.computed_checksum
    }

    /// The file offset where the hive-bins data ends according to the base block.
    pub fn bins_end(&self) -> FileOffset {
        FileOffset(BASE_BLOCK_SIZE as u64 + u64::from(self.hive_bins_data_size))
    }

    /// True when this hive may use big-data (db) values and lh lists: version 1.4 and later
    /// [Suhanov].
    pub fn supports_big_data(&self) -> bool {
        self.minor_version > 3
    }

    /// Checks everything [`crate::hive::Hive::parse`] promises about a clean primary hive.
    pub(crate) fn validate(&self, data: &[u8]) -> Result<()> {
        if self.stored_checksum != self.computed_checksum {
            return Err(HiveError::BadChecksum {
                offset: FileOffset(CHECKSUM as u64),
                expected: self.computed_checksum,
                found: self.stored_checksum,
            });
        }
        if self.primary_sequence != self.secondary_sequence {
            return Err(HiveError::SequenceMismatch {
                primary: self.primary_sequence,
                secondary: self.secondary_sequence,
            });
        }
        let field_error = |at: usize, field, expected, found: u32| HiveError::BadBaseBlockField {
            offset: FileOffset(at as u64),
            field,
            expected,
            found: u64::from(found),
        };
        if self.major_version != 1 {
            return Err(field_error(
                MAJOR_VERSION,
                "major version",
                "1",
                self.major_version,
            ));
        }
        if !(3..=6).contains(&self.minor_version) {
            return Err(field_error(
                MINOR_VERSION,
                "minor version",
                "3..=6",
                self.minor_version,
            ));
        }
        if self.file_type != FILE_TYPE_PRIMARY {
            return Err(field_error(
                FILE_TYPE,
                "file type",
                "0 (primary)",
                self.file_type,
            ));
        }
        if self.file_format != 1 {
            return Err(field_error(
                FILE_FORMAT,
                "file format",
                "1",
                self.file_format,
            ));
        }
        if self.hive_bins_data_size == 0 || !self.hive_bins_data_size.is_multiple_of(HBIN_ALIGNMENT)
        {
            return Err(field_error(
                HIVE_BINS_DATA_SIZE,
                "hive bins data size",
                "a non-zero multiple of 4096",
                self.hive_bins_data_size,
            ));
        }
        let end = self.bins_end().0;
        if end > data.len() as u64 {
            return Err(HiveError::OutOfBounds {
                offset: FileOffset(BASE_BLOCK_SIZE as u64),
                needed: u64::from(self.hive_bins_data_size),
                available: (data.len() as u64).saturating_sub(BASE_BLOCK_SIZE as u64),
                what: "hive bins data",
            });
        }
        if self.root_cell.0 >= self.hive_bins_data_size {
            return Err(field_error(
                ROOT_CELL_OFFSET,
                "root cell offset",
                "inside the hive bins data",
                self.root_cell.0,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_special_values() {
        let mut block = vec![0u8; BASE_BLOCK_SIZE];
        assert_eq!(
            compute_checksum(&block),
            1,
            "all zero XORs to 0, stored as 1"
        );
        block[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(compute_checksum(&block), u32::MAX - 1);
        block[4..8].copy_from_slice(&0x0F0F_0F0Fu32.to_le_bytes());
        assert_eq!(compute_checksum(&block), 0xF0F0_F0F0);
        // The checksum field itself and everything after it are not covered.
        block[CHECKSUM..CHECKSUM + 4].copy_from_slice(&0x1234u32.to_le_bytes());
        block[0x200] = 0xAA;
        assert_eq!(compute_checksum(&block), 0xF0F0_F0F0);
        // The last covered dword (at 0x1F8) is.
        block[0x1F8] = 0x01;
        assert_eq!(compute_checksum(&block), 0xF0F0_F0F1);
    }

    #[test]
    fn short_or_foreign_data_is_rejected() {
        assert!(matches!(
            BaseBlock::parse(b"regf"),
            Err(HiveError::OutOfBounds { needed: 4096, .. })
        ));
        let block = vec![0u8; BASE_BLOCK_SIZE];
        assert!(matches!(
            BaseBlock::parse(&block),
            Err(HiveError::BadSignature { .. })
        ));
    }
}
