//! Applying an [`IdentityMapping`] to one hive file, after the SID rewrite, keeping the hive
//! valid [FORMAT-FACTS §2; Suhanov]:
//! 1. parse the hive (it must validate) and collect every key name, class name, value name and
//!    value data segment;
//! 2. replace every delimited occurrence in the whole file (allocated cells, free cells), then
//!    again in each structure logically, with its end as the end of the string (a name whose
//!    cell slack begins with a letter is still found);
//! 3. for every key whose name changed (an MSDTC `{CID}` key), recompute its lh hash / lf hint,
//!    and re-sort its parent's subkey list: the list's elements are permuted in place (across
//!    the leaves of an ri in order), so sizes never change;
//! 4. recompute the base-block checksum if a checksummed byte changed;
//! 5. re-parse and walk the result, and re-check every re-sorted list (order and tags).
//!
//! A value whose data is split into db segments is searched segment by segment: an identifier
//! straddling two segments is not replaced (none is known to exist; `verify` would show it).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{IdentifierKind, IdentityMapping};
use crate::hive::{
    compare_names, compute_checksum, lf_hint, lh_hash, CellOffset, Hive, LeafTag, BASE_BLOCK_SIZE,
};

/// Base-block checksum field and the end of the range it covers [Suhanov "Base block"].
const BASE_CHECKSUM: usize = 0x1FC;
const BASE_CHECKSUMMED_END: usize = 0x200;

/// What [`rewrite_identifiers`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdentityHiveReport {
    /// Occurrences replaced, by identifier.
    pub replaced: Vec<(IdentifierKind, usize)>,
    pub keys_renamed: Vec<String>,
    pub lists_resorted: usize,
    pub checksum_updated: bool,
}

impl IdentityHiveReport {
    pub fn total(&self) -> usize {
        self.replaced.iter().map(|(_, n)| n).sum()
    }
}

struct KeyRecord {
    path: String,
    offset: CellOffset,
    name: (usize, usize),
}

fn to_usize(v: u64) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| "offset out of range".to_string())
}

/// Rewrites the identifiers in a (clean, valid) hive file; the result has the same length.
pub fn rewrite_identifiers(
    input: &[u8],
    map: &IdentityMapping,
) -> Result<(Vec<u8>, IdentityHiveReport), String> {
    let mut report = IdentityHiveReport::default();
    let mut out = input.to_vec();
    if map.is_empty() {
        return Ok((out, report));
    }
    let hive = Hive::parse(input).map_err(|e| e.to_string())?;

    // Step 1.
    let mut keys = Vec::new();
    let mut parent_of: HashMap<u32, usize> = HashMap::new();
    let mut regions: Vec<(usize, usize)> = Vec::new();
    let mut seen_values = HashSet::new();
    for walked in hive.walk() {
        let walked = walked.map_err(|e| e.to_string())?;
        let key = walked.key;
        let name = key.name();
        let span = (to_usize(name.file_offset().0)?, name.byte_len());
        let index = keys.len();
        keys.push(KeyRecord {
            path: walked.path.clone(),
            offset: key.offset(),
            name: span,
        });
        regions.push(span);
        if let Some((at, bytes)) = key.class().map_err(|e| e.to_string())? {
            regions.push((to_usize(at.0)?, bytes.len()));
        }
        for child in key.subkeys().map_err(|e| e.to_string())? {
            parent_of.insert(child.offset().0, index);
        }
        for value in key.values().map_err(|e| e.to_string())? {
            if !seen_values.insert(value.cell().offset().0) {
                continue;
            }
            let vn = value.name();
            regions.push((to_usize(vn.file_offset().0)?, vn.byte_len()));
            for seg in value.data().map_err(|e| e.to_string())?.segments {
                regions.push((to_usize(seg.file_offset.0)?, seg.bytes.len()));
            }
        }
    }

    // Step 2: the flat pass, then each structure logically.
    let mut counted: HashMap<usize, IdentifierKind> = HashMap::new();
    for occ in map.find_all(input, true) {
        out[occ.offset..occ.offset + occ.len].copy_from_slice(map.replacement(&occ));
        counted.insert(occ.offset, occ.kind);
    }
    for &(start, len) in &regions {
        let Some(bytes) = input.get(start..start + len) else {
            return Err(format!("structure at {start:#x} outside the hive"));
        };
        for occ in map.find_all(bytes, true) {
            let at = start + occ.offset;
            out[at..at + occ.len].copy_from_slice(map.replacement(&occ));
            counted.insert(at, occ.kind);
        }
    }
    for kind in IdentifierKind::ALL {
        let n = counted.values().filter(|k| **k == kind).count();
        if n > 0 {
            report.replaced.push((kind, n));
        }
    }

    // Step 3: renamed keys → their parents' lists re-sorted with fresh tags.
    let mut parents = Vec::new();
    for key in &keys {
        let (s, l) = key.name;
        if out[s..s + l] == input[s..s + l] {
            continue;
        }
        report.keys_renamed.push(key.path.clone());
        if let Some(&p) = parent_of.get(&key.offset.0) {
            if !parents.contains(&p) {
                parents.push(p);
            }
        }
    }
    if !parents.is_empty() {
        let snapshot = out.clone();
        let renamed = Hive::parse(&snapshot).map_err(|e| format!("after renaming keys: {e}"))?;
        for &p in &parents {
            resort(&renamed, keys[p].offset, &keys[p].path, &mut out)?;
            report.lists_resorted += 1;
        }
    }

    // Step 4.
    if out[..BASE_CHECKSUMMED_END] != input[..BASE_CHECKSUMMED_END] {
        let sum = compute_checksum(&out[..BASE_BLOCK_SIZE]);
        out[BASE_CHECKSUM..BASE_CHECKSUM + 4].copy_from_slice(&sum.to_le_bytes());
        report.checksum_updated = true;
    }

    // Step 5.
    let check = Hive::parse(&out)
        .map_err(|e| format!("the rewritten hive does not validate (a sidfs bug): {e}"))?;
    for walked in check.walk() {
        walked.map_err(|e| format!("the rewritten hive does not walk (a sidfs bug): {e}"))?;
    }
    for &p in &parents {
        check_list(&check, keys[p].offset, &keys[p].path)?;
    }
    Ok((out, report))
}

