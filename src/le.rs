//! Little-endian field readers: the one way every on-disk parser reads a fixed-size integer.
//!
//! Each returns `None` when the field does not lie wholly inside the buffer (also when the end
//! offset would overflow), so hostile input can never panic a parser; callers turn `None` into
//! their layer's typed error, naming the structure and offset.

/// The `N` bytes at `at` in `buf`, if they lie wholly inside it.
fn field<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    let end = at.checked_add(N)?;
    buf.get(at..end)?.try_into().ok()
}

/// The little-endian u16 at `at` in `buf`, if present.
pub fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    field(buf, at).map(u16::from_le_bytes)
}

/// The little-endian u32 at `at` in `buf`, if present.
pub fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    field(buf, at).map(u32::from_le_bytes)
}

/// The little-endian u64 at `at` in `buf`, if present.
pub fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    field(buf, at).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_inside_the_buffer() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u16_at(&b, 0), Some(0x0201));
        assert_eq!(u32_at(&b, 1), Some(0x0504_0302));
        assert_eq!(u64_at(&b, 1), Some(0x0908_0706_0504_0302));
    }

    #[test]
    fn a_field_past_the_end_or_at_an_overflowing_offset_is_none() {
        let b = [0u8; 8];
        assert_eq!(u16_at(&b, 7), None);
        assert_eq!(u32_at(&b, 5), None);
        assert_eq!(u64_at(&b, 1), None);
        assert_eq!(u64_at(&b, usize::MAX), None);
        assert_eq!(u32_at(&b, usize::MAX - 1), None);
        assert_eq!(u16_at(&[], 0), None);
    }
}
