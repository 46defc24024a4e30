use super::discover::{policy_account_domain_name, string_value};
use super::*;
use crate::hive::Hive;

#[test]
fn derived_hostname_keeps_length_is_valid_stable_and_differs_per_seed() {
    let a = derive_hostname("STUDENT-PC8", 7);
    assert_eq!(a.len(), 11);
    assert!(check_hostname(&a).is_ok(), "{a}");
    assert_eq!(a, derive_hostname("STUDENT-PC8", 7));
    assert_eq!(
        a,
        derive_hostname("student-pc8", 7),
        "case of the master's name is irrelevant"
    );
    assert_ne!(a, derive_hostname("STUDENT-PC8", 8));
    assert_ne!(a, "STUDENT-PC8");
    // Pinned: the derivation is part of the clone's identity and must not drift.
    assert_eq!(
        derive_hostname("STUDENT-PC8", 7),
        derive_hostname("STUDENT-PC8", 7)
    );
    for len in 1..=15 {
        let old = "A".repeat(len);
        let new = derive_hostname(&old, 1);
        assert_eq!(new.len(), len);
        assert!(new.as_bytes()[0].is_ascii_uppercase());
    }
}

#[test]
fn derived_guids_are_v4_formatted_like_the_old_and_differ_per_kind_and_seed() {
    let old = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    let g = derive_guid(IdentifierKind::MachineGuid, old, 7);
    assert_eq!(g.len(), 36);
    assert_eq!(g, g.to_ascii_lowercase());
    let bytes = parse_guid(&g).unwrap();
    assert_eq!(bytes[6] >> 4, 4);
    assert_eq!(bytes[8] & 0xC0, 0x80);
    assert_eq!(g, derive_guid(IdentifierKind::MachineGuid, old, 7));
    assert_ne!(g, derive_guid(IdentifierKind::MachineGuid, old, 8));
    assert_ne!(g, derive_guid(IdentifierKind::Wsus, old, 7));
    let cid = derive_guid(
        IdentifierKind::Msdtc,
        "{5F2C1A3E-9B7D-4E61-8C2A-1D3E5F7A9B0C}",
        7,
    );
    assert!(cid.starts_with('{') && cid.ends_with('}'));
    assert_eq!(cid, cid.to_ascii_uppercase());
    assert_eq!(cid.len(), 38);
}

#[test]
fn guid_binary_form_is_the_windows_guid_struct() {
    let t = parse_guid("{00112233-4455-6677-8899-AABBCCDDEEFF}").unwrap();
    assert_eq!(
        guid_binary(&t),
        [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD,
            0xEE, 0xFF
        ]
    );
    assert!(parse_guid("00112233-4455-6677-8899-AABBCCDDEEF").is_none());
    assert!(parse_guid("0011223344556677-8899-AABBCCDDEEFF00").is_none());
}

#[test]
fn hostname_validation_gives_reasons() {
    for good in ["LAB-PC-007", "a", "PC1", "ABCDEFGHIJKLMNO"] {
        assert!(check_hostname(good).is_ok(), "{good}");
    }
    for (bad, why) in [
        ("", "empty"),
        ("ABCDEFGHIJKLMNOP", "at most 15"),
        ("LAB_PC", "not allowed"),
        ("LAB PC", "not allowed"),
        ("-LAB", "hyphen"),
        ("LAB-", "hyphen"),
        ("12345", "digits"),
        ("PC.lan", "not allowed"),
    ] {
        let e = check_hostname(bad).unwrap_err().to_string();
        assert!(
            e.contains(why) && e.starts_with("invalid --hostname"),
            "{bad}: {e}"
        );
        assert_eq!(e.lines().count(), 1);
    }
}

#[test]
fn keep_list_parses_and_rejects_unknown_words() {
    assert_eq!(
        parse_keep_list("machine-guid,hostname").unwrap(),
        vec![IdentifierKind::Hostname, IdentifierKind::MachineGuid]
    );
    assert!(parse_keep_list("hostname,sid")
        .unwrap_err()
        .to_string()
        .contains("unknown identifier"));
}

fn found() -> Vec<FoundIdentifier> {
    let f = |kind, value: &str| FoundIdentifier {
        kind,
        label: None,
        value: value.into(),
        locations: vec![],
        named_files: vec![],
    };
    vec![
        f(IdentifierKind::Hostname, "STUDENT-PC8"),
        f(
            IdentifierKind::MachineGuid,
            "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
        ),
        f(
            IdentifierKind::Msdtc,
            "{5F2C1A3E-9B7D-4E61-8C2A-1D3E5F7A9B0C}",
        ),
    ]
}

