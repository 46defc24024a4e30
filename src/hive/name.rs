//! Key and value names as stored: either "compressed" (one byte per character, Latin-1; flag
//! KEY_COMP_NAME 0x20 in nk, VALUE_COMP_NAME 0x0001 in vk) or UTF-16LE [Suhanov "Key node",
//! "Key value"].

use super::FileOffset;

/// A name inside an nk or vk record, with the absolute position of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name<'a> {
    raw: &'a [u8],
    compressed: bool,
    file_offset: FileOffset,
}

impl<'a> Name<'a> {
    pub(crate) fn new(raw: &'a [u8], compressed: bool, file_offset: FileOffset) -> Name<'a> {
        Name {
            raw,
            compressed,
            file_offset,
        }
    }

    /// The name bytes exactly as stored.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// True for a one-byte-per-character (Latin-1) name.
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// Absolute offset of the first name byte.
    pub fn file_offset(&self) -> FileOffset {
        self.file_offset
    }

    /// Length of the stored name in bytes.
    pub fn byte_len(&self) -> usize {
        self.raw.len()
    }

    /// The name as UTF-16 code units: Latin-1 bytes widen to code units; an odd trailing byte of
    /// a UTF-16 name is ignored. Comparison and hashing work on these units.
    pub fn units(&self) -> Vec<u16> {
        if self.compressed {
            self.raw.iter().map(|&b| u16::from(b)).collect()
        } else {
            self.raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        }
    }

    /// The name as a string (unpaired surrogates become U+FFFD).
    pub fn to_string_lossy(&self) -> String {
        if self.compressed {
            self.raw.iter().map(|&b| char::from(b)).collect()
        } else {
            String::from_utf16_lossy(&self.units())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_encodings() {
        let latin = Name::new(b"Caf\xe9", true, FileOffset(0x1000));
        assert_eq!(latin.to_string_lossy(), "Café");
        assert_eq!(latin.units(), vec![0x43, 0x61, 0x66, 0xE9]);
        let wide = Name::new(&[0x41, 0, 0x3A, 0x04], false, FileOffset(0x2000));
        assert_eq!(wide.to_string_lossy(), "A\u{43A}");
        assert_eq!(wide.units(), vec![0x41, 0x43A]);
        assert_eq!(wide.byte_len(), 4);
        assert_eq!(wide.file_offset(), FileOffset(0x2000));
    }
}
