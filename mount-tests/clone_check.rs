//! The independent clone checker (`../shared/tools/clone-check`, which shares no code with sidfs)
//! on mounted clones: of the real disk Windows 10 partitioned and formatted (shadow-copy data,
//! old `$LogFile` pages in free clusters), of a real Windows 10 volume inside an MBR disk, and of
//! built masters in both layouts. Each must end in PASS: no old SID anywhere outside `$LogFile`
//! (record copies under fixups and free clusters included), ntfssecaudit clean, tree, security
//! descriptors, contents and hives equal the master's with the SID replaced.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn checker_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/tools/clone-check"
    ))
}

pub(crate) fn tools_present() -> bool {
    [
        "ntfs-3g",
        "ntfssecaudit",
        "getfattr",
        "sfdisk",
        "python3",
        "tar",
        "gunzip",
    ]
    .iter()
    .all(|t| have_tool(t))
}

/// Runs `make_master_json.py` then `check_clone.sh` on a mounted clone; its last line must be
/// PASS. Returns the checker's output.
/// `partition`: the NTFS volume to check, where the disk has more than one.
pub(crate) fn clone_check(
    s: &Scratch,
    master: &Path,
    clone: &Path,
    old_sid: &str,
    new_sid: &str,
    partition: Option<u64>,
) -> String {
    let (text, success) = clone_check_report(s, master, clone, old_sid, new_sid, partition);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert_eq!(
        last.trim(),
        "PASS",
        "clone-check of {} failed:\n{text}",
        master.display()
    );
    assert!(success, "clone-check exit status:\n{text}");
    text
}

/// `make_master_json.py` then `check_clone.sh`: (its output, whether it exited 0).
pub(crate) fn clone_check_report(
    s: &Scratch,
    master: &Path,
    clone: &Path,
    old_sid: &str,
    new_sid: &str,
    partition: Option<u64>,
) -> (String, bool) {
    let json = s.path(&format!(
        "{}.check.json",
        master.file_name().unwrap().to_string_lossy()
    ));
    ok(Command::new("/usr/bin/python3")
        .arg(checker_dir().join("make_master_json.py"))
        .arg(master)
        .arg(old_sid)
        .arg("--out")
        .arg(&json)
        .args(partition.map(|p| format!("--partition={p}"))));
    let out = run(Command::new("bash")
        .arg(checker_dir().join("check_clone.sh"))
        .arg(master)
        .arg(clone)
        .arg(&json)
        .arg(new_sid));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.success())
}

pub(crate) fn mounted_sids(m: &Mounted) -> (String, String) {
    let info = m.clone_info();
    (
        info["old_sid"].as_str().unwrap().to_string(),
        info["new_sid"].as_str().unwrap().to_string(),
    )
}

/// `sidfs verify` of the mounted disk must agree with the checker: clean.
pub(crate) fn verify_clean(m: &Mounted, old: &str) {
    let out = run(sidfs()
        .arg("verify")
        .arg(m.disk())
        .args(["--old-sid", old, "--json"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sidfs verify:\n{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["unexpected"], 0, "{text}");
}

#[test]
fn real_windows_data_disk_passes_the_independent_checker() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("cc-vss");
    // A 5 GiB sparse GPT disk (MSR + NTFS with shadow-copy data) written by Windows 10; 12 of its
    // SID occurrences lie in free clusters, one in an old $LogFile page under a fixup slot.
    let master = real_data_disk(&s);
    let old = REAL_DATA_DISK_SID;
    let before = sha256(&master);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 11, &s.path("state"), &["--old-sid", old]);
    let (o, new) = mounted_sids(&m);
    assert_eq!(o, old);
    clone_check(&s, &master, &m.disk(), old, &new, None);
    verify_clean(&m, old);
    m.unmount();
    assert_eq!(sha256(&master), before, "the master changed");
}

#[test]
fn real_windows_volume_in_a_disk_passes_the_independent_checker() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("cc-index");
    let master = s.path("ntfs_index.raw");
    ok(Command::new("sh").arg("-c").arg(format!(
        "gunzip -c {} > {}",
        realdata("ntfs-win10-volume/ntfs_index.raw.gz").display(),
        master.display()
    )));
    let old = "S-1-5-21-2341207468-2645333676-3461800803";
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 12, &s.path("state"), &["--old-sid", old]);
    let (_, new) = mounted_sids(&m);
    clone_check(&s, &master, &m.disk(), old, &new, None);
    verify_clean(&m, old);
    m.unmount();
}

