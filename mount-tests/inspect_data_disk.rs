//! `sidfs inspect --old-sid SID` (issue 11, item 1, on data disks): a disk without Windows is
//! inspected as `sidfs mount --old-sid SID` clones it, and the two agree: inspect accepts (exit 0)
//! what mount mounts, and refuses (exit 3) what mount refuses, with mount's one-line sentence.
//! The disks: the real Windows 10 data disk of `../shared/realdata/ntfs-win10-data-disk`, and
//! data disks made with mkntfs and ntfs-3g holding the real SRUDB.dat and event logs
//! (mount-tests/stores.rs) or a shadow copy store (mount-tests/shadow.rs).

use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// The machine SID of the real SRUDB.dat (twice in binary, in `SruDbIdMapTable`).
const SRUM_SID: &str = "S-1-5-21-1806060109-1839359715-529511253";
const SRUDB_PATH: &str = "Windows/System32/sru/SRUDB.dat";
const LOG_PATHS: [&str; 2] = [
    "Exported Logs/Security-copy.evtx",
    "Windows/System32/winevt/Logs/Security.evtx",
];
const SHADOW_STORE: &str = "System Volume Information/{6f1cc7d2-0c6a-11ee-9d0a-080027768df7}{3808876b-c176-4e48-b7ae-04046e6cc752}";

/// `sidfs inspect --old-sid SID [--json] DISK`: (exit status, stdout, stderr).
fn inspect_old_sid(disk: &Path, sid: &str, json: bool) -> (i32, String, String) {
    let mut cmd = sidfs();
    cmd.arg("inspect").args(["--old-sid", sid]);
    if json {
        cmd.arg("--json");
    }
    let out = run(cmd.arg(disk));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `--json` report of `inspect --old-sid`, with its exit status.
fn report(disk: &Path, sid: &str) -> (i32, Value) {
    let (code, stdout, stderr) = inspect_old_sid(disk, sid, true);
    let v = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("inspect --json printed no JSON ({e}):\n{stdout}\n{stderr}"));
    (code, v)
}

/// The data disk's store whose path ends with `suffix`.
fn store<'a>(report: &'a Value, suffix: &str) -> &'a Value {
    let stores = report["data_disk"]["stores"]
        .as_array()
        .unwrap_or_else(|| panic!("no data_disk stores: {report}"));
    stores
        .iter()
        .find(|s| s["path"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("{suffix} not listed: {stores:?}"))
}

/// `sidfs mount --old-sid`, expected to be refused; a mount that is not is undone at once.
fn refused_mount(master: &Path, mp: &Path, seed: u64, state: &Path, sid: &str) -> String {
    let out = mount_cmd(master, mp, seed, state, &["--old-sid", sid]);
    if out.status.success() {
        let _ = run(sidfs().arg("umount").arg(mp));
    }
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    one_line_error(&out)
}

/// Prove that the real Windows 10 data disk, inspected for its machine SID, is accepted (exit 0)
/// with its 2 shadow copies counted and no "no Windows" refusal, that the text says it is a data
/// disk inspected for that SID, and that `sidfs mount --old-sid` agrees: it mounts.
#[test]
fn the_real_data_disk_is_inspected_as_mount_clones_it() {
    let s = Scratch::new("inspect-data-real");
    let disk = real_data_disk(&s);
    let (code, r) = report(&disk, REAL_DATA_DISK_SID);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["refusals"], serde_json::json!([]), "{r}");
    assert_eq!(r["data_disk"]["old_sid"], REAL_DATA_DISK_SID, "{r}");
    let warnings = r["warnings"].as_array().unwrap();
    let shadow = warnings
        .iter()
        .find(|w| w["reason"] == "shadow-copies")
        .unwrap_or_else(|| panic!("no shadow-copies warning: {warnings:?}"));
    assert!(
        shadow["message"]
            .as_str()
            .unwrap()
            .contains("has 2 shadow copies"),
        "{shadow}"
    );
    let (code, text, _) = inspect_old_sid(&disk, REAL_DATA_DISK_SID, false);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "Data disk: no Windows installation; inspected for --old-sid {REAL_DATA_DISK_SID}"
        )),
        "{text}"
    );
    assert!(!text.contains("No Windows installation"), "{text}");
    assert!(text.contains("Result: cloneable"), "{text}");

    let mp = s.mkdir("mp");
    let m = Mounted::new(
        &disk,
        &mp,
        61,
        &s.path("state"),
        &["--old-sid", REAL_DATA_DISK_SID],
    );
    assert!(m.disk().exists());
    m.unmount();
}

