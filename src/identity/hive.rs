//! Applying an [`IdentityMapping`] to one hive file, after the SID rewrite, keeping the hive
//! valid [docs/FORMAT-FACTS.md §2; Suhanov]:
//! 1. parse the hive (it must validate) and collect every key name, class name, value name and
//!    value data segment;
//! 2. replace every delimited occurrence in the whole file (allocated cells, free cells), then
//!    again in each structure logically, with its end as the end of the string (a name whose
//!    cell slack begins with a letter is still found);
//!    Then, when the computer name changes length (or its DNS form differs from the NetBIOS one,
//!    see [`super::NameChange`]): every string value (REG_SZ, REG_EXPAND_SZ, REG_MULTI_SZ) that
//!    holds the old name as delimited UTF-16LE text gets the new one, Tcpip `Hostname` and
//!    `NV Hostname` the DNS host name, SECURITY `Policy\PolAcDmN` a rebuilt UNICODE_STRING;
//!    data that changes length is written by [`super::value_data::set_value_data`] (inline,
//!    in its cell, or in a free cell split off an existing hbin). Other occurrences (binary
//!    data, names, free cells) cannot change length and keep the old name (counted in
//!    [`IdentityHiveReport::name_left`]);
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

use super::value_data::{set_value_data, FreeCells, ValueSlot};
use super::{utf16, IdentifierKind, IdentityError, IdentityMapping, NameChange};
use crate::hive::{
    compare_names, compute_checksum, lf_hint, lh_hash, value_type, CellOffset, DataStorage, Hive,
    LeafEntry, LeafTag, ValueKey, BASE_BLOCK_SIZE,
};

type Result<T> = std::result::Result<T, IdentityError>;

/// SECURITY key whose default value holds the account domain's (the computer's) name.
const POLICY_ACCOUNT_DOMAIN_NAME: &str = r"Policy\PolAcDmN";
/// The Tcpip parameters key (below a control set) and its DNS host name values.
const TCPIP_PARAMETERS: &str = r"\Services\Tcpip\Parameters";
const DNS_HOST_VALUES: [&str; 2] = ["Hostname", "NV Hostname"];
/// PolAcDmN's self-relative UNICODE_STRING: Length (bytes), MaximumLength, buffer offset.
const POLICY_NAME_LENGTH: usize = 0;
const POLICY_NAME_MAX_LENGTH: usize = 2;
const POLICY_NAME_OFFSET: usize = 4;
const POLICY_NAME_HEADER: usize = 8;

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
    /// Values given data of another length (the computer name applied value by value).
    pub values_resized: usize,
    /// Free cells taken for data that grew.
    pub cells_allocated: usize,
    /// Occurrences of the old computer name left where a new length cannot go (binary data,
    /// names, free cells, big data): only when the name changes length.
    pub name_left: usize,
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

fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| IdentityError::OutsideHive {
        offset: v,
        what: "structure",
    })
}

/// How a string value takes the new computer name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameForm {
    /// Each delimited occurrence becomes the NetBIOS name in the case of the occurrence.
    Text,
    /// Tcpip `Hostname` / `NV Hostname`: a value that is the old name becomes the DNS name.
    DnsHost,
    /// SECURITY `PolAcDmN`: a UNICODE_STRING whose text is the old name.
    PolicyName,
}

fn name_form(key: &str, value: &ValueKey<'_>) -> Option<NameForm> {
    let name = value.name().to_string_lossy();
    if key.eq_ignore_ascii_case(POLICY_ACCOUNT_DOMAIN_NAME) && name.is_empty() {
        return Some(NameForm::PolicyName);
    }
    if !matches!(
        value.data_type(),
        value_type::REG_SZ | value_type::REG_EXPAND_SZ | value_type::REG_MULTI_SZ
    ) {
        return None;
    }
    let tcpip = key.len() >= TCPIP_PARAMETERS.len()
        && key.is_char_boundary(key.len() - TCPIP_PARAMETERS.len())
        && key[key.len() - TCPIP_PARAMETERS.len()..].eq_ignore_ascii_case(TCPIP_PARAMETERS);
    if tcpip
        && DNS_HOST_VALUES
            .iter()
            .any(|v| v.eq_ignore_ascii_case(&name))
    {
        return Some(NameForm::DnsHost);
    }
    Some(NameForm::Text)
}

