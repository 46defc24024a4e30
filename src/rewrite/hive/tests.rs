//! Tests of [`rewrite_hive`] on the real STUDENT-PC8 hives (read in place from
//! `../shared/realdata`, never copied into the project), on hives edited by hivex (an independent
//! implementation that writes lh lists) and on hand-built big-data (db) values, which hivex never
//! writes. hivex (`hivexregedit`, `hivexsh`) is also the independent reader that checks the results.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::hive::{KeyNode, SubkeyListKind};
use crate::sid::MachineSid;

const OLD: &str = "S-1-5-21-4070822719-3404542230-2541167049";
/// Same number of digits per sub-authority as OLD; sorts after `S-1-5-21-226059406-…` as OLD does.
const NEW: &str = "S-1-5-21-4111111111-3222222222-2333333333";
/// The AD domain STUDENT-PC8 is joined to (SECURITY `Policy\PolPrDmS`): must never change.
const DOMAIN: &str = "S-1-5-21-226059406-2984137831-1201299043";

fn old_sid() -> MachineSid {
    OLD.parse().unwrap()
}

fn new_sid() -> MachineSid {
    NEW.parse().unwrap()
}

fn mapping() -> SidMapping {
    SidMapping::new(old_sid(), new_sid()).unwrap()
}

/// Finds the NEW SID (to count what the rewrite wrote).
fn reverse_mapping() -> SidMapping {
    SidMapping::new(new_sid(), old_sid()).unwrap()
}

fn realdata(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/realdata")
        .join(relative)
}

