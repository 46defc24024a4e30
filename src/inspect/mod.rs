//! `sidfs inspect`: understand a Windows master before cloning it.
//!
//! [`inspect`] reads the partition map, finds the NTFS volume that holds Windows, reads its
//! registry hives (SYSTEM, SOFTWARE, SAM, SECURITY and every other hive located on the volume)
//! and reports the machine SID and where it lives, the AD domain, local accounts, profiles, every
//! hive's state, and every reason the image cannot be cloned safely ([`Refusal`]) or that the
//! user should know about ([`Warning`]).
//!
//! Errors versus refusals: an image whose partition map or NTFS volumes cannot be read at all is
//! an [`InspectError`] (exit status 1 in the CLI). Once the Windows volume is found, anything
//! wrong inside it (a corrupt hive, an unreadable $LogFile) is a refusal with reason
//! `unreadable`, and the rest of the report is still filled in.
#![forbid(unsafe_code)]

mod data_disk;
pub mod finding;
mod hive_file;
mod installation;
mod render;
pub mod report;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

pub use finding::{Refusal, RefusalReason, Warning, WarningReason};
pub use report::{
    AccountReport, DataDiskReport, DataDiskStoreReport, DomainReport, HiveLogReport, HiveReport,
    InspectReport, MachineSidSources, PartitionReport, PartitionTableReport, ProfileReport,
    SidSource, SpecialFilesReport, VolumeReport, WindowsReport,
};

use crate::image::partition::PartitionType;
use crate::image::{
    ntfs_volumes, FileSystemKind, ImageError, ImageFile, Partition, PartitionTable,
    PartitionTableKind,
};

/// Most MFT records walked when looking for EFS-encrypted and compressed files.
pub const SPECIAL_FILE_SCAN_LIMIT: u64 = 1 << 18;
/// Example paths kept per kind of special file.
pub const SPECIAL_FILE_EXAMPLES: usize = 5;

pub use crate::image::WINDOWS_MARKER;

/// The image could not be inspected at all.
#[derive(Debug)]
pub enum InspectError {
    /// The image file cannot be opened.
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The image file cannot be opened or its partition map cannot be read.
    Image { path: PathBuf, source: ImageError },
    /// An NTFS volume cannot be opened, and no other volume holds Windows.
    Volume {
        path: PathBuf,
        partition: u32,
        source: ImageError,
    },
    /// With `--old-sid`, the clone's survey refuses the image (a Windows master whose machine
    /// SID is another one, a volume it cannot read): `sidfs mount` refuses it in the same words.
    Survey {
        path: PathBuf,
        source: Box<crate::rewrite::survey::SurveyError>,
    },
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::Open { path, source } => {
                write!(f, "{}: cannot open the image: {source}", path.display())
            }
            InspectError::Image { path, source } => {
                write!(f, "{}: cannot read the image: {source}", path.display())
            }
            InspectError::Volume {
                path,
                partition,
                source,
            } => write!(
                f,
                "{}: cannot read the NTFS volume in partition {partition}: {source}",
                path.display()
            ),
            // The words of `CloneError::Survey`.
            InspectError::Survey { path, source } => {
                write!(f, "cannot clone {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for InspectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InspectError::Open { source, .. } => Some(source),
            InspectError::Image { source, .. } | InspectError::Volume { source, .. } => {
                Some(source)
            }
            InspectError::Survey { source, .. } => Some(source.as_ref()),
        }
    }
}

/// Inspects the master image at `path`. Never writes to it.
pub fn inspect(path: &Path) -> Result<InspectReport, InspectError> {
    inspect_with(path, None)
}

/// [`inspect`] as `sidfs mount --old-sid` sees the image when `old_sid` is given: a disk without
/// Windows is a data disk whose stores with checksums are judged for that SID (no "no Windows"
/// refusal), and a Windows master must have that machine SID ([`InspectError::Survey`] otherwise).
pub fn inspect_with(
    path: &Path,
    old_sid: Option<crate::sid::MachineSid>,
) -> Result<InspectReport, InspectError> {
    inspect_stores(path, old_sid, true)
}

/// [`inspect`] as `sidfs mount` asks it before it surveys a new clone's master: without a Windows
/// master's stores with checksums, which mount's own checks decide (and refuse, in the words
/// inspect lists) when it registers the clone's structures.
pub fn inspect_before_clone(path: &Path) -> Result<InspectReport, InspectError> {
    inspect_stores(path, None, false)
}

