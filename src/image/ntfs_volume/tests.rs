//! Tests of the image layer against real Windows-made NTFS data and images built here with
//! real tools (mkntfs, ntfs-3g, sfdisk, mkfs.fat). Each test says what it proves.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::image::partition::{PartitionTable, PartitionTableKind, PartitionType};
use crate::testutil::*;

/// The NTFS partition that holds Windows, or `None`. Partitions that fail to open are skipped;
/// if no Windows volume is found and one of them failed, that error is returned.
fn find_windows_volume(image: &ImageFile) -> Result<Option<(Partition, NtfsVolume)>> {
    let table = PartitionTable::read(image)?;
    let mut first_error = None;
    for (partition, opened) in ntfs_volumes(image, &table) {
        match opened.and_then(|v| v.holds_windows().map(|w| w.then_some(v))) {
            Ok(Some(volume)) => return Ok(Some((partition.clone(), volume))),
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(None), Err)
}

fn run_stdin(cmd: &str, args: &[&str], stdin: &str) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    crate::testutil::run_stdin(cmd, &args, stdin);
}

/// Bytes of a stream as stored in the image, through our extents (holes read as zeros).
fn bytes_via_layout(image: &ImageFile, layout: &StreamLayout) -> Vec<u8> {
    match &layout.location {
        StreamLocation::NonResident { extents } => {
            let mut out = vec![0u8; layout.size as usize];
            for e in extents {
                if let Some(at) = e.image_offset {
                    let start = e.logical_offset as usize;
                    image
                        .read_exact_at(at, &mut out[start..start + e.len as usize], "test")
                        .unwrap();
                }
            }
            out
        }
        StreamLocation::Resident {
            image_offset, len, ..
        } => {
            let mut out = vec![0u8; *len as usize];
            image
                .read_exact_at(*image_offset, &mut out, "test")
                .unwrap();
            out
        }
    }
}

/// Compares resident bytes from the image with the content, skipping the fixup positions
/// (last two bytes of each 512-byte block of the record), which hold the USN on disk.
fn assert_resident_matches(layout: &StreamLayout, got: &[u8], want: &[u8]) {
    let StreamLocation::Resident {
        image_offset,
        record_offset,
        ..
    } = &layout.location
    else {
        panic!("not resident");
    };
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let in_record = image_offset.0 + i as u64 - record_offset.0;
        if in_record % 512 >= 510 {
            continue;
        }
        assert_eq!(g, w, "resident byte {i} differs");
    }
}

fn gunzip_ntfs_index(dir: &TempDir) -> PathBuf {
    let out = dir.path("ntfs_index.raw");
    let data = run(
        "gunzip",
        &[
            "-c",
            realdata("ntfs-win10-volume/ntfs_index.raw.gz")
                .to_str()
                .unwrap(),
        ],
    );
    std::fs::write(&out, data).unwrap();
    out
}

/// Real Windows 10 disk: the MBR has one NTFS partition at sector 128, the volume opens with
/// 2 KiB clusters, $Secure:$SDS has extents whose bytes equal the stream read through the
/// crate, and there is no Windows volume (None, not an error).
#[test]
fn real_ntfs_index_disk() {
    let dir = TempDir::new("ntfs-index");
    let path = gunzip_ntfs_index(&dir);
    let image = ImageFile::open(&path).unwrap();
    let table = PartitionTable::read(&image).unwrap();
    assert!(
        matches!(table.kind, PartitionTableKind::Mbr { .. }),
        "{:?}",
        table.kind
    );
    assert_eq!(table.partitions.len(), 1);
    let p = &table.partitions[0];
    assert_eq!(p.start, ImageOffset(128 * 512));
    assert_eq!(p.file_system, FileSystemKind::Ntfs);
    assert!(matches!(
        p.partition_type,
        PartitionType::Mbr {
            type_byte: 0x07,
            ..
        }
    ));
    let volume = NtfsVolume::open(&image, p).unwrap();
    let facts = volume.facts().unwrap();
    assert_eq!(facts.cluster_size, 2048);
    assert_eq!((facts.ntfs_major, facts.ntfs_minor), (3, 1));
    let sds = volume.stream_layout(r"\$Secure", "$SDS").unwrap();
    assert!(!sds.extents().is_empty());
    assert!(sds.is_plain());
    let content = volume.read_file("$secure", "$SDS", 16 << 20).unwrap();
    assert_eq!(content.len() as u64, sds.size);
    assert_eq!(bytes_via_layout(&image, &sds), content);
    assert!(find_windows_volume(&image).unwrap().is_none());
    assert!(volume.locate_hives().unwrap().is_empty());
}

