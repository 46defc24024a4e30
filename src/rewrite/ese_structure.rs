//! An ESE database as a whole structure of the patch stage: [`super::ese::rewrite_ese`] adapted
//! to disk ranges and edits, like the event logs and hives in `super::structures`.

use super::error::Result;
use super::ese::rewrite_ese;
use super::stream::{FileStream, FileStructure, Rewritten};
use super::survey::EseFile;
use super::SidMapping;

/// One ESE database file: the SID is replaced in the whole file and the checksums of every page
/// that changed are recomputed. It is registered only after `stage_builder::structures_with_identity`
/// checked that the master's file can be rewritten so; the transform fails (the read gets EIO)
/// only if the master changed under the clone.
pub struct EseStructure {
    path: String,
    partition: u32,
    stream: FileStream,
}

impl EseStructure {
    /// `None` for a stream that cannot be patched byte for byte (resident, compressed or
    /// encrypted).
    pub fn new(file: &EseFile, partition: u32) -> Option<Self> {
        Some(EseStructure {
            path: file.path.clone(),
            partition,
            stream: FileStream::plain(&file.layout)?,
        })
    }
}

impl FileStructure for EseStructure {
    fn name(&self) -> String {
        format!("ESE database {} (partition {})", self.path, self.partition)
    }

    fn stream(&self) -> &FileStream {
        &self.stream
    }

    fn rewrite(&self, original: &[u8], map: &SidMapping) -> Result<Rewritten> {
        let out = rewrite_ese(original, map)?;
        let r = &out.report;
        let summary = format!(
            "{} SID occurrences, {} of {} pages changed with their checksums recomputed ({} header, {} old-format, {} ECC, {} large), {}-byte pages, revision {:#x}",
            r.replaced.total(),
            r.pages_changed(),
            r.pages,
            r.header_pages_changed,
            r.old_pages_changed,
            r.new_pages_changed,
            r.large_pages_changed,
            r.page_size,
            r.format_revision
        );
        Ok((out.bytes, summary))
    }
}
