//! SQLite write-ahead logs through real mounts (issue 11): a StateRepository-like database in WAL
//! mode, its rows (the machine SID as text and as a 24-byte binary SID) still in the log, placed
//! at its real path and at a path only the walk finds, on a data disk (mkntfs + ntfs-3g) cloned
//! with `--old-sid`. Oracle: the `sqlite3` CLI (the SQLite library, no code shared with sidfs)
//! replays the clone's log: `PRAGMA integrity_check` is ok and every row is there with the new SID.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const OLD_SID: &str = "S-1-5-21-3623811015-3361044348-30300820";
/// The AppX state repository (a known path) and an application's database (found by the walk).
const DB_PATHS: [&str; 2] = [
    "ProgramData/Microsoft/Windows/AppRepository/StateRepository-Machine.srd",
    "Apps/Contoso/cache.db",
];
const ROWS: usize = 60;

/// A database in WAL mode (python's sqlite3 module) with `ROWS` rows holding `sid` as text and as
/// a binary SID, every row still in the log: `(database, log)` copied while the connection is
/// open, with automatic checkpoints off.
fn sqlite_store(s: &Scratch, tag: &str, sid: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = s.mkdir(&format!("{tag}-make"));
    let script = format!(
        "import sqlite3, shutil, struct, sys\n\
         d = sys.argv[1]\n\
         a, b, c = (int(x) for x in {sid:?}.split('-')[4:])\n\
         con = sqlite3.connect(d + '/m.db', isolation_level=None)\n\
         con.execute('pragma journal_mode=wal'); con.execute('pragma wal_autocheckpoint=0')\n\
         con.execute('create table package(id integer primary key, user text, owner blob)')\n\
         blob = struct.pack('<BB6sIIII', 1, 4, b'\\0\\0\\0\\0\\0\\x05', 21, a, b, c)\n\
         for i in range({ROWS}):\n\
         \x20   con.execute('insert into package(user, owner) values(?, ?)', ('{sid}-%d' % (1001 + i), blob))\n\
         shutil.copy(d + '/m.db', d + '/c.db'); shutil.copy(d + '/m.db-wal', d + '/c.db-wal')\n"
    );
    let out = run(Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .arg(&dir));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (read_all(&dir.join("c.db")), read_all(&dir.join("c.db-wal")))
}

