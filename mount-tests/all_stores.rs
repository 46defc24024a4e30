//! One master carrying every store with checksums of issue 11 (its "Done when"), at their real
//! paths and with the machine SID (scripts/testmaster/stores.py): the real SRUDB.dat in (at
//! least) two fragments, a StateRepository-like SQLite database whose rows are partly in its write-ahead
//! log, the WMI repository with CreatorSIDs, and event logs outside `winevt\Logs`. Once as a
//! Windows test master (`build-test-master --stores all`, the SRUDB.dat re-keyed to the master's
//! SID with recomputed page checksums), once as a data disk without Windows (`build-store-disk`,
//! the real SRUDB.dat byte for byte) cloned with `--old-sid`. Each store of the clone, copied out
//! through ntfs-3g, must pass its independent oracle (esedbexport, sqlite3, dissect.cim through
//! scripts/wmi-oracle, python-evtx through check_evtx.py) and hold no old SID in any form; and
//! `../shared/tools/clone-check` must pass the whole clone in every check but one that cannot
//! hold for such stores (its byte-for-byte comparison of files, see [`check_whole_clone`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::clone_check::{clone_check_report, replace};
use crate::common::*;
use crate::sqlite_wal::{binary_sid_hex, place, sqlite3};
use crate::stores::{check_clone_db, inspect};
use crate::wmi::{oracle, oracle_python};

/// The machine SID of the real SRUDB.dat (and of the data disk's stores).
const SRUM_SID: &str = "S-1-5-21-1806060109-1839359715-529511253";
const SRUDB: &str = "Windows/System32/sru/SRUDB.dat";
const STATE_REPOSITORY: &str =
    "ProgramData/Microsoft/Windows/AppRepository/StateRepository-Machine.srd";
const WMI_DIR: &str = "Windows/System32/wbem/Repository";

/// Store files by path on their volume.
type Stores = BTreeMap<String, Vec<u8>>;

fn tools_present() -> bool {
    [
        "mkntfs",
        "ntfs-3g",
        "ntfsinfo",
        "losetup",
        "esedbexport",
        "sqlite3",
        "gunzip",
    ]
    .iter()
    .all(|t| have_tool(t))
        && crate::clone_check::tools_present()
}

/// Whether /usr/bin/python3 has python-evtx (check_evtx.py's parser); have_tool's rule otherwise.
fn have_python_evtx() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import Evtx.Evtx"])
        .output()
        .is_ok_and(|o| o.status.success())
        || have_tool("python-evtx-for-usr-bin-python3")
}

/// The builder wrote SRUDB.dat in more than one data run (ntfsinfo, independent of sidfs).
fn assert_srudb_fragmented(image: &Path, (start, size): (u64, u64)) {
    let dev = LoopDev::new(image, start, size);
    let runs = ntfs_run_count(&dev.0, &format!("/{SRUDB}"));
    assert!(runs >= 2, "SRUDB.dat must be fragmented: {runs} run");
}

/// `python3 -m testmaster build-store-disk OUT`: the data disk and its manifest.
fn build_store_disk(s: &Scratch, name: &str) -> (PathBuf, serde_json::Value) {
    let out = s.path(name);
    let scripts = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");
    ok(Command::new("/usr/bin/python3")
        .env("PYTHONPATH", scripts)
        .args(["-P", "-m", "testmaster", "build-store-disk"])
        .arg(&out));
    let manifest = read_all(Path::new(&format!("{}.json", out.display())));
    (out, serde_json::from_slice(&manifest).unwrap())
}

