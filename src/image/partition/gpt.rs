//! GUID Partition Table: header and entry array, CRC-checked, with backup fallback.
//!
//! [libyal/libvsgpt:documentation/GUID Partition Table (GPT) format.asciidoc@50add435;
//! torvalds/linux:block/partitions/efi.h; UEFI spec 2.10 §5.3; docs/FORMAT-FACTS.md §4]
//!
//! Header (at LBA 1, or at the alternate LBA for the backup):
//!
//! | off | size | field |
//! |-----|------|-------|
//! | 0   | 8    | "EFI PART" |
//! | 8   | 4    | revision 0x00010000 |
//! | 12  | 4    | header size (92) |
//! | 16  | 4    | CRC32 of the header with this field zeroed |
//! | 24  | 8    | my LBA |
//! | 32  | 8    | alternate LBA |
//! | 40  | 8    | first usable LBA |
//! | 48  | 8    | last usable LBA |
//! | 56  | 16   | disk GUID |
//! | 72  | 8    | partition entries LBA |
//! | 80  | 4    | number of entries |
//! | 84  | 4    | size of one entry (128) |
//! | 88  | 4    | CRC32 of the entry array |
//!
//! Entry: type GUID @0, unique GUID @16, first LBA @32, last LBA (inclusive) @40,
//! attributes @48, UTF-16LE name @56 (72 bytes).

use super::crc32::crc32;
use super::guid::Guid;
use crate::image::error::{ImageError, Result};
use crate::image::reader::{ImageFile, ImageOffset};
use crate::le;

/// "EFI PART".
pub const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// Size of the header fields covered by the CRC in revision 1.0.
const MIN_HEADER_SIZE: u32 = 92;
/// Minimum entry size; the UEFI spec requires 128 × 2^n.
const MIN_ENTRY_SIZE: u32 = 128;
/// Upper bound on the entry array we read. Windows and Linux create 128 × 128 = 16 KiB; 1 MiB
/// allows 8192 entries and keeps an absurd count from allocating without bound.
pub const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;
/// Offset and size of the name field of an entry.
const NAME_OFFSET: usize = 56;
const NAME_LEN: usize = 72;

/// A validated GPT header.
#[derive(Clone, Debug)]
pub struct GptHeader {
    /// Image offset the header was read from.
    pub offset: ImageOffset,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
}

/// A field of `b` (the `what` read at `offset`) that lies outside the bytes read.
fn truncated(
    b: &[u8],
    at: usize,
    size: usize,
    offset: ImageOffset,
    what: &'static str,
) -> ImageError {
    ImageError::Truncated {
        offset,
        what,
        needed: (at as u64).saturating_add(size as u64),
        available: b.len() as u64,
    }
}

/// The little-endian u32 at `at` of `b`, the `what` read at `offset`.
fn u32_at(b: &[u8], at: usize, offset: ImageOffset, what: &'static str) -> Result<u32> {
    le::u32_at(b, at).ok_or_else(|| truncated(b, at, 4, offset, what))
}

/// The little-endian u64 at `at` of `b`, the `what` read at `offset`.
fn u64_at(b: &[u8], at: usize, offset: ImageOffset, what: &'static str) -> Result<u64> {
    le::u64_at(b, at).ok_or_else(|| truncated(b, at, 8, offset, what))
}

impl GptHeader {
    /// True if the LBA-sized block `block` starts with "EFI PART".
    pub fn has_signature(block: &[u8]) -> bool {
        block.len() >= 8 && &block[..8] == GPT_SIGNATURE
    }

