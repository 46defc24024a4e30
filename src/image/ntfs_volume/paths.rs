//! Paths on an NTFS volume: lookup (case-insensitive, through the `ntfs` crate's index walk,
//! each directory index checked first), directory listings, and the path of a record.

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::NtfsFileNamespace;
use ntfs::{KnownNtfsFileRecordNumber, Ntfs, NtfsFile};

use super::crate_view::CrateReader;
use super::{attribute, fixup, record, NtfsVolume};
use crate::image::error::{ImageError, Result};
use crate::image::reader::ImageOffset;

/// Longest path (in components) we follow.
const MAX_PATH_COMPONENTS: usize = 64;
/// Most entries we return from one directory listing.
pub const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Offset of the index block size in an `$INDEX_ROOT` value [layout.h INDEX_ROOT].
const INDEX_ROOT_BLOCK_SIZE: usize = 0x08;
/// Largest index block accepted (NTFS writes 4 KiB; the largest cluster is 64 KiB).
const MAX_INDEX_BLOCK: u32 = 64 << 10;

/// One name in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub file_record: u64,
    pub is_directory: bool,
    /// Data size as recorded in the directory index (may lag the file's own record).
    pub size: u64,
}

/// Splits `\Windows\System32` or `Windows/System32` into components.
fn components(path: &str) -> Vec<&str> {
    path.split(['\\', '/']).filter(|c| !c.is_empty()).collect()
}

impl NtfsVolume {
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

    pub(super) fn lookup_in<'n>(
        &self,
        ntfs: &'n Ntfs,
        fs: &mut CrateReader,
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