/// Writes the subkey list of `parent` (read from `hive`, whose key names are the new ones) back
/// into `out` in sorted order, each element with the tag of its new name.
fn resort(hive: &Hive<'_>, parent: CellOffset, path: &str, out: &mut [u8]) -> Result<(), String> {
    let key = hive.key(parent).map_err(|e| e.to_string())?;
    let Some(list) = key.subkey_list().map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let entries = list.leaf_entries().map_err(|e| e.to_string())?;
    let mut children = Vec::with_capacity(entries.len());
    for e in &entries {
        let child = hive.key(e.key).map_err(|e| e.to_string())?;
        children.push((e.key, child.name().units()));
    }
    children.sort_by(|a, b| compare_names(&a.1, &b.1));
    for pair in children.windows(2) {
        if compare_names(&pair[0].1, &pair[1].1).is_eq() {
            return Err(format!(
                "{path}: two subkeys would be named {:?} after the change",
                String::from_utf16_lossy(&pair[0].1)
            ));
        }
    }
    for (slot, (child, units)) in entries.iter().zip(&children) {
        let at = to_usize(slot.file_offset.0)?;
        out[at..at + 4].copy_from_slice(&child.0.to_le_bytes());
        match slot.tag {
            LeafTag::Hash(_) => out[at + 4..at + 8].copy_from_slice(&lh_hash(units).to_le_bytes()),
            LeafTag::Hint(_) => out[at + 4..at + 8].copy_from_slice(&lf_hint(units)),
            LeafTag::None => {}
        }
    }
    Ok(())
}

/// The list of `parent` is sorted and every tag matches its key's name.
fn check_list(hive: &Hive<'_>, parent: CellOffset, path: &str) -> Result<(), String> {
    let key = hive.key(parent).map_err(|e| e.to_string())?;
    let Some(list) = key.subkey_list().map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let mut previous: Option<Vec<u16>> = None;
    for e in list.leaf_entries().map_err(|e| e.to_string())? {
        let units = hive.key(e.key).map_err(|e| e.to_string())?.name().units();
        let ok = match e.tag {
            LeafTag::Hash(h) => h == lh_hash(&units),
            LeafTag::Hint(h) => h == lf_hint(&units),
            LeafTag::None => true,
        };
        if !ok {
            return Err(format!(
                "{path}: a list tag does not match its key (a sidfs bug)"
            ));
        }
        if previous
            .as_ref()
            .is_some_and(|p| compare_names(p, &units).is_ge())
        {
            return Err(format!(
                "{path}: subkey list unsorted after the change (a sidfs bug)"
            ));
        }
        previous = Some(units);
    }
    Ok(())
}