fn student(name: &str) -> Vec<u8> {
    let path = realdata(&format!("winreg-kb-STUDENT-PC8/{name}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn counts(map: &SidMapping, buf: &[u8]) -> FormCounts {
    let mut c = FormCounts::default();
    for occ in map.find_all(buf, true) {
        c.add(occ.form);
    }
    c
}

/// A temporary directory removed on drop (also when a test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "sidfs-hive-rewrite-{label}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True when the hivex tools are installed; otherwise prints why the oracle part is skipped.
fn hivex_available() -> bool {
    let ok = Command::new("hivexregedit").arg("--help").output().is_ok()
        && Command::new("hivexsh")
            .arg("-d")
            .arg("/dev/null")
            .output()
            .is_ok();
    if !ok {
        println!("SKIPPED: hivexregedit/hivexsh (hivex) are not installed");
    }
    ok
}

/// `hivexregedit --export` of the whole hive, with continuation lines joined.
fn hivex_export(path: &Path) -> String {
    let output = Command::new("hivexregedit")
        .arg("--export")
        .arg("--unsafe-printable-strings")
        .arg(path)
        .arg("\\")
        .output()
        .expect("run hivexregedit");
    assert!(
        output.status.success(),
        "hivexregedit --export {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("export is UTF-8");
    // .reg hex values wrap as "…,\\\n  …": join them so that a byte run is on one line.
    let mut joined = String::with_capacity(text.len());
    let mut continuing = false;
    for line in text.lines() {
        let line = if continuing { line.trim_start() } else { line };
        match line.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                continuing = true;
            }
            None => {
                joined.push_str(line);
                joined.push('\n');
                continuing = false;
            }
        }
    }
    joined
}

fn reg_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Replaces, in a .reg export, the textual and hex-encoded forms of the old SID by the new ones.
fn replace_sid_in_export(text: &str) -> String {
    let (old, new) = (old_sid(), new_sid());
    let mut pairs: Vec<(String, String)> = vec![
        (OLD.to_string(), NEW.to_string()),
        (OLD.to_lowercase(), NEW.to_lowercase()),
        (
            reg_hex(&old.binary_pattern()),
            reg_hex(&new.binary_pattern()),
        ),
        (reg_hex(&old.utf16le()), reg_hex(&new.utf16le())),
        (reg_hex(&old.ascii()), reg_hex(&new.ascii())),
    ];
    let mut lower_old = old.utf16le();
    let mut lower_new = new.utf16le();
    lower_old[0] = b's';
    lower_new[0] = b's';
    pairs.push((reg_hex(&lower_old), reg_hex(&lower_new)));
    let mut out = text.to_string();
    for (from, to) in pairs {
        out = out.replace(&from, &to);
    }
    out
}

/// hivexsh can `cd` to `path`: the key exists under that name for an independent reader.
fn hivexsh_can_cd(hive: &Path, path: &str) -> bool {
    let mut child = Command::new("hivexsh")
        .arg(hive)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hivexsh");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "cd {path}\nls").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    output.status.success() && output.stderr.is_empty()
}

/// Applies a .reg file to a copy of `base` with `hivexregedit --merge` and returns the result.
fn hivex_merge(dir: &TempDir, base: &[u8], reg: &str) -> Vec<u8> {
    let hive = dir.write("merged", base);
    let reg_path = dir.write(
        "merge.reg",
        format!("Windows Registry Editor Version 5.00\n\n{reg}\n").as_bytes(),
    );
    let output = Command::new("hivexregedit")
        .arg("--merge")
        .arg("--prefix")
        .arg("")
        .arg(&hive)
        .arg(&reg_path)
        .output()
        .expect("run hivexregedit --merge");
    assert!(
        output.status.success(),
        "hivexregedit --merge failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(&hive).unwrap()
}

/// Sets the minor version (and the checksum) of a hive in memory.
fn set_minor_version(hive: &mut [u8], minor: u32) {
    hive[0x18..0x1C].copy_from_slice(&minor.to_le_bytes());
    fix_checksum(hive);
}

fn fix_checksum(hive: &mut [u8]) {
    let checksum = compute_checksum(&hive[..BASE_BLOCK_SIZE]);
    hive[0x1FC..0x200].copy_from_slice(&checksum.to_le_bytes());
}

/// Checks every subkey list of a hive: leaves strictly sorted by `compare_names`, every lh hash
/// and lf hint matching the name. Returns (lists, lh entries, lf entries).
fn check_all_lists(label: &str, hive: &Hive<'_>) -> (usize, usize, usize) {
    let (mut lists, mut lh, mut lf) = (0, 0, 0);
    for walked in hive.walk() {
        let walked = walked.unwrap_or_else(|e| panic!("{label}: {e}"));
        let Some(list) = walked.key.subkey_list().unwrap() else {
            continue;
        };
        lists += 1;
        let mut previous: Option<Vec<u16>> = None;
        for entry in list.leaf_entries().unwrap() {
            let units = hive.key(entry.key).unwrap().name().units();
            match entry.tag {
                LeafTag::Hash(h) => {
                    lh += 1;
                    assert_eq!(h, lh_hash(&units), "{label}: lh hash under {}", walked.path);
                }
                LeafTag::Hint(h) => {
                    lf += 1;
                    assert_eq!(h, lf_hint(&units), "{label}: lf hint under {}", walked.path);
                }
                LeafTag::None => {}
            }
            if let Some(p) = &previous {
                assert!(
                    compare_names(p, &units).is_lt(),
                    "{label}: list of {:?} unsorted at {:?}",
                    walked.path,
                    String::from_utf16_lossy(&units)
                );
            }
            previous = Some(units);
        }
    }
    (lists, lh, lf)
}

fn value_bytes(hive: &Hive<'_>, key: &str, value: &str) -> Vec<u8> {
    let key: KeyNode<'_> = hive
        .open_key(key)
        .unwrap()
        .unwrap_or_else(|| panic!("no key {key}"));
    key.value(value)
        .unwrap()
        .unwrap_or_else(|| panic!("no value {value}"))
        .data()
        .unwrap()
        .to_vec()
}

/// The real hives: every old occurrence is replaced (the new SID appears exactly as often, per
/// form), nothing else changes except lh tags and the checksum, the result validates, every list
/// is sorted with correct tags, and other SIDs (PolPrDmS) are untouched.
#[test]
fn real_student_hives_are_rewritten_completely_and_stay_valid() {
    let map = mapping();
    let reverse = reverse_mapping();
    let mut total = 0;
    for (name, expect_binary, expect_ascii) in [
        ("SAM", Some(9), Some(1)),
        ("SECURITY", Some(2), Some(1)),
        ("NTUSER.DAT", None, None),
        ("UsrClass.dat", None, None),
    ] {
        let original = student(name);
        let before = counts(&map, &original);
        assert_eq!(
            counts(&reverse, &original).total(),
            0,
            "{name}: the new SID must not occur in the master"
        );
        let result = rewrite_hive(&original, &map, &NoTasks).unwrap_or_else(|e| panic!("{e}"));
        let out = &result.bytes;
        let report = &result.report;
        println!("{name}: {report:?}");
        assert_eq!(out.len(), original.len(), "{name}: length kept");
        assert!(
            map.find_all(out, true).is_empty(),
            "{name}: old SID left at {:?}",
            map.find_all(out, true)
        );
        let after = counts(&reverse, out);
        assert_eq!(
            after, before,
            "{name}: new SID as often as the old, per form"
        );
        assert_eq!(report.replaced, before, "{name}: report counts");
        if let Some(b) = expect_binary {
            assert_eq!(before.binary, b, "{name}: binary occurrences (README)");
        }
        if let Some(a) = expect_ascii {
            assert_eq!(before.ascii, a, "{name}: ASCII occurrences (README)");
        }
        total += before.total();
        // Only the occurrences, lh tags of renamed keys and the checksum changed.
        let new_spans: Vec<Span> = reverse
            .find_all(out, true)
            .iter()
            .map(|o| Span {
                start: o.offset,
                len: o.len,
            })
            .collect();
        for (i, (a, b)) in original.iter().zip(out.iter()).enumerate() {
            if a != b {
                let in_occurrence = new_spans.iter().any(|s| s.start <= i && i < s.end());
                assert!(
                    in_occurrence || (0x1FC..0x200).contains(&i),
                    "{name}: byte {i:#x} changed outside any occurrence"
                );
            }
        }
        let hive = Hive::parse(out).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (lists, lh, lf) = check_all_lists(name, &hive);
        println!("{name}: {lists} lists, {lh} lh and {lf} lf entries verified");
        assert_eq!(report.lf_hints_updated, 0, "{name}: lf hints keep S-1-");
        assert!(!report.checksum_updated, "{name}: no SID in the base block");
        assert_eq!(
            hive.base_block(),
            Hive::parse(&original).unwrap().base_block()
        );
    }
    assert!(
        total >= 13,
        "the sample has at least 13 occurrences, found {total}"
    );

    // SAM: the Aliases\Members\<SID> key is renamed; 3 remnants live in free cells.
    let sam = rewrite_hive(&student("SAM"), &map, &NoTasks).unwrap();
    assert_eq!(sam.report.keys_renamed, 1);
    assert_eq!(
        sam.report.renamed_key_paths,
        vec![format!("SAM\\Domains\\Builtin\\Aliases\\Members\\{OLD}")]
    );
    assert_eq!(sam.report.in_free_cells, 3, "SAM free-cell remnants");
    assert_eq!(sam.report.lists_checked, 1);
    let hive = Hive::parse(&sam.bytes).unwrap();
    let members = format!("SAM\\Domains\\Builtin\\Aliases\\Members\\{NEW}");
    assert!(hive.open_key(&members).unwrap().is_some());
    let account_v = value_bytes(&hive, "SAM\\Domains\\Account", "V");
    assert_eq!(
        &account_v[account_v.len() - 24..],
        new_sid().to_sid().to_bytes().as_slice(),
        "SAM Account V ends with the new domain SID"
    );

    // SECURITY: PolAcDmS is the new SID, PolPrDmS (the AD domain) is byte-for-byte the master's.
    let original = student("SECURITY");
    let security = rewrite_hive(&original, &map, &NoTasks).unwrap();
    let before = Hive::parse(&original).unwrap();
    let after = Hive::parse(&security.bytes).unwrap();
    assert_eq!(
        value_bytes(&after, "Policy\\PolAcDmS", ""),
        new_sid().to_sid().to_bytes()
    );
    let domain = value_bytes(&before, "Policy\\PolPrDmS", "");
    assert!(
        domain
            .windows(12)
            .any(|w| w == DOMAIN.parse::<MachineSid>().unwrap().binary_pattern()),
        "PolPrDmS holds the AD domain SID"
    );
    assert_eq!(value_bytes(&after, "Policy\\PolPrDmS", ""), domain);

    // UsrClass: the root is the domain user's `<SID>_Classes` and must keep its name.
    let usrclass = rewrite_hive(&student("UsrClass.dat"), &map, &NoTasks).unwrap();
    let hive = Hive::parse(&usrclass.bytes).unwrap();
    assert_eq!(
        hive.root_key().unwrap().name().to_string_lossy(),
        format!("{DOMAIN}-1107_Classes")
    );
}

/// Independent oracle: hivex's full export of each clone hive equals the export of the master
/// with the SID's text and hex forms replaced; and hivexsh finds the renamed SAM key by its new
/// name and no longer by its old one.
#[test]
fn hivex_export_differs_only_by_the_sid() {
    if !hivex_available() {
        return;
    }
    let map = mapping();
    let dir = TempDir::new("export");
    for name in ["SAM", "SECURITY", "NTUSER.DAT", "UsrClass.dat"] {
        let original = student(name);
        let result = rewrite_hive(&original, &map, &NoTasks).unwrap();
        let master_path = dir.write(&format!("{name}.master"), &original);
        let clone_path = dir.write(&format!("{name}.clone"), &result.bytes);
        let master = hivex_export(&master_path);
        let clone = hivex_export(&clone_path);
        if counts(&map, &original).total() > 0 {
            assert_ne!(master, clone, "{name}: the export must change");
        }
        let expected = replace_sid_in_export(&master);
        if expected != clone {
            let first = expected
                .lines()
                .zip(clone.lines())
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("expected {a:.200}\n   found {b:.200}"));
            panic!("{name}: hivex exports differ beyond the SID: {first:?}");
        }
        assert!(
            !clone.contains(OLD),
            "{name}: old SID text in the clone export"
        );
    }
    let clone = dir.write(
        "SAM.clone",
        &rewrite_hive(&student("SAM"), &map, &NoTasks).unwrap().bytes,
    );
    let members = "\\SAM\\Domains\\Builtin\\Aliases\\Members";
    assert!(hivexsh_can_cd(&clone, &format!("{members}\\{NEW}")));
    assert!(!hivexsh_can_cd(&clone, &format!("{members}\\{OLD}")));
    let master = dir.write("SAM.master", &student("SAM"));
    assert!(hivexsh_can_cd(&master, &format!("{members}\\{OLD}")));
}

/// SID-named keys under one parent, next to another domain's SIDs and well-known SIDs.
fn sid_keys_reg(extra: &[&str]) -> String {
    let mut names = vec![
        "S-1-5-18".to_string(),
        "S-1-5-32-544".to_string(),
        format!("{DOMAIN}-1107"),
        "S-1-5-21-3000000000-1-1-500".to_string(),
        OLD.to_string(),
        format!("{OLD}-1001"),
        format!("{OLD}-1001_Classes"),
        format!("{OLD}_Classes"),
        "S-1-5-21-4200000000-1-1-500".to_string(),
    ];
    names.extend(extra.iter().map(|s| s.to_string()));
    let mut reg = String::from("[\\SidKeys]\n\"Owner\"=\"") + OLD + "-500\"\n\n";
    for name in names {
        reg.push_str(&format!("[\\SidKeys\\{name}]\n\n"));
    }
    reg
}

/// A 1.5 hive whose SID-named keys hivex put into an lh list: renamed, the lh hashes are
/// recomputed (checked by us and by a fresh walk), the list stays sorted, and hivex finds the keys
/// by their new names. One key's cell slack starts with a digit right after its name: only the
/// structure-aware pass sees that name end, and it must still be renamed.
#[test]
fn lh_list_of_sid_keys_is_rehashed_and_stays_sorted() {
    if !hivex_available() {
        return;
    }
    let dir = TempDir::new("lh");
    let mut base = student("SAM");
    set_minor_version(&mut base, 5);
    let mut built = hivex_merge(&dir, &base, &sid_keys_reg(&[]));
    // Put a digit in the slack right after the name of the key named exactly OLD.
    let slack_at = {
        let hive = Hive::parse(&built).unwrap();
        let key = hive.open_key(&format!("SidKeys\\{OLD}")).unwrap().unwrap();
        let name = key.name();
        assert!(name.is_compressed(), "hivex writes Latin-1 names");
        let end = name.file_offset().0 as usize + name.byte_len();
        assert!(
            end < key.cell().data_file_offset().0 as usize + key.cell().data().len(),
            "the name must be followed by slack in its cell"
        );
        end
    };
    built[slack_at] = b'7';
    let map = mapping();
    let flat_before = map.find_all(&built, true).len();

    let hive = Hive::parse(&built).unwrap();
    let parent = hive.open_key("SidKeys").unwrap().unwrap();
    let list = parent.subkey_list().unwrap().unwrap();
    assert_eq!(
        list.kind(),
        SubkeyListKind::HashLeaf,
        "hivex wrote an lh list"
    );

    let result = rewrite_hive(&built, &map, &NoTasks).unwrap_or_else(|e| panic!("{e}"));
    let report = &result.report;
    println!("{report:?}");
    // 4 under SidKeys (lh) + SAM's own Aliases\Members\<SID> (lf).
    assert_eq!(report.keys_renamed, 5);
    assert_eq!(
        report.lh_hashes_updated, 4,
        "every renamed key's hash changes"
    );
    assert_eq!(report.lists_checked, 2);
    assert_eq!(
        report.found_only_logically, 1,
        "the name followed by a slack digit"
    );
    assert_eq!(report.replaced.total(), flat_before + 1);
    assert!(map.find_all(&result.bytes, true).is_empty());

    let out = Hive::parse(&result.bytes).unwrap();
    let (_, lh, _) = check_all_lists("lh hive", &out);
    assert_eq!(lh, 9, "the 9 SidKeys entries are the only lh entries");
    let names: Vec<String> = out
        .open_key("SidKeys")
        .unwrap()
        .unwrap()
        .subkeys()
        .unwrap()
        .iter()
        .map(|k| k.name().to_string_lossy())
        .collect();
    assert_eq!(
        names,
        vec![
            "S-1-5-18".to_string(),
            format!("{DOMAIN}-1107"),
            "S-1-5-21-3000000000-1-1-500".to_string(),
            NEW.to_string(),
            format!("{NEW}-1001"),
            format!("{NEW}-1001_Classes"),
            format!("{NEW}_Classes"),
            "S-1-5-21-4200000000-1-1-500".to_string(),
            "S-1-5-32-544".to_string(),
        ]
    );
    // Stored hashes are what the names hash to (and differ from the old names' hashes).
    let old_list = list.leaf_entries().unwrap();
    let new_list = out
        .open_key("SidKeys")
        .unwrap()
        .unwrap()
        .subkey_list()
        .unwrap()
        .unwrap()
        .leaf_entries()
        .unwrap();
    let changed = old_list
        .iter()
        .zip(&new_list)
        .filter(|(a, b)| a.tag != b.tag)
        .count();
    assert_eq!(changed, 4);
    assert_eq!(
        value_bytes(&out, "SidKeys", "Owner"),
        format!("{NEW}-500\0")
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect::<Vec<u8>>()
    );

    let path = dir.write("lh.clone", &result.bytes);
    for name in [NEW.to_string(), format!("{NEW}-1001_Classes")] {
        assert!(
            hivexsh_can_cd(&path, &format!("\\SidKeys\\{name}")),
            "{name}"
        );
    }
    assert!(!hivexsh_can_cd(&path, &format!("\\SidKeys\\{OLD}")));
}

/// A renamed key that would sort after a sibling it used to precede is refused, naming the list.
/// `…-25411670491` is another SID (one more digit): it stays, while `OLD-1001` moves from before
/// it (`-` < `1`) to after it (`4111…` > `4070…`).
#[test]
fn broken_order_is_an_error_naming_the_list() {
    if !hivex_available() {
        return;
    }
    let dir = TempDir::new("order");
    let other = "S-1-5-21-4070822719-3404542230-25411670491";
    let built = hivex_merge(&dir, &student("SAM"), &sid_keys_reg(&[other]));
    let error = rewrite_hive(&built, &mapping(), &NoTasks).unwrap_err();
    println!("{error}");
    match &error {
        HiveRewriteError::ListOrderBroken { parent, after, .. } => {
            assert_eq!(parent, "SidKeys");
            assert_eq!(after, other);
        }
        other => panic!("expected ListOrderBroken, got {other:?}"),
    }
    assert!(error.to_string().contains("SidKeys"));
}

/// db big data is built by hand (hivex stores even 20000-byte values in one cell, never as db):
/// a new hbin appended to a copy of SAM (version set to 1.5) holds a db record, its segment
/// list and 4 segments, and an existing vk is pointed at it.
fn with_big_data_value(base: &[u8], key_path: &str, value_name: &str, data: &[u8]) -> Vec<u8> {
    const SEGMENT: usize = 16344;
    let hive = Hive::parse(base).unwrap();
    let vk = hive
        .open_key(key_path)
        .unwrap()
        .unwrap()
        .value(value_name)
        .unwrap()
        .unwrap()
        .file_offset()
        .0 as usize;
    let bins_size = hive.base_block().hive_bins_data_size as usize;
    let bin_start_rel = bins_size;
    let bin_start = BASE_BLOCK_SIZE + bins_size;
    let segments: Vec<&[u8]> = data.chunks(SEGMENT).collect();
    let align = |n: usize| n.div_ceil(8) * 8;
    let db_cell = 16;
    let list_cell = align(4 + 4 * segments.len());
    let used =
        32 + db_cell + list_cell + segments.iter().map(|s| align(4 + s.len())).sum::<usize>();
    let bin_size = (used + 8).div_ceil(4096) * 4096;
    let mut bin = vec![0u8; bin_size];
    bin[0..4].copy_from_slice(b"hbin");
    bin[4..8].copy_from_slice(&(bin_start_rel as u32).to_le_bytes());
    bin[8..12].copy_from_slice(&(bin_size as u32).to_le_bytes());
    let mut at = 32;
    let rel = |at: usize| (bin_start_rel + at) as u32;
    let db_rel = rel(at);
    let list_rel = rel(at + db_cell);
    bin[at..at + 4].copy_from_slice(&(-(db_cell as i32)).to_le_bytes());
    bin[at + 4..at + 6].copy_from_slice(b"db");
    bin[at + 6..at + 8].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    bin[at + 8..at + 12].copy_from_slice(&list_rel.to_le_bytes());
    at += db_cell;
    let list_at = at;
    bin[at..at + 4].copy_from_slice(&(-(list_cell as i32)).to_le_bytes());
    at += list_cell;
    for (i, segment) in segments.iter().enumerate() {
        let size = align(4 + segment.len());
        let seg_rel = rel(at);
        bin[list_at + 4 + 4 * i..list_at + 8 + 4 * i].copy_from_slice(&seg_rel.to_le_bytes());
        bin[at..at + 4].copy_from_slice(&(-(size as i32)).to_le_bytes());
        bin[at + 4..at + 4 + segment.len()].copy_from_slice(segment);
        at += size;
    }
    let free = bin_size - at;
    bin[at..at + 4].copy_from_slice(&(free as i32).to_le_bytes());

    let mut out = Vec::with_capacity(base.len() + bin_size);
    out.extend_from_slice(&base[..bin_start]);
    out.extend_from_slice(&bin);
    out.extend_from_slice(&base[bin_start..]);
    // vk: data size (no inline bit) and data offset → the db cell.
    out[vk + 4..vk + 8].copy_from_slice(&(data.len() as u32).to_le_bytes());
    out[vk + 8..vk + 12].copy_from_slice(&db_rel.to_le_bytes());
    out[0x28..0x2C].copy_from_slice(&((bins_size + bin_size) as u32).to_le_bytes());
    set_minor_version(&mut out, 5);
    out
}

/// Big data: SIDs straddling the segment boundaries (UTF-16 across the first, binary across the
/// third) are replaced in both segments; a SID inside a segment too; and an ASCII
/// `OLD` that ends exactly at the second boundary but is followed by `7` in the next segment is
/// another SID and stays, although a flat scan of the file sees it followed by cell slack.
#[test]
fn big_data_sids_straddling_segments_are_replaced() {
    const SEGMENT: usize = 16344;
    let (old, new) = (old_sid(), new_sid());
    let mut data = vec![b'x'; 3 * SEGMENT + 1000];
    let mut expected = data.clone();
    let mut put = |at: usize, old_bytes: &[u8], new_bytes: &[u8]| {
        data[at..at + old_bytes.len()].copy_from_slice(old_bytes);
        expected[at..at + new_bytes.len()].copy_from_slice(new_bytes);
    };
    put(SEGMENT - 40, &old.utf16le(), &new.utf16le());
    put(20000, &old.ascii(), &new.ascii());
    let trap = 2 * SEGMENT - old.ascii().len();
    put(trap, &old.ascii(), &old.ascii());
    put(2 * SEGMENT, b"7", b"7");
    put(
        3 * SEGMENT - 5,
        &old.binary_pattern(),
        &new.binary_pattern(),
    );

    let base = student("SAM");
    let built = with_big_data_value(&base, "SAM\\Domains\\Account", "F", &data);
    let hive = Hive::parse(&built).unwrap();
    let value = hive
        .open_key("SAM\\Domains\\Account")
        .unwrap()
        .unwrap()
        .value("F")
        .unwrap()
        .unwrap();
    let stored = value.data().unwrap();
    assert_eq!(stored.storage, DataStorage::BigData);
    assert_eq!(stored.segments.len(), 4);
    assert_eq!(stored.to_vec(), data, "the hand-built db reads back");

    let map = mapping();
    let result = rewrite_hive(&built, &map, &NoTasks).unwrap_or_else(|e| panic!("{e}"));
    println!("{:?}", result.report);
    assert_eq!(result.report.big_data_values_patched, 1);
    assert_eq!(result.report.straddling_big_data, 2);
    let out = Hive::parse(&result.bytes).unwrap();
    let patched = value_bytes(&out, "SAM\\Domains\\Account", "F");
    assert_eq!(patched.len(), expected.len());
    let first_diff = patched.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "big data differs from expected");
    // The only old-SID bytes a flat scan still sees are the trap's (logically another SID).
    let left: Vec<usize> = map
        .find_all(&result.bytes, true)
        .iter()
        .map(|o| o.offset)
        .collect();
    let trap_file = stored.segments[1].file_offset.0 as usize + (trap - SEGMENT);
    assert_eq!(left, vec![trap_file]);
    // The rest of the hive is rewritten as without the db value (Account F holds no SID, and its
    // old data cell stays allocated but unreferenced).
    let plain = rewrite_hive(&base, &map, &NoTasks).unwrap();
    assert_eq!(
        result.report.replaced.total(),
        plain.report.replaced.total() + 3,
        "SAM's own occurrences + 3 in the db value"
    );

    // hivex reads the db value as we do.
    if hivex_available() {
        let dir = TempDir::new("bigdata");
        let path = dir.write("big.clone", &result.bytes);
        let export = hivex_export(&path);
        let line = export
            .lines()
            .skip_while(|l| *l != "[\\SAM\\Domains\\Account]")
            .find(|l| l.starts_with("\"F\"="))
            .expect("F in the export");
        let hex = line.split_once(':').unwrap().1;
        let bytes: Vec<u8> = hex
            .split(',')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        assert_eq!(bytes, expected, "hivex reads the patched db value");
    }
}

