//! Master Boot Record and extended (EBR) chains.
//!
//! [libyal/libvsmbr:documentation/Master Boot Record (MBR) partition table format.asciidoc@3f99ec78;
//! torvalds/linux:block/partitions/msdos.c; docs/FORMAT-FACTS.md §4]
//!
//! | off   | size | field |
//! |-------|------|-------|
//! | 0x1B8 | 4    | disk signature |
//! | 0x1BE | 4×16 | partition entries: +0 boot flag (0x00/0x80), +4 type, +8 start LBA, +12 sectors |
//! | 0x1FE | 2    | 55 AA |
//!
//! Logical partitions: each EBR's first entry starts relative to that EBR; its second entry
//! links to the next EBR relative to the start of the (outermost) extended partition.

use std::collections::HashSet;

use crate::image::error::{ImageError, Result};
use crate::image::reader::{ImageFile, ImageOffset};

/// Size of the MBR/EBR sector that holds the table.
pub const MBR_SIZE: usize = 512;
/// Offset of the first of four 16-byte partition entries.
const ENTRIES_OFFSET: usize = 0x1BE;
/// Size of one partition entry.
const ENTRY_SIZE: usize = 16;
/// Offset of the 55 AA boot signature.
const SIGNATURE_OFFSET: usize = 0x1FE;
/// Offset of the 32-bit disk signature.
const DISK_SIGNATURE_OFFSET: usize = 0x1B8;
/// Type byte of a GPT protective partition.
pub const TYPE_GPT_PROTECTIVE: u8 = 0xEE;
/// Linux accepts 0x05 (CHS), 0x0F (LBA) and 0x85 (Linux extended) as extended containers.
const EXTENDED_TYPES: [u8; 3] = [0x05, 0x0F, 0x85];
/// Bound on logical partitions followed in one EBR chain. Linux stops at its per-disk minor
/// limit; 128 is far above any real Windows disk and keeps a hostile chain cheap.
pub const MAX_LOGICAL_PARTITIONS: usize = 128;

/// One raw 16-byte MBR partition entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MbrEntry {
    /// 0x00 or 0x80.
    pub boot_flag: u8,
    /// Partition type byte (0x07 NTFS, 0x0C FAT32 LBA, 0xEF ESP, 0xEE GPT protective...).
    pub type_byte: u8,
    /// First sector, relative to the table's reference point.
    pub start_lba: u32,
    /// Length in sectors.
    pub sectors: u32,
}

impl MbrEntry {
    fn parse(raw: &[u8]) -> MbrEntry {
        MbrEntry {
            boot_flag: raw[0],
            type_byte: raw[4],
            start_lba: u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]),
            sectors: u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]),
        }
    }

    /// An unused slot (type 0 or zero length).
    pub fn is_empty(&self) -> bool {
        self.type_byte == 0 || self.sectors == 0
    }

    /// True for an extended-partition container.
    pub fn is_extended(&self) -> bool {
        EXTENDED_TYPES.contains(&self.type_byte)
    }
}

/// A validated MBR sector: four entries and the disk signature.
#[derive(Clone, Debug)]
pub struct Mbr {
    pub disk_signature: u32,
    pub entries: [MbrEntry; 4],
}

