//! Rewriting one registry hive file: the old machine SID becomes the new one everywhere, and the
//! hive stays a clean, valid hive of the same length.
//!
//! [`rewrite_hive`] is a pure function from (master hive bytes, [`SidMapping`], task hashes) to the
//! clone's hive bytes plus a [`HiveRewriteReport`]. The caller diffs the result against the master
//! and maps the changed bytes onto the disk.
//!
//! What it does, in order [docs/FORMAT-FACTS.md §2; Suhanov; libregf]:
//! 1. Parses the master with [`Hive::parse`], which refuses a dirty hive (sequence numbers differ or
//!    the base-block checksum is wrong) and a damaged base block or hbin, and walks every key,
//!    value and subkey list, so that any damaged structure is an error before anything is written.
//! 2. Replaces every occurrence of the old SID (binary triple, ASCII, UTF-16LE) in the whole file —
//!    allocated cells, free cells (remnants of old records), hbin headers, the base block's
//!    FileName. Occurrences that touch the data of a multi-segment big-data (db) value are left to
//!    step 3, because there the file bytes are not the value's bytes.
//! 3. Replaces the occurrences inside every parsed structure *logically*: key names, class names,
//!    value names and value data are searched as the bytes they are, with their end as the end of
//!    the string. This catches a name ending in the SID whose cell slack happens to hold a digit
//!    (a flat scan reads the slack as "followed by a digit"), and a db value whose SID straddles
//!    two segments (the segments are concatenated, replaced and scattered back).
//! 4. For every key whose name changed, recomputes the lh hash (or lf hint) in its parent's list
//!    entry, and checks that the parent's list is still sorted; the new SID is chosen so that it is
//!    (see `derive.rs`), and if it is not this returns [`HiveRewriteError::ListOrderBroken`] rather
//!    than produce a list Windows would binary-search wrongly.
//! 5. Updates the Task Scheduler `Hash` values whose task XML changes (see [`TaskHashes`]).
//! 6. Recomputes the base-block checksum if any checksummed byte changed. Sequence numbers are never
//!    touched: the clone's hive is as clean as the master's.
//! 7. Re-parses and walks the result with our reader and re-checks every list that holds a renamed
//!    key (order, hash, hint), so that a bug here is an error, not a broken clone.
//!
//! Every size is preserved: replacements have the length of what they replace (the mapping
//! guarantees it), and no cell is allocated, freed or moved.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use super::mapping::{Form, SidMapping};
use crate::hive::{
    compare_names, compute_checksum, lf_hint, lh_hash, value_type, CellOffset, DataStorage,
    FileOffset, Hive, HiveError, LeafEntry, LeafTag, BASE_BLOCK_SIZE,
};

#[cfg(test)]
mod tests;

/// Base-block FileName field: 64 bytes of UTF-16LE at 0x30, inside the checksummed range
/// [Suhanov "Base block"].
const BASE_FILE_NAME: usize = 0x30;
const BASE_FILE_NAME_SIZE: usize = 64;
/// The checksum field; it covers the 127 dwords before it [Suhanov].
const BASE_CHECKSUM: usize = 0x1FC;
/// The first byte after the checksum field: a change anywhere before it needs a new checksum.
const BASE_CHECKSUMMED_END: usize = 0x200;

/// Where Task Scheduler keeps one key per registered task, below the SOFTWARE hive's root
/// [docs/FORMAT-FACTS.md §5].
pub const TASKS_KEY: &str = "Microsoft\\Windows NT\\CurrentVersion\\Schedule\\TaskCache\\Tasks";
/// Value of a `Tasks\{GUID}` key holding the task's path below `System32\Tasks` (REG_SZ).
const TASK_PATH_VALUE: &str = "Path";
/// Value of a `Tasks\{GUID}` key holding the hash of the task's XML file (REG_BINARY).
const TASK_HASH_VALUE: &str = "Hash";

