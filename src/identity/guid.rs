//! GUIDs as Windows writes them: text with or without braces, and the binary `GUID` structure.

/// A GUID string `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, optionally in braces, parsed to its
/// 16 bytes in textual order.
pub fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let s = s
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(s);
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = (b[i] as char).to_digit(16)?;
        let lo = (b[i + 1] as char).to_digit(16)?;
        out[n] = (hi * 16 + lo) as u8;
        n += 1;
        i += 2;
    }
    Some(out)
}

/// The GUID's textual bytes as the little-endian `GUID` structure Windows stores in binary.
pub fn guid_binary(text_order: &[u8; 16]) -> [u8; 16] {
    let t = text_order;
    [
        t[3], t[2], t[1], t[0], t[5], t[4], t[7], t[6], t[8], t[9], t[10], t[11], t[12], t[13],
        t[14], t[15],
    ]
}

/// Formats 16 bytes (textual order) like `template` (braces, letter case).
pub fn format_guid_like(bytes: &[u8; 16], template: &str) -> String {
    let hex = |r: std::ops::Range<usize>| -> String {
        bytes[r].iter().map(|b| format!("{b:02x}")).collect()
    };
    let mut s = format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    );
    if template.chars().any(|c| c.is_ascii_uppercase()) {
        s = s.to_ascii_uppercase();
    }
    if template.starts_with('{') {
        s = format!("{{{s}}}");
    }
    s
}
