//! Stores with checksums through real mounts (issue 11): the real `SRUDB.dat` of
//! `../shared/realdata/ese-srum` at its real path, and event logs outside `winevt\Logs`, on a data
//! disk (an NTFS volume made with mkntfs and filled through ntfs-3g) cloned with `--old-sid` of
//! the machine SID they carry. Oracles: `esedbexport -v` (libesedb) and
//! `../shared/tools/clone-check/check_evtx.py` (python-evtx), neither sharing code with sidfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// The machine SID of the real SRUDB.dat (twice in binary, in `SruDbIdMapTable`).
pub(crate) const SRUM_SID: &str = "S-1-5-21-1806060109-1839359715-529511253";
pub(crate) const SRUDB_PATH: &str = "Windows/System32/sru/SRUDB.dat";

/// The real SRUDB.dat with one byte changed on the page of its first SID, away from the SID, and
/// that page's checksums left as they were: a store sidfs must refuse, not repair.
pub(crate) fn srudb_with_a_stale_checksum() -> Vec<u8> {
    let mut db = real_srudb();
    let (_, _, old_bin) = sid_forms(SRUM_SID);
    let at = db.windows(12).position(|w| w == old_bin).unwrap();
    let page = at / 4096 * 4096;
    let other = if at - page > 100 {
        page + 64
    } else {
        page + 4000
    };
    db[other] ^= 0x40;
    db
}
/// Event logs outside a Windows installation's log folder: an exported copy, and one in the usual
/// folder of a disk that holds no Windows (a data disk).
const LOG_PATHS: [&str; 2] = [
    "Exported Logs/Security-copy.evtx",
    "Windows/System32/winevt/Logs/Security.evtx",
];

/// The test master's Security.evtx (scripts/testmaster/evtx.py) written for `sid` instead of the
/// built master's SID: SidType values, UTF-16 strings and a template literal carry it.
pub(crate) fn event_log_for(sid: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");
    let script = format!(
        "import sys; sys.path.insert(0, {dir:?}); from testmaster import spec; \
         spec.MACHINE_SID = {sid:?}; spec.STUDENT = spec.msid(1001); from testmaster import evtx; \
         sys.stdout.buffer.write(evtx.security_log())"
    );
    let out = run(Command::new("/usr/bin/python3").args(["-c", &script]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `esedbexport -v` of one database: (its diagnostics, every exported table by file name).
pub(crate) fn esedbexport(s: &Scratch, db: &Path, tag: &str) -> (String, Vec<(String, String)>) {
    let target = s.path(&format!("{tag}-export"));
    let out = run(Command::new("esedbexport")
        .arg("-v")
        .arg("-t")
        .arg(&target)
        .arg(db));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "esedbexport {tag}:\n{log}");
    let dir = PathBuf::from(format!("{}.export", target.display()));
    let mut tables: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                String::from_utf8_lossy(&read_all(&e.path())).into_owned(),
            )
        })
        .collect();
    tables.sort();
    (log, tables)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn tools_present() -> bool {
    ["mkntfs", "ntfs-3g", "losetup", "esedbexport", "gunzip"]
        .iter()
        .all(|t| have_tool(t))
}

