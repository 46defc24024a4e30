//! Fail closed (docs/SEMANTICS.md invariant 8): a structure that holds the old SID and that sidfs cannot
//! rewrite faithfully makes mount and export refuse with one line naming it, instead of a
//! byte-level replacement that leaves its hashes or lists stale. The damage is placed with an
//! independent tool (ntfsinfo tells where a file's clusters are).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// The partition offset of the first cluster of `path`'s stream `stream` ("" for the unnamed
/// data), as ntfsinfo reports its runlist, and the cluster size.
fn first_cluster(dev: &str, path: &str, stream: &str) -> u64 {
    let info = ok(Command::new("ntfsinfo").args(["-m", dev]));
    let cluster: u64 = info
        .lines()
        .find(|l| l.trim_start().starts_with("Cluster Size:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cluster size in ntfsinfo -m:\n{info}"));
    let out = ok(Command::new("ntfsinfo").args(["-v", "-F", path, dev]));
    let lines: Vec<&str> = out.lines().collect();
    let from = if stream.is_empty() {
        lines
            .iter()
            .position(|l| l.contains("Dumping attribute $DATA"))
            .unwrap_or_else(|| panic!("no $DATA for {path}:\n{out}"))
    } else {
        lines
            .iter()
            .position(|l| l.contains(&format!("'{stream}'")))
            .unwrap_or_else(|| panic!("no stream {stream} in {path}:\n{out}"))
    };
    let run = lines[from..]
        .iter()
        .position(|l| l.contains("Runlist:"))
        .map(|i| lines[from + i + 1])
        .unwrap_or_else(|| panic!("no runlist for {path}:{stream}:\n{out}"));
    let lcn = run.split_whitespace().nth(1).unwrap();
    u64::from_str_radix(lcn.trim_start_matches("0x"), 16).unwrap() * cluster
}

fn refused(master: &Path, s: &Scratch, name: &str) -> String {
    let mp = s.mkdir(&format!("mp-{name}"));
    let out = mount_cmd(master, &mp, 3, &s.path(&format!("st-{name}")), &[]);
    let mount_err = one_line_error(&out);
    let export = run(sidfs()
        .arg("export")
        .arg(master)
        .arg(s.path(&format!("{name}.out")))
        .args(["--seed", "3"]));
    let export_err = one_line_error(&export);
    assert!(
        !s.path(&format!("st-{name}")).join("state.json").exists(),
        "a refused mount left a state behind"
    );
    format!("{mount_err}\n{export_err}")
}

#[test]
fn structures_that_cannot_be_rewritten_faithfully_are_refused() {
    if !have_tool("ntfsinfo") {
        return;
    }
    let s = Scratch::new("failclosed");
    let (pristine, manifest) = build_master(&s, "pristine.img", &[]);
    let (start, size) = windows_partition(&manifest);

    // 1. A backup hive that holds the SID but does not parse (its first hbin is damaged): inspect
    //    already refuses it as unreadable; the stage's own check (hive::check_hive) is the
    //    second line for what inspect reads but the rewrite cannot follow.
    let master = s.path("badhive.img");
    std::fs::copy(&pristine, &master).unwrap();
    let at = {
        let dev = LoopDev::new(&master, start, size);
        first_cluster(&dev.0, "/Windows/System32/config/RegBack/SAM", "")
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&master)
        .unwrap();
    f.write_all_at(b"XXXX", start + at + 0x1000).unwrap();
    drop(f);
    let err = refused(&master, &s, "badhive");
    assert!(err.contains("RegBack"), "{err}");

    // 2. `$Secure` whose first descriptor's hash is wrong in the master: rewriting its SIDs
    //    byte for byte would keep hashes that do not match; refuse instead.
    let master = s.path("badsecure.img");
    std::fs::copy(&pristine, &master).unwrap();
    let at = {
        let dev = LoopDev::new(&master, start, size);
        first_cluster(&dev.0, "/$Secure", "$SDS")
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&master)
        .unwrap();
    let mut hash = [0u8; 4];
    f.read_exact_at(&mut hash, start + at).unwrap();
    hash[0] ^= 0xff;
    f.write_all_at(&hash, start + at).unwrap();
    drop(f);
    let err = refused(&master, &s, "badsecure");
    assert!(err.contains("$Secure") && err.contains("chkdsk"), "{err}");

    // The pristine master still mounts: the refusals come from the damage.
    let mp = s.mkdir("mp-ok");
    Mounted::new(&pristine, &mp, 3, &s.path("st-ok"), &[]).unmount();
}
