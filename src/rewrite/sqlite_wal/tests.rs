//! Tests of the WAL checksums and [`rewrite_wal`] on write-ahead logs that python's sqlite3 module
//! (the SQLite library) wrote, checked back with the `sqlite3` CLI where it is installed.

use super::*;
use crate::sid::MachineSid;
use crate::testutil::TempDir;

const OLD: (u32, u32, u32) = (1806060109, 1839359715, 529511253);
const NEW: (u32, u32, u32) = (1111111111, 2222222222, 333333333);
const ROWS: usize = 40;

fn mapping() -> SidMapping {
    SidMapping::new(
        MachineSid::new(OLD.0, OLD.1, OLD.2),
        MachineSid::new(NEW.0, NEW.1, NEW.2),
    )
    .unwrap()
}

/// A database in WAL mode with the SID (text and 24-byte binary) in `ROWS` rows, all still in the
/// log: `(database, log)` copied while the connection is open, with no checkpoint.
fn sqlite_wal(dir: &TempDir) -> (Vec<u8>, Vec<u8>) {
    let script = format!(
        "import sqlite3, shutil, struct, sys\n\
         d = sys.argv[1]\n\
         con = sqlite3.connect(d + '/m.db', isolation_level=None)\n\
         con.execute('pragma journal_mode=wal'); con.execute('pragma wal_autocheckpoint=0')\n\
         con.execute('create table t(id integer primary key, name text, sid blob)')\n\
         b = struct.pack('<BB6sIIII', 1, 4, b'\\0\\0\\0\\0\\0\\x05', 21, {a}, {b}, {c})\n\
         for i in range({ROWS}):\n\
         \x20   con.execute('insert into t(name, sid) values(?, ?)', ('S-1-5-21-{a}-{b}-{c}-%d' % (1000 + i), b))\n\
         shutil.copy(d + '/m.db', d + '/c.db'); shutil.copy(d + '/m.db-wal', d + '/c.db-wal')\n",
        a = OLD.0,
        b = OLD.1,
        c = OLD.2
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .arg(&dir.0)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read(dir.path("c.db")).unwrap(),
        std::fs::read(dir.path("c.db-wal")).unwrap(),
    )
}

#[test]
fn checksums_verify_a_log_sqlite_wrote() {
    let dir = TempDir::new("wal-verify");
    let (_, wal) = sqlite_wal(&dir);
    assert!(has_magic(&wal));
    let header = WalHeader::parse(&wal).unwrap();
    let (frames, header_valid, valid) = valid_frames(&wal, &header);
    assert!(header_valid);
    assert!(frames >= ROWS, "{frames} frames");
    assert_eq!(valid, frames);
    // One flipped page byte ends the log at that frame.
    let mut broken = wal.clone();
    let frame_len = FRAME_HEADER_LEN + header.page_size as usize;
    broken[HEADER_LEN + 3 * frame_len + FRAME_HEADER_LEN + 100] ^= 1;
    assert_eq!(valid_frames(&broken, &header), (frames, true, 3));
}

#[test]
fn rewrite_keeps_every_frame_valid() {
    let dir = TempDir::new("wal-rewrite");
    let (db, wal) = sqlite_wal(&dir);
    let map = mapping();
    let out = rewrite_wal(&wal, &map).unwrap();
    let r = &out.report;
    // Every commit writes the table's page again: each row is in several frames.
    assert!(r.replaced.ascii >= ROWS, "{:?}", r.replaced);
    assert_eq!(r.replaced.binary, r.replaced.ascii);
    assert!(r.frames_changed > 0);
    assert_eq!(out.bytes.len(), wal.len());
    assert!(map.find_all(&out.bytes, true).is_empty());
    let header = WalHeader::parse(&out.bytes).unwrap();
    assert_eq!(
        valid_frames(&out.bytes, &header),
        (r.frames, true, r.valid_frames)
    );
    assert_eq!(r.valid_frames, r.frames);
    // The SQLite library replays the clone's log: every row, with the new SID.
    if std::process::Command::new("sqlite3")
        .arg("-version")
        .output()
        .is_ok()
    {
        std::fs::write(dir.path("n.db"), &db).unwrap();
        std::fs::write(dir.path("n.db-wal"), &out.bytes).unwrap();
        let q = std::process::Command::new("sqlite3")
            .arg(dir.path("n.db"))
            .arg(format!(
                "select count(*) from t where name like 'S-1-5-21-{}-{}-{}-%';",
                NEW.0, NEW.1, NEW.2
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&q.stdout).trim(), ROWS.to_string());
    }
}

#[test]
fn big_endian_words_follow_the_magic() {
    // The header checksum of an all-zero header with the big-endian magic, by hand: the first
    // pair is (magic, version), s0 = magic, s1 = version + magic.
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_BE.to_be_bytes());
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    let (s0, s1) = wal_checksum(&h[..8], true, (0, 0));
    assert_eq!(s0, MAGIC_BE);
    assert_eq!(s1, FORMAT_VERSION.wrapping_add(MAGIC_BE));
    let (l0, _) = wal_checksum(&h[..8], false, (0, 0));
    assert_eq!(l0, u32::from_le_bytes(MAGIC_BE.to_be_bytes()));
}

