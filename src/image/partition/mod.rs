//! Partition maps of a whole-disk image: MBR (with logical chains), GPT (behind a protective
//! MBR), or no table at all with a file system at offset 0 (a bare volume image).

pub mod crc32;
pub mod file_system;
pub mod gpt;
pub mod guid;
pub mod mbr;

pub use file_system::{detect_file_system, FileSystemKind};
pub use guid::Guid;

use crate::image::error::{ImageError, Result};
use crate::image::reader::{ImageFile, ImageOffset};

/// What describes the partitions of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionTableKind {
    /// A classic MBR (possibly with an extended chain).
    Mbr { disk_signature: u32 },
    /// A GPT; `used_backup` says the primary was bad and the backup was read instead.
    Gpt {
        disk_guid: Guid,
        used_backup: bool,
        primary_error: Option<String>,
    },
    /// No partition table: the image is one volume starting at offset 0.
    WholeImage,
}

/// The type of one partition, in the table's own terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionType {
    Mbr {
        type_byte: u8,
        bootable: bool,
        logical: bool,
    },
    Gpt {
        type_guid: Guid,
        unique_guid: Guid,
        name: String,
        attributes: u64,
    },
    /// The whole image is one volume.
    WholeImage,
}

impl PartitionType {
    /// A human name for well-known types (Windows-relevant ones first).
    pub fn known_name(&self) -> Option<&'static str> {
        match self {
            PartitionType::Mbr { type_byte, .. } => match type_byte {
                0x07 => Some("HPFS/NTFS/exFAT"),
                0x17 => Some("hidden NTFS"),
                0x0B | 0x0C => Some("FAT32"),
                0x06 | 0x0E => Some("FAT16"),
                0x01 => Some("FAT12"),
                0x27 => Some("Windows recovery (hidden NTFS)"),
                0x42 => Some("LDM (dynamic disk)"),
                0xEF => Some("EFI system partition"),
                0x83 => Some("Linux"),
                _ => None,
            },
            PartitionType::Gpt { type_guid, .. } => guid::known_type_name(type_guid),
            PartitionType::WholeImage => Some("whole image"),
        }
    }
}

/// One partition, with its position as image offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Linux numbering (MBR primaries 1–4, logicals from 5; GPT slot + 1; 0 for a whole image).
    pub index: u32,
    pub start: ImageOffset,
    /// Length in bytes.
    pub len: u64,
    pub partition_type: PartitionType,
    /// What the first sector says.
    pub file_system: FileSystemKind,
}

impl Partition {
    /// Image offset just past the end.
    pub fn end(&self) -> u64 {
        self.start.0.saturating_add(self.len)
    }
}

/// A parsed partition map.
#[derive(Clone, Debug)]
pub struct PartitionTable {
    pub kind: PartitionTableKind,
    /// Logical block size the table is expressed in (512 or 4096).
    pub sector_size: u32,
    pub partitions: Vec<Partition>,
    /// Non-fatal findings (partition past the end of the image, backup GPT used, ...).
    pub notes: Vec<String>,
}

/// Size of the first sector we examine.
const SECTOR: usize = 512;
/// LBA sizes at which a GPT header is looked for. [docs/FORMAT-FACTS.md §4]
const GPT_LBA_SIZES: [u64; 2] = [512, 4096];

impl PartitionTable {
    /// Reads the partition map of `image`.
    ///
    /// Order: a file system boot sector at 0 (NTFS or BitLocker OEM id) means a bare volume
    /// (an NTFS boot sector also ends in 55 AA, so this check comes first); then an MBR, and
    /// if it has a 0xEE entry, the GPT.
    pub fn read(image: &ImageFile) -> Result<PartitionTable> {
        let mut first = [0u8; SECTOR];
        image.read_exact_at(ImageOffset(0), &mut first, "first sector")?;
        let fs0 = detect_file_system(&first);
        if matches!(fs0, FileSystemKind::Ntfs | FileSystemKind::BitLocker) {
            return Ok(PartitionTable::whole_image(image, fs0));
        }
        let mbr = match mbr::Mbr::parse(&first, ImageOffset(0)) {
            Ok(mbr) => mbr,
            Err(e) => {
                if fs0 == FileSystemKind::Fat {
                    return Ok(PartitionTable::whole_image(image, fs0));
                }
                return Err(ImageError::invalid(
                    ImageOffset(0),
                    "partition table",
                    "an MBR, a protective MBR + GPT, or an NTFS boot sector at offset 0",
                    format!("neither ({e})"),
                ));
            }
        };
        if mbr.is_protective() {
            return PartitionTable::read_gpt(image);
        }
        let mut notes = Vec::new();
        let sector_size = 512u64;
        let raw = mbr::read_partitions(image, &mbr, sector_size)?;
        let mut partitions = Vec::new();
        for p in raw {
            let partition = Partition {
                index: p.index,
                start: ImageOffset(p.start_lba * sector_size),
                len: p.sectors * sector_size,
                partition_type: PartitionType::Mbr {
                    type_byte: p.type_byte,
                    bootable: p.bootable,
                    logical: p.logical,
                },
                file_system: FileSystemKind::Unknown,
            };
            partitions.push(finish(image, partition, &mut notes));
        }
        Ok(PartitionTable {
            kind: PartitionTableKind::Mbr {
                disk_signature: mbr.disk_signature,
            },
            sector_size: sector_size as u32,
            partitions,
            notes,
        })
    }