/// What the Task Scheduler `Hash` values must become: the hash of a task's XML in the master and
/// in the clone.
///
/// The input of the hash is UNCONFIRMED (docs/FORMAT-FACTS.md §5), so the rewrite never computes it: the
/// implementor hashes the master's XML the way it believes Windows does, and the rewrite replaces a
/// stored hash only when it equals that master hash — proof that the algorithm is right for this
/// file. Any other stored hash is left alone and reported.
pub trait TaskHashes {
    /// For the task whose `Path` value in the **master** hive is `task_path` (for example
    /// `\SidfsDemoTask`; it may itself contain the old SID, which the clone's file name has
    /// replaced): the hash of the master's XML and the hash of the clone's XML. `None` when the
    /// implementor knows nothing about this task.
    fn hashes(&self, task_path: &str) -> Option<(Vec<u8>, Vec<u8>)>;
}

/// No task XML is available: every task hash is reported as unknown and left unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTasks;

impl TaskHashes for NoTasks {
    fn hashes(&self, _task_path: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        None
    }
}

/// Occurrences of the old SID, by form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FormCounts {
    pub binary: usize,
    pub ascii: usize,
    pub utf16: usize,
}

impl FormCounts {
    pub(crate) fn add(&mut self, form: Form) {
        match form {
            Form::Binary => self.binary += 1,
            Form::Ascii => self.ascii += 1,
            Form::Utf16 => self.utf16 += 1,
        }
    }

    /// All forms together.
    pub fn total(&self) -> usize {
        self.binary + self.ascii + self.utf16
    }

    /// The count of one form.
    pub fn get(&self, form: Form) -> usize {
        match form {
            Form::Binary => self.binary,
            Form::Ascii => self.ascii,
            Form::Utf16 => self.utf16,
        }
    }
}

/// What [`rewrite_hive`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HiveRewriteReport {
    /// Every occurrence replaced, by form (each counted once, at the file offset of its first
    /// byte).
    pub replaced: FormCounts,
    /// Of those, the ones that start in a free cell (remnants of deleted or moved records).
    pub in_free_cells: usize,
    /// Of those, the ones in the base block (FileName).
    pub in_base_block: usize,
    /// Of those, the ones outside every cell (hbin headers, bytes after the last bin).
    pub outside_cells: usize,
    /// Of those, the ones found only by reading a structure logically: a string at the very end
    /// of a name or value whose cell slack begins with a digit, or a match inside db big data.
    pub found_only_logically: usize,
    /// Of those, the ones that straddle two db segments.
    pub straddling_big_data: usize,
    /// db big-data values whose data changed.
    pub big_data_values_patched: usize,
    /// Keys whose name changed (the paths use the old names).
    pub keys_renamed: usize,
    pub renamed_key_paths: Vec<String>,
    /// lh entries whose stored hash changed.
    pub lh_hashes_updated: usize,
    /// lf entries whose stored hint changed (expected 0: SID names start with "S-1-").
    pub lf_hints_updated: usize,
    /// Subkey lists re-checked for order and tags because they hold a renamed key.
    pub lists_checked: usize,
    /// Task `Hash` values that matched the master's XML hash and now hold the clone's.
    pub task_hashes_updated: usize,
    /// Tasks (master `Path`) whose stored hash is not the master hash given: left unchanged.
    pub task_hashes_unrecognized: Vec<String>,
    /// Tasks (master `Path`, or the task key's name without one) for which no hashes were given.
    pub task_hashes_unknown: Vec<String>,
    /// The base-block checksum was recomputed because a checksummed byte changed.
    pub checksum_updated: bool,
}

/// The clone's hive and what changed.
#[derive(Debug, Clone)]
pub struct HiveRewrite {
    /// The whole clone hive file, as long as the master's.
    pub bytes: Vec<u8>,
    pub report: HiveRewriteReport,
}

