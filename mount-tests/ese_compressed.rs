//! ESE values stored compressed (issue 11): the real `SRUDB.dat` of `../shared/realdata/ese-srum`
//! with one `SruDbIdMapTable` IdBlob rewritten by `scripts/testmaster/ese_compressed.py` into an
//! XPRESS-compressed value that holds the SID's text (no SID form in its stored bytes), into one
//! that holds no SID, or into one marked XPRESS9. Oracles that the databases are what we claim:
//! `esedbexport -v` (libesedb: no checksum mismatch, the table exported) and python
//! `dissect.esedb` (the record's value decompressed), neither sharing code with sidfs; sidfs's own
//! decompressor is checked against dissect.esedb's value.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::stores::{
    check_clone_db, esedbexport, hex, inspect, refused_mount, tools_present, windows_master_with,
    SRUDB_PATH, SRUM_SID,
};

/// The real SRUDB.dat made into `variant` (sid, plain, unknown) for machine SID `sid`.
fn variant(s: &Scratch, name: &str, sid: &str) -> Vec<u8> {
    let (src, dst) = (
        s.path("real-SRUDB.dat"),
        s.path(&format!("{name}-SRUDB.dat")),
    );
    std::fs::write(&src, real_srudb()).unwrap();
    ok(Command::new("/usr/bin/python3")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"))
        .args(["-m", "testmaster.ese_compressed", name, sid])
        .arg(&src)
        .arg(&dst));
    read_all(&dst)
}

/// The interpreter that has dissect.esedb (scripts/setup-deps's venv), if any.
fn dissect_python() -> Option<PathBuf> {
    let p = PathBuf::from("/opt/sidfs-oracles/bin/python3");
    let works = Command::new(&p)
        .args(["-c", "import dissect.esedb"])
        .output()
        .is_ok_and(|o| o.status.success());
    // have_tool's rule: fail when tools are required, skip otherwise.
    (works || have_tool("python-dissect.esedb-in-/opt/sidfs-oracles")).then_some(p)
}

/// dissect.esedb's reading of every SruDbIdMapTable record with a compressed tagged value: one
/// line each, `IdIndex hex-of-the-decompressed-IdBlob`, or `IdIndex error: ...`.
fn dissect_values(python: &Path, db: &Path) -> Vec<String> {
    let script = "import sys\n\
        from dissect.esedb import EseDB\n\
        t = EseDB(open(sys.argv[1], 'rb')).table('SruDbIdMapTable')\n\
        for r in t.records():\n    \
            d = r._data\n    \
            if any(int(d._get_tag_field(i).flags) & 2 for i in range(d._tagged_data_count)):\n        \
                try:\n            \
                    print(r.get('IdIndex'), r.get('IdBlob').hex())\n        \
                except Exception as e:\n            \
                    print(r.get('IdIndex'), 'error:', type(e).__name__)\n";
    ok(Command::new(python).arg("-c").arg(script).arg(db))
        .lines()
        .map(str::to_string)
        .collect()
}

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// esedbexport -v reads `db` with no checksum mismatch and exports SruDbIdMapTable: its rows.
fn id_map_export(s: &Scratch, db: &[u8], tag: &str) -> String {
    let path = s.path(&format!("{tag}.dat"));
    std::fs::write(&path, db).unwrap();
    let (log, tables) = esedbexport(s, &path, tag);
    assert!(!log.contains("mismatch"), "{tag}:\n{log}");
    tables
        .into_iter()
        .find(|(n, _)| n.starts_with("SruDbIdMapTable"))
        .unwrap_or_else(|| panic!("{tag}: no SruDbIdMapTable exported"))
        .1
}

