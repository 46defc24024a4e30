//! Whole-disk image understanding: partition maps, NTFS volumes.
//!
//! Data flows one way: [`reader::ImageFile`] (positional reads of the master) →
//! [`partition::PartitionTable`] (MBR, GPT, or a bare volume) → [`ntfs_volume::NtfsVolume`]
//! (files, extents as image offsets, volume state, registry hive locations).
#![forbid(unsafe_code)]

pub mod error;
pub mod ntfs_volume;
pub mod partition;
pub mod reader;

pub use error::{ImageError, Result};

pub use ntfs_volume::{
    ntfs_volumes, Extent, HiveFileKind, HiveLocation, HiveRole, NtfsVolume, StreamLayout,
    StreamLocation, WINDOWS_MARKER,
};
pub use partition::{FileSystemKind, Partition, PartitionTable, PartitionTableKind};
pub use reader::{open_disk, ImageFile, ImageOffset, OpenedDisk, PartitionOffset, PartitionReader};
