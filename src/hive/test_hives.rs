//! Tests of the hive reader against the real hives in `../shared/realdata` (see the README there),
//! the hivex library as an independent oracle, and damaged copies made by mutating the real hives
//! in memory. The real files are read in place and never copied into the project.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::*;
use crate::sid::MachineSid;

/// The STUDENT-PC8 hives (libyal/winreg-kb test data).
pub(crate) const STUDENT_PC8: [&str; 4] = ["SAM", "SECURITY", "NTUSER.DAT", "UsrClass.dat"];

/// STUDENT-PC8's machine SID, from the realdata README.
pub(crate) const STUDENT_PC8_MACHINE_SID: &str = "S-1-5-21-4070822719-3404542230-2541167049";

pub(crate) fn realdata(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/realdata")
        .join(relative)
}

/// Reads one STUDENT-PC8 hive.
pub(crate) fn student_hive(name: &str) -> Vec<u8> {
    let path = realdata(&format!("winreg-kb-STUDENT-PC8/{name}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The dirty Windows 10 SYSTEM_B hive, decompressed with the `xz` command into a temporary
/// directory; `None` (with the reason printed) only when `xz` is not installed.
pub(crate) fn system_b() -> Option<&'static [u8]> {
    static SYSTEM_B: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    SYSTEM_B
        .get_or_init(|| {
            if Command::new("xz").arg("--version").output().is_err() {
                println!("SKIPPED: the xz command is not installed; cannot decompress SYSTEM_B.xz");
                return None;
            }
            let dir = std::env::temp_dir().join(format!("sidfs-hive-test-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            let target = dir.join("SYSTEM_B");
            let source = realdata("dirty-hive-win10/SYSTEM_B.xz");
            let output = Command::new("xz")
                .arg("-dc")
                .arg(&source)
                .output()
                .expect("run xz");
            assert!(output.status.success(), "xz failed on {}", source.display());
            std::fs::write(&target, &output.stdout).expect("write SYSTEM_B");
            let data = std::fs::read(&target).expect("read SYSTEM_B");
            let _ = std::fs::remove_dir_all(&dir);
            Some(data)
        })
        .as_deref()
}

/// Every byte offset where `needle` occurs in `haystack` (overlapping matches included).
pub(crate) fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return Vec::new();
    }
    (0..=haystack.len() - needle.len())
        .filter(|&i| &haystack[i..i + needle.len()] == needle)
        .collect()
}

/// Walks every key and value of a hive, failing on the first error.
fn walk_all<'h>(hive: &'h Hive<'h>) -> Result<Vec<WalkedKey<'h>>> {
    hive.walk().collect()
}

/// Byte ranges of the structures the reader understands, with a description of each.
struct StructureMap {
    ranges: Vec<(u64, u64, String)>,
}

impl StructureMap {
    fn build(hive: &Hive<'_>) -> Result<StructureMap> {
        let mut ranges = Vec::new();
        for walked in hive.walk() {
            let walked = walked?;
            let name = walked.key.name();
            ranges.push((
                name.file_offset().0,
                name.byte_len() as u64,
                format!("key name of {:?}", walked.path),
            ));
            if let Some((offset, bytes)) = walked.key.class()? {
                ranges.push((
                    offset.0,
                    bytes.len() as u64,
                    format!("class of {:?}", walked.path),
                ));
            }
            for value in walked.key.values()? {
                let value_name = value.name();
                let label = format!("{}\\{}", walked.path, value_name.to_string_lossy());
                ranges.push((
                    value_name.file_offset().0,
                    value_name.byte_len() as u64,
                    format!("value name {label:?}"),
                ));
                for segment in value.data()?.segments {
                    ranges.push((
                        segment.file_offset.0,
                        segment.bytes.len() as u64,
                        format!("value data {label:?}"),
                    ));
                }
            }
        }
        for sk in hive.security_keys()? {
            ranges.push((
                sk.descriptor_file_offset().0,
                u64::from(sk.descriptor_size()),
                format!("sk descriptor at {}", sk.file_offset()),
            ));
        }
        Ok(StructureMap { ranges })
    }

    /// The structure wholly containing `[offset, offset + len)`, if any.
    fn locate(&self, offset: u64, len: u64) -> Option<&str> {
        self.ranges
            .iter()
            .find(|(start, size, _)| offset >= *start && offset + len <= start + size)
            .map(|(_, _, label)| label.as_str())
    }
}

#[test]
fn clean_student_hives_validate() {
    for name in STUDENT_PC8 {
        let data = student_hive(name);
        let hive = Hive::parse(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!hive.is_dirty(), "{name} reported dirty");
        let base = hive.base_block();
        assert_eq!(
            base.stored_checksum,
            compute_checksum(&data[..BASE_BLOCK_SIZE])
        );
        assert_eq!((base.major_version, base.minor_version), (1, 3), "{name}");
        // The bins tile the hive-bins data exactly.
        let total: u64 = hive.bins().iter().map(|b| u64::from(b.size)).sum();
        assert_eq!(total, u64::from(base.hive_bins_data_size), "{name}");
        // And the cells tile every bin: the walk ends exactly at each bin end without error.
        let mut cell_bytes = 0u64;
        for cell in hive.cells() {
            cell_bytes += u64::from(cell.unwrap_or_else(|e| panic!("{name}: {e}")).size());
        }
        let headers = hive.bins().len() as u64 * HBIN_HEADER_SIZE;
        assert_eq!(
            cell_bytes + headers,
            total,
            "{name}: cells do not tile the bins"
        );
    }
}

#[test]
fn usrclass_root_key_is_user_sid_classes() {
    let data = student_hive("UsrClass.dat");
    let hive = Hive::parse(&data).unwrap();
    let root = hive.root_key().unwrap();
    assert!(root.is_root());
    let name = root.name();
    assert_eq!(
        name.to_string_lossy(),
        "S-1-5-21-226059406-2984137831-1201299043-1107_Classes"
    );
    assert!(name.is_compressed());
    // The reported offset really holds the name bytes.
    let start = name.file_offset().0 as usize;
    assert_eq!(&data[start..start + name.byte_len()], name.raw());
}

/// Checks every subkey list of `hive`: leaves sorted by [`compare_names`] (strictly: no two
/// equal names), every lh hash equal to [`lh_hash`], every lf hint equal to [`lf_hint`], and
/// every key's parent field pointing at the key whose list holds it. Returns (lists, lh, lf).
fn check_subkey_lists(label: &str, hive: &Hive<'_>) -> (usize, usize, usize) {
    let (mut lists, mut hashes, mut hints) = (0, 0, 0);
    for walked in hive.walk() {
        let walked = walked.unwrap_or_else(|e| panic!("{label}: {e}"));
        let Some(list) = walked.key.subkey_list().unwrap() else {
            continue;
        };
        lists += 1;
        let entries = list.leaf_entries().unwrap();
        let mut previous: Option<Vec<u16>> = None;
        for entry in entries {
            let child = hive.key(entry.key).unwrap();
            let units = child.name().units();
            assert_eq!(
                child.parent(),
                walked.key.offset(),
                "{label}: parent of {units:?}"
            );
            match entry.tag {
                LeafTag::Hash(hash) => {
                    hashes += 1;
                    assert_eq!(
                        hash,
                        lh_hash(&units),
                        "{label}: lh hash of {:?}",
                        child.name()
                    );
                }
                LeafTag::Hint(hint) => {
                    hints += 1;
                    assert_eq!(
                        hint,
                        lf_hint(&units),
                        "{label}: lf hint of {:?}",
                        child.name()
                    );
                }
                LeafTag::None => {}
            }
            // The element offset reported really holds the key offset.
            let at = entry.file_offset.0 as usize;
            let stored = u32_at(hive.bytes(), at).unwrap();
            assert_eq!(stored, entry.key.0);
            if let Some(previous) = &previous {
                assert_eq!(
                    compare_names(previous, &units),
                    std::cmp::Ordering::Less,
                    "{label}: {:?} not sorted after {:?} under {:?}",
                    String::from_utf16_lossy(&units),
                    String::from_utf16_lossy(previous),
                    walked.path
                );
            }
            previous = Some(units);
        }
    }
    (lists, hashes, hints)
}

#[test]
fn every_subkey_list_is_sorted_and_hashed_as_we_compute() {
    let mut total_hints = 0;
    for name in STUDENT_PC8 {
        let data = student_hive(name);
        let hive = Hive::parse(&data).unwrap();
        let (lists, hashes, hints) = check_subkey_lists(name, &hive);
        println!("{name}: {lists} subkey lists, {hashes} lh hashes, {hints} lf hints checked");
        total_hints += hints;
    }
    assert!(total_hints > 1000, "too few lf hints to prove anything");
    let Some(system) = system_b() else { return };
    let hive = Hive::parse_unvalidated(system).unwrap();
    let (lists, hashes, hints) = check_subkey_lists("SYSTEM_B", &hive);
    println!("SYSTEM_B: {lists} subkey lists, {hashes} lh hashes, {hints} lf hints checked");
    assert!(
        hashes > 10_000,
        "SYSTEM_B should be full of lh lists, found {hashes}"
    );
}

#[test]
fn open_key_is_case_insensitive() {
    let data = student_hive("SECURITY");
    let hive = Hive::parse(&data).unwrap();
    let a = hive.open_key("Policy\\PolAcDmS").unwrap().unwrap();
    let b = hive.open_key("POLICY\\polacdms").unwrap().unwrap();
    assert_eq!(a.offset(), b.offset());
    assert_eq!(a.name().to_string_lossy(), "PolAcDmS");
    assert!(hive.open_key("Policy\\NoSuchKey").unwrap().is_none());
    assert!(hive.open_key("Policy\\PolAcDmS\\Deeper").unwrap().is_none());
    assert_eq!(
        hive.open_key("").unwrap().unwrap().offset(),
        hive.root_key().unwrap().offset()
    );
    assert_eq!(
        hive.open_key("\\Policy\\")
            .unwrap()
            .unwrap()
            .name()
            .to_string_lossy(),
        "Policy"
    );
}

#[test]
fn security_keys_by_list_and_by_cells_agree_and_counts_match() {
    for name in STUDENT_PC8 {
        let data = student_hive(name);
        let hive = Hive::parse(&data).unwrap();
        let by_list: HashSet<CellOffset> = hive
            .security_keys()
            .unwrap()
            .iter()
            .map(|s| s.offset())
            .collect();
        let by_cells: HashSet<CellOffset> = hive
            .security_keys_in_cells()
            .unwrap()
            .iter()
            .map(|s| s.offset())
            .collect();
        assert_eq!(
            by_list, by_cells,
            "{name}: Flink list and cell walk disagree"
        );
        // Every sk's reference count equals the number of keys that point to it.
        let mut users: HashMap<CellOffset, u32> = HashMap::new();
        for walked in hive.walk() {
            let key = walked.unwrap().key;
            let sk = key.security().unwrap();
            *users.entry(sk.offset()).or_default() += 1;
        }
        for sk in hive.security_keys().unwrap() {
            assert_eq!(
                sk.reference_count(),
                users.get(&sk.offset()).copied().unwrap_or(0),
                "{name}: reference count of sk at {}",
                sk.file_offset()
            );
            // A self-relative descriptor: revision 1, SE_SELF_RELATIVE set.
            let sd = sk.descriptor();
            assert_eq!(sd[0], 1, "{name}: SD revision");
            assert_ne!(u16::from_le_bytes([sd[2], sd[3]]) & 0x8000, 0);
        }
        println!(
            "{name}: {} sk cells, {} keys",
            by_list.len(),
            users.values().sum::<u32>()
        );
    }
}

/// Counts the machine SID in SAM and SECURITY by a plain byte search (the README's numbers) and
/// proves that each occurrence lies inside a structure the reader parses: a key name, a value's
/// data, or an sk descriptor. The rewrite relies on exactly this.
#[test]
fn machine_sid_occurrences_are_all_inside_parsed_structures() {
    let machine: MachineSid = STUDENT_PC8_MACHINE_SID.parse().unwrap();
    let utf16 = machine.utf16le();
    for (name, binary_count, ascii_count) in [("SAM", 9, 1), ("SECURITY", 2, 1)] {
        let data = student_hive(name);
        let binary = find_all(&data, &machine.binary_pattern());
        let ascii = find_all(&data, &machine.ascii());
        let wide = find_all(&data, &utf16);
        assert_eq!(binary.len(), binary_count, "{name}: binary occurrences");
        assert_eq!(ascii.len(), ascii_count, "{name}: ASCII occurrences");
        println!("{name}: {} UTF-16 occurrences", wide.len());
        let hive = Hive::parse(&data).unwrap();
        let map = StructureMap::build(&hive).unwrap();
        let free: Vec<(u64, u64)> = hive
            .cells()
            .map(|c| c.unwrap())
            .filter(|c| !c.is_allocated())
            .map(|c| (c.file_offset().0, u64::from(c.size())))
            .collect();
        let mut outside = Vec::new();
        let mut in_free_cells = 0;
        for (kind, offsets, len) in [
            ("binary", &binary, 12u64),
            ("ascii", &ascii, machine.ascii().len() as u64),
            ("utf16", &wide, utf16.len() as u64),
        ] {
            for &offset in offsets {
                match map.locate(offset as u64, len) {
                    Some(label) => println!("{name}: {kind} at {offset:#x} in {label}"),
                    None => {
                        let offset = offset as u64;
                        if let Some((cell, _)) = free
                            .iter()
                            .find(|(start, size)| offset >= *start && offset + len <= start + size)
                        {
                            in_free_cells += 1;
                            println!("{name}: {kind} at {offset:#x} in the free cell at {cell:#x}");
                        } else {
                            outside.push(format!("{kind} at {offset:#x}"));
                        }
                    }
                }
            }
        }
        assert!(
            outside.is_empty(),
            "{name}: occurrences outside parsed structures: {outside:?}"
        );
        println!("{name}: {in_free_cells} occurrences are remnants in free cells");
    }
}

/// One key as hivexml reports it.
#[derive(Debug, PartialEq, Eq)]
struct OracleKey {
    path: String,
    /// File offset of the nk cell (its size field).
    cell: u64,
    values: Vec<OracleValue>,
}

#[derive(Debug, PartialEq, Eq)]
struct OracleValue {
    name: String,
    /// Our side only: the value has no data (hivexml omits runs for some of those).
    empty: bool,
    /// (file offset, length) runs: the vk cell, then the data cell when the data is in one.
    runs: Vec<(u64, u64)>,
}

fn xml_unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';').map(|s| amp + s).expect("entity end");
        let entity = &rest[amp + 1..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ if entity.starts_with("#x") => {
                char::from_u32(u32::from_str_radix(&entity[2..], 16).unwrap()).unwrap()
            }
            _ if entity.starts_with('#') => char::from_u32(entity[1..].parse().unwrap()).unwrap(),
            _ => panic!("unknown entity {entity}"),
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    out
}

/// Splits `<tag a="x" b='y'>` contents into the tag name and attributes.
fn xml_tag(inner: &str) -> (String, HashMap<String, String>) {
    let mut chars = inner.char_indices().peekable();
    let mut name_end = inner.len();
    for (i, c) in chars.by_ref() {
        if c.is_whitespace() || c == '/' {
            name_end = i;
            break;
        }
    }
    let name = inner[..name_end].to_owned();
    let mut attributes = HashMap::new();
    let mut rest = &inner[name_end..];
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches('/').trim().to_owned();
        let after = &rest[eq + 1..];
        let quote = after.chars().next().expect("quote");
        let close = after[1..].find(quote).expect("closing quote") + 1;
        attributes.insert(key, xml_unescape(&after[1..close]));
        rest = &after[close + 1..];
    }
    (name, attributes)
}

