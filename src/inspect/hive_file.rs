//! One hive file read from the Windows volume and checked end to end: base block, every key,
//! every value's data and the sk list. A hive that passes can be walked by the SID rewrite.

use std::fmt;

use crate::hive::HIVE_SIZE_LIMIT;
use crate::hive::{Hive, HiveError};
use crate::image::{HiveLocation, ImageError, NtfsVolume};

/// Why a hive cannot be read or walked.
#[derive(Debug)]
pub(super) enum HiveCheckError {
    /// The file is larger than [`HIVE_SIZE_LIMIT`].
    TooLarge { size: u64 },
    /// The file cannot be read from the volume.
    Unreadable(ImageError),
    /// The base block, a bin or the sk list is broken.
    Structure(HiveError),
    /// A key's value list is broken.
    Values { key: String, source: Box<HiveError> },
    /// A value's data cannot be followed.
    ValueData {
        value: String,
        key: String,
        source: Box<HiveError>,
    },
}

impl fmt::Display for HiveCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HiveCheckError::TooLarge { size } => write!(
                f,
                "it is {size} bytes, larger than the {HIVE_SIZE_LIMIT} bytes sidfs reads into memory"
            ),
            HiveCheckError::Unreadable(e) => write!(f, "{e}"),
            HiveCheckError::Structure(e) => write!(f, "{e}"),
            HiveCheckError::Values { key, source } => write!(f, "key {key:?}: {source}"),
            HiveCheckError::ValueData { value, key, source } => {
                write!(f, "value {value:?} of key {key:?}: {source}")
            }
        }
    }
}

impl std::error::Error for HiveCheckError {}

/// What reading and walking one hive found.
#[derive(Debug)]
pub(super) struct HiveCheck {
    /// The file's bytes (empty when it could not be read).
    pub bytes: Vec<u8>,
    pub primary_sequence: Option<u32>,
    pub secondary_sequence: Option<u32>,
    /// Sequence numbers differ or the base-block checksum is wrong.
    pub dirty: bool,
    /// Why the hive cannot be read or walked.
    pub error: Option<HiveCheckError>,
}

impl HiveCheck {
    fn failed(error: HiveCheckError) -> HiveCheck {
        HiveCheck {
            bytes: Vec::new(),
            primary_sequence: None,
            secondary_sequence: None,
            dirty: false,
            error: Some(error),
        }
    }
}

/// Reads the hive at `location` (refusing files above [`HIVE_SIZE_LIMIT`]) and checks it.
pub(super) fn read_and_check(volume: &NtfsVolume, location: &HiveLocation) -> HiveCheck {
    if location.size > HIVE_SIZE_LIMIT {
        return HiveCheck::failed(HiveCheckError::TooLarge {
            size: location.size,
        });
    }
    let bytes = match volume.read_file(&location.path, "", HIVE_SIZE_LIMIT) {
        Ok(bytes) => bytes,
        Err(e) => return HiveCheck::failed(HiveCheckError::Unreadable(e)),
    };
    check_bytes(bytes)
}

/// Checks hive bytes: parse without validation (so that a dirty hive still reports its sequence
/// numbers), then walk every key and value and the sk list.
pub(super) fn check_bytes(bytes: Vec<u8>) -> HiveCheck {
    let (primary, secondary, dirty, error) = match Hive::parse_unvalidated(&bytes) {
        Err(e) => (None, None, false, Some(HiveCheckError::Structure(e))),
        Ok(hive) => {
            let base = hive.base_block();
            (
                Some(base.primary_sequence),
                Some(base.secondary_sequence),
                hive.is_dirty(),
                walk_everything(&hive).err(),
            )
        }
    };
    HiveCheck {
        bytes,
        primary_sequence: primary,
        secondary_sequence: secondary,
        dirty,
        error,
    }
}

/// Visits every key, value, value data and sk cell; the first error.
pub(super) fn walk_everything(hive: &Hive<'_>) -> Result<(), HiveCheckError> {
    if let Some(e) = hive.bins_error() {
        return Err(HiveCheckError::Structure(e.clone()));
    }
    for walked in hive.walk() {
        let walked = walked.map_err(HiveCheckError::Structure)?;
        let values = walked
            .key
            .values()
            .map_err(|source| HiveCheckError::Values {
                key: walked.path.clone(),
                source: Box::new(source),
            })?;
        for value in values {
            value.data().map_err(|source| HiveCheckError::ValueData {
                value: value.name().to_string_lossy().to_string(),
                key: walked.path.clone(),
                source: Box::new(source),
            })?;
        }
    }
    hive.security_keys().map_err(HiveCheckError::Structure)?;
    Ok(())
}
