//! A computer name of another length than the master's: values shrink in their cells, grow into
//! free cells split off existing bins, become inline (<= 4 bytes); the hive stays valid (parse,
//! walk, cell tiling, checksum) and hivex reads the new name; without a free cell large enough
//! the rewrite is refused.

use super::super::value_data::FreeCells;
use super::*;
use crate::hive::{DataStorage, BASE_BLOCK_SIZE};

const TCPIP: &str = r"ControlSet001\Services\Tcpip\Parameters";
const NAME_KEY: &str = r"ControlSet001\Control\ComputerName\ComputerName";

/// STUDENT-PC8's SECURITY (PolAcDmN = STUDENT-PC8) plus the SYSTEM name values and a string
/// that embeds the name.
fn named_hive() -> Option<Vec<u8>> {
    hivex_hive(
        "add ControlSet001\ncd ControlSet001\nadd Control\nadd Services\n\
         cd Control\nadd ComputerName\ncd ComputerName\nadd ComputerName\ncd ComputerName\n\
         setval 1\nComputerName\nstring:STUDENT-PC8\n\
         cd \\ControlSet001\\Services\nadd Tcpip\ncd Tcpip\nadd Parameters\ncd Parameters\n\
         setval 3\nHostname\nstring:student-pc8\nNV Hostname\nstring:STUDENT-PC8\n\
         Author\nstring:STUDENT-PC8\\gold_administrator\n",
    )
}

fn change(new: &str) -> IdentityChoice {
    let found = vec![FoundIdentifier {
        kind: IdentifierKind::Hostname,
        label: None,
        value: "STUDENT-PC8".into(),
        locations: vec![],
        named_files: vec![],
    }];
    IdentityChoice::decide(
        &found,
        &IdentityRequest {
            hostname: Some(new.into()),
            keep: vec![],
        },
        1,
    )
    .unwrap()
}

/// Every cell of every bin, as (file offset, raw size): they must tile each bin exactly.
fn assert_tiled(bytes: &[u8]) {
    let h = Hive::parse(bytes).expect("the hive validates (checksum, sequence numbers)");
    let mut next = None;
    for cell in h.cells() {
        let cell = cell.expect("cells tile the bins");
        if let Some(n) = next {
            let in_new_bin = h
                .bins()
                .iter()
                .any(|b| b.first_cell() == cell.file_offset());
            assert!(
                in_new_bin || cell.file_offset().0 == n,
                "gap before {cell:?}"
            );
        }
        next = Some(cell.file_offset().0 + u64::from(cell.size()));
    }
    for walked in h.walk() {
        walked.expect("the hive walks");
    }
}

