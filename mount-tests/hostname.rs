//! `--hostname` of another length than the master's computer name (issue 12 item 1): a clone
//! named shorter and one named longer than the master, read back with independent tools (hivex
//! through ntfs-3g), `sidfs inspect` and `sidfs verify`.

use std::path::Path;
use std::process::Command;

use crate::common::*;

const CONFIG: &str = "Windows/System32/config";

fn export(hive: &Path) -> String {
    ok(Command::new("hivexregedit")
        .arg("--export")
        .arg(hive)
        .arg("\\"))
}

/// The exports of a clone's SYSTEM, SOFTWARE and SECURITY hives (hivexregedit reads every key
/// and value; it fails on a hive it cannot read), from ntfs-3g over a read-only loop device.
fn exports(s: &Scratch, m: &Mounted, manifest: &serde_json::Value) -> Vec<String> {
    let (start, size) = windows_partition(manifest);
    let dev = LoopDev::new(&m.disk(), start, size);
    let at = s.path(&format!(
        "ntfs-{}",
        m.state.file_name().unwrap().to_string_lossy()
    ));
    let nm = NtfsMount::new(&dev.0, &at);
    let config = nm.0.join(CONFIG);
    let out = ["SYSTEM", "SOFTWARE", "SECURITY"]
        .iter()
        .map(|h| export(&config.join(h)))
        .collect();
    drop(nm);
    drop(dev);
    out
}

fn utf16_hex(s: &str) -> String {
    hex_csv(
        &s.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>(),
    )
}

/// How hivexregedit exports a REG_SZ value `name` holding `text` (UTF-16LE with its NUL).
fn sz_line(name: &str, text: &str) -> String {
    format!("\"{name}\"=hex(1):{},00,00", utf16_hex(text))
}

/// The `[\Policy\PolAcDmN]` section of a SECURITY export, and the export without it.
fn split_policy_name(export: &str) -> (String, String) {
    let mut policy = String::new();
    let mut rest = Vec::new();
    for section in export.split("\n\n") {
        if section.trim_start().starts_with("[\\Policy\\PolAcDmN]") {
            policy = section.to_string();
        } else {
            rest.push(section);
        }
    }
    (policy, rest.join("\n\n"))
}

