//! Tests of the ESE checksums and [`rewrite_ese`] on the real `SRUDB.dat` of
//! `../shared/realdata/ese-srum` (4 KiB pages, format 0x620 revision 0x14, the machine SID
//! S-1-5-21-1806060109-1839359715-529511253 twice in binary), and on pages built here in the
//! large and old formats.

use super::*;
use crate::sid::MachineSid;
use crate::testutil::realdata;

const OLD: (u32, u32, u32) = (1806060109, 1839359715, 529511253);
const NEW: (u32, u32, u32) = (1111111111, 2222222222, 333333333);

fn mapping() -> SidMapping {
    SidMapping::new(
        MachineSid::new(OLD.0, OLD.1, OLD.2),
        MachineSid::new(NEW.0, NEW.1, NEW.2),
    )
    .unwrap()
}

fn srudb() -> Vec<u8> {
    let out = std::process::Command::new("gunzip")
        .arg("-c")
        .arg(realdata("ese-srum/SRUDB.dat.gz"))
        .output()
        .expect("gunzip");
    assert!(out.status.success());
    out.stdout
}

fn binary(sid: (u32, u32, u32)) -> Vec<u8> {
    MachineSid::new(sid.0, sid.1, sid.2)
        .binary_pattern()
        .to_vec()
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// The first page of the real SRUDB.dat that ESE never initialised (all zeros): pages 142 and
/// 143 are zero, and the 16 pages after them hold leftover bytes of other files (registry cells,
/// UTF-16 text; their "page flags" have bits no ESE page has), which no checksum covers.
const FIRST_UNUSED_PAGE: usize = 142;

/// Prove the checksum algorithms on real data: every page of the real SRUDB.dat that ESE wrote —
/// both header copies and every database page, in whatever format Windows wrote it — verifies as
/// it is.
#[test]
fn every_page_of_the_real_srudb_verifies() {
    let db = srudb();
    let header = EseHeader::parse(&db).unwrap();
    assert_eq!(header.page_size, 4096);
    assert_eq!(
        (header.format_version, header.format_revision),
        (0x620, 0x14)
    );
    let bad = bad_pages(&db).unwrap();
    assert!(
        bad.iter().all(|&at| at / 4096 > FIRST_UNUSED_PAGE),
        "pages ESE wrote fail: {bad:x?}"
    );
    assert!(db[FIRST_UNUSED_PAGE * 4096..(FIRST_UNUSED_PAGE + 2) * 4096]
        .iter()
        .all(|&b| b == 0));
    for at in &bad {
        let flags = u32::from_le_bytes(db[at + 36..at + 40].try_into().unwrap());
        let fdp = u32::from_le_bytes(db[at + 24..at + 28].try_into().unwrap());
        assert!(flags & !0x1_ffff != 0 || fdp > 1000, "page at {at:#x}");
    }
    // The test proves something only if headers and many new-format pages are there.
    let mut formats = std::collections::HashMap::new();
    for (i, page) in db.chunks_exact(4096).take(FIRST_UNUSED_PAGE).enumerate() {
        if u32::from_le_bytes(page[..4].try_into().unwrap()) == 0 {
            continue;
        }
        let (format, _) = page_identity(page, i, &header).unwrap();
        *formats.entry(format).or_insert(0) += 1;
    }
    assert_eq!(formats[&PageFormat::Header], 2, "{formats:?}");
    assert!(formats[&PageFormat::New] >= 79, "{formats:?}");
}

/// One flipped bit anywhere in a page is seen by its checksum (what Windows' -1018 is).
#[test]
fn a_changed_byte_breaks_the_page_checksum() {
    let mut db = srudb();
    let at = db
        .windows(12)
        .position(|w| w == binary(OLD).as_slice())
        .unwrap();
    let before = bad_pages(&db).unwrap();
    db[at] ^= 1;
    let mut after = bad_pages(&db).unwrap();
    after.retain(|p| !before.contains(p));
    assert_eq!(after, vec![at / 4096 * 4096]);
}

/// After the SID rewrite every page still verifies, the SID is gone in every form, only the pages
/// holding it changed, and outside their checksum fields only the SID bytes differ.
#[test]
fn after_the_rewrite_every_page_still_verifies() {
    let db = srudb();
    let map = mapping();
    assert_eq!(count(&db, &binary(OLD)), 2);
    let out = rewrite_ese(&db, &map).unwrap();
    assert_eq!(out.report.replaced.total(), 2);
    assert_eq!(out.bytes.len(), db.len());
    assert_eq!(bad_pages(&out.bytes).unwrap(), bad_pages(&db).unwrap());
    assert!(map.find_all(&out.bytes, true).is_empty());
    assert_eq!(count(&out.bytes, &binary(NEW)), 2);
    assert!(out.report.pages_changed() >= 1);
    assert_eq!(out.report.pages_changed(), out.report.new_pages_changed);
    let mut expected = db.clone();
    map.replace_all(&mut expected);
    for (i, (want, got)) in expected
        .chunks_exact(4096)
        .zip(out.bytes.chunks_exact(4096))
        .enumerate()
    {
        assert_eq!(want[8..], got[8..], "page {i} differs outside its checksum");
        if want[..8] != got[..8] {
            assert_ne!(db[i * 4096..i * 4096 + 4096], want[..], "page {i}");
        }
    }
    // A second run finds nothing to do.
    let again = rewrite_ese(&out.bytes, &map).unwrap();
    assert_eq!(again.report.replaced.total(), 0);
    assert_eq!(again.bytes, out.bytes);
}

/// A page whose checksum is already wrong in the master, and which holds the SID, is refused
/// (never repaired, never left stale); a file without the SID is left as it is, even then.
#[test]
fn a_stale_page_holding_the_sid_is_refused() {
    let mut db = srudb();
    let at = db
        .windows(12)
        .position(|w| w == binary(OLD).as_slice())
        .unwrap();
    let page = at / 4096 * 4096;
    // Damage a byte of the same page that is not the SID.
    let other = if at - page > 100 {
        page + 64
    } else {
        page + 4000
    };
    db[other] ^= 0x40;
    match rewrite_ese(&db, &mapping()) {
        Err(EseError::StaleChecksum { at, format, .. }) => {
            assert_eq!(at, page);
            assert_eq!(format, PageFormat::New);
        }
        other => panic!("expected a refusal, got {:?}", other.map(|o| o.report)),
    }
    let unrelated = SidMapping::new(
        MachineSid::new(1234567890, 1234567890, 123456789),
        MachineSid::new(1111111111, 2222222222, 333333333),
    )
    .unwrap();
    let out = rewrite_ese(&db, &unrelated).unwrap();
    assert_eq!(out.bytes, db);
}

#[test]
fn unknown_formats_and_dirty_databases_are_refused() {
    let db = srudb();
    let mut newer = db.clone();
    newer[232..236].copy_from_slice(&0x15u32.to_le_bytes());
    assert!(matches!(
        rewrite_ese(&newer, &mapping()),
        Err(EseError::UnknownFormat { revision: 0x15, .. })
    ));
    let mut dirty = db.clone();
    dirty[52..56].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(
        rewrite_ese(&dirty, &mapping()).unwrap_err(),
        EseError::DirtyShutdown
    );
    assert!(matches!(
        rewrite_ese(b"not an ese file", &mapping()),
        Err(EseError::Truncated { .. })
    ));
    let mut other = db.clone();
    other[4] = 0;
    assert!(matches!(
        rewrite_ese(&other, &mapping()),
        Err(EseError::NotEse { .. })
    ));
    // Hostile header bytes never panic.
    let mut odd = db[..4096].to_vec();
    odd[236..240].copy_from_slice(&3u32.to_le_bytes());
    assert!(matches!(
        rewrite_ese(&odd, &mapping()),
        Err(EseError::PageSize { found: 3 })
    ));
}

/// The SID as 7-bit compressed text (how ESE stores short text values compressed) is found and
/// refused, at every bit phase.
#[test]
fn a_seven_bit_compressed_sid_is_refused() {
    let map = mapping();
    let upper = map.old().ascii();
    let mut lower = upper.clone();
    lower[0] = b's';
    for (phase, text) in (0..8)
        .map(|p| (p, &upper))
        .chain((0..8).map(|p| (p, &lower)))
    {
        let mut db = srudb();
        // Pack "x" * phase bits then the SID's characters into a free spot of page 40.
        let at = 40 * 4096 + 2000;
        let mut bit = 8 * at + phase;
        for c in text.iter() {
            for b in 0..7 {
                let byte = bit / 8;
                let mask = 1u8 << (bit % 8);
                if c & (1 << b) != 0 {
                    db[byte] |= mask;
                } else {
                    db[byte] &= !mask;
                }
                bit += 1;
            }
        }
        assert!(
            matches!(rewrite_ese(&db, &map), Err(EseError::CompressedSid { .. })),
            "phase {phase}"
        );
    }
}

/// A page of `size` bytes with the new-format flag and some content, numbered `pgno`.
fn built_page(size: usize, flags: u32, seed: u32) -> Vec<u8> {
    let mut page = vec![0u8; size];
    let mut x = seed;
    for w in page.chunks_exact_mut(4).skip(20) {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        w.copy_from_slice(&x.to_le_bytes());
    }
    page[PAGE_FLAGS..PAGE_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    page
}

/// Large pages: the checksums this module writes verify, cover every block (a bit flipped in any
/// block, or in a block's stored checksum, is seen) and depend on the page number.
#[test]
fn large_page_checksums_cover_every_block() {
    for size in [16384usize, 32768] {
        let mut page = built_page(size, FLAG_NEW_CHECKSUM | 0x2, 7);
        set_checksums(&mut page, 77, PageFormat::Large);
        assert!(check_page(&page, 77, PageFormat::Large).is_ok());
        assert!(check_page(&page, 78, PageFormat::Large).is_err());
        for at in [
            100,
            size / 4 + 3,
            size / 2 + 5,
            size - 1,
            LARGE_BLOCK_CHECKSUMS + 9,
        ] {
            let mut bad = page.clone();
            bad[at] ^= 0x10;
            assert!(
                check_page(&bad, 77, PageFormat::Large).is_err(),
                "{size}: {at}"
            );
        }
    }
}

/// Old-format pages: seeded XOR over everything but the first u32, page number at 4.
#[test]
fn old_format_pages() {
    let mut page = built_page(4096, 0x2, 9);
    set_checksums(&mut page, 5, PageFormat::Old);
    assert_eq!(u32::from_le_bytes(page[4..8].try_into().unwrap()), 5);
    assert!(check_page(&page, 5, PageFormat::Old).is_ok());
    assert!(check_page(&page, 6, PageFormat::Old).is_err());
    page[3000] ^= 1;
    assert!(check_page(&page, 5, PageFormat::Old).is_err());
}

/// The ECC of a block locates a single flipped bit, as ESE's correction relies on: the XOR of the
/// two ECCs holds the bit's row and column (and their complements).
#[test]
fn the_ecc_locates_a_single_bit_flip() {
    let page = built_page(4096, FLAG_NEW_CHECKSUM, 3);
    let (ecc, _) = ecc_block(&page, 1, true);
    for bit in [8 * 100 + 3, 8 * 4095 + 7, 8 * 2048] {
        let mut bad = page.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let (ecc2, _) = ecc_block(&bad, 1, true);
        let diff = ecc ^ ecc2;
        let row = (diff >> 5) & 0x3ff;
        let column = diff & 31;
        assert_eq!((row * 32 + column) as usize, bit);
    }
}

/// The probe mapping `inspect` uses keeps every sub-authority's digit count and differs from the
/// old SID, so that it finds exactly what the clone's mapping finds.
#[test]
fn the_probe_mapping_has_the_old_sids_shape() {
    for old in [
        MachineSid::new(OLD.0, OLD.1, OLD.2),
        MachineSid::new(1000000000, 1000000000, 100000000),
        MachineSid::new(1, 0, 9),
    ] {
        let probe = probe_mapping(old).unwrap();
        assert_eq!(probe.old(), old);
        assert_ne!(probe.new_sid(), old);
        assert_eq!(probe.new_sid().digits(), old.digits());
    }
}

/// A database of 32 KiB pages built here (the real SRUDB.dat's header with the page size and the
/// large pages' format): the SID in blocks 0 and 2 of one page and across the boundary of two
/// pages is replaced, and every page's four block checksums verify afterwards; pages without the
/// SID are untouched.
#[test]
fn a_large_page_database_is_rewritten_with_valid_block_checksums() {
    const PAGE: usize = 32768;
    let real = srudb();
    let mut db = vec![0u8; PAGE * 6];
    for copy in 0..2 {
        let h = &mut db[copy * PAGE..(copy + 1) * PAGE];
        h[..4096].copy_from_slice(&real[..4096]);
        h[236..240].copy_from_slice(&(PAGE as u32).to_le_bytes());
        set_checksums(h, 0, PageFormat::Header);
    }
    for index in 2..6 {
        let page = built_page(PAGE, FLAG_NEW_CHECKSUM | 0x2, index as u32);
        db[index * PAGE..(index + 1) * PAGE].copy_from_slice(&page);
    }
    let sid = binary(OLD);
    db[2 * PAGE + 200..2 * PAGE + 212].copy_from_slice(&sid);
    db[2 * PAGE + 17000..2 * PAGE + 17012].copy_from_slice(&sid);
    db[4 * PAGE + 30000..4 * PAGE + 30012].copy_from_slice(&sid);
    for index in 2..6 {
        let pgno = index as u32 - 1;
        set_checksums(
            &mut db[index * PAGE..(index + 1) * PAGE],
            pgno,
            PageFormat::Large,
        );
    }
    assert_eq!(bad_pages(&db).unwrap(), Vec::<usize>::new());
    let out = rewrite_ese(&db, &mapping()).unwrap();
    assert_eq!(out.report.replaced.total(), 3);
    assert_eq!(out.report.large_pages_changed, 2);
    assert_eq!(bad_pages(&out.bytes).unwrap(), Vec::<usize>::new());
    assert_eq!(count(&out.bytes, &binary(NEW)), 3);
    assert_eq!(
        out.bytes[3 * PAGE..4 * PAGE],
        db[3 * PAGE..4 * PAGE],
        "a page without the SID"
    );
    assert_eq!(
        out.bytes[5 * PAGE..],
        db[5 * PAGE..],
        "a page without the SID"
    );
}
