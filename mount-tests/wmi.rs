//! The WMI repository through real mounts (issue 11). No real repository is at hand: the files
//! come from our own writer `scripts/testmaster/wmi.py` (format notes: libyal dtformats), and
//! the oracle `scripts/wmi-oracle` reads them with python dissect.cim, which shares no code with
//! sidfs, and checks the record and page checksums.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const SID: &str = "S-1-5-21-1806060109-1839359715-529511253";
const DIR: &str = "Windows/System32/wbem/Repository";
pub(crate) const FILES: [&str; 5] = [
    "OBJECTS.DATA",
    "INDEX.BTR",
    "MAPPING1.MAP",
    "MAPPING2.MAP",
    "MAPPING3.MAP",
];

/// The interpreter that has dissect.cim: `SIDFS_ORACLE_PYTHON`, or scripts/setup-deps's venv.
pub(crate) fn oracle_python() -> Option<PathBuf> {
    let p = std::env::var_os("SIDFS_ORACLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/sidfs-oracles/bin/python3"));
    let works = Command::new(&p)
        .args(["-c", "import dissect.cim"])
        .output()
        .is_ok_and(|o| o.status.success());
    // have_tool's rule: fail when tools are required, skip otherwise.
    (works || have_tool("python-dissect.cim-in-/opt/sidfs-oracles")).then_some(p)
}

/// ntfs-3g and mkntfs (for the data disk) and the dissect.cim interpreter, or `None` (a skip,
/// outside CI) when one is missing.
fn tools_and_oracle() -> Option<PathBuf> {
    if !have_tool("ntfs-3g") || !have_tool("mkntfs") {
        return None;
    }
    oracle_python()
}

/// The repository `scripts/testmaster/wmi.py` writes for machine SID `sid`: (name, bytes).
fn repository(s: &Scratch, sid: &str, tag: &str) -> Vec<(String, Vec<u8>)> {
    repository_with(s, sid, tag, &[])
}

/// The same, with the writer's options `args` (`--sid-key`).
fn repository_with(s: &Scratch, sid: &str, tag: &str, args: &[&str]) -> Vec<(String, Vec<u8>)> {
    let out_dir = s.path(tag);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testmaster/wmi.py");
    ok(Command::new("/usr/bin/python3")
        .arg(script)
        .arg(sid)
        .arg(&out_dir)
        .args(args));
    FILES
        .iter()
        .map(|n| (format!("{DIR}/{n}"), read_all(&out_dir.join(n))))
        .collect()
}

pub(crate) fn oracle(python: &Path, dir: &Path, old: &str, new: &str) -> std::process::Output {
    run(Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/wmi-oracle"))
        .arg(dir)
        .arg(old)
        .arg(new))
}

/// Prove that on a data disk cloned with `--old-sid`, the WMI repository comes out readable by
/// dissect.cim to its last object, with every record CRC-32 and page checksum valid, every
/// CreatorSID the new machine's Administrator and no old SID in any of its files; and that the
/// oracle itself rejects the master's repository (its CreatorSIDs are the old SID).
#[test]
fn a_wmi_repository_on_a_data_disk_passes_dissect_cim() {
    let Some(python) = tools_and_oracle() else {
        return;
    };
    let s = Scratch::new("wmi");
    let repo = repository(&s, SID, "master-repo");
    let files: Vec<(&str, &[u8])> = repo
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let master = data_disk(&s, "data.img", &files);
    let before = sha256(&master);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 41, &s.path("state"), &["--old-sid", SID]);
    let new = m.new_sid();
    let clone_dir = s.mkdir("clone-repo");
    {
        let dev = LoopDev::new(&m.disk(), 0, DATA_DISK_SIZE);
        let nm = NtfsMount::new(&dev.0, &s.path("clone-ro"));
        for n in FILES {
            std::fs::write(clone_dir.join(n), read_all(&nm.0.join(DIR).join(n))).unwrap();
        }
    }
    m.unmount();
    let out = oracle(&python, &clone_dir, SID, &new);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["objects"], 4, "{read}");
    assert_eq!(read["records"], 4, "{read}");
    assert_eq!(read["creator_sids"].as_array().unwrap().len(), 3, "{read}");
    // Sizes unchanged, and INDEX.BTR (no SID) byte for byte the master's.
    for (path, bytes) in &repo {
        let name = path.rsplit('/').next().unwrap();
        let clone = read_all(&clone_dir.join(name));
        assert_eq!(clone.len(), bytes.len(), "{name}");
        if name == "INDEX.BTR" {
            assert_eq!(&clone, bytes);
        }
    }
    // The oracle is not blind: the master's repository fails it.
    let master_dir = s.path("master-repo");
    assert!(!oracle(&python, &master_dir, SID, &new).status.success());
    assert_eq!(sha256(&master), before, "the master changed");
}

