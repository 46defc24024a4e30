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

/// A page of a synthetic database: `flags`, object id `objid`, and one node per (key, data)
/// after an empty tag 0.
fn page(flags: u32, objid: u32, nodes: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    p[24..28].copy_from_slice(&objid.to_le_bytes());
    p[34..36].copy_from_slice(&(nodes.len() as u16 + 1).to_le_bytes());
    p[36..40].copy_from_slice(&flags.to_le_bytes());
    let mut at = 0usize;
    for (i, (key, data)) in nodes.iter().enumerate() {
        let mut node = (key.len() as u16).to_le_bytes().to_vec();
        node.extend_from_slice(key);
        node.extend_from_slice(data);
        p[40 + at..40 + at + node.len()].copy_from_slice(&node);
        let t = 4096 - (i + 2) * 4;
        p[t..t + 2].copy_from_slice(&(node.len() as u16).to_le_bytes());
        p[t + 2..t + 4].copy_from_slice(&(at as u16).to_le_bytes());
        at += node.len();
    }
    p
}

/// A database whose catalog (page 4) names one long-value tree (page 6) holding one value of
/// `size` bytes in the chunks given as (offset, stored bytes).
fn lv_database(size: u32, chunks: &[(u32, Vec<u8>)]) -> Vec<u8> {
    lv_values(&[(9, size, chunks.to_vec())])
}

/// The same with several values, each (LID, size, chunks).
type LongValue = (u32, u32, Vec<(u32, Vec<u8>)>);
fn lv_values(values: &[LongValue]) -> Vec<u8> {
    let mut catalog = vec![4u8, 127, 18, 0];
    catalog.extend(2u32.to_le_bytes()); // ObjidTable
    catalog.extend(4u16.to_le_bytes()); // Type: long values
    catalog.extend(3u32.to_le_bytes()); // Id
    catalog.extend(6u32.to_le_bytes()); // ColtypOrPgnoFDP
    let mut owned: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (lid, size, chunks) in values {
        let lid = lid.to_be_bytes();
        let mut root = 1u32.to_le_bytes().to_vec();
        root.extend(size.to_le_bytes());
        owned.push((lid.to_vec(), root));
        for (o, d) in chunks {
            owned.push((
                lid.iter().copied().chain(o.to_be_bytes()).collect(),
                d.clone(),
            ));
        }
    }
    let nodes: Vec<(&[u8], &[u8])> = owned
        .iter()
        .map(|(k, d)| (k.as_slice(), d.as_slice()))
        .collect();
    let mut db = vec![0u8; 4096 * 8];
    db[5 * 4096..6 * 4096].copy_from_slice(&page(0x3, 2, &[(b"k", &catalog)]));
    db[7 * 4096..8 * 4096].copy_from_slice(&page(0x3 | 0x80, 3, &nodes));
    db
}

/// An XPRESS value (MS-XCA 2.3) of 200 × `x` then `text`: one literal, one 199-byte match
/// (length code 7, nibble 15, byte 174), then `text` as literals; unused flag bits set.
fn xpress_run_then(text: &[u8]) -> Vec<u8> {
    let mut items: Vec<(bool, Vec<u8>)> = vec![(false, vec![b'x']), (true, vec![7, 0, 15, 174])];
    items.extend(text.iter().map(|&b| (false, vec![b])));
    let mut v = vec![SCHEME_XPRESS << 3];
    v.extend(((200 + text.len()) as u16).to_le_bytes());
    for group in items.chunks(32) {
        let mut flags = 0u32;
        for (i, (is_match, _)) in group.iter().enumerate() {
            if *is_match {
                flags |= 1 << (31 - i);
            }
        }
        flags |= (1u64 << (32 - group.len())) as u32 - 1;
        v.extend(flags.to_le_bytes());
        group.iter().for_each(|(_, b)| v.extend(b));
    }
    v
}

