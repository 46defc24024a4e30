//! An NTFS volume inside the image: facts, path lookup, file content, stream extents as image
//! offsets, journal/hibernation state, registry hive locations.
//!
//! File-system traversal uses the `ntfs` crate (0.4) over a bounded [`PartitionReader`]. That
//! crate can panic on some hostile metadata, so every call into it goes through
//! [`NtfsVolume::guarded`], which turns a panic into [`ImageError::NtfsPanic`]. Positions from
//! the crate are partition offsets; this module converts them to image offsets and checks that
//! they stay inside the partition.
//!
//! This file opens the volume and reads file content and stream layouts; [`paths`] looks paths
//! up and lists directories; [`volume_state`] reads the journal and hibernation state and finds
//! special files; [`windows`] decides which volume holds Windows.

pub mod attribute;
mod crate_view;
pub mod extent;
pub mod fixup;
pub mod hives;
pub mod log_file;
pub mod mft_scan;
pub mod multi_sector;
mod paths;
pub mod record;
mod volume_state;
mod windows;

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate_view::{CrateReader, MftView};

use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsStandardInformation};
use ntfs::{KnownNtfsFileRecordNumber, Ntfs, NtfsError, NtfsFile};

pub use extent::{Extent, StreamLayout, StreamLocation};
pub use hives::{HiveFileKind, HiveLocation, HiveRole};
pub use log_file::LogFileState;
pub use paths::{DirEntry, MAX_DIR_ENTRIES};
pub use volume_state::{HibernationState, SpecialFileReport};
pub use windows::{ntfs_volumes, WINDOWS_MARKER};

use crate::image::error::{ImageError, Result};
use crate::image::partition::{FileSystemKind, Partition};
use crate::image::reader::{ImageFile, ImageOffset, PartitionOffset, PartitionReader};

/// Facts about the volume that decide whether it can be cloned.
#[derive(Clone, Debug)]
pub struct VolumeFacts {
    pub start: ImageOffset,
    pub len: u64,
    pub cluster_size: u32,
    pub sector_size: u16,
    pub file_record_size: u32,
    pub serial_number: u64,
    /// Image offset of MFT record 0.
    pub mft_offset: ImageOffset,
    pub ntfs_major: u8,
    pub ntfs_minor: u8,
    /// $VOLUME_INFORMATION flags (0x0001 DIRTY, ...).
    pub volume_flags: u16,
    pub volume_name: Option<String>,
}

impl VolumeFacts {
    /// The DIRTY flag of $VOLUME_INFORMATION.
    pub fn is_dirty(&self) -> bool {
        self.volume_flags & 0x0001 != 0
    }
}

/// An opened NTFS volume of the image.
pub struct NtfsVolume {
    image: ImageFile,
    start: ImageOffset,
    len: u64,
    ntfs: Ntfs,
    /// Where each MFT record lies, read once by our own parser (`attribute.rs`).
    mft: std::sync::OnceLock<Arc<attribute::MftMap>>,
    /// The whole MFT as one run for the `ntfs` crate, when record 0 has an attribute list.
    view: Option<Arc<MftView>>,
}

impl std::fmt::Debug for NtfsVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtfsVolume")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

fn ntfs_error(volume: ImageOffset, context: &str, e: NtfsError) -> ImageError {
    ImageError::Ntfs {
        volume,
        context: context.to_string(),
        message: e.to_string(),
    }
}