/// [`inspect_with`]; `with_stores`: a Windows master's stores with checksums are listed (and
/// their refusals given), from the clone's own survey and checks.
fn inspect_stores(
    path: &Path,
    old_sid: Option<crate::sid::MachineSid>,
    with_stores: bool,
) -> Result<InspectReport, InspectError> {
    let image_error = |source| InspectError::Image {
        path: path.to_path_buf(),
        source,
    };
    // One opening for every command: a FIFO or directory is refused before it is read, and a
    // block device gets its real size.
    let image = match ImageFile::open(path) {
        Ok(image) => image,
        Err(ImageError::Open { source, .. }) => {
            return Err(InspectError::Open {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(e) => return Err(image_error(e)),
    };
    let table = PartitionTable::read(&image).map_err(image_error)?;
    let mut report = InspectReport {
        image: path.display().to_string(),
        image_size: image.len(),
        partition_table: table_report(&table),
        windows: None,
        data_disk: None,
        refusals: Vec::new(),
        warnings: Vec::new(),
    };
    truncation_refusals(&image, &table, &mut report.refusals);
    for partition in &table.partitions {
        if partition.file_system == FileSystemKind::BitLocker {
            report.refusals.push(Refusal::new(
                RefusalReason::Bitlocker,
                format!(
                    "Partition {} is encrypted with BitLocker, so its content cannot be read or \
                     patched: turn BitLocker off in the master (manage-bde -off) and capture the \
                     image again.",
                    partition.index
                ),
            ));
        }
    }
    let mut open_error = None;
    let mut found = None;
    for (partition, opened) in ntfs_volumes(&image, &table) {
        match opened.and_then(|v| v.holds_windows().map(|w| w.then_some(v))) {
            Ok(Some(volume)) => {
                found = Some((partition.clone(), volume));
                break;
            }
            Ok(None) => {}
            Err(e) => {
                report.partition_table.notes.push(format!(
                    "partition {}: the NTFS volume cannot be read: {e}",
                    partition.index
                ));
                open_error.get_or_insert((partition.index, e));
            }
        }
    }
    match found {
        Some((partition, volume)) => {
            for p in &mut report.partition_table.partitions {
                p.holds_windows = p.index == partition.index;
            }
            let mut windows = installation::inspect_installation(
                &partition,
                &volume,
                &mut report.refusals,
                &mut report.warnings,
            );
            if let Some(given) = old_sid {
                // The clone's survey reads the SID from SECURITY and refuses another one.
                data_disk::check_windows_sid(path, given)?;
            }
            if with_stores {
                windows.stores =
                    installation::store_reports(path, partition.index, &mut report.refusals);
            }
            report.windows = Some(windows);
        }
        // A volume that cannot be opened is the survey's error then, in mount's words, unless
        // a refusal (which mount gives first) already stops the clone.
        None if old_sid.is_some() && (open_error.is_none() || report.refusals.is_empty()) => {
            if let Some(given) = old_sid {
                report.data_disk = Some(data_disk::inspect_data_disk(path, given, &mut report)?);
            }
        }
        None => {
            if let Some((index, source)) = open_error {
                if report.refusals.is_empty() {
                    return Err(InspectError::Volume {
                        path: path.to_path_buf(),
                        partition: index,
                        source,
                    });
                }
            }
            if report.refusals.is_empty() {
                report.refusals.push(Refusal::new(
                    RefusalReason::NoWindows,
                    format!(
                        "No Windows installation was found (no NTFS volume holds {WINDOWS_MARKER}): \
                         give sidfs a whole-disk image or volume of a Windows system, or inspect a \
                         data disk of a Windows machine as `sidfs mount --old-sid` will clone it: \
                         sidfs inspect --old-sid S-1-5-21-... {}",
                        path.display()
                    ),
                ));
            }
        }
    }
    shadow_copy_findings(&image, &table, &mut report);
    Ok(report)
}

/// Shadow copies on every NTFS volume (`crate::rewrite::shadow`): a warning with their count. A
/// store that holds the machine SID is refused by mount's own check, with the other stores
/// (`installation::store_reports`, `data_disk`).
fn shadow_copy_findings(image: &ImageFile, table: &PartitionTable, report: &mut InspectReport) {
    use crate::rewrite::shadow::{catalog_shadow_copies, shadow_stores, ADVICE};
    for partition in &table.partitions {
        if partition.file_system != FileSystemKind::Ntfs {
            continue;
        }
        let Ok(volume) = crate::image::NtfsVolume::open(image, partition) else {
            continue;
        };
        let stores = shadow_stores(&volume);
        let listed = catalog_shadow_copies(image, partition.start.0, partition.len).unwrap_or(0);
        if stores.is_empty() && listed == 0 {
            continue;
        }
        report.warnings.push(Warning::new(
            WarningReason::ShadowCopies,
            format!(
                "Partition {} has {} shadow copies (its VSS catalog lists {listed}, System Volume Information holds {} store files): they hold old copies of the volume's blocks, and a clone that restores one gets back what the master had then; {ADVICE} (docs/SEMANTICS.md, \"Shadow copies\").",
                partition.index,
                listed.max(stores.len()),
                stores.len()
            ),
        ));
    }
}

/// A partition that runs past the end of the image, or an NTFS volume whose sectors run past its
/// partition (or the image): the image was cut short, and a clone of it would miss the volume's
/// end (its backup boot sector at least).
fn truncation_refusals(image: &ImageFile, table: &PartitionTable, refusals: &mut Vec<Refusal>) {
    for p in &table.partitions {
        let available = image.len().saturating_sub(p.start.0).min(p.len);
        let missing = if p.end() > image.len() {
            Some(format!(
                "Partition {} ends at byte {}, past the end of the image ({} bytes)",
                p.index,
                p.end(),
                image.len()
            ))
        } else {
            None
        }
        .or_else(|| {
            if p.file_system != FileSystemKind::Ntfs {
                return None;
            }
            let mut boot = [0u8; 512];
            image
                .read_exact_at(p.start, &mut boot, "NTFS boot sector")
                .ok()?;
            let bytes_per_sector = u64::from(u16::from_le_bytes([boot[0x0B], boot[0x0C]]));
            let total_sectors = u64::from_le_bytes(boot[0x28..0x30].try_into().ok()?);
            let volume = total_sectors.checked_mul(bytes_per_sector)?;
            (volume > available).then(|| {
                format!(
                    "The NTFS volume in partition {} is {volume} bytes long, but only {available} bytes of it are in the image",
                    p.index
                )
            })
        });
        if let Some(what) = missing {
            refusals.push(Refusal::new(
                RefusalReason::Truncated,
                format!(
                    "{what}: the image is truncated and the volume's end is missing; copy the \
                     whole disk again."
                ),
            ));
        }
    }
}

fn table_report(table: &PartitionTable) -> PartitionTableReport {
    let (kind, disk_id) = match &table.kind {
        PartitionTableKind::Mbr { disk_signature } => {
            ("mbr", Some(format!("{disk_signature:08x}")))
        }
        PartitionTableKind::Gpt { disk_guid, .. } => ("gpt", Some(disk_guid.to_string())),
        PartitionTableKind::WholeImage => ("none", None),
    };
    PartitionTableReport {
        kind: kind.to_string(),
        sector_size: table.sector_size,
        disk_id,
        partitions: table.partitions.iter().map(partition_report).collect(),
        notes: table.notes.clone(),
    }
}

fn partition_report(p: &Partition) -> PartitionReport {
    let (type_id, name) = match &p.partition_type {
        PartitionType::Mbr { type_byte, .. } => (format!("0x{type_byte:02x}"), String::new()),
        PartitionType::Gpt {
            type_guid, name, ..
        } => (type_guid.to_string(), name.clone()),
        PartitionType::WholeImage => ("none".to_string(), String::new()),
    };
    PartitionReport {
        index: p.index,
        start: p.start.0,
        size: p.len,
        type_id,
        type_name: p.partition_type.known_name().map(str::to_string),
        name,
        file_system: file_system_name(p.file_system).to_string(),
        holds_windows: false,
    }
}

fn file_system_name(kind: FileSystemKind) -> &'static str {
    match kind {
        FileSystemKind::Ntfs => "ntfs",
        FileSystemKind::BitLocker => "bitlocker",
        FileSystemKind::Fat => "fat",
        FileSystemKind::Unknown => "unknown",
    }
}
