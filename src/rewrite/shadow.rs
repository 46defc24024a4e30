//! Volume Shadow Copy stores: what a clone does with them (docs/SEMANTICS.md, "Shadow copies").
//!
//! Facts [libyal libvshadow documentation, "Volume Shadow Snapshot (VSS) format"]: a volume's
//! shadow copies live in `System Volume Information`, the catalog in the file named
//! `{3808876b-c176-4e48-b7ae-04046e6cc752}` and each shadow copy's store (the old contents of
//! every block written since the snapshot) in a file named `{GUID}` followed by that identifier.
//! The volume header at volume offset 0x1e00 (the identifier as a little-endian GUID, version,
//! record type 1, ..., the catalog's volume offset at 0x30) leads to the catalog: 16 KiB blocks,
//! each a 128-byte header (the identifier, version, record type 2, ..., this block's offset at
//! 0x20 and the next block's at 0x28, 0 for the last) and 128-byte entries whose first 8 bytes
//! are the entry type (0x02: a shadow copy's volume information, one per shadow copy; 0x03: its
//! store information). Windows writes the catalog with volume I/O, so the catalog file's NTFS
//! valid data length may be 0: it is read from the clusters.
//! A store is searched as one logical stream (its runs in file order, joined; holes as zeros), so
//! a SID split across two runs is found.
//! A store's blocks are raw copies of the volume's earlier blocks: hive bins, `$Secure`, MFT
//! records, with the SID wherever the volume had it.
//!
//! sidfs cannot rewrite those blocks faithfully: they are pieces of hives and `$Secure` without
//! the whole structure around them (lh hashes, `$SDS` hashes and `$SDH` order would go stale), and
//! a restore of such a shadow copy on a clone would bring the master's identity back. So a store
//! that holds the old SID is refused (docs/SEMANTICS.md invariant 8) with the advice to delete the shadow
//! copies before capturing; a store without it (a data disk whose snapshots predate any SID on
//! it) is kept as it is.

#![forbid(unsafe_code)]

use super::error::RewriteError;
use super::SidMapping;
use crate::image::{ImageFile, ImageOffset, NtfsVolume, StreamLayout, StreamLocation};

/// The directory that holds the catalog and the stores.
pub const SVI_DIR: &str = "System Volume Information";
/// The VSS identifier: the catalog's file name, and the suffix of every store file's name.
pub const VSS_IDENTIFIER: &str = "{3808876b-c176-4e48-b7ae-04046e6cc752}";
/// What the user does about shadow copies on a master.
pub const ADVICE: &str = "delete them in the master before capturing it (vssadmin delete shadows /all, as administrator) so that no clone can restore the master's identity from them";
/// Bytes read at a time when a store is searched for the SID.
const CHUNK: usize = 1 << 20;
/// Overlap between chunks: longer than the longest SID form (UTF-16, 2 x 50 bytes and a check).
const OVERLAP: usize = 128;

/// The VSS identifier {3808876b-c176-4e48-b7ae-04046e6cc752} as stored (a little-endian GUID).
pub const VSS_GUID_BYTES: [u8; 16] = [
    0x6b, 0x87, 0x08, 0x38, 0x76, 0xc1, 0x48, 0x4e, 0xb7, 0xae, 0x04, 0x04, 0x6e, 0x6c, 0xc7, 0x52,
];
/// Volume offset of the VSS volume header.
pub const VOLUME_HEADER_AT: u64 = 0x1e00;
const CATALOG_BLOCK: usize = 0x4000;
const CATALOG_ENTRY: usize = 128;
/// At most this many catalog blocks are followed (a hostile chain ends here).
const CATALOG_BLOCKS_MAX: usize = 256;

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |x| u64::from_le_bytes(x.try_into().unwrap_or([0; 8])))
}

/// The number of shadow copies the volume's VSS catalog lists (entries of type 0x02), or `None`
/// when the volume has no VSS volume header. `start`/`len`: the volume in the image.
pub fn catalog_shadow_copies(image: &ImageFile, start: u64, len: u64) -> Option<usize> {
    let mut header = [0u8; 128];
    image
        .read_exact_at(
            ImageOffset(start.checked_add(VOLUME_HEADER_AT)?),
            &mut header,
            "the VSS volume header",
        )
        .ok()?;
    if header[..16] != VSS_GUID_BYTES
        || u32::from_le_bytes([header[20], header[21], header[22], header[23]]) != 1
    {
        return None;
    }
    let mut at = u64_at(&header, 0x30);
    let mut count = 0;
    let mut block = vec![0u8; CATALOG_BLOCK];
    for _ in 0..CATALOG_BLOCKS_MAX {
        if at == 0 || at.checked_add(CATALOG_BLOCK as u64)? > len {
            break;
        }
        image
            .read_exact_at(
                ImageOffset(start.checked_add(at)?),
                &mut block,
                "the VSS catalog",
            )
            .ok()?;
        if block[..16] != VSS_GUID_BYTES {
            break;
        }
        count += block[CATALOG_ENTRY..]
            .chunks_exact(CATALOG_ENTRY)
            .filter(|e| u64_at(e, 0) == 2)
            .count();
        let next = u64_at(&block, 0x28);
        if next <= at {
            break;
        }
        at = next;
    }
    Some(count)
}