/// The oracles on the `sid` variant for `sid`: esedbexport and dissect.esedb decompress the
/// value to the UTF-16 text `sid-500`, sidfs's decompressor gives the same bytes, and no SID form
/// is in the stored file beyond the real database's own binary SID.
fn check_sid_variant(s: &Scratch, db: &[u8], sid: &str) {
    let text = utf16(&format!("{sid}-500"));
    let rows = id_map_export(s, db, "sid-variant");
    assert!(rows.contains(&hex(&text)), "esedbexport:\n{rows}");
    let (ascii, wide, _) = sid_forms(sid);
    assert_eq!(
        count(db, &ascii) + count(db, &wide),
        0,
        "the text is stored plain"
    );
    let (values, scan) = sidfs::rewrite::ese::values::plain_values(db, 4096).unwrap();
    assert_eq!(scan.structure, None);
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(values[0].1, sidfs::rewrite::ese::values::SCHEME_XPRESS);
    assert_eq!(values[0].2, text);
    if let Some(py) = dissect_python() {
        let path = s.path("sid-variant-dissect.dat");
        std::fs::write(&path, db).unwrap();
        assert_eq!(
            dissect_values(&py, &path),
            vec![format!("7 {}", hex(&values[0].2))]
        );
    }
}

fn export_refusal(master: &Path, s: &Scratch, extra: &[&str]) -> String {
    let out = run(sidfs()
        .arg("export")
        .arg(master)
        .arg(s.path("refused-export.img"))
        .args(["--seed", "5"])
        .args(extra));
    one_line_error(&out)
}

fn assert_refusal(err: &str, what: &str) {
    assert!(err.contains(r"Windows\System32\sru\SRUDB.dat"), "{err}");
    assert!(err.contains(what), "{err}");
    assert!(err.contains("from the master before capturing"), "{err}");
}

/// Prove, on a data disk cloned with `--old-sid`: a SRUDB.dat whose XPRESS-compressed value
/// holds the SID (its stored bytes show none) is refused by mount and export with one line that
/// names the file, the compressed value and the way out; the oracles agree on the value.
#[test]
fn a_compressed_value_holding_the_sid_is_refused_on_a_data_disk() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("esecomp-sid");
    let db = variant(&s, "sid", SRUM_SID);
    check_sid_variant(&s, &db, SRUM_SID);
    let master = data_disk(&s, "data.img", &[(SRUDB_PATH, &db)]);
    let extra = ["--old-sid", SRUM_SID];
    let out = refused_mount(&master, &s.mkdir("mp"), 41, &s.path("state"), &extra);
    assert_refusal(&one_line_error(&out), "XPRESS-compressed value");
    assert!(!s.path("state").join("state.json").exists());
    assert_refusal(
        &export_refusal(&master, &s, &extra),
        "XPRESS-compressed value",
    );
}

/// Prove the same on a Windows master whose machine SID the compressed value holds (the rest of
/// the real database holds another machine's SID): inspect lists the database as refused with
/// the reason and exits 3, mount and export refuse with one line.
#[test]
fn a_compressed_value_holding_the_sid_is_refused_on_a_windows_master() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("esecomp-windows");
    let old = built_master_sid();
    let db = variant(&s, "sid", &old);
    check_sid_variant(&s, &db, &old);
    let (master, _) = windows_master_with(&s, "master.img", &[(SRUDB_PATH, &db)]);
    let (code, report) = inspect(&master);
    assert_eq!(code, 3, "{report}");
    let refusals = report["refusals"].as_array().unwrap();
    assert!(
        refusals
            .iter()
            .any(|r| r["reason"] == "store-not-rewritable"
                && r["message"].as_str().unwrap().contains("SRUDB.dat")
                && r["message"]
                    .as_str()
                    .unwrap()
                    .contains("XPRESS-compressed value")),
        "{refusals:?}"
    );
    let stores = report["windows"]["stores"].as_array().unwrap();
    let srudb = stores
        .iter()
        .find(|st| st["path"].as_str().unwrap().ends_with("SRUDB.dat"))
        .unwrap_or_else(|| panic!("SRUDB.dat not listed: {stores:?}"));
    // The clone's words are mount's refusal (`RewriteError::StoreNotRewritable`).
    let clone = srudb["clone"].as_str().unwrap();
    assert!(
        clone.starts_with(r"refused: ESE database Windows\System32\sru\SRUDB.dat")
            && clone.contains("the XPRESS-compressed value"),
        "{srudb}"
    );
    let out = refused_mount(&master, &s.mkdir("mp"), 42, &s.path("state"), &[]);
    assert_refusal(&one_line_error(&out), "XPRESS-compressed value");
    assert_refusal(&export_refusal(&master, &s, &[]), "XPRESS-compressed value");
}

