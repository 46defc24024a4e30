//! `sidfs inspect` with the real binary: on every test master the builder makes (both layouts,
//! every variant) it reports exactly what the builder's manifest says, with the expected refusals
//! and exit status; on the real Windows-made NTFS volumes it reports "no Windows" without error;
//! on a corpus of damaged images it ends with one clear line or a refusal, never a panic or hang.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{have_tool, ok, realdata, Scratch, SIDFS};

const LAYOUTS: [&str; 2] = ["gpt", "mbr"];
const VARIANTS: [&str; 8] = [
    "clean",
    "hibernated",
    "fast-startup",
    "dirty-ntfs",
    "unclean-logfile",
    "bitlocker",
    "dirty-hive",
    "domain-controller",
];
/// Exit status of `sidfs inspect` for a refused master.
const EXIT_REFUSED: i32 = 3;
/// How long one inspect may take before the test calls it a hang.
const INSPECT_TIMEOUT_SECS: u32 = 120;

/// The test-master builder: `$SIDFS_TEST_MASTER_BUILDER` or `scripts/build-test-master`.
/// `None` (test skipped, or failed in CI) when it is not there.
fn builder() -> Option<PathBuf> {
    let path = std::env::var_os("SIDFS_TEST_MASTER_BUILDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-master"));
    if path.exists() {
        return Some(path);
    }
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("SIDFS_REQUIRE_TOOLS").is_some();
    assert!(
        !required,
        "the test-master builder {} is missing",
        path.display()
    );
    eprintln!(
        "SKIP: the test-master builder {} is missing",
        path.display()
    );
    None
}

/// Builds a master; returns its path and its manifest.
fn build(builder: &Path, scratch: &Scratch, layout: &str, variant: &str) -> (PathBuf, Value) {
    let image = scratch.path(&format!("{layout}-{variant}.img"));
    ok(Command::new(builder)
        .args(["--layout", layout, "--variant", variant])
        .arg(&image));
    let manifest = std::fs::read(image.with_extension("img.json")).unwrap();
    (image, serde_json::from_slice(&manifest).unwrap())
}

/// What one `sidfs inspect` run gave.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("inspect --json printed no JSON ({e}):\n{}", self.stdout))
    }

    /// Exit 1 with one line on stderr, or exit 3 with refusals; never a panic or a hang.
    fn assert_error_or_refusal(&self, what: &str) {
        assert_ne!(self.code, 124, "{what}: inspect hung (timeout)");
        assert_ne!(self.code, 101, "{what}: inspect panicked: {}", self.stderr);
        assert!(
            !self.stderr.contains("panicked"),
            "{what}: a panic was printed: {}",
            self.stderr
        );
        match self.code {
            1 => {
                let err = self.stderr.trim();
                assert_eq!(err.lines().count(), 1, "{what}: one line, got:\n{err}");
                assert!(err.starts_with("sidfs: "), "{what}: {err}");
            }
            EXIT_REFUSED => {
                let refusals = self.json()["refusals"].as_array().unwrap().clone();
                assert!(!refusals.is_empty(), "{what}: exit 3 without refusals");
            }
            other => panic!(
                "{what}: exit {other}, expected 1 or 3\nstdout: {}\nstderr: {}",
                self.stdout, self.stderr
            ),
        }
    }
}