/// Why a hive could not be rewritten. Offsets are absolute offsets in the hive file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HiveRewriteError {
    /// The master hive is dirty (its logs must be replayed first), truncated or damaged.
    Input(HiveError),
    /// Renaming a key left its parent's subkey list unsorted: `before` now sorts after (or equal
    /// to) `after`. The new SID does not preserve order; choose another one.
    ListOrderBroken {
        list: FileOffset,
        parent: String,
        before: String,
        after: String,
    },
    /// The clone's task hash would not fit where the master's is stored.
    TaskHashLength {
        value: FileOffset,
        task: String,
        stored: usize,
        clone: usize,
    },
    /// The rewritten hive fails our own reader's validation: a bug in this module.
    Output(HiveError),
    /// After the rewrite, a list entry's hash or hint does not match its key's name: a bug here.
    ListTagWrong {
        entry: FileOffset,
        parent: String,
        name: String,
    },
}

impl fmt::Display for HiveRewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HiveRewriteError::Input(e) => {
                write!(f, "the hive is dirty or damaged and cannot be rewritten: {e}")
            }
            HiveRewriteError::ListOrderBroken {
                list,
                parent,
                before,
                after,
            } => write!(
                f,
                "at {list}: subkey list of {parent:?} would be unsorted after the SID change: {before:?} must sort before {after:?}; choose a new SID that keeps the order"
            ),
            HiveRewriteError::TaskHashLength {
                value,
                task,
                stored,
                clone,
            } => write!(
                f,
                "at {value}: task {task:?}: stored Hash is {stored} bytes, the clone's hash is {clone} bytes"
            ),
            HiveRewriteError::Output(e) => {
                write!(f, "the rewritten hive does not validate (a sidfs bug): {e}")
            }
            HiveRewriteError::ListTagWrong {
                entry,
                parent,
                name,
            } => write!(
                f,
                "at {entry}: subkey list of {parent:?}: the hash or hint of {name:?} does not match its name after the rewrite (a sidfs bug)"
            ),
        }
    }
}

impl std::error::Error for HiveRewriteError {}

impl From<HiveError> for HiveRewriteError {
    fn from(e: HiveError) -> Self {
        HiveRewriteError::Input(e)
    }
}

/// A byte range of the file: `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    fn end(&self) -> usize {
        self.start + self.len
    }

    fn from_file(offset: FileOffset, len: usize) -> Span {
        // Every offset comes from a structure our reader checked to lie inside the file.
        Span {
            start: usize::try_from(offset.0).unwrap_or(usize::MAX - len),
            len,
        }
    }
}

/// A string of bytes the format defines (a name, a class, a value's data), possibly split into
/// segments in the file (db big data).
#[derive(Debug, Clone)]
struct Region {
    segments: Vec<Span>,
    big_data: bool,
}

impl Region {
    fn single(span: Span) -> Region {
        Region {
            segments: vec![span],
            big_data: false,
        }
    }

    /// The region's logical bytes, read from `buf`.
    fn read(&self, buf: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.segments.iter().map(|s| s.len).sum());
        for s in &self.segments {
            out.extend_from_slice(&buf[s.start..s.end()]);
        }
        out
    }

    /// File offset of the logical byte `index` (below the logical length).
    fn file_position(&self, mut index: usize) -> usize {
        for s in &self.segments {
            if index < s.len {
                return s.start + index;
            }
            index -= s.len;
        }
        // Callers pass indexes below the logical length.
        usize::MAX
    }

    /// Which segment holds the logical byte `index`.
    fn segment_of(&self, mut index: usize) -> usize {
        for (i, s) in self.segments.iter().enumerate() {
            if index < s.len {
                return i;
            }
            index -= s.len;
        }
        usize::MAX
    }
}

/// A key found in the master, with where its name is.
struct KeyRecord {
    path: String,
    offset: CellOffset,
    name: Span,
    compressed: bool,
}

/// What the walk of the master collects.
struct MasterLayout {
    keys: Vec<KeyRecord>,
    /// Key cell → (its entry in the parent's list, the parent's index in `keys`).
    parent_entry: HashMap<CellOffset, (LeafEntry, usize)>,
    regions: Vec<Region>,
    /// Cells in file order: (span of the whole cell, allocated).
    cells: Vec<(Span, bool)>,
}