/// Prove that a SRUDB.dat with an XPRESS-compressed value that holds no SID is cloned as before:
/// on a data disk with `--old-sid`, the clone's copy passes `esedbexport -v` (no mismatch) with
/// every table equal to the master's with the SID replaced, and the compressed value is kept
/// byte for byte (sidfs's and dissect.esedb's decompressions agree on it).
#[test]
fn a_compressed_value_without_the_sid_is_cloned_as_before() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("esecomp-plain");
    let db = variant(&s, "plain", SRUM_SID);
    let (values, _) = sidfs::rewrite::ese::values::plain_values(&db, 4096).unwrap();
    assert_eq!(values.len(), 1, "{values:?}");
    assert!(db.len() > values[0].0);
    // esedbexport shows the same table as the real database's: the value decompresses to the
    // IdBlob it was.
    assert_eq!(
        id_map_export(&s, &db, "plain-variant"),
        id_map_export(&s, &real_srudb(), "real")
    );
    if let Some(py) = dissect_python() {
        let path = s.path("plain-dissect.dat");
        std::fs::write(&path, &db).unwrap();
        let lines = dissect_values(&py, &path);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].ends_with(&format!(" {}", hex(&values[0].2))),
            "{lines:?}"
        );
    }
    let master = data_disk(&s, "data.img", &[(SRUDB_PATH, &db)]);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 43, &s.path("state"), &["--old-sid", SRUM_SID]);
    let new = m.new_sid();
    let [clone_db] = read_volume_files(&s, &m.disk(), (0, DATA_DISK_SIZE), &[SRUDB_PATH])
        .try_into()
        .unwrap();
    m.unmount();
    let (clone_values, _) = sidfs::rewrite::ese::values::plain_values(&clone_db, 4096).unwrap();
    assert_eq!(clone_values, values);
    let (_, _, new_bin) = sid_forms(&new);
    assert_eq!(count(&clone_db, &new_bin), 2);
    check_clone_db(&s, &db, &clone_db, SRUM_SID, &new);
}

/// Prove fail-closed for a compressed value sidfs cannot read (scheme 5, XPRESS9; dissect.esedb
/// cannot read it either): the database is refused with one line by mount and export on a data
/// disk with `--old-sid`, although its stored bytes hold no SID in that value.
#[test]
fn a_compressed_value_in_an_unknown_scheme_is_refused() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("esecomp-unknown");
    let db = variant(&s, "unknown", SRUM_SID);
    id_map_export(&s, &db, "unknown-variant");
    if let Some(py) = dissect_python() {
        let path = s.path("unknown-dissect.dat");
        std::fs::write(&path, &db).unwrap();
        let lines = dissect_values(&py, &path);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].ends_with("error: NotImplementedError"),
            "{lines:?}"
        );
    }
    let master = data_disk(&s, "data.img", &[(SRUDB_PATH, &db)]);
    let extra = ["--old-sid", SRUM_SID];
    let out = refused_mount(&master, &s.mkdir("mp"), 44, &s.path("state"), &extra);
    assert_refusal(&one_line_error(&out), "XPRESS9 compression");
    assert_refusal(&export_refusal(&master, &s, &extra), "XPRESS9 compression");
}
