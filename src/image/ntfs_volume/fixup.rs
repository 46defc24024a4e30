//! Multi-sector transfer fixups (update sequence array) of FILE, INDX and RSTR/RCRD records.
//!
//! [libntfs-3g/mst.c `ntfs_mst_post_read_fixup`; layout.h NTFS_RECORD; docs/FORMAT-FACTS.md §3
//! "Fixups"]: header +0x04 USA offset (u16), +0x06 USA count (u16). The block size is always
//! 512 bytes. Valid if count = 1 + size/512, offset even, offset + 2·count ≤ 510. usa[0] is the
//! USN; the last u16 of each 512-byte block must equal it and is replaced by usa[i+1].

use crate::image::error::{ImageError, Result};
use crate::image::reader::ImageOffset;

/// Fixup block size, independent of the sector size.
pub const FIXUP_BLOCK: usize = 512;
const USA_OFFSET_FIELD: usize = 4;
const USA_COUNT_FIELD: usize = 6;

/// Applies the fixups of a record of `buf.len()` bytes read at `offset` (for messages).
pub fn apply_fixups(buf: &mut [u8], offset: ImageOffset, what: &'static str) -> Result<()> {
    if buf.len() < FIXUP_BLOCK || !buf.len().is_multiple_of(FIXUP_BLOCK) {
        return Err(ImageError::invalid(
            offset,
            what,
            "a multiple of 512 bytes",
            format!("{} bytes", buf.len()),
        ));
    }
    let usa_ofs = u16::from_le_bytes([buf[USA_OFFSET_FIELD], buf[USA_OFFSET_FIELD + 1]]) as usize;
    let usa_count = u16::from_le_bytes([buf[USA_COUNT_FIELD], buf[USA_COUNT_FIELD + 1]]) as usize;
    let blocks = buf.len() / FIXUP_BLOCK;
    if usa_count != blocks + 1
        || !usa_ofs.is_multiple_of(2)
        || usa_ofs + 2 * usa_count > FIXUP_BLOCK - 2
    {
        return Err(ImageError::invalid(
            ImageOffset(offset.0 + USA_OFFSET_FIELD as u64),
            what,
            format!(
                "update sequence array: count {} at an even offset, ending by 510",
                blocks + 1
            ),
            format!("count {usa_count} at offset {usa_ofs}"),
        ));
    }
    let usn = [buf[usa_ofs], buf[usa_ofs + 1]];
    for block in 0..blocks {
        let at = (block + 1) * FIXUP_BLOCK - 2;
        if buf[at..at + 2] != usn {
            return Err(ImageError::invalid(
                ImageOffset(offset.0 + at as u64),
                what,
                format!(
                    "update sequence number {:02X} {:02X} (torn write otherwise)",
                    usn[0], usn[1]
                ),
                format!("{:02X} {:02X}", buf[at], buf[at + 1]),
            ));
        }
        let src = usa_ofs + 2 * (block + 1);
        buf[at] = buf[src];
        buf[at + 1] = buf[src + 1];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-block record: fixups restore the saved bytes; a torn block is an error naming
    /// the absolute offset.
    #[test]
    fn restores_and_detects_torn_write() {
        let mut rec = vec![0u8; 1024];
        rec[4..6].copy_from_slice(&0x30u16.to_le_bytes());
        rec[6..8].copy_from_slice(&3u16.to_le_bytes());
        rec[0x30..0x36].copy_from_slice(&[0x07, 0x00, 0xAA, 0xBB, 0xCC, 0xDD]);
        rec[510..512].copy_from_slice(&[0x07, 0x00]);
        rec[1022..1024].copy_from_slice(&[0x07, 0x00]);
        let mut good = rec.clone();
        apply_fixups(&mut good, ImageOffset(0x1000), "test record").unwrap();
        assert_eq!(&good[510..512], &[0xAA, 0xBB]);
        assert_eq!(&good[1022..1024], &[0xCC, 0xDD]);
        rec[1022] = 0x08;
        let err = apply_fixups(&mut rec, ImageOffset(0x1000), "test record").unwrap_err();
        assert!(err.to_string().contains("0x13fe"), "{err}");
    }
}
