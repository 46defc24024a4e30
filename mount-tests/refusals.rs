//! Refusing what cannot be cloned, and the state as the whole definition of a clone, with the
//! real binary: `mount` and `export` refuse every image `inspect` refuses or cannot read (unless
//! `--keep-sid` or `--old-sid` say what to do), a truncated volume, contradicting options, FIFOs,
//! and an export onto its own master or a too-small device; a block-device master is rewritten
//! like its file; a data-disk clone and a moved master's clone are found again as they were.

use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::*;

const MIB: u64 = 1 << 20;
/// A data disk's machine SID (the builder's masters have another).
const DATA_SID: &str = "S-1-5-21-1111111111-2222222222-333333333";

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

fn sparse_copy(from: &Path, to: &Path) {
    ok(Command::new("cp").arg("--sparse=always").arg(from).arg(to));
}

fn export_cmd(master: &Path, out: &Path, args: &[&str]) -> Output {
    run(sidfs().arg("export").arg(master).arg(out).args(args))
}

/// The damaged images of item 1, each made from a copy of `master`: (what, path).
fn unreadable_images(s: &Scratch, master: &Path, manifest: &Value) -> Vec<(String, PathBuf)> {
    let size = std::fs::metadata(master).unwrap().len();
    let (start, _) = windows_partition(manifest);
    let mut out = Vec::new();

    let random = s.path("random.img");
    std::fs::write(&random, Rng(77).bytes(4 << 20)).unwrap();
    out.push(("random bytes".to_string(), random));

    let zeroed = s.path("zeroed-boot.img");
    sparse_copy(master, &zeroed);
    write_at(&zeroed, start, &[0; 512]);
    out.push(("a zeroed NTFS boot sector".into(), zeroed));

    // The header CRC32 is at offset 16 of both GPT headers (LBA 1 and the last LBA).
    let crcs = s.path("gpt-crcs.img");
    sparse_copy(master, &crcs);
    for header in [512, size - 512] {
        assert_eq!(read_at(&crcs, header, 8), b"EFI PART");
        let mut crc = read_at(&crcs, header + 16, 4);
        crc[0] ^= 0xFF;
        write_at(&crcs, header + 16, &crc);
    }
    out.push(("both GPT header CRCs wrong".into(), crcs));

    // An MBR whose extended partition's EBR links to itself (as in mount-tests/inspect.rs).
    let ebr_loop = s.path("ebr-loop.img");
    std::fs::File::create(&ebr_loop)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let mut mbr = vec![0u8; 512];
    mbr[0x1BE + 4] = 0x05;
    mbr[0x1BE + 8..0x1BE + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[0x1BE + 12..0x1BE + 16].copy_from_slice(&4096u32.to_le_bytes());
    mbr[510..].copy_from_slice(&[0x55, 0xAA]);
    write_at(&ebr_loop, 0, &mbr);
    let mut ebr = vec![0u8; 512];
    ebr[0x1BE + 4] = 0x07;
    ebr[0x1BE + 8..0x1BE + 12].copy_from_slice(&63u32.to_le_bytes());
    ebr[0x1BE + 12..0x1BE + 16].copy_from_slice(&100u32.to_le_bytes());
    ebr[0x1CE + 4] = 0x05;
    ebr[0x1CE + 12..0x1CE + 16].copy_from_slice(&100u32.to_le_bytes());
    ebr[510..].copy_from_slice(&[0x55, 0xAA]);
    write_at(&ebr_loop, 2048 * 512, &ebr);
    out.push(("an EBR chain that loops".into(), ebr_loop));

    let cut = s.path("cut-4k.img");
    sparse_copy(master, &cut);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(4096)
        .unwrap();
    out.push(("a 4 KiB truncation".into(), cut));
    out
}

/// Prove that `mount` and `export` refuse, in one line and leaving nothing behind, every image
/// that `inspect` refuses or cannot read, instead of serving it with its SID unchanged; that
/// `--keep-sid` still makes a plain copy of each; and that a readable disk without Windows is
/// refused with inspect's "no Windows" reason and a hint, and proceeds with `--old-sid`.
#[test]
fn mount_and_export_refuse_what_inspect_refuses() {
    let s = Scratch::new("refuse-unreadable");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let mp = s.mkdir("mp");
    for (what, image) in unreadable_images(&s, &master, &manifest) {
        let inspected = run(sidfs().arg("inspect").arg(&image));
        assert!(
            matches!(inspected.status.code(), Some(1) | Some(3)),
            "{what}: inspect refuses it ({:?})",
            inspected.status
        );
        let state = s.path("state");
        let err = one_line_error(&mount_cmd(&image, &mp, 1, &state, &[]));
        assert!(err.contains("cannot clone"), "{what}: {err}");
        assert!(!state.exists(), "{what}: a refused mount leaves no state");
        let out = s.path("out.img");
        let err = one_line_error(&export_cmd(&image, &out, &["--seed", "1"]));
        assert!(err.contains("cannot clone"), "{what}: {err}");
        assert!(!out.exists(), "{what}: a refused export writes nothing");

        // A plain copy is what the user may ask for instead.
        let m = Mounted::new(&image, &mp, 1, &state, &["--keep-sid"]);
        assert_eq!(m.clone_info()["patch_stage"], "passthrough", "{what}");
        ok(Command::new("cmp").arg(m.disk()).arg(&image));
        m.unmount();
        std::fs::remove_dir_all(&state).unwrap();
    }

    // A disk sidfs reads but without Windows: inspect's reason, and what to pass instead.
    let data = s.path("data.img");
    sparse_copy(&master, &data);
    let (start, _) = windows_partition(&manifest);
    write_at(&data, start, &[0; 512]);
    let err = one_line_error(&mount_cmd(&data, &mp, 1, &s.path("sd"), &[]));
    assert!(
        err.contains("No Windows installation")
            && err.contains("--old-sid SID for a data disk")
            && err.contains("--keep-sid"),
        "{err}"
    );
    let m = Mounted::new(&data, &mp, 1, &s.path("sd"), &["--old-sid", DATA_SID]);
    let i = m.clone_info();
    assert_eq!(i["old_sid"], DATA_SID);
    assert_ne!(i["patch_stage"], "passthrough");
    m.unmount();
}

/// Prove that a disk cut 1 MiB + 100 bytes short (its NTFS partition and backup boot sector
/// run past the end; the size is not a multiple of 512), and a bare NTFS volume cut short, are
/// refused by inspect (reason `truncated`, exit 3) and by mount and export.
#[test]
fn truncated_volume_is_refused() {
    let s = Scratch::new("refuse-truncated");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let size = std::fs::metadata(&master).unwrap().len();
    let (start, part_size) = windows_partition(&manifest);
    let cut = s.path("cut.img");
    sparse_copy(&master, &cut);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(size - MIB - 100)
        .unwrap();
    // The bare Windows volume, cut by 1 MiB + 100 bytes.
    let bare = s.path("bare.img");
    ok(Command::new("dd")
        .arg(format!("if={}", master.display()))
        .arg(format!("of={}", bare.display()))
        .args([
            "bs=1M",
            "conv=sparse",
            "status=none",
            "iflag=skip_bytes,count_bytes",
        ])
        .arg(format!("skip={start}"))
        .arg(format!("count={}", part_size - MIB - 100)));

    let mp = s.mkdir("mp");
    for image in [&cut, &bare] {
        let out = run(sidfs().arg("inspect").arg("--json").arg(image));
        assert_eq!(out.status.code(), Some(3), "{}", image.display());
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let reasons: Vec<&str> = report["refusals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reason"].as_str().unwrap())
            .collect();
        assert!(reasons.contains(&"truncated"), "{reasons:?}");

        let err = one_line_error(&mount_cmd(image, &mp, 1, &s.path("st"), &[]));
        assert!(err.contains("truncated"), "{err}");
        assert!(!s.path("st").exists());
        let out = s.path("out.img");
        let err = one_line_error(&export_cmd(image, &out, &["--seed", "1"]));
        assert!(err.contains("truncated"), "{err}");
        assert!(!out.exists());
    }
}