#[test]
fn decide_honours_keep_and_hostname_of_any_length() {
    let all = IdentityChoice::decide(&found(), &IdentityRequest::default(), 7).unwrap();
    assert_eq!(all.changes.len(), 3);
    let kept = IdentityChoice::decide(
        &found(),
        &IdentityRequest {
            hostname: None,
            keep: vec![IdentifierKind::MachineGuid],
        },
        7,
    )
    .unwrap();
    assert!(kept.new_value(IdentifierKind::MachineGuid).is_none());
    assert_eq!(
        kept.new_value(IdentifierKind::Hostname),
        all.new_value(IdentifierKind::Hostname)
    );
    let named = IdentityChoice::decide(
        &found(),
        &IdentityRequest {
            hostname: Some("lab-pc-0007".into()),
            keep: vec![],
        },
        7,
    )
    .unwrap();
    assert_eq!(
        named.new_value(IdentifierKind::Hostname),
        Some("LAB-PC-0007")
    );
    // Shorter and longer than the master's 11 characters: the NetBIOS name upper case, the
    // DNS host name as given.
    for (given, netbios) in [
        ("Lab1", "LAB1"),
        ("LAB-PC-007", "LAB-PC-007"),
        ("wks-a-0042-xyz", "WKS-A-0042-XYZ"),
    ] {
        let c = IdentityChoice::decide(
            &found(),
            &IdentityRequest {
                hostname: Some(given.into()),
                keep: vec![],
            },
            7,
        )
        .unwrap();
        let change = c
            .changes
            .iter()
            .find(|c| c.kind == IdentifierKind::Hostname)
            .unwrap();
        assert_eq!(change.new, netbios);
        assert_eq!(change.dns_name(), given);
        assert_eq!(change.dns.is_some(), given != netbios);
        assert!(IdentityMapping::new(&c).is_ok());
    }
    for bad in ["ABCDEFGHIJKLMNOP", "LAB_1", "LAB.1"] {
        let e = IdentityChoice::decide(
            &found(),
            &IdentityRequest {
                hostname: Some(bad.into()),
                keep: vec![],
            },
            7,
        )
        .unwrap_err();
        assert!(matches!(e, IdentityError::InvalidHostname { .. }), "{e}");
    }
}

#[test]
fn mapping_replaces_every_form_keeps_case_and_respects_word_boundaries() {
    let choice = IdentityChoice {
        changes: vec![
            Change {
                kind: IdentifierKind::Hostname,
                label: None,
                old: "STUDENT-PC8".into(),
                new: "K3F9Q2ZB7XA".into(),
                dns: None,
            },
            Change {
                kind: IdentifierKind::Msdtc,
                label: None,
                old: "{00112233-4455-6677-8899-AABBCCDDEEFF}".into(),
                new: "{FFEEDDCC-BBAA-4988-B766-554433221100}".into(),
                dns: None,
            },
        ],
        kept: vec![],
        held: vec![],
    };
    let m = IdentityMapping::new(&choice).unwrap();
    let mut buf = Vec::new();
    buf.extend_from_slice(b"\\\\STUDENT-PC8\\share;student-pc8\0;XSTUDENT-PC8;STUDENT-PC89;");
    buf.extend_from_slice(&utf16("STUDENT-PC8\\gold"));
    buf.extend_from_slice(&guid_binary(
        &parse_guid("00112233-4455-6677-8899-AABBCCDDEEFF").unwrap(),
    ));
    buf.extend_from_slice(b"{00112233-4455-6677-8899-aabbccddeeff}");
    let n = m.replace_all(&mut buf);
    assert_eq!(n, 5);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.contains("\\\\K3F9Q2ZB7XA\\share;k3f9q2zb7xa\0;XSTUDENT-PC8;STUDENT-PC89;"));
    assert!(text.contains("{ffeeddcc-bbaa-4988-b766-554433221100}"));
    assert!(count(&buf, &utf16("K3F9Q2ZB7XA\\gold")) == 1);
    assert!(
        count(
            &buf,
            &guid_binary(&parse_guid("FFEEDDCC-BBAA-4988-B766-554433221100").unwrap())
        ) == 1
    );
    assert!(m.find_all(&buf, true).is_empty());
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