/// Prove that on a data disk cloned with `--old-sid`, the real SRUDB.dat at its real path comes
/// out with every page checksum valid (esedbexport -v reports no mismatch) and tables equal to the
/// master's with the SID replaced, that event logs outside a Windows installation's log folder
/// pass python-evtx's CRC and record checks, and that no old SID is left in any of them.
#[test]
fn srudb_and_event_logs_on_a_data_disk_pass_their_oracles() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("stores");
    let db = real_srudb();
    let log = event_log_for(SRUM_SID);
    let mut files: Vec<(&str, &[u8])> = vec![(SRUDB_PATH, &db)];
    files.extend(LOG_PATHS.iter().map(|p| (*p, log.as_slice())));
    let master = data_disk(&s, "data.img", &files);
    let before = sha256(&master);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 31, &s.path("state"), &["--old-sid", SRUM_SID]);
    let new = m.new_sid();

    let wanted = [SRUDB_PATH, LOG_PATHS[0], LOG_PATHS[1]];
    let mut clone_logs = read_volume_files(&s, &m.disk(), (0, DATA_DISK_SIZE), &wanted);
    let clone_db = clone_logs.remove(0);
    // The event logs: python-evtx over the mounted clone and the master.
    let checker = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/tools/clone-check/check_evtx.py"
    );
    let have_evtx = Command::new("/usr/bin/python3")
        .args(["-c", "import Evtx.Evtx"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_evtx {
        // have_tool's rule: fail when tools are required, skip this part otherwise.
        have_tool("python-evtx-for-usr-bin-python3");
    } else {
        let out = run(Command::new("/usr/bin/python3")
            .arg(checker)
            .arg(&master)
            .arg(m.disk())
            .arg(SRUM_SID)
            .arg(&new));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            text.lines().rev().find(|l| !l.trim().is_empty()),
            Some("PASS"),
            "check_evtx.py:\n{text}"
        );
        for p in LOG_PATHS {
            assert!(
                text.contains(p.rsplit('/').next().unwrap()),
                "{p} not checked:\n{text}"
            );
        }
    }
    m.unmount();
    assert_eq!(sha256(&master), before, "the master must never change");

    let (old_ascii, old_utf16, old_bin) = sid_forms(SRUM_SID);
    let (_, _, new_bin) = sid_forms(&new);
    for (name, bytes) in std::iter::once(("SRUDB.dat", &clone_db)).chain(
        LOG_PATHS
            .iter()
            .copied()
            .zip(clone_logs.iter())
            .collect::<Vec<_>>(),
    ) {
        assert_eq!(
            count(bytes, &old_ascii) + count(bytes, &old_utf16) + count(bytes, &old_bin),
            0,
            "old SID left in {name}"
        );
    }
    assert_eq!(clone_db.len(), db.len());
    assert_eq!(count(&clone_db, &new_bin), 2);

    check_clone_db(&s, &db, &clone_db, SRUM_SID, &new);
}

/// esedbexport -v on the master's and the clone's SRUDB.dat: no checksum mismatch in either, and
/// every exported table of the clone equals the master's with the SID `old` replaced by `new`.
pub(crate) fn check_clone_db(s: &Scratch, db: &[u8], clone_db: &[u8], old: &str, new: &str) {
    let (_, _, old_bin) = sid_forms(old);
    let (_, _, new_bin) = sid_forms(new);
    // The database: libesedb reads every page of both and checks their checksums.
    let (mp_db, cp_db) = (s.path("master-SRUDB.dat"), s.path("clone-SRUDB.dat"));
    std::fs::write(&mp_db, db).unwrap();
    std::fs::write(&cp_db, clone_db).unwrap();
    let (master_log, master_tables) = esedbexport(s, &mp_db, "master");
    let (clone_log, clone_tables) = esedbexport(s, &cp_db, "clone");
    assert!(!master_log.contains("mismatch"), "{master_log}");
    assert!(
        !clone_log.contains("mismatch"),
        "the clone's SRUDB.dat:\n{clone_log}"
    );
    assert_eq!(
        master_tables.iter().map(|t| &t.0).collect::<Vec<_>>(),
        clone_tables.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    let (old_hex, new_hex) = (hex(&old_bin), hex(&new_bin));
    let mut saw_sid = false;
    for ((name, m), (_, c)) in master_tables.iter().zip(&clone_tables) {
        saw_sid |= m.contains(&old_hex);
        assert_eq!(
            *c,
            m.replace(&old_hex, &new_hex).replace(old, new),
            "table {name} differs beyond the SID"
        );
    }
    assert!(saw_sid, "the master's tables show the SID");
}

/// `sidfs mount` expected to refuse; should it mount instead, the clone is unmounted before the
/// caller's assertion fails, so that no mount outlives the test.
pub(crate) fn refused_mount(
    master: &Path,
    mp: &Path,
    seed: u64,
    state: &Path,
    extra: &[&str],
) -> std::process::Output {
    let out = mount_cmd(master, mp, seed, state, extra);
    if out.status.success() {
        let _ = run(sidfs().arg("umount").arg(mp));
    }
    out
}

/// Prove fail-closed: a SRUDB.dat whose page holding the SID already has a wrong checksum cannot
/// be rewritten validly, so `sidfs mount` refuses the master with one line naming the file.
#[test]
fn an_ese_store_that_cannot_be_rewritten_is_refused() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("stores-refused");
    let db = srudb_with_a_stale_checksum();
    let master = data_disk(&s, "data.img", &[(SRUDB_PATH, &db)]);
    let mp = s.mkdir("mp");
    let out = refused_mount(&master, &mp, 32, &s.path("state"), &["--old-sid", SRUM_SID]);
    let err = one_line_error(&out);
    assert!(err.contains(r"Windows\System32\sru\SRUDB.dat"), "{err}");
    assert!(err.contains("checksum"), "{err}");
    assert!(err.contains("delete that file"), "{err}");
}

