//! One hive file read from the Windows volume and checked end to end: base block, every key,
//! every value's data and the sk list. A hive that passes can be walked by the SID rewrite.

use crate::hive::Hive;
use crate::hive::HIVE_SIZE_LIMIT;
use crate::image::{HiveLocation, NtfsVolume};

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
    pub error: Option<String>,
}

impl HiveCheck {
    fn failed(error: String) -> HiveCheck {
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
        return HiveCheck::failed(format!(
            "it is {} bytes, larger than the {} bytes sidfs reads into memory",
            location.size, HIVE_SIZE_LIMIT
        ));
    }
    let bytes = match volume.read_file(&location.path, "", HIVE_SIZE_LIMIT) {
        Ok(bytes) => bytes,
        Err(e) => return HiveCheck::failed(e.to_string()),
    };
    check_bytes(bytes)
}

/// Checks hive bytes: parse without validation (so that a dirty hive still reports its sequence
/// numbers), then walk every key and value and the sk list.
pub(super) fn check_bytes(bytes: Vec<u8>) -> HiveCheck {
    let (primary, secondary, dirty, error) = match Hive::parse_unvalidated(&bytes) {
        Err(e) => (None, None, false, Some(e.to_string())),
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

/// Visits every key, value, value data and sk cell; the first error, as text.
pub(super) fn walk_everything(hive: &Hive<'_>) -> Result<(), String> {
    if let Some(e) = hive.bins_error() {
        return Err(e.to_string());
    }
    for walked in hive.walk() {
        let walked = walked.map_err(|e| e.to_string())?;
        let values = walked
            .key
            .values()
            .map_err(|e| format!("key {:?}: {e}", walked.path))?;
        for value in values {
            value.data().map_err(|e| {
                format!(
                    "value {:?} of key {:?}: {e}",
                    value.name().to_string_lossy(),
                    walked.path
                )
            })?;
        }
    }
    hive.security_keys().map_err(|e| e.to_string())?;
    Ok(())
}
