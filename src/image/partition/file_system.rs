//! Recognising the file system in a partition's first sector.
//!
//! NTFS: OEM id "NTFS    " at +3 [docs/FORMAT-FACTS.md §3 boot sector]; BitLocker: "-FVE-FS-" at +3
//! [libyal/libbde BDE format doc; docs/FORMAT-FACTS.md §3]; FAT: a BIOS parameter block with sane
//! geometry and a "FAT" type string at +0x36 (FAT12/16) or +0x52 (FAT32)
//! [Microsoft "FAT32 File System Specification" (fatgen103), BPB and BS_FilSysType].

/// The file system found at the start of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileSystemKind {
    Ntfs,
    BitLocker,
    Fat,
    Unknown,
}

/// OEM id offset in NTFS/BitLocker/FAT boot sectors.
const OEM_OFFSET: usize = 3;
const NTFS_OEM: &[u8; 8] = b"NTFS    ";
const BITLOCKER_OEM: &[u8; 8] = b"-FVE-FS-";

/// Classifies a boot sector (at least 512 bytes; shorter input is `Unknown`).
pub fn detect_file_system(sector: &[u8]) -> FileSystemKind {
    if sector.len() < 512 {
        return FileSystemKind::Unknown;
    }
    let oem = &sector[OEM_OFFSET..OEM_OFFSET + 8];
    if oem == NTFS_OEM {
        return FileSystemKind::Ntfs;
    }
    if oem == BITLOCKER_OEM {
        return FileSystemKind::BitLocker;
    }
    if is_fat(sector) {
        return FileSystemKind::Fat;
    }
    FileSystemKind::Unknown
}

fn is_fat(s: &[u8]) -> bool {
    if s[510] != 0x55 || s[511] != 0xAA {
        return false;
    }
    // BPB_BytsPerSec @0x0B, BPB_SecPerClus @0x0D, BPB_RsvdSecCnt @0x0E, BPB_NumFATs @0x10.
    let bytes_per_sector = u16::from_le_bytes([s[0x0B], s[0x0C]]);
    let sectors_per_cluster = s[0x0D];
    let reserved = u16::from_le_bytes([s[0x0E], s[0x0F]]);
    let fats = s[0x10];
    let geometry_ok = matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && sectors_per_cluster.is_power_of_two()
        && reserved >= 1
        && fats >= 1;
    geometry_ok && (&s[0x36..0x39] == b"FAT" || &s[0x52..0x57] == b"FAT32")
}