/// A copy of the built test master with `files` added to its Windows volume through ntfs-3g.
pub(crate) fn windows_master_with(
    s: &Scratch,
    name: &str,
    files: &[(&str, &[u8])],
) -> (PathBuf, serde_json::Value) {
    let (built, manifest) = build_master(s, &format!("{name}.built"), &[]);
    let master = s.path(name);
    std::fs::copy(&built, &master).unwrap();
    let (start, size) = windows_partition(&manifest);
    write_files(s, &master, start, size, files);
    (master, manifest)
}

/// `sidfs inspect --json`: (exit status, report).
pub(crate) fn inspect(master: &Path) -> (i32, serde_json::Value) {
    let out = run(sidfs().arg("inspect").arg(master).arg("--json"));
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "inspect --json: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

const EXPORTED_LOG: &str = "Users/Public/Documents/Security-exported.evtx";
const QMGR_PATH: &str = "ProgramData/Microsoft/Network/Downloader/qmgr.db";

/// Prove, on a Windows master, that inspect lists its stores with checksums — an event log
/// outside `winevt\Logs` holding the machine SID ("rewritten"), an ESE database without it ("kept")
/// — and that a clone's copy of that log passes python-evtx's checks; and that an ESE database
/// holding the machine SID on a page whose checksum no longer matches makes inspect refuse
/// (`store-not-rewritable`) and mount refuse with one line.
#[test]
fn inspect_lists_the_stores_of_a_windows_master() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("stores-inspect");
    let (built, manifest) = build_master(&s, "probe.img", &[]);
    drop(built);
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let log = event_log_for(&old);
    let db = real_srudb();
    let (master, _) =
        windows_master_with(&s, "good.img", &[(EXPORTED_LOG, &log), (QMGR_PATH, &db)]);
    let (code, report) = inspect(&master);
    assert_eq!(code, 0, "{report}");
    let stores = report["windows"]["stores"].as_array().unwrap();
    let find = |suffix: &str| {
        stores
            .iter()
            .find(|st| st["path"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("{suffix} not listed: {stores:?}"))
            .clone()
    };
    let exported = find("Security-exported.evtx");
    assert_eq!(exported["kind"], "evtx");
    assert!(
        exported["sid_occurrences"].as_u64().unwrap() > 0,
        "{exported}"
    );
    assert!(exported["clone"].as_str().unwrap().starts_with("rewritten"));
    let qmgr = find("qmgr.db");
    assert_eq!(qmgr["kind"], "ese");
    assert_eq!(qmgr["sid_occurrences"], 0);
    assert!(qmgr["clone"].as_str().unwrap().starts_with("kept"));
    assert!(
        !stores.iter().any(|st| st["path"]
            .as_str()
            .unwrap()
            .contains(r"winevt\Logs\Security.evtx")),
        "the logs of winevt\\Logs are not listed as extra stores: {stores:?}"
    );

    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 33, &s.path("state"), &[]);
    let new = m.new_sid();
    let have_evtx = Command::new("/usr/bin/python3")
        .args(["-c", "import Evtx.Evtx"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have_evtx {
        let checker = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/tools/clone-check/check_evtx.py"
        );
        let partition = manifest["windows_partition"].as_u64().unwrap().to_string();
        let out = run(Command::new("/usr/bin/python3")
            .env("CHECK_EVTX_VOLUME", &partition)
            .arg(checker)
            .arg(&master)
            .arg(m.disk())
            .arg(&old)
            .arg(&new));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            text.lines().rev().find(|l| !l.trim().is_empty()),
            Some("PASS"),
            "check_evtx.py:\n{text}"
        );
        assert!(text.contains("Security-exported.evtx"), "{text}");
    } else {
        have_tool("python-evtx-for-usr-bin-python3");
    }
    m.unmount();

    // The real SRUDB.dat made to hold this master's SID by a plain byte replacement: its page
    // checksums no longer match, so neither inspect nor mount will clone it.
    let (_, _, srum_bin) = sid_forms(SRUM_SID);
    let (_, _, old_bin) = sid_forms(&old);
    let mut stale = db.clone();
    while let Some(at) = stale.windows(12).position(|w| w == srum_bin) {
        stale[at..at + 12].copy_from_slice(&old_bin);
    }
    let (refused, _) = windows_master_with(&s, "refused.img", &[(SRUDB_PATH, &stale)]);
    let (code, report) = inspect(&refused);
    assert_eq!(code, 3, "{report}");
    let refusals = report["refusals"].as_array().unwrap();
    assert!(
        refusals
            .iter()
            .any(|r| r["reason"] == "store-not-rewritable"
                && r["message"].as_str().unwrap().contains("SRUDB.dat")),
        "{refusals:?}"
    );
    let out = refused_mount(&refused, &s.mkdir("mp2"), 34, &s.path("state2"), &[]);
    let err = one_line_error(&out);
    assert!(
        err.contains("SRUDB.dat") && err.contains("checksum"),
        "{err}"
    );
}