fn real_hive(name: &str) -> Option<Vec<u8>> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/realdata/winreg-kb-STUDENT-PC8/"
    );
    std::fs::read(format!("{dir}{name}")).ok()
}

fn computer_name_change(new: &str) -> IdentityChoice {
    IdentityChoice {
        changes: vec![Change {
            kind: IdentifierKind::Hostname,
            label: None,
            old: "STUDENT-PC8".into(),
            new: new.into(),
            dns: None,
        }],
        kept: vec![],
        held: vec![],
    }
}

/// The real STUDENT-PC8 hives: the computer name in SECURITY `PolAcDmN` (UNICODE_STRING), the
/// user's `WMSDK\General\ComputerName` and the lower-case name in shell-link blobs all change,
/// and the hives still validate.
#[test]
fn real_hives_lose_the_computer_name_and_stay_valid() {
    let (Some(security), Some(ntuser)) = (real_hive("SECURITY"), real_hive("NTUSER.DAT")) else {
        return;
    };
    let map = IdentityMapping::new(&computer_name_change("K3F9Q2ZB7XA")).unwrap();
    let (sec, report) = hive::rewrite_identifiers(&security, &map).unwrap();
    assert_eq!(report.total(), 1);
    let h = Hive::parse(&sec).unwrap();
    assert_eq!(
        policy_account_domain_name(&h).as_deref(),
        Some("K3F9Q2ZB7XA")
    );
    let (nt, report) = hive::rewrite_identifiers(&ntuser, &map).unwrap();
    assert!(report.total() >= 3, "{report:?}");
    assert_eq!(count(&nt, b"student-pc8"), 0);
    assert_eq!(count(&nt, &utf16("STUDENT-PC8")), 0);
    assert_eq!(count(&nt, b"k3f9q2zb7xa"), count(&ntuser, b"student-pc8"));
    let h = Hive::parse(&nt).unwrap();
    let v = string_value(
        &h,
        r"Software\Microsoft\Windows Media\WMSDK\General",
        "ComputerName",
    );
    assert_eq!(v.as_deref(), Some("K3F9Q2ZB7XA"));
    // Only the identifier's bytes changed.
    let changed = ntuser.iter().zip(&nt).filter(|(a, b)| a != b).count();
    assert!(changed <= report.total() * 22, "{changed} bytes changed");
}

/// Renaming a GUID-named key to one that sorts last must move it to the end of its parent's
/// subkey list with a correct lh hash, so that lookups by the new name find it.
#[test]
fn a_renamed_key_is_resorted_in_its_parents_list() {
    let Some(ntuser) = real_hive("NTUSER.DAT") else {
        return;
    };
    let hive = Hive::parse(&ntuser).unwrap();
    // A parent with at least three GUID-named subkeys; rename its first to the greatest GUID.
    let mut target = None;
    for walked in hive.walk() {
        let key = walked.unwrap().key;
        let names: Vec<String> = key
            .subkeys()
            .unwrap()
            .iter()
            .map(|k| k.name().to_string_lossy())
            .collect();
        if names.iter().filter(|n| parse_guid(n).is_some()).count() >= 3
            && parse_guid(&names[0]).is_some()
        {
            target = Some((key.offset(), names));
            break;
        }
    }
    let (parent, names) = target.expect("NTUSER.DAT has a key with three GUID-named subkeys");
    let old = names[0].clone();
    let new = format_guid_like(&[0xFF; 16], &old);
    assert_eq!(new.len(), old.len());
    let choice = IdentityChoice {
        changes: vec![Change {
            kind: IdentifierKind::Msdtc,
            label: None,
            old: old.clone(),
            new: new.clone(),
            dns: None,
        }],
        kept: vec![],
        held: vec![],
    };
    let map = IdentityMapping::new(&choice).unwrap();
    let (out, report) = hive::rewrite_identifiers(&ntuser, &map).unwrap();
    assert_eq!(report.lists_resorted, 1, "{report:?}");
    let h = Hive::parse(&out).unwrap();
    let key = h.key(parent).unwrap();
    let after: Vec<String> = key
        .subkeys()
        .unwrap()
        .iter()
        .map(|k| k.name().to_string_lossy())
        .collect();
    assert_eq!(after.len(), names.len());
    assert!(!after.contains(&old));
    assert!(
        key.subkey(&new).unwrap().is_some(),
        "the renamed key is found by name"
    );
    for n in &names[1..] {
        assert!(key.subkey(n).unwrap().is_some(), "{n} still found");
    }
}