    /// Parses and validates a header block (one LBA) read at `offset`, whose LBA number is
    /// `lba`: signature, header size, header CRC, my_lba, entry size and array size.
    pub fn parse(block: &[u8], offset: ImageOffset, lba: u64) -> Result<GptHeader> {
        if !GptHeader::has_signature(block) {
            return Err(ImageError::invalid(
                offset,
                "GPT header signature",
                "\"EFI PART\"",
                format!("{:02X?}", &block[..block.len().min(8)]),
            ));
        }
        let header_size = u32_at(block, 12, offset, "GPT header")?;
        if header_size < MIN_HEADER_SIZE || header_size as usize > block.len() {
            return Err(ImageError::invalid(
                offset,
                "GPT header size",
                format!("{MIN_HEADER_SIZE}..={}", block.len()),
                header_size.to_string(),
            ));
        }
        let stored_crc = u32_at(block, 16, offset, "GPT header")?;
        let mut copy = block[..header_size as usize].to_vec();
        copy[16..20].fill(0);
        let actual_crc = crc32(&copy);
        if actual_crc != stored_crc {
            return Err(ImageError::invalid(
                offset,
                "GPT header CRC32",
                format!("{stored_crc:#010x} (stored)"),
                format!("{actual_crc:#010x} (computed)"),
            ));
        }
        let header = GptHeader {
            offset,
            my_lba: u64_at(block, 24, offset, "GPT header")?,
            alternate_lba: u64_at(block, 32, offset, "GPT header")?,
            first_usable_lba: u64_at(block, 40, offset, "GPT header")?,
            last_usable_lba: u64_at(block, 48, offset, "GPT header")?,
            disk_guid: Guid(block[56..72].try_into().expect("16 bytes")),
            entries_lba: u64_at(block, 72, offset, "GPT header")?,
            entry_count: u32_at(block, 80, offset, "GPT header")?,
            entry_size: u32_at(block, 84, offset, "GPT header")?,
        };
        if header.my_lba != lba {
            return Err(ImageError::invalid(
                offset,
                "GPT header my_lba",
                lba.to_string(),
                header.my_lba.to_string(),
            ));
        }
        if header.entry_size < MIN_ENTRY_SIZE || !header.entry_size.is_multiple_of(8) {
            return Err(ImageError::invalid(
                offset,
                "GPT entry size",
                "a multiple of 8, at least 128",
                header.entry_size.to_string(),
            ));
        }
        let array = header.entry_array_bytes();
        if array > MAX_ENTRY_ARRAY_BYTES {
            return Err(ImageError::TooLarge {
                what: format!(
                    "GPT entry array ({} entries × {} bytes) of the header at {offset}",
                    header.entry_count, header.entry_size
                ),
                size: array,
                limit: MAX_ENTRY_ARRAY_BYTES,
            });
        }
        Ok(header)
    }

    /// Size in bytes of the entry array this header describes (cannot overflow: u32 × u32).
    pub fn entry_array_bytes(&self) -> u64 {
        self.entry_count as u64 * self.entry_size as u64
    }
}

/// One used GPT entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptEntry {
    /// 1-based slot number in the array (Linux numbering).
    pub index: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

/// A GPT as read from the image.
#[derive(Clone, Debug)]
pub struct Gpt {
    pub header: GptHeader,
    pub entries: Vec<GptEntry>,
    /// True if the primary header or array was bad and the backup was used.
    pub used_backup: bool,
    /// Why the primary was rejected, if it was.
    pub primary_error: Option<String>,
    /// Logical block size the table uses (512 or 4096).
    pub lba_size: u64,
}

