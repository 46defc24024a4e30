//! ESE transaction logs (issue 11): a `*.log` beside an ESE database that holds the machine SID
//! would get a byte replacement under its segment checksums; `sidfs mount` refuses it instead.

use crate::common::*;

/// The machine SID of the real SRUDB.dat.
const SID: &str = "S-1-5-21-1806060109-1839359715-529511253";

/// Prove that a data disk with the real SRUDB.dat and an `SRU.log` beside it that holds the
/// machine SID is refused by `sidfs mount --old-sid` with one line naming the log and saying to
/// delete the logs of the cleanly shut-down database; and that a log without the SID does not
/// stop the mount.
#[test]
fn an_ese_log_with_the_machine_sid_is_refused() {
    if !have_tool("ntfs-3g") || !have_tool("mkntfs") || !have_tool("gunzip") {
        return;
    }
    let s = Scratch::new("ese-logs");
    let db = real_srudb();
    let (_, _, binary) = sid_forms(SID);
    let mut log = vec![0x33u8; 128 << 10];
    log[0x5000..0x5000 + binary.len()].copy_from_slice(&binary);
    let master = data_disk(
        &s,
        "data.img",
        &[
            ("Windows/System32/sru/SRUDB.dat", &db),
            ("Windows/System32/sru/SRU.log", &log),
        ],
    );
    let mp = s.mkdir("mp");
    let out = mount_cmd(&master, &mp, 71, &s.path("state"), &["--old-sid", SID]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line_error(&out);
    assert!(line.contains(r"sru\SRU.log"), "{line}");
    assert!(line.contains("segment checksums"), "{line}");
    assert!(line.contains("*.jrs"), "{line}");
    assert!(!mp.join("disk.img").exists());

    let clean = vec![0x33u8; 128 << 10];
    let master = data_disk(
        &s,
        "clean.img",
        &[
            ("Windows/System32/sru/SRUDB.dat", &db),
            ("Windows/System32/sru/SRU.log", &clean),
        ],
    );
    let m = Mounted::new(
        &master,
        &mp,
        72,
        &s.path("state-clean"),
        &["--old-sid", SID],
    );
    assert!(m.disk().exists());
    m.unmount();
}
