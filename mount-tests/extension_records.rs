//! Built masters whose SID carriers ntfs-3g spread over MFT extension records (issue 9 item 6;
//! `build-test-master --variant ext-*`, docs/TEST-MASTERS.md): a hive whose `$DATA` continues
//! in extents of extension records, a SID-named directory's `$I30`, `$MFT` itself with an
//! attribute list, and old record copies in free clusters. Each test first checks with an
//! independent tool (ntfsinfo, or the clone checker's scan.py) that the master really has that
//! layout, then clones it: ntfssecaudit must find no error, the independent clone checker must
//! say PASS, and `sidfs verify` must be clean.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::clone_check::{clone_check, mounted_sids, tools_present, verify_clean};
use crate::common::*;

const KEEP: &[&str] = &["--keep", "hostname,machine-guid,wsus,msdtc"];

/// The master of `variant`, built once per version of the builder and kept under
/// target/testmasters (the build fragments the volume through thousands of ntfs-3g writes).
fn cached_master(variant: &str) -> (PathBuf, serde_json::Value) {
    let root = env!("CARGO_MANIFEST_DIR");
    let key = ok(Command::new("sh").arg("-c").arg(format!(
        "cat {root}/scripts/build-test-master {root}/scripts/testmaster/*.py | sha256sum"
    )));
    let dir = Path::new(root).join("target/testmasters");
    std::fs::create_dir_all(&dir).unwrap();
    let stem = format!("{variant}-{}", &key[..16]);
    let img = dir.join(format!("{stem}.img"));
    let json = dir.join(format!("{stem}.img.json"));
    if !img.exists() || !json.exists() {
        // Masters of older builder versions are dropped.
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{variant}-")) && !name.starts_with(&stem) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let tmp = dir.join(format!("{stem}.partial.img"));
        ok(Command::new(format!("{root}/scripts/build-test-master"))
            .args(["--variant", variant])
            .arg(&tmp));
        std::fs::rename(format!("{}.json", tmp.display()), &json).unwrap();
        std::fs::rename(&tmp, &img).unwrap();
    }
    let manifest = serde_json::from_slice(&read_all(&json)).unwrap();
    (img, manifest)
}

/// One attribute as `ntfsinfo -v` dumps it: type name, the MFT record it is in, its lowest VCN
/// (non-resident attributes only).
#[derive(Debug)]
struct Dumped {
    kind: String,
    record: u64,
    lowest_vcn: Option<u64>,
}

/// The inode and the attributes `ntfsinfo -v ARGS DEV` dumps. ntfsinfo 2022.10.3 cannot read
/// an `$INDEX_ALLOCATION` whose `$INDEX_ROOT` is in an extension record ("Corrupt attribute
/// 0xa0") and then exits non-zero, after dumping every attribute header: the status is ignored,
/// the headers are what is checked.
fn ntfsinfo(dev: &str, args: &[&str]) -> (u64, Vec<Dumped>, String) {
    let out = run(Command::new("ntfsinfo").arg("-v").args(args).arg(dev));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let number = |s: &str| s.split_whitespace().next().and_then(|n| n.parse().ok());
    let mut inode = None;
    let mut attrs: Vec<Dumped> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Dumping Inode ") {
            inode = number(rest);
        } else if let Some(rest) = line.strip_prefix("Dumping attribute ") {
            let kind = rest.split_whitespace().next().unwrap_or("").to_string();
            let record = rest
                .split_once("from mft record ")
                .and_then(|(_, r)| number(r))
                .unwrap_or_else(|| panic!("no record in {line:?}"));
            attrs.push(Dumped {
                kind,
                record,
                lowest_vcn: None,
            });
        } else if let Some(rest) = line.trim().strip_prefix("Lowest VCN") {
            if let Some(a) = attrs.last_mut() {
                a.lowest_vcn = number(rest);
            }
        }
    }
    let inode = inode.unwrap_or_else(|| panic!("ntfsinfo {args:?} dumped no inode:\n{text}"));
    (inode, attrs, text)
}

/// The attributes of `kind` that are not in the base record `inode`.
fn in_extensions<'a>(inode: u64, attrs: &'a [Dumped], kind: &str) -> Vec<&'a Dumped> {
    attrs
        .iter()
        .filter(|a| a.kind == kind && a.record != inode)
        .collect()
}