/// Task hashes supplied by the test: path → (master hash, clone hash).
struct FakeTasks(Vec<(String, Vec<u8>, Vec<u8>)>);

impl TaskHashes for FakeTasks {
    fn hashes(&self, task_path: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        self.0
            .iter()
            .find(|(p, _, _)| p == task_path)
            .map(|(_, m, c)| (m.clone(), c.clone()))
    }
}

fn task_reg(guid: &str, path: &str, hash: &[u8]) -> String {
    format!(
        "[\\{TASKS_KEY}\\{guid}]\n\"Path\"=\"{}\"\n\"Hash\"=hex:{}\n\n",
        path.replace('\\', "\\\\"),
        reg_hex(hash)
    )
}

#[test]
fn task_cache_hash_is_updated_only_when_the_master_hash_matches() {
    if !hivex_available() {
        return;
    }
    let dir = TempDir::new("tasks");
    let demo = "\\SidfsDemoTask".to_string();
    let onedrive = format!("\\OneDrive Standalone Update Task-{OLD}-1001");
    let unknown = "\\Unknown".to_string();
    let (a, a_clone) = (vec![0xA1u8; 32], vec![0xA2u8; 32]);
    let (b, b_master_other) = (vec![0xB1u8; 32], vec![0xB9u8; 32]);
    let c = vec![0xC1u8; 32];
    let mut reg = String::new();
    let mut parent = String::new();
    for component in TASKS_KEY.split('\\') {
        parent = format!("{parent}\\{component}");
        reg.push_str(&format!("[{parent}]\n\n"));
    }
    let reg = reg
        + &task_reg("{11111111-1111-1111-1111-111111111111}", &demo, &a)
        + &task_reg("{22222222-2222-2222-2222-222222222222}", &onedrive, &b)
        + &task_reg("{33333333-3333-3333-3333-333333333333}", &unknown, &c);
    let built = hivex_merge(&dir, &student("SAM"), &reg);
    let tasks = FakeTasks(vec![
        (demo.clone(), a.clone(), a_clone.clone()),
        (onedrive.clone(), b_master_other, vec![0xB2; 32]),
    ]);
    let result = rewrite_hive(&built, &mapping(), &tasks).unwrap_or_else(|e| panic!("{e}"));
    let report = &result.report;
    assert_eq!(report.task_hashes_updated, 1);
    assert_eq!(report.task_hashes_unrecognized, vec![onedrive.clone()]);
    assert_eq!(report.task_hashes_unknown, vec![unknown.clone()]);
    let out = Hive::parse(&result.bytes).unwrap();
    let task = |guid: &str| format!("{TASKS_KEY}\\{guid}");
    assert_eq!(
        value_bytes(
            &out,
            &task("{11111111-1111-1111-1111-111111111111}"),
            "Hash"
        ),
        a_clone
    );
    assert_eq!(
        value_bytes(
            &out,
            &task("{22222222-2222-2222-2222-222222222222}"),
            "Hash"
        ),
        b
    );
    assert_eq!(
        value_bytes(
            &out,
            &task("{33333333-3333-3333-3333-333333333333}"),
            "Hash"
        ),
        c
    );
    // The OneDrive task's Path (it names the SID) is rewritten like any string.
    let path = value_bytes(
        &out,
        &task("{22222222-2222-2222-2222-222222222222}"),
        "Path",
    );
    let expected_path: Vec<u8> = format!("\\OneDrive Standalone Update Task-{NEW}-1001\0")
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    assert_eq!(path, expected_path);
    // Without task information nothing is updated, everything is unknown.
    let none = rewrite_hive(&built, &mapping(), &NoTasks).unwrap();
    assert_eq!(none.report.task_hashes_updated, 0);
    assert_eq!(none.report.task_hashes_unknown.len(), 3);
    // A clone hash of another length is refused.
    let wrong = FakeTasks(vec![(demo, a, vec![0; 20])]);
    assert!(matches!(
        rewrite_hive(&built, &mapping(), &wrong),
        Err(HiveRewriteError::TaskHashLength {
            stored: 32,
            clone: 20,
            ..
        })
    ));
}