/// One shadow copy store file.
pub struct ShadowStore {
    /// Path on its volume.
    pub path: String,
    content: StoreContent,
}

/// Where a store's bytes are, as far as the volume could say.
enum StoreContent {
    /// Clusters (and holes) outside the MFT.
    Runs(StreamLayout),
    /// A value inside its MFT record, read through the volume.
    Resident(Vec<u8>),
    /// The volume could not say (its layout or resident value is unreadable).
    Unreadable(String),
}

/// Largest resident value read (a resident value fits an MFT record).
const RESIDENT_LIMIT: u64 = 64 << 10;

/// The shadow copy store files of a volume (not the catalog), in directory order. A store whose
/// layout cannot be read is listed too: searching it is an error (fail closed).
pub fn shadow_stores(volume: &NtfsVolume) -> Vec<ShadowStore> {
    let Ok(entries) = volume.list_dir(SVI_DIR) else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter(|e| {
            !e.is_directory
                && e.name.len() > VSS_IDENTIFIER.len()
                && e.name.starts_with('{')
                && e.name.to_ascii_lowercase().ends_with(VSS_IDENTIFIER)
        })
        .map(|e| {
            let path = format!(r"{SVI_DIR}\{}", e.name);
            let content = match volume.stream_layout(&path, "") {
                Ok(layout) if !layout.is_plain() || !layout.extents().is_empty() => {
                    StoreContent::Runs(layout)
                }
                Ok(layout) if matches!(layout.location, StreamLocation::Resident { .. }) => {
                    match volume.read_file(&path, "", RESIDENT_LIMIT) {
                        Ok(bytes) => StoreContent::Resident(bytes),
                        Err(e) => StoreContent::Unreadable(e.to_string()),
                    }
                }
                Ok(layout) => StoreContent::Runs(layout),
                Err(e) => StoreContent::Unreadable(e.to_string()),
            };
            ShadowStore { path, content }
        })
        .collect()
}

/// Why a shadow copy store cannot be searched for the old SID.
#[derive(Debug)]
pub enum ShadowSearchError {
    /// The store is compressed or encrypted.
    NotPlain { path: String },
    /// An extent of the store ends past the image.
    ExtentPastImage { path: String },
    /// The volume cannot say where the store's bytes are.
    Layout { path: String, reason: String },
    /// The store's clusters cannot be read.
    Read {
        path: String,
        source: crate::image::ImageError,
    },
}

impl std::fmt::Display for ShadowSearchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShadowSearchError::NotPlain { path } => write!(
                f,
                "{path} is compressed or encrypted: its bytes cannot be searched"
            ),
            ShadowSearchError::Layout { path, reason } => {
                write!(f, "{path} cannot be located to be searched ({reason})")
            }
            ShadowSearchError::ExtentPastImage { path } => {
                write!(f, "{path}: extent past the image")
            }
            ShadowSearchError::Read { path, source } => write!(f, "{path}: {source}"),
        }
    }
}

impl std::error::Error for ShadowSearchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShadowSearchError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One piece of a store read as a logical stream: clusters at an image offset, or zeros (a
/// sparse run, or a stretch no run covers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    Clusters { at: u64, len: u64 },
    Zeros(u64),
}

/// The store's bytes `0..size` in file order: its runs sorted by stream offset, clipped to the
/// data size, with holes and uncovered stretches as zeros. A run that overlaps the one before it
/// (a hostile run list) contributes only what lies past it.
fn pieces(layout: &StreamLayout) -> Vec<Piece> {
    let size = layout.size;
    let mut extents = layout.extents().to_vec();
    extents.sort_by_key(|e| e.logical_offset);
    let mut out = Vec::new();
    let mut pos = 0u64;
    for e in extents {
        let end = e.logical_offset.saturating_add(e.len).min(size);
        if end <= pos {
            continue;
        }
        if e.logical_offset > pos {
            out.push(Piece::Zeros(e.logical_offset - pos));
            pos = e.logical_offset;
        }
        let skip = pos - e.logical_offset;
        out.push(match e.image_offset {
            Some(at) => Piece::Clusters {
                at: at.0.saturating_add(skip),
                len: end - pos,
            },
            None => Piece::Zeros(end - pos),
        });
        pos = end;
    }
    if pos < size {
        out.push(Piece::Zeros(size - pos));
    }
    out
}

