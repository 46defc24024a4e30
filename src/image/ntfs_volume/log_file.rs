//! $LogFile restart pages: is the journal clean?
//!
//! [include/ntfs-3g/logfile.h; libntfs-3g/logfile.c; docs/FORMAT-FACTS.md §3 "$LogFile"]
//!
//! Restart page header ("RSTR", or "CHKD" after chkdsk), with an update sequence array:
//!
//! | off  | size | field |
//! |------|------|-------|
//! | 0x00 | 4    | magic |
//! | 0x08 | 8    | chkdsk LSN |
//! | 0x10 | 4    | system page size |
//! | 0x14 | 4    | log page size |
//! | 0x18 | 2    | restart area offset |
//! | 0x1A | 2    | minor version (s16) |
//! | 0x1C | 2    | major version (s16) |
//!
//! RESTART_AREA: 0x00 current LSN (u64), 0x08 log clients (u16), 0x0A client_free_list,
//! 0x0C client_in_use_list (u16), 0x0E flags (u16; 0x0002 RESTART_VOLUME_IS_CLEAN).
//! Clean if client_in_use_list == 0xFFFF (LOGFILE_NO_CLIENT) or the CLEAN flag is set.

use super::fixup::apply_fixups;
use crate::image::error::{ImageError, Result};
use crate::image::reader::ImageOffset;

const RESTART_AREA_OFFSET_FIELD: usize = 0x18;
const MINOR_FIELD: usize = 0x1A;
const MAJOR_FIELD: usize = 0x1C;
const SYSTEM_PAGE_SIZE_FIELD: usize = 0x10;
/// Size of the RESTART_AREA fields we read.
const RESTART_AREA_MIN: usize = 0x10;
/// client_in_use_list value meaning "no client".
pub const LOGFILE_NO_CLIENT: u16 = 0xFFFF;
/// RESTART_AREA flag: the volume was cleanly unmounted.
pub const RESTART_VOLUME_IS_CLEAN: u16 = 0x0002;

/// State of the NTFS journal, from the newest valid restart page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFileState {
    /// Image offset of the restart page used.
    pub page_offset: ImageOffset,
    /// "RSTR" or "CHKD".
    pub magic: [u8; 4],
    pub major_version: i16,
    pub minor_version: i16,
    pub system_page_size: u32,
    pub current_lsn: u64,
    pub client_in_use_list: u16,
    pub flags: u16,
    /// client_in_use_list == 0xFFFF or RESTART_VOLUME_IS_CLEAN, or the journal is emptied.
    pub clean: bool,
    /// The journal's start is all 0xFF: reset by mkntfs/ntfs-3g/chkdsk, nothing to replay
    /// [libntfs-3g/logfile.c `ntfs_check_logfile`: "$LogFile is empty" when the restart
    /// pages are all 0xff]. No restart page was parsed; the version fields are 0.
    pub emptied: bool,
}

/// A journal whose head is all 0xFF (emptied), at `offset`.
pub fn emptied_state(offset: ImageOffset) -> LogFileState {
    LogFileState {
        page_offset: offset,
        magic: [0xFF; 4],
        major_version: 0,
        minor_version: 0,
        system_page_size: 0,
        current_lsn: 0,
        client_in_use_list: LOGFILE_NO_CLIENT,
        flags: 0,
        clean: true,
        emptied: true,
    }
}

impl LogFileState {
    /// Restart page version 2.0: Windows 8+ Fast Startup may have cached metadata
    /// (ntfs-3g refuses read-write mounts then). [docs/FORMAT-FACTS.md §3]
    pub fn is_version_2(&self) -> bool {
        self.major_version == 2 && self.minor_version == 0
    }
}

/// Parses one restart page at the start of `page` (at least `system page size` bytes after
/// the caller read them); `offset` is its image offset.
pub fn parse_restart_page(page: &[u8], offset: ImageOffset) -> Result<LogFileState> {
    if page.len() < 0x20 {
        return Err(ImageError::Truncated {
            offset,
            what: "$LogFile restart page",
            needed: 0x20,
            available: page.len() as u64,
        });
    }
    let magic: [u8; 4] = page[0..4].try_into().expect("4 bytes");
    if &magic != b"RSTR" && &magic != b"CHKD" {
        return Err(ImageError::invalid(
            offset,
            "$LogFile restart page magic",
            "\"RSTR\" or \"CHKD\"",
            format!("{magic:02X?}"),
        ));
    }
    let u16_at = |at: usize| u16::from_le_bytes([page[at], page[at + 1]]);
    let system_page_size = u32::from_le_bytes(
        page[SYSTEM_PAGE_SIZE_FIELD..SYSTEM_PAGE_SIZE_FIELD + 4]
            .try_into()
            .expect("4 bytes"),
    );
    if !(512..=65536).contains(&system_page_size)
        || !system_page_size.is_power_of_two()
        || system_page_size as usize > page.len()
    {
        return Err(ImageError::invalid(
            ImageOffset(offset.0 + SYSTEM_PAGE_SIZE_FIELD as u64),
            "$LogFile system page size",
            format!("a power of two in 512..={}", page.len().min(65536)),
            system_page_size.to_string(),
        ));
    }
    let mut buf = page[..system_page_size as usize].to_vec();
    apply_fixups(&mut buf, offset, "$LogFile restart page")?;
    let area = u16::from_le_bytes([
        buf[RESTART_AREA_OFFSET_FIELD],
        buf[RESTART_AREA_OFFSET_FIELD + 1],
    ]) as usize;
    if area + RESTART_AREA_MIN > buf.len() || !area.is_multiple_of(8) {
        return Err(ImageError::invalid(
            ImageOffset(offset.0 + RESTART_AREA_OFFSET_FIELD as u64),
            "$LogFile restart area offset",
            format!("8-aligned, leaving {RESTART_AREA_MIN} bytes in the page"),
            area.to_string(),
        ));
    }
    let current_lsn = u64::from_le_bytes(buf[area..area + 8].try_into().expect("8 bytes"));
    let client_in_use_list = u16::from_le_bytes([buf[area + 0x0C], buf[area + 0x0D]]);
    let flags = u16::from_le_bytes([buf[area + 0x0E], buf[area + 0x0F]]);
    Ok(LogFileState {
        page_offset: offset,
        magic,
        major_version: u16_at(MAJOR_FIELD) as i16,
        minor_version: u16_at(MINOR_FIELD) as i16,
        system_page_size,
        current_lsn,
        client_in_use_list,
        flags,
        clean: client_in_use_list == LOGFILE_NO_CLIENT || flags & RESTART_VOLUME_IS_CLEAN != 0,
        emptied: false,
    })
}
