//! Event logs through a real mount: the test master's `Security.evtx` (scripts/testmaster/evtx.py),
//! read from the clone's NTFS volume with ntfs-3g, checked by python-evtx (scripts/evtx-oracle).

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// `scripts/evtx-oracle` on one file: its JSON description.
fn oracle(path: &Path) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/evtx-oracle");
    let out = ok(Command::new("/usr/bin/python3").arg(script).arg(path));
    serde_json::from_str(out.trim()).unwrap()
}

fn have_python_evtx() -> bool {
    let found = Command::new("/usr/bin/python3")
        .args(["-c", "import Evtx.Evtx"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        // have_tool's rule: fail when tools are required, skip otherwise.
        have_tool("python-evtx-for-usr-bin-python3");
    }
    found
}

fn records(d: &serde_json::Value) -> Vec<String> {
    d["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// Prove that the clone's event log, read through ntfs-3g from a mounted clone, passes
/// python-evtx's checks (file header, and both CRCs of every chunk), that its records are the
/// master's with the SID text replaced (SidType values and strings alike) and show the new SID and
/// never the old, that the chunk without the machine SID is byte-identical, and that the master's
/// log is what the manifest says.
#[test]
fn clone_event_log_verifies_and_shows_only_the_new_sid() {
    for tool in ["ntfs-3g", "losetup"] {
        if !have_tool(tool) {
            return;
        }
    }
    if !have_python_evtx() {
        return;
    }
    let s = Scratch::new("evtx");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let before = sha256(&master);
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let log = &manifest["event_log"];
    let path = log["path"].as_str().unwrap();
    let m = Mounted::new(&master, &s.mkdir("mp"), 7, &s.path("state"), &[]);
    let new = m.new_sid();

    let (start, size) = windows_partition(&manifest);
    let clone_dev = LoopDev::new(&m.disk(), start, size);
    let master_dev = LoopDev::new(&master, start, size);
    let cm = NtfsMount::new(&clone_dev.0, &s.path("clone-ntfs"));
    let mm = NtfsMount::new(&master_dev.0, &s.path("master-ntfs"));
    let clone_log = read_all(&cm.0.join(path));
    let master_log = read_all(&mm.0.join(path));
    drop(cm);
    drop(mm);
    drop(clone_dev);
    drop(master_dev);
    m.unmount();
    assert_eq!(sha256(&master), before, "the master must never change");
    assert_eq!(master_log.len() as u64, log["size"].as_u64().unwrap());
    assert_eq!(clone_log.len(), master_log.len());

    let (cp, mp) = (s.path("clone.evtx"), s.path("master.evtx"));
    std::fs::write(&cp, &clone_log).unwrap();
    std::fs::write(&mp, &master_log).unwrap();
    let (cd, md) = (oracle(&cp), oracle(&mp));
    for (name, d) in [("master", &md), ("clone", &cd)] {
        assert_eq!(d["file_header_ok"], true, "{name}: {d}");
        let chunks = d["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), log["chunks"].as_array().unwrap().len());
        for (c, want) in chunks.iter().zip(log["chunks"].as_array().unwrap()) {
            assert_eq!(c["magic_ok"], want["signature"], "{name}: {d}");
            if want["signature"] == true {
                assert_eq!(c["header_ok"], true, "{name} chunk header CRC: {d}");
                assert_eq!(c["data_ok"], true, "{name} chunk records CRC: {d}");
            }
        }
    }

    let (master_xml, clone_xml) = (records(&md), records(&cd));
    assert_eq!(master_xml.len() as u64, log["records"].as_u64().unwrap());
    assert_eq!(clone_xml.len(), master_xml.len());
    assert!(
        master_xml[0].contains(&format!("UserID=\"{old}-1001\"")),
        "the master's first record names the machine account: {}",
        master_xml[0]
    );
    for (m, c) in master_xml.iter().zip(&clone_xml) {
        assert_eq!(*c, m.replace(&old, &new));
        assert!(!c.contains(&old), "old SID in the clone: {c}");
    }
    assert!(clone_xml[0].contains(&format!("UserID=\"{new}-1001\"")));
    let domain = manifest["domain"]["sid"].as_str().unwrap();
    assert!(clone_xml[2].contains(domain), "the domain's SID stays");

    // Raw bytes: no old SID in any form, and chunks without the machine SID are untouched.
    let (oa, ou, ob) = sid_forms(&old);
    assert_eq!(
        count(&clone_log, &oa) + count(&clone_log, &ou) + count(&clone_log, &ob),
        0
    );
    for c in log["chunks"].as_array().unwrap() {
        let at = c["offset"].as_u64().unwrap() as usize;
        let range = at..at + 0x1_0000;
        if c["machine_sid"] == false {
            assert!(
                clone_log[range.clone()] == master_log[range],
                "chunk at {at:#x} has no machine SID but changed"
            );
        } else {
            assert!(clone_log[range.clone()] != master_log[range]);
        }
    }
}