#[test]
fn built_masters_pass_the_independent_checker() {
    if !tools_present() || !have_tool("hivexregedit") {
        return;
    }
    let s = Scratch::new("cc-built");
    for layout in ["gpt", "mbr"] {
        let (master, manifest) = build_master(&s, &format!("{layout}.img"), &["--layout", layout]);
        let old = manifest["machine_sid"].as_str().unwrap().to_string();
        let mp = s.mkdir(&format!("mp-{layout}"));
        // The checker compares SIDs only: the other identifiers stay as in the master.
        let m = Mounted::new(
            &master,
            &mp,
            13,
            &s.path(&format!("state-{layout}")),
            &["--keep", "hostname,machine-guid,wsus,msdtc"],
        );
        let (o, new) = mounted_sids(&m);
        assert_eq!(o, old);
        let partition = manifest["windows_partition"].as_u64();
        let report = clone_check(&s, &master, &m.disk(), &old, &new, partition);
        assert!(
            report.contains("TaskCache Hash"),
            "{layout}: the checker did not check the task hash:\n{report}"
        );
        verify_clean(&m, &old);
        m.unmount();
    }
}

#[test]
fn sids_across_fragment_junctions_are_replaced() {
    if !tools_present() || !have_tool("ntfsinfo") {
        return;
    }
    let s = Scratch::new("cc-junction");
    let (built, manifest) = build_master(&s, "built.img", &[]);
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let (start, size) = windows_partition(&manifest);
    let master = s.path("fragmented.img");
    std::fs::copy(&built, &master).unwrap();
    let (_, utf16, triple) = sid_forms(&old);
    // Cluster-sized first parts, so that the junction falls inside the SID.
    let mut bin_first = vec![b'b'; 4096 * 2 - 5];
    bin_first.extend_from_slice(&triple[..5]);
    let mut bin_second = triple[5..].to_vec();
    bin_second.extend(vec![b'B'; 3000]);
    let mut txt_first = vec![b't'; 4096 * 3 - 41];
    txt_first.extend_from_slice(&utf16[..41]);
    let mut txt_second = utf16[41..].to_vec();
    txt_second.extend(b"\0\0 trailing text".iter());
    {
        let dev = LoopDev::writable(&master, start, size);
        let vol = s.path("rw");
        std::fs::create_dir_all(&vol).unwrap();
        ok(Command::new("ntfs-3g").arg(&dev.0).arg(&vol));
        write_fragmented(
            &vol,
            &[
                ("frag-binary.bin", &bin_first, &bin_second),
                ("frag-utf16.txt", &txt_first, &txt_second),
            ],
            0,
            4096,
        );
        ok(Command::new("fusermount3").arg("-u").arg(&vol));
        for f in ["/frag-binary.bin", "/frag-utf16.txt"] {
            assert!(ntfs_run_count(&dev.0, f) >= 2, "{f} is not fragmented");
        }
    }
    // `sidfs verify` reads every file through its extents: on the master it names the SIDs that
    // a byte scan of the disk cannot see.
    let out = run(sidfs()
        .arg("verify")
        .arg(&master)
        .args(["--old-sid", &old, "--json"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("fragment junction") && problems.contains("(2 such"),
        "verify of the master: {problems}"
    );
    let mp = s.mkdir("mp");
    let m = Mounted::new(
        &master,
        &mp,
        21,
        &s.path("state"),
        &["--keep", "hostname,machine-guid,wsus,msdtc"],
    );
    let (_, new) = mounted_sids(&m);
    let (_, new_utf16, new_triple) = sid_forms(&new);
    {
        let dev = LoopDev::new(&m.disk(), start, size);
        let nm = NtfsMount::new(&dev.0, &s.path("ro"));
        let bin = read_all(&nm.0.join("frag-binary.bin"));
        let mut want = bin_first.clone();
        want.extend(&bin_second);
        assert_eq!(count(&want, &triple), 1);
        let want: Vec<u8> = replace(&want, &triple, &new_triple);
        assert!(
            bin == want,
            "frag-binary.bin: the SID across the junction was not replaced"
        );
        let txt = read_all(&nm.0.join("frag-utf16.txt"));
        let mut want = txt_first.clone();
        want.extend(&txt_second);
        let want = replace(&want, &utf16, &new_utf16);
        assert!(
            txt == want,
            "frag-utf16.txt: the SID across the junction was not replaced"
        );
    }
    // The independent checker reads every stream across its junctions, too.
    let partition = manifest["windows_partition"].as_u64();
    clone_check(&s, &master, &m.disk(), &old, &new, partition);
    verify_clean(&m, &old);
    m.unmount();
}

pub(crate) fn replace(hay: &[u8], old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut out = hay.to_vec();
    let mut i = 0;
    while i + old.len() <= out.len() {
        if &out[i..i + old.len()] == old {
            out[i..i + old.len()].copy_from_slice(new);
            i += old.len();
        } else {
            i += 1;
        }
    }
    out
}

/// A security descriptor (self-relative) owned by, and granting full access to, `sid`-`rid`.
fn descriptor(machine: [u32; 3], rid: u32) -> Vec<u8> {
    let sid = |subs: &[u32]| {
        let mut v = vec![1u8, subs.len() as u8, 0, 0, 0, 0, 0, 5];
        for s in subs {
            v.extend(s.to_le_bytes());
        }
        v
    };
    let owner = sid(&[21, machine[0], machine[1], machine[2], rid]);
    let group = sid(&[32, 544]);
    let mut ace = vec![0u8, 0];
    ace.extend(((8 + owner.len()) as u16).to_le_bytes());
    ace.extend(0x001f_01ffu32.to_le_bytes());
    ace.extend(&owner);
    let mut acl = vec![2u8, 0];
    acl.extend(((8 + ace.len()) as u16).to_le_bytes());
    acl.extend(1u16.to_le_bytes());
    acl.extend(0u16.to_le_bytes());
    acl.extend(&ace);
    let (o, g) = (20u32, 20 + owner.len() as u32);
    let d = g + group.len() as u32;
    let mut sd = vec![1u8, 0];
    sd.extend(0x8004u16.to_le_bytes());
    for v in [o, g, 0, d] {
        sd.extend(v.to_le_bytes());
    }
    sd.extend(owner);
    sd.extend(group);
    sd.extend(acl);
    sd
}

fn set_ntfs_acl(path: &Path, sd: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = c"system.ntfs_acl";
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), sd.as_ptr().cast(), sd.len(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `$Secure` spread over extension records by an attribute list, as ntfs-3g (an implementation
/// independent of sidfs) writes it when record 9 overflows: thousands of distinct descriptors
/// grow `$SDS`, `$SII` and `$SDH` into free space fragmented into single clusters.
#[test]
fn secure_with_an_attribute_list_is_rewritten_with_its_hashes() {
    if !tools_present() || !have_tool("mkntfs") || !have_tool("ntfsinfo") {
        return;
    }
    let s = Scratch::new("cc-attrlist");
    let master = s.path("attrlist.img");
    let machine = [1806060109u32, 1839359715, 529511253];
    let old = format!("S-1-5-21-{}-{}-{}", machine[0], machine[1], machine[2]);
    {
        let f = std::fs::File::create(&master).unwrap();
        f.set_len(80 << 20).unwrap();
    }
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&master)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = sfdisk.stdin.take().unwrap();
        stdin
            .write_all(b"label: dos\nstart=2048, type=7\n")
            .unwrap();
    }
    assert!(sfdisk.wait().unwrap().success());
    let (start, size) = (2048 * 512u64, (80 << 20) - 2048 * 512u64);
    {
        let dev = LoopDev::writable(&master, start, size);
        ok(Command::new("mkntfs")
            .args(["-q", "-F", "-f", "-c", "4096"])
            .arg(&dev.0));
        let vol = s.path("rw");
        std::fs::create_dir_all(&vol).unwrap();
        ok(Command::new("ntfs-3g").arg(&dev.0).arg(&vol));
        let small = vol.join("small");
        std::fs::create_dir_all(&small).unwrap();
        for i in 0..3000 {
            std::fs::write(small.join(format!("f{i}")), [b'x'; 4096]).unwrap();
        }
        {
            use std::io::Write;
            let mut blocker = std::fs::File::create(vol.join("blocker")).unwrap();
            for chunk in [1usize << 20, 4096] {
                while blocker.write_all(&vec![b'Z'; chunk]).is_ok() {}
            }
        }
        for i in (0..3000).step_by(2) {
            std::fs::remove_file(small.join(format!("f{i}"))).unwrap();
        }
        let acl = vol.join("acl");
        std::fs::create_dir_all(&acl).unwrap();
        let mut made = 0;
        for i in 0..6000u32 {
            let p = acl.join(format!("a{i}"));
            if std::fs::File::create(&p).is_err()
                || set_ntfs_acl(&p, &descriptor(machine, 1000 + i)).is_err()
            {
                break;
            }
            made += 1;
        }
        assert!(made > 2000, "only {made} descriptors could be set");
        ok(Command::new("fusermount3").arg("-u").arg(&vol));
        // The precondition: record 9 has an attribute list and an index root in another record.
        let info = ok(Command::new("ntfsinfo")
            .args(["-v", "-F", "/$Secure"])
            .arg(&dev.0));
        assert!(
            info.contains("$ATTRIBUTE_LIST"),
            "no attribute list:\n{info}"
        );
        assert!(
            info.lines().any(
                |l| l.contains("Dumping attribute $INDEX_ROOT") && !l.contains("mft record 9 ")
            ),
            "the index roots stayed in record 9:\n{info}"
        );
        let audit = ok(Command::new("ntfssecaudit").arg("-a").arg(&dev.0));
        assert!(audit.contains("No errors were found"), "master:\n{audit}");
    }
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 31, &s.path("state"), &["--old-sid", &old]);
    let (_, new) = mounted_sids(&m);
    {
        let dev = LoopDev::new(&m.disk(), start, size);
        let audit = ok(Command::new("ntfssecaudit").arg("-a").arg(&dev.0));
        assert!(audit.contains("No errors were found"), "clone:\n{audit}");
    }
    clone_check(&s, &master, &m.disk(), &old, &new, None);
    verify_clean(&m, &old);
    m.unmount();
}

/// Prove that a real volume with an `$ATTRIBUTE_LIST` (../shared/realdata/ntfs-attribute-lists,
/// made by the Linux ntfs3 driver: record 27 has 100 hard links whose `$FILE_NAME`s live in
/// extension records) is cloned without damage: the independent `ntfsinfo` shows the list on
/// the master, the clone (cloned as a data disk, whose MFT pass follows the list) equals the
/// master byte for byte since the volume holds no machine SID, `ntfsls` on the clone lists all
/// 100 names, and `sidfs verify` is clean.
#[test]
fn real_attribute_list_volume_clones_unchanged() {
    if !tools_present() || !have_tool("ntfsinfo") || !have_tool("ntfsls") {
        return;
    }
    let s = Scratch::new("cc-real-attrlist");
    let master = s.path("ntfs3_attrlist.raw");
    let out = run(Command::new("gunzip")
        .arg("-c")
        .arg(realdata("ntfs-attribute-lists/ntfs3_attrlist.raw.gz")));
    assert!(out.status.success());
    std::fs::write(&master, &out.stdout).unwrap();
    // The layout really is an attribute list (an independent reader says so).
    let info = run(Command::new("ntfsinfo")
        .args(["-i", "27", "-v"])
        .arg(&master));
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("$ATTRIBUTE_LIST"),
        "record 27 has no attribute list:\n{info}"
    );
    let old = "S-1-5-21-1000000001-1000000002-1000000003";
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 3, &s.path("state"), &["--old-sid", old]);
    assert!(
        std::fs::read(m.disk()).unwrap() == out.stdout,
        "the clone of a volume without the SID differs from the master"
    );
    let ls = ok(Command::new("ntfsls").arg(m.disk()));
    let names = (1..=100)
        .filter(|i| ls.lines().any(|l| l.trim() == format!("{i}.txt")))
        .count();
    assert_eq!(names, 100, "ntfsls on the clone:\n{ls}");
    verify_clean(&m, old);
    m.unmount();
}
