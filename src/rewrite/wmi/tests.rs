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

/// A repository like [`repo`] whose record 4 is an `__EventFilter` instance (the class name hash
/// as WMI writes it) with the SID string `sid_text` (RID 500) in `form` ("utf16" or "ascii"),
/// between NUL-terminated neighbours; and an index naming objects by `indexed` (its digest).
fn keyed_repo(form: &str, indexed: &str) -> (Repo, Vec<u8>) {
    let mut repo = repo();
    let text = format!("S-1-5-21-{}-{}-{}-500", OLD.0, OLD.1, OLD.2);
    let encode = |s: &str| -> Vec<u8> {
        match form {
            "utf16" => s.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            _ => s.as_bytes().to_vec(),
        }
    };
    let class: Vec<u16> = "__EventFilter".encode_utf16().collect();
    let mut r4: Vec<u8> = keys::name_digest(&class)
        .iter()
        .flat_map(|&b| [b, 0])
        .collect();
    r4.extend_from_slice(&[0x01; 20]);
    r4.extend_from_slice(&[0, 0, 0]);
    r4.extend(encode(&text));
    r4.extend_from_slice(&[0, 0, 0]);
    r4.extend(encode("SELECT * FROM __InstanceCreationEvent"));
    r4.resize(500, 0);
    let p3 = &mut repo.objects[3 * PAGE_SIZE..];
    put_descriptor(p3, 0, 4, 32, &r4);
    p3[32..532].copy_from_slice(&r4);
    let pages = [0, 3, 1, 2];
    repo.mappings = vec![
        mapping_file(5, &pages, &repo.objects),
        mapping_file(7, &pages, &repo.objects),
        mapping_file(6, &pages, &repo.objects),
    ];
    let units: Vec<u16> = indexed.encode_utf16().collect();
    let digest = String::from_utf8(keys::name_digest(&units).to_vec()).unwrap();
    let mut index = vec![0u8; 64];
    index.extend_from_slice(format!("IL_{digest}.1.4.500\0KI_0000\0").as_bytes());
    index.resize(PAGE_SIZE, 0);
    (repo, index)
}

/// Prove the digest against the published example: SHA-256 of "__THISNAMESPACE" in UTF-16LE
/// [libyal dtformats, "Identifier strings"], upper-cased first.
#[test]
fn the_index_digest_is_sha256_of_the_upper_case_utf16_name() {
    let name: Vec<u16> = "__thisNAMESPACE".encode_utf16().collect();
    assert_eq!(
        &keys::name_digest(&name)[..],
        b"41C53E6DB1ACF2453CEFD41398198E613F10DFF47709ECAB1D7F037756AC8CE7"
    );
    let index =
        b"xxCD_41C53E6DB1ACF2453CEFD41398198E613F10DFF47709ECAB1D7F037756AC8CE7.0.2.209\0IL_ABC\0";
    let d = keys::index_digests(index);
    assert_eq!(d.len(), 1);
    assert!(d.contains(&keys::name_digest(&name)));
}

/// Prove that a SID in a key value (the index names the instance by the hash of the SID string
/// with its RID) is refused naming the record, its class and the key, in UTF-16 and in ASCII
/// (an index written from a lower-case spelling too: WMI hashes the upper-cased name), and that
/// the same record with an index that names it by another key is rewritten.
#[test]
fn a_sid_in_a_key_property_is_refused() {
    let map = sid_map();
    let key = format!("S-1-5-21-{}-{}-{}-500", OLD.0, OLD.1, OLD.2);
    for form in ["utf16", "ascii"] {
        for indexed in [key.clone(), key.to_lowercase()] {
            let (repo, index) = keyed_repo(form, &indexed);
            let e = rewrite_wmi(&repo.objects, &index, &repo.mappings, &map).unwrap_err();
            assert_eq!(
                e,
                WmiError::SidInKey {
                    page: 3,
                    id: 4,
                    class: Some("__EventFilter".into()),
                    key: key.clone(),
                },
                "{form}"
            );
            let line = e.to_string();
            assert!(line.contains("key property"), "{line}");
            assert!(line.contains("__EventFilter"), "{line}");
        }
        let (repo, index) = keyed_repo(form, "Audit");
        let out = rewrite_wmi(&repo.objects, &index, &repo.mappings, &map).unwrap();
        assert!(map.find_all(&out.objects, true).is_empty(), "{form}");
        assert_consistent(&out.objects, &out.mappings);
    }
    // The SID without its RID as the key value.
    let sid = format!("S-1-5-21-{}-{}-{}", OLD.0, OLD.1, OLD.2);
    let (repo, index) = keyed_repo("utf16", &sid);
    let e = rewrite_wmi(&repo.objects, &index, &repo.mappings, &map).unwrap_err();
    assert!(
        matches!(e, WmiError::SidInKey { ref key, .. } if *key == sid),
        "{e}"
    );
}

/// Prove that the key search stays in bounds: a SID string at the very start and the very end of
/// a record, at an odd offset, and amid arbitrary bytes, in both forms.
#[test]
fn the_key_search_stays_in_bounds() {
    let map = sid_map();
    let text = format!("S-1-5-21-{}-{}-{}", OLD.0, OLD.1, OLD.2);
    let units: Vec<u16> = text.encode_utf16().collect();
    let digests = keys::index_digests(
        format!(
            "IL_{}",
            String::from_utf8(keys::name_digest(&units).to_vec()).unwrap()
        )
        .as_bytes(),
    );
    let utf16: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
    let mut noise = 0x1234_5678u32;
    let mut next = move || {
        noise ^= noise << 13;
        noise ^= noise >> 17;
        noise ^= noise << 5;
        noise as u8
    };
    for sid in [text.as_bytes().to_vec(), utf16] {
        for (before, after) in [(0, 0), (1, 0), (0, 1), (7, 9), (3000, 3000)] {
            let mut data: Vec<u8> = (0..before).map(|_| next()).collect();
            data.extend_from_slice(&sid);
            data.extend((0..after).map(|_| next()));
            let occs = map.find_all(&data, true);
            assert!(before + after > 0 || occs.len() == 1);
            for o in occs {
                let found = keys::indexed_key(&data, &o, &digests);
                if before == 0 && after == 0 {
                    assert_eq!(found.as_deref(), Some(text.as_str()));
                }
            }
        }
    }
}
