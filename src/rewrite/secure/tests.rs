//! Tests of the `$Secure` rewrite against a real Windows 10 volume and volumes built here with
//! mkntfs + ntfs-3g, with ntfs-3g's own `ntfssecaudit` and `getfattr system.ntfs_acl` as
//! independent oracles. Each test says what it proves.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::index::{refix, unfix};
use super::sds::{rewrite_descriptor, sd_hash, SDS_BLOCK};
use super::*;
use crate::image::{ImageFile, NtfsVolume, PartitionTable};
use crate::rewrite::mapping::Form;
use crate::sid::MachineSid;
use crate::testutil::*;

/// The real volume's machine SID and a same-shape new one.
fn real_mapping() -> SidMapping {
    SidMapping::new(
        MachineSid::new(2341207468, 2645333676, 3461800803),
        MachineSid::new(2987654321, 2123456789, 3012345678),
    )
    .unwrap()
}

/// The test "machine SID" of built volumes and a same-shape new one.
fn test_mapping() -> SidMapping {
    SidMapping::new(
        MachineSid::new(1111111111, 2222222222, 3333333333),
        MachineSid::new(1234567890, 2345678901, 3456789012),
    )
    .unwrap()
}

fn tools_missing() -> Option<String> {
    for tool in [
        "mkntfs",
        "ntfs-3g",
        "fusermount3",
        "ntfssecaudit",
        "getfattr",
        "setfattr",
    ] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!("{tool} not installed"));
        }
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse absent".into());
    }
    None
}

fn open_volume(path: &Path) -> (ImageFile, NtfsVolume) {
    let image = ImageFile::open(path).unwrap();
    let table = PartitionTable::read(&image).unwrap();
    let volume = NtfsVolume::open(&image, &table.partitions[0]).unwrap();
    (image, volume)
}

fn read_parts(path: &Path) -> (SecureParts, SecureLayout) {
    let (image, volume) = open_volume(path);
    SecureParts::read(&image, &volume).unwrap()
}