impl NtfsVolume {
    /// Opens the NTFS file system in `partition`: checks the boot sector, reads the $UpCase
    /// table (needed for case-insensitive lookups).
    pub fn open(image: &ImageFile, partition: &Partition) -> Result<NtfsVolume> {
        let start = partition.start;
        if partition.end() > image.len() {
            return Err(ImageError::Truncated {
                offset: start,
                what: "NTFS partition",
                needed: partition.len,
                available: image.len().saturating_sub(start.0),
            });
        }
        let mut boot = [0u8; 512];
        image.read_exact_at(start, &mut boot, "NTFS boot sector")?;
        match crate::image::partition::detect_file_system(&boot) {
            FileSystemKind::Ntfs => {}
            FileSystemKind::BitLocker => {
                return Err(ImageError::NotNtfs {
                    offset: start,
                    found: "a BitLocker-encrypted volume (\"-FVE-FS-\"); decrypt it first".into(),
                })
            }
            other => {
                return Err(ImageError::NotNtfs {
                    offset: start,
                    found: format!("{other:?} (OEM id {:02X?})", &boot[3..11]),
                })
            }
        }
        let reader = PartitionReader::new(image.clone(), start, partition.len);
        let mut fs = CrateReader::new(reader, None);
        let ntfs = guard(start, "reading the boot sector and $UpCase", || {
            let mut ntfs = Ntfs::new(&mut fs).map_err(|e| ntfs_error(start, "boot sector", e))?;
            if ntfs.size() > partition.len {
                return Err(ImageError::invalid(
                    ImageOffset(start.0 + 0x28),
                    "NTFS total sectors",
                    format!(
                        "a volume of at most the partition's {} bytes",
                        partition.len
                    ),
                    format!("{} bytes", ntfs.size()),
                ));
            }
            ntfs.read_upcase_table(&mut fs)
                .map_err(|e| ntfs_error(start, "$UpCase", e))?;
            Ok(ntfs)
        })?;
        // Our own map of the MFT (every piece of record 0's $DATA), and from it the crate's view
        // of a fragmented MFT. A map that cannot be read now is read (and reported) on first use.
        let mft_at = ntfs.mft_position().value().map(|p| p.get()).unwrap_or(0);
        let facts = VolumeFacts {
            start,
            len: partition.len,
            cluster_size: ntfs.cluster_size(),
            sector_size: ntfs.sector_size(),
            file_record_size: ntfs.file_record_size(),
            serial_number: 0,
            mft_offset: ImageOffset(start.0.saturating_add(mft_at)),
            ntfs_major: 0,
            ntfs_minor: 0,
            volume_flags: 0,
            volume_name: None,
        };
        let mft = std::sync::OnceLock::new();
        let mut view = None;
        if let Ok(map) = guard(start, "reading $MFT", || {
            attribute::MftMap::open(image, &facts)
        }) {
            let map = Arc::new(map);
            view = MftView::new(image, start, partition.len, mft_at, map.clone()).map(Arc::new);
            let _ = mft.set(map);
        }
        Ok(NtfsVolume {
            image: image.clone(),
            start,
            len: partition.len,
            ntfs,
            mft,
            view,
        })
    }

    /// Image offset of the volume.
    pub fn start(&self) -> ImageOffset {
        self.start
    }

    /// A fresh reader with its own cursor.
    fn reader(&self) -> CrateReader {
        CrateReader::new(
            PartitionReader::new(self.image.clone(), self.start, self.len),
            self.view.clone(),
        )
    }

    /// Runs `f` (which calls into the `ntfs` crate), turning a panic into an error.
    fn guarded<R>(
        &self,
        context: &str,
        f: impl FnOnce(&Ntfs, &mut CrateReader) -> Result<R>,
    ) -> Result<R> {
        let mut fs = self.reader();
        guard(self.start, context, || f(&self.ntfs, &mut fs))
    }