/// Prove that on a data disk holding the real SRUDB.dat and two event logs with its SID,
/// `inspect --old-sid` lists each with its SID occurrences and "rewritten ..." (text and JSON),
/// exits 0, and that mount agrees (it mounts).
#[test]
fn srudb_and_event_logs_are_listed_with_their_sids() {
    if !["mkntfs", "ntfs-3g", "gunzip"].iter().all(|t| have_tool(t)) {
        return;
    }
    let s = Scratch::new("inspect-data-stores");
    let db = real_srudb();
    let log = crate::stores::event_log_for(SRUM_SID);
    let mut files: Vec<(&str, &[u8])> = vec![(SRUDB_PATH, &db)];
    files.extend(LOG_PATHS.iter().map(|p| (*p, log.as_slice())));
    let master = data_disk(&s, "data.img", &files);
    let (_, _, binary) = sid_forms(SRUM_SID);
    let (code, r) = report(&master, SRUM_SID);
    assert_eq!(code, 0, "{r}");
    let srudb = store(&r, "SRUDB.dat");
    assert_eq!(srudb["kind"], "ese", "{srudb}");
    assert!(
        srudb["sid_occurrences"].as_u64().unwrap() >= count(&db, &binary) as u64,
        "{srudb}"
    );
    assert_eq!(
        srudb["clone"], "rewritten with its page checksums",
        "{srudb}"
    );
    for p in LOG_PATHS {
        let name = p.rsplit('/').next().unwrap();
        let st = store(&r, &p.replace('/', "\\"));
        assert_eq!(st["kind"], "evtx", "{name}: {st}");
        assert!(st["sid_occurrences"].as_u64().unwrap() > 0, "{name}: {st}");
        assert_eq!(st["clone"], "rewritten with its CRCs", "{name}: {st}");
    }
    let (code, text, _) = inspect_old_sid(&master, SRUM_SID, false);
    assert_eq!(code, 0, "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("SRUDB.dat"))
        .unwrap_or_else(|| panic!("no SRUDB.dat row:\n{text}"));
    assert!(row.contains("rewritten with its page checksums"), "{row}");

    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 62, &s.path("state"), &["--old-sid", SRUM_SID]);
    m.unmount();
}

/// Prove that data disks `sidfs mount --old-sid` refuses — an ESE database whose SID page has a
/// wrong checksum, a shadow copy store with the SID, an ESE log and an `$EFS` with the SID — make `inspect --old-sid` exit 3 with the
/// very sentence of mount's one-line refusal (JSON and text), and the store listed as refused.
#[test]
fn what_mount_refuses_inspect_refuses_in_its_words() {
    if !["mkntfs", "ntfs-3g", "gunzip"].iter().all(|t| have_tool(t)) {
        return;
    }
    let s = Scratch::new("inspect-data-refused");
    let (_, _, binary) = sid_forms(SRUM_SID);
    let db = crate::stores::srudb_with_a_stale_checksum();
    let bad_ese = data_disk(&s, "bad-ese.img", &[(SRUDB_PATH, &db)]);
    let mut shadow = vec![0x5au8; 3 << 20];
    shadow[(1 << 20) - 5..(1 << 20) + 7].copy_from_slice(&binary);
    let bad_shadow = data_disk(&s, "bad-shadow.img", &[(SHADOW_STORE, &shadow)]);
    let mut log = vec![0x33u8; 128 << 10];
    log[0x5000..0x5000 + binary.len()].copy_from_slice(&binary);
    let good_db = real_srudb();
    let bad_log = data_disk(
        &s,
        "bad-log.img",
        &[
            (SRUDB_PATH, &good_db),
            ("Windows/System32/sru/SRU.log", &log),
        ],
    );
    let bad_efs = crate::efs::disk_with_efs(
        &s,
        "bad-efs.img",
        &crate::efs::efs_value(&crate::efs::user_sid(1001)),
    );

    for (seed, master, what) in [
        (63, &bad_ese, "SRUDB.dat"),
        (64, &bad_shadow, "shadow cop"),
        (66, &bad_log, r"sru\SRU.log"),
        (67, &bad_efs, "secret.txt"),
    ] {
        let (code, r) = report(master, SRUM_SID);
        assert_eq!(code, 3, "{what}: {r}");
        let refusals = r["refusals"].as_array().unwrap();
        assert_eq!(refusals.len(), 1, "{what}: {refusals:?}");
        assert_eq!(refusals[0]["reason"], "store-not-rewritable", "{what}");
        let message = refusals[0]["message"].as_str().unwrap().to_string();
        assert!(message.contains(what), "{message}");
        let mp = s.mkdir(&format!("mp-{seed}"));
        let line = refused_mount(
            master,
            &mp,
            seed,
            &s.path(&format!("state-{seed}")),
            SRUM_SID,
        );
        assert_eq!(
            line,
            format!("sidfs: {message}"),
            "inspect and mount differ"
        );
        let (code, text, _) = inspect_old_sid(master, SRUM_SID, false);
        assert_eq!(code, 3, "{text}");
        assert!(text.contains(&message), "{text}");
    }
    let (_, r) = report(&bad_ese, SRUM_SID);
    let srudb = store(&r, "SRUDB.dat");
    assert!(
        srudb["clone"].as_str().unwrap().starts_with("refused: "),
        "{srudb}"
    );
    let (_, r) = report(&bad_log, SRUM_SID);
    let sru_log = store(&r, "SRU.log");
    assert_eq!(sru_log["kind"], "ese-log", "{sru_log}");
    assert_eq!(sru_log["sid_occurrences"], 1, "{sru_log}");
    assert!(
        sru_log["clone"].as_str().unwrap().starts_with("refused: "),
        "{sru_log}"
    );
    assert_eq!(
        store(&r, "SRUDB.dat")["clone"],
        "rewritten with its page checksums"
    );
}

