//! Where a stream's bytes lie in the image.

use crate::image::reader::ImageOffset;

/// A piece of a stream: `len` bytes at stream offset `logical_offset` are stored at
/// `image_offset`, or are a hole (sparse run, reads as zeros) when `image_offset` is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub logical_offset: u64,
    pub len: u64,
    pub image_offset: Option<ImageOffset>,
}

/// Where a stream's value is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamLocation {
    /// Inside the MFT record. `image_offset` is where the value starts in the image. On disk,
    /// the last two bytes of each 512-byte block of the record hold the update sequence number
    /// instead of the data (see `fixup.rs`); `record_offset` is the record's image offset, so
    /// a patcher can tell which bytes those are.
    Resident {
        image_offset: ImageOffset,
        record_offset: ImageOffset,
        len: u64,
    },
    /// Data runs outside the MFT, clipped to the stream's data size. For a compressed stream
    /// these are the raw (compressed) clusters, not a byte-for-byte map of the content.
    NonResident { extents: Vec<Extent> },
}

/// A stream's location and the flags that decide whether it can be patched in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLayout {
    /// MFT record number of the file.
    pub file_record: u64,
    /// Stream name ("" for the unnamed $DATA).
    pub stream: String,
    /// Data size in bytes.
    pub size: u64,
    pub location: StreamLocation,
    /// From the $DATA attribute flags (0x0001) or $STANDARD_INFORMATION (0x0800).
    pub compressed: bool,
    /// From the attribute flags (0x8000) or $STANDARD_INFORMATION (0x0200).
    pub sparse: bool,
    /// From the attribute flags (0x4000) or $STANDARD_INFORMATION (0x4000, EFS).
    pub encrypted: bool,
}

impl StreamLayout {
    /// The non-resident extents (empty for a resident stream).
    pub fn extents(&self) -> &[Extent] {
        match &self.location {
            StreamLocation::NonResident { extents } => extents,
            StreamLocation::Resident { .. } => &[],
        }
    }

    /// Maps a stream offset to its image offset (`None` in a hole, past the end, or for a
    /// resident stream use its `image_offset`).
    pub fn image_offset_of(&self, logical: u64) -> Option<ImageOffset> {
        match &self.location {
            StreamLocation::Resident {
                image_offset, len, ..
            } => (logical < *len).then(|| ImageOffset(image_offset.0 + logical)),
            StreamLocation::NonResident { extents } => extents
                .iter()
                .find(|e| logical >= e.logical_offset && logical - e.logical_offset < e.len)
                .and_then(|e| {
                    e.image_offset
                        .map(|o| ImageOffset(o.0 + (logical - e.logical_offset)))
                }),
        }
    }

    /// True if every byte of the stream is stored uncompressed and unencrypted at a known
    /// image offset, i.e. it can be patched byte for byte.
    pub fn is_plain(&self) -> bool {
        !self.compressed && !self.encrypted
    }
}