/// The store files a builder manifest lists ("stores" / "files" / "path").
fn store_paths(manifest: &serde_json::Value) -> Vec<String> {
    manifest["stores"]["files"]
        .as_array()
        .expect("the manifest lists the stores")
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

/// Every file of `paths` read through a read-only ntfs-3g mount of the NTFS volume at
/// (`start`, `size`) of `image`.
fn read_stores(s: &Scratch, image: &Path, (start, size): (u64, u64), paths: &[String]) -> Stores {
    let names: Vec<&str> = paths.iter().map(String::as_str).collect();
    let files = read_volume_files(s, image, (start, size), &names);
    paths.iter().cloned().zip(files).collect()
}

/// check_evtx.py (python-evtx: header and chunk CRCs, every record's XML) on every event log of
/// the clone's volume against the master's; the logs named in `logs` must be among those checked.
fn check_event_logs(
    master: &Path,
    clone: &Path,
    old: &str,
    new: &str,
    volume: Option<u64>,
    logs: &[&String],
) {
    if !have_python_evtx() {
        return;
    }
    let checker = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/tools/clone-check/check_evtx.py"
    );
    let mut cmd = Command::new("/usr/bin/python3");
    if let Some(v) = volume {
        cmd.env("CHECK_EVTX_VOLUME", v.to_string());
    }
    let out = run(cmd.arg(checker).arg(master).arg(clone).arg(old).arg(new));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        text.lines().rev().find(|l| !l.trim().is_empty()),
        Some("PASS"),
        "check_evtx.py:\n{text}"
    );
    for log in logs {
        let name = log.rsplit('/').next().unwrap();
        assert!(text.contains(name), "{log} not checked:\n{text}");
    }
}

/// The SQLite store: the clone's database and log replay in SQLite (integrity ok) to as many
/// rows as the master's, more than the database alone holds, every one with the new SID.
fn check_sqlite(s: &Scratch, master: &Stores, clone: &Stores, old: &str, new: &str) {
    let wal = format!("{STATE_REPOSITORY}-wal");
    let alone = place(s, "sqlite-alone", &master[STATE_REPOSITORY], None);
    let mdb = place(
        s,
        "sqlite-master",
        &master[STATE_REPOSITORY],
        Some(&master[&wal]),
    );
    let cdb = place(
        s,
        "sqlite-clone",
        &clone[STATE_REPOSITORY],
        Some(&clone[&wal]),
    );
    assert_eq!(sqlite3(&mdb, "pragma integrity_check;"), "ok");
    assert_eq!(sqlite3(&cdb, "pragma integrity_check;"), "ok", "the clone");
    let in_db: u64 = sqlite3(&alone, "select count(*) from User;")
        .parse()
        .unwrap();
    for table in ["User", "Package"] {
        let q = format!("select count(*) from {table};");
        let rows = sqlite3(&mdb, &q);
        assert!(
            rows.parse::<u64>().unwrap() > in_db,
            "{table}: the master's log must hold rows"
        );
        assert_eq!(
            sqlite3(&cdb, &q),
            rows,
            "{table}: every row of the master, replayed from the clone's log"
        );
    }
    let rows = sqlite3(&mdb, "select count(*) from User;");
    // Each row's SID as text (the user's) and as a binary SID: after its revision and
    // sub-authority count, the authority and the machine's sub-authorities (22 bytes).
    let machine_part = |sid: &str| binary_sid_hex(sid)[4..].to_string();
    let new_part = machine_part(new);
    assert_eq!(
        sqlite3(
            &cdb,
            &format!(
                "select count(*) from User where UserSidString like '{new}-%' \
                 and substr(hex(UserSid), 5, {}) = '{new_part}';",
                new_part.len()
            )
        ),
        rows,
        "every row with the new SID"
    );
    assert_eq!(
        sqlite3(
            &cdb,
            &format!(
                "select count(*) from User where UserSidString like '%{}%' \
                 or substr(hex(UserSid), 5, {}) = '{}';",
                old.rsplit('-').next().unwrap(),
                new_part.len(),
                machine_part(old)
            )
        ),
        "0",
        "no row with the old SID"
    );
}

