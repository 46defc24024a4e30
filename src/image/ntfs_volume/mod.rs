//! An NTFS volume inside the image: facts, path lookup, file content, stream extents as image
//! offsets, journal/hibernation state, registry hive locations.
//!
//! File-system traversal uses the `ntfs` crate (0.4) over a bounded [`PartitionReader`]. That
//! crate can panic on some hostile metadata, so every call into it goes through
//! [`NtfsVolume::guarded`], which turns a panic into [`ImageError::NtfsPanic`]. Positions from
//! the crate are partition offsets; this module converts them to image offsets and checks that
//! they stay inside the partition.

pub mod attribute;
pub mod extent;
pub mod fixup;
pub mod hives;
pub mod log_file;
pub mod mft_scan;
pub mod multi_sector;
pub mod record;

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace, NtfsStandardInformation};
use ntfs::{KnownNtfsFileRecordNumber, Ntfs, NtfsError, NtfsFile, NtfsFileFlags, NtfsReadSeek};

pub use extent::{Extent, StreamLayout, StreamLocation};
pub use hives::{HiveFileKind, HiveLocation, HiveRole};
pub use log_file::LogFileState;

use crate::image::error::{ImageError, Result};
use crate::image::partition::{FileSystemKind, Partition, PartitionTable};
use crate::image::reader::{ImageFile, ImageOffset, PartitionOffset, PartitionReader};

/// Longest path (in components) we follow.
const MAX_PATH_COMPONENTS: usize = 64;
/// Most entries we return from one directory listing.
pub const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Offset of the index block size in an `$INDEX_ROOT` value [layout.h INDEX_ROOT].
const INDEX_ROOT_BLOCK_SIZE: usize = 0x08;
/// Largest index block accepted (NTFS writes 4 KiB; the largest cluster is 64 KiB).
const MAX_INDEX_BLOCK: u32 = 64 << 10;
/// How much of $LogFile we read to find both restart pages (2 × the largest page size).
const LOG_FILE_HEAD: u64 = 2 * 65536;
/// hiberfil.sys is read for its first page only.
const HIBERFIL_HEAD: u64 = 4096;

/// The hibernation file's state. [FORMAT-FACTS §3 "Hibernation / Fast Startup"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HibernationState {
    /// No hiberfil.sys in the root directory.
    Absent,
    /// First four bytes all zero: normal shutdown.
    Clean { size: u64 },
    /// `hibr` (XP) or `HIBR` (Vista+): a hibernated system or Fast Startup image.
    Hibernated { size: u64, signature: [u8; 4] },
    /// `wake`/`WAKE`: an invalidated image, boots normally.
    Wake { size: u64, signature: [u8; 4] },
    /// `RSTR`: a restore was in progress.
    Restore { size: u64 },
    /// Anything else (also: shorter than 4 bytes; ntfs-3g treats < 4096 bytes as unsafe).
    Unknown { size: u64, signature: Vec<u8> },
}

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

/// One name in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub file_record: u64,
    pub is_directory: bool,
    /// Data size as recorded in the directory index (may lag the file's own record).
    pub size: u64,
}

/// Files that a byte-for-byte patcher cannot handle, from a bounded MFT walk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialFileReport {
    pub records_scanned: u64,
    /// True if the walk stopped at the caller's limit before the end of the MFT.
    pub truncated: bool,
    pub encrypted: u64,
    pub compressed: u64,
    /// Up to `max_examples` paths of each kind.
    pub encrypted_examples: Vec<String>,
    pub compressed_examples: Vec<String>,
    /// MFT record numbers of the encrypted files (at most the walk's records).
    pub encrypted_records: Vec<u64>,
    /// Records that could not be parsed (corrupt), counted, not fatal.
    pub unreadable: u64,
}

/// An opened NTFS volume of the image.
pub struct NtfsVolume {
    image: ImageFile,
    start: ImageOffset,
    len: u64,
    ntfs: Ntfs,
    /// Where each MFT record lies, read once by our own parser (`attribute.rs`).
    mft: std::sync::OnceLock<attribute::MftMap>,
}

impl std::fmt::Debug for NtfsVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtfsVolume")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn ntfs_error(volume: ImageOffset, context: &str, e: NtfsError) -> ImageError {
    ImageError::Ntfs {
        volume,
        context: context.to_string(),
        message: e.to_string(),
    }
}