/// Prove that a clone named shorter (`Lab1`) and one named longer (`wks-a-0042-xyz1`, 15
/// characters) than the master's 11-character STUDENT-PC8 have the new name at every place,
/// read by hivex: the NetBIOS name upper case (ComputerName, ActiveComputerName, both control
/// sets, Winlogon AltDefaultDomainName, PolAcDmN with its UNICODE_STRING lengths), the DNS host
/// name as given (Tcpip Hostname, NV Hostname); every other key and value of the three hives is
/// exactly that of a clone of the same seed that keeps the master's name; `sidfs inspect` of the
/// clone reads the new name; `sidfs verify` is clean; export equals the mount; a remount gives
/// the same disk; the master never changes.
#[test]
fn shorter_and_longer_names_are_written_everywhere_windows_reads_them() {
    for tool in ["hivexregedit", "ntfs-3g", "losetup"] {
        if !have_tool(tool) {
            return;
        }
    }
    let s = Scratch::new("hostname");
    let (master, manifest) = build_master(&s, "master.img", &[]);
    let before = sha256(&master);
    let old = manifest["computer_name"].as_str().unwrap().to_string();
    assert_eq!(old, "STUDENT-PC8");
    let kept = Mounted::new(
        &master,
        &s.mkdir("kept"),
        7,
        &s.path("st-kept"),
        &["--keep", "hostname"],
    );
    let base = exports(&s, &kept, &manifest);
    kept.unmount();
    assert!(
        base[0].contains(&sz_line("ComputerName", &old)),
        "{}",
        base[0]
    );

    for (i, (given, netbios)) in [("Lab1", "LAB1"), ("wks-a-0042-xyz1", "WKS-A-0042-XYZ1")]
        .into_iter()
        .enumerate()
    {
        let mp = s.mkdir(&format!("m{i}"));
        let state = s.path(&format!("st{i}"));
        let m = Mounted::new(&master, &mp, 7, &state, &["--hostname", given]);
        let got = exports(&s, &m, &manifest);
        let all = got.join("\n");
        assert!(
            !all.to_ascii_uppercase().contains(&old),
            "{given}: the old name remains: {all}"
        );
        assert!(!all.contains(&utf16_hex(&old)), "{given}: old name as hex");
        // Where Windows reads the name.
        let system = &got[0];
        let netbios_line = sz_line("ComputerName", netbios);
        assert_eq!(
            system.matches(&netbios_line).count(),
            3,
            "{given}: {system}"
        );
        assert_eq!(
            system.matches(&sz_line("Hostname", given)).count(),
            2,
            "{given}: Hostname as given in both control sets: {system}"
        );
        assert!(
            system.contains(&sz_line("NV Hostname", given)),
            "{given}: NV Hostname as given: {system}"
        );
        assert!(got[1].contains(&sz_line("AltDefaultDomainName", netbios)));
        let (policy, security_rest) = split_policy_name(&got[2]);
        let n = 2 * netbios.len();
        assert!(
            policy.contains(&format!(
                "{:02x},00,{:02x},00,08,00,00,00,{},00,00",
                n,
                n + 2,
                utf16_hex(netbios)
            )),
            "{given}: PolAcDmN {policy}"
        );
        // Everything else is the clone that kept the name, with the name replaced.
        let lower = (old.to_ascii_lowercase(), netbios.to_ascii_lowercase());
        let mut want: Vec<String> = base
            .iter()
            .map(|e| {
                e.replace(&sz_line("Hostname", &old), &sz_line("Hostname", given))
                    .replace(
                        &sz_line("NV Hostname", &old),
                        &sz_line("NV Hostname", given),
                    )
                    .replace(&utf16_hex(&old), &utf16_hex(netbios))
                    .replace(&utf16_hex(&lower.0), &utf16_hex(&lower.1))
                    .replace(&old, netbios)
                    .replace(&lower.0, &lower.1)
            })
            .collect();
        want[2] = split_policy_name(&want[2]).1;
        let got_rest = [got[0].clone(), got[1].clone(), security_rest];
        for (h, (g, w)) in ["SYSTEM", "SOFTWARE", "SECURITY"]
            .iter()
            .zip(got_rest.iter().zip(&want))
        {
            assert!(
                sorted_sections(g) == sorted_sections(w),
                "{given}: {h} differs from the kept-name clone beyond the name"
            );
        }
        // inspect reads the clone as Windows would.
        let report: serde_json::Value =
            serde_json::from_str(&ok(sidfs().arg("inspect").arg(m.disk()).arg("--json"))).unwrap();
        let w = &report["windows"];
        assert_eq!(w["computer_name"], netbios, "{given}");
        assert_eq!(w["hostname"], given, "{given}");
        assert_eq!(w["account_domain_name"], netbios, "{given}");
        ok(sidfs().arg("verify").arg(m.disk()));
        // Export equals the mount; a remount of the state is the same clone.
        let out = s.path(&format!("export{i}.img"));
        ok(sidfs()
            .arg("export")
            .arg(&master)
            .arg(&out)
            .args(["--seed", "7", "--hostname", given]));
        assert!(
            read_all(&out) == read_all(&m.disk()),
            "{given}: export differs"
        );
        let disk = read_all(&m.disk());
        m.unmount();
        let again = Mounted::new(&master, &mp, 7, &state, &[]);
        assert!(read_all(&again.disk()) == disk, "{given}: remount differs");
        again.unmount();
        std::fs::remove_file(&out).unwrap();
    }
    assert_eq!(sha256(&master), before, "the master must never change");
}