fn has_attribute_list(inode: u64, attrs: &[Dumped]) -> bool {
    attrs
        .iter()
        .any(|a| a.kind == "$ATTRIBUTE_LIST" && a.record == inode)
}

/// Clones `master` (a built master), runs ntfssecaudit on the clone, the independent clone
/// checker and `sidfs verify`; returns the mount for further checks and the new SID.
fn clone_and_check(
    s: &Scratch,
    master: &Path,
    manifest: &serde_json::Value,
    seed: u64,
) -> (Mounted, String) {
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let (start, size) = windows_partition(manifest);
    let mp = s.mkdir("mp");
    let m = Mounted::new(master, &mp, seed, &s.path("state"), KEEP);
    let (o, new) = mounted_sids(&m);
    assert_eq!(o, old);
    {
        let dev = LoopDev::new(&m.disk(), start, size);
        audit_clean(&dev.0);
    }
    let partition = manifest["windows_partition"].as_u64();
    clone_check(s, master, &m.disk(), &old, &new, partition);
    verify_clean(&m, &old);
    (m, new)
}

/// `ntfssecaudit -a` finds no error. Its one known artefact on volumes ntfs-3g wrote
/// (docs/TEST-MASTERS.md: it reads past the end of `$SDS-2`, "Security attribute is too long")
/// is accepted only when both `$SDS` copies hold the same number of entries.
fn audit_clean(dev: &str) {
    let out = run(Command::new("ntfssecaudit").arg("-a").arg(dev));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("No errors were found"),
        "ntfssecaudit:\n{text}"
    );
    let entries = |copy: &str| {
        text.lines()
            .find(|l| l.ends_with(&format!("deleted entries in {copy}")))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no entry count for {copy}:\n{text}"))
    };
    for line in text.lines().filter(|l| l.contains(" errors in ")) {
        let artefact =
            line == "1 errors in $SDS-2" && text.contains("Security attribute is too long");
        assert!(
            line.starts_with("0 errors") || artefact,
            "ntfssecaudit: {line}\n{text}"
        );
        if artefact {
            assert_eq!(
                entries("$SDS-1").replace("$SDS-1", ""),
                entries("$SDS-2").replace("$SDS-2", ""),
                "{text}"
            );
        }
    }
}

fn tools() -> bool {
    tools_present() && have_tool("ntfsinfo") && have_tool("hivexregedit")
}

#[test]
fn hive_continued_in_extension_records_is_rewritten() {
    if !tools() || !have_tool("hivexget") {
        return;
    }
    let s = Scratch::new("ext-hive");
    let (master, manifest) = cached_master("ext-hive");
    let (start, size) = windows_partition(&manifest);
    let software = "/Windows/System32/config/SOFTWARE";
    {
        let dev = LoopDev::new(&master, start, size);
        let (inode, attrs, text) = ntfsinfo(&dev.0, &["-F", software]);
        assert!(
            has_attribute_list(inode, &attrs),
            "no attribute list:\n{text}"
        );
        let tails = in_extensions(inode, &attrs, "$DATA");
        assert!(
            tails.iter().any(|a| a.lowest_vcn.unwrap_or(0) > 0),
            "SOFTWARE's $DATA does not continue in an extension record:\n{text}"
        );
    }
    let (m, new) = clone_and_check(&s, &master, &manifest, 41);
    // hivex reads the value that the builder wrote last, in the tail of the file.
    let dev = LoopDev::new(&m.disk(), start, size);
    let nm = NtfsMount::new(&dev.0, &s.path("ro"));
    let copy = s.path("SOFTWARE");
    std::fs::copy(nm.0.join(&software[1..]), &copy).unwrap();
    let value = ok(Command::new("hivexget")
        .arg(&copy)
        .arg(r"Microsoft\Windows\CurrentVersion\Authentication\LogonUI\SessionData\1")
        .arg("LoggedOnUserSID"));
    assert_eq!(value.trim(), format!("{new}-1001"));
    drop(nm);
    drop(dev);
    m.unmount();
}