/// The machine SID sub-authorities of the README (2341207468, 2645333676, 3461800803).
fn sid_triple() -> Vec<u8> {
    [2341207468u32, 2645333676, 3461800803]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<u64> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i as u64)
        .collect()
}

fn inside(layout: &StreamLayout, at: u64, len: u64) -> bool {
    layout.extents().iter().any(|e| {
        e.image_offset
            .is_some_and(|o| at >= o.0 && at + len <= o.0 + e.len)
    })
}

/// Real Windows 10 bare volume: a whole-image NTFS with 4 KiB clusters; the SID-named
/// recycle-bin directory is found case-insensitively (its RID is 1001 on disk, not the 500
/// the brief mentioned; -500 must be NotFound); of the 49 binary SID occurrences in the
/// image, exactly 20 lie in our $SDS extents and the other 29 in our $LogFile extents (the
/// README's counts), so the extents are where the bytes really are. The journal is clean.
#[test]
fn real_file_4k_volume() {
    let path = realdata("ntfs-win10-volume/file_4k.bin");
    let image = ImageFile::open(&path).unwrap();
    let table = PartitionTable::read(&image).unwrap();
    assert_eq!(table.kind, PartitionTableKind::WholeImage);
    let volume = NtfsVolume::open(&image, &table.partitions[0]).unwrap();
    assert_eq!(volume.facts().unwrap().cluster_size, 4096);
    let recycle = volume
        .lookup(r"\$recycle.bin\s-1-5-21-2341207468-2645333676-3461800803-1001")
        .unwrap();
    assert_eq!(recycle, 36);
    assert!(matches!(
        volume.lookup(r"$RECYCLE.BIN\S-1-5-21-2341207468-2645333676-3461800803-500"),
        Err(ImageError::NotFound { .. })
    ));
    let listing = volume.list_dir("$RECYCLE.BIN").unwrap();
    assert!(listing
        .iter()
        .any(|e| e.name == "S-1-5-21-2341207468-2645333676-3461800803-1001" && e.is_directory));

    let bytes = std::fs::read(&path).unwrap();
    let hits = find_all(&bytes, &sid_triple());
    assert_eq!(hits.len(), 49);
    let sds = volume.stream_layout(r"$Secure", "$SDS").unwrap();
    let log = volume.stream_layout_by_record(2, "").unwrap();
    let in_sds = hits.iter().filter(|&&h| inside(&sds, h, 12)).count();
    let in_log = hits.iter().filter(|&&h| inside(&log, h, 12)).count();
    assert_eq!((in_sds, in_log), (20, 29));

    let state = volume.log_file_state().unwrap();
    assert_eq!(&state.magic, b"RSTR");
    assert!(state.clean, "{state:?}");
    assert_eq!(
        volume.hibernation_state().unwrap(),
        HibernationState::Absent
    );
    // $MFT record 5 (root) maps to where the crate read it.
    let mft = volume.mft_record_offset(0).unwrap();
    assert_eq!(mft, volume.facts().unwrap().mft_offset);
    let mut sig = [0u8; 4];
    image
        .read_exact_at(volume.mft_record_offset(5).unwrap(), &mut sig, "t")
        .unwrap();
    assert_eq!(&sig, b"FILE");
    let report = volume.scan_special_files(10_000, 3).unwrap();
    assert_eq!((report.encrypted, report.compressed), (0, 0));
    // A size limit below the stream size is an error, not a truncated read.
    assert!(matches!(
        volume.read_file("$Secure", "$SDS", 10),
        Err(ImageError::TooLarge { .. })
    ));
}

/// Deterministic test content (an LCG, so runs are reproducible).
fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

/// Files written through ntfs-3g: (path, content).
fn windows_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("Windows/System32/config/SAM", pattern(1, 300_000)),
        ("Windows/System32/config/SAM.LOG1", pattern(2, 200)),
        ("Windows/System32/config/SYSTEM", pattern(3, 1_000_000)),
        ("Windows/System32/config/SOFTWARE", pattern(4, 70_000)),
        ("Windows/System32/config/RegBack/SAM", pattern(5, 8192)),
        ("Users/Alice/NTUSER.DAT", pattern(6, 262_144)),
        ("Users/Alice/NTUSER.DAT.LOG1", pattern(7, 4096)),
        (
            "Users/Alice/AppData/Local/Microsoft/Windows/UsrClass.dat",
            pattern(8, 100_000),
        ),
        ("Users/Public/readme.txt", pattern(9, 10)),
        (
            "Windows/ServiceProfiles/LocalService/NTUSER.DAT",
            pattern(10, 50_000),
        ),
        (
            "Windows/System32/config/systemprofile/NTUSER.DAT",
            pattern(11, 40_000),
        ),
        ("Boot/BCD", pattern(12, 28_672)),
    ]
}

