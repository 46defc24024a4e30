//! A SQLite write-ahead log as a whole structure of the patch stage: [`super::sqlite_wal::rewrite_wal`]
//! adapted to disk ranges and edits, like [`super::ese_structure::EseStructure`].

use super::error::Result;
use super::sqlite_wal::rewrite_wal;
use super::stream::{FileStream, FileStructure, Rewritten};
use super::survey::EseFile;
use super::SidMapping;

/// One `*-wal` file: the SID is replaced in the whole file and the checksums of the frames SQLite
/// replays are recomputed in order. Registered only after `stage_builder::structures_with_identity`
/// checked that the master's log can be rewritten so.
pub struct WalStructure {
    path: String,
    partition: u32,
    stream: FileStream,
}

impl WalStructure {
    /// `None` for a stream that cannot be patched byte for byte (resident, compressed or
    /// encrypted).
    pub fn new(file: &EseFile, partition: u32) -> Option<Self> {
        Some(WalStructure {
            path: file.path.clone(),
            partition,
            stream: FileStream::plain(&file.layout)?,
        })
    }
}

impl FileStructure for WalStructure {
    fn name(&self) -> String {
        format!(
            "SQLite write-ahead log {} (partition {})",
            self.path, self.partition
        )
    }

    fn stream(&self) -> &FileStream {
        &self.stream
    }

    fn rewrite(&self, original: &[u8], map: &SidMapping) -> Result<Rewritten> {
        let out = rewrite_wal(original, map)?;
        let r = &out.report;
        let summary = format!(
            "{} SID occurrences, {} of {} replayed frames changed, checksums of the {} replayed frames recomputed ({} frames in all, {}-byte pages, header checksum {})",
            r.replaced.total(),
            r.frames_changed,
            r.valid_frames,
            r.valid_frames,
            r.frames,
            r.page_size,
            if r.header_valid { "valid" } else { "invalid in the master: log ignored by SQLite" }
        );
        Ok((out.bytes, summary))
    }
}