fn collect_layout(hive: &Hive<'_>) -> Result<MasterLayout, HiveError> {
    let mut keys = Vec::new();
    let mut parent_entry = HashMap::new();
    let mut regions = vec![Region::single(Span {
        start: BASE_FILE_NAME,
        len: BASE_FILE_NAME_SIZE,
    })];
    let mut value_lists: HashSet<CellOffset> = HashSet::new();
    let mut values_seen: HashSet<CellOffset> = HashSet::new();
    let mut data_seen: HashSet<(usize, usize)> = HashSet::new();
    for walked in hive.walk() {
        let walked = walked?;
        let key = walked.key;
        let name = key.name();
        let index = keys.len();
        keys.push(KeyRecord {
            path: walked.path.clone(),
            offset: key.offset(),
            name: Span::from_file(name.file_offset(), name.byte_len()),
            compressed: name.is_compressed(),
        });
        regions.push(Region::single(Span::from_file(
            name.file_offset(),
            name.byte_len(),
        )));
        if let Some((offset, bytes)) = key.class()? {
            regions.push(Region::single(Span::from_file(offset, bytes.len())));
        }
        if let Some(list) = key.subkey_list()? {
            for entry in list.leaf_entries()? {
                parent_entry.insert(entry.key, (entry, index));
            }
        }
        // A value list (and so its values and their data) is read once even if a damaged or
        // hostile hive shares it between keys: work stays linear in the hive size.
        if key.value_count() > 0 && !value_lists.insert(key.value_list_offset()) {
            continue;
        }
        for value in key.values()? {
            if !values_seen.insert(value.cell().offset()) {
                continue;
            }
            let value_name = value.name();
            regions.push(Region::single(Span::from_file(
                value_name.file_offset(),
                value_name.byte_len(),
            )));
            let data = value.data()?;
            let Some(first) = data.segments.first() else {
                continue;
            };
            let start = Span::from_file(first.file_offset, 0).start;
            if !data_seen.insert((start, data.len())) {
                continue;
            }
            regions.push(Region {
                big_data: data.storage == DataStorage::BigData && data.segments.len() > 1,
                segments: data
                    .segments
                    .iter()
                    .map(|s| Span::from_file(s.file_offset, s.bytes.len()))
                    .collect(),
            });
        }
    }
    let mut cells = Vec::new();
    for cell in hive.cells() {
        let cell = cell?;
        cells.push((
            Span::from_file(cell.file_offset(), cell.size() as usize),
            cell.is_allocated(),
        ));
    }
    Ok(MasterLayout {
        keys,
        parent_entry,
        regions,
        cells,
    })
}

/// True when `span` overlaps one of the sorted, non-overlapping `ranges`.
fn overlaps_any(ranges: &[Span], span: Span) -> bool {
    let i = ranges.partition_point(|r| r.end() <= span.start);
    ranges.get(i).is_some_and(|r| r.start < span.end())
}

/// The cell containing byte `at`, if any: (allocated).
fn cell_at(cells: &[(Span, bool)], at: usize) -> Option<bool> {
    let i = cells.partition_point(|(s, _)| s.end() <= at);
    cells
        .get(i)
        .filter(|(s, _)| s.start <= at)
        .map(|(_, allocated)| *allocated)
}

/// A name's code units from its stored bytes.
fn name_units(raw: &[u8], compressed: bool) -> Vec<u16> {
    if compressed {
        raw.iter().map(|&b| u16::from(b)).collect()
    } else {
        raw.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }
}

fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Rewrites a whole hive file: see the module documentation. `original` is the master's hive
/// file, unchanged; the result has the same length.
/// Whether [`rewrite_hive`] can understand `original` (it parses and its cells are laid out as
/// the rewrite expects): checked when the clone's stage is built, so that a hive that cannot be
/// rewritten faithfully refuses the mount instead of failing a read later.
pub fn check_hive(original: &[u8]) -> Result<(), HiveRewriteError> {
    let hive = Hive::parse(original)?;
    collect_layout(&hive)?;
    Ok(())
}

