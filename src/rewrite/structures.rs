//! The whole structures the stage rewrites on first touch, adapted from the pure transforms
//! (`hive::rewrite_hive`, `secure::rewrite_secure`) to disk ranges and edits.

use std::ops::Range;

use sha2::{Digest, Sha256};

use super::hive::{rewrite_hive, TaskHashes};
use super::model::TaskFile;
use super::plan::{extent_ranges, read_stream, runs_to_disk};
use super::stage::{diff_runs, Structure, StructureOutput};
use super::SidMapping;
use crate::image::{Extent, HiveLocation};
use crate::overlay::MasterImage;

/// A registry hive file on the Windows volume.
pub struct HiveStructure {
    path: String,
    extents: Vec<Extent>,
    size: u64,
    /// The scheduled tasks, for the TaskCache hashes (only the SOFTWARE hive uses them).
    tasks: Vec<(String, Vec<u8>)>,
}

impl HiveStructure {
    pub fn new(location: &HiveLocation, tasks: &[TaskFile]) -> Self {
        HiveStructure {
            path: location.path.clone(),
            extents: location.extents().to_vec(),
            size: location.size,
            tasks: tasks
                .iter()
                .map(|t| (t.task_path.clone(), t.bytes.clone()))
                .collect(),
        }
    }
}

/// SHA-256 of a task file without its UTF-16LE byte order mark (the TaskCache `Hash` input as
/// far as it is known: FORMAT-FACTS §5; a stored hash that does not match is left alone).
fn task_hash(bytes: &[u8]) -> Vec<u8> {
    let body = bytes.strip_prefix(&[0xFF, 0xFE]).unwrap_or(bytes);
    Sha256::digest(body).to_vec()
}

struct TaskSource<'a> {
    tasks: &'a [(String, Vec<u8>)],
    map: &'a SidMapping,
}

impl TaskHashes for TaskSource<'_> {
    fn hashes(&self, task_path: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let (_, bytes) = self
            .tasks
            .iter()
            .find(|(p, _)| p.eq_ignore_ascii_case(task_path))?;
        let mut clone = bytes.clone();
        self.map.replace_all(&mut clone);
        Some((task_hash(bytes), task_hash(&clone)))
    }
}

impl Structure for HiveStructure {
    fn name(&self) -> String {
        format!("hive {}", self.path)
    }

    fn owned(&self) -> Vec<Range<u64>> {
        extent_ranges(&self.extents)
    }

    fn transform(&self, master: &MasterImage, map: &SidMapping) -> Result<StructureOutput, String> {
        let original = read_stream(master, &self.extents, self.size)?;
        let tasks = TaskSource {
            tasks: &self.tasks,
            map,
        };
        let out = rewrite_hive(&original, map, &tasks).map_err(|e| e.to_string())?;
        let r = &out.report;
        let summary = format!(
            "{} SID occurrences ({} in free cells), {} keys renamed, {} lh hashes, {} task hashes{}",
            r.replaced.total(),
            r.in_free_cells,
            r.keys_renamed,
            r.lh_hashes_updated,
            r.task_hashes_updated,
            if r.checksum_updated { ", checksum" } else { "" }
        );
        Ok(StructureOutput {
            owned_edits: runs_to_disk(diff_runs(&original, &out.bytes), &self.extents),
            record_edits: Vec::new(),
            summary,
        })
    }
}