/// Prove that `--keep-sid`, a plain copy, refuses options it would silently ignore
/// (`--hostname`, `--keep`, `--sid`, `--old-sid`), in mount and export, with exit status 1 and
/// one line naming the option.
#[test]
fn keep_sid_refuses_identity_options() {
    let s = Scratch::new("refuse-keep-sid");
    let master = s.path("master.img");
    sparse_master(&master, 8 * MIB, &[(0, MIB as usize)], 3);
    let mp = s.mkdir("mp");
    let sid = "S-1-5-21-1-2-3";
    for (option, value) in [
        ("--hostname", "CLONE-1"),
        ("--keep", "wsus"),
        ("--sid", sid),
        ("--old-sid", sid),
    ] {
        let state = s.path("state");
        let out = mount_cmd(&master, &mp, 1, &state, &["--keep-sid", option, value]);
        assert_eq!(out.status.code(), Some(1), "mount --keep-sid {option}");
        let err = one_line_error(&out);
        assert!(err.contains(option) && err.contains("--keep-sid"), "{err}");
        assert!(!state.exists());
        let img = s.path("out.img");
        let out = export_cmd(&master, &img, &["--keep-sid", option, value]);
        assert_eq!(out.status.code(), Some(1), "export --keep-sid {option}");
        let err = one_line_error(&out);
        assert!(err.contains(option), "{err}");
        assert!(!img.exists());
    }
}