fn all_parts(p: &SecureParts) -> [(&'static str, &[u8]); 5] {
    [
        ("sds", &p.sds),
        ("sii_root", &p.sii_root),
        ("sii_alloc", &p.sii_alloc),
        ("sdh_root", &p.sdh_root),
        ("sdh_alloc", &p.sdh_alloc),
    ]
}

/// `ntfssecaudit -a`: success and "No errors were found", else the output.
fn audit(image: &Path) -> Result<String, String> {
    let out = Command::new("ntfssecaudit")
        .args(["-a", image.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains("No errors were found") {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Every regular file and directory under `root` (relative paths), sorted.
fn walk_tree(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::new()];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let child = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                stack.push(child.clone());
            }
            out.push(child);
        }
    }
    out.sort();
    out
}

fn ntfs_acl(path: &Path) -> Vec<u8> {
    run(
        "getfattr",
        &[
            "-h",
            "--only-values",
            "-n",
            "system.ntfs_acl",
            path.to_str().unwrap(),
        ],
    )
}

/// What the end-to-end check saw.
struct CloneCheck {
    report: SecureReport,
    files: usize,
    /// Files whose master descriptor named the old SID.
    files_with_old_sid: usize,
    audit_master: String,
    audit_clone: String,
}

/// Clones the bare NTFS volume at `volume` (copied into `dir`): reads `$Secure`, rewrites it,
/// writes it into a copy, and checks the copy with our verifier, with `ntfssecaudit -a`, and
/// through an ntfs-3g mount: every file's descriptor equals the master's with the SID replaced.
/// Also checks that the copy differs from the master only inside `$Secure`'s parts.
fn clone_and_check(volume: &Path, map: &SidMapping, dir: &TempDir) -> CloneCheck {
    let master = dir.path("master.img");
    let clone = dir.path("clone.img");
    std::fs::copy(volume, &master).unwrap();
    std::fs::copy(volume, &clone).unwrap();
    let (parts, layout) = read_parts(&master);
    verify_secure(&parts).unwrap();
    let rewrite = rewrite_secure(&parts, map).unwrap();
    for ((name, a), (_, b)) in all_parts(&parts).iter().zip(all_parts(&rewrite.parts)) {
        assert_eq!(a.len(), b.len(), "{name} keeps its length");
    }
    let out = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&clone)
        .unwrap();
    apply_to_image(&out, &layout, &rewrite.parts).unwrap();
    drop(out);

    // Our own checks on what the image now holds.
    let (reread, relayout) = read_parts(&clone);
    assert_eq!(relayout, layout);
    assert!(reread == rewrite.parts, "the image holds the rewrite");
    let summary = verify_secure(&reread).unwrap();
    assert_eq!(summary.descriptors, rewrite.report.descriptors);
    for (name, bytes) in all_parts(&reread) {
        assert_eq!(
            map.find_all(bytes, true),
            vec![],
            "old SID left in the clone's {name}"
        );
    }
    // Only $Secure's bytes changed.
    let before = std::fs::read(&master).unwrap();
    let after = std::fs::read(&clone).unwrap();
    let mut allowed: Vec<(u64, u64)> = [&layout.sds, &layout.sii_alloc, &layout.sdh_alloc]
        .iter()
        .flat_map(|e| e.iter())
        .map(|e| (e.image_offset.unwrap().0, e.len))
        .collect();
    for v in [&layout.sii_root, &layout.sdh_root] {
        allowed.push((v.record_offset.0, v.record_size as u64));
    }
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        if a != b {
            let i = i as u64;
            assert!(
                allowed.iter().any(|&(s, l)| i >= s && i < s + l),
                "byte {i:#x} changed outside $Secure"
            );
        }
    }

    // Independent oracle 1: ntfs-3g's auditor, on the master and on the clone.
    let audit_master = audit(&master).expect("the master audits clean");
    let audit_clone = audit(&clone).unwrap_or_else(|e| panic!("clone audit failed:\n{e}"));

    // Independent oracle 2: descriptors as ntfs-3g reads them.
    let m1 = NtfsMount::new(&master, &dir.path("mnt-master"), true);
    let m2 = NtfsMount::new(&clone, &dir.path("mnt-clone"), true);
    let files = walk_tree(&m1.0);
    assert_eq!(files, walk_tree(&m2.0));
    let old = map.old().binary_pattern();
    let mut files_with_old_sid = 0;
    for rel in &files {
        let want_master = ntfs_acl(&m1.0.join(rel));
        let got = ntfs_acl(&m2.0.join(rel));
        if want_master.windows(12).any(|w| w == old) {
            files_with_old_sid += 1;
        }
        let mut want = want_master.clone();
        map.replace_all(&mut want);
        assert_eq!(got, want, "descriptor of {rel:?}");
    }
    drop(m2);
    drop(m1);
    CloneCheck {
        report: rewrite.report,
        files: files.len(),
        files_with_old_sid,
        audit_master,
        audit_clone,
    }
}

/// Real Windows 10 volume: our reader finds `$Secure` with 10 descriptors, every stored hash
/// equals our hash function's (so it is Windows' hash), the 20 binary SID occurrences of the
/// README are all in `$SDS`, and both indexes name the 10 ids.
#[test]
fn real_volume_reads_and_verifies() {
    let (parts, layout) = read_parts(&realdata("ntfs-win10-volume/file_4k.bin"));
    let summary = verify_secure(&parts).unwrap();
    assert_eq!(
        (
            summary.descriptors,
            summary.sii_entries,
            summary.sdh_entries
        ),
        (10, 10, 10)
    );
    let binary = real_mapping()
        .find_all(&parts.sds, true)
        .iter()
        .filter(|o| o.form == Form::Binary)
        .count();
    assert_eq!(binary, 20);
    assert!(!layout.sii_alloc.is_empty() && !layout.sdh_alloc.is_empty());
    assert_eq!(parts.sii_alloc.len(), 4096);
}

