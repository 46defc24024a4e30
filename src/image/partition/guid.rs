//! GUIDs as stored in GPT structures.
//!
//! [UEFI spec 2.10 Appendix A "EFI_GUID"; docs/FORMAT-FACTS.md §4: "GUIDs are stored mixed-endian: the
//! first three fields little-endian"]. `Guid` keeps the 16 on-disk bytes and prints the
//! canonical string form.

use std::fmt;

/// A GUID in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

const fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit in a GUID constant"),
    }
}

impl Guid {
    /// Parses `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` at compile time (constants only: panics on
    /// a malformed literal, which then fails the build).
    pub const fn parse_const(text: &str) -> Guid {
        let s = text.as_bytes();
        assert!(s.len() == 36, "GUID constant must have 36 characters");
        // Canonical text byte values in reading order.
        let mut canonical = [0u8; 16];
        let mut i = 0;
        let mut out = 0;
        while i < 36 {
            if s[i] == b'-' {
                i += 1;
                continue;
            }
            canonical[out] = hex_digit(s[i]) << 4 | hex_digit(s[i + 1]);
            out += 1;
            i += 2;
        }
        assert!(out == 16, "GUID constant must have 32 hex digits");
        let c = canonical;
        // Data1 (4 bytes), Data2 (2), Data3 (2) little-endian; Data4 (8) as written.
        Guid([
            c[3], c[2], c[1], c[0], c[5], c[4], c[7], c[6], c[8], c[9], c[10], c[11], c[12], c[13],
            c[14], c[15],
        ])
    }

    /// True for the all-zero GUID (an unused GPT entry).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for byte in &b[10..] {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Microsoft basic data (NTFS, FAT, exFAT data partitions). [docs/FORMAT-FACTS.md §4]
pub const BASIC_DATA: Guid = Guid::parse_const("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");
/// EFI system partition. [docs/FORMAT-FACTS.md §4]
pub const EFI_SYSTEM: Guid = Guid::parse_const("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// Microsoft reserved partition. [docs/FORMAT-FACTS.md §4]
pub const MICROSOFT_RESERVED: Guid = Guid::parse_const("E3C9E316-0B5C-4DB8-817D-F92DF00215AE");
/// Windows recovery environment. [docs/FORMAT-FACTS.md §4]
pub const WINDOWS_RECOVERY: Guid = Guid::parse_const("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC");
/// Logical Disk Manager metadata (dynamic disks). [UEFI/Wikipedia "GUID Partition Table"
/// partition type table; docs/FORMAT-FACTS.md §4 gives the prefix]
pub const LDM_METADATA: Guid = Guid::parse_const("5808C8AA-7E8F-42E0-85D2-E1E90434CFB3");
/// Logical Disk Manager data (dynamic disks). [as above]
pub const LDM_DATA: Guid = Guid::parse_const("AF9B60A0-1431-4F62-BC68-3311714A69AD");
/// Linux filesystem data (sfdisk's default type; seen in test images). [util-linux sfdisk]
pub const LINUX_FILESYSTEM: Guid = Guid::parse_const("0FC63DAF-8483-4772-8E79-3D69D8477DE4");

/// A human name for a known partition type GUID.
pub fn known_type_name(guid: &Guid) -> Option<&'static str> {
    const NAMES: [(Guid, &str); 7] = [
        (BASIC_DATA, "Microsoft basic data"),
        (EFI_SYSTEM, "EFI system partition"),
        (MICROSOFT_RESERVED, "Microsoft reserved"),
        (WINDOWS_RECOVERY, "Windows recovery environment"),
        (LDM_METADATA, "LDM metadata"),
        (LDM_DATA, "LDM data"),
        (LINUX_FILESYSTEM, "Linux filesystem"),
    ];
    NAMES.iter().find(|(g, _)| g == guid).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The on-disk bytes docs/FORMAT-FACTS.md §4 lists for basic data and ESP; proves the
    /// mixed-endian conversion and the Display round trip.
    #[test]
    fn mixed_endian_bytes() {
        assert_eq!(
            BASIC_DATA.0,
            [
                0xa2, 0xa0, 0xd0, 0xeb, 0xe5, 0xb9, 0x33, 0x44, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26,
                0x99, 0xc7
            ]
        );
        assert_eq!(
            EFI_SYSTEM.0,
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(
            BASIC_DATA.to_string(),
            "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
        );
    }
}
