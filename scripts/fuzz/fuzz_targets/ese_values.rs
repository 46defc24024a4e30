//! Fuzzes the ESE value walk and its decompressors (`sidfs::rewrite::ese::values`): the input is
//! a plain LZ77 stream, a compressed ESE value (scheme byte first) and a database of 4 KiB pages
//! at once. Any panic, hang or huge allocation is a bug: hostile databases must give errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidfs::rewrite::ese::values::{decompress, decompress_lz77, plain_values, MAX_PLAIN};

const CAP: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = decompress_lz77(data, CAP) {
        assert!(out.len() <= CAP);
    }
    if let Ok(Some(out)) = decompress(data, CAP) {
        assert!(out.len() <= MAX_PLAIN);
    }
    if let Ok((values, scan)) = plain_values(data, 4096) {
        assert!(scan.pages <= data.len() / 4096);
        assert!(values.iter().all(|v| v.2.len() <= MAX_PLAIN));
    }
});