/// Real Windows 10 volume, end to end: the clone's `$Secure` passes `ntfssecaudit -a` like the
/// master's, every descriptor read through ntfs-3g (incl. the SID-named recycle-bin folder's)
/// equals the master's with the SID replaced, and the SID is found by parsing (10 SIDs, 20
/// occurrences counting the mirrors), not by the safety net.
#[test]
fn real_volume_clone_audits_clean() {
    if let Some(why) = tools_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = TempDir::new("real");
    let map = real_mapping();
    let check = clone_and_check(&realdata("ntfs-win10-volume/file_4k.bin"), &map, &dir);
    let r = &check.report;
    assert_eq!(r.descriptors, 10);
    assert_eq!(r.sids_replaced, 10);
    assert!(r.unexplained.is_empty(), "{:?}", r.unexplained);
    assert!(r.descriptors_changed >= 1);
    assert_eq!(r.sii_entries_changed, r.descriptors_changed);
    assert!(check.files_with_old_sid >= 1, "{} files", check.files);
    assert!(check.audit_master.contains("10 valid entries in $SDH"));
    assert!(check.audit_clone.contains("10 valid entries in $SDH"));
    assert!(check.audit_clone.contains("0 errors in $SDH"));
    assert!(check.audit_clone.contains("0 errors in $SII"));
}

/// The real 32 MiB Windows 10 disk (NTFS at sector 128, 2 KiB clusters, so the VCN unit differs
/// from the 4 KiB index block): the extracted volume clones and audits clean.
#[test]
fn real_disk_volume_clone_audits_clean() {
    if let Some(why) = tools_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = TempDir::new("real-disk");
    let disk = run(
        "gunzip",
        &[
            "-c",
            realdata("ntfs-win10-volume/ntfs_index.raw.gz")
                .to_str()
                .unwrap(),
        ],
    );
    let volume = dir.path("volume.img");
    std::fs::write(&volume, &disk[128 * 512..]).unwrap();
    drop(disk);
    let check = clone_and_check(&volume, &real_mapping(), &dir);
    assert_eq!(check.report.descriptors, 14);
    assert!(check.report.unexplained.is_empty());
    assert!(check.report.sids_replaced > 0);
    assert!(check.files_with_old_sid >= 1);
}

// ---- synthetic descriptors ----