/// A hive made by hivexsh from STUDENT-PC8's SECURITY (a small clean real hive) plus `script`;
/// `None` (with the reason printed) when hivexsh or the real data is absent.
fn hivex_hive(script: &str) -> Option<Vec<u8>> {
    let source = crate::testutil::realdata("winreg-kb-STUDENT-PC8/SECURITY");
    if !crate::testutil::tool_present("hivexsh") || !source.exists() {
        println!("SKIPPED: hivexsh or the STUDENT-PC8 realdata is absent");
        return None;
    }
    let dir = crate::testutil::TempDir::new("identity-hive");
    let target = dir.path("hive");
    crate::testutil::hivexsh_edit(&source, &target, script);
    Some(std::fs::read(&target).unwrap())
}

const GUID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

#[test]
fn container_names_follow_hash_underscore_machine_guid() {
    assert!(is_container_of(
        &format!("f686aace6942fb7f7ceb231212eef4a4_{GUID}"),
        GUID
    ));
    assert!(is_container_of(
        &format!("F686AACE6942FB7F7CEB231212EEF4A4_{}", GUID.to_uppercase()),
        &format!("{{{GUID}}}")
    ));
    for not in [
        format!("f686aace6942fb7f7ceb231212eef4a_{GUID}"), // 31 hex digits
        format!("g686aace6942fb7f7ceb231212eef4a4_{GUID}"),
        "f686aace6942fb7f7ceb231212eef4a4_0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d".into(),
        format!("f686aace6942fb7f7ceb231212eef4a4{GUID}"),
        format!("f686aace6942fb7f7ceb231212eef4a4_{GUID}.bak"),
        String::new(),
    ] {
        assert!(!is_container_of(&not, GUID), "{not}");
    }
}