fn units_of(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// `data` with every delimited occurrence of the old name replaced; `None` when there is none.
fn substitute(map: &IdentityMapping, data: &[u8]) -> Option<Vec<u8>> {
    let occs = map.find_name(data);
    if occs.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut at = 0;
    for o in &occs {
        out.extend_from_slice(&data[at..o.offset]);
        out.extend_from_slice(map.name_replacement(o));
        at = o.offset + o.len;
    }
    out.extend_from_slice(&data[at..]);
    Some(out)
}

/// The new data of a value of `form` holding `data`, or `None` when it stays.
fn renamed_data(
    map: &IdentityMapping,
    name: &NameChange,
    form: NameForm,
    data: &[u8],
) -> Option<Vec<u8>> {
    let is_old_name =
        |units: &[u16]| String::from_utf16(units).is_ok_and(|t| t.eq_ignore_ascii_case(&name.old));
    match form {
        NameForm::DnsHost => {
            let units = units_of(data);
            let text_end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
            let text = &units[..text_end];
            let is_new =
                String::from_utf16(text).is_ok_and(|t| t.eq_ignore_ascii_case(&name.netbios));
            if is_old_name(text) || (is_new && !name.resized) {
                let mut out = utf16(&name.dns);
                out.extend_from_slice(&data[text_end * 2..]);
                return (out != data).then_some(out);
            }
            if name.resized {
                substitute(map, data)
            } else {
                None
            }
        }
        NameForm::Text if name.resized => substitute(map, data),
        NameForm::Text => None,
        NameForm::PolicyName if name.resized => {
            let len = usize::from(u16::from_le_bytes(
                data.get(POLICY_NAME_LENGTH..POLICY_NAME_LENGTH + 2)?
                    .try_into()
                    .ok()?,
            ));
            let max = usize::from(u16::from_le_bytes(
                data.get(POLICY_NAME_MAX_LENGTH..POLICY_NAME_MAX_LENGTH + 2)?
                    .try_into()
                    .ok()?,
            ));
            let off = u32::from_le_bytes(
                data.get(POLICY_NAME_OFFSET..POLICY_NAME_OFFSET + 4)?
                    .try_into()
                    .ok()?,
            ) as usize;
            if off < POLICY_NAME_HEADER {
                return None;
            }
            let text = data.get(off..off.checked_add(len)?)?;
            if !is_old_name(&units_of(text)) {
                return None;
            }
            let new_text = utf16(&name.netbios);
            let new_len = u16::try_from(new_text.len()).ok()?;
            let new_max = u16::try_from(max.checked_sub(len)?.checked_add(new_text.len())?).ok()?;
            let mut out = data[..off].to_vec();
            out[POLICY_NAME_LENGTH..POLICY_NAME_LENGTH + 2].copy_from_slice(&new_len.to_le_bytes());
            out[POLICY_NAME_MAX_LENGTH..POLICY_NAME_MAX_LENGTH + 2]
                .copy_from_slice(&new_max.to_le_bytes());
            out.extend_from_slice(&new_text);
            out.extend_from_slice(&data[off + len..]);
            Some(out)
        }
        NameForm::PolicyName => None,
    }
}

/// Occurrences of the old computer name (a name that changes length) still in the string values
/// of `hive`, where the rewrite would have replaced them: what `sidfs verify` counts for it.
pub fn name_residual(hive: &Hive<'_>, map: &IdentityMapping) -> Result<usize> {
    let Some(name) = map.name_change().filter(|n| n.resized) else {
        return Ok(0);
    };
    let mut n = 0;
    let mut seen = HashSet::new();
    for walked in hive.walk() {
        let walked = walked.map_err(IdentityError::hive("walking the hive"))?;
        for value in walked
            .key
            .values()
            .map_err(IdentityError::hive("reading a value list"))?
        {
            if !seen.insert(value.cell().offset().0) {
                continue;
            }
            let Some(form) = name_form(&walked.path, &value) else {
                continue;
            };
            let data = value
                .data()
                .map_err(IdentityError::hive("reading value data"))?
                .to_vec();
            if form == NameForm::PolicyName {
                n += usize::from(renamed_data(map, name, form, &data).is_some());
            } else {
                n += map.find_name(&data).len();
            }
        }
    }
    Ok(n)
}

/// Rewrites the identifiers in a (clean, valid) hive file; the result has the same length.
pub fn rewrite_identifiers(
    input: &[u8],
    map: &IdentityMapping,
) -> Result<(Vec<u8>, IdentityHiveReport)> {
    let mut report = IdentityHiveReport::default();
    let mut out = input.to_vec();
    if map.is_empty() {
        return Ok((out, report));
    }
    let hive = Hive::parse(input).map_err(IdentityError::hive("the hive"))?;
    let name_change = map.name_change();
    let mut slots: Vec<(ValueSlot, NameForm)> = Vec::new();

    // Step 1.
    let mut keys = Vec::new();
    let mut parent_of: HashMap<u32, usize> = HashMap::new();
    let mut regions: Vec<(usize, usize)> = Vec::new();
    let mut seen_values = HashSet::new();
    for walked in hive.walk() {
        let walked = walked.map_err(IdentityError::hive("walking the hive"))?;
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
        if let Some((at, bytes)) = key.class().map_err(IdentityError::hive("a class name"))? {
            regions.push((to_usize(at.0)?, bytes.len()));
        }
        for child in key
            .subkeys()
            .map_err(IdentityError::hive("a subkey list"))?
        {
            parent_of.insert(child.offset().0, index);
        }
        for value in key.values().map_err(IdentityError::hive("a value list"))? {
            if !seen_values.insert(value.cell().offset().0) {
                continue;
            }
            let vn = value.name();
            regions.push((to_usize(vn.file_offset().0)?, vn.byte_len()));
            let data = value.data().map_err(IdentityError::hive("value data"))?;
            for seg in &data.segments {
                regions.push((to_usize(seg.file_offset.0)?, seg.bytes.len()));
            }
            let form = name_change.and_then(|_| name_form(&walked.path, &value));
            if let (Some(form), Some(seg)) = (form, data.segments.first()) {
                if matches!(data.storage, DataStorage::Inline | DataStorage::Cell) {
                    slots.push((
                        ValueSlot {
                            key: walked.path.clone(),
                            name: vn.to_string_lossy(),
                            vk: to_usize(value.file_offset().0)?,
                            storage: data.storage,
                            cell: match data.storage {
                                DataStorage::Cell => {
                                    Some(to_usize(value.data_offset().to_file().0)?)
                                }
                                _ => None,
                            },
                            data_at: to_usize(seg.file_offset.0)?,
                            len: data.len(),
                        },
                        form,
                    ));
                }
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
            return Err(IdentityError::OutsideHive {
                offset: start as u64,
                what: "a name or value",
            });
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

    // Step 2b: the computer name, value by value.
    if let Some(name) = name_change {
        let mut free = FreeCells::new(
            hive.cells()
                .filter_map(|c| c.ok())
                .filter(|c| !c.is_allocated())
                .filter_map(|c| Some((usize::try_from(c.file_offset().0).ok()?, c.size() as usize)))
                .collect(),
        );
        for (slot, form) in &slots {
            let Some(current) = out.get(slot.data_at..slot.data_at + slot.len) else {
                continue;
            };
            let Some(data) = renamed_data(map, name, *form, current) else {
                continue;
            };
            set_value_data(&mut out, &mut free, slot, &data)?;
            report.values_resized += usize::from(data.len() != slot.len);
            *report_count(&mut report.replaced, IdentifierKind::Hostname) += 1;
        }
        report.cells_allocated = free.allocated;
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
        let renamed = Hive::parse(&snapshot).map_err(IdentityError::hive("after renaming keys"))?;
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
    let bug = |what: String| IdentityError::Bug {
        path: "the rewritten hive".into(),
        what,
    };
    let check = Hive::parse(&out).map_err(|e| bug(format!("does not validate: {e}")))?;
    for walked in check.walk() {
        walked.map_err(|e| bug(format!("does not walk: {e}")))?;
    }
    if name_change.is_some_and(|n| n.resized) {
        // Cell tiling: every bin is cut into cells exactly.
        for cell in check.cells() {
            cell.map_err(|e| bug(format!("cells do not tile the bins: {e}")))?;
        }
        report.name_left = map.count_old_name(&out);
    }
    for &p in &parents {
        check_list(&check, keys[p].offset, &keys[p].path)?;
    }
    Ok((out, report))
}

/// The entries of the subkey list of `parent` (`what` names it in an error); none without a list.
fn subkey_entries(
    hive: &Hive<'_>,
    parent: CellOffset,
    what: &'static str,
) -> Result<Vec<LeafEntry>> {
    let key = hive.key(parent).map_err(IdentityError::hive(what))?;
    match key
        .subkey_list()
        .map_err(IdentityError::hive("a subkey list"))?
    {
        Some(list) => list
            .leaf_entries()
            .map_err(IdentityError::hive("a subkey list")),
        None => Ok(Vec::new()),
    }
}

/// Writes the subkey list of `parent` (read from `hive`, whose key names are the new ones) back
/// into `out` in sorted order, each element with the tag of its new name.
fn resort(hive: &Hive<'_>, parent: CellOffset, path: &str, out: &mut [u8]) -> Result<()> {
    let entries = subkey_entries(hive, parent, "a renamed key's parent")?;
    let mut children = Vec::with_capacity(entries.len());
    for e in &entries {
        let child = hive.key(e.key).map_err(IdentityError::hive("a subkey"))?;
        children.push((e.key, child.name().units()));
    }
    children.sort_by(|a, b| compare_names(&a.1, &b.1));
    for pair in children.windows(2) {
        if compare_names(&pair[0].1, &pair[1].1).is_eq() {
            return Err(IdentityError::DuplicateSubkey {
                path: path.into(),
                name: String::from_utf16_lossy(&pair[0].1),
            });
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
fn check_list(hive: &Hive<'_>, parent: CellOffset, path: &str) -> Result<()> {
    let mut previous: Option<Vec<u16>> = None;
    for e in subkey_entries(hive, parent, "a resorted key")? {
        let units = hive
            .key(e.key)
            .map_err(IdentityError::hive("a subkey"))?
            .name()
            .units();
        if !e.tag.matches(&units) {
            return Err(IdentityError::Bug {
                path: path.into(),
                what: "a list tag does not match its key".into(),
            });
        }
        if previous
            .as_ref()
            .is_some_and(|p| compare_names(p, &units).is_ge())
        {
            return Err(IdentityError::Bug {
                path: path.into(),
                what: "subkey list unsorted after the change".into(),
            });
        }
        previous = Some(units);
    }
    Ok(())
}

fn report_count(counts: &mut Vec<(IdentifierKind, usize)>, kind: IdentifierKind) -> &mut usize {
    let i = match counts.iter().position(|(k, _)| *k == kind) {
        Some(i) => i,
        None => {
            counts.push((kind, 0));
            counts.sort_by_key(|(k, _)| *k);
            counts.iter().position(|(k, _)| *k == kind).unwrap_or(0)
        }
    };
    &mut counts[i].1
}
