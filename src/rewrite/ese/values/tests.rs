//! The decompressors on MS-XCA's worked examples and on hostile streams, and the walk on the
//! real `SRUDB.dat` of `../shared/realdata/ese-srum` (12 tables, 683 records as esedbexport
//! exports them, no compressed value).

use super::*;
use crate::sid::MachineSid;

fn mapping() -> SidMapping {
    SidMapping::new(
        MachineSid::new(1806060109, 1839359715, 529511253),
        MachineSid::new(1111111111, 2222222222, 333333333),
    )
    .unwrap()
}

/// MS-XCA §3.1 (plain LZ77 examples): 26 literals, and "abc" repeated 100 times as three
/// literals and one 297-byte match (the long-length encoding).
#[test]
fn ms_xca_examples_decompress() {
    let mut lit = vec![0x3f, 0, 0, 0];
    lit.extend(b'a'..=b'z');
    assert_eq!(
        decompress_lz77(&lit, 100).unwrap(),
        (b'a'..=b'z').collect::<Vec<_>>()
    );
    let abc = [
        0xff, 0xff, 0xff, 0x1f, 0x61, 0x62, 0x63, 0x17, 0x00, 0x0f, 0xff, 0x26, 0x01,
    ];
    assert_eq!(decompress_lz77(&abc, 300).unwrap(), b"abc".repeat(100));
    // One byte short of the plain size: refused, not truncated.
    assert!(decompress_lz77(&abc, 299).is_err());
}

#[test]
fn an_xpress_value_is_checked_against_its_declared_size() {
    let mut v = vec![SCHEME_XPRESS << 3, 44, 1];
    v.extend([
        0xff, 0xff, 0xff, 0x1f, 0x61, 0x62, 0x63, 0x17, 0x00, 0x0f, 0xff, 0x26, 0x01,
    ]);
    assert_eq!(
        decompress(&v, MAX_PLAIN).unwrap().unwrap(),
        b"abc".repeat(100)
    );
    v[1] = 43; // declares 299
    assert!(decompress(&v, MAX_PLAIN).is_err());
    v[1] = 0xff;
    v[2] = 0xff; // declares 65535, holds 300
    assert!(decompress(&v, MAX_PLAIN).is_err());
}

/// ESE's 7-bit packing, written from its description (seven bits a character, least
/// significant first; the header's low bits are the used bits of the last byte minus one).
fn pack_7bit(text: &[u8], scheme: u8) -> Vec<u8> {
    let bits = text.len() * 7;
    let mut out = vec![0u8; bits.div_ceil(8)];
    for (i, c) in text.iter().enumerate() {
        for b in 0..7 {
            if c & (1 << b) != 0 {
                out[(i * 7 + b) / 8] |= 1 << ((i * 7 + b) % 8);
            }
        }
    }
    let used = bits - (out.len() - 1) * 8;
    let mut v = vec![(scheme << 3) | (used as u8 - 1)];
    v.extend(out);
    v
}

#[test]
fn seven_bit_values_decompress() {
    let text = b"S-1-5-21-1806060109-1839359715-529511253";
    assert_eq!(
        decompress(&pack_7bit(text, 1), MAX_PLAIN).unwrap().unwrap(),
        text
    );
    let wide: Vec<u8> = text.iter().flat_map(|&c| [c, 0]).collect();
    assert_eq!(
        decompress(&pack_7bit(text, 2), MAX_PLAIN).unwrap().unwrap(),
        wide
    );
    assert!(!mapping().find_all(&wide, true).is_empty());
}

#[test]
fn unknown_schemes_are_named() {
    for (s, name) in [
        (5u8, "XPRESS9"),
        (6, "XPRESS10"),
        (7, "LZ4"),
        (0, "no (scheme 0)"),
    ] {
        let e = decompress(&[s << 3, 1, 2, 3], MAX_PLAIN).unwrap_err();
        assert_eq!(e, Undecodable::Scheme(s));
        assert!(e.to_string().starts_with(name), "{e}");
    }
    assert_eq!(decompress(&[SCHEME_SCRUB << 3, 0, 0], MAX_PLAIN), Ok(None));
}

#[test]
fn hostile_streams_are_errors() {
    // Truncated flags, truncated match, a match before the start, a length below 22.
    for bad in [
        &[0x00, 0x00][..],
        &[0x00, 0x00, 0x00, 0x80, 0x17][..],
        &[0x00, 0x00, 0x00, 0x80, 0x08, 0x00][..],
        &[
            0x00, 0x00, 0x00, 0x40, 0x61, 0x07, 0x00, 0x0f, 0xff, 0x05, 0x00,
        ][..],
        &[0x00, 0x00, 0x00, 0x40, 0x61, 0x07, 0x00][..],
    ] {
        assert!(decompress_lz77(bad, 1000).is_err(), "{bad:x?}");
    }
    // A 4-GiB declared match length: capped, no allocation of that size.
    let huge = [
        0x00, 0x00, 0x00, 0x40, 0x61, 0x07, 0x00, 0x0f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(decompress_lz77(&huge, usize::MAX).is_err());
    // Pseudo-random streams: never a panic, never more than the cap.
    let mut x: u32 = 0x1234_5678;
    for len in 0..2000usize {
        let buf: Vec<u8> = (0..len % 97)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        if let Ok(out) = decompress_lz77(&buf, 512) {
            assert!(out.len() <= 512);
        }
        let _ = decompress(&buf, 512);
        let _ = decompress_7bit(&buf, len % 2 == 0);
    }
}

fn srudb() -> Vec<u8> {
    let out = std::process::Command::new("gunzip")
        .arg("-c")
        .arg(crate::testutil::realdata("ese-srum/SRUDB.dat.gz"))
        .output()
        .expect("gunzip");
    assert!(out.status.success());
    out.stdout
}

/// The walk follows every tree of the real SRUDB.dat: the catalog and its 11 other tables, 683
/// records in all (esedbexport exports 7 + 161 + 161 + 28 + 0 + 106 + 6 + 3 + 203 + 3 + 3 + 2
/// rows), 244 tagged values (dissect.esedb counts the same), none compressed, no long values.
#[test]
fn the_walk_reads_every_record_of_the_real_srudb() {
    let db = srudb();
    let scan = scan(&db, 4096, &mapping()).unwrap();
    assert_eq!(scan.structure, None);
    assert_eq!(scan.trees, 12);
    assert_eq!(scan.records, 683);
    assert_eq!(scan.tagged, 244);
    assert_eq!(
        (scan.compressed, scan.lv_chunks, scan.compressed_chunks),
        (0, 0, 0)
    );
}

/// A real database with one page of nonsense: the walk notes where it stopped, no panic, and
/// with no compressed value found it says so rather than refusing.
#[test]
fn a_broken_tree_is_noted() {
    let mut db = srudb();
    // Page 4 (the catalog root) at file offset 5 × 4096: its tag count made huge.
    db[5 * 4096 + 34] = 0xff;
    db[5 * 4096 + 35] = 0x0f;
    let scan = scan(&db, 4096, &mapping()).unwrap();
    assert!(scan.structure.is_some());
    // Every page of the file as the catalog root: never a panic.
    let clean = srudb();
    for p in 2..clean.len() / 4096 {
        let mut db = clean.clone();
        db.copy_within(p * 4096..(p + 1) * 4096, 5 * 4096);
        let _ = super::scan(&db, 4096, &mapping());
    }
}