/// `sidfs inspect --json IMAGE` under a time limit.
fn inspect(image: &Path) -> Outcome {
    let out = Command::new("timeout")
        .args([
            "-k",
            "5",
            &INSPECT_TIMEOUT_SECS.to_string(),
            SIDFS,
            "inspect",
            "--json",
        ])
        .arg(image)
        .output()
        .unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A manifest volume path (forward slashes) as inspect prints it, lower-cased for comparison.
fn volume_path(path: &str) -> String {
    path.replace('/', "\\").to_ascii_lowercase()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The manifest's refusal code and inspect's reason name the same thing.
fn same_refusal(manifest_code: &str, reason: &str) -> bool {
    match manifest_code {
        // Dirty with or without replayable logs is one builder variant.
        "hive-dirty" => reason == "hive-dirty" || reason == "hive-dirty-no-logs",
        code => code == reason,
    }
}

/// Checks one inspect report against the builder's manifest.
fn check_against_manifest(what: &str, report: &Value, manifest: &Value) {
    let variant = manifest["variant"].as_str().unwrap();
    // Partitions: index, position, size, type and file system as built.
    let table = &report["partition_table"];
    assert_eq!(table["kind"], manifest["layout"], "{what}");
    let built = manifest["partitions"].as_array().unwrap();
    let found = table["partitions"].as_array().unwrap();
    assert_eq!(found.len(), built.len(), "{what}: partition count");
    let windows_index = manifest["windows_partition"].as_u64().unwrap();
    for (b, f) in built.iter().zip(found) {
        assert_eq!(f["index"], b["index"], "{what}");
        assert_eq!(f["start"], b["start"], "{what}");
        assert_eq!(f["size"], b["size"], "{what}");
        let built_type = b["type"].as_str().unwrap().to_ascii_lowercase();
        let found_type = f["type_id"].as_str().unwrap().to_ascii_lowercase();
        if manifest["layout"] == "gpt" {
            assert_eq!(found_type, built_type, "{what}: partition type");
        } else {
            let byte = u8::from_str_radix(&built_type, 16).unwrap();
            assert_eq!(
                found_type,
                format!("0x{byte:02x}"),
                "{what}: partition type"
            );
        }
        let is_windows = b["index"].as_u64() == Some(windows_index);
        let fs = match b["filesystem"].as_str() {
            _ if variant == "bitlocker" && is_windows => "bitlocker",
            Some("vfat") => "fat",
            Some("ntfs") => "ntfs",
            _ => "unknown",
        };
        assert_eq!(
            f["file_system"], fs,
            "{what}: file system of {}",
            b["index"]
        );
        assert_eq!(
            f["holds_windows"].as_bool(),
            Some(is_windows && variant != "bitlocker"),
            "{what}"
        );
    }

    // Refusals: exactly the expected ones.
    let expected: Vec<String> = manifest["expected_refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_string())
        .collect();
    let got: Vec<String> = report["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "{what}: refusals {got:?}, expected {expected:?}"
    );
    for code in &expected {
        assert!(
            got.iter().any(|r| same_refusal(code, r)),
            "{what}: refusal {code} missing from {got:?}"
        );
    }
    for r in report["refusals"].as_array().unwrap() {
        let message = r["message"].as_str().unwrap();
        assert!(
            !message.contains('\n') && message.ends_with('.'),
            "{what}: {message}"
        );
    }
    if variant == "bitlocker" {
        assert!(report["windows"].is_null(), "{what}: nothing readable");
        return;
    }

    let w = &report["windows"];
    assert_eq!(w["partition_index"].as_u64(), Some(windows_index), "{what}");
    // Machine SID from both places, agreeing.
    let machine_sid = manifest["machine_sid"].as_str().unwrap();
    assert_eq!(w["machine_sid"], machine_sid, "{what}");
    let sources = &w["machine_sid_sources"];
    assert_eq!(sources["security"]["sid"], machine_sid, "{what}");
    assert_eq!(sources["sam"]["sid"], machine_sid, "{what}");
    assert_eq!(sources["agree"], true, "{what}");
    // Names, product, domain.
    assert_eq!(w["computer_name"], manifest["computer_name"], "{what}");
    assert_eq!(w["hostname"], manifest["computer_name"], "{what}");
    let product = &manifest["product"];
    assert_eq!(w["product_name"], product["name"], "{what}");
    assert_eq!(w["build"], product["current_build"], "{what}");
    assert_eq!(w["display_version"], product["display_version"], "{what}");
    assert_eq!(w["product_type"], product["product_type"], "{what}");
    assert_eq!(w["domain"]["name"], manifest["domain"]["name"], "{what}");
    assert_eq!(w["domain"]["sid"], manifest["domain"]["sid"], "{what}");
    assert_eq!(
        w["domain_controller"].as_bool(),
        Some(variant == "domain-controller"),
        "{what}"
    );
    // Local accounts: exactly the manifest's, by RID.
    let accounts_of = |list: &serde_json::Value| -> Vec<(u64, String, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["rid"].as_u64().unwrap(),
                    a["name"].as_str().unwrap().to_string(),
                    a["sid"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let mut accounts = accounts_of(&manifest["local_accounts"]);
    accounts.sort();
    let reported = accounts_of(&w["local_accounts"]);
    assert_eq!(reported, accounts, "{what}: local accounts");
    // Profiles: SID, path and hives.
    let profiles = manifest["profiles"].as_array().unwrap();
    let reported = w["profiles"].as_array().unwrap();
    assert_eq!(reported.len(), profiles.len(), "{what}: profiles");
    for p in profiles {
        let sid = p["sid"].as_str().unwrap();
        let r = reported
            .iter()
            .find(|r| r["sid"] == sid)
            .unwrap_or_else(|| panic!("{what}: profile {sid} not reported"));
        assert_eq!(r["path"], p["profile_image_path"], "{what}: {sid}");
        let mut want: Vec<String> = strings(&p["hives"])
            .iter()
            .map(|h| volume_path(h))
            .collect();
        let mut got: Vec<String> = strings(&r["hives"])
            .iter()
            .map(|h| volume_path(h))
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{what}: hives of profile {sid}");
        let local = sid.starts_with(&format!("{machine_sid}-"));
        let protect = format!("/microsoft/protect/{}/", sid.to_ascii_lowercase());
        let has_keys = manifest["files"].as_array().unwrap().iter().any(|f| {
            f["path"]
                .as_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains(&protect)
        });
        assert_eq!(
            r["dpapi_master_keys"].is_string(),
            has_keys,
            "{what}: {sid}"
        );
        let warned = report["warnings"].as_array().unwrap().iter().any(|w| {
            w["reason"] == "dpapi-master-keys" && w["message"].as_str().unwrap().contains(sid)
        });
        assert_eq!(warned, local && has_keys, "{what}: DPAPI warning for {sid}");
    }
    // Hives: every hive file the builder wrote, each with its state.
    let mut want: Vec<String> = strings(&manifest["hive_files"])
        .iter()
        .map(|h| volume_path(h))
        .collect();
    want.sort();
    let hives = w["hives"].as_array().unwrap();
    let mut got: Vec<String> = hives
        .iter()
        .map(|h| volume_path(h["path"].as_str().unwrap()))
        .collect();
    got.sort();
    assert_eq!(got, want, "{what}: hive files");
    let dirty_system = variant == "dirty-hive";
    for h in hives {
        let path = volume_path(h["path"].as_str().unwrap());
        let dirty =
            dirty_system && path == volume_path(manifest["hives"]["SYSTEM"].as_str().unwrap());
        let want = if dirty { "dirty" } else { "clean" };
        assert_eq!(h["state"], want, "{what}: state of {path}");
        assert!(h["size"].as_u64().unwrap() >= 4096, "{what}: {path}");
    }
    // The system hives have their (empty) LOG1/LOG2 listed.
    let system = hives.iter().find(|h| h["role"] == "system").unwrap();
    assert_eq!(system["logs"].as_array().unwrap().len(), 2, "{what}");
}

/// Every builder variant in both layouts: `sidfs inspect --json` reports exactly what the
/// manifest says, and exits 0 for the clean master and 3 for every refused one; the text form
/// puts the refusals first.
#[test]
fn inspect_matches_every_built_master() {
    let Some(builder) = builder() else { return };
    let scratch = Scratch::new("inspect-variants");
    for layout in LAYOUTS {
        for variant in VARIANTS {
            let what = format!("{layout}/{variant}");
            let (image, manifest) = build(&builder, &scratch, layout, variant);
            let outcome = inspect(&image);
            let want = if variant == "clean" { 0 } else { EXIT_REFUSED };
            assert_eq!(outcome.code, want, "{what}: {}", outcome.stderr);
            check_against_manifest(&what, &outcome.json(), &manifest);
            let text = Command::new(SIDFS)
                .arg("inspect")
                .arg(&image)
                .output()
                .unwrap();
            assert_eq!(text.status.code(), Some(want), "{what}: text mode");
            let text = String::from_utf8_lossy(&text.stdout);
            if variant == "clean" {
                assert!(text.trim_end().ends_with("Result: cloneable"), "{text}");
            } else {
                assert!(
                    text.lines().nth(2).unwrap().starts_with("REFUSED"),
                    "{text}"
                );
            }
            std::fs::remove_file(&image).unwrap();
        }
    }
}

/// The real Windows 10 NTFS volumes (a bare volume and a disk with an MBR): parsed, no Windows,
/// refused with `no-windows` only, no panic.
#[test]
fn inspect_real_volumes_without_windows() {
    if !have_tool("gzip") {
        return;
    }
    let scratch = Scratch::new("inspect-real");
    let disk = scratch.path("ntfs_index.raw");
    let raw = ok(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc '{}' > '{}'",
        realdata("ntfs-win10-volume/ntfs_index.raw.gz").display(),
        disk.display()
    )));
    assert!(raw.is_empty());
    for (image, kind) in [
        (realdata("ntfs-win10-volume/file_4k.bin"), "none"),
        (disk, "mbr"),
    ] {
        let outcome = inspect(&image);
        assert_eq!(outcome.code, EXIT_REFUSED, "{}", outcome.stderr);
        let report = outcome.json();
        assert_eq!(report["partition_table"]["kind"], kind);
        assert_eq!(
            report["partition_table"]["partitions"][0]["file_system"],
            "ntfs"
        );
        assert!(report["windows"].is_null());
        let reasons: Vec<&str> = report["refusals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reason"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, ["no-windows"]);
    }
}

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

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// A damaged copy of `master` made by `damage`, inspected.
fn damaged(scratch: &Scratch, master: &Path, name: &str, damage: impl FnOnce(&Path)) -> Outcome {
    let copy = scratch.path(name);
    ok(Command::new("cp")
        .arg("--sparse=always")
        .arg(master)
        .arg(&copy));
    damage(&copy);
    let outcome = inspect(&copy);
    std::fs::remove_file(&copy).unwrap();
    outcome
}

/// The image offset of the hive whose base-block FileName ends with `name` (the 64-byte field
/// keeps the tail of a long path), found by scanning the Windows partition for regf signatures
/// at 4 KiB boundaries.
fn find_hive(image: &Path, start: u64, size: u64, name: &str) -> u64 {
    let f = std::fs::File::open(image).unwrap();
    let mut block = vec![0u8; 4096];
    let mut at = start;
    while at < start + size {
        f.read_exact_at(&mut block, at).unwrap();
        if &block[..4] == b"regf" {
            let units: Vec<u16> = block[0x30..0x70]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            if String::from_utf16_lossy(&units).ends_with(name) {
                return at;
            }
        }
        at += 4096;
    }
    panic!("hive {name} not found in the image");
}

/// A corpus of damaged masters: truncated, zeroed boot sector, corrupt MFT records and fixups,
/// looping data runs, an MBR whose extended chain loops, and a SYSTEM hive with a bad cell size
/// or a cyclic subkey list. Each gives one clear error line (exit 1) or a refusal (exit 3),
/// never a panic or a hang.
#[test]
fn inspect_damaged_masters() {
    let Some(builder) = builder() else { return };
    let scratch = Scratch::new("inspect-damaged");
    let (master, manifest) = build(&builder, &scratch, "gpt", "clean");
    let windows = manifest["windows_partition"].as_u64().unwrap();
    let part = manifest["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["index"].as_u64() == Some(windows))
        .unwrap();
    let start = part["start"].as_u64().unwrap();
    let size = part["size"].as_u64().unwrap();
    let volume = &manifest["windows_volume"];
    let cluster = volume["cluster_size"].as_u64().unwrap();
    let record_size = volume["mft_record_size"].as_u64().unwrap();
    let mft = start + volume["mft_lcn"].as_u64().unwrap() * cluster;
    let image_size = std::fs::metadata(&master).unwrap().len();

    let mut outcomes = Vec::new();
    for len in [
        0,
        300,
        512 + 92,
        64 << 10,
        start + 4096,
        start + size / 2,
        image_size - (2 << 20),
    ] {
        let o = damaged(&scratch, &master, "truncated.img", |p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len)
                .unwrap()
        });
        outcomes.push((format!("truncated to {len}"), o));
    }
    outcomes.push((
        "zeroed Windows boot sector".into(),
        damaged(&scratch, &master, "boot.img", |p| {
            write_at(p, start, &[0; 512])
        }),
    ));
    for record in [0u64, 3, 5, 9] {
        let at = mft + record * record_size;
        outcomes.push((
            format!("torn fixup in MFT record {record}"),
            damaged(&scratch, &master, "fixup.img", |p| {
                let mut b = read_at(p, at + 510, 2);
                b[0] ^= 0x5A;
                write_at(p, at + 510, &b);
            }),
        ));
        outcomes.push((
            format!("garbage header in MFT record {record}"),
            damaged(&scratch, &master, "record.img", |p| {
                write_at(p, at + 4, &[0xFF; 44]);
            }),
        ));
    }
    // $MFT's own $DATA runs: every run points at the same clusters again (a loop), and a run
    // far past the end of the volume.
    let record0 = read_at(&master, mft, record_size as usize);
    let mut attr = u16_at(&record0, 0x14);
    let mut runs_at = None;
    while attr + 0x22 < 510 {
        let kind = u32_at(&record0, attr);
        if kind == 0xFFFF_FFFF {
            break;
        }
        if kind == 0x80 && record0[attr + 8] == 1 {
            runs_at = Some(attr + u16_at(&record0, attr + 0x20));
            break;
        }
        attr += u32_at(&record0, attr + 4) as usize;
    }
    let runs_at = mft + runs_at.expect("$MFT has a non-resident $DATA") as u64;
    outcomes.push((
        "$MFT data runs looping over the same clusters".into(),
        damaged(&scratch, &master, "loop-runs.img", |p| {
            // Header 0x11: 1-byte length, 1-byte LCN delta; delta 0 repeats the clusters.
            let first = read_at(p, runs_at, 24);
            let mut runs = first[..first[0] as usize % 16 + first[0] as usize / 16 + 1].to_vec();
            for _ in 0..16 {
                runs.extend_from_slice(&[0x11, 0x01, 0x00]);
            }
            runs.push(0);
            write_at(p, runs_at, &runs[..runs.len().min(64)]);
        }),
    ));
    outcomes.push((
        "$MFT data run past the end of the volume".into(),
        damaged(&scratch, &master, "far-runs.img", |p| {
            write_at(
                p,
                runs_at,
                &[0x48, 0x40, 0, 0, 0, 0, 0, 0, 0x7F, 0, 0, 0, 0],
            );
        }),
    ));
    // The SYSTEM hive: a bad cell size in its first cell, and a subkey list that points back at
    // the root key.
    let hive = find_hive(&master, start, size, r"\Config\SYSTEM");
    outcomes.push((
        "SYSTEM hive with a bad cell size".into(),
        damaged(&scratch, &master, "cell.img", |p| {
            write_at(p, hive + 4096 + 32, &0x7FFF_FFF3u32.to_le_bytes());
        }),
    ));
    outcomes.push((
        "SYSTEM hive with a cyclic subkey list".into(),
        damaged(&scratch, &master, "cycle.img", |p| {
            let base = read_at(p, hive, 4096);
            let root = u32_at(&base, 0x24) as u64;
            let nk = read_at(p, hive + 4096 + root, 0x50);
            assert_eq!(&nk[4..6], b"nk");
            let list = u32_at(&nk, 4 + 0x1C) as u64;
            // Every entry of the root's subkey list now names the root itself.
            let header = read_at(p, hive + 4096 + list, 8);
            let count = u16_at(&header, 6) as u64;
            let stride = if &header[4..6] == b"li" { 4 } else { 8 };
            for i in 0..count {
                write_at(
                    p,
                    hive + 4096 + list + 8 + i * stride,
                    &(root as u32).to_le_bytes(),
                );
            }
        }),
    ));
    // An MBR whose extended partition's EBR links to itself.
    let mbr = scratch.path("mbr-loop.img");
    std::fs::File::create(&mbr)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let mut sector = vec![0u8; 512];
    sector[0x1BE + 4] = 0x05;
    sector[0x1BE + 8..0x1BE + 12].copy_from_slice(&2048u32.to_le_bytes());
    sector[0x1BE + 12..0x1BE + 16].copy_from_slice(&4096u32.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xAA;
    write_at(&mbr, 0, &sector);
    let mut ebr = vec![0u8; 512];
    ebr[0x1BE + 4] = 0x07;
    ebr[0x1BE + 8..0x1BE + 12].copy_from_slice(&63u32.to_le_bytes());
    ebr[0x1BE + 12..0x1BE + 16].copy_from_slice(&100u32.to_le_bytes());
    ebr[0x1CE + 4] = 0x05;
    // Link relative to the extended partition's start: 0 = this same EBR.
    ebr[0x1CE + 12..0x1CE + 16].copy_from_slice(&100u32.to_le_bytes());
    ebr[510] = 0x55;
    ebr[511] = 0xAA;
    write_at(&mbr, 2048 * 512, &ebr);
    outcomes.push(("MBR extended chain looping to itself".into(), inspect(&mbr)));

    let mut summary = String::new();
    for (what, outcome) in &outcomes {
        outcome.assert_error_or_refusal(what);
        summary.push_str(&format!("{what}: exit {}\n", outcome.code));
    }
    eprintln!("{summary}");
    // The hive corruptions are found: SYSTEM is named unreadable.
    for (what, outcome) in outcomes
        .iter()
        .filter(|(w, _)| w.starts_with("SYSTEM hive"))
    {
        assert_eq!(outcome.code, EXIT_REFUSED, "{what}: {}", outcome.stderr);
        let report = outcome.json();
        let system = report["windows"]["hives"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["role"] == "system")
            .unwrap()
            .clone();
        assert_eq!(system["state"], "unreadable", "{what}");
        assert!(
            report["refusals"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["reason"] == "unreadable"
                    && r["message"].as_str().unwrap().contains("SYSTEM")),
            "{what}: {report}"
        );
    }
}

/// A regression from fuzzing (scripts/fuzz, target mft_record): MFT records whose directory
/// index root declares a 2.8 GB index block made the `ntfs` crate allocate that much for one
/// block. Under a 2 GB address-space limit, `sidfs inspect` must end with an error line, not
/// abort. The fixture is the fuzzer's input: the first MFT records of a small mkntfs volume.
#[test]
fn fuzzed_mft_records_are_an_error_not_a_huge_allocation() {
    if !have_tool("mkntfs") {
        return;
    }
    let s = Scratch::new("fuzz-mft");
    let vol = s.path("v.img");
    std::fs::File::create(&vol)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    ok(Command::new("mkntfs")
        .args(["-F", "-Q", "-q", "-c", "4096"])
        .arg(&vol));
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/mount-tests/fixtures/fuzz-mft-huge-index-block.bin"
    ))
    .unwrap();
    let mut bytes = std::fs::read(&vol).unwrap();
    // Boot sector: bytes per sector @0x0B, sectors per cluster @0x0D, MFT LCN @0x30.
    let sector = u64::from(u16::from_le_bytes([bytes[0x0B], bytes[0x0C]]));
    let cluster = sector * u64::from(bytes[0x0D]);
    let lcn = u64::from_le_bytes(bytes[0x30..0x38].try_into().unwrap());
    let mft = (lcn * cluster) as usize;
    bytes[mft..mft + fixture.len()].copy_from_slice(&fixture);
    std::fs::write(&vol, &bytes).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2000000; exec \"$0\" inspect \"$1\"")
        .arg(SIDFS)
        .arg(&vol)
        .output()
        .unwrap();
    let code = out.status.code();
    assert!(
        matches!(code, Some(1) | Some(3)),
        "inspect ended with {:?} (a signal means an abort): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if code == Some(1) {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// Prove that on a Windows master inspect refuses a store in mount's own words: a SRUDB.dat
/// made to hold the master's SID by a plain byte replacement (its page checksums stale) and an
/// ESE transaction log beside a good SRUDB.dat that holds the SID are each inspect's one
/// `store-not-rewritable` refusal (exit 3), listed as refused, and `sidfs mount` refuses the
/// master with the line "sidfs: " and that same sentence.
#[test]
fn what_mount_refuses_on_a_windows_master_inspect_refuses_in_its_words() {
    use crate::common::{built_master_sid, one_line_error, real_srudb, sid_forms};
    use crate::stores::{inspect, refused_mount, tools_present, windows_master_with};
    use crate::stores::{SRUDB_PATH, SRUM_SID};
    if !tools_present() {
        return;
    }
    let s = Scratch::new("inspect-windows-refused");
    let old = built_master_sid();
    let (_, _, srum_bin) = sid_forms(SRUM_SID);
    let (_, _, old_bin) = sid_forms(&old);
    let good = real_srudb();
    let mut stale = good.clone();
    while let Some(at) = stale.windows(12).position(|w| w == srum_bin) {
        stale[at..at + 12].copy_from_slice(&old_bin);
    }
    let mut log = vec![0x33u8; 128 << 10];
    log[0x5000..0x5000 + old_bin.len()].copy_from_slice(&old_bin);
    let (bad_ese, _) = windows_master_with(&s, "bad-ese.img", &[(SRUDB_PATH, &stale)]);
    let (bad_log, _) = windows_master_with(
        &s,
        "bad-log.img",
        &[(SRUDB_PATH, &good), ("Windows/System32/sru/SRU.log", &log)],
    );
    for (seed, master, what, kind) in [
        (71, &bad_ese, "SRUDB.dat", "ese"),
        (72, &bad_log, r"sru\SRU.log", "ese-log"),
    ] {
        let (code, report) = inspect(master);
        assert_eq!(code, EXIT_REFUSED, "{what}: {report}");
        let refusals = report["refusals"].as_array().unwrap();
        assert_eq!(refusals.len(), 1, "{what}: {refusals:?}");
        assert_eq!(refusals[0]["reason"], "store-not-rewritable", "{what}");
        let message = refusals[0]["message"].as_str().unwrap().to_string();
        assert!(message.contains(what), "{message}");
        let stores = report["windows"]["stores"].as_array().unwrap();
        let listed = stores
            .iter()
            .find(|st| st["kind"] == kind && st["path"].as_str().unwrap().ends_with(what))
            .unwrap_or_else(|| panic!("{what} not listed: {stores:?}"));
        assert_eq!(
            listed["clone"].as_str().unwrap(),
            format!("refused: {message}"),
            "{listed}"
        );
        let out = refused_mount(
            master,
            &s.mkdir(&format!("mp-{seed}")),
            seed,
            &s.path(&format!("state-{seed}")),
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(
            one_line_error(&out),
            format!("sidfs: {message}"),
            "inspect and mount differ"
        );
    }
}

/// Prove that on a Windows master a shadow copy store holding the machine SID is inspect's one
/// `store-not-rewritable` refusal (exit 3) in mount's words, besides the shadow-copy warning, and
/// that `sidfs mount` refuses the master with "sidfs: " and that same sentence.
#[test]
fn a_shadow_store_on_a_windows_master_is_refused_by_inspect_in_mounts_words() {
    use crate::common::{built_master_sid, one_line_error, sid_forms};
    use crate::stores::{inspect, refused_mount, tools_present, windows_master_with};
    if !tools_present() {
        return;
    }
    let s = Scratch::new("inspect-windows-shadow");
    let old = built_master_sid();
    let (_, _, old_bin) = sid_forms(&old);
    let mut store = vec![0x5au8; 256 << 10];
    store[0x9000..0x9000 + old_bin.len()].copy_from_slice(&old_bin);
    let (master, _) = windows_master_with(&s, "shadow.img", &[(crate::shadow::STORE, &store)]);
    let (code, report) = inspect(&master);
    assert_eq!(code, EXIT_REFUSED, "{report}");
    let refusals = report["refusals"].as_array().unwrap();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["reason"], "store-not-rewritable");
    let message = refusals[0]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("3808876b-c176-4e48-b7ae-04046e6cc752"),
        "{message}"
    );
    assert!(
        report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["reason"] == "shadow-copies"),
        "{report}"
    );
    let out = refused_mount(&master, &s.mkdir("mp"), 73, &s.path("state"), &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        one_line_error(&out),
        format!("sidfs: {message}"),
        "inspect and mount differ"
    );
}