fn hivexget(bytes: &[u8], key: &str, value: &str) -> Option<String> {
    if !crate::testutil::tool_present("hivexget") {
        return None;
    }
    let dir = crate::testutil::TempDir::new("identity-resize");
    let path = dir.path("hive");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("hivexget")
        .arg(&path)
        .arg(key)
        .arg(value)
        .output()
        .unwrap();
    assert!(out.status.success(), "hivexget {key} {value}");
    Some(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

/// Prove that a shorter, a longer (15 characters), and a one-character name (inline data) are
/// written at every place: the NetBIOS name upper case, the DNS host name as given, the
/// embedded name replaced, PolAcDmN's UNICODE_STRING rebuilt; the hive keeps its length, its
/// cells tile, it validates, and hivex reads the same.
#[test]
fn any_length_name_is_written_value_by_value_and_the_hive_stays_valid() {
    let Some(input) = named_hive() else {
        return;
    };
    for (given, netbios, grows) in [
        ("Lab1", "LAB1", false),
        ("wks-a-0042-xyz1", "WKS-A-0042-XYZ1", true),
        ("a", "A", false),
    ] {
        let map = IdentityMapping::new(&change(given)).unwrap();
        let (out, report) = hive::rewrite_identifiers(&input, &map).unwrap();
        assert_eq!(out.len(), input.len(), "{given}: the hive keeps its length");
        assert_tiled(&out);
        assert_eq!(report.values_resized, 5, "{given}: {report:?}");
        assert_eq!(report.cells_allocated > 0, grows, "{given}: {report:?}");
        assert_eq!(report.name_left, 0, "{given}: {report:?}");
        let h = Hive::parse(&out).unwrap();
        assert_eq!(
            string_value(&h, NAME_KEY, "ComputerName").as_deref(),
            Some(netbios)
        );
        assert_eq!(string_value(&h, TCPIP, "Hostname").as_deref(), Some(given));
        assert_eq!(
            string_value(&h, TCPIP, "NV Hostname").as_deref(),
            Some(given)
        );
        assert_eq!(
            string_value(&h, TCPIP, "Author"),
            Some(format!("{netbios}\\gold_administrator"))
        );
        assert_eq!(policy_account_domain_name(&h).as_deref(), Some(netbios));
        let pol = h.open_key(r"Policy\PolAcDmN").unwrap().unwrap();
        let data = pol.value("").unwrap().unwrap().data().unwrap().to_vec();
        let n = 2 * netbios.len();
        assert_eq!(
            &data[..4],
            &[n as u8, 0, n as u8 + 2, 0],
            "Length, MaximumLength"
        );
        let name = h.open_key(NAME_KEY).unwrap().unwrap();
        let storage = name.value("ComputerName").unwrap().unwrap().data().unwrap();
        assert_eq!(
            storage.storage == DataStorage::Inline,
            netbios.len() == 1,
            "\"A\\0\" is 4 bytes: inline in the vk"
        );
        assert_eq!(
            name.value("ComputerName").unwrap().unwrap().data_size() as usize,
            2 * netbios.len() + 2
        );
        if let Some(v) = hivexget(&out, NAME_KEY, "ComputerName") {
            assert_eq!(v, netbios);
            assert_eq!(hivexget(&out, TCPIP, "Hostname").unwrap(), given);
            assert_eq!(hivexget(&out, TCPIP, "NV Hostname").unwrap(), given);
        }
        // The old name is gone from every string value, also from freed cells.
        assert_eq!(map.find_name(&out).len(), 0, "{given}");
        assert_eq!(hive::name_residual(&h, &map).unwrap(), 0);
        assert_eq!(
            hive::name_residual(&Hive::parse(&input).unwrap(), &map).unwrap(),
            5,
            "the master holds the old name in five string values"
        );
        // A pure function of the input.
        assert_eq!(hive::rewrite_identifiers(&input, &map).unwrap().0, out);
    }
}

/// Prove that a name that grows is refused, naming the value and the size it needs, when no free
/// cell is large enough (every free cell of the hive is marked allocated here), while a shorter
/// name still fits in place.
#[test]
fn growing_without_a_free_cell_large_enough_is_refused() {
    let Some(mut input) = named_hive() else {
        return;
    };
    let free: Vec<(usize, i32)> = Hive::parse(&input)
        .unwrap()
        .cells()
        .map(Result::unwrap)
        .filter(|c| !c.is_allocated())
        .map(|c| (c.file_offset().0 as usize, c.raw_size()))
        .collect();
    assert!(!free.is_empty());
    for (at, size) in free {
        input[at..at + 4].copy_from_slice(&(-size).to_le_bytes());
    }
    let map = IdentityMapping::new(&change("WKS-A-0042-XYZ1")).unwrap();
    let e = hive::rewrite_identifiers(&input, &map).unwrap_err();
    assert!(
        matches!(e, IdentityError::NoFreeCell { needed, largest: 0, .. } if needed >= 36),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("no free cell of") && text.contains("bytes for"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1);
    let map = IdentityMapping::new(&change("LAB1")).unwrap();
    let (out, report) = hive::rewrite_identifiers(&input, &map).unwrap();
    assert_eq!(report.cells_allocated, 0);
    assert_tiled(&out);
}

/// Prove that taking a cell splits the first free cell large enough so that the rest stays a
/// free cell right after it, that a released cell is zeroed and merged with the free cells
/// before and after it, and that an exact fit takes the whole cell.
#[test]
fn free_cells_split_and_release_keep_tiling() {
    let bins = BASE_BLOCK_SIZE + 0x20;
    let mut out = vec![0xAAu8; bins + 0x60];
    out[bins..bins + 4].copy_from_slice(&0x20i32.to_le_bytes());
    out[bins + 0x20..bins + 0x24].copy_from_slice(&0x40i32.to_le_bytes());
    let mut free = FreeCells::new(vec![(bins, 0x20), (bins + 0x20, 0x40)]);
    let slot = super::super::value_data::ValueSlot {
        key: "K".into(),
        name: "V".into(),
        vk: 0,
        storage: DataStorage::Inline,
        cell: None,
        data_at: 8,
        len: 4,
    };
    // A vk stub at 0: data size at 4, data offset at 8.
    out[..0x20].fill(0);
    let data = [7u8; 40];
    super::super::value_data::set_value_data(&mut out, &mut free, &slot, &data).unwrap();
    // 4 + 40 rounds to 48: the 0x40 cell is split into 0x30 allocated + 0x10 free.
    let at = bins + 0x20;
    assert_eq!(
        i32::from_le_bytes(out[at..at + 4].try_into().unwrap()),
        -0x30
    );
    assert_eq!(&out[at + 4..at + 44], &data[..]);
    assert_eq!(
        i32::from_le_bytes(out[at + 0x30..at + 0x34].try_into().unwrap()),
        0x10
    );
    assert_eq!(
        u32::from_le_bytes(out[8..12].try_into().unwrap()) as usize,
        at - BASE_BLOCK_SIZE
    );
    assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 40);
    // Shrinking back to 4 bytes goes inline and frees the cell (zeroed, positive size).
    let grown = super::super::value_data::ValueSlot {
        storage: DataStorage::Cell,
        cell: Some(at),
        data_at: at + 4,
        len: 40,
        ..slot.clone()
    };
    super::super::value_data::set_value_data(&mut out, &mut free, &grown, b"A\0\0\0").unwrap();
    // Merged with the free 0x20 cell before it and the free 0x10 rest after it: one 0x60 cell.
    assert_eq!(
        i32::from_le_bytes(out[bins..bins + 4].try_into().unwrap()),
        0x60
    );
    assert!(
        out[at..at + 0x34].iter().all(|b| *b == 0),
        "the freed cell and the merged header"
    );
    assert_eq!(
        u32::from_le_bytes(out[4..8].try_into().unwrap()),
        0x8000_0004
    );
    assert_eq!(&out[8..12], b"A\0\0\0");
    // 0x60 for 88 bytes: an exact fit takes the whole merged cell.
    super::super::value_data::set_value_data(&mut out, &mut free, &slot, &[1u8; 88]).unwrap();
    assert_eq!(
        i32::from_le_bytes(out[bins..bins + 4].try_into().unwrap()),
        -0x60
    );
    assert_eq!(free.allocated, 2);
}

/// Prove on real Windows hives (STUDENT-PC8's NTUSER.DAT and SECURITY) that a shorter and a
/// longer name are written into their string values and PolAcDmN, cells still tile, the hives
/// validate and walk, and the old name is left only outside string values (counted).
#[test]
fn real_hives_take_a_shorter_and_a_longer_name() {
    let (Some(security), Some(ntuser)) = (real_hive("SECURITY"), real_hive("NTUSER.DAT")) else {
        println!("SKIPPED: the STUDENT-PC8 realdata is absent");
        return;
    };
    for (given, netbios) in [("Lab1", "LAB1"), ("WKS-A-0042-XYZ1", "WKS-A-0042-XYZ1")] {
        let map = IdentityMapping::new(&change(given)).unwrap();
        let (sec, _) = hive::rewrite_identifiers(&security, &map).unwrap();
        assert_tiled(&sec);
        let h = Hive::parse(&sec).unwrap();
        assert_eq!(policy_account_domain_name(&h).as_deref(), Some(netbios));
        let (nt, report) = hive::rewrite_identifiers(&ntuser, &map).unwrap();
        assert_eq!(nt.len(), ntuser.len());
        assert_tiled(&nt);
        assert!(report.values_resized >= 1, "{report:?}");
        let h = Hive::parse(&nt).unwrap();
        assert_eq!(
            string_value(
                &h,
                r"Software\Microsoft\Windows Media\WMSDK\General",
                "ComputerName"
            )
            .as_deref(),
            Some(netbios)
        );
        assert_eq!(hive::name_residual(&h, &map).unwrap(), 0, "{given}");
        // The lower-case name in shell-link blobs (binary data) cannot change length.
        assert_eq!(report.name_left, count(&nt, b"student-pc8"), "{report:?}");
        assert!(report.name_left > 0);
        println!("{given}: {report:?}");
    }
}