/// Prove that a read-only loop device of a master is the same master to sidfs: inspect reads
/// it, export gives the same bytes as from the file, mount rewrites it, verify reads it.
#[test]
fn block_device_master_is_cloned_like_its_file() {
    if !have_tool("losetup") {
        return;
    }
    let s = Scratch::new("refuse-blockdev");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let size = std::fs::metadata(&master).unwrap().len();
    let dev = LoopDev::new(&master, 0, size);
    let old_sid = manifest["machine_sid"].as_str().unwrap();

    let out = ok(sidfs().arg("inspect").arg("--json").arg(&dev.0));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["image_size"], size);
    assert_eq!(report["windows"]["machine_sid"], old_sid, "{report}");

    let from_file = s.path("from-file.img");
    let from_dev = s.path("from-dev.img");
    ok(sidfs()
        .arg("export")
        .arg(&master)
        .arg(&from_file)
        .args(["--seed", "3"]));
    ok(sidfs()
        .arg("export")
        .arg(&dev.0)
        .arg(&from_dev)
        .args(["--seed", "3"]));
    assert_eq!(sha256(&from_dev), sha256(&from_file));
    assert_ne!(
        sha256(&from_dev),
        sha256(&master),
        "the export is rewritten"
    );

    let m = Mounted::new(Path::new(&dev.0), &s.mkdir("mp"), 3, &s.path("st"), &[]);
    let i = m.clone_info();
    assert_eq!(i["old_sid"], old_sid);
    assert_eq!(i["disk_size"], size);
    assert_ne!(i["patch_stage"], "passthrough");
    ok(Command::new("cmp").arg(m.disk()).arg(&from_file));
    m.unmount();

    // verify sees the master's Windows and its SID (the master is full of it).
    let out = run(sidfs()
        .arg("verify")
        .arg("--json")
        .arg(&dev.0)
        .args(["--old-sid", old_sid]));
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["windows_found"], true);
    assert!(v["unexpected"].as_u64().unwrap() > 0);
}