/// The WMI repository: dissect.cim reads it to its last object with every record and page
/// checksum valid and the new CreatorSIDs (scripts/wmi-oracle); the master's fails the oracle.
fn check_wmi(s: &Scratch, master: &Stores, clone: &Stores, old: &str, new: &str) {
    let Some(python) = oracle_python() else {
        return;
    };
    let write = |tag: &str, files: &Stores| {
        let dir = s.mkdir(tag);
        for name in crate::wmi::FILES {
            std::fs::write(dir.join(name), &files[&format!("{WMI_DIR}/{name}")]).unwrap();
        }
        dir
    };
    let (mdir, cdir) = (write("wmi-master", master), write("wmi-clone", clone));
    let out = oracle(&python, &cdir, old, new);
    assert!(
        out.status.success(),
        "wmi-oracle on the clone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["objects"], 4, "{read}");
    assert_eq!(read["records"], 4, "{read}");
    assert_eq!(read["creator_sids"].as_array().unwrap().len(), 3, "{read}");
    assert!(!oracle(&python, &mdir, old, new).status.success());
}

/// Every oracle on the stores of a clone, and no old SID in any form in any of them.
fn check_stores(s: &Scratch, master: &Stores, clone: &Stores, old: &str, new: &str) {
    let (old_ascii, old_utf16, old_bin) = sid_forms(old);
    for (path, bytes) in clone {
        assert_eq!(bytes.len(), master[path].len(), "{path}: size");
        assert_eq!(
            count(bytes, &old_ascii) + count(bytes, &old_utf16) + count(bytes, &old_bin),
            0,
            "old SID left in {path}"
        );
    }
    let (_, _, new_bin) = sid_forms(new);
    assert_eq!(count(&clone[SRUDB], &new_bin), 2);
    check_clone_db(s, &master[SRUDB], &clone[SRUDB], old, new);
    check_sqlite(s, master, clone, old, new);
    check_wmi(s, master, clone, old, new);
}

/// `../shared/tools/clone-check` on the whole clone. Every check must pass but one: the checker
/// wants each file to equal the master's with the SID bytes replaced (event logs excepted, whose
/// CRCs it recomputes), which a store whose checksums cover the SID cannot; so its file-contents
/// check must name exactly the stores whose bytes differ from a plain replacement, each of which
/// has just passed its own oracle. Everything else it checks (no old SID anywhere on the volume,
/// ntfssecaudit, tree, descriptors, every hive) must be ok. The evidence that the
/// checker, not the clone, is wrong there: each of those files passes its own oracle above.
fn check_whole_clone(
    s: &Scratch,
    (master, clone): (&Path, &Path),
    (old, new): (&str, &str),
    partition: Option<u64>,
    (master_stores, clone_stores): (&Stores, &Stores),
) {
    let checksummed: Vec<&String> = master_stores
        .iter()
        .filter(|(path, bytes)| {
            let (oa, ou, ob) = sid_forms(old);
            let (na, nu, nb) = sid_forms(new);
            let plain = replace(&replace(&replace(bytes, &oa, &na), &ou, &nu), &ob, &nb);
            !path.ends_with(".evtx") && clone_stores[*path] != plain
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        checksummed.iter().any(|p| p.ends_with("SRUDB.dat")),
        "{checksummed:?}"
    );
    let (text, _) = clone_check_report(s, master, clone, old, new, partition);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok: no residual old-SID occurrence")),
        "{text}"
    );
    let contents = format!(
        "FAIL-CHECK: {} file contents differ from master with SID replaced, e.g. ",
        checksummed.len()
    );
    for line in text.lines().filter(|l| l.starts_with("FAIL-CHECK:")) {
        let examples = line
            .strip_prefix(&contents)
            .unwrap_or_else(|| panic!("clone-check failed beyond the stores' checksums:\n{text}"));
        for example in examples.trim_matches(|c| c == '[' || c == ']').split(", ") {
            let example = example.trim_matches('\'');
            assert!(
                checksummed.iter().any(|p| *p == example),
                "{example} differs and is no store with checksums:\n{text}"
            );
        }
    }
}

/// The inspect report of a master with every store: each store file the builder wrote that
/// holds the machine SID is listed with its SID count and "rewritten ..."; the kinds are ESE,
/// event log, SQLite write-ahead log and WMI.
fn check_inspect(master: &Path, paths: &[String]) {
    let (code, report) = inspect(master);
    assert_eq!(code, 0, "{report}");
    let stores = report["windows"]["stores"].as_array().unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for path in paths {
        let windows_path = path.replace('/', "\\");
        let Some(listed) = stores.iter().find(|st| st["path"] == windows_path.as_str()) else {
            // The database beside its log and the repository's other files are not listed.
            assert!(
                path == STATE_REPOSITORY || path.starts_with(WMI_DIR),
                "{path} not listed: {stores:?}"
            );
            continue;
        };
        assert!(listed["sid_occurrences"].as_u64().unwrap() > 0, "{listed}");
        assert!(
            listed["clone"].as_str().unwrap().starts_with("rewritten"),
            "{listed}"
        );
        kinds.insert(listed["kind"].as_str().unwrap().to_string());
    }
    // Every kind inspect reports is one docs/SEMANTICS.md's store table has a row for (the unit
    // test the_store_table_names_every_store_kind).
    for st in stores {
        let kind = st["kind"].as_str().unwrap();
        assert!(
            sidfs::rewrite::survey::STORE_KINDS
                .iter()
                .any(|(k, _)| *k == kind),
            "{kind} is not in STORE_KINDS"
        );
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["ese", "evtx", "sqlite-wal", "wmi"],
        "{stores:?}"
    );
}

/// Prove the "Done when" of issue 11 on a Windows test master: inspect lists every store with
/// its SID count and "rewritten"; in a clone each store passes its independent oracle and holds
/// no old SID; the whole clone passes clone-check.
#[test]
fn a_windows_master_with_every_store_clones_past_every_oracle() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("all-stores");
    let (master, manifest) = build_master(&s, "stores.img", &["--stores", "all"]);
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let paths = store_paths(&manifest);
    let volume = windows_partition(&manifest);
    let before = sha256(&master);
    assert_srudb_fragmented(&master, volume);
    check_inspect(&master, &paths);
    let master_stores = read_stores(&s, &master, volume, &paths);
    // The builder's SRUDB.dat: the real one with only its SID changed, every checksum valid.
    let real = Scratch::new("all-stores-real");
    check_clone_db(&real, &real_srudb(), &master_stores[SRUDB], SRUM_SID, &old);

    let mp = s.mkdir("mp");
    // clone-check compares SIDs only: the other identifiers stay as in the master.
    let keep = ["--keep", "hostname,machine-guid,wsus,msdtc"];
    let m = Mounted::new(&master, &mp, 51, &s.path("state"), &keep);
    let (_, new) = crate::clone_check::mounted_sids(&m);
    let clone_stores = read_stores(&s, &m.disk(), volume, &paths);
    let logs: Vec<&String> = paths.iter().filter(|p| p.ends_with(".evtx")).collect();
    let partition = manifest["windows_partition"].as_u64();
    check_event_logs(&master, &m.disk(), &old, &new, partition, &logs);
    check_stores(&s, &master_stores, &clone_stores, &old, &new);
    check_whole_clone(
        &s,
        (&master, &m.disk()),
        (&old, &new),
        partition,
        (&master_stores, &clone_stores),
    );
    m.unmount();
    assert_eq!(sha256(&master), before, "the master must never change");
}