/// Prove that discover_on finds the containers named after MachineGuid in all three key
/// folders (and only those), and that decide then keeps MachineGuid with the reason, unless the
/// user keeps it anyway; without containers it changes as before.
#[test]
fn machine_guid_is_held_when_key_containers_are_named_after_it() {
    let Some(software) = hivex_hive(&format!(
        "add Microsoft\ncd Microsoft\nadd Cryptography\ncd Cryptography\n\
         setval 1\nMachineGuid\nstring:{GUID}\n"
    )) else {
        return;
    };
    let read = |p: &str| (p == SOFTWARE_HIVE).then(|| software.clone());
    let list = |dir: &str| -> Option<Vec<String>> {
        let names: &[&str] = match dir {
            r"ProgramData\Microsoft\Crypto\RSA\MachineKeys" => &[
                "f686aace6942fb7f7ceb231212eef4a4_3f2504e0-4f89-41d3-9a0c-0305e82c3301",
                "c2319c42033a5ca7f44e731bfd3fa2b5_0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d",
            ],
            r"ProgramData\Microsoft\Crypto\Keys" => {
                &["de7cf8a7901d2ad13e5c67c29e5d1662_3f2504e0-4f89-41d3-9a0c-0305e82c3301"]
            }
            r"ProgramData\Microsoft\Crypto\SystemKeys" => &["desktop.ini"],
            _ => return None,
        };
        Some(names.iter().map(|n| n.to_string()).collect())
    };
    let found = discover_on(&read, &list);
    let guid = found
        .iter()
        .find(|f| f.kind == IdentifierKind::MachineGuid)
        .expect("MachineGuid found");
    assert_eq!(guid.value, GUID);
    assert_eq!(
        guid.named_files,
        vec![
            format!(
                r"ProgramData\Microsoft\Crypto\RSA\MachineKeys\f686aace6942fb7f7ceb231212eef4a4_{GUID}"
            ),
            format!(r"ProgramData\Microsoft\Crypto\Keys\de7cf8a7901d2ad13e5c67c29e5d1662_{GUID}"),
        ]
    );
    let choice = IdentityChoice::decide(&found, &IdentityRequest::default(), 7).unwrap();
    assert!(choice.new_value(IdentifierKind::MachineGuid).is_none());
    assert_eq!(choice.held.len(), 1);
    assert_eq!(choice.held[0].kind, IdentifierKind::MachineGuid);
    assert!(
        choice.held[0].reason.contains("2 machine key container(s)"),
        "{}",
        choice.held[0].reason
    );
    let kept = IdentityChoice::decide(
        &found,
        &IdentityRequest {
            hostname: None,
            keep: vec![IdentifierKind::MachineGuid],
        },
        7,
    )
    .unwrap();
    assert!(kept.held.is_empty(), "kept by the user, not held");
    // The old discovery (no listing) and a master without containers: MachineGuid changes.
    let bare = discover(&read);
    assert!(bare.iter().all(|f| f.named_files.is_empty()));
    let changed = IdentityChoice::decide(&bare, &IdentityRequest::default(), 7).unwrap();
    assert!(changed.new_value(IdentifierKind::MachineGuid).is_some());
    assert!(changed.held.is_empty());
    // A state.json written before `held` existed still reads.
    let old: IdentityChoice =
        serde_json::from_str(r#"{"changes":[],"kept":["machine-guid"]}"#).unwrap();
    assert!(old.held.is_empty());
}

/// Prove that each known-but-unchanged identifier is reported, from synthetic hives made by
/// hivex and an SMSCFG.INI, with its place and a reason; absent ones are not listed.
#[test]
fn unchanged_identifiers_are_listed_with_place_and_reason() {
    let Some(software) = hivex_hive(
        "add Microsoft\ncd Microsoft\nadd SQMClient\ncd SQMClient\n\
         setval 1\nMachineId\nstring:{5D1F0A11-7C3E-4B2A-9D8E-1F2A3B4C5D6E}\ncd ..\n\
         add Windows Advanced Threat Protection\ncd Windows Advanced Threat Protection\n\
         setval 1\nsenseGuid\nstring:6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d\ncd ..\n\
         add Windows NT\ncd Windows NT\nadd CurrentVersion\ncd CurrentVersion\n\
         add SoftwareProtectionPlatform\ncd SoftwareProtectionPlatform\nadd Activation\n\
         cd Activation\nsetval 1\nCMID\nstring:7c1e2a3b-4d5e-4f60-8172-839405a6b7c8\n",
    ) else {
        return;
    };
    let Some(system) = hivex_hive(
        "add Select\ncd Select\nsetval 1\nCurrent\ndword:2\ncd \\\n\
         add ControlSet002\ncd ControlSet002\nadd Services\ncd Services\nadd Tcpip6\n\
         cd Tcpip6\nadd Parameters\ncd Parameters\n\
         setval 1\nDhcpv6DUID\nhex:3:00,01,00,01,2f,5d,1f,00,52,54,00,12,a4,b6\n",
    ) else {
        return;
    };
    let ini =
        b"[Configuration - Client Properties]\r\nSMS Unique Identifier=GUID:5D1F\r\n".to_vec();
    let read = |p: &str| match p {
        SOFTWARE_HIVE => Some(software.clone()),
        SYSTEM_HIVE => Some(system.clone()),
        SMSCFG_INI => Some(ini.clone()),
        _ => None,
    };
    let found = unchanged::discover_unchanged(&read);
    let get = |name: &str| {
        found
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("{name} not listed: {found:?}"))
    };
    assert_eq!(
        get("kms-client-machine-id").value,
        "7c1e2a3b-4d5e-4f60-8172-839405a6b7c8"
    );
    assert_eq!(
        get("kms-client-machine-id").location.as_ref().unwrap().key,
        r"Microsoft\Windows NT\CurrentVersion\SoftwareProtectionPlatform\Activation"
    );
    assert_eq!(
        get("sqm-machine-id").value,
        "{5D1F0A11-7C3E-4B2A-9D8E-1F2A3B4C5D6E}"
    );
    assert_eq!(
        get("defender-sense-guid").value,
        "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d"
    );
    assert_eq!(get("sccm-sms-guid").value, "GUID:5D1F");
    assert_eq!(get("sccm-sms-guid").file.as_deref(), Some(SMSCFG_INI));
    let duid = get("dhcpv6-duid");
    assert_eq!(duid.value, "000100012f5d1f0052540012a4b6");
    assert_eq!(
        duid.location.as_ref().unwrap().key,
        r"ControlSet002\Services\Tcpip6\Parameters",
        "the current control set"
    );
    assert_eq!(found.len(), 5);
    assert!(found.iter().all(|u| !u.why.is_empty()));
    // Nothing there, nothing listed; garbage hives give nothing, never a panic.
    assert!(unchanged::discover_unchanged(&|_| None).is_empty());
    assert!(unchanged::discover_unchanged(&|_| Some(vec![0x72; 4096])).is_empty());
}

mod resize;