    fn whole_image(image: &ImageFile, fs: FileSystemKind) -> PartitionTable {
        PartitionTable {
            kind: PartitionTableKind::WholeImage,
            sector_size: 512,
            partitions: vec![Partition {
                index: 0,
                start: ImageOffset(0),
                len: image.len(),
                partition_type: PartitionType::WholeImage,
                file_system: fs,
            }],
            notes: Vec::new(),
        }
    }

    fn read_gpt(image: &ImageFile) -> Result<PartitionTable> {
        // The LBA size is where "EFI PART" is found (primary at LBA 1); if neither primary has
        // a signature (primary destroyed), fall back to 512 and let the backup search decide.
        let mut lba_size = None;
        for size in GPT_LBA_SIZES {
            let mut sig = [0u8; 8];
            if image
                .read_exact_at(ImageOffset(size), &mut sig, "GPT signature")
                .is_ok()
                && gpt::GptHeader::has_signature(&sig)
            {
                lba_size = Some(size);
                break;
            }
        }
        let gpt = match lba_size {
            Some(size) => gpt::read_gpt(image, size)?,
            None => {
                // Try the backup at the image's last LBA for each LBA size.
                let mut last_err = None;
                let mut found = None;
                for size in GPT_LBA_SIZES {
                    match gpt::read_gpt(image, size) {
                        Ok(g) => {
                            found = Some(g);
                            break;
                        }
                        Err(e) => last_err = Some(e),
                    }
                }
                match found {
                    Some(g) => g,
                    None => return Err(last_err.expect("at least one LBA size tried")),
                }
            }
        };
        let lba = gpt.lba_size;
        let mut notes = Vec::new();
        if let Some(e) = &gpt.primary_error {
            notes.push(format!("primary GPT is bad, used the backup header: {e}"));
        }
        let mut partitions = Vec::new();
        for e in &gpt.entries {
            let start = e.first_lba.checked_mul(lba);
            let len = (e.last_lba - e.first_lba + 1).checked_mul(lba);
            let (Some(start), Some(len)) = (start, len) else {
                return Err(ImageError::invalid(
                    gpt.header.offset,
                    "GPT entry LBA range",
                    "byte offsets below 2^64",
                    format!("LBAs {}..={}", e.first_lba, e.last_lba),
                ));
            };
            let partition = Partition {
                index: e.index,
                start: ImageOffset(start),
                len,
                partition_type: PartitionType::Gpt {
                    type_guid: e.type_guid,
                    unique_guid: e.unique_guid,
                    name: e.name.clone(),
                    attributes: e.attributes,
                },
                file_system: FileSystemKind::Unknown,
            };
            partitions.push(finish(image, partition, &mut notes));
        }
        Ok(PartitionTable {
            kind: PartitionTableKind::Gpt {
                disk_guid: gpt.header.disk_guid,
                used_backup: gpt.used_backup,
                primary_error: gpt.primary_error,
            },
            sector_size: lba as u32,
            partitions,
            notes,
        })
    }
}

/// Detects the partition's file system and notes a partition that runs past the image end.
fn finish(image: &ImageFile, mut p: Partition, notes: &mut Vec<String>) -> Partition {
    if p.end() > image.len() {
        notes.push(format!(
            "partition {} at {} ({} bytes) extends past the end of the image ({} bytes)",
            p.index,
            p.start,
            p.len,
            image.len()
        ));
    }
    let mut sector = [0u8; SECTOR];
    p.file_system = if image
        .read_exact_at(p.start, &mut sector, "partition boot sector")
        .is_ok()
    {
        detect_file_system(&sector)
    } else {
        FileSystemKind::Unknown
    };
    p
}