struct BuiltDisk {
    _dir: TempDir,
    disk: PathBuf,
    files: Vec<(&'static str, Vec<u8>)>,
    sparse: Vec<u8>,
    fragmented: Vec<u8>,
}

const ESP_START: u64 = 2048;
const ESP_SECTORS: u64 = 16384;
const NTFS_START: u64 = 18432;
const NTFS_SECTORS: u64 = 73728;
const DISK_BYTES: u64 = 48 << 20;

fn tools_missing() -> Option<String> {
    missing_tools(&["mkntfs", "ntfs-3g", "fusermount3", "sfdisk", "mkfs.fat"])
}

/// Builds a disk with an ESP (FAT) and an NTFS partition holding a Windows-like tree, with
/// sfdisk (`label` "gpt" or "dos"), mkfs.fat, mkntfs and ntfs-3g.
fn build_disk(label: &str, hiberfil: Option<&[u8]>) -> BuiltDisk {
    use std::os::unix::fs::FileExt;
    let dir = TempDir::new(&format!("built-{label}"));
    let ntfs = dir.path("ntfs.img");
    let esp = dir.path("esp.img");
    let disk = dir.path("disk.img");
    std::fs::File::create(&ntfs)
        .unwrap()
        .set_len(NTFS_SECTORS * 512)
        .unwrap();
    std::fs::File::create(&esp)
        .unwrap()
        .set_len(ESP_SECTORS * 512)
        .unwrap();
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(DISK_BYTES)
        .unwrap();
    run("mkfs.fat", &[esp.to_str().unwrap()]);
    run(
        "mkntfs",
        &[
            "-F",
            "-Q",
            "-q",
            "-c",
            "4096",
            "-p",
            &NTFS_START.to_string(),
            ntfs.to_str().unwrap(),
        ],
    );
    let files = windows_files();
    let mut sparse = vec![0u8; 1 << 20];
    sparse.extend_from_slice(&pattern(13, 5000));
    let fragmented = pattern(14, 1_500_000);
    {
        let mount = NtfsMount::new(&ntfs, &dir.path("mnt"), false);
        for (path, content) in &files {
            mount.write(path, content);
        }
        if let Some(h) = hiberfil {
            mount.write("hiberfil.sys", h);
        }
        // Sparse: seek past the start, write the tail only.
        let f = std::fs::File::create(dir.path("mnt/sparse.bin")).unwrap();
        f.write_all_at(&sparse[1 << 20..], 1 << 20).unwrap();
        drop(f);
        // Fragmented: fill with small files, free every other one, then write a big file.
        for i in 0..40 {
            mount.write(&format!("fill/{i}"), &pattern(100 + i, 65536));
        }
        for i in (0..40).step_by(2) {
            std::fs::remove_file(dir.path(&format!("mnt/fill/{i}"))).unwrap();
        }
        mount.write("frag.bin", &fragmented);
        drop(mount);
    }
    let table = format!(
        "label: {label}\nstart={ESP_START}, size={ESP_SECTORS}, type={}\nstart={NTFS_START}, size={NTFS_SECTORS}, type={}\n",
        if label == "gpt" { "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" } else { "ef" },
        if label == "gpt" { "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" } else { "7" },
    );
    run_stdin("sfdisk", &["-q", disk.to_str().unwrap()], &table);
    let out = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    out.write_all_at(&std::fs::read(&esp).unwrap(), ESP_START * 512)
        .unwrap();
    out.write_all_at(&std::fs::read(&ntfs).unwrap(), NTFS_START * 512)
        .unwrap();
    drop(out);
    std::fs::remove_file(&ntfs).unwrap();
    std::fs::remove_file(&esp).unwrap();
    BuiltDisk {
        _dir: dir,
        disk,
        files,
        sparse,
        fragmented,
    }
}

/// `sfdisk --json` is the oracle for our partition list: same starts, sizes and types.
fn assert_matches_sfdisk(disk: &Path, table: &PartitionTable) {
    let json: serde_json::Value =
        serde_json::from_slice(&run("sfdisk", &["--json", disk.to_str().unwrap()])).unwrap();
    let parts = json["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), table.partitions.len());
    for (theirs, ours) in parts.iter().zip(&table.partitions) {
        assert_eq!(theirs["start"].as_u64().unwrap() * 512, ours.start.0);
        assert_eq!(theirs["size"].as_u64().unwrap() * 512, ours.len);
        let ty = theirs["type"].as_str().unwrap();
        match &ours.partition_type {
            PartitionType::Gpt { type_guid, .. } => assert_eq!(ty, type_guid.to_string()),
            PartitionType::Mbr { type_byte, .. } => assert_eq!(ty, format!("{type_byte:x}")),
            PartitionType::WholeImage => panic!("whole image"),
        }
    }
}

/// Everything written through ntfs-3g reads back equal, both through the crate and byte for
/// byte through our extents in the image; the Windows volume and every hive are found.
fn check_built(built: &BuiltDisk) -> (PartitionTable, NtfsVolume) {
    let image = ImageFile::open(&built.disk).unwrap();
    let table = PartitionTable::read(&image).unwrap();
    assert_matches_sfdisk(&built.disk, &table);
    assert_eq!(table.partitions[0].file_system, FileSystemKind::Fat);
    assert_eq!(table.partitions[1].file_system, FileSystemKind::Ntfs);
    assert!(table.partitions[1].partition_type.known_name().is_some());
    let (partition, volume) = find_windows_volume(&image)
        .unwrap()
        .expect("Windows volume");
    assert_eq!(partition.start, ImageOffset(NTFS_START * 512));
    for (path, content) in &built.files {
        let got = volume.read_file(path, "", 1 << 24).unwrap();
        assert_eq!(&got, content, "{path} via the crate");
        let layout = volume.stream_layout(path, "").unwrap();
        assert_eq!(layout.size, content.len() as u64);
        let raw = bytes_via_layout(&image, &layout);
        match layout.location {
            StreamLocation::Resident { .. } => assert_resident_matches(&layout, &raw, content),
            StreamLocation::NonResident { .. } => assert_eq!(&raw, content, "{path} via extents"),
        }
    }
    let sparse = volume.stream_layout("sparse.bin", "").unwrap();
    assert!(
        sparse.extents().iter().any(|e| e.image_offset.is_none()),
        "{sparse:?}"
    );
    assert_eq!(bytes_via_layout(&image, &sparse), built.sparse);
    assert_eq!(
        volume.read_file("SPARSE.BIN", "", 1 << 24).unwrap(),
        built.sparse
    );
    let frag = volume.stream_layout("frag.bin", "").unwrap();
    assert_eq!(bytes_via_layout(&image, &frag), built.fragmented);
    eprintln!("frag.bin has {} extents", frag.extents().len());

    let hives = volume.locate_hives().unwrap();
    let mut found: Vec<(HiveRole, HiveFileKind, String)> = hives
        .iter()
        .map(|h| (h.role.clone(), h.kind.clone(), h.path.to_ascii_lowercase()))
        .collect();
    found.sort_by(|a, b| a.2.cmp(&b.2));
    let mut expected = vec![
        (
            HiveRole::Sam,
            HiveFileKind::Primary,
            r"windows\system32\config\sam",
        ),
        (
            HiveRole::Sam,
            HiveFileKind::Log(".LOG1"),
            r"windows\system32\config\sam.log1",
        ),
        (
            HiveRole::System,
            HiveFileKind::Primary,
            r"windows\system32\config\system",
        ),
        (
            HiveRole::Software,
            HiveFileKind::Primary,
            r"windows\system32\config\software",
        ),
        (
            HiveRole::RegBack,
            HiveFileKind::Primary,
            r"windows\system32\config\regback\sam",
        ),
        (
            HiveRole::UserNtuser,
            HiveFileKind::Primary,
            r"users\alice\ntuser.dat",
        ),
        (
            HiveRole::UserNtuser,
            HiveFileKind::Log(".LOG1"),
            r"users\alice\ntuser.dat.log1",
        ),
        (
            HiveRole::UserClasses,
            HiveFileKind::Primary,
            r"users\alice\appdata\local\microsoft\windows\usrclass.dat",
        ),
        (
            HiveRole::ServiceProfileNtuser,
            HiveFileKind::Primary,
            r"windows\serviceprofiles\localservice\ntuser.dat",
        ),
        (
            HiveRole::SystemProfileNtuser,
            HiveFileKind::Primary,
            r"windows\system32\config\systemprofile\ntuser.dat",
        ),
        (HiveRole::Bcd, HiveFileKind::Primary, r"boot\bcd"),
    ]
    .into_iter()
    .map(|(r, k, p)| (r, k, p.to_string()))
    .collect::<Vec<_>>();
    expected.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(found, expected);
    for hive in &hives {
        let want = &built
            .files
            .iter()
            .find(|(p, _)| p.replace('/', "\\").eq_ignore_ascii_case(&hive.path))
            .unwrap()
            .1;
        let raw = bytes_via_layout(&image, &hive.layout);
        if matches!(hive.layout.location, StreamLocation::NonResident { .. }) {
            assert_eq!(&raw, want, "{}", hive.path);
        }
    }
    let state = volume.log_file_state().unwrap();
    assert!(state.clean, "{state:?}");
    assert!(!volume.facts().unwrap().is_dirty());
    (table, volume)
}

/// GPT disk (ESP + basic data NTFS) built with real tools: partition list agrees with
/// sfdisk; contents, extents, hives as in `check_built`; then the primary GPT header, and
/// separately the primary entry array, are damaged and the backup is used (and said so);
/// with both copies damaged the error names both. An absurd entry count is refused.
#[test]
fn built_gpt_disk() {
    if let Some(reason) = tools_missing() {
        eprintln!("SKIPPED built_gpt_disk: {reason}");
        return;
    }
    let built = build_disk("gpt", None);
    let (table, volume) = check_built(&built);
    assert!(matches!(
        table.kind,
        PartitionTableKind::Gpt {
            used_backup: false,
            ..
        }
    ));
    assert_eq!(
        volume.hibernation_state().unwrap(),
        HibernationState::Absent
    );
    let pristine = std::fs::read(&built.disk).unwrap();
    let dir = TempDir::new("gpt-damaged");
    let reread = |bytes: &[u8]| {
        let p = dir.path("d.img");
        std::fs::write(&p, bytes).unwrap();
        PartitionTable::read(&ImageFile::open(&p).unwrap())
    };
    // Header CRC broken.
    let mut bad = pristine.clone();
    bad[512 + 0x38] ^= 0xFF;
    let t = reread(&bad).unwrap();
    assert!(
        matches!(
            t.kind,
            PartitionTableKind::Gpt {
                used_backup: true,
                ..
            }
        ),
        "{:?}",
        t.kind
    );
    assert_eq!(t.partitions, table.partitions);
    assert!(t.notes.iter().any(|n| n.contains("CRC32")), "{:?}", t.notes);
    // Entry array CRC broken (header fine).
    let mut bad = pristine.clone();
    bad[1024 + 56] ^= 0x01;
    let t = reread(&bad).unwrap();
    assert!(matches!(
        t.kind,
        PartitionTableKind::Gpt {
            used_backup: true,
            ..
        }
    ));
    assert_eq!(t.partitions, table.partitions);
    // Both broken: an error naming primary and backup.
    let last = pristine.len() - 512;
    bad[last + 0x38] ^= 0xFF;
    bad[512 + 0x38] ^= 0xFF;
    let e = reread(&bad).unwrap_err().to_string();
    assert!(e.contains("primary") && e.contains("backup"), "{e}");
    // Absurd entry count with a correct header CRC: refused without allocating.
    let mut bad = pristine.clone();
    for header in [512usize, last] {
        bad[header + 80..header + 84].copy_from_slice(&u32::MAX.to_le_bytes());
        bad[header + 16..header + 20].fill(0);
        let crc = crate::image::partition::crc32::crc32(&bad[header..header + 92]);
        bad[header + 16..header + 20].copy_from_slice(&crc.to_le_bytes());
    }
    let e = reread(&bad).unwrap_err().to_string();
    assert!(e.contains("exceeds the limit"), "{e}");
}

/// MBR disk (type 0xEF ESP + 0x07 NTFS) built with real tools, plus a hiberfil.sys starting
/// with "HIBR": same checks, and the hibernation state says hibernated with the file's size.
#[test]
fn built_mbr_disk() {
    if let Some(reason) = tools_missing() {
        eprintln!("SKIPPED built_mbr_disk: {reason}");
        return;
    }
    let mut hiberfil = b"HIBR".to_vec();
    hiberfil.resize(8192, 0);
    let built = build_disk("dos", Some(&hiberfil));
    let (table, volume) = check_built(&built);
    assert!(matches!(table.kind, PartitionTableKind::Mbr { .. }));
    assert_eq!(
        volume.hibernation_state().unwrap(),
        HibernationState::Hibernated {
            size: 8192,
            signature: *b"HIBR"
        }
    );
}

/// Runs everything the inspect command would on `bytes`; returns the errors met (as text),
/// counting contained ntfs-crate panics separately. Our own code must not panic.
fn exercise(dir: &TempDir, bytes: &[u8]) -> (Vec<String>, usize) {
    let path = dir.path("mutant.img");
    std::fs::write(&path, bytes).unwrap();
    let image = ImageFile::open(&path).unwrap();
    let mut errors = Vec::new();
    let mut panics = 0;
    let mut note = |r: Result<()>, errors: &mut Vec<String>| {
        if let Err(e) = r {
            if matches!(e, ImageError::NtfsPanic { .. }) {
                panics += 1;
            }
            errors.push(e.to_string());
        }
    };
    let table = match PartitionTable::read(&image) {
        Ok(t) => t,
        Err(e) => {
            errors.push(e.to_string());
            return (errors, 0);
        }
    };
    for p in table
        .partitions
        .iter()
        .filter(|p| p.file_system == FileSystemKind::Ntfs)
    {
        let volume = match NtfsVolume::open(&image, p) {
            Ok(v) => v,
            Err(e) => {
                note(Err(e), &mut errors);
                continue;
            }
        };
        note(volume.facts().map(drop), &mut errors);
        note(volume.list_dir("").map(drop), &mut errors);
        note(
            volume.stream_layout("$Secure", "$SDS").map(drop),
            &mut errors,
        );
        note(
            volume.read_file("$Secure", "$SDS", 1 << 22).map(drop),
            &mut errors,
        );
        note(volume.log_file_state().map(drop), &mut errors);
        note(volume.hibernation_state().map(drop), &mut errors);
        note(volume.locate_hives().map(drop), &mut errors);
        note(volume.mft_layout().map(drop), &mut errors);
        note(volume.scan_special_files(200, 2).map(drop), &mut errors);
    }
    note(find_windows_volume(&image).map(drop), &mut errors);
    (errors, panics)
}

/// Damaged copies of the real Windows volume: truncated, zeroed boot sector, broken MFT
/// record signatures and fixups, and 300 seeded random byte-flip mutants of the MFT and
/// $Secure area. Every case ends with errors or results, never an escaped panic or a hang
/// (the whole corpus runs under a time limit). Contained ntfs-crate panics are printed.
#[test]
fn damaged_corpus() {
    let original = std::fs::read(realdata("ntfs-win10-volume/file_4k.bin")).unwrap();
    let (worker_tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let dir = TempDir::new("damaged");
        let image = ImageFile::open(&realdata("ntfs-win10-volume/file_4k.bin")).unwrap();
        let table = PartitionTable::read(&image).unwrap();
        let volume = NtfsVolume::open(&image, &table.partitions[0]).unwrap();
        let mft = volume.mft_record_offset(0).unwrap().0 as usize;
        let root = volume.mft_record_offset(5).unwrap().0 as usize;
        let sds = volume.stream_layout("$Secure", "$SDS").unwrap();
        let sds_at = sds.extents()[0].image_offset.unwrap().0 as usize;
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        cases.push(("truncated to 100 bytes".into(), original[..100].to_vec()));
        cases.push(("truncated to 1 MiB".into(), original[..1 << 20].to_vec()));
        let mut z = original.clone();
        z[..512].fill(0);
        cases.push(("zeroed boot sector".into(), z));
        let mut m = original.clone();
        m[mft..mft + 4].copy_from_slice(b"BAAD");
        cases.push(("MFT record 0 signature".into(), m));
        let mut m = original.clone();
        m[root + 510] ^= 0xFF;
        cases.push(("root record torn (fixup mismatch)".into(), m));
        let mut m = original.clone();
        m[root + 6] = 0xFF;
        cases.push(("root record USA count".into(), m));
        let mut x = 0x1234_5678u32;
        for i in 0..300 {
            let mut m = original.clone();
            // Live records: $MFT, $MFTMirr, $LogFile, $Volume, root, $Bitmap, $Secure,
            // $UpCase, $Extend, $RECYCLE.BIN and its SID directory.
            const LIVE: [usize; 11] = [0, 1, 2, 3, 5, 6, 9, 10, 11, 35, 36];
            let (base, span) = if i % 3 == 2 {
                (sds_at, 8192)
            } else {
                (mft + LIVE[i % LIVE.len()] * 1024, 1024)
            };
            for _ in 0..(1 + i % 8) {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let at = base + (x as usize >> 4) % span;
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                m[at] = (x >> 16) as u8;
            }
            cases.push((format!("random mutant {i}"), m));
        }
        let mut panics = Vec::new();
        let mut errored = 0;
        for (name, bytes) in &cases {
            let (errors, n) = exercise(&dir, bytes);
            if !errors.is_empty() {
                errored += 1;
            }
            if n > 0 {
                panics.push(format!(
                    "{name}: {:?}",
                    errors
                        .iter()
                        .filter(|e| e.contains("panicked"))
                        .collect::<Vec<_>>()
                ));
            }
            if name.starts_with("truncated")
                || name.starts_with("zeroed")
                || name.contains("record")
            {
                assert!(!errors.is_empty(), "{name} gave no error");
                eprintln!("{name}: {}", errors[0]);
            }
        }
        worker_tx.send((cases.len(), errored, panics)).unwrap();
    });
    let (total, errored, panics) = match rx.recv_timeout(std::time::Duration::from_secs(300)) {
        Ok(r) => r,
        Err(_) => {
            if handle.is_finished() {
                handle.join().unwrap();
                unreachable!();
            }
            panic!("damaged corpus did not finish in 300 s: a hang");
        }
    };
    eprintln!(
        "{total} damaged images, {errored} gave errors, {} contained crate panics",
        panics.len()
    );
    for p in &panics {
        eprintln!("  contained: {p}");
    }
}

/// An empty NTFS file system of `size` bytes with 4 KiB clusters, `ntfs.img` in `dir`.
fn blank_ntfs(dir: &TempDir, size: u64) -> std::path::PathBuf {
    let img = dir.path("ntfs.img");
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    run(
        "mkntfs",
        &["-F", "-Q", "-q", "-c", "4096", img.to_str().unwrap()],
    );
    img
}

/// Fills the free space of the volume mounted at `mnt` with 4 KiB files in `fill/` and deletes
/// every other one: the free space left is single-cluster holes, which a file written after
/// takes one by one (as ntfs-3g allocates). Returns how many files the volume took.
fn single_cluster_holes(mnt: &Path) -> usize {
    let fill = mnt.join("fill");
    std::fs::create_dir(&fill).unwrap();
    let mut n = 0;
    while std::fs::write(fill.join(n.to_string()), [b'x'; 4096]).is_ok() {
        n += 1;
    }
    let _ = std::fs::remove_file(fill.join(n.to_string()));
    for i in (0..n).step_by(2) {
        std::fs::remove_file(fill.join(i.to_string())).unwrap();
    }
    n
}

/// A file whose `$DATA` starts in the base record and continues, past lowest VCN 0, in extents
/// of extension records that `$ATTRIBUTE_LIST` names: what ntfs-3g writes when a runlist
/// outgrows the record (free space of single-cluster holes, then a 4 MiB file; as the
/// `ext-hive` test master does to SOFTWARE). Reading it must give the whole file, as its
/// layout does; the `ntfs` crate read only the base record's piece.
#[test]
fn data_continued_in_extension_records() {
    if let Some(why) = missing_tools(&["mkntfs", "ntfs-3g", "fusermount3", "ntfsinfo"]) {
        eprintln!("SKIP: {why}");
        return;
    }
    use std::io::Write;
    let dir = TempDir::new("ext-data");
    let img = blank_ntfs(&dir, 64 << 20);
    let content = pattern(21, 4 << 20);
    {
        let mount = NtfsMount::new(&img, &dir.path("mnt"), false);
        let n = single_cluster_holes(&dir.path("mnt"));
        assert!(n > 1200, "only {n} clusters to fragment into");
        // In cluster-sized writes, as the builder does: each takes the next hole.
        let mut f = std::fs::File::create(dir.path("mnt/hive")).unwrap();
        for chunk in content.chunks(4096) {
            f.write_all(chunk).unwrap();
        }
        drop(f);
        drop(mount);
    }
    // The precondition, by ntfsinfo: a $DATA piece from VCN > 0 in another record.
    let out = Command::new("ntfsinfo")
        .args(["-v", "-F", "/hive", img.to_str().unwrap()])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    let mut base = None;
    let mut continued = false;
    let mut in_extension = false;
    for line in info.lines() {
        if let Some(r) = line.strip_prefix("Dumping Inode ") {
            base = r.split_whitespace().next().map(str::to_string);
        } else if let Some(r) = line.strip_prefix("Dumping attribute $DATA (0x80) from mft record ")
        {
            in_extension = r.split_whitespace().next().map(str::to_string) != base;
        } else if line.trim().starts_with("Lowest VCN") && in_extension {
            continued |= !line.contains(" 0 (0x0)");
        }
    }
    assert!(continued, "no extent in an extension record:\n{info}");

    let image = ImageFile::open(&img).unwrap();
    let table = PartitionTable::read(&image).unwrap();
    let volume = NtfsVolume::open(&image, &table.partitions[0]).unwrap();
    let layout = volume.stream_layout("hive", "").unwrap();
    assert_eq!(layout.size, content.len() as u64);
    assert!(
        bytes_via_layout(&image, &layout) == content,
        "layout bytes differ"
    );
    let got = volume.read_file("hive", "", 8 << 20).unwrap();
    assert_eq!(got.len(), content.len());
    assert!(got == content, "read_file bytes differ");
}

/// `$MFT` with an attribute list, as ntfs-3g writes it when the MFT grows in many pieces (free
/// space of single-cluster holes, then many empty files: as the `ext-mft` test master does):
/// a file created afterwards lies in records only the extents in extension records map. The
/// `ntfs` crate's `Ntfs::file()` assumes the MFT has no attribute list; through our view of the
/// MFT, lookups, listings and reads of that file work, and its record is where our map says.
#[test]
fn mft_with_an_attribute_list() {
    use std::io::Write;
    if let Some(why) = missing_tools(&["mkntfs", "ntfs-3g", "fusermount3", "ntfsinfo"]) {
        eprintln!("SKIP: {why}");
        return;
    }
    let dir = TempDir::new("ext-mft");
    let img = blank_ntfs(&dir, 48 << 20);
    let content = pattern(22, 10_000);
    {
        let mount = NtfsMount::new(&img, &dir.path("mnt"), false);
        // A zero file leaves about 4 MiB free (the MFT zone included), which single-cluster
        // files then fill.
        let free = || {
            let out = Command::new("stat")
                .args(["-f", "-c", "%a %S"])
                .arg(dir.path("mnt"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut v = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
            v.next().unwrap() * v.next().unwrap()
        };
        {
            let mut blocker = std::fs::File::create(dir.path("mnt/blocker")).unwrap();
            while free() > 5 << 20 {
                blocker.write_all(&[0u8; 1 << 20]).unwrap();
                blocker.sync_all().unwrap();
            }
        }
        single_cluster_holes(&dir.path("mnt"));
        for i in 0..1600 {
            std::fs::write(dir.path(&format!("mnt/fill/e{i}")), b"").unwrap();
        }
        mount.write("late/file.bin", &content);
        drop(mount);
    }
    let out = Command::new("ntfsinfo")
        .args(["-v", "-i", "0", img.to_str().unwrap()])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(
        info.contains("Dumping attribute $ATTRIBUTE_LIST (0x20) from mft record 0 ")
            && info.lines().any(|l| l
                .starts_with("Dumping attribute $DATA (0x80) from mft record ")
                && !l.contains("from mft record 0 ")),
        "$MFT has no $DATA extent in an extension record:\n{info}"
    );
    let out = Command::new("ntfsinfo")
        .args(["-F", "/late/file.bin", img.to_str().unwrap()])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    let inode: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("Dumping Inode "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{info}"));

    let image = ImageFile::open(&img).unwrap();
    let table = PartitionTable::read(&image).unwrap();
    let volume = NtfsVolume::open(&image, &table.partitions[0]).unwrap();
    assert_eq!(volume.lookup(r"late\file.bin").unwrap(), inode);
    let listing = volume.list_dir("late").unwrap();
    assert!(listing.iter().any(|e| e.name == "file.bin"), "{listing:?}");
    assert!(volume.read_file(r"late\file.bin", "", 1 << 20).unwrap() == content);
    let layout = volume.stream_layout_by_record(inode, "").unwrap();
    assert!(bytes_via_layout(&image, &layout) == content);
    // The record itself, where our map of every MFT piece puts it.
    let at = volume.mft_record_offset(inode).unwrap();
    let mut sig = [0u8; 4];
    image.read_exact_at(at, &mut sig, "t").unwrap();
    assert_eq!(&sig, b"FILE");
}
