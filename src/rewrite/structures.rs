//! The whole structures the stage rewrites on first touch, adapted from the pure transforms
//! (`hive::rewrite_hive`, `secure::rewrite_secure`, `evtx::rewrite_evtx`) to disk ranges and
//! edits.

use std::ops::Range;

use sha2::{Digest, Sha256};

use super::error::{Result, RewriteError};
use super::evtx::rewrite_evtx;
use super::hive::{rewrite_hive, TaskHashes};
use super::secure::{rewrite_secure, verify_secure, ResidentValue, SecureLayout, SecureParts};
use super::stage::{diff_runs, Structure, StructureOutput};
use super::stream::{FileStream, FileStructure, Rewritten};
use super::survey::{EventLogFile, NtfsPart, TaskFile};
use super::SidMapping;
use crate::image::ntfs_volume::multi_sector::record_at;
use crate::image::HiveLocation;
use crate::overlay::MasterImage;

/// A registry hive file on the Windows volume.
pub struct HiveStructure {
    path: String,
    stream: FileStream,
    /// The scheduled tasks, for the TaskCache hashes (only the SOFTWARE hive uses them).
    tasks: Vec<(String, Vec<u8>)>,
    /// The clone's other identifiers (computer name, GUIDs), applied after the SID.
    identity: Option<std::sync::Arc<crate::identity::IdentityMapping>>,
}

impl HiveStructure {
    pub fn new(location: &HiveLocation, tasks: &[TaskFile]) -> Self {
        HiveStructure {
            path: location.path.clone(),
            stream: FileStream::from_extents(location.extents(), location.size),
            tasks: tasks
                .iter()
                .map(|t| (t.task_path.clone(), t.bytes.clone()))
                .collect(),
            identity: None,
        }
    }

    /// Also replaces the clone's other identifiers (see `crate::identity`).
    pub fn with_identity(
        mut self,
        identity: Option<std::sync::Arc<crate::identity::IdentityMapping>>,
    ) -> Self {
        self.identity = identity;
        self
    }
}

/// SHA-256 of a task file without its UTF-16LE byte order mark (the TaskCache `Hash` input as
/// far as it is known: docs/FORMAT-FACTS.md §5; a stored hash that does not match is left alone).
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

impl FileStructure for HiveStructure {
    fn name(&self) -> String {
        format!("hive {}", self.path)
    }

    fn stream(&self) -> &FileStream {
        &self.stream
    }

    fn rewrite(&self, original: &[u8], map: &SidMapping) -> Result<Rewritten> {
        let tasks = TaskSource {
            tasks: &self.tasks,
            map,
        };
        // No byte-level fallback: a hive the rewrite cannot parse would keep stale lh hashes and
        // identifiers. The stage is built only for hives that `check_hive` accepted, so this
        // fails only if the master changed under the clone; the read then fails (EIO).
        let mut out = rewrite_hive(original, map, &tasks)?;
        let mut identity_summary = String::new();
        if let Some(identity) = &self.identity {
            let (bytes, report) = crate::identity::hive::rewrite_identifiers(&out.bytes, identity)
                .map_err(RewriteError::Identifiers)?;
            out.bytes = bytes;
            if report.total() > 0 {
                identity_summary = format!(
                    ", {} identifier occurrences {:?}, {} keys renamed for identifiers, {} values resized ({} free cells taken, {} old names left in binary data)",
                    report.total(),
                    report.replaced,
                    report.keys_renamed.len(),
                    report.values_resized,
                    report.cells_allocated,
                    report.name_left
                );
            }
        }
        let r = &out.report;
        let summary = format!(
            "{} SID occurrences ({} in free cells), {} keys renamed, {} lh hashes, {} task hashes{}",
            r.replaced.total(),
            r.in_free_cells,
            r.keys_renamed,
            r.lh_hashes_updated,
            r.task_hashes_updated,
            if r.checksum_updated { ", checksum" } else { "" }
        ) + &identity_summary;
        Ok((out.bytes, summary))
    }
}

/// The `$Secure` file of one NTFS volume: `$SDS` with both copies and their hashes, `$SII` and
/// `$SDH` (whose order changes with the hashes). The streams are owned; the two index roots live
/// in MFT record 9 and are changed as record edits.
pub struct SecureStructure {
    volume_start: u64,
    sds: FileStream,
    sii_root: ResidentValue,
    sii_alloc: FileStream,
    sdh_root: ResidentValue,
    sdh_alloc: FileStream,
}

impl SecureStructure {
    /// Locates `$Secure` on a volume and checks that the master's is consistent (hashes, `$SII`,
    /// `$SDH`), which its rewrite needs. The error says why it cannot be rewritten as a whole.
    pub fn locate(image: &crate::image::ImageFile, part: &NtfsPart) -> Result<Self, RewriteError> {
        let (parts, layout) = SecureParts::read(image, &part.volume)?;
        verify_secure(&parts).map_err(RewriteError::SecureInconsistent)?;
        let SecureLayout {
            sds,
            sii_root,
            sii_alloc,
            sdh_root,
            sdh_alloc,
        } = layout;
        Ok(SecureStructure {
            volume_start: part.partition.start.0,
            sds: FileStream::from_extents(&sds, parts.sds.len() as u64),
            sii_root,
            sii_alloc: FileStream::from_extents(&sii_alloc, parts.sii_alloc.len() as u64),
            sdh_root,
            sdh_alloc: FileStream::from_extents(&sdh_alloc, parts.sdh_alloc.len() as u64),
        })
    }