pub fn rewrite_hive(
    original: &[u8],
    map: &SidMapping,
    tasks: &dyn TaskHashes,
) -> Result<HiveRewrite, HiveRewriteError> {
    let hive = Hive::parse(original)?;
    let layout = collect_layout(&hive)?;
    let mut out = original.to_vec();
    let mut report = HiveRewriteReport::default();
    // First byte of each replaced occurrence → its form.
    let mut replaced: BTreeMap<usize, Form> = BTreeMap::new();

    // Step 2: the flat pass, except over multi-segment big data.
    let mut big_segments: Vec<Span> = layout
        .regions
        .iter()
        .filter(|r| r.big_data)
        .flat_map(|r| r.segments.iter().copied())
        .collect();
    big_segments.sort_by_key(|s| s.start);
    big_segments.dedup();
    for occ in map.find_all(original, true) {
        let span = Span {
            start: occ.offset,
            len: occ.len,
        };
        if overlaps_any(&big_segments, span) {
            continue;
        }
        let new = map.replacement(original, &occ);
        out[span.start..span.end()].copy_from_slice(&new);
        replaced.insert(occ.offset, occ.form);
    }

    // Step 3: every structure, logically.
    for region in &layout.regions {
        let logical = region.read(original);
        let occurrences = map.find_all(&logical, true);
        if occurrences.is_empty() {
            continue;
        }
        for occ in &occurrences {
            let new = map.replacement(&logical, occ);
            for (i, byte) in new.iter().enumerate() {
                out[region.file_position(occ.offset + i)] = *byte;
            }
            let first = region.file_position(occ.offset);
            if replaced.insert(first, occ.form).is_none() {
                report.found_only_logically += 1;
            }
            if region.segment_of(occ.offset) != region.segment_of(occ.offset + occ.len - 1) {
                report.straddling_big_data += 1;
            }
        }
        if region.big_data {
            report.big_data_values_patched += 1;
        }
    }
    for (&first, &form) in &replaced {
        report.replaced.add(form);
        if first < BASE_BLOCK_SIZE {
            report.in_base_block += 1;
        } else {
            match cell_at(&layout.cells, first) {
                Some(true) => {}
                Some(false) => report.in_free_cells += 1,
                None => report.outside_cells += 1,
            }
        }
    }

    // Step 4: renamed keys → their parent's lh hash / lf hint.
    let mut parents_to_check: Vec<usize> = Vec::new();
    let mut parents_seen: HashSet<usize> = HashSet::new();
    for key in &layout.keys {
        let name = key.name;
        let new_raw = &out[name.start..name.end()];
        if new_raw == &original[name.start..name.end()] {
            continue;
        }
        report.keys_renamed += 1;
        report.renamed_key_paths.push(key.path.clone());
        let Some((entry, parent)) = layout.parent_entry.get(&key.offset) else {
            continue; // the root key: no parent list
        };
        let units = name_units(new_raw, key.compressed);
        let tag_at = Span::from_file(entry.file_offset, 8).start + 4;
        match entry.tag {
            LeafTag::Hash(old) => {
                let new = lh_hash(&units);
                if new != old {
                    write_u32(&mut out, tag_at, new);
                    report.lh_hashes_updated += 1;
                }
            }
            LeafTag::Hint(old) => {
                let new = lf_hint(&units);
                if new != old {
                    out[tag_at..tag_at + 4].copy_from_slice(&new);
                    report.lf_hints_updated += 1;
                }
            }
            LeafTag::None => {}
        }
        if parents_seen.insert(*parent) {
            parents_to_check.push(*parent);
        }
    }

    // Step 5: Task Scheduler hashes.
    update_task_hashes(&hive, tasks, &mut out, &mut report)?;

    // Step 6: the base-block checksum.
    if out[..BASE_CHECKSUMMED_END] != original[..BASE_CHECKSUMMED_END] {
        let checksum = compute_checksum(&out[..BASE_BLOCK_SIZE]);
        write_u32(&mut out, BASE_CHECKSUM, checksum);
        report.checksum_updated = true;
    }

    // Step 7: the result must validate, and every list holding a renamed key must be sorted with
    // correct tags.
    verify_output(&out, &layout, &parents_to_check, &mut report)?;

    Ok(HiveRewrite { bytes: out, report })
}