#[test]
fn unknown_version_and_page_size_are_refused() {
    let dir = TempDir::new("wal-refuse");
    let (_, wal) = sqlite_wal(&dir);
    let mut v = wal.clone();
    v[4..8].copy_from_slice(&3_007_001u32.to_be_bytes());
    assert_eq!(
        rewrite_wal(&v, &mapping()).unwrap_err(),
        WalError::UnknownVersion { found: 3_007_001 }
    );
    let mut p = wal.clone();
    p[8..12].copy_from_slice(&1000u32.to_be_bytes());
    assert_eq!(
        rewrite_wal(&p, &mapping()).unwrap_err(),
        WalError::PageSize { found: 1000 }
    );
    assert_eq!(
        rewrite_wal(&wal[..20], &mapping()).unwrap_err(),
        WalError::Truncated { len: 20 }
    );
}

#[test]
fn frames_after_the_valid_prefix_are_byte_replaced_only() {
    let dir = TempDir::new("wal-prefix");
    let (_, mut wal) = sqlite_wal(&dir);
    let header = WalHeader::parse(&wal).unwrap();
    let frame_len = FRAME_HEADER_LEN + header.page_size as usize;
    // Frame 5's salt no longer matches: SQLite replays frames 0..5 only.
    wal[HEADER_LEN + 5 * frame_len + 8] ^= 0x40;
    let out = rewrite_wal(&wal, &mapping()).unwrap();
    assert_eq!(out.report.valid_frames, 5);
    assert_eq!(
        valid_frames(&out.bytes, &header),
        (out.report.frames, true, 5)
    );
    assert!(mapping().find_all(&out.bytes, true).is_empty());
    // Checksums of the ignored frames are kept as in the master.
    let at = HEADER_LEN + 7 * frame_len + 16;
    assert_eq!(out.bytes[at..at + 8], wal[at..at + 8]);
}

/// Rows SQLite replays from `db` with `wal` beside it (`None` without the `sqlite3` CLI).
fn replayed_rows(
    dir: &TempDir,
    tag: &str,
    db: &[u8],
    wal: &[u8],
    sid: (u32, u32, u32),
) -> Option<String> {
    std::process::Command::new("sqlite3")
        .arg("-version")
        .output()
        .ok()?;
    let path = dir.path(&format!("{tag}.db"));
    std::fs::write(&path, db).unwrap();
    std::fs::write(dir.path(&format!("{tag}.db-wal")), wal).unwrap();
    let q = std::process::Command::new("sqlite3")
        .arg(&path)
        .arg(format!(
            "select count(*) from t where name like 'S-1-5-21-{}-{}-{}-%';",
            sid.0, sid.1, sid.2
        ))
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&q.stdout).trim().to_string())
}

#[test]
fn big_endian_checksums_replay_in_sqlite() {
    // SQLite reads either magic on any machine: a log resealed here with the big-endian magic
    // and big-endian checksums is replayed by the sqlite3 CLI only if they are right.
    let dir = TempDir::new("wal-be");
    let (db, mut wal) = sqlite_wal(&dir);
    let header = WalHeader::parse(&wal).unwrap();
    assert!(
        !header.big_endian,
        "python's sqlite3 on this machine writes little-endian"
    );
    wal[0..4].copy_from_slice(&MAGIC_BE.to_be_bytes());
    let frame_len = FRAME_HEADER_LEN + header.page_size as usize;
    let mut sums = wal_checksum(&wal[..24], true, (0, 0));
    put_be32(&mut wal, 24, sums.0);
    put_be32(&mut wal, 28, sums.1);
    let frames = (wal.len() - HEADER_LEN) / frame_len;
    for index in 0..frames {
        let frame = &mut wal[HEADER_LEN + index * frame_len..][..frame_len];
        sums = wal_checksum(&frame[..8], true, sums);
        sums = wal_checksum(&frame[FRAME_HEADER_LEN..], true, sums);
        put_be32(frame, 16, sums.0);
        put_be32(frame, 20, sums.1);
    }
    let be = WalHeader::parse(&wal).unwrap();
    assert!(be.big_endian);
    assert_eq!(valid_frames(&wal, &be), (frames, true, frames));
    let Some(master_rows) = replayed_rows(&dir, "be-master", &db, &wal, OLD) else {
        return;
    };
    // The oracle is not blind: the same log with one frame's checksum off ends there.
    let mut off = wal.clone();
    off[HEADER_LEN + 2 * frame_len + 16] ^= 1;
    assert_ne!(
        replayed_rows(&dir, "be-off", &db, &off, OLD).unwrap(),
        ROWS.to_string()
    );
    assert_eq!(master_rows, ROWS.to_string());
    let out = rewrite_wal(&wal, &mapping()).unwrap();
    assert_eq!(out.report.valid_frames, frames);
    assert_eq!(
        replayed_rows(&dir, "be-clone", &db, &out.bytes, NEW).unwrap(),
        ROWS.to_string()
    );
}