fn sid(authority: u8, subs: &[u32]) -> Vec<u8> {
    let mut b = vec![1, subs.len() as u8, 0, 0, 0, 0, 0, authority];
    for s in subs {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

fn machine(m: &MachineSid, rid: Option<u32>) -> Vec<u8> {
    let [a, b, c] = m.triple();
    match rid {
        Some(r) => sid(5, &[21, a, b, c, r]),
        None => sid(5, &[21, a, b, c]),
    }
}

fn ace(ty: u8, mask: u32, sid: &[u8], extra: &[u8]) -> Vec<u8> {
    let size = 8 + sid.len() + extra.len();
    let mut b = vec![ty, 0];
    b.extend_from_slice(&(size as u16).to_le_bytes());
    b.extend_from_slice(&mask.to_le_bytes());
    b.extend_from_slice(sid);
    b.extend_from_slice(extra);
    b
}

/// An ACCESS_ALLOWED_OBJECT ACE with an object-type GUID.
fn object_ace(mask: u32, guid: [u8; 16], sid: &[u8]) -> Vec<u8> {
    let size = 12 + 16 + sid.len();
    let mut b = vec![0x05, 0];
    b.extend_from_slice(&(size as u16).to_le_bytes());
    b.extend_from_slice(&mask.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&guid);
    b.extend_from_slice(sid);
    b
}

fn acl(aces: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = aces.concat();
    let mut b = vec![2, 0];
    b.extend_from_slice(&((8 + body.len()) as u16).to_le_bytes());
    b.extend_from_slice(&(aces.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&body);
    b
}

/// A self-relative descriptor: header, owner, group, SACL, DACL.
fn descriptor(owner: &[u8], group: &[u8], sacl: Option<&[u8]>, dacl: &[u8]) -> Vec<u8> {
    let mut control: u16 = 0x8000 | 0x0004;
    if sacl.is_some() {
        control |= 0x0010;
    }
    let mut b = vec![1, 0];
    b.extend_from_slice(&control.to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    let put = |field: usize, bytes: &[u8], b: &mut Vec<u8>| {
        let at = b.len() as u32;
        b[field..field + 4].copy_from_slice(&at.to_le_bytes());
        b.extend_from_slice(bytes);
    };
    put(4, owner, &mut b);
    put(8, group, &mut b);
    if let Some(s) = sacl {
        put(12, s, &mut b);
    }
    put(16, dacl, &mut b);
    b
}

const OTHER_DOMAIN: [u32; 3] = [444444444, 555555555, 666666666];

/// Descriptor number `i` of the built volume: names the old machine SID as owner and group
/// (accounts), in basic, object and audit ACEs, and the SID itself; also a well-known SID and
/// another domain's account; every tenth has a callback ACE whose application data holds the
/// SID as UTF-16 text (which only the safety net sees).
fn built_descriptor(m: &MachineSid, i: u32) -> Vec<u8> {
    let other = sid(
        5,
        &[
            21,
            OTHER_DOMAIN[0],
            OTHER_DOMAIN[1],
            OTHER_DOMAIN[2],
            1000 + i,
        ],
    );
    let mut aces = vec![
        ace(0x00, 0x1F01FF, &machine(m, Some(1000 + i)), &[]),
        ace(0x00, 0x1200A9, &sid(5, &[18]), &[]),
        ace(0x00, 0x1200A9, &other, &[]),
        ace(0x01, 0x000116, &machine(m, None), &[]),
        object_ace(0x10, [i as u8; 16], &machine(m, Some(2000 + i))),
    ];
    if i.is_multiple_of(10) {
        let mut text = m.utf16le();
        text.extend_from_slice(&[b'-', 0, b'5', 0, b'0', 0, b'0', 0]);
        // ACE sizes are multiples of 4.
        text.resize(text.len().next_multiple_of(4), 0);
        aces.push(ace(0x09, 0x1F01FF, &sid(1, &[0]), &text));
    }
    let sacl = acl(&[ace(0x02, 0x40000, &machine(m, Some(3000 + i)), &[])]);
    descriptor(
        &machine(m, Some(500 + i)),
        &machine(m, Some(513)),
        Some(&sacl),
        &acl(&aces),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The descriptor parse changes exactly the SIDs of the machine domain (owner, group, basic,
/// object and audit ACEs, the machine SID itself) and nothing else: the other domain's SID,
/// the well-known SID and the callback data stay as they are.
#[test]
fn descriptor_parse_replaces_only_machine_domain_sids() {
    let map = test_mapping();
    let (old, new) = (map.old(), map.new_sid());
    let mut sd = built_descriptor(&old, 10);
    let before = sd.clone();
    let outcome =
        rewrite_descriptor(&mut sd, 0, &old.binary_pattern(), &new.binary_pattern()).unwrap();
    assert_eq!(outcome.replaced, 6);
    assert_eq!(outcome.unparsed_aces, 0);
    let mut expected = built_descriptor(&new, 10);
    // The callback's UTF-16 text is not a SID: the parse leaves it.
    let text = new.utf16le();
    let at = expected
        .windows(text.len())
        .position(|w| w == text)
        .unwrap();
    expected[at..at + text.len()].copy_from_slice(&old.utf16le());
    assert_eq!(sd, expected);
    assert_ne!(sd, before);
    assert_ne!(sd_hash(&sd), sd_hash(&before));
}

/// A volume built with mkntfs + ntfs-3g where 320 files carry distinct descriptors naming the
/// test machine SID, so that `$SII` and `$SDH` spill into several INDX blocks under an index
/// node root: the clone audits clean with ntfssecaudit, every descriptor read through ntfs-3g
/// equals the master's with the SID replaced, the `$SDH` order changed (slots moved), and the
/// callback data's text SIDs were caught by the safety net (both copies).
#[test]
fn built_volume_with_many_descriptors_clones_clean() {
    if let Some(why) = tools_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    const FILES: u32 = 320;
    let map = test_mapping();
    let dir = TempDir::new("built");
    let volume = dir.path("built.img");
    File::create(&volume).unwrap().set_len(64 << 20).unwrap();
    run("mkntfs", &["-F", "-Q", "-q", volume.to_str().unwrap()]);
    {
        let mount = NtfsMount::new(&volume, &dir.path("mnt-build"), false);
        for i in 0..FILES {
            let path = mount.0.join(format!("f{i:04}"));
            std::fs::write(&path, format!("file {i}")).unwrap();
            let value = format!("0x{}", hex(&built_descriptor(&map.old(), i)));
            run(
                "setfattr",
                &[
                    "-n",
                    "system.ntfs_acl",
                    "-v",
                    &value,
                    path.to_str().unwrap(),
                ],
            );
        }
    }
    let (parts, _) = read_parts(&volume);
    assert!(
        parts.sii_alloc.len() >= 2 * 4096 && parts.sdh_alloc.len() >= 2 * 4096,
        "the indexes spill into several blocks"
    );
    let check = clone_and_check(&volume, &map, &dir);
    let r = &check.report;
    assert!(r.descriptors > FILES as usize, "{r:?}");
    assert_eq!(r.descriptors_changed, FILES as usize);
    assert_eq!(r.sii_entries_changed, FILES as usize);
    assert_eq!(r.sids_replaced, 6 * FILES as usize);
    assert_eq!(r.unexplained.len(), 2 * (FILES as usize).div_ceil(10));
    assert!(r
        .unexplained
        .iter()
        .all(|o| o.form == Form::Utf16 && o.len == map.old().utf16le().len()));
    assert!(r.sdh_slots_changed > FILES as usize / 2, "{r:?}");
    assert_eq!(check.files_with_old_sid, FILES as usize);
    assert!(check.audit_clone.contains("0 errors in $SDH"));
    assert!(check.audit_master.contains("0 errors in $SDH"));
}

// ---- corrupt input ----

fn real_parts() -> SecureParts {
    read_parts(&realdata("ntfs-win10-volume/file_4k.bin")).0
}

fn expect_err(parts: &SecureParts, needle: &str) {
    match rewrite_secure(parts, &real_mapping()) {
        Ok(_) => panic!("accepted corrupt parts (expected {needle:?})"),
        Err(e) => assert!(e.to_string().contains(needle), "{needle:?} not in: {e}"),
    }
}

/// Truncated `$SDS`, bad entry lengths and offsets, a wrong hash, a torn INDX block and a
/// subnode VCN that points back to its own block are errors naming what is wrong, not panics
/// or hangs.
#[test]
fn corrupt_parts_are_errors() {
    let good = real_parts();
    rewrite_secure(&good, &real_mapping()).unwrap();

    let mut p = good.clone();
    p.sds.truncate(p.sds.len() - 100);
    expect_err(&p, "entry mirror");

    let mut p = good.clone();
    p.sds[16..20].copy_from_slice(&0x5_0000u32.to_le_bytes());
    expect_err(&p, "entry length");

    let mut p = good.clone();
    p.sds[16..20].copy_from_slice(&21u32.to_le_bytes());
    expect_err(&p, "entry length");

    let mut p = good.clone();
    p.sds[8] ^= 0x10;
    expect_err(&p, "entry offset field");

    // A descriptor byte changed in both copies: the stored hash no longer matches.
    let mut p = good.clone();
    p.sds[0x30] ^= 1;
    p.sds[SDS_BLOCK as usize + 0x30] ^= 1;
    expect_err(&p, "descriptor hash");

    let mut p = good.clone();
    p.sii_alloc[510] ^= 0xFF;
    expect_err(&p, "torn write otherwise");

    let mut p = good.clone();
    p.sdh_root[4] = 0x10;
    expect_err(&p, "collation rule");

    // The leaf block's END entry turned into a node entry pointing at the block itself.
    let mut p = good.clone();
    make_self_loop(&mut p.sdh_alloc[..4096]);
    expect_err(&p, "a cycle");

    // The root's subnode VCN points past the allocation.
    let mut p = good.clone();
    let len = p.sii_root.len();
    p.sii_root[len - 8..].copy_from_slice(&7u64.to_le_bytes());
    expect_err(&p, "subnode VCN");
}

/// Rewrites the END entry of the INDX block `block` (VCN 0) as END|NODE with subnode VCN 0.
fn make_self_loop(block: &mut [u8]) {
    unfix(block, Part::SdhAllocation, 0).unwrap();
    let h = 0x18;
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let entries = h + u32_at(block, h) as usize;
    let length = u32_at(block, h + 4) as usize;
    let allocated = u32_at(block, h + 8) as usize;
    assert!(length + 8 <= allocated);
    let mut p = entries;
    loop {
        let len = u16::from_le_bytes([block[p + 8], block[p + 9]]) as usize;
        if block[p + 12] & 2 != 0 {
            break;
        }
        p += len;
    }
    block[p + 8..p + 10].copy_from_slice(&0x18u16.to_le_bytes());
    block[p + 12] = 3;
    block[p + 16..p + 24].copy_from_slice(&0u64.to_le_bytes());
    block[h + 4..h + 8].copy_from_slice(&((length + 8) as u32).to_le_bytes());
    refix(block);
}

/// Random damage (deterministic) to every part and truncation at many lengths: the rewrite
/// returns, Ok or Err, and never panics; when it is Ok the result verifies.
#[test]
fn damaged_parts_never_panic() {
    let good = real_parts();
    let map = real_mapping();
    let mut state = 0x2545F491u32;
    let mut next = || {
        state = state.wrapping_mul(1664525).wrapping_add(1013904223);
        state
    };
    for round in 0..600 {
        let mut p = good.clone();
        let which = round % 5;
        let buf = match which {
            0 => &mut p.sds,
            1 => &mut p.sii_root,
            2 => &mut p.sii_alloc,
            3 => &mut p.sdh_root,
            _ => &mut p.sdh_alloc,
        };
        // Damage near the interesting start of the buffer most of the time.
        let span = if which == 0 { 0x600 } else { buf.len() };
        for _ in 0..1 + next() % 4 {
            let at = next() as usize % span.min(buf.len());
            buf[at] = next() as u8;
        }
        if round % 7 == 0 {
            let keep = next() as usize % (buf.len() + 1);
            buf.truncate(keep);
        }
        if let Ok(r) = rewrite_secure(&p, &map) {
            verify_secure(&r.parts).unwrap();
        }
    }
}

/// An old-SID occurrence in unused `$SDS` space (not inside any descriptor) is replaced and
/// reported, and the result still verifies.
#[test]
fn slack_occurrence_is_replaced_and_reported() {
    let mut p = real_parts();
    let map = real_mapping();
    let at = 0x1000;
    assert!(p.sds[at..at + 12].iter().all(|&b| b == 0));
    p.sds[at..at + 12].copy_from_slice(&map.old().binary_pattern());
    let r = rewrite_secure(&p, &map).unwrap();
    assert_eq!(r.report.unexplained.len(), 1);
    assert_eq!(r.report.unexplained[0].offset, at);
    assert_eq!(
        &r.parts.sds[at..at + 12],
        &map.new_sid().binary_pattern()[..]
    );
    assert!(map.find_all(&r.parts.sds, true).is_empty());
    verify_secure(&r.parts).unwrap();
}
