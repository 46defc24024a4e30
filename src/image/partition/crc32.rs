//! CRC-32 as used by GPT headers and entry arrays.
//!
//! [UEFI spec 2.10, 4.2 "EFI Table Header": "CRC32 ... using the standard CCITT32 CRC
//! algorithm with a seed polynomial value of 0x04c11db7"; libyal/libvsgpt GPT format doc]
//! This is the reflected form (polynomial 0xEDB88320), initial value and final XOR 0xFFFFFFFF,
//! identical to zlib's crc32().

/// Reflected CRC-32 polynomial (0x04C11DB7 bit-reversed).
const POLYNOMIAL: u32 = 0xEDB8_8320;

/// Lookup table for one byte at a time, built at compile time.
const TABLE: [u32; 256] = build_table();

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLYNOMIAL
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// The CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc = (crc >> 8) ^ TABLE[((crc ^ byte as u32) & 0xFF) as usize];
    }
    crc ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::crc32;

    /// The standard check value of CRC-32/ISO-HDLC (the zlib CRC) for "123456789".
    #[test]
    fn check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
