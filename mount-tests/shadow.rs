//! Volume Shadow Copies (issue 11): inspect counts them on the real data disk of
//! `../shared/realdata/ntfs-win10-data-disk` (Windows 10 made them), and a shadow copy store that
//! holds the machine SID is refused by `sidfs mount`.

use crate::common::*;
use std::process::Command;

const SID: &str = "S-1-5-21-1806060109-1839359715-529511253";
pub(crate) const STORE: &str = "System Volume Information/{6f1cc7d2-0c6a-11ee-9d0a-080027768df7}{3808876b-c176-4e48-b7ae-04046e6cc752}";

/// `sidfs mount --old-sid SID`, expected to be refused; a mount that is not is undone at once, so
/// that the failed assertion leaves nothing mounted.
fn mount_refused(
    master: &std::path::Path,
    mp: &std::path::Path,
    seed: u64,
    state: &std::path::Path,
) -> std::process::Output {
    let out = mount_cmd(master, mp, seed, state, &["--old-sid", SID]);
    if out.status.success() {
        let _ = run(sidfs().arg("umount").arg(mp));
    }
    out
}

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
    let out = mount_refused(&master, &mp, 51, &s.path("state"));
    assert_shadow_refusal(&out);
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

/// Prove that a shadow copy store whose machine SID is split across two fragments of the store
/// file, not adjacent on the volume, is refused by `sidfs mount --old-sid` with one line naming
/// the store: the store is searched as one stream. ntfs-3g fragments the file itself (its first
/// 64 KiB ending in the SID's first 5 bytes, then a gap file and a spacer; the volume filled up,
/// the spacer deleted and the rest, starting with the SID's other 7 bytes, appended into the
/// spacer's clusters, beyond the gap); `ntfsinfo` shows two runs that split exactly there and
/// are not adjacent.
#[test]
fn a_sid_split_across_two_fragments_of_a_store_is_refused() {
    if !have_tool("ntfs-3g") || !have_tool("mkntfs") || !have_tool("ntfsinfo") {
        return;
    }
    const SIZE: u64 = 16 << 20;
    const CLUSTER: u64 = 4096;
    const SPLIT: usize = 64 << 10;
    let s = Scratch::new("shadow-fragments");
    let (_, _, binary) = sid_forms(SID);
    let mut store = vec![0x5au8; 2 * SPLIT];
    store[SPLIT - 5..SPLIT + 7].copy_from_slice(&binary);
    // Gap: two clusters, not resident, so it really takes clusters.
    let (master, runs) = fragmented_data_disk(
        &s,
        "fragmented.img",
        (SIZE, CLUSTER),
        (STORE, &store[..SPLIT], &store[SPLIT..]),
        (2 * CLUSTER as usize, 2 * (store.len() - SPLIT)),
    );
    assert_eq!(runs.len(), 2, "the store is not in two runs: {runs:?}");
    let ((vcn1, lcn1, len1), (vcn2, lcn2, _)) = (runs[0], runs[1]);
    assert_eq!(vcn1, 0, "{runs:?}");
    assert_eq!(
        vcn2 * CLUSTER,
        SPLIT as u64,
        "not split at the SID: {runs:?}"
    );
    assert_ne!(lcn1 + len1, lcn2, "the runs are adjacent: {runs:?}");
    let mp = s.mkdir("mp");
    let out = mount_refused(&master, &mp, 53, &s.path("state"));
    assert_shadow_refusal(&out);
    assert!(!mp.join("disk.img").exists());
}

/// Prove that a store small enough to be resident in its MFT record (ntfsinfo says so) is
/// searched too: with the machine SID in it, `sidfs mount --old-sid` refuses it in one line.
#[test]
fn a_resident_store_with_the_machine_sid_is_refused() {
    if !have_tool("ntfs-3g") || !have_tool("mkntfs") || !have_tool("ntfsinfo") {
        return;
    }
    let s = Scratch::new("shadow-resident");
    let (_, _, binary) = sid_forms(SID);
    let mut store = vec![0x5au8; 200];
    store[100..100 + binary.len()].copy_from_slice(&binary);
    let master = data_disk(&s, "data.img", &[(STORE, &store)]);
    {
        let dev = LoopDev::new(&master, 0, DATA_DISK_SIZE);
        let out = ok(Command::new("ntfsinfo").args(["-v", "-F", &format!("/{STORE}"), &dev.0]));
        let data = out
            .split("Dumping attribute $DATA")
            .nth(1)
            .unwrap_or_else(|| panic!("no $DATA:\n{out}"));
        assert!(
            data.lines()
                .any(|l| l.trim().starts_with("Resident:") && l.contains("Yes")),
            "the store is not resident:\n{out}"
        );
    }
    let mp = s.mkdir("mp");
    let out = mount_refused(&master, &mp, 54, &s.path("state"));
    assert_shadow_refusal(&out);
    assert!(!mp.join("disk.img").exists());
}

/// A refused mount's one line names a shadow copy store (by the VSS identifier) and the way out.
fn assert_shadow_refusal(out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = one_line_error(out);
    assert!(line.contains("shadow cop"), "{line}");
    assert!(
        line.contains("3808876b-c176-4e48-b7ae-04046e6cc752"),
        "{line}"
    );
    assert!(line.contains("vssadmin delete shadows /all"), "{line}");
}
