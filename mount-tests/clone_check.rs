//! The independent clone checker (`../shared/tools/clone-check`, which shares no code with sidfs)
//! on mounted clones: of the real disk Windows 10 partitioned and formatted (shadow-copy data,
//! old `$LogFile` pages in free clusters), of a real Windows 10 volume inside an MBR disk, and of
//! built masters in both layouts. Each must end in PASS: no old SID anywhere outside `$LogFile`
//! (record copies under fixups and free clusters included), ntfssecaudit clean, tree, security
//! descriptors, contents and hives equal the master's with the SID replaced.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn checker_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/tools/clone-check"
    ))
}

fn realdata(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/realdata")).join(rel)
}

fn tools_present() -> bool {
    [
        "ntfs-3g",
        "ntfssecaudit",
        "getfattr",
        "sfdisk",
        "python3",
        "tar",
        "gunzip",
    ]
    .iter()
    .all(|t| have_tool(t))
}

/// Runs `make_master_json.py` then `check_clone.sh` on a mounted clone; its last line must be
/// PASS. Returns the checker's output.
/// `partition`: the NTFS volume to check, where the disk has more than one.
fn clone_check(
    s: &Scratch,
    master: &Path,
    clone: &Path,
    old_sid: &str,
    new_sid: &str,
    partition: Option<u64>,
) -> String {
    let json = s.path(&format!(
        "{}.check.json",
        master.file_name().unwrap().to_string_lossy()
    ));
    ok(Command::new("/usr/bin/python3")
        .arg(checker_dir().join("make_master_json.py"))
        .arg(master)
        .arg(old_sid)
        .arg("--out")
        .arg(&json)
        .args(partition.map(|p| format!("--partition={p}"))));
    let out = run(Command::new("bash")
        .arg(checker_dir().join("check_clone.sh"))
        .arg(master)
        .arg(clone)
        .arg(&json)
        .arg(new_sid));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert_eq!(
        last.trim(),
        "PASS",
        "clone-check of {} failed:\n{text}",
        master.display()
    );
    assert!(out.status.success(), "clone-check exit status:\n{text}");
    text
}

fn mounted_sids(m: &Mounted) -> (String, String) {
    let info: serde_json::Value =
        serde_json::from_slice(&read_all(&m.mountpoint.join("clone.json"))).unwrap();
    (
        info["old_sid"].as_str().unwrap().to_string(),
        info["new_sid"].as_str().unwrap().to_string(),
    )
}

/// `sidfs verify` of the mounted disk must agree with the checker: clean.
fn verify_clean(m: &Mounted, old: &str) {
    let out = run(sidfs()
        .arg("verify")
        .arg(m.disk())
        .args(["--old-sid", old, "--json"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sidfs verify:\n{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["unexpected"], 0, "{text}");
}

#[test]
fn real_windows_data_disk_passes_the_independent_checker() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("cc-vss");
    // A 5 GiB sparse GPT disk (MSR + NTFS with shadow-copy data) written by Windows 10; 12 of its
    // SID occurrences lie in free clusters, one in an old $LogFile page under a fixup slot.
    ok(Command::new("tar")
        .arg("-xzSf")
        .arg(realdata("ntfs-win10-data-disk/vss_1_vol.tar.gz"))
        .arg("-C")
        .arg(&s.dir));
    let master = s.path("vss_1_vol.raw");
    let old = "S-1-5-21-3544599609-778476966-3151826751";
    let before = sha256(&master);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 11, &s.path("state"), &["--old-sid", old]);
    let (o, new) = mounted_sids(&m);
    assert_eq!(o, old);
    clone_check(&s, &master, &m.disk(), old, &new, None);
    verify_clean(&m, old);
    m.unmount();
    assert_eq!(sha256(&master), before, "the master changed");
}

#[test]
fn real_windows_volume_in_a_disk_passes_the_independent_checker() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("cc-index");
    let master = s.path("ntfs_index.raw");
    ok(Command::new("sh").arg("-c").arg(format!(
        "gunzip -c {} > {}",
        realdata("ntfs-win10-volume/ntfs_index.raw.gz").display(),
        master.display()
    )));
    let old = "S-1-5-21-2341207468-2645333676-3461800803";
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 12, &s.path("state"), &["--old-sid", old]);
    let (_, new) = mounted_sids(&m);
    clone_check(&s, &master, &m.disk(), old, &new, None);
    verify_clean(&m, old);
    m.unmount();
}

#[test]
fn built_masters_pass_the_independent_checker() {
    if !tools_present() || !have_tool("hivexregedit") {
        return;
    }
    let s = Scratch::new("cc-built");
    for layout in ["gpt", "mbr"] {
        let (master, manifest) = build_master(&s, &format!("{layout}.img"), &["--layout", layout]);
        let old = manifest["machine_sid"].as_str().unwrap().to_string();
        let mp = s.mkdir(&format!("mp-{layout}"));
        // The checker compares SIDs only: the other identifiers stay as in the master.
        let m = Mounted::new(
            &master,
            &mp,
            13,
            &s.path(&format!("state-{layout}")),
            &["--keep", "hostname,machine-guid,wsus,msdtc"],
        );
        let (o, new) = mounted_sids(&m);
        assert_eq!(o, old);
        let partition = manifest["windows_partition"].as_u64();
        let report = clone_check(&s, &master, &m.disk(), &old, &new, partition);
        assert!(
            report.contains("TaskCache Hash"),
            "{layout}: the checker did not check the task hash:\n{report}"
        );
        verify_clean(&m, &old);
        m.unmount();
    }
}
