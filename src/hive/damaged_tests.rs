//! Damaged-hive corpus: copies of the real SAM hive broken in memory in the ways hostile or
//! corrupt images break (truncation, bad cell and bin sizes, cyclic lists, offsets past the end,
//! huge counts). Each must give a `HiveError` — a panic fails the test, and every traversal is
//! bounded so none can hang.

use super::test_hives::student_hive;
use super::*;

/// Reads everything the SID rewrite would read; returns the number of keys or the first error.
fn read_everything(data: &[u8]) -> Result<usize> {
    let hive = Hive::parse_unvalidated(data)?;
    let mut keys = 0;
    for walked in hive.walk() {
        let key = walked?.key;
        for value in key.values()? {
            value.data()?;
        }
        key.security()?;
        key.class()?;
        keys += 1;
    }
    hive.security_keys()?;
    for cell in hive.cells() {
        cell?;
    }
    Ok(keys)
}

fn put_u32(data: &mut [u8], at: u64, value: u32) {
    data[at as usize..at as usize + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u16(data: &mut [u8], at: u64, value: u16) {
    data[at as usize..at as usize + 2].copy_from_slice(&value.to_le_bytes());
}

/// Offsets in the pristine SAM used by the mutations.
struct Landmarks {
    /// Size field of the root key's cell.
    root_cell: u64,
    /// `SAM\Domains` (two subkeys): its nk data start and its subkey list's data start.
    domains_nk: u64,
    domains_list: u64,
    domains_list_cell: u32,
    domains_cell: u32,
    root_offset: u32,
    /// vk data start of a value stored in its own cell.
    cell_value_vk: u64,
    /// Data start of the root key's sk.
    root_sk: u64,
    /// File offset of the second hbin.
    second_bin: u64,
    bins_end: u64,
}

fn landmarks(data: &[u8]) -> Landmarks {
    let hive = Hive::parse(data).unwrap();
    let root = hive.root_key().unwrap();
    let domains = hive.open_key("SAM\\Domains").unwrap().unwrap();
    assert_eq!(domains.subkey_count(), 2);
    let list = domains.subkey_list().unwrap().unwrap();
    let cell_value = hive
        .walk()
        .map(|w| w.unwrap().key)
        .flat_map(|k| k.values().unwrap())
        .find(|v| v.data().unwrap().storage == DataStorage::Cell)
        .unwrap();
    Landmarks {
        root_cell: root.cell().file_offset().0,
        domains_nk: domains.file_offset().0,
        domains_list: list.file_offset().0,
        domains_list_cell: list.cell().offset().0,
        domains_cell: domains.offset().0,
        root_offset: root.offset().0,
        cell_value_vk: cell_value.file_offset().0,
        root_sk: root.security().unwrap().file_offset().0,
        second_bin: hive.bins()[1].file_offset.0,
        bins_end: hive.base_block().bins_end().0,
    }
}

/// Applies `mutate` to a copy of SAM and returns what reading it gives.
fn damaged(mutate: impl FnOnce(&mut Vec<u8>, &Landmarks)) -> Result<usize> {
    let mut data = student_hive("SAM");
    let marks = landmarks(&data);
    mutate(&mut data, &marks);
    read_everything(&data)
}

#[test]
fn pristine_sam_reads_completely() {
    assert_eq!(damaged(|_, _| {}).unwrap(), 76);
}

#[test]
fn truncated_files_are_errors() {
    let data = student_hive("SAM");
    let marks = landmarks(&data);
    let bins = marks.bins_end - BASE_BLOCK_SIZE as u64;
    for cut in [0, 4, 100, 4095] {
        assert!(Hive::parse(&data[..cut]).is_err(), "cut {cut}");
        assert!(Hive::parse_unvalidated(&data[..cut]).is_err(), "cut {cut}");
    }
    for relative in [0, 16, 32, 4096, bins / 2, bins - 4096, bins - 8] {
        let cut = (BASE_BLOCK_SIZE as u64 + relative) as usize;
        let error = Hive::parse(&data[..cut]).unwrap_err();
        assert!(
            matches!(error, HiveError::OutOfBounds { .. }),
            "cut {cut}: {error}"
        );
        let error = read_everything(&data[..cut]).unwrap_err();
        println!("truncated at {cut:#x}: {error}");
    }
}

#[test]
fn bad_cell_sizes_are_errors() {
    let zero = damaged(|d, m| put_u32(d, m.root_cell, 0)).unwrap_err();
    assert!(
        matches!(zero, HiveError::BadCellSize { size: 0, .. }),
        "{zero}"
    );
    let free = damaged(|d, m| {
        let size = i32::from_le_bytes(d[m.root_cell as usize..][..4].try_into().unwrap());
        put_u32(d, m.root_cell, (-size) as u32);
    })
    .unwrap_err();
    assert!(matches!(free, HiveError::CellNotAllocated { .. }), "{free}");
    let past_bin = damaged(|d, m| put_u32(d, m.root_cell, (-0x7FFF_FFF8i32) as u32)).unwrap_err();
    assert!(
        matches!(past_bin, HiveError::BadCellSize { .. }),
        "{past_bin}"
    );
    let unaligned = damaged(|d, m| put_u32(d, m.root_cell, (-0x93i32) as u32)).unwrap_err();
    assert!(
        matches!(unaligned, HiveError::BadCellSize { .. }),
        "{unaligned}"
    );
    assert!(
        unaligned
            .to_string()
            .starts_with(&format!("at {:#x}", 0x1020)),
        "{unaligned}"
    );
}

#[test]
fn bad_hbin_headers_are_errors() {
    let mut data = student_hive("SAM");
    let marks = landmarks(&data);
    put_u32(&mut data, marks.second_bin + 8, 0);
    let error = Hive::parse(&data).unwrap_err();
    assert!(
        matches!(error, HiveError::BadBin { found: 0, .. }),
        "{error}"
    );
    // Without validation the bins stop there and cells beyond are unreachable.
    let hive = Hive::parse_unvalidated(&data).unwrap();
    assert_eq!(hive.bins().len(), 1);
    assert!(hive.bins_error().is_some());
    assert!(read_everything(&data).is_err());
    // A wrong signature or offset field.
    let bad_signature = damaged(|d, m| d[m.second_bin as usize] = b'X');
    assert!(bad_signature.is_err());
    let mut moved = student_hive("SAM");
    put_u32(&mut moved, marks.second_bin + 4, 0);
    assert!(matches!(
        Hive::parse(&moved).unwrap_err(),
        HiveError::BadBin {
            field: "offset",
            ..
        }
    ));
}

#[test]
fn cyclic_subkey_lists_are_errors() {
    // An li whose only element is the li itself.
    let li_self = damaged(|d, m| {
        d[m.domains_list as usize..][..2].copy_from_slice(b"li");
        put_u16(d, m.domains_list + 2, 1);
        put_u32(d, m.domains_list + 4, m.domains_list_cell);
        put_u32(d, m.domains_nk + 0x14, 1);
    })
    .unwrap_err();
    assert!(
        matches!(li_self, HiveError::BadSignature { expected: "nk", .. }),
        "{li_self}"
    );
    // An ri whose only element is the ri itself.
    let ri_ri = damaged(|d, m| {
        d[m.domains_list as usize..][..2].copy_from_slice(b"ri");
        put_u16(d, m.domains_list + 2, 1);
        put_u32(d, m.domains_list + 4, m.domains_list_cell);
    })
    .unwrap_err();
    assert!(matches!(ri_ri, HiveError::BadSignature { .. }), "{ri_ri}");
    // An ri listing the same leaf twice.
    let ri_twice = damaged(|d, m| {
        // Reuse the lf list cell: make it an ri pointing twice at the root's list.
        let hive_root_list = {
            let hive = Hive::parse(d).unwrap();
            hive.root_key().unwrap().subkey_list_offset().0
        };
        d[m.domains_list as usize..][..2].copy_from_slice(b"ri");
        put_u16(d, m.domains_list + 2, 2);
        put_u32(d, m.domains_list + 4, hive_root_list);
        put_u32(d, m.domains_list + 8, hive_root_list);
    })
    .unwrap_err();
    assert!(matches!(ri_twice, HiveError::Cycle { .. }), "{ri_twice}");
    // A key listed as its own subkey, and a key listing the root (its ancestor).
    let own_child = damaged(|d, m| put_u32(d, m.domains_list + 4, m.domains_cell)).unwrap_err();
    assert!(matches!(own_child, HiveError::Cycle { .. }), "{own_child}");
    let ancestor = damaged(|d, m| put_u32(d, m.domains_list + 4, m.root_offset)).unwrap_err();
    assert!(matches!(ancestor, HiveError::Cycle { .. }), "{ancestor}");
}

#[test]
fn offsets_and_counts_past_the_data_are_errors() {
    let data_offset = damaged(|d, m| put_u32(d, m.cell_value_vk + 8, 0x7FFF_FFF8)).unwrap_err();
    assert!(
        matches!(data_offset, HiveError::BadCellReference { .. }),
        "{data_offset}"
    );
    let data_size = damaged(|d, m| put_u32(d, m.cell_value_vk + 4, 0x7FFF_FFF0)).unwrap_err();
    assert!(
        matches!(data_size, HiveError::BadValueData { .. }),
        "{data_size}"
    );
    // Claiming version 1.5 turns that size into a db reference, which is not a db cell.
    let not_db = damaged(|d, m| {
        put_u32(d, 0x18, 5);
        put_u32(d, m.cell_value_vk + 4, 0x7FFF_FFF0);
    })
    .unwrap_err();
    assert!(
        matches!(not_db, HiveError::BadSignature { expected: "db", .. }),
        "{not_db}"
    );
    let inline = damaged(|d, m| put_u32(d, m.cell_value_vk + 4, 0x8000_0010)).unwrap_err();
    assert!(matches!(inline, HiveError::BadValueData { .. }), "{inline}");
    let values = damaged(|d, m| {
        put_u32(d, m.root_cell + 4 + 0x24, u32::MAX);
        put_u32(d, m.root_cell + 4 + 0x28, m.domains_list_cell);
    })
    .unwrap_err();
    assert!(
        matches!(values, HiveError::CountTooLarge { .. }),
        "{values}"
    );
    let list = damaged(|d, m| put_u16(d, m.domains_list + 2, u16::MAX)).unwrap_err();
    assert!(matches!(list, HiveError::CountTooLarge { .. }), "{list}");
    let subkeys = damaged(|d, m| put_u32(d, m.domains_nk + 0x14, u32::MAX)).unwrap_err();
    assert!(
        matches!(subkeys, HiveError::CountMismatch { .. }),
        "{subkeys}"
    );
    let name = damaged(|d, m| put_u16(d, m.domains_nk + 0x48, u16::MAX)).unwrap_err();
    assert!(matches!(name, HiveError::OutOfBounds { .. }), "{name}");
    let sd = damaged(|d, m| put_u32(d, m.root_sk + 0x10, u32::MAX)).unwrap_err();
    assert!(matches!(sd, HiveError::OutOfBounds { .. }), "{sd}");
    let sk_loop = damaged(|d, m| {
        // The root's sk points forward to itself while its Blink names another sk.
        let own = (m.root_sk - 4 - BASE_BLOCK_SIZE as u64) as u32;
        put_u32(d, m.root_sk + 4, own);
    })
    .unwrap_err();
    assert!(
        matches!(sk_loop, HiveError::CountMismatch { .. }),
        "{sk_loop}"
    );
    let root = damaged(|d, _| put_u32(d, 0x24, 0x7FFF_FFF8)).unwrap_err();
    assert!(matches!(root, HiveError::BadCellReference { .. }), "{root}");
}

/// Random byte changes anywhere in the hive: whatever happens must be a value or an error.
#[test]
fn random_mutations_never_panic() {
    let pristine = student_hive("SAM");
    let end = landmarks(&pristine).bins_end;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // xorshift64: deterministic, so a failure can be replayed.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors = 0;
    for _ in 0..400 {
        let mut data = pristine.clone();
        for _ in 0..1 + next() % 8 {
            let at = (next() % end) as usize;
            data[at] = next() as u8;
        }
        if read_everything(&data).is_err() {
            errors += 1;
        }
    }
    println!("{errors} of 400 mutated hives gave an error");
}
