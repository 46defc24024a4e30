//! Which NTFS volume holds Windows: the one place that decides it, for inspect, the survey of a
//! master and the tests.

use super::NtfsVolume;
use crate::image::error::Result;
use crate::image::partition::{FileSystemKind, Partition, PartitionTable};
use crate::image::reader::ImageFile;

/// The path whose presence marks an NTFS volume as holding Windows.
pub const WINDOWS_MARKER: &str = r"Windows\System32\config\SYSTEM";

impl NtfsVolume {
    /// Whether this volume holds a Windows installation (it has [`WINDOWS_MARKER`]).
    pub fn holds_windows(&self) -> Result<bool> {
        Ok(self.try_lookup(WINDOWS_MARKER)?.is_some())
    }
}

/// The NTFS partitions of `table`, in table order, each with its volume opened (or the error
/// that prevented it). Lazy: a caller that stops early opens no further volume.
pub fn ntfs_volumes<'a>(
    image: &'a ImageFile,
    table: &'a PartitionTable,
) -> impl Iterator<Item = (&'a Partition, Result<NtfsVolume>)> + 'a {
    table
        .partitions
        .iter()
        .filter(|p| p.file_system == FileSystemKind::Ntfs)
        .map(move |p| (p, NtfsVolume::open(image, p)))
}