/// The binary machine SID (revision 1, authority 5, 21-a-b-c): 24 bytes, as hex for SQL.
pub(crate) fn binary_sid_hex(sid: &str) -> String {
    let mut b = vec![1u8, 4, 0, 0, 0, 0, 0, 5];
    b.extend(21u32.to_le_bytes());
    for part in sid.split('-').skip(4) {
        b.extend(part.parse::<u32>().unwrap().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// `sqlite3 DB SQL`: its output, trimmed.
pub(crate) fn sqlite3(db: &Path, sql: &str) -> String {
    let out = run(Command::new("sqlite3").arg(db).arg(sql));
    assert!(
        out.status.success(),
        "sqlite3 {} {sql}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes `db` and its log as `NAME` and `NAME-wal` in a fresh folder of the scratch.
pub(crate) fn place(s: &Scratch, tag: &str, db: &[u8], wal: Option<&[u8]>) -> PathBuf {
    let dir = s.mkdir(tag);
    let p = dir.join("store.db");
    std::fs::write(&p, db).unwrap();
    if let Some(wal) = wal {
        std::fs::write(dir.join("store.db-wal"), wal).unwrap();
    }
    p
}

fn tools_present() -> bool {
    ["mkntfs", "ntfs-3g", "losetup", "sqlite3", "python3"]
        .iter()
        .all(|t| have_tool(t))
}

/// Prove that on a data disk cloned with `--old-sid`, both SQLite stores come out with every WAL
/// frame replayed by SQLite (integrity ok, as many rows as the master's, all in the log), every
/// row carrying the new SID as text and binary, and no old SID left in the database or its log.
#[test]
fn wal_frames_replay_with_the_new_sid_on_a_data_disk() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("sqlite-wal");
    let mut files = Vec::new();
    let mut masters = Vec::new();
    for (i, path) in DB_PATHS.iter().enumerate() {
        let (db, wal) = sqlite_store(&s, &format!("store{i}"), OLD_SID);
        files.push((path.to_string(), db.clone()));
        files.push((format!("{path}-wal"), wal.clone()));
        masters.push((db, wal));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let master = data_disk(&s, "data.img", &refs);
    let before = sha256(&master);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 41, &s.path("state"), &["--old-sid", OLD_SID]);
    let new = m.new_sid();
    let clones: Vec<(Vec<u8>, Vec<u8>)> = {
        let dev = LoopDev::new(&m.disk(), 0, DATA_DISK_SIZE);
        let nm = NtfsMount::new(&dev.0, &s.path("clone-ro"));
        DB_PATHS
            .iter()
            .map(|p| {
                (
                    read_all(&nm.0.join(p)),
                    read_all(&nm.0.join(format!("{p}-wal"))),
                )
            })
            .collect()
    };
    m.unmount();
    assert_eq!(sha256(&master), before, "the master must never change");

    let (old_ascii, old_utf16, old_bin) = sid_forms(OLD_SID);
    let (new_hex, old_hex) = (binary_sid_hex(&new), binary_sid_hex(OLD_SID));
    for (i, ((db, wal), (cdb, cwal))) in masters.iter().zip(&clones).enumerate() {
        let name = DB_PATHS[i];
        assert_eq!((cdb.len(), cwal.len()), (db.len(), wal.len()), "{name}");
        for (what, bytes) in [("database", cdb), ("log", cwal)] {
            assert_eq!(
                count(bytes, &old_ascii) + count(bytes, &old_utf16) + count(bytes, &old_bin),
                0,
                "old SID left in the {what} of {name}"
            );
        }
        // The master: its rows are in the log only (the database alone has none of them).
        let alone = place(&s, &format!("alone{i}"), db, None);
        assert_ne!(
            sqlite3(
                &alone,
                "select count(*) from sqlite_master where name = 'package';"
            ),
            "1",
            "{name}: the rows must be in the log"
        );
        let mdb = place(&s, &format!("master{i}"), db, Some(wal));
        let rows = sqlite3(&mdb, "select count(*) from package;");
        assert_eq!(rows, ROWS.to_string(), "{name}: the master's rows");
        // The clone: SQLite replays every frame of its log.
        let cdb_path = place(&s, &format!("clone{i}"), cdb, Some(cwal));
        assert_eq!(
            sqlite3(&cdb_path, "pragma integrity_check;"),
            "ok",
            "{name}"
        );
        assert_eq!(
            sqlite3(&cdb_path, "select count(*) from package;"),
            rows,
            "{name}: every row of the master, replayed from the clone's log"
        );
        assert_eq!(
            sqlite3(
                &cdb_path,
                &format!(
                    "select count(*) from package where user like '{new}-%' and hex(owner) = '{new_hex}';"
                )
            ),
            rows,
            "{name}: every row with the new SID"
        );
        assert_eq!(
            sqlite3(
                &cdb_path,
                &format!(
                    "select count(*) from package where user like '%{}%' or hex(owner) = '{old_hex}';",
                    OLD_SID.rsplit('-').next().unwrap()
                )
            ),
            "0",
            "{name}: no row with the old SID"
        );
    }
}

/// Prove fail-closed: a log holding the machine SID with a format version sidfs does not know is
/// refused with one line naming the file.
#[test]
fn a_wal_with_an_unknown_format_version_is_refused() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("sqlite-wal-refused");
    let (db, mut wal) = sqlite_store(&s, "store", OLD_SID);
    wal[4..8].copy_from_slice(&3_007_001u32.to_be_bytes());
    let files = [
        (DB_PATHS[0].to_string(), db),
        (format!("{}-wal", DB_PATHS[0]), wal),
    ];
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let master = data_disk(&s, "data.img", &refs);
    let mp = s.mkdir("mp");
    let out = mount_cmd(&master, &mp, 42, &s.path("state"), &["--old-sid", OLD_SID]);
    if out.status.success() {
        let _ = run(sidfs().arg("umount").arg(&mp));
    }
    let err = one_line_error(&out);
    assert!(
        err.contains(r"AppRepository\StateRepository-Machine.srd-wal"),
        "{err}"
    );
    assert!(err.contains("format version 3007001"), "{err}");
    assert!(err.contains("wal_checkpoint"), "{err}");
}

/// Prove that `sidfs inspect` of a Windows master lists its SQLite write-ahead log with the
/// machine SID ("rewritten with its frame checksums"), and refuses (`store-not-rewritable`) one it
/// could not rewrite faithfully (an unknown format version), as mount does.
#[test]
fn inspect_lists_and_refuses_write_ahead_logs() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("sqlite-wal-inspect");
    let (built, manifest) = build_master(&s, "built.img", &[]);
    let sid = manifest["machine_sid"].as_str().unwrap().to_string();
    let (start, size) = windows_partition(&manifest);
    let (db, wal) = sqlite_store(&s, "store", &sid);
    let mut bad_wal = wal.clone();
    bad_wal[4..8].copy_from_slice(&3_007_001u32.to_be_bytes());
    for (name, wal, refused) in [("good.img", &wal, false), ("bad.img", &bad_wal, true)] {
        let master = s.path(name);
        std::fs::copy(&built, &master).unwrap();
        let wal_path = format!("{}-wal", DB_PATHS[0]);
        write_files(
            &s,
            &master,
            start,
            size,
            &[(DB_PATHS[0], &db), (&wal_path, wal)],
        );
        let out = run(sidfs().arg("inspect").arg(&master).arg("--json"));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let stores = report["windows"]["stores"].as_array().unwrap();
        let listed = stores
            .iter()
            .find(|st| st["kind"] == "sqlite-wal")
            .unwrap_or_else(|| panic!("{name}: no write-ahead log listed: {stores:?}"));
        assert!(listed["sid_occurrences"].as_u64().unwrap() > 0, "{listed}");
        let refusals = report["refusals"].as_array().unwrap();
        let refuses = refusals
            .iter()
            .any(|r| r["reason"] == "store-not-rewritable");
        if refused {
            assert_eq!(out.status.code(), Some(3), "{name}: {report}");
            assert!(refuses, "{name}: {refusals:?}");
            assert!(
                listed["clone"].as_str().unwrap().starts_with("refused"),
                "{listed}"
            );
        } else {
            assert!(!refuses, "{name}: {refusals:?}");
            assert_eq!(
                listed["clone"], "rewritten with its frame checksums",
                "{listed}"
            );
        }
    }
}