/// Runs `hivexml` on `path` and returns its keys in document order; `None` if hivexml is absent.
fn hivexml_keys(path: &std::path::Path) -> Option<Vec<OracleKey>> {
    let output = match Command::new("hivexml").arg(path).output() {
        Ok(output) => output,
        Err(e) => {
            println!("SKIPPED: hivexml (hivex) is not installed: {e}");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "hivexml failed on {}",
        path.display()
    );
    let xml = String::from_utf8(output.stdout).expect("hivexml output is UTF-8");
    let mut keys: Vec<OracleKey> = Vec::new();
    let mut open_nodes: Vec<(usize, String)> = Vec::new(); // (index in keys, name)
    let mut elements: Vec<String> = Vec::new();
    let mut position = 0;
    while let Some(lt) = xml[position..].find('<') {
        let start = position + lt;
        // Find the '>' that ends this tag, skipping quoted attribute values.
        let mut quote = None;
        let mut end = start + 1;
        for (i, c) in xml[start + 1..].char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => {
                    end = start + 1 + i;
                    break;
                }
                _ => {}
            }
        }
        let inner = &xml[start + 1..end];
        position = end + 1;
        if inner.starts_with('?') || inner.starts_with('!') {
            continue;
        }
        if let Some(closing) = inner.strip_prefix('/') {
            let closing = closing.trim();
            assert_eq!(
                elements.pop().as_deref(),
                Some(closing),
                "unbalanced hivexml"
            );
            if closing == "node" {
                open_nodes.pop();
            }
            continue;
        }
        let self_closing = inner.ends_with('/');
        let (tag, attributes) = xml_tag(inner);
        match tag.as_str() {
            "node" => {
                let name = attributes.get("name").cloned().unwrap_or_default();
                let path = if open_nodes.is_empty() {
                    String::new() // the root: paths are relative to it
                } else {
                    let parent = &keys[open_nodes[open_nodes.len() - 1].0].path;
                    if parent.is_empty() {
                        name.clone()
                    } else {
                        format!("{parent}\\{name}")
                    }
                };
                keys.push(OracleKey {
                    path,
                    cell: u64::MAX,
                    values: Vec::new(),
                });
                open_nodes.push((keys.len() - 1, name));
            }
            "value" => {
                let name = if attributes.get("default").map(String::as_str) == Some("1") {
                    String::new()
                } else {
                    attributes.get("key").cloned().unwrap_or_default()
                };
                let index = open_nodes.last().expect("value outside node").0;
                keys[index].values.push(OracleValue {
                    name,
                    empty: false,
                    runs: Vec::new(),
                });
            }
            "byte_run" => {
                let run = (
                    attributes["file_offset"].parse().unwrap(),
                    attributes["len"].parse().unwrap(),
                );
                let owner = elements.iter().rev().nth(1).map(String::as_str);
                let index = open_nodes.last().expect("byte_run outside node").0;
                match owner {
                    Some("value") => keys[index].values.last_mut().unwrap().runs.push(run),
                    Some("node") => {
                        if keys[index].cell == u64::MAX {
                            keys[index].cell = run.0;
                        }
                    }
                    other => panic!("byte_run under {other:?}"),
                }
            }
            _ => {}
        }
        if !self_closing {
            elements.push(tag);
        }
    }
    Some(keys)
}