/// Long-value chunks: one shorter than its place is decompressed and searched; plain chunks are
/// left to the byte search; an unreadable or mis-sized compressed chunk and a chunk without its
/// root are errors, never skipped in silence.
#[test]
fn compressed_long_value_chunks_are_found() {
    let map = mapping();
    let sid = "S-1-5-21-1806060109-1839359715-529511253-1001";
    let text: Vec<u8> = sid.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let mut plain = vec![b'x'; 300];
    plain.extend(&text);
    let n = plain.len() as u32;
    // Chunk 0 plain (100 bytes), chunk 1 compressed (200 × x and the SID's text).
    let db = lv_database(
        n,
        &[(0, plain[..100].to_vec()), (100, xpress_run_then(&text))],
    );
    assert!(
        map.find_all(&db, true).is_empty(),
        "the stored bytes show the SID"
    );
    assert!(matches!(
        scan(&db, 4096, &map),
        Err(Finding::Sid {
            scheme: SCHEME_XPRESS,
            ..
        })
    ));
    let (values, s) = plain_values(&db, 4096).unwrap();
    assert_eq!(
        (s.lv_chunks, s.compressed_chunks, s.structure),
        (2, 1, None)
    );
    assert_eq!(values[0].2, plain[100..]);
    // Without the SID: found, checked, accepted.
    let other = vec![b'y'; text.len()];
    let db = lv_database(
        n,
        &[(0, plain[..100].to_vec()), (100, xpress_run_then(&other))],
    );
    let s = scan(&db, 4096, &map).unwrap();
    assert_eq!((s.compressed_chunks, s.structure), (1, None));
    // Both chunks plain: nothing compressed.
    let db = lv_database(
        n,
        &[(0, plain[..100].to_vec()), (100, plain[100..].to_vec())],
    );
    let s = scan(&db, 4096, &map).unwrap();
    assert_eq!((s.lv_chunks, s.compressed_chunks), (2, 0));
    // XPRESS10; a stream whose plain size is not the chunk's place; a chunk without its root
    // (the value's size taken from nowhere).
    let mut x10 = xpress_run_then(&other);
    x10[0] = 6 << 3;
    let db = lv_database(n, &[(0, plain[..100].to_vec()), (100, x10)]);
    assert!(matches!(
        scan(&db, 4096, &map),
        Err(Finding::Unreadable {
            why: Undecodable::Scheme(6),
            ..
        })
    ));
    let db = lv_database(
        n + 1,
        &[(0, plain[..100].to_vec()), (100, xpress_run_then(&other))],
    );
    let s = scan(&db, 4096, &map).unwrap();
    assert_eq!(s.compressed_chunks, 1);
    assert_eq!(
        s.structure.map(|f| f.1),
        Some("a compressed chunk of the wrong plain size")
    );
    let mut db = lv_database(
        n,
        &[(0, plain[..100].to_vec()), (100, xpress_run_then(&other))],
    );
    let root_key = 7 * 4096 + 40 + 2;
    db[root_key + 3] = 8; // the root now names LID 8, the chunks LID 9
    let s = scan(&db, 4096, &map).unwrap();
    assert_eq!(
        s.structure.map(|f| f.1),
        Some("a long-value chunk without its root")
    );
}

/// `rewrite_ese` on the synthetic databases: the SID in a compressed chunk, an unreadable chunk
/// and a tree fault beside a compressed chunk are refused; a compressed chunk without the SID
/// leaves the file as it is.
#[test]
fn rewrite_ese_refuses_what_the_walk_finds() {
    use crate::rewrite::ese::{rewrite_ese, EseError};
    let with_header = |mut db: Vec<u8>| {
        db[4..8].copy_from_slice(&0x89AB_CDEFu32.to_le_bytes());
        db[8..12].copy_from_slice(&0x620u32.to_le_bytes());
        db[232..236].copy_from_slice(&0x14u32.to_le_bytes());
        db[236..240].copy_from_slice(&4096u32.to_le_bytes());
        db
    };
    let map = mapping();
    let sid = "S-1-5-21-1806060109-1839359715-529511253-1001";
    let text: Vec<u8> = sid.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let other = vec![b'y'; text.len()];
    let n = 300 + text.len() as u32;
    let head = vec![b'x'; 100];
    let db = with_header(lv_database(
        n,
        &[(0, head.clone()), (100, xpress_run_then(&text))],
    ));
    assert!(matches!(
        rewrite_ese(&db, &map),
        Err(EseError::CompressedValueSid {
            scheme: "XPRESS",
            ..
        })
    ));
    let db = with_header(lv_database(
        n,
        &[(0, head.clone()), (100, xpress_run_then(&other))],
    ));
    let out = rewrite_ese(&db, &map).unwrap();
    assert_eq!(out.bytes, db);
    assert_eq!(out.report.compressed_values, 1);
    let db = with_header(lv_database(
        n + 1,
        &[(0, head.clone()), (100, xpress_run_then(&other))],
    ));
    let e = rewrite_ese(&db, &map).unwrap_err();
    assert!(matches!(e, EseError::ValueStructure { .. }), "{e}");
    let mut x9 = xpress_run_then(&other);
    x9[0] = 5 << 3;
    let db = with_header(lv_database(n, &[(0, head), (100, x9)]));
    let e = rewrite_ese(&db, &map).unwrap_err();
    assert!(
        e.to_string()
            .contains("XPRESS9 compression, which sidfs cannot read"),
        "{e}"
    );
}

/// The SID's binary and UTF-16 forms, each inside 50 × `x` … 50 × `y`.
fn split_values() -> Vec<(&'static str, Vec<u8>, usize)> {
    let old = MachineSid::new(1806060109, 1839359715, 529511253);
    let mut out = Vec::new();
    for (name, form) in [
        ("binary", old.binary_pattern().to_vec()),
        ("utf-16", old.utf16le()),
    ] {
        let mut v = vec![b'x'; 50];
        v.extend(&form);
        v.extend([b'y'; 50]);
        out.push((name, v, form.len()));
    }
    out
}