/// Prove that a malformed `--old-sid` is refused by inspect exactly as by mount: the same one
/// error line from the same parser, usage exit status 2, and no report.
#[test]
fn a_malformed_old_sid_is_the_same_one_line_error_as_mounts() {
    let s = Scratch::new("inspect-data-badsid");
    let disk = s.path("absent.img");
    let bad = "S-1-5-21-12-x-3";
    let inspect = run(sidfs().arg("inspect").args(["--old-sid", bad]).arg(&disk));
    let mount = run(sidfs()
        .arg("mount")
        .arg(&disk)
        .arg(s.path("mp"))
        .args(["--old-sid", bad]));
    assert_eq!(inspect.status.code(), Some(2));
    assert!(inspect.stdout.is_empty());
    let first = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let line = first(&inspect);
    assert!(
        line.starts_with("error: invalid value 'S-1-5-21-12-x-3' for '--old-sid <SID>': "),
        "{line}"
    );
    assert_eq!(line, first(&mount));
    assert_eq!(mount.status.code(), Some(2));
    let errors = String::from_utf8_lossy(&inspect.stderr)
        .lines()
        .filter(|l| l.starts_with("error"))
        .count();
    assert_eq!(errors, 1);
}

/// Prove that on a Windows master `--old-sid` must be its machine SID: the right one inspects
/// as without it (exit 0), another is refused in one line, the very line of `sidfs mount`.
#[test]
fn a_windows_master_takes_only_its_own_sid() {
    let s = Scratch::new("inspect-data-windows");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let sid = manifest["machine_sid"].as_str().unwrap();
    let (code, r) = report(&master, sid);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["windows"]["machine_sid"], sid);
    let other = "S-1-5-21-1111111111-2222222222-333333333";
    let (code, stdout, stderr) = inspect_old_sid(&master, other, true);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let line = stderr.trim().to_string();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains(&format!("the master's machine SID is {sid}, not {other}")),
        "{line}"
    );
    let mp = s.mkdir("mp");
    assert_eq!(
        refused_mount(&master, &mp, 65, &s.path("state"), other),
        line
    );
}

/// Prove that a data disk whose NTFS volume cannot be opened (its first MFT record zeroed) makes
/// `inspect --old-sid` stop with the very line `sidfs mount --old-sid` stops with (exit 1 both).
#[test]
fn an_unreadable_data_disk_is_mounts_one_line() {
    if !have_tool("mkntfs") {
        return;
    }
    use std::os::unix::fs::FileExt;
    let s = Scratch::new("inspect-data-unreadable");
    let disk = s.path("bad.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    ok(std::process::Command::new("mkntfs")
        .args(["-F", "-Q", "-q"])
        .arg(&disk));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&disk)
        .unwrap();
    let mut boot = [0u8; 512];
    f.read_exact_at(&mut boot, 0).unwrap();
    let cluster = u64::from(u16::from_le_bytes([boot[0x0B], boot[0x0C]])) * u64::from(boot[0x0D]);
    let mft = u64::from_le_bytes(boot[0x30..0x38].try_into().unwrap()) * cluster;
    f.write_all_at(&[0u8; 1024], mft).unwrap();
    drop(f);
    let (code, stdout, stderr) = inspect_old_sid(&disk, SRUM_SID, false);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let line = stderr.trim().to_string();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("sidfs: cannot clone "), "{line}");
    let mp = s.mkdir("mp");
    assert_eq!(
        refused_mount(&disk, &mp, 68, &s.path("state"), SRUM_SID),
        line
    );
}
