//! Tests of [`rewrite_wmi`] on repositories built here from the format notes (no real sample is
//! at hand): record and page checksums recomputed, a record split over pages, stale backups,
//! and the refusals.

use super::*;
use crate::sid::MachineSid;

const OLD: (u32, u32, u32) = (1806060109, 1839359715, 529511253);
const NEW: (u32, u32, u32) = (1111111111, 2222222222, 333333333);

fn sid_map() -> SidMapping {
    SidMapping::new(
        MachineSid::new(OLD.0, OLD.1, OLD.2),
        MachineSid::new(NEW.0, NEW.1, NEW.2),
    )
    .unwrap()
}

fn binary_sid(sub: (u32, u32, u32), rid: u32) -> Vec<u8> {
    let mut b = vec![1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0];
    for v in [sub.0, sub.1, sub.2, rid] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// A record of `len` bytes with the user SID (RID 1001) at `sid_at`.
fn record(len: usize, sid_at: usize, fill: u8) -> Vec<u8> {
    let mut r = vec![fill; len];
    let s = binary_sid(OLD, 1001);
    r[sid_at..sid_at + s.len()].copy_from_slice(&s);
    r
}

/// Physical pages: 0 holds records 1 (SID) and 2 (no SID); 1 holds record 3, which is 10000 bytes
/// long with the SID across its page boundary and continues on physical page 2 (logical 2);
/// logical page 1 is physical page 3, a record without the SID.
struct Repo {
    objects: Vec<u8>,
    mappings: Vec<Vec<u8>>,
}

fn put_descriptor(page: &mut [u8], i: usize, id: u32, offset: usize, data: &[u8]) {
    let at = i * DESCRIPTOR_LEN;
    page[at..at + 4].copy_from_slice(&id.to_le_bytes());
    page[at + 4..at + 8].copy_from_slice(&(offset as u32).to_le_bytes());
    page[at + 8..at + 12].copy_from_slice(&(data.len() as u32).to_le_bytes());
    page[at + 12..at + 16].copy_from_slice(&crc32(data).to_le_bytes());
}

fn mapping_file(sequence: u32, pages: &[u32], objects: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [MAPPING_SIGNATURE, sequence, 1, 0, 4, pages.len() as u32] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    for &p in pages {
        let page = &objects[p as usize * PAGE_SIZE..(p as usize + 1) * PAGE_SIZE];
        for v in [p, crc32(page), 0, 0, 0, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
    }
    for v in [0, MAPPING_FOOTER] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    // The index mapping table: one page.
    for v in [
        MAPPING_SIGNATURE,
        sequence,
        1,
        0,
        1,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        MAPPING_FOOTER,
    ] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m
}

fn repo() -> Repo {
    let mut objects = vec![0u8; 4 * PAGE_SIZE];
    let r1 = record(300, 40, 0x11);
    let r2 = record(200, 0, 0x22);
    let r2 = {
        let mut r = r2;
        r[..28].fill(0x22);
        r
    };
    // The sub-authority triple (SID bytes 12..24) starts 6 bytes before the end of physical page 1.
    let r3 = record(10000, PAGE_SIZE - 64 - 18, 0x33);
    let r4 = vec![0x44; 500];
    {
        let p0 = &mut objects[..PAGE_SIZE];
        put_descriptor(p0, 0, 1, 48, &r1);
        put_descriptor(p0, 1, 2, 48 + 300, &r2);
        p0[48..348].copy_from_slice(&r1);
        p0[348..548].copy_from_slice(&r2);
    }
    {
        let p1 = &mut objects[PAGE_SIZE..2 * PAGE_SIZE];
        put_descriptor(p1, 0, 3, 64, &r3);
        p1[64..].copy_from_slice(&r3[..PAGE_SIZE - 64]);
    }
    objects[2 * PAGE_SIZE..2 * PAGE_SIZE + 10000 - (PAGE_SIZE - 64)]
        .copy_from_slice(&r3[PAGE_SIZE - 64..]);
    {
        let p3 = &mut objects[3 * PAGE_SIZE..];
        put_descriptor(p3, 0, 4, 32, &r4);
        p3[32..532].copy_from_slice(&r4);
    }
    // Logical order: 0 -> 0, 1 -> 3, 2 -> 1, 3 -> 2.
    let pages = [0, 3, 1, 2];
    let mappings = vec![
        mapping_file(5, &pages, &objects),
        mapping_file(7, &pages, &objects),
        mapping_file(6, &pages, &objects),
    ];
    Repo { objects, mappings }
}

/// Every record's checksum and every page checksum of a repository, as this test's builder
/// computes them, must hold.
fn assert_consistent(objects: &[u8], mappings: &[Vec<u8>]) {
    for m in mappings {
        let parsed = parse_mapping(m, 0).unwrap();
        for r in records(objects, &parsed).unwrap() {
            assert_eq!(crc32(&r.gather(objects)), r.checksum, "record {}", r.id);
        }
        for e in &parsed.entries {
            let p = e.page as usize;
            assert_eq!(
                crc32(&objects[p * PAGE_SIZE..(p + 1) * PAGE_SIZE]),
                e.checksum
            );
        }
    }
}

#[test]
fn replaces_the_sid_and_recomputes_record_and_page_checksums() {
    let repo = repo();
    assert_consistent(&repo.objects, &repo.mappings);
    let map = sid_map();
    // Record 3's pages are physically adjacent: a byte search of the file sees both.
    assert_eq!(map.find_all(&repo.objects, true).len(), 2);
    let out = rewrite_wmi(&repo.objects, &[0u8; PAGE_SIZE], &repo.mappings, &map).unwrap();
    assert!(map.find_all(&out.objects, true).is_empty());
    assert_eq!(out.objects.len(), repo.objects.len());
    assert_consistent(&out.objects, &out.mappings);
    let r = &out.report;
    assert_eq!((r.records, r.records_changed), (4, 2));
    assert_eq!(r.replaced.binary, 2);
    assert_eq!(r.pages_changed, 3);
    assert_eq!(r.page_checksums_updated, 9);
    assert_eq!(r.sequence, 7);
    let new = binary_sid(NEW, 1001);
    assert!(out.objects.windows(new.len()).any(|w| w == new));
}

#[test]
fn a_record_split_over_pages_is_found_whole() {
    let repo = repo();
    // The SID of record 3 starts 6 bytes before the end of physical page 1: neither page alone
    // holds it.
    let map = sid_map();
    let split = PAGE_SIZE - 6;
    let found = map
        .find_all(&repo.objects[PAGE_SIZE..2 * PAGE_SIZE], true)
        .len()
        + map.find_all(&repo.objects[2 * PAGE_SIZE..], true).len();
    assert_eq!(found, 0, "the SID at {split:#x} is split");
    let out = rewrite_wmi(&repo.objects, &[], &repo.mappings, &map).unwrap();
    assert_eq!(out.report.replaced.binary, 2);
    let new = binary_sid(NEW, 1001);
    let mut r3 = out.objects[PAGE_SIZE + split - 12..2 * PAGE_SIZE].to_vec();
    r3.extend_from_slice(&out.objects[2 * PAGE_SIZE..2 * PAGE_SIZE + 20]);
    assert_eq!(&r3[..new.len()], &new[..]);
}

#[test]
fn a_record_whose_checksum_is_already_wrong_is_refused() {
    let mut repo = repo();
    repo.objects[12] ^= 1; // record 1's stored checksum
    let e = rewrite_wmi(&repo.objects, &[], &repo.mappings, &sid_map()).unwrap_err();
    assert!(matches!(e, WmiError::RecordChecksum { id: 1, .. }), "{e}");
}

#[test]
fn an_unknown_page_checksum_in_the_current_mapping_is_refused_and_a_stale_backup_is_kept() {
    let mut repo = repo();
    // The entry of logical page 0 (physical 0) in MAPPING1.MAP (sequence 5, a backup).
    repo.mappings[0][MAPPING_HEADER_LEN + ME_PAGE_CHECKSUM] ^= 1;
    let out = rewrite_wmi(&repo.objects, &[], &repo.mappings, &sid_map()).unwrap();
    assert_eq!(out.report.page_checksums_updated, 8);
    // The same in MAPPING2.MAP, the current one (sequence 7).
    repo.mappings[1][MAPPING_HEADER_LEN + ME_PAGE_CHECKSUM] ^= 1;
    let e = rewrite_wmi(&repo.objects, &[], &repo.mappings, &sid_map()).unwrap_err();
    assert!(matches!(e, WmiError::PageChecksum { page: 0, .. }), "{e}");
}

#[test]
fn unknown_layouts_are_refused() {
    let repo = repo();
    let map = sid_map();
    let e = rewrite_wmi(&repo.objects[..100], &[], &repo.mappings, &map).unwrap_err();
    assert!(matches!(e, WmiError::ObjectsSize { .. }));
    // A Windows XP (version 2.0) mapping: 16-byte header, 4-byte entries.
    let mut xp = Vec::new();
    for v in [MAPPING_SIGNATURE, 9, 4, 4, 0, 3, 1, 2, 0, MAPPING_FOOTER] {
        xp.extend_from_slice(&u32::to_le_bytes(v));
    }
    let mut mappings = repo.mappings.clone();
    mappings.push(xp);
    let e = rewrite_wmi(&repo.objects, &[], &mappings, &map).unwrap_err();
    assert!(matches!(e, WmiError::Mapping { file: 4, .. }), "{e}");
    let index = binary_sid(OLD, 500);
    let e = rewrite_wmi(&repo.objects, &index, &repo.mappings, &map).unwrap_err();
    assert_eq!(e, WmiError::SidInIndex);
    assert!(matches!(
        rewrite_wmi(&repo.objects, &[], &[], &map),
        Err(WmiError::NoMapping)
    ));
}

#[test]
fn hostile_descriptors_give_errors() {
    let mut repo = repo();
    // Record 3 claims to be far longer than the file.
    repo.objects[PAGE_SIZE + OD_SIZE..PAGE_SIZE + OD_SIZE + 4]
        .copy_from_slice(&u32::MAX.to_le_bytes());
    let e = rewrite_wmi(&repo.objects, &[], &repo.mappings, &sid_map()).unwrap_err();
    assert!(matches!(e, WmiError::Descriptor { page: 1, .. }), "{e}");
    let mut repo2 = self::repo();
    repo2.objects[OD_OFFSET..OD_OFFSET + 4].copy_from_slice(&0x1_0000u32.to_le_bytes());
    assert!(rewrite_wmi(&repo2.objects, &[], &repo2.mappings, &sid_map()).is_err());
    // Every descriptor slot of a page claiming the whole file: refused before any copying.
    let mut repo3 = self::repo();
    let len = repo3.objects.len() as u32;
    for i in 0..PAGE_SIZE / DESCRIPTOR_LEN - 1 {
        let d = &mut repo3.objects[i * DESCRIPTOR_LEN..(i + 1) * DESCRIPTOR_LEN];
        d[..4].copy_from_slice(&(i as u32 + 1).to_le_bytes());
        d[4..8].copy_from_slice(&(PAGE_SIZE as u32 - 16).to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
    }
    let e = rewrite_wmi(&repo3.objects, &[], &repo3.mappings, &sid_map()).unwrap_err();
    assert!(matches!(e, WmiError::Descriptor { page: 0, .. }), "{e}");
}