    fn read_root(master: &MasterImage, root: &ResidentValue) -> Result<Vec<u8>, RewriteError> {
        let at = root.record_offset.0;
        let mut rec = vec![0u8; root.record_size as usize];
        master.read_at(at, &mut rec)?;
        let r = record_at(&rec, 0).ok_or(RewriteError::Invalid {
            offset: at,
            what: "MFT record 9 has invalid fixups",
        })?;
        r.unfix(&mut rec);
        let s = root.value_offset as usize;
        rec.get(s..s.saturating_add(root.len as usize))
            .map(<[u8]>::to_vec)
            .ok_or(RewriteError::Invalid {
                offset: at,
                what: "index root outside its record",
            })
    }

    fn root_edits(root: &ResidentValue, old: &[u8], new: &[u8]) -> Vec<(u64, Vec<u8>)> {
        diff_runs(old, new)
            .into_iter()
            .map(|(at, bytes)| {
                (
                    root.record_offset.0 + u64::from(root.value_offset) + at as u64,
                    bytes,
                )
            })
            .collect()
    }
}

impl Structure for SecureStructure {
    fn name(&self) -> String {
        format!("$Secure of the volume at {:#x}", self.volume_start)
    }

    fn owned(&self) -> Vec<Range<u64>> {
        let mut r = self.sds.owned();
        r.extend(self.sii_alloc.owned());
        r.extend(self.sdh_alloc.owned());
        r.sort_by_key(|x| x.start);
        r
    }

    fn triggers(&self) -> Vec<Range<u64>> {
        let mut r = self.owned();
        for root in [&self.sii_root, &self.sdh_root] {
            let at = root.record_offset.0;
            r.push(at..at + u64::from(root.record_size));
        }
        r.sort_by_key(|x| x.start);
        r
    }

    fn transform(&self, master: &MasterImage, map: &SidMapping) -> Result<StructureOutput> {
        let parts = SecureParts {
            sds: self.sds.read(master)?,
            sii_root: Self::read_root(master, &self.sii_root)?,
            sii_alloc: self.sii_alloc.read(master)?,
            sdh_root: Self::read_root(master, &self.sdh_root)?,
            sdh_alloc: self.sdh_alloc.read(master)?,
        };
        let out = rewrite_secure(&parts, map)?;
        let new = &out.parts;
        let mut owned_edits = Vec::new();
        for (what, old, new, stream) in [
            ("$SDS", &parts.sds, &new.sds, &self.sds),
            ("$SII", &parts.sii_alloc, &new.sii_alloc, &self.sii_alloc),
            ("$SDH", &parts.sdh_alloc, &new.sdh_alloc, &self.sdh_alloc),
        ] {
            owned_edits.extend(stream.edits_checked(what, old, new)?);
        }
        owned_edits.sort_by_key(|(o, _)| *o);
        let mut record_edits = Self::root_edits(&self.sii_root, &parts.sii_root, &new.sii_root);
        record_edits.extend(Self::root_edits(
            &self.sdh_root,
            &parts.sdh_root,
            &new.sdh_root,
        ));
        record_edits.sort_by_key(|(o, _)| *o);
        Ok(StructureOutput {
            owned_edits,
            record_edits,
            summary: format!("{:?}", out.report),
        })
    }
}

/// An event log (.evtx) of the Windows volume: the SID is replaced in the whole file and the CRCs
/// of every chunk that changed (and of the file header) are recomputed where the master's were
/// valid. A file that is not a readable event log gets the plain replacement over its stream.
pub struct EvtxStructure {
    path: String,
    stream: FileStream,
}

impl EvtxStructure {
    /// `None` for a stream that cannot be patched byte for byte (resident, compressed or
    /// encrypted): the generic rewrite handles it like any other file.
    pub fn new(file: &EventLogFile) -> Option<Self> {
        Some(EvtxStructure {
            path: file.path.clone(),
            stream: FileStream::plain(&file.layout)?,
        })
    }
}

impl FileStructure for EvtxStructure {
    fn name(&self) -> String {
        format!("event log {}", self.path)
    }

    fn stream(&self) -> &FileStream {
        &self.stream
    }

    fn rewrite(&self, original: &[u8], map: &SidMapping) -> Result<Rewritten> {
        let (bytes, summary) = match rewrite_evtx(original, map) {
            Ok(out) => {
                let r = &out.report;
                for stale in &r.stale_checksums {
                    log::warn!(
                        "{}: {:?} CRC at {:#x} was already wrong in the master (stored {:#010x}, computed {:#010x}): left as it was",
                        self.path, stale.which, stale.at, stale.stored, stale.computed
                    );
                }
                let summary = format!(
                    "{} SID occurrences, {} of {} chunks changed, {} records and {} header CRCs recomputed{}, {} stale CRCs left, {} unreadable chunks",
                    r.replaced.total(),
                    r.chunks_changed,
                    r.chunks,
                    r.records_checksums_updated,
                    r.header_checksums_updated,
                    if r.file_checksum_updated { ", file header CRC" } else { "" },
                    r.stale_checksums.len(),
                    r.unreadable_chunks.len()
                );
                (out.bytes, summary)
            }
            // A file without the `ElfFile` signature is no event log and has no CRCs: the plain
            // replacement is faithful for it.
            Err(e @ super::evtx::EvtxError::NotEvtx { .. }) => {
                let mut bytes = original.to_vec();
                let n = map.replace_all(&mut bytes);
                (
                    bytes,
                    format!("not an event log ({e}): {n} SID occurrences replaced"),
                )
            }
            // An event log whose header cannot be followed: fail closed (the read fails and the
            // log says why) rather than replace SIDs under CRCs that would go stale.
            Err(e) => return Err(e.into()),
        };
        Ok((bytes, summary))
    }
}
