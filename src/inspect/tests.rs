//! Tests of `inspect` on the real STUDENT-PC8 and SYSTEM_B hives, the real Windows-made NTFS
//! volumes, and small Windows volumes built here with mkntfs, ntfs-3g and hivexsh from those
//! real hives. Realdata is read in place (`../shared/realdata`) and never copied into the repo;
//! built volumes live in temporary directories. Each test says what it proves.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::hive_file::check_bytes;
use super::installation::profile_volume_path;
use super::*;
use crate::testutil::*;

const MACHINE_SID: &str = "S-1-5-21-4070822719-3404542230-2541167049";
const DOMAIN_SID: &str = "S-1-5-21-226059406-2984137831-1201299043";

/// An ntfs-3g mount, unmounted on drop (also when the test fails).
use crate::testutil::NtfsMount;

/// Why the volume-building tests cannot run here, if they cannot.
fn tools_missing() -> Option<String> {
    missing_tools(&["mkntfs", "ntfs-3g", "fusermount3", "hivexsh", "xz"])
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Decompresses a realdata .xz file into `dir` and returns the path.
fn unxz(relative: &str, dir: &TempDir, name: &str) -> PathBuf {
    let bytes = run(Command::new("xz").arg("-dc").arg(realdata(relative)));
    let target = dir.path(name);
    std::fs::write(&target, bytes).unwrap();
    target
}

/// Copies a read-only realdata hive to a writable temporary file and edits it with hivexsh.
fn hivex_edit(source: &Path, target: &Path, script: &str) {
    crate::testutil::hivexsh_edit(source, target, script);
}

/// A SYSTEM hive: STUDENT-PC8's SECURITY (a small clean real hive) with the keys inspect reads.
fn synth_system(dir: &TempDir, product_type: &str) -> PathBuf {
    let target = dir.path("SYSTEM");
    hivex_edit(
        &realdata("winreg-kb-STUDENT-PC8/SECURITY"),
        &target,
        &format!(
            "add Select\ncd Select\nsetval 1\nCurrent\ndword:1\ncd \\\n\
             add ControlSet001\ncd ControlSet001\nadd Control\ncd Control\n\
             add ComputerName\ncd ComputerName\nadd ComputerName\ncd ComputerName\n\
             setval 1\nComputerName\nstring:STUDENT-PC8\ncd ..\ncd ..\n\
             add ProductOptions\ncd ProductOptions\nsetval 1\nProductType\nstring:{product_type}\n\
             cd \\\ncd ControlSet001\nadd Services\ncd Services\nadd Tcpip\ncd Tcpip\n\
             add Parameters\ncd Parameters\nsetval 1\nHostname\nstring:STUDENT-PC8\n"
        ),
    );
    target
}

/// A SOFTWARE hive with CurrentVersion and a ProfileList of a local user (gold_administrator,
/// RID 1001), a domain user (bperry, RID 1107 of INTERNAL) and LocalSystem.
fn synth_software(dir: &TempDir) -> PathBuf {
    let target = dir.path("SOFTWARE");
    let local = format!("{MACHINE_SID}-1001");
    let domain = format!("{DOMAIN_SID}-1107");
    hivex_edit(
        &realdata("winreg-kb-STUDENT-PC8/SECURITY"),
        &target,
        &format!(
            "add Microsoft\ncd Microsoft\nadd Windows NT\ncd Windows NT\nadd CurrentVersion\n\
             cd CurrentVersion\nsetval 3\nProductName\nstring:Windows 8.1 Pro\n\
             CurrentBuild\nstring:9600\nDisplayVersion\nstring:6.3\n\
             add ProfileList\ncd ProfileList\n\
             add {local}\ncd {local}\nsetval 1\nProfileImagePath\n\
             expandstring:C:\\Users\\gold_administrator\ncd ..\n\
             add {domain}\ncd {domain}\nsetval 1\nProfileImagePath\n\
             expandstring:C:\\Users\\bperry\ncd ..\n\
             add S-1-5-18\ncd S-1-5-18\nsetval 1\nProfileImagePath\n\
             expandstring:%systemroot%\\system32\\config\\systemprofile\n"
        ),
    );
    target
}

/// What goes into a built Windows volume.
struct VolumeSpec {
    /// The SYSTEM hive file and its logs (name suffix, path).
    system: PathBuf,
    system_logs: Vec<(&'static str, PathBuf)>,
    software: PathBuf,
    hiberfil: Option<Vec<u8>>,
    dpapi_key: bool,
}

/// Builds a bare NTFS volume image (no partition table) with a Windows tree, with mkntfs and
/// ntfs-3g; returns its path inside `dir`.
fn build_volume(dir: &TempDir, spec: &VolumeSpec) -> PathBuf {
    let image = dir.path("volume.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    run(Command::new("mkntfs")
        .args(["-F", "-Q", "-q", "-c", "4096"])
        .arg(&image));
    let mnt = dir.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run(Command::new("ntfs-3g").arg(&image).arg(&mnt));
    let mount = NtfsMount(mnt.clone());
    let put = |relative: &str, bytes: &[u8]| {
        let path = mnt.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    let config = "Windows/System32/config";
    for name in ["SAM", "SECURITY"] {
        put(
            &format!("{config}/{name}"),
            &std::fs::read(realdata(&format!("winreg-kb-STUDENT-PC8/{name}"))).unwrap(),
        );
    }
    put(
        &format!("{config}/SYSTEM"),
        &std::fs::read(&spec.system).unwrap(),
    );
    for (suffix, path) in &spec.system_logs {
        put(
            &format!("{config}/SYSTEM{suffix}"),
            &std::fs::read(path).unwrap(),
        );
    }
    put(
        &format!("{config}/SOFTWARE"),
        &std::fs::read(&spec.software).unwrap(),
    );
    for (name, target) in [
        ("NTUSER.DAT", "Users/bperry/NTUSER.DAT"),
        ("NTUSER.DAT.LOG", "Users/bperry/NTUSER.DAT.LOG"),
        (
            "UsrClass.dat",
            "Users/bperry/AppData/Local/Microsoft/Windows/UsrClass.dat",
        ),
    ] {
        put(
            target,
            &std::fs::read(realdata(&format!("winreg-kb-STUDENT-PC8/{name}"))).unwrap(),
        );
    }
    std::fs::create_dir_all(mnt.join("Users/gold_administrator")).unwrap();
    if spec.dpapi_key {
        put(
            &format!(
                "Users/gold_administrator/AppData/Roaming/Microsoft/Protect/{MACHINE_SID}-1001/\
                 0c7b2c66-5a0e-4b1c-9f38-2f1d3c4b5a69"
            ),
            &[0x02; 468],
        );
    }
    if let Some(h) = &spec.hiberfil {
        put("hiberfil.sys", h);
    }
    drop(mount);
    image
}

/// The real STUDENT-PC8 hives give the machine SID from both SECURITY and SAM, agreeing, and the
/// AD domain INTERNAL with its SID; the hives are clean and walk completely.
#[test]
fn student_pc8_hives_checked() {
    for name in ["SAM", "SECURITY", "NTUSER.DAT", "UsrClass.dat"] {
        let bytes = std::fs::read(realdata(&format!("winreg-kb-STUDENT-PC8/{name}"))).unwrap();
        let check = check_bytes(bytes);
        assert!(!check.dirty, "{name} is clean per the README");
        assert!(
            check.error.is_none(),
            "{name} walks completely: {:?}",
            check.error
        );
        assert_eq!(check.primary_sequence, check.secondary_sequence);
    }
}

/// The dirty SYSTEM_B hive (primary != secondary sequence number) is reported dirty.
#[test]
fn system_b_is_dirty() {
    if !tool_present("xz") {
        println!("SKIPPED: xz is not installed");
        return;
    }
    let dir = TempDir::new("system-b");
    let path = unxz("dirty-hive-win10/SYSTEM_B.xz", &dir, "SYSTEM_B");
    let check = check_bytes(std::fs::read(path).unwrap());
    assert!(check.dirty);
    assert_ne!(check.primary_sequence, check.secondary_sequence);
}

/// The real Windows 10 volumes have no Windows directory: inspect parses them and refuses with
/// `no-windows` only, without error.
#[test]
fn real_volumes_report_no_windows() {
    let dir = TempDir::new("real");
    let gz = run(Command::new("gzip")
        .arg("-dc")
        .arg(realdata("ntfs-win10-volume/ntfs_index.raw.gz")));
    let disk = dir.path("ntfs_index.raw");
    std::fs::write(&disk, gz).unwrap();
    for (path, kind) in [
        (realdata("ntfs-win10-volume/file_4k.bin"), "none"),
        (disk, "mbr"),
    ] {
        let report = inspect(&path).unwrap();
        assert_eq!(report.partition_table.kind, kind);
        assert_eq!(report.partition_table.partitions[0].file_system, "ntfs");
        assert!(report.windows.is_none());
        let reasons: Vec<_> = report.refusals.iter().map(|r| r.reason).collect();
        assert_eq!(reasons, [RefusalReason::NoWindows]);
        assert!(!report.is_cloneable());
        assert!(report.render_text().contains("REFUSED"));
    }
}

/// Prove that with `--old-sid` the same real volumes are data disks: no `no-windows` refusal,
/// cloneable, a `data_disk` section for that SID (round-tripped through JSON), the text saying it
/// is a data disk inspected for that SID; and that without it the JSON has no `data_disk` key.
#[test]
fn real_volumes_with_old_sid_are_data_disks() {
    let sid: crate::sid::MachineSid = "S-1-5-21-1806060109-1839359715-529511253".parse().unwrap();
    let path = realdata("ntfs-win10-volume/file_4k.bin");
    let report = super::inspect_with(&path, Some(sid)).unwrap();
    assert!(report.windows.is_none());
    assert!(report.refusals.is_empty(), "{:?}", report.refusals);
    assert!(report.is_cloneable());
    let d = report.data_disk.as_ref().expect("a data_disk section");
    assert_eq!(d.old_sid, sid.to_string());
    let json = serde_json::to_string(&report).unwrap();
    let back: InspectReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    let text = report.render_text();
    assert!(
        text.contains(&format!(
            "Data disk: no Windows installation; inspected for --old-sid {sid}"
        )),
        "{text}"
    );
    let plain = serde_json::to_value(inspect(&path).unwrap()).unwrap();
    assert!(plain.get("data_disk").is_none(), "{plain}");
}

fn refusal_reasons(report: &InspectReport) -> Vec<RefusalReason> {
    let mut r: Vec<_> = report.refusals.iter().map(|r| r.reason).collect();
    r.sort();
    r.dedup();
    r
}

/// A clean volume built from the real STUDENT-PC8 hives plus synthesized SYSTEM/SOFTWARE: every
/// fact inspect reports is what was put in, and the image is cloneable with a DPAPI warning for
/// the local user who has master keys (and none for the domain user).
#[test]
fn built_clean_volume() {
    if let Some(why) = tools_missing() {
        println!("SKIPPED: {why}");
        return;
    }
    let dir = TempDir::new("clean");
    let spec = VolumeSpec {
        system: synth_system(&dir, "WinNT"),
        system_logs: Vec::new(),
        software: synth_software(&dir),
        hiberfil: Some(vec![0; 8192]),
        dpapi_key: true,
    };
    let image = build_volume(&dir, &spec);
    let report = inspect(&image).unwrap();
    assert_eq!(report.refusals, [], "{}", report.render_text());
    let w = report.windows.as_ref().unwrap();
    assert_eq!(w.partition_index, 0);
    assert!(report.partition_table.partitions[0].holds_windows);
    assert_eq!(w.product_name.as_deref(), Some("Windows 8.1 Pro"));
    assert_eq!(w.build.as_deref(), Some("9600"));
    assert_eq!(w.display_version.as_deref(), Some("6.3"));
    assert_eq!(w.computer_name.as_deref(), Some("STUDENT-PC8"));
    assert_eq!(w.product_type.as_deref(), Some("WinNT"));
    assert_eq!(w.machine_sid.as_deref(), Some(MACHINE_SID));
    let sources = &w.machine_sid_sources;
    assert!(sources.agree);
    let security = sources.security.as_ref().unwrap();
    let sam = sources.sam.as_ref().unwrap();
    assert_eq!(security.sid, MACHINE_SID);
    assert_eq!(sam.sid, MACHINE_SID);
    assert_eq!(security.hive, r"Windows\System32\config\SECURITY");
    // The reported offsets hold the binary SID in the real hive files.
    let triple = crate::sid::MachineSid::from_sid(&MACHINE_SID.parse().unwrap())
        .unwrap()
        .to_sid()
        .to_bytes();
    for (name, source) in [("SECURITY", security), ("SAM", sam)] {
        let bytes = std::fs::read(realdata(&format!("winreg-kb-STUDENT-PC8/{name}"))).unwrap();
        let at = source.hive_offset as usize;
        assert_eq!(bytes[at..at + 24], triple[..], "{name}");
    }
    let domain = w.domain.as_ref().unwrap();
    assert_eq!(domain.name.as_deref(), Some("INTERNAL"));
    assert_eq!(domain.sid, DOMAIN_SID);
    assert!(!w.domain_controller);
    assert_eq!(w.account_domain_name.as_deref(), Some("STUDENT-PC8"));
    let accounts: Vec<(u32, &str, &str)> = w
        .local_accounts
        .iter()
        .map(|a| (a.rid, a.name.as_str(), a.sid.as_str()))
        .collect();
    let sid = |rid: u32| format!("{MACHINE_SID}-{rid}");
    assert_eq!(
        accounts,
        [
            (500, "Administrator", sid(500).as_str()),
            (501, "Guest", sid(501).as_str()),
            (1001, "gold_administrator", sid(1001).as_str()),
        ]
    );
    let profile = |s: &str| w.profiles.iter().find(|p| p.sid == s).unwrap();
    let local = profile(&sid(1001));
    assert_eq!(local.kind, "local");
    assert!(local.hives.is_empty());
    assert!(local.dpapi_master_keys.is_some());
    let domain_user = profile(&format!("{DOMAIN_SID}-1107"));
    assert_eq!(domain_user.kind, "domain");
    assert_eq!(
        domain_user.hives,
        [
            r"Users\bperry\NTUSER.DAT",
            r"Users\bperry\AppData\Local\Microsoft\Windows\UsrClass.dat"
        ]
    );
    assert_eq!(profile("S-1-5-18").kind, "well-known");
    let hive = |p: &str| w.hives.iter().find(|h| h.path == p).unwrap();
    for h in &w.hives {
        assert_eq!(h.state, "clean", "{}", h.path);
    }
    let ntuser = hive(r"Users\bperry\NTUSER.DAT");
    assert_eq!(ntuser.role, "ntuser");
    assert_eq!(ntuser.size, 524288);
    assert_eq!(ntuser.logs.len(), 1);
    assert_eq!(ntuser.logs[0].path, r"Users\bperry\NTUSER.DAT.LOG");
    let roles: Vec<&str> = w.hives.iter().map(|h| h.role.as_str()).collect();
    assert_eq!(
        roles,
        ["sam", "security", "software", "system", "ntuser", "usrclass"]
    );
    assert_eq!(w.volume.hibernation, "clean");
    assert!(!w.volume.dirty);
    let warnings: Vec<_> = report.warnings.iter().map(|w| w.reason).collect();
    assert_eq!(warnings, [WarningReason::DpapiMasterKeys]);
    assert!(report.warnings[0].message.contains("gold_administrator"));
    // JSON round trip: what --json prints reads back as the same report.
    let json = serde_json::to_string(&report).unwrap();
    let back: InspectReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    let text = report.render_text();
    assert!(
        text.contains(MACHINE_SID) && text.contains("Result: cloneable"),
        "{text}"
    );
}

/// Refusals from a built volume: a dirty SYSTEM hive with its logs (the real SYSTEM_B and its
/// LOG1/LOG2), a hibernated hiberfil.sys and a domain controller ProductType are each reported.
#[test]
fn built_refused_volumes() {
    if let Some(why) = tools_missing() {
        println!("SKIPPED: {why}");
        return;
    }
    let dir = TempDir::new("refused");
    let system_b = unxz("dirty-hive-win10/SYSTEM_B.xz", &dir, "SYSTEM_B");
    let log1 = unxz("dirty-hive-win10/SYSTEM_B.LOG1.xz", &dir, "SYSTEM_B.LOG1");
    let log2 = unxz("dirty-hive-win10/SYSTEM_B.LOG2.xz", &dir, "SYSTEM_B.LOG2");
    let software = synth_software(&dir);
    let mut hiberfil = b"HIBR".to_vec();
    hiberfil.resize(8192, 0);
    let spec = VolumeSpec {
        system: system_b,
        system_logs: vec![(".LOG1", log1), (".LOG2", log2)],
        software: software.clone(),
        hiberfil: Some(hiberfil),
        dpapi_key: false,
    };
    let image = build_volume(&dir, &spec);
    let report = inspect(&image).unwrap();
    assert_eq!(
        refusal_reasons(&report),
        [RefusalReason::Hibernated, RefusalReason::DirtyHive],
        "{}",
        report.render_text()
    );
    let w = report.windows.as_ref().unwrap();
    let system = w
        .hives
        .iter()
        .find(|h| h.role == "system")
        .expect("SYSTEM listed");
    assert_eq!(system.state, "dirty");
    assert_eq!(system.logs.len(), 2);
    // SYSTEM_B still gives its facts.
    assert_eq!(w.computer_name.as_deref(), Some("DESKTOP-PM6C56D"));

    let dc_dir = TempDir::new("dc");
    let spec = VolumeSpec {
        system: synth_system(&dc_dir, "LanmanNT"),
        system_logs: Vec::new(),
        software,
        hiberfil: None,
        dpapi_key: false,
    };
    let image = build_volume(&dc_dir, &spec);
    let report = inspect(&image).unwrap();
    assert_eq!(refusal_reasons(&report), [RefusalReason::DomainController]);
    assert!(report.windows.as_ref().unwrap().domain_controller);
}

/// ProfileImagePath forms map to volume paths.
#[test]
fn profile_paths() {
    assert_eq!(
        profile_volume_path(r"C:\Users\alice").as_deref(),
        Some(r"Users\alice")
    );
    assert_eq!(
        profile_volume_path(r"%SystemDrive%\Users\bob\").as_deref(),
        Some(r"Users\bob")
    );
    assert_eq!(
        profile_volume_path(r"%systemroot%\ServiceProfiles\LocalService").as_deref(),
        Some(r"Windows\ServiceProfiles\LocalService")
    );
    assert_eq!(profile_volume_path(r"\\server\share\u"), None);
}