/// Prove that a FIFO given as the image to inspect, verify, export and mount is refused at once
/// (nothing waits for a writer), in one line.
#[test]
fn fifo_is_refused_everywhere() {
    if !have_tool("mkfifo") || !have_tool("timeout") {
        return;
    }
    let s = Scratch::new("refuse-fifo");
    let fifo = s.path("master.img");
    ok(Command::new("mkfifo").arg(&fifo));
    let mp = s.mkdir("mp");
    let out_img = s.path("out.img");
    let state = s.path("st");
    let fifo_s = fifo.to_str().unwrap();
    let runs: [Vec<&str>; 4] = [
        vec!["inspect", fifo_s],
        vec!["verify", fifo_s, "--old-sid", DATA_SID],
        vec!["export", fifo_s, out_img.to_str().unwrap(), "--seed", "1"],
        vec![
            "mount",
            fifo_s,
            mp.to_str().unwrap(),
            "--seed",
            "1",
            "--state",
            state.to_str().unwrap(),
        ],
    ];
    for args in runs {
        // A hang shows up as timeout's exit 124, not as a slow test.
        let out = run(Command::new("timeout")
            .args(["-k", "5", "60", SIDFS])
            .args(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {:?}", out.status);
        let err = one_line_error(&out);
        // mount's own precheck says it its way.
        assert!(
            err.contains("FIFO") || err.contains("not a regular file or block device"),
            "{args:?}: {err}"
        );
    }
    assert!(!out_img.exists() && !state.exists());
}

/// A bare NTFS data volume (no Windows) holding `DATA_SID` as text.
fn data_disk(s: &Scratch) -> PathBuf {
    let disk = s.path("data.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    ok(Command::new("mkntfs").args(["-F", "-Q", "-q"]).arg(&disk));
    write_at(&disk, 40 * MIB, DATA_SID.as_bytes());
    disk
}

/// Prove that a data-disk clone (`--old-sid`) stays itself when remounted without repeating
/// `--old-sid` (same `--state`, or the same `--seed` with the default state) and when exported
/// from its state, and that another `--old-sid` is refused naming the recorded one.
#[test]
fn data_disk_clone_is_defined_by_its_state() {
    if !have_tool("mkntfs") {
        return;
    }
    let s = Scratch::new("refuse-datadisk");
    let disk = data_disk(&s);
    let mp = s.mkdir("mp");
    let state = s.path("state");
    let m = Mounted::new(&disk, &mp, 5, &state, &["--old-sid", DATA_SID]);
    let first = m.clone_info();
    assert_eq!(first["old_sid"], DATA_SID);
    assert_ne!(first["patch_stage"], "passthrough");
    let clone_sha = sha256(&m.disk());
    assert_eq!(
        count(&read_all(&m.disk()), DATA_SID.as_bytes()),
        0,
        "the clone has no old SID"
    );
    m.unmount();

    let m = Mounted::new(&disk, &mp, 5, &state, &[]);
    let again = m.clone_info();
    for key in ["old_sid", "new_sid", "patch_stage"] {
        assert_eq!(
            again[key], first[key],
            "{key} after a remount without --old-sid"
        );
    }
    assert_eq!(sha256(&m.disk()), clone_sha);
    m.unmount();

    let out = s.path("export.img");
    ok(sidfs()
        .arg("export")
        .arg(&disk)
        .arg(&out)
        .arg("--state")
        .arg(&state));
    assert_eq!(sha256(&out), clone_sha, "export --state is the clone");

    let other = "S-1-5-21-1111111111-2222222222-333333334";
    let err = one_line_error(&mount_cmd(&disk, &mp, 5, &state, &["--old-sid", other]));
    assert!(
        err.contains(&format!("replaces machine SID {DATA_SID}")),
        "{err}"
    );

    // The default state: the same --seed finds the same clone.
    let xdg = s.mkdir("xdg");
    let default_mount = |extra: &[&str]| {
        run(sidfs()
            .env("XDG_STATE_HOME", &xdg)
            .arg("mount")
            .arg(&disk)
            .arg(&mp)
            .args(["--seed", "6"])
            .args(extra))
    };
    let out = default_mount(&["--old-sid", DATA_SID]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = serde_json::from_slice::<Value>(&read_all(&mp.join("clone.json"))).unwrap();
    ok(sidfs().arg("umount").arg(&mp));
    let out = default_mount(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = serde_json::from_slice::<Value>(&read_all(&mp.join("clone.json"))).unwrap();
    ok(sidfs().arg("umount").arg(&mp));
    assert_eq!(again["state_dir"], first["state_dir"]);
    for key in ["old_sid", "new_sid", "patch_stage"] {
        assert_eq!(again[key], first[key], "{key} with the default state");
    }
}

/// Prove that `export --state DIR` refuses a DIR that does not exist or holds no clone, and
/// creates nothing.
#[test]
fn export_of_a_missing_state_is_refused() {
    let s = Scratch::new("refuse-nostate");
    let master = s.path("master.img");
    sparse_master(&master, 8 * MIB, &[(0, MIB as usize)], 4);
    let out = s.path("out.img");
    let missing = s.path("no-such-state");
    let err = one_line_error(&export_cmd(
        &master,
        &out,
        &["--state", missing.to_str().unwrap()],
    ));
    assert!(err.contains("does not exist"), "{err}");
    assert!(!missing.exists() && !out.exists());
    let empty = s.mkdir("empty-state");
    let err = one_line_error(&export_cmd(
        &master,
        &out,
        &["--state", empty.to_str().unwrap()],
    ));
    assert!(err.contains("not a clone state"), "{err}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    assert!(!out.exists());
}

/// Prove that a master moved to another folder finds its clone (with its writes) in the
/// default state, as docs/SEMANTICS.md promises.
#[test]
fn moved_master_finds_its_clone() {
    let s = Scratch::new("refuse-moved");
    let (master, _) = build_master(&s, "master.img", &[]);
    let xdg = s.mkdir("xdg");
    let mp = s.mkdir("mp");
    let mount = |m: &Path| {
        let out = run(sidfs()
            .env("XDG_STATE_HOME", &xdg)
            .arg("mount")
            .arg(m)
            .arg(&mp)
            .args(["--seed", "4"]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&read_all(&mp.join("clone.json"))).unwrap()
    };
    let first = mount(&master);
    let marker = b"written before the master moved";
    let disk = std::fs::OpenOptions::new()
        .write(true)
        .open(mp.join("disk.img"))
        .unwrap();
    disk.write_all_at(marker, 100 * MIB).unwrap();
    disk.sync_all().unwrap();
    drop(disk);
    ok(sidfs().arg("umount").arg(&mp));

    let moved = s.mkdir("elsewhere").join("master.img");
    std::fs::rename(&master, &moved).unwrap();
    let again = mount(&moved);
    let seen = read_at(&mp.join("disk.img"), 100 * MIB, marker.len());
    ok(sidfs().arg("umount").arg(&mp));
    assert_eq!(again["state_dir"], first["state_dir"], "the same clone");
    assert_eq!(again["new_sid"], first["new_sid"]);
    assert_eq!(seen, marker, "the clone's writes are there");
}

/// Prove that export refuses to write onto its own master: the same path (even with --force),
/// a symlink, a hard link, and a loop device backed by it; the master stays unchanged.
#[test]
fn export_refuses_its_own_master() {
    let s = Scratch::new("refuse-self");
    let master = s.path("v.img");
    sparse_master(&master, 8 * MIB, &[(0, MIB as usize)], 5);
    let before = sha256(&master);
    let link = s.path("link.img");
    std::os::unix::fs::symlink(&master, &link).unwrap();
    let hard = s.path("hard.img");
    std::fs::hard_link(&master, &hard).unwrap();
    for out in [&master, &link, &hard] {
        let err = one_line_error(&export_cmd(&master, out, &["--keep-sid", "--force"]));
        assert!(err.contains("destroy the master"), "{err}");
    }
    if have_tool("losetup") {
        let dev = LoopDev::writable(&master, 0, 8 * MIB);
        let err = one_line_error(&export_cmd(&master, Path::new(&dev.0), &["--keep-sid"]));
        assert!(err.contains("loop device backed by the master"), "{err}");
        // A master given as a loop device, and an output on the same file.
        let ro = LoopDev::new(&master, 0, 8 * MIB);
        let err = one_line_error(&export_cmd(
            Path::new(&ro.0),
            Path::new(&dev.0),
            &["--keep-sid"],
        ));
        assert!(err.contains("same file"), "{err}");
        let err = one_line_error(&export_cmd(
            Path::new(&ro.0),
            Path::new(&ro.0),
            &["--keep-sid"],
        ));
        assert!(err.contains("destroy the master"), "{err}");
    }
    assert_eq!(sha256(&master), before, "the master is unchanged");
    // Nor onto a character device, which the temporary image would be renamed over.
    let err = one_line_error(&export_cmd(
        &master,
        Path::new("/dev/null"),
        &["--keep-sid", "--force"],
    ));
    assert!(
        err.contains("neither a regular file nor a block device"),
        "{err}"
    );
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

/// A tmpfs mount; unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// Prove that export onto a device smaller than the disk is refused before anything is
/// written, and that an export that fails while writing (a full file system) leaves no partial
/// image behind.
#[test]
fn export_checks_room_and_leaves_no_partial_image() {
    let s = Scratch::new("refuse-room");
    let master = s.path("master.img");
    sparse_master(
        &master,
        64 * MIB,
        &[(0, MIB as usize), (40 * MIB, 16 << 20)],
        6,
    );
    if have_tool("losetup") {
        let small = s.path("small.img");
        std::fs::File::create(&small)
            .unwrap()
            .set_len(32 * MIB)
            .unwrap();
        {
            let dev = LoopDev::writable(&small, 0, 32 * MIB);
            let err = one_line_error(&export_cmd(&master, Path::new(&dev.0), &["--keep-sid"]));
            assert!(err.contains("holds") && err.contains("bytes"), "{err}");
        }
        let f = std::fs::File::open(&small).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(f.metadata().unwrap().blocks(), 0, "nothing was written");
    }

    // A file system with room for less than the clone's data.
    let full = s.mkdir("full");
    ok(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&full));
    let _tmpfs = Tmpfs(full.clone());
    let out = full.join("clone.img");
    let err = one_line_error(&export_cmd(&master, &out, &["--keep-sid"]));
    assert!(err.contains("No space left"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&full).unwrap().collect();
    assert!(left.is_empty(), "a failed export leaves nothing: {left:?}");
}