/// Whether a store holds the old SID in any form, read as one logical stream (its runs in file
/// order, joined, so that a SID split across two runs far apart on the volume is seen), `CHUNK`
/// bytes at a time with the last `OVERLAP` bytes carried into the next window, runs or not. Holes
/// are zeros; a long one is searched as `2 * OVERLAP` zeros, which holds every window a SID form
/// (shorter than `OVERLAP`) could match in. A store that cannot be searched (compressed or
/// encrypted, or unreadable) is an error. A resident store is searched in its value.
pub fn store_holds_sid(
    image: &ImageFile,
    store: &ShadowStore,
    map: &SidMapping,
) -> Result<bool, ShadowSearchError> {
    let layout = match &store.content {
        StoreContent::Runs(layout) => layout,
        StoreContent::Resident(bytes) => return Ok(!map.find_all(bytes, true).is_empty()),
        StoreContent::Unreadable(reason) => {
            return Err(ShadowSearchError::Layout {
                path: store.path.clone(),
                reason: reason.clone(),
            })
        }
    };
    if !layout.is_plain() {
        return Err(ShadowSearchError::NotPlain {
            path: store.path.clone(),
        });
    }
    let pieces = pieces(layout);
    let mut buf = vec![0u8; OVERLAP + CHUNK];
    let mut kept = 0usize;
    for (i, piece) in pieces.iter().enumerate() {
        let (clusters_at, len) = match *piece {
            Piece::Clusters { at, len } => (Some(at), len),
            Piece::Zeros(len) => (None, len.min(2 * OVERLAP as u64)),
        };
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from(len - done).map_or(CHUNK, |left| left.min(CHUNK));
            let window = &mut buf[kept..kept + n];
            match clusters_at {
                Some(at) => {
                    let at =
                        at.checked_add(done)
                            .ok_or_else(|| ShadowSearchError::ExtentPastImage {
                                path: store.path.clone(),
                            })?;
                    image
                        .read_exact_at(ImageOffset(at), window, "a shadow copy store")
                        .map_err(|source| ShadowSearchError::Read {
                            path: store.path.clone(),
                            source,
                        })?;
                }
                None => window.fill(0),
            }
            done += n as u64;
            let end = kept + n;
            let last = i + 1 == pieces.len() && done >= len;
            if !map.find_all(&buf[..end], last).is_empty() {
                return Ok(true);
            }
            kept = end.min(OVERLAP);
            buf.copy_within(end - kept..end, 0);
        }
    }
    Ok(false)
}