#[test]
fn sid_named_directory_index_in_extension_records_is_renamed() {
    if !tools() {
        return;
    }
    let s = Scratch::new("ext-sid-dir");
    let (master, manifest) = cached_master("ext-sid-dir");
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let (start, size) = windows_partition(&manifest);
    {
        let dev = LoopDev::new(&master, start, size);
        for dir in [
            "/$Recycle.Bin".to_string(),
            format!("/$Recycle.Bin/{old}-1001"),
        ] {
            let (inode, attrs, text) = ntfsinfo(&dev.0, &["-F", &dir]);
            assert!(has_attribute_list(inode, &attrs), "{dir}: no list:\n{text}");
            for kind in ["$FILE_NAME", "$INDEX_ROOT"] {
                assert!(
                    !in_extensions(inode, &attrs, kind).is_empty(),
                    "{dir}: {kind} is in the base record:\n{text}"
                );
            }
            assert!(
                attrs.iter().any(|a| a.kind == "$INDEX_ALLOCATION"),
                "{dir}: no index blocks:\n{text}"
            );
        }
    }
    let (m, new) = clone_and_check(&s, &master, &manifest, 42);
    let dev = LoopDev::new(&m.disk(), start, size);
    let nm = NtfsMount::new(&dev.0, &s.path("ro"));
    let renamed = nm.0.join(format!("$Recycle.Bin/{new}-1001"));
    let entries = std::fs::read_dir(&renamed).unwrap().count();
    assert_eq!(entries, 301, "{}", renamed.display());
    drop(nm);
    drop(dev);
    m.unmount();
}

#[test]
fn mft_with_an_attribute_list_is_followed() {
    if !tools() {
        return;
    }
    let s = Scratch::new("ext-mft");
    let (master, manifest) = cached_master("ext-mft");
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let (start, size) = windows_partition(&manifest);
    {
        let dev = LoopDev::new(&master, start, size);
        let (inode, attrs, text) = ntfsinfo(&dev.0, &["-i", "0"]);
        assert_eq!(inode, 0);
        assert!(has_attribute_list(0, &attrs), "$MFT has no list:\n{text}");
        let tail = in_extensions(0, &attrs, "$DATA")
            .iter()
            .filter_map(|a| a.lowest_vcn)
            .min()
            .unwrap_or_else(|| panic!("$MFT's $DATA is all in record 0:\n{text}"));
        assert!(tail > 0, "{text}");
        // The SID-named directory and its file are in records only that extent maps.
        let vol = &manifest["windows_volume"];
        let per_cluster =
            vol["cluster_size"].as_u64().unwrap() / vol["mft_record_size"].as_u64().unwrap();
        let dir = format!("/Users/Public/AccountPictures/{old}-1001");
        for path in [dir.clone(), format!("{dir}/owner.txt")] {
            let (n, _, text) = ntfsinfo(&dev.0, &["-F", &path]);
            assert!(
                n / per_cluster >= tail,
                "{path} is record {n}, mapped from record 0 (extent from VCN {tail}):\n{text}"
            );
        }
    }
    let (m, new) = clone_and_check(&s, &master, &manifest, 43);
    let dev = LoopDev::new(&m.disk(), start, size);
    let nm = NtfsMount::new(&dev.0, &s.path("ro"));
    let text = read_all(
        &nm.0
            .join(format!("Users/Public/AccountPictures/{new}-1001/owner.txt")),
    );
    assert_eq!(
        text,
        format!("Account picture owner {new}-1001\r\n").into_bytes()
    );
    drop(nm);
    drop(dev);
    m.unmount();
}

#[test]
fn record_copies_in_free_clusters_are_rewritten() {
    if !tools() {
        return;
    }
    let s = Scratch::new("ext-copies");
    let (master, manifest) = cached_master("ext-record-copies");
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let scan = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/clone-check/scan.py");
    let out = ok(Command::new("/usr/bin/python3")
        .arg(scan)
        .arg(&master)
        .args(["--sid", &old, "--json", "--list", "100000"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let free: Vec<&serde_json::Value> = report["matches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["category"] == "unallocated")
        .collect();
    assert!(
        free.len() >= 8,
        "too few SIDs in free clusters: {:?}",
        report["by_category"]
    );
    assert!(
        free.iter().any(|m| m["fixup_hidden"] == true),
        "no record copy in free clusters hides the SID under a fixup slot: {free:?}"
    );
    let (m, _) = clone_and_check(&s, &master, &manifest, 44);
    m.unmount();
}