/// Prove the same on a data disk (no Windows: every event log is one outside a Windows
/// installation) holding the real SRUDB.dat byte for byte, cloned with `--old-sid`.
#[test]
fn a_data_disk_with_every_store_clones_past_every_oracle() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("all-stores-disk");
    let (master, manifest) = build_store_disk(&s, "data.img");
    assert_eq!(manifest["machine_sid"], SRUM_SID);
    let paths = store_paths(&manifest);
    let part = &manifest["partitions"][0];
    let volume = (
        part["start"].as_u64().unwrap(),
        part["size"].as_u64().unwrap(),
    );
    let partition = part["index"].as_u64();
    let before = sha256(&master);
    let master_stores = read_stores(&s, &master, volume, &paths);
    assert_eq!(master_stores[SRUDB], real_srudb());
    assert_srudb_fragmented(&master, volume);

    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 52, &s.path("state"), &["--old-sid", SRUM_SID]);
    let (_, new) = crate::clone_check::mounted_sids(&m);
    let clone_stores = read_stores(&s, &m.disk(), volume, &paths);
    let logs: Vec<&String> = paths.iter().filter(|p| p.ends_with(".evtx")).collect();
    assert_eq!(logs.len(), 3, "{paths:?}");
    check_event_logs(&master, &m.disk(), SRUM_SID, &new, partition, &logs);
    check_stores(&s, &master_stores, &clone_stores, SRUM_SID, &new);
    check_whole_clone(
        &s,
        (&master, &m.disk()),
        (SRUM_SID, &new),
        partition,
        (&master_stores, &clone_stores),
    );
    m.unmount();
    assert_eq!(sha256(&master), before, "the master must never change");
}