/// Reads the header at `lba` and its entry array, checking both CRCs.
fn read_at_lba(image: &ImageFile, lba: u64, lba_size: u64) -> Result<(GptHeader, Vec<GptEntry>)> {
    let offset = lba.checked_mul(lba_size).map(ImageOffset).ok_or_else(|| {
        ImageError::invalid(
            ImageOffset(0),
            "GPT header LBA",
            "an LBA inside the image",
            lba.to_string(),
        )
    })?;
    let block = image.read_vec(offset, lba_size, lba_size, "GPT header")?;
    let header = GptHeader::parse(&block, offset, lba)?;
    let array_offset = header
        .entries_lba
        .checked_mul(lba_size)
        .map(ImageOffset)
        .ok_or_else(|| {
            ImageError::invalid(
                offset,
                "GPT entries LBA",
                "an LBA inside the image",
                header.entries_lba.to_string(),
            )
        })?;
    let array = image.read_vec(
        array_offset,
        header.entry_array_bytes(),
        MAX_ENTRY_ARRAY_BYTES,
        "GPT entry array",
    )?;
    // The entries CRC is at header offset 88; re-read it from the block (validated above).
    let stored = u32_at(&block, 88, offset, "GPT header")?;
    let actual = crc32(&array);
    if stored != actual {
        return Err(ImageError::invalid(
            array_offset,
            "GPT entry array CRC32",
            format!("{stored:#010x} (stored in the header at {offset})"),
            format!("{actual:#010x} (computed)"),
        ));
    }
    let mut entries = Vec::new();
    for (i, raw) in array.chunks_exact(header.entry_size as usize).enumerate() {
        let type_guid = Guid(raw[0..16].try_into().expect("16 bytes"));
        if type_guid.is_zero() {
            continue;
        }
        let entry_offset = ImageOffset(array_offset.0 + i as u64 * header.entry_size as u64);
        let first_lba = u64_at(raw, 32, entry_offset, "GPT entry")?;
        let last_lba = u64_at(raw, 40, entry_offset, "GPT entry")?;
        if last_lba < first_lba {
            return Err(ImageError::invalid(
                entry_offset,
                "GPT entry LBA range",
                format!("last LBA >= first LBA {first_lba}"),
                format!("last LBA {last_lba}"),
            ));
        }
        let name_units: Vec<u16> = raw[NAME_OFFSET..NAME_OFFSET + NAME_LEN]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        entries.push(GptEntry {
            index: i as u32 + 1,
            type_guid,
            unique_guid: Guid(raw[16..32].try_into().expect("16 bytes")),
            first_lba,
            last_lba,
            attributes: u64_at(raw, 48, entry_offset, "GPT entry")?,
            name: String::from_utf16_lossy(&name_units),
        });
    }
    Ok((header, entries))
}

/// Reads the GPT: the primary at LBA 1; if it (or its array) is bad, the backup at the
/// primary's alternate LBA when that header was readable, else at the last LBA of the image.
pub fn read_gpt(image: &ImageFile, lba_size: u64) -> Result<Gpt> {
    match read_at_lba(image, 1, lba_size) {
        Ok((header, entries)) => Ok(Gpt {
            header,
            entries,
            used_backup: false,
            primary_error: None,
            lba_size,
        }),
        Err(primary) => {
            let last_lba = (image.len() / lba_size).saturating_sub(1);
            // A primary header with a good CRC but a bad array still names its backup.
            let alternate = image
                .read_vec(ImageOffset(lba_size), lba_size, lba_size, "GPT header")
                .ok()
                .and_then(|b| GptHeader::parse(&b, ImageOffset(lba_size), 1).ok())
                .map(|h| h.alternate_lba)
                .unwrap_or(last_lba);
            match read_at_lba(image, alternate, lba_size) {
                Ok((header, entries)) => {
                    log::warn!(
                        "primary GPT is bad ({primary}); using the backup at LBA {alternate}"
                    );
                    Ok(Gpt {
                        header,
                        entries,
                        used_backup: true,
                        primary_error: Some(primary.to_string()),
                        lba_size,
                    })
                }
                Err(backup) => Err(ImageError::invalid(
                    ImageOffset(lba_size),
                    "GPT",
                    "a valid primary or backup GPT",
                    format!("primary: {primary}; backup at LBA {alternate}: {backup}"),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header block cut short after its signature (a caller's short read, a hostile image) is
    /// a truncation error naming the header, not a panic.
    #[test]
    fn a_header_block_shorter_than_its_fields_is_an_error() {
        for len in [8, 12, 15] {
            let mut block = vec![0u8; len];
            block[..8].copy_from_slice(GPT_SIGNATURE);
            match GptHeader::parse(&block, ImageOffset(512), 1) {
                Err(ImageError::Truncated { what, .. }) => assert_eq!(what, "GPT header"),
                other => panic!("{len} bytes: expected a truncation error, got {other:?}"),
            }
        }
    }
}