impl Mbr {
    /// Parses a 512-byte sector read at `offset`; checks 55 AA and the boot flags (Linux
    /// treats any flag other than 0x00/0x80 as "not an MBR").
    pub fn parse(sector: &[u8], offset: ImageOffset) -> Result<Mbr> {
        if sector.len() < MBR_SIZE {
            return Err(ImageError::Truncated {
                offset,
                what: "MBR",
                needed: MBR_SIZE as u64,
                available: sector.len() as u64,
            });
        }
        let signature = &sector[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 2];
        if signature != [0x55, 0xAA] {
            return Err(ImageError::invalid(
                ImageOffset(offset.0 + SIGNATURE_OFFSET as u64),
                "MBR boot signature",
                "55 AA",
                format!("{:02X} {:02X}", signature[0], signature[1]),
            ));
        }
        let mut entries = [MbrEntry::parse(&[0; ENTRY_SIZE]); 4];
        for (i, entry) in entries.iter_mut().enumerate() {
            let at = ENTRIES_OFFSET + i * ENTRY_SIZE;
            *entry = MbrEntry::parse(&sector[at..at + ENTRY_SIZE]);
            if entry.boot_flag != 0 && entry.boot_flag != 0x80 {
                return Err(ImageError::invalid(
                    ImageOffset(offset.0 + at as u64),
                    "MBR partition entry boot flag",
                    "0x00 or 0x80",
                    format!("{:#04x}", entry.boot_flag),
                ));
            }
        }
        let disk_signature = u32::from_le_bytes(
            sector[DISK_SIGNATURE_OFFSET..DISK_SIGNATURE_OFFSET + 4]
                .try_into()
                .expect("4-byte slice"),
        );
        Ok(Mbr {
            disk_signature,
            entries,
        })
    }

    /// True if any entry is a GPT protective partition (0xEE): the disk is GPT.
    pub fn is_protective(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.type_byte == TYPE_GPT_PROTECTIVE)
    }
}

/// A partition found through an MBR, with absolute sector numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbrPartition {
    /// Linux numbering: primaries 1–4 by slot, logicals from 5 in chain order.
    pub index: u32,
    pub type_byte: u8,
    pub bootable: bool,
    pub logical: bool,
    /// Absolute first sector.
    pub start_lba: u64,
    pub sectors: u64,
}

/// Reads the primary table and follows any extended chain. The chain is loop-safe (each EBR
/// is visited once) and bounded ([`MAX_LOGICAL_PARTITIONS`]); every EBR must lie inside the
/// extended container.
pub fn read_partitions(
    image: &ImageFile,
    mbr: &Mbr,
    sector_size: u64,
) -> Result<Vec<MbrPartition>> {
    let mut out = Vec::new();
    let mut extended = None;
    for (slot, e) in mbr.entries.iter().enumerate() {
        if e.is_empty() {
            continue;
        }
        if e.is_extended() {
            if extended.is_none() {
                extended = Some(*e);
            }
            continue;
        }
        out.push(MbrPartition {
            index: slot as u32 + 1,
            type_byte: e.type_byte,
            bootable: e.boot_flag == 0x80,
            logical: false,
            start_lba: e.start_lba as u64,
            sectors: e.sectors as u64,
        });
    }
    if let Some(ext) = extended {
        read_logical_chain(image, &ext, sector_size, &mut out)?;
    }
    Ok(out)
}