/// Prove that an invalid `--hostname` (16 characters, a character NetBIOS and DNS do not
/// allow) is refused in one line before any state exists, in mount and in export.
#[test]
fn invalid_names_are_refused_in_one_line() {
    let s = Scratch::new("hostname-bad");
    let (master, _) = build_master(&s, "master.img", &[]);
    for (bad, why) in [("ABCDEFGHIJKLMNOP", "at most 15"), ("LAB_1", "not allowed")] {
        let state = s.path("st");
        let out = mount_cmd(&master, &s.mkdir("mp"), 7, &state, &["--hostname", bad]);
        assert_eq!(out.status.code(), Some(1));
        let err = one_line_error(&out);
        assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
        assert!(!state.exists(), "{bad}: a refused mount left its state");
        let img = s.path("out.img");
        let out = run(sidfs().arg("export").arg(&master).arg(&img).args([
            "--seed",
            "7",
            "--hostname",
            bad,
        ]));
        let err = one_line_error(&out);
        assert!(err.contains(bad), "{bad}: {err}");
        assert!(!img.exists());
    }
}

/// Marks every free cell of every copy of the SYSTEM hive in a raw image allocated (an orphan
/// allocated cell is valid; the base block, and so its checksum, is untouched): a hive with no
/// free cell at all. Returns how many cells it marked.
fn fill_free_cells_of_system_hives(image: &Path) -> usize {
    use std::os::unix::fs::FileExt;
    let mut bytes = read_all(image);
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let mut marked = 0;
    let mut at = 0;
    while at + 4096 <= bytes.len() {
        let name: Vec<u16> = bytes[at + 0x30..at + 0x70]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        let is_system = &bytes[at..at + 4] == b"regf"
            && String::from_utf16_lossy(&name)
                .to_ascii_uppercase()
                .ends_with("\\CONFIG\\SYSTEM");
        if !is_system {
            at += 512;
            continue;
        }
        let end = (at + 4096 + le32(&bytes, at + 0x28) as usize).min(bytes.len());
        let mut bin = at + 4096;
        while bin + 0x20 <= end && &bytes[bin..bin + 4] == b"hbin" {
            let bin_end = bin + le32(&bytes, bin + 8) as usize;
            let mut cell = bin + 0x20;
            while cell + 4 <= bin_end.min(end) {
                let size = i32::from_le_bytes(bytes[cell..cell + 4].try_into().unwrap());
                if size == 0 {
                    break;
                }
                if size > 0 {
                    bytes[cell..cell + 4].copy_from_slice(&(-size).to_le_bytes());
                    marked += 1;
                }
                cell += size.unsigned_abs() as usize;
            }
            bin = bin_end;
        }
        at = end.max(at + 512);
    }
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(&bytes, 0).unwrap();
    marked
}

/// Prove that a name longer than the master's is refused in one line, before any state exists,
/// naming the SYSTEM hive and the size it needs, when that hive has no free cell (crafted here:
/// every free cell marked allocated), in mount and export; a shorter name, which shrinks values
/// in their cells, still makes a clone of that master that `sidfs verify` accepts.
#[test]
fn a_longer_name_without_a_free_cell_is_refused_naming_the_hive() {
    let s = Scratch::new("hostname-full");
    let (master, _) = build_master(&s, "master.img", &[]);
    assert!(fill_free_cells_of_system_hives(&master) > 0);
    let mp = s.mkdir("mp");
    let state = s.path("st");
    let out = mount_cmd(&master, &mp, 7, &state, &["--hostname", "WKS-A-0042-XYZ1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_error(&out);
    assert!(
        err.contains("no free cell of")
            && err.contains(r"Windows\System32\config\SYSTEM")
            && err.contains("WKS-A-0042-XYZ1")
            && err.contains("at most 11 characters"),
        "{err}"
    );
    assert!(!state.exists(), "a refused mount left its state");
    let img = s.path("out.img");
    let err = one_line_error(&run(sidfs().arg("export").arg(&master).arg(&img).args([
        "--seed",
        "7",
        "--hostname",
        "WKS-A-0042-XYZ1",
    ])));
    assert!(err.contains("no free cell of"), "{err}");
    assert!(!img.exists());
    let m = Mounted::new(&master, &mp, 7, &state, &["--hostname", "LAB1"]);
    ok(sidfs().arg("verify").arg(m.disk()));
    m.unmount();
}