/// Prove that a SRUDB.dat stored in two fragments, the junction inside the page that holds the
/// SID (512-byte clusters), comes out with every page checksum valid: the page is checksummed as
/// a whole across the junction. The file is fragmented by ntfs-3g itself: its first part is
/// written, then a one-cluster gap file and a spacer; the volume is filled up, the spacer deleted,
/// and the rest appended into the spacer's clusters, beyond the gap.
#[test]
fn a_fragmented_srudb_keeps_valid_checksums() {
    if !tools_present() || !have_tool("ntfsinfo") {
        return;
    }
    let s = Scratch::new("stores-fragmented");
    let db = real_srudb();
    let (_, _, old_bin) = sid_forms(SRUM_SID);
    let at = db.windows(12).position(|w| w == old_bin).unwrap();
    // A cluster boundary inside the SID's 4 KiB page, before the SID.
    let split = at / 512 * 512;
    assert!(split % 4096 != 0 && split < at);
    const SIZE: u64 = 16 << 20;
    let (master, runs) = fragmented_data_disk(
        &s,
        "fragmented.img",
        (SIZE, 512),
        (SRUDB_PATH, &db[..split], &db[split..]),
        (512, db.len() - split + 64 * 1024),
    );
    assert!(runs.len() >= 2, "SRUDB.dat is not fragmented: {runs:?}");
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 35, &s.path("state"), &["--old-sid", SRUM_SID]);
    let new = m.new_sid();
    let [clone_db] = read_volume_files(&s, &m.disk(), (0, SIZE), &[SRUDB_PATH])
        .try_into()
        .unwrap();
    m.unmount();
    assert_eq!(count(&clone_db, &old_bin), 0);
    check_clone_db(&s, &db, &clone_db, SRUM_SID, &new);
}