fn read_logical_chain(
    image: &ImageFile,
    ext: &MbrEntry,
    sector_size: u64,
    out: &mut Vec<MbrPartition>,
) -> Result<()> {
    let ext_start = ext.start_lba as u64;
    let ext_end = ext_start + ext.sectors as u64;
    let mut visited = HashSet::new();
    let mut ebr_lba = ext_start;
    let mut next_index = 5u32;
    loop {
        let offset = ImageOffset(ebr_lba * sector_size);
        if !visited.insert(ebr_lba) {
            return Err(ImageError::invalid(
                offset,
                "extended partition chain",
                "each EBR visited once",
                format!("a loop back to the EBR at sector {ebr_lba}"),
            ));
        }
        if visited.len() > MAX_LOGICAL_PARTITIONS {
            return Err(ImageError::TooLarge {
                what: format!("extended partition chain ending at {offset}"),
                size: visited.len() as u64,
                limit: MAX_LOGICAL_PARTITIONS as u64,
            });
        }
        if ebr_lba < ext_start || ebr_lba >= ext_end {
            return Err(ImageError::invalid(
                offset,
                "EBR link",
                format!("a sector inside the extended partition [{ext_start}, {ext_end})"),
                format!("sector {ebr_lba}"),
            ));
        }
        let mut sector = [0u8; MBR_SIZE];
        image.read_exact_at(offset, &mut sector, "EBR")?;
        let ebr = Mbr::parse(&sector, offset)?;
        let logical = ebr.entries[0];
        if !logical.is_empty() {
            out.push(MbrPartition {
                index: next_index,
                type_byte: logical.type_byte,
                bootable: logical.boot_flag == 0x80,
                logical: true,
                start_lba: ebr_lba + logical.start_lba as u64,
                sectors: logical.sectors as u64,
            });
            next_index += 1;
        }
        let link = ebr.entries[1];
        if link.is_empty() || !link.is_extended() {
            return Ok(());
        }
        ebr_lba = ext_start + link.start_lba as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(raw: &mut [u8], slot: usize, boot: u8, ty: u8, start: u32, len: u32) {
        let at = ENTRIES_OFFSET + slot * ENTRY_SIZE;
        raw[at] = boot;
        raw[at + 4] = ty;
        raw[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
        raw[at + 12..at + 16].copy_from_slice(&len.to_le_bytes());
    }

    fn sig(raw: &mut [u8]) {
        raw[0x1FE] = 0x55;
        raw[0x1FF] = 0xAA;
    }

    fn image_from(bytes: &[u8], name: &str) -> (ImageFile, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "sidfs-mbr-{}-{}-{name}",
            std::process::id(),
            std::thread::current()
                .name()
                .unwrap_or("t")
                .replace("::", "_")
        ));
        std::fs::write(&path, bytes).unwrap();
        (ImageFile::open(&path).unwrap(), path)
    }

    /// A hand-made chain with two logicals; proves start = EBR + relative start and the link
    /// is relative to the extended start.
    #[test]
    fn logical_chain() {
        let mut disk = vec![0u8; 64 * 512];
        entry(&mut disk, 0, 0x80, 0x07, 2, 4);
        entry(&mut disk, 1, 0, 0x0F, 10, 40);
        sig(&mut disk);
        // EBR 1 at sector 10: logical at 10+1, link to ext+20.
        let e1 = &mut disk[10 * 512..11 * 512];
        entry(e1, 0, 0, 0x07, 1, 5);
        entry(e1, 1, 0, 0x05, 20, 10);
        sig(e1);
        let e2 = &mut disk[30 * 512..31 * 512];
        entry(e2, 0, 0, 0x0C, 2, 3);
        sig(e2);
        let (image, path) = image_from(&disk, "chain");
        let mbr = Mbr::parse(&disk[..512], ImageOffset(0)).unwrap();
        let parts = read_partitions(&image, &mbr, 512).unwrap();
        std::fs::remove_file(path).unwrap();
        let got: Vec<_> = parts
            .iter()
            .map(|p| (p.index, p.type_byte, p.start_lba, p.sectors, p.logical))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 0x07, 2, 4, false),
                (5, 0x07, 11, 5, true),
                (6, 0x0C, 32, 3, true)
            ]
        );
    }

    /// An EBR whose link points back to itself is an error, not a hang.
    #[test]
    fn looping_chain_is_an_error() {
        let mut disk = vec![0u8; 64 * 512];
        entry(&mut disk, 0, 0, 0x05, 10, 40);
        sig(&mut disk);
        let e1 = &mut disk[10 * 512..11 * 512];
        entry(e1, 0, 0, 0x07, 1, 5);
        entry(e1, 1, 0, 0x05, 0, 10); // back to the extended start itself
        sig(e1);
        let (image, path) = image_from(&disk, "loop");
        let mbr = Mbr::parse(&disk[..512], ImageOffset(0)).unwrap();
        let err = read_partitions(&image, &mbr, 512).unwrap_err();
        std::fs::remove_file(path).unwrap();
        assert!(err.to_string().contains("loop"), "{err}");
    }

    /// A boot flag other than 0x00/0x80 means "not an MBR", as in Linux.
    #[test]
    fn bad_boot_flag() {
        let mut disk = vec![0u8; 512];
        entry(&mut disk, 2, 0x33, 0x07, 2, 4);
        sig(&mut disk);
        let err = Mbr::parse(&disk, ImageOffset(0)).unwrap_err();
        assert!(err.to_string().contains("0x1de"), "{err}");
    }
}
