//! Volume Shadow Copies (issue 11): inspect counts them on the real data disk of
//! `../shared/realdata/ntfs-win10-data-disk` (Windows 10 made them), and a shadow copy store that
//! holds the machine SID is refused by `sidfs mount`.

use crate::common::*;

const SID: &str = "S-1-5-21-1806060109-1839359715-529511253";
const STORE: &str = "System Volume Information/{6f1cc7d2-0c6a-11ee-9d0a-080027768df7}{3808876b-c176-4e48-b7ae-04046e6cc752}";

/// Prove that inspect warns about the real data disk's shadow copies with the count its VSS
/// catalog lists (2) and says what `vssadmin delete shadows /all` avoids, in text and JSON.
#[test]
fn inspect_counts_the_shadow_copies_of_the_real_data_disk() {
    let s = Scratch::new("shadow-inspect");
    let disk = real_data_disk(&s);
    let out = run(sidfs().arg("inspect").arg("--json").arg(&disk));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].as_array().unwrap();
    let w = warnings
        .iter()
        .find(|w| w["reason"] == "shadow-copies")
        .unwrap_or_else(|| panic!("no shadow-copies warning: {warnings:?}"));
    let msg = w["message"].as_str().unwrap();
    assert!(msg.starts_with("Partition 2 has 2 shadow copies"), "{msg}");
    assert!(msg.contains("vssadmin delete shadows /all"), "{msg}");
    let text = run(sidfs().arg("inspect").arg(&disk));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("[shadow-copies] Partition 2 has 2 shadow copies"),
        "{text}"
    );
}

/// Prove that a data disk whose shadow copy store holds the machine SID (old copies of blocks
/// sidfs cannot rewrite faithfully) is refused by `sidfs mount --old-sid` with one line naming the
/// store and the vssadmin command, and that one whose store holds no SID mounts.
#[test]
fn a_shadow_copy_store_with_the_machine_sid_is_refused() {
    if !have_tool("ntfs-3g") || !have_tool("mkntfs") {
        return;
    }
    let s = Scratch::new("shadow-refused");
    let (_, _, binary) = sid_forms(SID);
    let mut store = vec![0x5au8; 3 << 20];
    // Past the first 1 MiB chunk of the search, across its overlap.
    let at = (1 << 20) - 5;
    store[at..at + binary.len()].copy_from_slice(&binary);
    let master = data_disk(&s, "data.img", &[(STORE, &store)]);
    let mp = s.mkdir("mp");
    let out = mount_cmd(&master, &mp, 51, &s.path("state"), &["--old-sid", SID]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line_error(&out);
    assert!(line.contains("shadow cop"), "{line}");
    assert!(
        line.contains("3808876b-c176-4e48-b7ae-04046e6cc752"),
        "{line}"
    );
    assert!(line.contains("vssadmin delete shadows /all"), "{line}");
    assert!(!mp.join("disk.img").exists());

    let clean = vec![0x5au8; 64 << 10];
    let master = data_disk(&s, "clean.img", &[(STORE, &clean)]);
    let m = Mounted::new(
        &master,
        &mp,
        52,
        &s.path("state-clean"),
        &["--old-sid", SID],
    );
    assert!(m.disk().exists());
    m.unmount();
}
