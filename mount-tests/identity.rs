//! The clone's other identifiers (computer name, MachineGuid, WSUS SusClientId, MSDTC CIDs)
//! through real mounts, read back with hivex from hives extracted by ntfs-3g.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn hivexget(hive: &Path, key: &str, value: &str) -> String {
    ok(Command::new("hivexget").arg(hive).arg(key).arg(value))
        .trim_end()
        .to_string()
}

/// The subkey names of `key`, in the order of its subkey list (hivexsh `ls`).
fn subkeys(hive: &Path, key: &str) -> Vec<String> {
    let out = Command::new("hivexsh")
        .arg(hive)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("cd {key}\nls\nexit\n").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The new value of `kind` (and MSDTC `label`) in clone.json.
fn new_value(info: &serde_json::Value, kind: &str, label: Option<&str>) -> Option<String> {
    info["identity"]["changes"]
        .as_array()?
        .iter()
        .find(|c| c["kind"] == kind && label.is_none_or(|l| c["label"] == l))
        .map(|c| c["new"].as_str().unwrap().to_string())
}

/// Each identifier the master carries that a clone changes by default, with its old value:
/// (kind, label, value). MachineGuid is not among them: the test masters carry machine key
/// containers named after it, so it stays ([`machine_guid`]).
fn master_identifiers(manifest: &serde_json::Value) -> Vec<(String, Option<String>, String)> {
    let ids = &manifest["identifiers"];
    let mut out = vec![
        (
            "hostname".into(),
            None,
            ids["computer_name"].as_str().unwrap().into(),
        ),
        (
            "wsus".into(),
            None,
            ids["sus_client_id"].as_str().unwrap().into(),
        ),
    ];
    for c in ids["msdtc_cids"].as_array().unwrap() {
        out.push((
            "msdtc".into(),
            Some(c["description"].as_str().unwrap().into()),
            c["cid"].as_str().unwrap().into(),
        ));
    }
    out
}

/// What the clone's registry says, read the way Windows reads it, from hives extracted through
/// ntfs-3g on a read-only loop device over the mounted disk.
struct CloneRegistry {
    hostnames: Vec<String>,
    alt_default_domain: String,
    default_domain: String,
    pol_ac_dm_n: String,
    machine_guid: String,
    sus_client_id: String,
    sus_validation_export: String,
    cids: Vec<String>,
    cid_descriptions: Vec<String>,
    /// Occurrences of each given byte form over all hive files.
    forms_found: Vec<usize>,
}

fn read_clone(
    s: &Scratch,
    m: &Mounted,
    manifest: &serde_json::Value,
    forms: &[Vec<u8>],
) -> CloneRegistry {
    let (start, size) = windows_partition(manifest);
    let dev = LoopDev::new(&m.disk(), start, size);
    let at = s.path(&format!(
        "ntfs-{}",
        m.state.file_name().unwrap().to_string_lossy()
    ));
    let nm = NtfsMount::new(&dev.0, &at);
    let config = nm.0.join("Windows/System32/config");
    let (system, software) = (config.join("SYSTEM"), config.join("SOFTWARE"));
    let mut hostnames = Vec::new();
    for (key, value) in [
        (
            r"ControlSet001\Control\ComputerName\ComputerName",
            "ComputerName",
        ),
        (
            r"ControlSet001\Control\ComputerName\ActiveComputerName",
            "ComputerName",
        ),
        (r"ControlSet001\Services\Tcpip\Parameters", "Hostname"),
        (r"ControlSet001\Services\Tcpip\Parameters", "NV Hostname"),
        (
            r"ControlSet002\Control\ComputerName\ComputerName",
            "ComputerName",
        ),
        (r"ControlSet002\Services\Tcpip\Parameters", "Hostname"),
    ] {
        hostnames.push(hivexget(&system, key, value));
    }
    let winlogon = r"Microsoft\Windows NT\CurrentVersion\Winlogon";
    let wu = r"Microsoft\Windows\CurrentVersion\WindowsUpdate";
    let cids = subkeys(&software, r"Classes\CID");
    let cid_descriptions = cids
        .iter()
        .map(|c| hivexget(&software, &format!(r"Classes\CID\{c}\Description"), "@"))
        .collect();
    let mut forms_found = vec![0; forms.len()];
    for h in manifest["hive_files"].as_array().unwrap() {
        let bytes = read_all(&nm.0.join(h.as_str().unwrap()));
        for (i, f) in forms.iter().enumerate() {
            forms_found[i] += count(&bytes, f);
        }
    }
    let reg = CloneRegistry {
        hostnames,
        alt_default_domain: hivexget(&software, winlogon, "AltDefaultDomainName"),
        default_domain: hivexget(&software, winlogon, "DefaultDomainName"),
        pol_ac_dm_n: ok(Command::new("hivexregedit")
            .arg("--export")
            .arg(config.join("SECURITY"))
            .arg(r"\Policy\PolAcDmN")),
        machine_guid: hivexget(&software, r"Microsoft\Cryptography", "MachineGuid"),
        sus_client_id: hivexget(&software, wu, "SusClientId"),
        sus_validation_export: ok(Command::new("hivexregedit")
            .arg("--export")
            .arg(&software)
            .arg(format!("\\{wu}"))),
        cids,
        cid_descriptions,
        forms_found,
    };
    drop(nm);
    drop(dev);
    reg
}

/// The master's MachineGuid (from the builder's manifest).
fn machine_guid(manifest: &serde_json::Value) -> String {
    manifest["identifiers"]["machine_guid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn utf16_hex(s: &str) -> String {
    hex_csv(
        &s.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>(),
    )
}

/// Prove on a built master that by default every identifier changes (MachineGuid excepted: key
/// containers are named after it, see the next test): the old values are gone
/// from every hive in every form, the new values are where Windows reads them (hivexget), the
/// MSDTC CID list stays sorted, the AD domain name is untouched, two seeds differ, the same seed
/// is stable, `sidfs verify` is clean and the master never changes.
#[test]
fn every_identifier_is_unique_per_clone_and_where_windows_reads_it() {
    for tool in ["hivexget", "hivexsh", "hivexregedit", "ntfs-3g", "losetup"] {
        if !have_tool(tool) {
            return;
        }
    }
    let s = Scratch::new("identity");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let before = sha256(&master);
    let ids = master_identifiers(&manifest);
    let old_forms: Vec<Vec<u8>> = ids
        .iter()
        .flat_map(|(_, _, v)| identifier_forms(v))
        .collect();

    let a = Mounted::new(&master, &s.mkdir("a"), 7, &s.path("sa"), &[]);
    let info = a.clone_info();
    ok(sidfs()
        .arg("verify")
        .arg(a.disk())
        .arg("--old-sid")
        .arg(manifest["machine_sid"].as_str().unwrap()));
    let mut new_values = Vec::new();
    for (kind, label, old) in &ids {
        let new = new_value(&info, kind, label.as_deref())
            .unwrap_or_else(|| panic!("clone.json has no new {kind} {label:?}: {info}"));
        assert_eq!(new.len(), old.len(), "{kind}: same length");
        assert!(!new.eq_ignore_ascii_case(old), "{kind}: unchanged");
        new_values.push(new);
    }
    assert_eq!(
        a.status()["identity"],
        info["identity"],
        "status == clone.json"
    );
    let new_forms: Vec<Vec<u8>> = new_values
        .iter()
        .flat_map(|v| identifier_forms(v))
        .collect();
    let mut forms = old_forms.clone();
    forms.extend(new_forms.iter().cloned());
    let reg = read_clone(&s, &a, &manifest, &forms);
    let (old_found, new_found) = reg.forms_found.split_at(old_forms.len());
    assert!(
        old_found.iter().all(|n| *n == 0),
        "an old identifier remains in the clone's hives: {old_found:?}"
    );
    assert!(new_found.iter().sum::<usize>() >= 15, "{new_found:?}");
    let hostname = &new_values[0];
    assert!(
        reg.hostnames.iter().all(|h| h == hostname),
        "{:?}",
        reg.hostnames
    );
    assert_eq!(&reg.alt_default_domain, hostname);
    assert_eq!(
        reg.default_domain,
        manifest["domain"]["name"].as_str().unwrap()
    );
    assert!(
        reg.pol_ac_dm_n.contains(&utf16_hex(hostname)),
        "{}",
        reg.pol_ac_dm_n
    );
    assert_eq!(
        reg.machine_guid,
        machine_guid(&manifest),
        "MachineGuid is held"
    );
    assert_eq!(info["identity"]["held"][0]["kind"], "machine-guid");
    assert_eq!(&reg.sus_client_id, &new_values[1]);
    // SusClientIDValidation is left as it is (it does not embed the id).
    let validation = manifest["identifiers"]["sus_client_id_validation"]
        .as_str()
        .unwrap();
    let validation: Vec<u8> = (0..validation.len() / 2)
        .map(|i| u8::from_str_radix(&validation[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(reg.sus_validation_export.contains(&hex_csv(&validation)));
    // The CIDs are the new ones, each with its Description, in sorted (case-insensitive) order.
    let mut want_cids: Vec<(String, String)> = ids
        .iter()
        .zip(&new_values)
        .filter(|((k, _, _), _)| k == "msdtc")
        .map(|((_, l, _), n)| (n.clone(), l.clone().unwrap()))
        .collect();
    want_cids.sort_by_key(|(c, _)| c.to_ascii_uppercase());
    let got: Vec<(String, String)> = reg
        .cids
        .iter()
        .cloned()
        .zip(reg.cid_descriptions.iter().cloned())
        .collect();
    assert_eq!(
        got, want_cids,
        "CID keys: new names, sorted, descriptions kept"
    );

    // Another seed: every value differs; the same seed in a fresh state: the same values.
    let b = Mounted::new(&master, &s.mkdir("b"), 8, &s.path("sb"), &[]);
    let info_b = b.clone_info();
    for ((kind, label, _), new) in ids.iter().zip(&new_values) {
        assert_ne!(
            new_value(&info_b, kind, label.as_deref()).as_ref(),
            Some(new),
            "{kind}: two seeds gave the same value"
        );
    }
    b.unmount();
    let a2 = Mounted::new(&master, &s.mkdir("a2"), 7, &s.path("sa2"), &[]);
    assert_eq!(a2.clone_info()["identity"], info["identity"]);
    assert!(
        read_all(&a2.disk()) == read_all(&a.disk()),
        "same seed, same clone"
    );
    a2.unmount();
    // Export equals the mount.
    let export = s.path("export.img");
    ok(sidfs()
        .arg("export")
        .arg(&master)
        .arg(&export)
        .args(["--seed", "7"]));
    assert!(read_all(&export) == read_all(&a.disk()), "export differs");
    a.unmount();
    assert_eq!(sha256(&master), before, "the master must never change");
}

/// Prove that `--keep` keeps exactly what it names, that `--hostname` sets the name Windows
/// reads, and that a bad `--hostname` is refused in one line before any state exists.
#[test]
fn keep_and_hostname_options_do_what_they_say() {
    for tool in ["hivexget", "hivexsh", "hivexregedit", "ntfs-3g", "losetup"] {
        if !have_tool(tool) {
            return;
        }
    }
    let s = Scratch::new("identity-opts");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let ids = master_identifiers(&manifest);
    let old = |k: &str| {
        if k == "machine-guid" {
            return machine_guid(&manifest);
        }
        ids.iter().find(|(kind, _, _)| kind == k).unwrap().2.clone()
    };

    let k = Mounted::new(
        &master,
        &s.mkdir("k"),
        7,
        &s.path("sk"),
        &["--keep", "hostname,machine-guid"],
    );
    let info = k.clone_info();
    assert!(new_value(&info, "hostname", None).is_none());
    assert!(new_value(&info, "machine-guid", None).is_none());
    let wsus = new_value(&info, "wsus", None).expect("wsus changes");
    assert!(new_value(&info, "msdtc", Some("MSDTC")).is_some());
    assert_eq!(
        info["identity"]["kept"],
        serde_json::json!(["hostname", "machine-guid"])
    );
    let reg = read_clone(&s, &k, &manifest, &[]);
    assert!(reg.hostnames.iter().all(|h| *h == old("hostname")));
    assert_eq!(reg.machine_guid, old("machine-guid"));
    assert_eq!(reg.sus_client_id, wsus);
    // A remount asking for another name is refused; the clone keeps its identity.
    k.unmount();
    let err = one_line_error(&mount_cmd(
        &master,
        &s.path("k"),
        7,
        &s.path("sk"),
        &["--hostname", "ABCDEFGHIJK"],
    ));
    assert!(err.contains("another --state"), "{err}");

    let h = Mounted::new(
        &master,
        &s.mkdir("h"),
        7,
        &s.path("sh"),
        &["--hostname", "lab-pc-0007"],
    );
    let reg = read_clone(&s, &h, &manifest, &[]);
    // The NetBIOS name upper case, the DNS host name (Tcpip Hostname, NV Hostname) as given.
    assert_eq!(
        reg.hostnames,
        [
            "LAB-PC-0007",
            "LAB-PC-0007",
            "lab-pc-0007",
            "lab-pc-0007",
            "LAB-PC-0007",
            "lab-pc-0007"
        ]
    );
    assert_eq!(reg.alt_default_domain, "LAB-PC-0007");
    h.unmount();

    for (bad, why) in [
        ("LAB_PC_0007", "not allowed"),
        ("ABCDEFGHIJKLMNOP", "at most 15"),
        ("-LABPC00007", "hyphen"),
        ("12345678901", "only digits"),
    ] {
        let state = s.path(&format!("st-{bad}"));
        let err = one_line_error(&mount_cmd(
            &master,
            &s.path("h"),
            7,
            &state,
            &[&format!("--hostname={bad}")],
        ));
        assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        assert!(!state.exists(), "{bad}: a refused mount left its state");
    }
    let out = mount_cmd(
        &master,
        &s.path("h"),
        7,
        &s.path("st-keep"),
        &["--keep", "hostname,serial"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown identifier \"serial\""));
}

/// Prove that `sidfs verify` reports old identifier values per identifier: on a clone's disk,
/// with its own clone.json (found beside disk.img) it is clean; told that the clone's *new*
/// values are the old ones, it finds them in the hives and exits 4, naming each identifier.
#[test]
fn verify_reports_residual_identifiers() {
    let s = Scratch::new("verify-ids");
    let (master, _) = build_master(&s, "master.img", &[]);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 4, &s.path("state"), &[]);
    ok(sidfs().arg("verify").arg(m.disk()));
    let mut info: serde_json::Value =
        serde_json::from_slice(&read_all(&mp.join("clone.json"))).unwrap();
    for c in info["identity"]["changes"].as_array_mut().unwrap() {
        let (old, new) = (c["old"].clone(), c["new"].clone());
        c["old"] = new;
        c["new"] = old;
    }
    let swapped = s.path("swapped.json");
    std::fs::write(&swapped, serde_json::to_vec(&info).unwrap()).unwrap();
    let out = run(sidfs()
        .arg("verify")
        .arg(m.disk())
        .arg("--clone-json")
        .arg(&swapped));
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in ["hostname", "wsus", "msdtc"] {
        assert!(
            text.contains(&format!("old {kind} still in")),
            "{kind} not reported:\n{text}"
        );
    }
    m.unmount();
}

/// The clone's key container file names in the three machine key folders, read through ntfs-3g
/// on a read-only loop device over the mounted disk, and its MachineGuid read with hivexget.
fn clone_containers(
    s: &Scratch,
    m: &Mounted,
    manifest: &serde_json::Value,
) -> (Vec<(String, String)>, String) {
    let (start, size) = windows_partition(manifest);
    let dev = LoopDev::new(&m.disk(), start, size);
    let at = s.path(&format!(
        "keys-{}",
        m.state.file_name().unwrap().to_string_lossy()
    ));
    let nm = NtfsMount::new(&dev.0, &at);
    let mut files = Vec::new();
    for dir in [
        "ProgramData/Microsoft/Crypto/RSA/MachineKeys",
        "ProgramData/Microsoft/Crypto/Keys",
        "ProgramData/Microsoft/Crypto/SystemKeys",
    ] {
        for e in std::fs::read_dir(nm.0.join(dir)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            files.push((dir.to_string(), name));
        }
    }
    files.sort();
    let software = nm.0.join("Windows/System32/config/SOFTWARE");
    let guid = hivexget(&software, r"Microsoft\Cryptography", "MachineGuid");
    drop(nm);
    drop(dev);
    (files, guid)
}

/// Prove that a clone's machine key containers and its MachineGuid agree (docs/IDENTIFIERS.md,
/// "Machine key containers"): the master carries containers `<32 hex>_<MachineGuid>` under
/// Crypto\RSA\MachineKeys, Crypto\Keys and Crypto\SystemKeys (and one of another machine);
/// in the clone, read through ntfs-3g and hivexget, every container the master named after its
/// MachineGuid is still there and its suffix is the clone's MachineGuid, clone.json and status
/// say MachineGuid is held and why, and `sidfs inspect` of the clone says so too.
#[test]
fn machine_key_containers_follow_the_clones_machine_guid() {
    for tool in ["hivexget", "ntfs-3g", "losetup"] {
        if !have_tool(tool) {
            return;
        }
    }
    let s = Scratch::new("identity-keys");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let containers = manifest["machine_key_containers"].as_array().unwrap();
    let named: Vec<(String, String)> = containers
        .iter()
        .filter(|c| c["named_after_machine_guid"] == true)
        .map(|c| {
            (
                c["dir"].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(named.len() >= 3, "the master carries containers: {named:?}");
    let m = Mounted::new(&master, &s.mkdir("m"), 7, &s.path("st"), &[]);
    let (files, guid) = clone_containers(&s, &m, &manifest);
    for (dir, name) in &named {
        let (hash, _) = name.split_once('_').unwrap();
        let want = format!("{hash}_{guid}");
        assert!(
            files.contains(&(dir.clone(), want.clone())),
            "{dir}/{want} (the container {name} under the clone's MachineGuid {guid}) is missing: {files:?}"
        );
    }
    for (dir, name) in &files {
        let (hash, suffix) = name.split_once('_').unwrap();
        assert_eq!(hash.len(), 32, "{dir}/{name}");
        let foreign = containers
            .iter()
            .any(|c| c["named_after_machine_guid"] == false && c["name"] == name.as_str());
        assert!(
            foreign || suffix.eq_ignore_ascii_case(&guid),
            "{dir}/{name} does not follow the clone's MachineGuid {guid}"
        );
    }
    let info = m.clone_info();
    let held = &info["identity"]["held"];
    assert_eq!(held[0]["kind"], "machine-guid", "{info}");
    assert_eq!(held[0]["value"].as_str(), Some(guid.as_str()));
    assert!(
        held[0]["reason"]
            .as_str()
            .unwrap()
            .contains("machine key container"),
        "{held}"
    );
    assert_eq!(m.status()["identity"], info["identity"]);
    let text = ok(sidfs().arg("inspect").arg(m.disk()));
    assert!(
        text.contains("machine-guid stays as in the master by default"),
        "{text}"
    );
    // Another seed: a different computer name, and still containers and MachineGuid agree.
    let other = Mounted::new(&master, &s.mkdir("o"), 8, &s.path("so"), &[]);
    let (files_o, guid_o) = clone_containers(&s, &other, &manifest);
    assert_eq!((files_o, guid_o), (files, guid));
    other.unmount();
    m.unmount();
}

/// Prove that `sidfs inspect` lists, one line each with why, the identifiers sidfs knows but
/// does not change (SQM MachineId, Defender senseGuid, SCCM SMS GUID in SMSCFG.INI, DHCPv6 DUID
/// on the built master), in text and in --json with the values the builder wrote, and that a
/// clone carries them unchanged.
#[test]
fn inspect_lists_identifiers_it_does_not_change() {
    let s = Scratch::new("identity-unchanged");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let want = &manifest["unchanged_identifiers"];
    let expected = [
        ("sqm-machine-id", want["sqm_machine_id"].as_str().unwrap()),
        (
            "defender-sense-guid",
            want["defender_sense_guid"].as_str().unwrap(),
        ),
        ("sccm-sms-guid", want["sms_unique_id"].as_str().unwrap()),
        ("dhcpv6-duid", want["dhcpv6_duid"].as_str().unwrap()),
    ];
    let json: serde_json::Value =
        serde_json::from_str(&ok(sidfs().arg("inspect").arg("--json").arg(&master))).unwrap();
    let listed = json["windows"]["unchanged_identifiers"].as_array().unwrap();
    for (name, value) in expected {
        let u = listed
            .iter()
            .find(|u| u["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not listed: {listed:?}"));
        assert_eq!(u["value"].as_str(), Some(value), "{name}");
        assert!(u["why"].as_str().is_some_and(|w| w.len() > 20), "{name}");
    }
    assert_eq!(listed.len(), expected.len(), "{listed:?}");
    let text = ok(sidfs().arg("inspect").arg(&master));
    for (name, value) in expected {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{name} ")))
            .collect();
        assert_eq!(lines.len(), 1, "{name}: one line\n{text}");
        assert!(
            lines[0].contains(value) && lines[0].contains("): "),
            "{name}: value and why\n{}",
            lines[0]
        );
    }
    // A clone carries them unchanged, and its inspect says the same.
    let m = Mounted::new(&master, &s.mkdir("m"), 3, &s.path("st"), &[]);
    let cj: serde_json::Value =
        serde_json::from_str(&ok(sidfs().arg("inspect").arg("--json").arg(m.disk()))).unwrap();
    assert_eq!(
        cj["windows"]["unchanged_identifiers"],
        json["windows"]["unchanged_identifiers"]
    );
    m.unmount();
}