/// Step 5: for each `Tasks\{GUID}` key with a `Path` and a `Hash`, replaces the stored hash by the
/// clone's when it equals the master's.
fn update_task_hashes(
    hive: &Hive<'_>,
    tasks: &dyn TaskHashes,
    out: &mut [u8],
    report: &mut HiveRewriteReport,
) -> Result<(), HiveRewriteError> {
    let Some(tasks_key) = hive.open_key(TASKS_KEY)? else {
        return Ok(());
    };
    for task in tasks_key.subkeys()? {
        let path_value = task.value(TASK_PATH_VALUE)?;
        let hash_value = task.value(TASK_HASH_VALUE)?;
        let (Some(path_value), Some(hash_value)) = (path_value, hash_value) else {
            continue;
        };
        let task_path = match path_value.data_type() {
            value_type::REG_SZ | value_type::REG_EXPAND_SZ => path_value.data()?.to_utf16_string(),
            _ => continue,
        };
        let hash_data = hash_value.data()?;
        let stored = hash_data.to_vec();
        let Some((master, clone)) = tasks.hashes(&task_path) else {
            report.task_hashes_unknown.push(task_path);
            continue;
        };
        if stored != master {
            report.task_hashes_unrecognized.push(task_path);
            continue;
        }
        if clone.len() != stored.len() {
            return Err(HiveRewriteError::TaskHashLength {
                value: hash_value.file_offset(),
                task: task_path,
                stored: stored.len(),
                clone: clone.len(),
            });
        }
        let mut from = 0;
        for segment in &hash_data.segments {
            let span = Span::from_file(segment.file_offset, segment.bytes.len());
            out[span.start..span.end()].copy_from_slice(&clone[from..from + span.len]);
            from += span.len;
        }
        report.task_hashes_updated += 1;
    }
    Ok(())
}

/// Step 7: parse and walk the result; check order and tags of the lists of renamed keys.
fn verify_output(
    out: &[u8],
    layout: &MasterLayout,
    parents: &[usize],
    report: &mut HiveRewriteReport,
) -> Result<(), HiveRewriteError> {
    let hive = Hive::parse(out).map_err(HiveRewriteError::Output)?;
    for walked in hive.walk() {
        walked.map_err(HiveRewriteError::Output)?;
    }
    for &parent in parents {
        let record = &layout.keys[parent];
        let key = hive.key(record.offset).map_err(HiveRewriteError::Output)?;
        let Some(list) = key.subkey_list().map_err(HiveRewriteError::Output)? else {
            continue;
        };
        report.lists_checked += 1;
        let entries = list.leaf_entries().map_err(HiveRewriteError::Output)?;
        let mut previous: Option<(Vec<u16>, String)> = None;
        for entry in entries {
            let child = hive.key(entry.key).map_err(HiveRewriteError::Output)?;
            let name = child.name();
            let units = name.units();
            let text = name.to_string_lossy();
            if !entry.tag.matches(&units) {
                return Err(HiveRewriteError::ListTagWrong {
                    entry: entry.file_offset,
                    parent: record.path.clone(),
                    name: text,
                });
            }
            if let Some((previous_units, previous_text)) = &previous {
                if compare_names(previous_units, &units).is_ge() {
                    return Err(HiveRewriteError::ListOrderBroken {
                        list: entry.list.to_file(),
                        parent: record.path.clone(),
                        before: previous_text.clone(),
                        after: text,
                    });
                }
            }
            previous = Some((units, text));
        }
    }
    Ok(())
}