/// A change in the checksummed part of the base block (here a binary SID planted in FileName; a
/// 41-character SID string cannot fit in FileName's 32 code units) gets a new checksum, and the
/// result validates.
#[test]
fn base_block_change_recomputes_the_checksum() {
    let mut base = student("SAM");
    base[BASE_FILE_NAME..BASE_FILE_NAME + 12].copy_from_slice(&old_sid().binary_pattern());
    fix_checksum(&mut base);
    let result = rewrite_hive(&base, &mapping(), &NoTasks).unwrap();
    assert!(result.report.checksum_updated);
    assert_eq!(result.report.in_base_block, 1);
    assert_eq!(
        &result.bytes[BASE_FILE_NAME..BASE_FILE_NAME + 12],
        &new_sid().binary_pattern()
    );
    let hive = Hive::parse(&result.bytes).unwrap();
    assert_eq!(
        hive.base_block().primary_sequence,
        hive.base_block().secondary_sequence
    );
    assert_eq!(
        (
            hive.base_block().primary_sequence,
            hive.base_block().last_written
        ),
        {
            let b = Hive::parse(&base).unwrap();
            (b.base_block().primary_sequence, b.base_block().last_written)
        },
        "sequence numbers and timestamp untouched"
    );
}

#[test]
fn dirty_truncated_or_corrupt_hives_are_errors_not_panics() {
    let map = mapping();
    let sam = student("SAM");

    let mut dirty = sam.clone();
    let primary = u32::from_le_bytes(dirty[4..8].try_into().unwrap());
    dirty[4..8].copy_from_slice(&(primary + 1).to_le_bytes());
    fix_checksum(&mut dirty);
    assert!(matches!(
        rewrite_hive(&dirty, &map, &NoTasks),
        Err(HiveRewriteError::Input(HiveError::SequenceMismatch { .. }))
    ));

    let mut bad_checksum = sam.clone();
    bad_checksum[0x40] ^= 1;
    assert!(matches!(
        rewrite_hive(&bad_checksum, &map, &NoTasks),
        Err(HiveRewriteError::Input(HiveError::BadChecksum { .. }))
    ));

    let bins_end =
        BASE_BLOCK_SIZE + Hive::parse(&sam).unwrap().base_block().hive_bins_data_size as usize;
    for len in [0, 100, 4096, 5000, bins_end / 2, bins_end - 1] {
        assert!(
            rewrite_hive(&sam[..len], &map, &NoTasks).is_err(),
            "truncated to {len}"
        );
    }

    // The real dirty Windows 10 SYSTEM hive (xz-compressed in realdata).
    let xz = realdata("dirty-hive-win10/SYSTEM_B.xz");
    match Command::new("xz").arg("-dc").arg(&xz).output() {
        Ok(output) if output.status.success() => {
            let error = rewrite_hive(&output.stdout, &map, &NoTasks).unwrap_err();
            assert!(
                matches!(
                    error,
                    HiveRewriteError::Input(HiveError::SequenceMismatch { .. })
                ),
                "{error}"
            );
            assert!(error.to_string().contains("dirty"));
        }
        _ => println!("SKIPPED: xz unavailable; SYSTEM_B not checked"),
    }

    // Corrupt bins: every result is an error or a hive that validates; never a panic.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..300 {
        let mut corrupt = sam.clone();
        for _ in 0..1 + next() % 4 {
            let at = BASE_BLOCK_SIZE + (next() as usize) % (sam.len() - BASE_BLOCK_SIZE);
            corrupt[at] = next() as u8;
        }
        match rewrite_hive(&corrupt, &map, &NoTasks) {
            Ok(result) => {
                ok += 1;
                assert!(Hive::parse(&result.bytes).is_ok());
                assert_eq!(result.bytes.len(), corrupt.len());
            }
            Err(_) => errors += 1,
        }
    }
    println!("corrupted SAM copies: {ok} rewritten, {errors} refused");
    assert!(errors > 0, "some corruption must be detected");
}