/// Refuses (the error is the one line) when a shadow copy store of any volume of the survey
/// holds the old SID; logs the stores that do not.
pub fn check_shadow_copies(
    survey: &super::survey::WindowsSurvey,
    map: &SidMapping,
) -> Result<(), RewriteError> {
    for part in &survey.volumes {
        let stores = shadow_stores(&part.volume);
        let (partition, count) = (part.partition.index, stores.len());
        for s in &stores {
            let holds = store_holds_sid(&survey.image, s, map).map_err(|reason| {
                RewriteError::ShadowUnsearchable {
                    partition,
                    stores: count,
                    reason,
                }
            })?;
            if holds {
                return Err(RewriteError::ShadowHoldsSid {
                    partition,
                    stores: count,
                    store: s.path.clone(),
                });
            }
            log::info!("{}: no machine SID in it, kept as it is", s.path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Extent;
    use crate::sid::MachineSid;
    use crate::testutil::TempDir;

    fn mapping() -> SidMapping {
        SidMapping::new(
            MachineSid::new(1806060109, 1839359715, 529511253),
            MachineSid::new(1111111111, 2222222222, 333333333),
        )
        .unwrap()
    }

    fn store(size: u64, extents: Vec<Extent>) -> ShadowStore {
        ShadowStore {
            path: "store".into(),
            content: StoreContent::Runs(StreamLayout {
                file_record: 64,
                stream: String::new(),
                size,
                location: StreamLocation::NonResident { extents },
                compressed: false,
                sparse: false,
                encrypted: false,
            }),
        }
    }

    fn layout(s: &ShadowStore) -> &StreamLayout {
        match &s.content {
            StoreContent::Runs(l) => l,
            _ => unreachable!("the tests build run layouts"),
        }
    }

    fn extent(logical_offset: u64, len: u64, at: Option<u64>) -> Extent {
        Extent {
            logical_offset,
            len,
            image_offset: at.map(ImageOffset),
        }
    }

    /// The binary SID (its 12-byte sub-authority triple) cut at `cut`: the head ends run 1, the
    /// tail starts run 2, which lies *before* run 1 on the "volume" (the image) and far from it.
    fn split_image(dir: &TempDir, cut: usize, bytes: &[u8]) -> (ImageFile, ShadowStore) {
        const RUN1_AT: usize = 3 << 20;
        const RUN2_AT: usize = 4096;
        const RUN1: usize = (1 << 20) + 3000;
        let mut img = vec![0x5au8; 5 << 20];
        img[RUN1_AT + RUN1 - cut..RUN1_AT + RUN1].copy_from_slice(&bytes[..cut]);
        img[RUN2_AT..RUN2_AT + bytes.len() - cut].copy_from_slice(&bytes[cut..]);
        let path = dir.path("img");
        std::fs::write(&path, &img).unwrap();
        let s = store(
            RUN1 as u64 + 8192,
            vec![
                extent(RUN1 as u64, 8192, Some(RUN2_AT as u64)),
                extent(0, RUN1 as u64, Some(RUN1_AT as u64)),
            ],
        );
        (ImageFile::open(&path).unwrap(), s)
    }

    fn sid_binary() -> Vec<u8> {
        [1806060109u32, 1839359715, 529511253]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    /// Prove that a SID whose bytes straddle two runs, not adjacent on the volume and listed out
    /// of file order, is found at every cut, in binary and in UTF-16, and that the same runs
    /// without it are clean.
    #[test]
    fn a_sid_split_across_two_runs_is_found() {
        let dir = TempDir::new("shadow-split");
        let map = mapping();
        let utf16: Vec<u8> = "S-1-5-21-1806060109-1839359715-529511253-500"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        for bytes in [sid_binary(), utf16] {
            for cut in 1..bytes.len() {
                let (image, s) = split_image(&dir, cut, &bytes);
                assert!(store_holds_sid(&image, &s, &map).unwrap(), "cut at {cut}");
            }
        }
        let (image, s) = split_image(&dir, 6, &[0x5a; 12]);
        assert!(!store_holds_sid(&image, &s, &map).unwrap());
    }

    /// Prove that holes are searched as zeros: a SID form ending in zero bytes is found when its
    /// zeros are a hole's, and a long hole is not read in full (the store is 1 TiB).
    #[test]
    fn holes_read_as_zeros() {
        let dir = TempDir::new("shadow-holes");
        let map = mapping();
        let utf16: Vec<u8> = "S-1-5-21-1806060109-1839359715-529511253"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        // The last code unit's high byte (0) is in the hole, and a following 0 0 says "not a
        // digit".
        let head = &utf16[..utf16.len() - 1];
        let mut img = vec![0x5au8; 8192];
        img[4096 - head.len()..4096].copy_from_slice(head);
        let path = dir.path("img");
        std::fs::write(&path, &img).unwrap();
        let image = ImageFile::open(&path).unwrap();
        let s = store(
            1 << 40,
            vec![extent(0, 4096, Some(0)), extent(4096, 1 << 30, None)],
        );
        assert_eq!(
            pieces(layout(&s)),
            vec![
                Piece::Clusters { at: 0, len: 4096 },
                Piece::Zeros(1 << 30),
                Piece::Zeros((1 << 40) - 4096 - (1 << 30)),
            ]
        );
        assert!(store_holds_sid(&image, &s, &map).unwrap());
        let clean = store(1 << 40, vec![extent(4096, 4096, Some(4096))]);
        assert!(!store_holds_sid(&image, &clean, &map).unwrap());
    }

    /// Prove that overlapping runs (a hostile run list) and runs past the data size are clipped.
    #[test]
    fn overlapping_runs_are_clipped() {
        let s = store(
            10000,
            vec![
                extent(0, 8192, Some(1 << 20)),
                extent(4096, 8192, Some(2 << 20)),
            ],
        );
        assert_eq!(
            pieces(layout(&s)),
            vec![
                Piece::Clusters {
                    at: 1 << 20,
                    len: 8192
                },
                Piece::Clusters {
                    at: (2 << 20) + 4096,
                    len: 10000 - 8192
                },
            ]
        );
    }
}
