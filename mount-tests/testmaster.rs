//! The test-master package (scripts/testmaster, one entry point `python3 -m testmaster`) through
//! the scripts that call it: each layout's master passes the independent checker, the checker
//! fails a master that is not what its manifest says, and the entry point refuses an unknown
//! command in one line.

use std::os::unix::fs::FileExt;
use std::process::Command;

use crate::common::{build_master, have_tool, one_line_error, read_all, run, Scratch};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");

fn checker() -> Command {
    Command::new(format!("{SCRIPTS}/check-test-master"))
}

fn tools_present() -> bool {
    [
        "sfdisk", "mkntfs", "ntfs-3g", "mkfs.fat", "mcopy", "hivexget", "hivexsh", "getfattr",
        "ntfsinfo",
    ]
    .iter()
    .all(|t| have_tool(t))
}

/// Prove that what build-test-master writes is what its manifest says, by tools that share no
/// code with the builder (sfdisk, ntfs-3g, getfattr, hivex, ntfsinfo, ntfssecaudit): the clean
/// master of each layout passes check-test-master.
#[test]
fn each_layout_passes_the_independent_checker() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("testmaster-check");
    for layout in ["gpt", "mbr"] {
        let (img, _) = build_master(&s, &format!("{layout}.img"), &["--layout", layout]);
        let out = run(checker().arg(&img));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{layout}: check-test-master failed:\n{err}"
        );
        assert!(
            err.contains("check-test-master: OK"),
            "{layout}: no OK verdict:\n{err}"
        );
    }
}

/// The checker is no rubber stamp: one byte changed in a file of the Windows volume (and so in
/// the image) fails it, naming that file and the image hash.
#[test]
fn checker_fails_a_master_that_differs_from_its_manifest() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("testmaster-tamper");
    let (img, _) = build_master(&s, "master.img", &["--layout", "mbr"]);
    let text = b"sidfs demo log\r\nUser ";
    let data = read_all(&img);
    let at = data
        .windows(text.len())
        .position(|w| w == text)
        .expect("sid-ascii.txt in the image");
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(b"S", at as u64).unwrap();
    drop(f);
    let out = run(checker().arg(&img));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "check-test-master:\n{err}");
    assert!(err.contains("FAIL image sha256"), "{err}");
    assert!(
        err.contains("FAIL content Windows/Logs/SidfsDemo/sid-ascii.txt"),
        "{err}"
    );
}

/// `python3 -m testmaster` with an unknown command: one line saying which commands exist,
/// exit status 1.
#[test]
fn entry_point_refuses_an_unknown_command() {
    let out = run(Command::new("/usr/bin/python3")
        .args(["-P", "-m", "testmaster", "build-everything"])
        .env("PYTHONPATH", SCRIPTS));
    let err = one_line_error(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown command 'build-everything'"), "{err}");
    for command in [
        "build-test-master",
        "check-test-master",
        "build-boot-master",
    ] {
        assert!(err.contains(command), "{err}");
    }
}
