//! The SID rewrite through real mounts, with independent tools as oracles: hivex for the hives,
//! ntfs-3g (`ntfssecaudit`, `system.ntfs_acl`) for NTFS, `sidfs verify` for residual SIDs, and
//! byte equality between the mount, an export and a remount.

use std::process::Command;

use crate::common::*;

/// `hivexregedit --export` of a hive file, as text.
fn hive_export(path: &std::path::Path) -> String {
    ok(Command::new("hivexregedit")
        .arg("--export")
        .arg(path)
        .arg("\\"))
}

/// The master's export with every form of `old` replaced by `new`: what the clone's export must be.
fn expected_export(master_export: &str, old: &str, new: &str) -> String {
    let (oa, ou, ob) = sid_forms(old);
    let (na, nu, nb) = sid_forms(new);
    master_export
        .replace(old, new)
        .replace(&hex_csv(&ou), &hex_csv(&nu))
        .replace(&hex_csv(&ob), &hex_csv(&nb))
        .replace(&hex_csv(&oa), &hex_csv(&na))
}

/// Prove, on a GPT and an MBR test master, that a mounted clone carries the new SID everywhere
/// and nowhere the old one, that every hive is what hivex exports from the master with only the
/// SID changed, that NTFS security descriptors are the master's with the SID replaced and
/// ntfssecaudit finds no error, that the mount equals `sidfs export` and a remount, and that the
/// master never changes.
#[test]
fn clone_has_new_sid_everywhere_and_valid_structures() {
    for tool in [
        "hivexregedit",
        "ntfs-3g",
        "ntfssecaudit",
        "getfattr",
        "losetup",
    ] {
        if !have_tool(tool) {
            return;
        }
    }
    for layout in ["gpt", "mbr"] {
        let s = Scratch::new(&format!("rewrite-{layout}"));
        let (master, manifest) = build_master(&s, "master.img", &["--layout", layout]);
        let before = sha256(&master);
        let old = manifest["machine_sid"].as_str().unwrap().to_string();
        let mp = s.mkdir("mp");
        let m = Mounted::new(&master, &mp, 7, &s.path("state"), &[]);
        let info = m.clone_info();
        assert_eq!(info["old_sid"].as_str().unwrap(), old);
        let new = m.new_sid();
        assert_ne!(new, old);
        assert_eq!(new.len(), old.len());

        // No residual SID, every hive sound (sidfs verify), and the new SID where the old was.
        ok(sidfs()
            .arg("verify")
            .arg(m.disk())
            .arg("--old-sid")
            .arg(&old));
        let clone_bytes = read_all(&m.disk());
        let master_bytes = read_all(&master);
        let (oa, ou, ob) = sid_forms(&old);
        let (na, nu, nb) = sid_forms(&new);
        assert_eq!(
            count(&clone_bytes, &oa) + count(&clone_bytes, &ou) + count(&clone_bytes, &ob),
            0
        );
        assert!(count(&clone_bytes, &na) >= count(&master_bytes, &oa));
        assert!(count(&clone_bytes, &nu) >= count(&master_bytes, &ou));
        assert!(count(&clone_bytes, &nb) >= count(&master_bytes, &ob));
        // The AD domain's SID is never touched.
        let domain = manifest["domain"]["sid"].as_str().unwrap();
        let (da, du, db) = sid_forms(domain);
        assert_eq!(count(&clone_bytes, &da), count(&master_bytes, &da));
        assert_eq!(count(&clone_bytes, &du), count(&master_bytes, &du));
        assert_eq!(count(&clone_bytes, &db), count(&master_bytes, &db));

        // Mount == export == remount.
        let export = s.path("export.img");
        ok(sidfs()
            .arg("export")
            .arg(&master)
            .arg(&export)
            .args(["--seed", "7"]));
        assert!(
            read_all(&export) == clone_bytes,
            "export differs from the mounted clone"
        );

        // Independent oracles on the clone's NTFS volume.
        let (start, size) = windows_partition(&manifest);
        let clone_dev = LoopDev::new(&m.disk(), start, size);
        let master_dev = LoopDev::new(&master, start, size);
        // ntfs-3g-written volumes make ntfssecaudit read past the end of the second $SDS copy
        // ("Security attribute is too long", on the master too): the clone's audit must equal
        // the master's, and find no error in $SDS-1, $SII and $SDH.
        let audit = |dev: &LoopDev| {
            let out = ok(Command::new("ntfssecaudit").arg("-a").arg(&dev.0));
            out.lines()
                .filter(|l| !l.contains(&dev.0) && !l.starts_with("Valid entry"))
                .map(|l| {
                    if l.contains("too long") {
                        "** Security attribute is too long".to_string()
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (clone_audit, master_audit) = (audit(&clone_dev), audit(&master_dev));
        assert_eq!(
            clone_audit, master_audit,
            "ntfssecaudit differs between clone and master"
        );
        for part in ["$SDS-1", "$SII", "$SDH"] {
            assert!(
                clone_audit.contains(&format!("0 errors in {part}")),
                "ntfssecaudit on the clone:\n{clone_audit}"
            );
        }
        let cm = NtfsMount::new(&clone_dev.0, &s.path("clone-ntfs"));
        let mm = NtfsMount::new(&master_dev.0, &s.path("master-ntfs"));
        // The scheduled task's XML, through ntfs-3g: its TaskCache `Hash` must follow it
        // (SHA-256 of the file without its BOM, the master's convention).
        let task_path = manifest["task"]["path"].as_str().unwrap();
        let task_hash = |root: &std::path::Path| {
            let xml = read_all(&root.join(task_path));
            let body = xml.strip_prefix(&[0xFF, 0xFE]).unwrap_or(&xml).to_vec();
            let tmp = s.path("task-body");
            std::fs::write(&tmp, body).unwrap();
            let hex = sha256(&tmp);
            (0..32)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let (master_task_hash, clone_task_hash) = (task_hash(&mm.0), task_hash(&cm.0));
        assert_eq!(
            hex_csv(&master_task_hash).replace(',', ""),
            manifest["task"]["hash_sha256"].as_str().unwrap()
        );
        assert_ne!(
            master_task_hash, clone_task_hash,
            "the task XML names the SID, so its hash changes"
        );
        // Hives: hivex exports equal the master's with the SID (and the task hash) replaced.
        for h in manifest["hive_files"].as_array().unwrap() {
            let path = h["path"].as_str().or_else(|| h.as_str()).unwrap();
            let c = sorted_sections(&hive_export(&cm.0.join(path)));
            let want = expected_export(&hive_export(&mm.0.join(path)), &old, &new)
                .replace(&hex_csv(&master_task_hash), &hex_csv(&clone_task_hash));
            // The other identifiers (computer name, GUIDs) change too: mount-tests/identity.rs.
            let want = map_identifiers(&want, &info);
            assert!(c == want, "hive {path}: hivex export of the clone differs from the master's with the SID and identifiers replaced");
        }
        // Security descriptors: the master's with the SID replaced.
        for sd in manifest["security_descriptors"].as_array().unwrap() {
            let path = sd["path"].as_str().unwrap();
            let acl = |root: &std::path::Path, path: &str| -> Vec<u8> {
                let out = Command::new("getfattr")
                    .args(["--only-values", "-n", "system.ntfs_acl"])
                    .arg(root.join(path))
                    .output()
                    .unwrap();
                assert!(out.status.success(), "getfattr {path}");
                out.stdout
            };
            let mut want = acl(&mm.0, path);
            // SID-named directories carry the new name in the clone.
            let got = acl(&cm.0, &path.replace(&old, &new));
            let n = want.len();
            for i in 0..n.saturating_sub(11) {
                if want[i..i + 12] == ob[..] {
                    want[i..i + 12].copy_from_slice(&nb);
                }
            }
            assert!(
                got == want,
                "security descriptor of {path} is not the master's with the SID replaced"
            );
        }
        // SID-named paths carry the new SID.
        for p in manifest["sid_named_paths"].as_array().unwrap() {
            let path = p["path"].as_str().unwrap();
            let renamed = if p["machine_sid"].as_bool() == Some(true) {
                path.replace(&old, &new)
            } else {
                path.to_string()
            };
            assert!(
                cm.0.join(&renamed).exists(),
                "{renamed} missing in the clone"
            );
            if renamed != path {
                assert!(
                    !cm.0.join(path).exists(),
                    "{path} still present in the clone"
                );
            }
        }
        drop(cm);
        drop(mm);
        drop(clone_dev);
        drop(master_dev);
        m.unmount();
        let m = Mounted::new(&master, &mp, 7, &s.path("state"), &[]);
        assert!(read_all(&m.disk()) == clone_bytes, "remount differs");
        assert_eq!(m.clone_info()["new_sid"].as_str().unwrap(), new);
        m.unmount();
        assert_eq!(sha256(&master), before, "the master must never change");
    }
}

/// Prove that seeds give distinct, stable SIDs, and that a clone of a clone verifies clean
/// against its own master's SID.
#[test]
fn seeds_are_stable_and_clones_of_clones_work() {
    let s = Scratch::new("seeds");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let a = Mounted::new(&master, &s.mkdir("a"), 7, &s.path("sa"), &[]);
    let b = Mounted::new(&master, &s.mkdir("b"), 8, &s.path("sb"), &[]);
    let sid_a = a.clone_info()["new_sid"].as_str().unwrap().to_string();
    // `sidfs inspect` of the clone: the new SID from both SECURITY and SAM, the same accounts
    // with their SIDs moved to the new domain, the AD domain unchanged, still cloneable.
    let out = run(sidfs().arg("inspect").arg("--json").arg(a.disk()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clone_report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = run(sidfs().arg("inspect").arg("--json").arg(&master));
    let master_report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (cw, mw) = (&clone_report["windows"], &master_report["windows"]);
    assert_eq!(cw["machine_sid"].as_str().unwrap(), sid_a);
    assert_eq!(cw["machine_sid_sources"]["agree"], true);
    assert_eq!(cw["domain"], mw["domain"]);
    let accounts = |w: &serde_json::Value| -> Vec<(String, u64, String)> {
        w["local_accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let sid = a["sid"].as_str().unwrap().to_string();
                (
                    a["name"].as_str().unwrap().to_string(),
                    a["rid"].as_u64().unwrap(),
                    sid,
                )
            })
            .collect()
    };
    let want: Vec<_> = accounts(mw)
        .into_iter()
        .map(|(n, r, sid)| (n, r, sid.replace(&old, &sid_a)))
        .collect();
    assert_eq!(accounts(cw), want);
    let sid_b = b.clone_info()["new_sid"].as_str().unwrap().to_string();
    assert_ne!(sid_a, sid_b, "two seeds gave the same SID");
    // Same seed, fresh state: same SID.
    let a2 = Mounted::new(&master, &s.mkdir("a2"), 7, &s.path("sa2"), &[]);
    assert_eq!(a2.clone_info()["new_sid"].as_str().unwrap(), sid_a);
    a2.unmount();
    b.unmount();
    // A clone of clone a, mounted from a's disk.
    let cc = Mounted::new(&a.disk(), &s.mkdir("cc"), 1, &s.path("scc"), &[]);
    let info = cc.clone_info();
    assert_eq!(info["old_sid"].as_str().unwrap(), sid_a);
    let sid_cc = info["new_sid"].as_str().unwrap().to_string();
    ok(sidfs()
        .arg("verify")
        .arg(cc.disk())
        .arg("--old-sid")
        .arg(&sid_a));
    ok(sidfs()
        .arg("verify")
        .arg(cc.disk())
        .arg("--old-sid")
        .arg(&old));
    assert_ne!(sid_cc, sid_a);
    cc.unmount();
    a.unmount();
}

/// The real Windows 10 NTFS volumes from ../shared/realdata, as a data disk of their machine
/// (`--old-sid`): prove the SID is gone from the clone except in `$LogFile` (kept on purpose),
/// that `$RECYCLE.BIN\<SID>-1001` carries the new SID for ntfs-3g, that ntfssecaudit finds no
/// error, and that the export equals the mount.
#[test]
fn real_windows_volumes_are_rewritten_and_verify_clean() {
    for tool in ["ntfs-3g", "ntfssecaudit", "gunzip"] {
        if !have_tool(tool) {
            return;
        }
    }
    let real = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/realdata/ntfs-win10-volume"
    );
    let old = "S-1-5-21-2341207468-2645333676-3461800803";
    let s = Scratch::new("realvol");
    // The gzipped one is a whole disk (MBR, NTFS at sector 128); the other a bare volume. Tests
    // read them where they lie; the gzipped one is unpacked into the scratch directory.
    let disk = s.path("ntfs_index.raw");
    ok(Command::new("sh").arg("-c").arg(format!(
        "gunzip -c {real}/ntfs_index.raw.gz > {}",
        disk.display()
    )));
    for (name, master, offset) in [
        (
            "file_4k",
            std::path::PathBuf::from(format!("{real}/file_4k.bin")),
            0u64,
        ),
        ("ntfs_index", disk.clone(), 128 * 512),
    ] {
        let before = sha256(&master);
        let mp = s.mkdir(&format!("mp-{name}"));
        let m = Mounted::new(
            &master,
            &mp,
            5,
            &s.path(&format!("st-{name}")),
            &["--old-sid", old],
        );
        let info = m.clone_info();
        let new = m.new_sid();
        assert_eq!(info["old_sid"].as_str().unwrap(), old);
        let out = ok(sidfs()
            .arg("verify")
            .arg(m.disk())
            .args(["--old-sid", old, "--json"]));
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["unexpected"], 0, "{name}: {out}");
        for o in report["occurrences"].as_array().unwrap() {
            assert_eq!(o["region"].as_str(), Some("$LogFile"), "{name}: {o}");
        }
        let size = std::fs::metadata(m.disk()).unwrap().len() - offset;
        let dev = LoopDev::new(&m.disk(), offset, size);
        let audit = ok(Command::new("ntfssecaudit").arg("-a").arg(&dev.0));
        assert!(
            audit.contains("No errors were found"),
            "{name}: ntfssecaudit:\n{audit}"
        );
        if name == "file_4k" {
            let nm = NtfsMount::new(&dev.0, &s.path("ntfs-file_4k"));
            let bin = nm.0.join("$RECYCLE.BIN");
            let names: Vec<String> = std::fs::read_dir(&bin)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(names.contains(&format!("{new}-1001")), "{names:?}");
            assert!(!names.iter().any(|n| n.contains(old)), "{names:?}");
            drop(nm);
        }
        drop(dev);
        let export = s.path(&format!("{name}.export"));
        ok(sidfs()
            .arg("export")
            .arg(&master)
            .arg(&export)
            .args(["--seed", "5", "--old-sid", old]));
        assert!(
            read_all(&export) == read_all(&m.disk()),
            "{name}: export differs from the mount"
        );
        m.unmount();
        assert_eq!(sha256(&master), before);
    }
}

/// Prove that `sidfs mount` and `sidfs export` refuse every master that cannot be cloned safely,
/// each with one sentence, leaving no state directory and no mount behind.
#[test]
fn unclonable_masters_are_refused_before_mounting() {
    let s = Scratch::new("refuse-variants");
    let mp = s.mkdir("mp");
    for variant in [
        "hibernated",
        "fast-startup",
        "dirty-ntfs",
        "unclean-logfile",
        "bitlocker",
        "dirty-hive",
        "domain-controller",
    ] {
        let (master, _) = build_master(&s, &format!("{variant}.img"), &["--variant", variant]);
        let state = s.path(&format!("st-{variant}"));
        let err = one_line_error(&mount_cmd(&master, &mp, 1, &state, &[]));
        assert!(err.contains("cannot clone"), "{variant}: {err}");
        assert!(
            !state.exists(),
            "{variant}: a refused mount left its state directory"
        );
        let out = run(sidfs()
            .arg("export")
            .arg(&master)
            .arg(s.path("x.img"))
            .args(["--seed", "1"]));
        let err = one_line_error(&out);
        assert!(err.contains("cannot clone"), "{variant}: {err}");
        let _ = std::fs::remove_file(s.path("x.img"));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&s.dir.to_string_lossy().into_owned()));
}

/// Prove that `--keep-sid` gives a plain copy-on-write clone (the master byte for byte), that its
/// state refuses to become a re-SIDed clone later, and that `sidfs status` shows the SIDs of a
/// re-SIDed clone.
#[test]
fn keep_sid_is_a_plain_copy_and_status_shows_sids() {
    let s = Scratch::new("keep-sid");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let mp = s.mkdir("mp");
    let state = s.path("plain");
    let m = Mounted::new(&master, &mp, 3, &state, &["--keep-sid"]);
    ok(Command::new("cmp").arg(m.disk()).arg(&master));
    assert_eq!(m.clone_info()["patch_stage"], "passthrough");
    m.unmount();
    let err = one_line_error(&mount_cmd(&master, &mp, 3, &state, &[]));
    assert!(err.contains("--keep-sid"), "{err}");

    let m = Mounted::new(&master, &mp, 3, &s.path("resid"), &[]);
    let status = ok(sidfs().arg("status").arg(&mp));
    let old = manifest["machine_sid"].as_str().unwrap();
    let new = m.clone_info()["new_sid"].as_str().unwrap().to_string();
    assert!(status.contains(&format!("{old} -> {new}")), "{status}");
    m.unmount();
}