/// Our walk, in the same shape as the oracle's output.
fn our_keys(hive: &Hive<'_>) -> Vec<OracleKey> {
    walk_all(hive)
        .unwrap()
        .into_iter()
        .map(|walked| OracleKey {
            path: walked.path,
            cell: walked.key.cell().file_offset().0,
            values: walked
                .key
                .values()
                .unwrap()
                .into_iter()
                .map(|value| {
                    let data = value.data().unwrap();
                    let mut runs = Vec::new();
                    runs.push((
                        value.cell().file_offset().0,
                        // hivex reports the used part of the vk cell: size field + 0x14 + name.
                        4 + 0x14 + u64::from(value.name_len()),
                    ));
                    if data.storage == DataStorage::Cell {
                        let segment = data.segments[0];
                        runs.push((segment.file_offset.0 - 4, segment.bytes.len() as u64 + 4));
                    }
                    OracleValue {
                        name: value.name().to_string_lossy(),
                        empty: data.is_empty(),
                        runs,
                    }
                })
                .collect(),
        })
        .collect()
}

/// hivex (hivexml) and our reader must see exactly the same keys (paths, nk cell offsets, order)
/// and the same values (names, vk cell offsets, data cell offsets and lengths).
#[test]
fn full_walk_agrees_with_hivex() {
    for name in STUDENT_PC8 {
        let path = realdata(&format!("winreg-kb-STUDENT-PC8/{name}"));
        let Some(oracle) = hivexml_keys(&path) else {
            return;
        };
        let data = student_hive(name);
        let hive = Hive::parse(&data).unwrap();
        let ours = our_keys(&hive);
        assert_eq!(ours.len(), oracle.len(), "{name}: number of keys");
        for (mine, theirs) in ours.iter().zip(&oracle) {
            assert_eq!(mine.path, theirs.path, "{name}");
            assert_eq!(mine.cell, theirs.cell, "{name}: nk cell of {:?}", mine.path);
            assert_eq!(
                mine.values.len(),
                theirs.values.len(),
                "{name}: {:?}",
                mine.path
            );
            for (v, w) in mine.values.iter().zip(&theirs.values) {
                assert_eq!(v.name, w.name, "{name}: value of {:?}", mine.path);
                // hivexml prints no byte runs for some values without data (base64 kinds).
                if !(v.empty && w.runs.is_empty()) {
                    assert_eq!(v.runs, w.runs, "{name}: {:?} value {:?}", mine.path, v.name);
                }
            }
        }
        let values: usize = ours.iter().map(|k| k.values.len()).sum();
        println!(
            "{name}: {} keys and {values} values agree with hivexml",
            ours.len()
        );
    }
}

#[test]
fn dirty_system_b_is_reported_and_still_readable() {
    let Some(data) = system_b() else { return };
    let error = Hive::parse(data).unwrap_err();
    assert!(
        matches!(
            error,
            HiveError::SequenceMismatch {
                primary: 1622,
                secondary: 1621
            }
        ),
        "{error}"
    );
    let hive = Hive::parse_unvalidated(data).unwrap();
    assert!(hive.is_dirty());
    assert_eq!(hive.base_block().minor_version, 5);
    let keys = walk_all(&hive).unwrap();
    assert!(keys.len() > 10_000, "only {} keys", keys.len());
    let mut big = 0;
    for walked in &keys {
        for value in walked.key.values().unwrap() {
            let data = value.data().unwrap();
            assert_eq!(data.len(), value.data_size() as usize);
            if data.storage == DataStorage::BigData {
                big += 1;
                assert!(data.segments.len() >= 2);
            }
        }
    }
    println!("SYSTEM_B: {} keys, {big} big-data values", keys.len());
}