/// A SID split across two plain chunks of one long value, at every cut point inside it, is seen
/// by no byte search of the file, and the walk refuses it, naming the LID and the second chunk's
/// offset. Cut before or after it (wholly in one chunk, which the byte search sees): accepted.
#[test]
fn a_sid_split_across_two_plain_chunks_is_found() {
    let map = mapping();
    for (name, v, len) in split_values() {
        for cut in 1..len {
            let at = 50 + cut;
            let db = lv_database(
                v.len() as u32,
                &[(0, v[..at].to_vec()), (at as u32, v[at..].to_vec())],
            );
            assert!(map.find_all(&db, true).is_empty(), "{name} at {cut}");
            assert!(
                matches!(
                    scan(&db, 4096, &map),
                    Err(Finding::SplitSid { lid: 9, offset, .. }) if offset as usize == at
                ),
                "{name} cut at {cut}"
            );
        }
        for at in [50, 50 + len + 2] {
            let db = lv_database(
                v.len() as u32,
                &[(0, v[..at].to_vec()), (at as u32, v[at..].to_vec())],
            );
            assert!(!map.find_all(&db, true).is_empty(), "{name} whole at {at}");
            let s = scan(&db, 4096, &map).unwrap();
            assert_eq!((s.junctions, s.structure), (1, None), "{name} at {at}");
        }
    }
    // Three chunks, the middle one shorter than the SID: the SID runs through all three.
    let (_, v, _) = split_values().pop().unwrap();
    let db = lv_database(
        v.len() as u32,
        &[
            (0, v[..60].to_vec()),
            (60, v[60..80].to_vec()),
            (80, v[80..].to_vec()),
        ],
    );
    assert!(map.find_all(&db, true).is_empty());
    assert!(matches!(
        scan(&db, 4096, &map),
        Err(Finding::SplitSid { lid: 9, .. })
    ));
}

/// A compressed chunk whose plain end holds the first part of the SID's text, and a plain chunk
/// holding the rest: refused.
#[test]
fn a_sid_split_across_a_compressed_and_a_plain_chunk_is_found() {
    let map = mapping();
    let sid = "S-1-5-21-1806060109-1839359715-529511253-1001";
    let text: Vec<u8> = sid.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    for cut in [1, 20, 41, 79] {
        let first = xpress_run_then(&text[..cut]);
        let at = 200 + cut as u32;
        let db = lv_database(
            200 + text.len() as u32,
            &[(0, first), (at, text[cut..].to_vec())],
        );
        assert!(map.find_all(&db, true).is_empty());
        assert!(
            matches!(
                scan(&db, 4096, &map),
                Err(Finding::SplitSid { lid: 9, offset, .. }) if offset == at
            ),
            "cut at {cut}"
        );
    }
}

/// The same bytes at the end of one value and the start of the next (another LID): never joined.
#[test]
fn chunks_of_two_values_are_not_joined() {
    let map = mapping();
    for (name, v, len) in split_values() {
        let at = 50 + len / 2;
        let pad = vec![b'z'; 30];
        let db = lv_values(&[
            (
                9,
                30 + at as u32,
                vec![(0, pad.clone()), (30, v[..at].to_vec())],
            ),
            (
                10,
                (v.len() - at + 30) as u32,
                vec![(0, v[at..].to_vec()), ((v.len() - at) as u32, pad.clone())],
            ),
        ]);
        assert!(map.find_all(&db, true).is_empty());
        let s = scan(&db, 4096, &map).unwrap();
        assert_eq!(
            (s.lv_chunks, s.junctions, s.structure),
            (4, 2, None),
            "{name}"
        );
    }
}

/// `rewrite_ese` refuses a database whose only SID is split across two long-value chunks, in one
/// line naming the LID and the offset.
#[test]
fn rewrite_ese_refuses_a_split_sid() {
    use crate::rewrite::ese::{rewrite_ese, EseError};
    let map = mapping();
    let (_, v, _) = split_values().pop().unwrap();
    let mut db = lv_database(
        v.len() as u32,
        &[(0, v[..70].to_vec()), (70, v[70..].to_vec())],
    );
    db[4..8].copy_from_slice(&0x89AB_CDEFu32.to_le_bytes());
    db[8..12].copy_from_slice(&0x620u32.to_le_bytes());
    db[232..236].copy_from_slice(&0x14u32.to_le_bytes());
    db[236..240].copy_from_slice(&4096u32.to_le_bytes());
    let e = rewrite_ese(&db, &map).unwrap_err();
    assert!(
        matches!(
            e,
            EseError::SplitLongValueSid {
                lid: 9,
                offset: 70,
                ..
            }
        ),
        "{e}"
    );
    let line = e.to_string();
    assert!(!line.contains('\n'));
    assert!(
        line.contains("split across two chunks of long value 0x9 at its offset 70")
            && line.contains("which a byte rewrite cannot replace"),
        "{line}"
    );
}