/// Prove that a repository holding the machine SID in a record whose checksum is already wrong
/// in the master (a layout sidfs cannot vouch for) makes `sidfs mount` refuse with one line that
/// names the repository and says what to do, and mounts nothing.
#[test]
fn a_wmi_repository_that_cannot_be_rewritten_is_refused() {
    if !have_tool("ntfs-3g") || !have_tool("mkntfs") {
        return;
    }
    let s = Scratch::new("wmi-refused");
    let mut repo = repository(&s, SID, "master-repo");
    // The first descriptor's CRC-32 (record 1, which holds the CreatorSID).
    repo[0].1[12] ^= 0xff;
    let files: Vec<(&str, &[u8])> = repo
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let master = data_disk(&s, "data.img", &files);
    let mp = s.mkdir("mp");
    let out = mount_cmd(&master, &mp, 42, &s.path("state"), &["--old-sid", SID]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line_error(&out);
    assert!(line.contains("WMI repository"), "{line}");
    assert!(line.contains("record 1"), "{line}");
    assert!(line.contains("winmgmt /resetrepository"), "{line}");
    assert!(!mp.join("disk.img").exists());
}

/// Prove, on a Windows test master whose WMI repository holds its machine SID, that inspect lists
/// the repository (text and `--json`) with its SID occurrences and "rewritten with its record and
/// page checksums", and that a mounted clone's repository passes dissect.cim and the checksum,
/// CreatorSID and old-SID checks.
#[test]
fn inspect_lists_the_wmi_repository_of_a_windows_master_and_its_clone_passes() {
    if !have_tool("ntfs-3g") {
        return;
    }
    let Some(python) = oracle_python() else {
        return;
    };
    let s = Scratch::new("wmi-windows");
    let (built, manifest) = build_master(&s, "built.img", &[]);
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let repo = repository(&s, &old, "master-repo");
    let files: Vec<(&str, &[u8])> = repo
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let (start, size) = windows_partition(&manifest);
    write_files(&s, &built, start, size, &files);
    let out = run(sidfs().arg("inspect").arg("--json").arg(&built));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    let stores = report["windows"]["stores"].as_array().unwrap();
    let wmi = stores
        .iter()
        .find(|st| st["kind"] == "wmi")
        .unwrap_or_else(|| panic!("no wmi store: {stores:?}"));
    assert_eq!(
        wmi["path"],
        r"Windows\System32\wbem\Repository\OBJECTS.DATA"
    );
    // Three binary CreatorSIDs, a UTF-16 string twice, a free-page remnant.
    assert_eq!(wmi["sid_occurrences"], 6, "{wmi}");
    assert_eq!(wmi["clone"], "rewritten with its record and page checksums");
    let text = run(sidfs().arg("inspect").arg(&built));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("wmi") && l.contains("OBJECTS.DATA") && l.contains("rewritten")),
        "{text}"
    );

    let mp = s.mkdir("mp");
    let m = Mounted::new(&built, &mp, 43, &s.path("state"), &[]);
    let new = m.new_sid();
    let clone_dir = s.mkdir("clone-repo");
    {
        let dev = LoopDev::new(&m.disk(), start, size);
        let nm = NtfsMount::new(&dev.0, &s.path("clone-ro"));
        for n in FILES {
            std::fs::write(clone_dir.join(n), read_all(&nm.0.join(DIR).join(n))).unwrap();
        }
    }
    m.unmount();
    let out = oracle(&python, &clone_dir, &old, &new);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Prove that a repository with an instance whose key property is the SID string (an
/// `__EventFilter` named `SID-500`, indexed under the hash of that name) is refused by `sidfs
/// mount --old-sid` with one line naming the repository, the class, the key value and the way
/// out, and mounts nothing; and that the test repository is right by an independent reader:
/// dissect.cim finds that instance by its key (computing the index hash itself) in the master.
#[test]
fn a_sid_in_a_wmi_key_property_is_refused() {
    let Some(python) = tools_and_oracle() else {
        return;
    };
    let s = Scratch::new("wmi-key");
    let key = format!("{SID}-500");
    let repo = repository_with(&s, SID, "master-repo", &["--sid-key"]);
    let found = run(Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/wmi-oracle"))
        .arg("--find")
        .arg(s.path("master-repo"))
        .args([r"root\subscription", "__EventFilter", &key]));
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(found["ids"], serde_json::json!([5]), "{found}");
    let files: Vec<(&str, &[u8])> = repo
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let master = data_disk(&s, "data.img", &files);
    let mp = s.mkdir("mp");
    let out = mount_cmd(&master, &mp, 44, &s.path("state"), &["--old-sid", SID]);
    if out.status.success() {
        let _ = run(sidfs().arg("umount").arg(&mp));
    }
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = one_line_error(&out);
    assert!(line.contains("WMI repository"), "{line}");
    assert!(line.contains("key property"), "{line}");
    assert!(line.contains("record 5"), "{line}");
    assert!(line.contains("__EventFilter"), "{line}");
    assert!(line.contains(&key), "{line}");
    assert!(line.contains("winmgmt /resetrepository"), "{line}");
    assert!(!mp.join("disk.img").exists());
}