/// Splits `\Windows\System32` or `Windows/System32` into components.
fn components(path: &str) -> Vec<&str> {
    path.split(['\\', '/']).filter(|c| !c.is_empty()).collect()
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
        let mut fs = reader.clone();
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
        Ok(NtfsVolume {
            image: image.clone(),
            start,
            len: partition.len,
            ntfs,
            mft: std::sync::OnceLock::new(),
        })
    }

    /// Image offset of the volume.
    pub fn start(&self) -> ImageOffset {
        self.start
    }

    /// A fresh reader with its own cursor.
    fn reader(&self) -> PartitionReader {
        PartitionReader::new(self.image.clone(), self.start, self.len)
    }

    /// Runs `f` (which calls into the `ntfs` crate), turning a panic into an error.
    fn guarded<R>(
        &self,
        context: &str,
        f: impl FnOnce(&Ntfs, &mut PartitionReader) -> Result<R>,
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

    /// Record number of the file at `path` (case-insensitive; `\` or `/` separators; the
    /// empty path or `\` is the root directory).
    pub fn lookup(&self, path: &str) -> Result<u64> {
        self.guarded("path lookup", |ntfs, fs| {
            self.lookup_in(ntfs, fs, path)
                .map(|f| f.file_record_number())
        })
    }

    /// Like [`lookup`](Self::lookup) but `Ok(None)` when the path does not exist.
    pub fn try_lookup(&self, path: &str) -> Result<Option<u64>> {
        match self.lookup(path) {
            Ok(n) => Ok(Some(n)),
            Err(ImageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn lookup_in<'n>(
        &self,
        ntfs: &'n Ntfs,
        fs: &mut PartitionReader,
        path: &str,
    ) -> Result<NtfsFile<'n>> {
        let parts = components(path);
        if parts.len() > MAX_PATH_COMPONENTS {
            return Err(ImageError::TooLarge {
                what: format!("path {path:?}"),
                size: parts.len() as u64,
                limit: MAX_PATH_COMPONENTS as u64,
            });
        }
        let mut file = ntfs
            .root_directory(fs)
            .map_err(self.err("root directory"))?;
        for (i, part) in parts.iter().enumerate() {
            let not_found = || ImageError::NotFound {
                volume: self.start,
                path: path.to_string(),
            };
            if !file.is_directory() {
                return Err(not_found());
            }
            self.check_directory_index(file.file_record_number())?;
            let record = {
                let index = file
                    .directory_index(fs)
                    .map_err(self.err(&format!("directory index of {}", parts[..i].join("\\"))))?;
                let mut finder = index.finder();
                match NtfsFileNameIndex::find(&mut finder, ntfs, fs, part) {
                    None => return Err(not_found()),
                    Some(Err(e)) => return Err(self.err(&format!("looking up {part:?}"))(e)),
                    Some(Ok(entry)) => entry.file_reference().file_record_number(),
                }
            };
            file = ntfs
                .file(fs, record)
                .map_err(self.err(&format!("MFT record {record} ({part})")))?;
        }
        Ok(file)
    }

    /// Checks the index block size that a directory's `$I30` `$INDEX_ROOT` declares (u32 at
    /// +0x08 of the value [layout.h INDEX_ROOT]) before the `ntfs` crate allocates a buffer of
    /// that size for each index block it reads: a hostile root must be an error, not a
    /// multi-gigabyte allocation (found by fuzzing).
    fn check_directory_index(&self, record: u64) -> Result<()> {
        let Some(attribute::AttributeLayout::Resident {
            record_offset,
            record_size,
            value_offset,
            len,
            ..
        }) = attribute::attribute_layout(
            &self.image,
            self.mft_map()?,
            record,
            record::TYPE_INDEX_ROOT,
            "$I30",
        )?
        else {
            return Ok(());
        };
        let mut rec = self.image.read_vec(
            record_offset,
            u64::from(record_size),
            1 << 16,
            "directory MFT record",
        )?;
        fixup::apply_fixups(&mut rec, record_offset, "directory MFT record")?;
        let at = value_offset as usize + INDEX_ROOT_BLOCK_SIZE;
        let size = match rec.get(at..at + 4) {
            Some(b) if len as usize >= INDEX_ROOT_BLOCK_SIZE + 4 => {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
            _ => return Ok(()),
        };
        if !(512..=MAX_INDEX_BLOCK).contains(&size) || !size.is_power_of_two() {
            return Err(ImageError::invalid(
                ImageOffset(record_offset.0 + at as u64),
                "directory index block size",
                format!("a power of two from 512 to {MAX_INDEX_BLOCK} bytes"),
                format!("{size}"),
            ));
        }
        Ok(())
    }

    /// Lists a directory: one entry per file (DOS 8.3 aliases skipped), in index order.
    pub fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.guarded("directory listing", |ntfs, fs| {
            let dir = self.lookup_in(ntfs, fs, path)?;
            self.check_directory_index(dir.file_record_number())?;
            let index = dir
                .directory_index(fs)
                .map_err(self.err(&format!("directory index of {path}")))?;
            let mut entries = index.entries();
            let mut out = Vec::new();
            while let Some(entry) = entries.next(fs) {
                let entry = entry.map_err(self.err(&format!("entries of {path}")))?;
                let Some(key) = entry.key() else { continue };
                let key = key.map_err(self.err(&format!("entry key in {path}")))?;
                if key.namespace() == NtfsFileNamespace::Dos {
                    continue;
                }
                if out.len() >= MAX_DIR_ENTRIES {
                    return Err(ImageError::TooLarge {
                        what: format!("directory {path}"),
                        size: out.len() as u64,
                        limit: MAX_DIR_ENTRIES as u64,
                    });
                }
                out.push(DirEntry {
                    name: key.name().to_string_lossy(),
                    file_record: entry.file_reference().file_record_number(),
                    is_directory: key.is_directory(),
                    size: key.data_size(),
                });
            }
            Ok(out)
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

    fn read_stream_of(
        &self,
        _ntfs: &Ntfs,
        fs: &mut PartitionReader,
        file: &NtfsFile<'_>,
        path: &str,
        stream: &str,
        limit: u64,
    ) -> Result<Vec<u8>> {
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
        let len = attribute.value_length();
        if len > limit {
            return Err(ImageError::TooLarge {
                what: format!("{path}:{stream}"),
                size: len,
                limit,
            });
        }
        let value = attribute
            .value(fs)
            .map_err(self.err(&format!("$DATA value of {path}")))?;
        let mut buf = vec![0u8; len as usize];
        value
            .attach(fs)
            .read_exact(&mut buf)
            .map_err(|e| ImageError::Ntfs {
                volume: self.start,
                context: format!("reading {path}:{stream}"),
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
        Ok(self.mft.get_or_init(|| map))
    }

    /// The layout of `file`'s `$DATA` stream `stream`, through the one attribute-layout lookup
    /// (`attribute::attribute_layout`), which follows `$ATTRIBUTE_LIST` wherever the pieces
    /// are. The `ntfs` crate only names the record (path lookups) and its
    /// `$STANDARD_INFORMATION` flags.
    fn layout_of(
        &self,
        _ntfs: &Ntfs,
        _fs: &mut PartitionReader,
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

    /// Reads up to `max` bytes from the start of a stream of record `record`.
    fn read_head(&self, record: u64, max: u64) -> Result<Vec<u8>> {
        self.guarded("reading a file head", |ntfs, fs| {
            let file = ntfs
                .file(fs, record)
                .map_err(self.err(&format!("MFT record {record}")))?;
            let item = match file.data(fs, "") {
                None => return Ok(Vec::new()),
                Some(r) => r.map_err(self.err("$DATA"))?,
            };
            let attribute = item.to_attribute().map_err(self.err("$DATA"))?;
            let len = attribute.value_length().min(max);
            let mut buf = vec![0u8; len as usize];
            let mut value = attribute.value(fs).map_err(self.err("$DATA value"))?;
            let mut done = 0;
            while done < buf.len() {
                let n = value
                    .read(fs, &mut buf[done..])
                    .map_err(self.err("$DATA read"))?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            buf.truncate(done);
            Ok(buf)
        })
    }

    /// The $LogFile restart area: clean or not, and the restart page version.
    pub fn log_file_state(&self) -> Result<LogFileState> {
        let record = KnownNtfsFileRecordNumber::LogFile as u64;
        let layout = self.stream_layout_by_record(record, "")?;
        let head = self.read_head(record, LOG_FILE_HEAD)?;
        let at = |logical: u64| layout.image_offset_of(logical).unwrap_or(self.start);
        if !head.is_empty() && head.iter().all(|&b| b == 0xFF) {
            return Ok(log_file::emptied_state(at(0)));
        }
        let first = log_file::parse_restart_page(&head, at(0));
        // The second restart page sits at the system page size.
        let second_offset = match &first {
            Ok(s) => s.system_page_size as u64,
            Err(_) => 4096,
        };
        let second = head
            .get(second_offset as usize..)
            .ok_or(())
            .map_err(|_| ImageError::Truncated {
                offset: at(0),
                what: "$LogFile",
                needed: second_offset,
                available: head.len() as u64,
            })
            .and_then(|page| log_file::parse_restart_page(page, at(second_offset)));
        match (first, second) {
            (Ok(a), Ok(b)) => Ok(if b.current_lsn > a.current_lsn { b } else { a }),
            (Ok(a), Err(_)) => Ok(a),
            (Err(_), Ok(b)) => Ok(b),
            (Err(a), Err(_)) => Err(a),
        }
    }

    /// The hiberfil.sys state (first four bytes) and size.
    pub fn hibernation_state(&self) -> Result<HibernationState> {
        let Some(record) = self.try_lookup("hiberfil.sys")? else {
            return Ok(HibernationState::Absent);
        };
        let layout = self.stream_layout_by_record(record, "")?;
        let size = layout.size;
        let head = self.read_head(record, HIBERFIL_HEAD)?;
        if head.len() < 4 {
            return Ok(HibernationState::Unknown {
                size,
                signature: head,
            });
        }
        let signature: [u8; 4] = head[..4].try_into().expect("4 bytes");
        Ok(match &signature {
            b"hibr" | b"HIBR" => HibernationState::Hibernated { size, signature },
            b"wake" | b"WAKE" => HibernationState::Wake { size, signature },
            b"RSTR" => HibernationState::Restore { size },
            [0, 0, 0, 0] => HibernationState::Clean { size },
            _ => HibernationState::Unknown {
                size,
                signature: signature.to_vec(),
            },
        })
    }

    /// Number of MFT records ($MFT data size / record size).
    pub fn mft_record_count(&self) -> Result<u64> {
        Ok(self.mft_layout()?.size / self.ntfs.file_record_size() as u64)
    }

    /// Walks at most `max_records` MFT records and counts EFS-encrypted and compressed files
    /// (from $STANDARD_INFORMATION), with up to `max_examples` paths of each.
    pub fn scan_special_files(
        &self,
        max_records: u64,
        max_examples: usize,
    ) -> Result<SpecialFileReport> {
        let total = self.mft_record_count()?;
        let mut report = SpecialFileReport {
            truncated: total > max_records,
            ..Default::default()
        };
        // Records 0–15 are metadata files ($MFT, $LogFile...), never user data.
        for record in 16..total.min(max_records) {
            report.records_scanned += 1;
            let flags = self.guarded("MFT walk", |ntfs, fs| {
                let file = ntfs.file(fs, record).map_err(self.err("MFT record"))?;
                if !file.flags().contains(NtfsFileFlags::IN_USE) {
                    return Ok(None);
                }
                // Extension records (base reference != 0) have no $STANDARD_INFORMATION.
                Ok(file.info().ok().map(|si| si.file_attributes()))
            });
            let flags = match flags {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(_) => {
                    report.unreadable += 1;
                    continue;
                }
            };
            if flags.contains(NtfsFileAttributeFlags::ENCRYPTED) {
                report.encrypted += 1;
                report.encrypted_records.push(record);
                if report.encrypted_examples.len() < max_examples {
                    report.encrypted_examples.push(self.path_of(record));
                }
            }
            if flags.contains(NtfsFileAttributeFlags::COMPRESSED) {
                report.compressed += 1;
                if report.compressed_examples.len() < max_examples {
                    report.compressed_examples.push(self.path_of(record));
                }
            }
        }
        Ok(report)
    }

    /// The value of a file's `$EFS` attribute (`$LOGGED_UTILITY_STREAM` named `$EFS`: the EFS
    /// metadata of an encrypted file), `None` if it has none; at most `limit` bytes.
    pub fn efs_of(&self, record: u64, limit: u64) -> Result<Option<Vec<u8>>> {
        self.guarded("$EFS attribute", |ntfs, fs| {
            let file = ntfs.file(fs, record).map_err(self.err("MFT record"))?;
            let mut attributes = file.attributes();
            while let Some(item) = attributes.next(fs) {
                let item = item.map_err(self.err("attribute"))?;
                let attribute = item.to_attribute().map_err(self.err("attribute"))?;
                if attribute.ty().ok() != Some(ntfs::NtfsAttributeType::LoggedUtilityStream)
                    || attribute.name().map_or(true, |n| n != "$EFS")
                {
                    continue;
                }
                let len = attribute.value_length();
                if len > limit {
                    return Err(ImageError::TooLarge {
                        what: format!("$EFS of MFT record {record}"),
                        size: len,
                        limit,
                    });
                }
                let value = attribute.value(fs).map_err(self.err("$EFS value"))?;
                let mut buf = vec![0u8; len as usize];
                value
                    .attach(fs)
                    .read_exact(&mut buf)
                    .map_err(|e| ImageError::Ntfs {
                        volume: self.start,
                        context: format!("reading $EFS of MFT record {record}"),
                        message: e.to_string(),
                    })?;
                return Ok(Some(buf));
            }
            Ok(None)
        })
    }

    /// Best-effort path of a record from its Win32 $FILE_NAME parents (for messages).
    pub fn path_of(&self, record: u64) -> String {
        let mut parts = Vec::new();
        let mut current = record;
        for _ in 0..MAX_PATH_COMPONENTS {
            if current == KnownNtfsFileRecordNumber::RootDirectory as u64 {
                break;
            }
            let step = self.guarded("path of a record", |ntfs, fs| {
                let file = ntfs.file(fs, current).map_err(self.err("MFT record"))?;
                let mut best = None;
                for namespace in [
                    NtfsFileNamespace::Win32AndDos,
                    NtfsFileNamespace::Win32,
                    NtfsFileNamespace::Posix,
                ] {
                    if let Some(Ok(name)) = file.name(fs, Some(namespace), None) {
                        best = Some(name);
                        break;
                    }
                }
                let name = match best {
                    Some(n) => n,
                    None => match file.name(fs, None, None) {
                        Some(Ok(n)) => n,
                        _ => return Ok(None),
                    },
                };
                Ok(Some((
                    name.name().to_string_lossy(),
                    name.parent_directory_reference().file_record_number(),
                )))
            });
            match step {
                Ok(Some((name, parent))) => {
                    parts.push(name);
                    current = parent;
                }
                _ => {
                    parts.push(format!("<record {current}>"));
                    break;
                }
            }
        }
        parts.reverse();
        format!("\\{}", parts.join("\\"))
    }
}

/// Runs `f`, converting a panic inside the `ntfs` crate into [`ImageError::NtfsPanic`].
fn guard<R>(volume: ImageOffset, context: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(ImageError::NtfsPanic {
            volume,
            context: context.to_string(),
            message: panic_message(payload),
        }),
    }
}

/// The NTFS partition that holds `Windows\System32\config\SYSTEM`, or `None`.
///
/// NTFS partitions that fail to open are skipped; if no Windows volume is found and one of
/// them failed, that error is returned (a damaged Windows volume is not "no Windows").
pub fn find_windows_volume(image: &ImageFile) -> Result<Option<(Partition, NtfsVolume)>> {
    let table = PartitionTable::read(image)?;
    let mut first_error = None;
    for partition in table.partitions {
        if partition.file_system != FileSystemKind::Ntfs {
            continue;
        }
        let found = NtfsVolume::open(image, &partition).and_then(|v| {
            v.try_lookup(r"Windows\System32\config\SYSTEM")
                .map(|r| r.map(|_| v))
        });
        match found {
            Ok(Some(volume)) => return Ok(Some((partition, volume))),
            Ok(None) => {}
            Err(e) => {
                log::warn!(
                    "NTFS partition {} at {}: {e}",
                    partition.index,
                    partition.start
                );
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
