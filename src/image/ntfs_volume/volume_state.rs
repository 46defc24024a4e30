//! What state an NTFS volume is in: its journal ($LogFile restart area), hibernation
//! (hiberfil.sys), and the EFS-encrypted and compressed files a byte-level patcher cannot
//! rewrite.

use ntfs::structured_values::NtfsFileAttributeFlags;
use ntfs::{KnownNtfsFileRecordNumber, NtfsFileFlags, NtfsReadSeek};

use super::{log_file, LogFileState, NtfsVolume};
use crate::image::error::{ImageError, Result};

/// How much of $LogFile we read to find both restart pages (2 × the largest page size).
const LOG_FILE_HEAD: u64 = 2 * 65536;
/// hiberfil.sys is read for its first page only.
const HIBERFIL_HEAD: u64 = 4096;

/// The hibernation file's state. [docs/FORMAT-FACTS.md §3 "Hibernation / Fast Startup"]
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

impl NtfsVolume {
    /// Reads up to `max` bytes from the start of a stream of record `record`.
    fn read_head(&self, record: u64, max: u64) -> Result<Vec<u8>> {
        match self.read_data(record, "", max, true, &format!("record {record}")) {
            Ok(Some(bytes)) => return Ok(bytes),
            Ok(None) => {}
            Err(ImageError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
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
                let what = format!("$EFS of MFT record {record}");
                return self
                    .read_attribute_value(fs, &attribute, limit, &what, "$EFS value")
                    .map(Some);
            }
            Ok(None)
        })
    }
}