    fn err(&self, context: &str) -> impl Fn(NtfsError) -> ImageError + '_ {
        let context = context.to_string();
        move |e| ntfs_error(self.start, &context, e)
    }

    /// Converts a partition offset from the crate to an image offset, checking that
    /// `[offset, offset + len)` lies inside the partition.
    fn to_image(
        &self,
        offset: PartitionOffset,
        len: u64,
        what: &'static str,
    ) -> Result<ImageOffset> {
        match offset.0.checked_add(len) {
            Some(end) if end <= self.len => Ok(ImageOffset(self.start.0 + offset.0)),
            _ => Err(ImageError::invalid(
                ImageOffset(self.start.0.saturating_add(offset.0)),
                what,
                format!("{len} bytes inside the volume of {} bytes", self.len),
                format!("partition offset {:#x}", offset.0),
            )),
        }
    }

    /// Cluster size, MFT location, version, $Volume flags and label.
    pub fn facts(&self) -> Result<VolumeFacts> {
        self.guarded("reading $Volume", |ntfs, fs| {
            let info = ntfs
                .volume_info(fs)
                .map_err(self.err("$VOLUME_INFORMATION"))?;
            let volume_name = match ntfs.volume_name(fs) {
                None => None,
                Some(Ok(n)) => Some(n.name().to_string_lossy()),
                Some(Err(e)) => return Err(self.err("$VOLUME_NAME")(e)),
            };
            let mft = ntfs.mft_position().value().map(|p| p.get()).unwrap_or(0);
            Ok(VolumeFacts {
                start: self.start,
                len: self.len,
                cluster_size: ntfs.cluster_size(),
                sector_size: ntfs.sector_size(),
                file_record_size: ntfs.file_record_size(),
                serial_number: ntfs.serial_number(),
                mft_offset: self.to_image(PartitionOffset(mft), 0, "$MFT position")?,
                ntfs_major: info.major_version(),
                ntfs_minor: info.minor_version(),
                volume_flags: info.flags().bits(),
                volume_name,
            })
        })
    }

    /// Reads a whole stream of the file at `path` (`stream` "" = unnamed $DATA). More than
    /// `limit` bytes is an error, before anything is allocated.
    pub fn read_file(&self, path: &str, stream: &str, limit: u64) -> Result<Vec<u8>> {
        self.guarded("reading a file", |ntfs, fs| {
            let file = self.lookup_in(ntfs, fs, path)?;
            self.read_stream_of(ntfs, fs, &file, path, stream, limit)
        })
    }

    /// Reads `$DATA` stream `stream` of record `record` through the one attribute-layout lookup
    /// (which follows `$ATTRIBUTE_LIST` into extension records): the whole value, or with
    /// `head` its first `limit` bytes; without `head` a value larger than `limit` is an error,
    /// before anything is allocated. Bytes past the initialized size read as zeros, holes too.
    /// `None` for a compressed stream (the `ntfs` crate decompresses; its reads of values
    /// continued in extension records stopped at the base record's piece: 0 bytes).
    fn read_data(
        &self,
        record: u64,
        stream: &str,
        limit: u64,
        head: bool,
        path: &str,
    ) -> Result<Option<Vec<u8>>> {
        let mft = self.mft_map()?;
        let Some(layout) =
            attribute::attribute_layout(&self.image, mft, record, record::TYPE_DATA, stream)?
        else {
            return Err(ImageError::NotFound {
                volume: self.start,
                path: format!("{path}:{stream} ($DATA)"),
            });
        };
        let size = match &layout {
            attribute::AttributeLayout::Resident { len, .. } => u64::from(*len),
            attribute::AttributeLayout::NonResident { data_size, .. } => *data_size,
        };
        if size > limit && !head {
            return Err(ImageError::TooLarge {
                what: format!("{path}:{stream}"),
                size,
                limit,
            });
        }
        let want = size.min(limit);
        match layout {
            attribute::AttributeLayout::Resident {
                record: r,
                value_offset,
                ..
            } => {
                let (bytes, _) = mft.read(&self.image, r)?;
                let start = value_offset as usize;
                let value = bytes.get(start..start + want as usize).ok_or_else(|| {
                    ImageError::invalid(
                        self.start,
                        "resident value",
                        format!("{want} bytes inside record {r}"),
                        format!("offset {start} in a {}-byte record", bytes.len()),
                    )
                })?;
                Ok(Some(value.to_vec()))
            }
            attribute::AttributeLayout::NonResident { flags, .. }
                if flags & record::ATTR_FLAG_COMPRESSED != 0 =>
            {
                Ok(None)
            }
            attribute::AttributeLayout::NonResident {
                initialized_size,
                extents,
                ..
            } => {
                let mut buf = vec![0u8; want as usize];
                let stored = want.min(initialized_size);
                for e in extents {
                    let (Some(at), start) = (e.image_offset, e.logical_offset) else {
                        continue;
                    };
                    let end = start.saturating_add(e.len).min(stored);
                    if end > start {
                        self.image.read_exact_at(
                            at,
                            &mut buf[start as usize..end as usize],
                            "file data",
                        )?;
                    }
                }
                Ok(Some(buf))
            }
        }
    }

    fn read_stream_of(
        &self,
        _ntfs: &Ntfs,
        fs: &mut CrateReader,
        file: &NtfsFile<'_>,
        path: &str,
        stream: &str,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let record = file.file_record_number();
        if let Some(bytes) = self.read_data(record, stream, limit, false, path)? {
            return Ok(bytes);
        }
        let item = match file.data(fs, stream) {
            None => {
                return Err(ImageError::NotFound {
                    volume: self.start,
                    path: format!("{path}:{stream} ($DATA)"),
                })
            }
            Some(r) => r.map_err(self.err(&format!("$DATA of {path}")))?,
        };
        let attribute = item.to_attribute().map_err(self.err("$DATA attribute"))?;
        self.read_attribute_value(
            fs,
            &attribute,
            limit,
            &format!("{path}:{stream}"),
            &format!("$DATA value of {path}"),
        )
    }

    /// The whole value of `attribute` read through the crate, at most `limit` bytes; `what`
    /// names it in the errors (`PATH:STREAM`), `value_context` where getting its value fails.
    fn read_attribute_value(
        &self,
        fs: &mut CrateReader,
        attribute: &ntfs::NtfsAttribute<'_, '_>,
        limit: u64,
        what: &str,
        value_context: &str,
    ) -> Result<Vec<u8>> {
        let len = attribute.value_length();
        if len > limit {
            return Err(ImageError::TooLarge {
                what: what.to_string(),
                size: len,
                limit,
            });
        }
        let value = attribute.value(fs).map_err(self.err(value_context))?;
        let mut buf = vec![0u8; len as usize];
        value
            .attach(fs)
            .read_exact(&mut buf)
            .map_err(|e| ImageError::Ntfs {
                volume: self.start,
                context: format!("reading {what}"),
                message: e.to_string(),
            })?;
        Ok(buf)
    }

    /// The location of a stream of the file at `path` (extents as image offsets) and its flags.
    pub fn stream_layout(&self, path: &str, stream: &str) -> Result<StreamLayout> {
        self.guarded("stream layout", |ntfs, fs| {
            let file = self.lookup_in(ntfs, fs, path)?;
            self.layout_of(ntfs, fs, &file, stream)
        })
    }

    /// The location of a stream of MFT record `record`.
    pub fn stream_layout_by_record(&self, record: u64, stream: &str) -> Result<StreamLayout> {
        self.guarded("stream layout", |ntfs, fs| {
            let file = ntfs
                .file(fs, record)
                .map_err(self.err(&format!("MFT record {record}")))?;
            self.layout_of(ntfs, fs, &file, stream)
        })
    }

    /// The extents of $MFT's own $DATA: record N lies at logical offset N × record size.
    pub fn mft_layout(&self) -> Result<StreamLayout> {
        self.stream_layout_by_record(KnownNtfsFileRecordNumber::MFT as u64, "")
    }

    /// Image offset of MFT record `record`.
    pub fn mft_record_offset(&self, record: u64) -> Result<ImageOffset> {
        let layout = self.mft_layout()?;
        let size = self.ntfs.file_record_size() as u64;
        let logical = record
            .checked_mul(size)
            .ok_or_else(|| ImageError::TooLarge {
                what: "MFT record number".into(),
                size: record,
                limit: u64::MAX / size,
            })?;
        if logical.saturating_add(size) > layout.size {
            return Err(ImageError::NotFound {
                volume: self.start,
                path: format!(
                    "MFT record {record} (the MFT has {} records)",
                    layout.size / size
                ),
            });
        }
        // A record may straddle two extents only with clusters smaller than records; check
        // that the whole record maps contiguously.
        let first = layout.image_offset_of(logical);
        let last = layout.image_offset_of(logical + size - 1);
        match (first, last) {
            (Some(a), Some(b)) if b.0 == a.0 + size - 1 => Ok(a),
            _ => Err(ImageError::invalid(
                self.start,
                "MFT record location",
                format!("record {record} stored contiguously"),
                "a hole or a split across data runs".to_string(),
            )),
        }
    }

    /// The MFT map, read on first use.
    fn mft_map(&self) -> Result<&attribute::MftMap> {
        if let Some(m) = self.mft.get() {
            return Ok(m);
        }
        let map = attribute::MftMap::open(&self.image, &self.facts()?)?;
        Ok(self.mft.get_or_init(|| Arc::new(map)))
    }

    /// The layout of `file`'s `$DATA` stream `stream`, through the one attribute-layout lookup
    /// (`attribute::attribute_layout`), which follows `$ATTRIBUTE_LIST` wherever the pieces
    /// are. The `ntfs` crate only names the record (path lookups) and its
    /// `$STANDARD_INFORMATION` flags.
    fn layout_of(
        &self,
        _ntfs: &Ntfs,
        _fs: &mut CrateReader,
        file: &NtfsFile<'_>,
        stream: &str,
    ) -> Result<StreamLayout> {
        let record = file.file_record_number();
        let si_flags = file
            .info()
            .map(|si: NtfsStandardInformation| si.file_attributes())
            .unwrap_or(NtfsFileAttributeFlags::empty());
        let layout = attribute::attribute_layout(
            &self.image,
            self.mft_map()?,
            record,
            record::TYPE_DATA,
            stream,
        )?
        .ok_or_else(|| ImageError::NotFound {
            volume: self.start,
            path: format!("record {record} stream {stream:?} ($DATA)"),
        })?;
        let (size, location, flags) = match layout {
            attribute::AttributeLayout::Resident {
                record_offset,
                value_offset,
                len,
                ..
            } => (
                u64::from(len),
                StreamLocation::Resident {
                    image_offset: ImageOffset(record_offset.0 + u64::from(value_offset)),
                    record_offset,
                    len: u64::from(len),
                },
                0,
            ),
            attribute::AttributeLayout::NonResident {
                data_size,
                flags,
                extents,
                ..
            } => (data_size, StreamLocation::NonResident { extents }, flags),
        };
        Ok(StreamLayout {
            file_record: record,
            stream: stream.to_string(),
            size,
            location,
            compressed: flags & record::ATTR_FLAG_COMPRESSED != 0
                || si_flags.contains(NtfsFileAttributeFlags::COMPRESSED),
            sparse: flags & record::ATTR_FLAG_SPARSE != 0
                || si_flags.contains(NtfsFileAttributeFlags::SPARSE_FILE),
            encrypted: flags & record::ATTR_FLAG_ENCRYPTED != 0
                || si_flags.contains(NtfsFileAttributeFlags::ENCRYPTED),
        })
    }
}

/// Runs `f`, converting a panic inside the `ntfs` crate into [`ImageError::NtfsPanic`].
fn guard<R>(volume: ImageOffset, context: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(ImageError::NtfsPanic {
            volume,
            context: context.to_string(),
            message: crate::panics::panic_message(&*payload),
        }),
    }
}

#[cfg(test)]
mod tests;
