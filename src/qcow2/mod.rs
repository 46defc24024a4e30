//! A minimal qcow2 version 3 writer: an overlay image over a raw backing file that holds only
//! the guest clusters where the overlay differs from its backing file.
//!
//! Format: qemu `docs/interop/qcow2.rst` ("Qcow2 Image File Format"). Every number is big
//! endian. The image written here uses 64 KiB clusters, 16-bit refcounts, no snapshots, no
//! encryption, no compression and no extended L2 entries. Its layout is, in host clusters:
//!
//! ```text
//! 0            header, header extensions (backing format "raw", end), backing file name
//! 1 ..         data clusters, in increasing guest order
//! ..           L2 tables (one per 512 MiB of the disk that holds an allocated or zero cluster)
//! ..           L1 table
//! ..           refcount blocks, then the refcount table
//! ```
//!
//! Every host cluster of the file is in use exactly once, so every refcount is 1 and every
//! allocated L1 and L2 entry carries the COPIED flag (bit 63), as `qemu-img check` expects.
//! A guest cluster that reads as zeros but must not come from the backing file gets an L2 entry
//! with only the zero flag (bit 0, version 3) and no host cluster.

#![forbid(unsafe_code)]

pub mod export;

use std::fs::File;
use std::os::unix::fs::FileExt;

/// log2 of the cluster size. 64 KiB is qemu's default, so the overlay behaves like the ones
/// `qemu-img create -f qcow2 -b` makes.
pub const CLUSTER_BITS: u32 = 16;
pub const CLUSTER_SIZE: u64 = 1 << CLUSTER_BITS;
const CLUSTER_BYTES: usize = 1 << CLUSTER_BITS;

/// "QFI\xfb".
const MAGIC: [u8; 4] = [b'Q', b'F', b'I', 0xfb];
const VERSION: u32 = 3;
/// refcount_bits = 1 << 4 = 16, qemu's default.
const REFCOUNT_ORDER: u32 = 4;
const REFCOUNT_BYTES: u64 = (1 << REFCOUNT_ORDER) / 8;
/// The version 3 header up to and including `header_length`; no optional fields (a missing
/// `compression_type` means deflate, and nothing here is compressed).
const HEADER_LENGTH: u32 = 104;

/// Header field offsets (qcow2.rst, "Header").
mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const BACKING_FILE_OFFSET: usize = 8;
    pub const BACKING_FILE_SIZE: usize = 16;
    pub const CLUSTER_BITS: usize = 20;
    pub const SIZE: usize = 24;
    pub const CRYPT_METHOD: usize = 32;
    pub const L1_SIZE: usize = 36;
    pub const L1_TABLE_OFFSET: usize = 40;
    pub const REFCOUNT_TABLE_OFFSET: usize = 48;
    pub const REFCOUNT_TABLE_CLUSTERS: usize = 56;
    pub const NB_SNAPSHOTS: usize = 60;
    pub const SNAPSHOTS_OFFSET: usize = 64;
    pub const INCOMPATIBLE_FEATURES: usize = 72;
    pub const COMPATIBLE_FEATURES: usize = 80;
    pub const AUTOCLEAR_FEATURES: usize = 88;
    pub const REFCOUNT_ORDER: usize = 96;
    pub const HEADER_LENGTH: usize = 100;
}

/// Header extension types (qcow2.rst, "Header extensions").
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// The backing file's format, recorded so that qemu never probes it (a raw image whose first
/// bytes look like another format must stay raw).
pub const BACKING_FORMAT: &str = "raw";

/// "Must not be longer than 1023 bytes."
pub const MAX_BACKING_NAME: usize = 1023;
/// Bit 63 of L1 and L2 entries: the refcount of the table or cluster is exactly one.
const OFLAG_COPIED: u64 = 1 << 63;
/// Bit 0 of a standard cluster descriptor (version 3): the cluster reads as zeros.
const OFLAG_ZERO: u64 = 1;
/// Entries per L2 table (8 bytes each).
const L2_ENTRIES: u64 = CLUSTER_SIZE / 8;
/// Refcounts per refcount block.
const REFCOUNT_BLOCK_ENTRIES: u64 = CLUSTER_SIZE / REFCOUNT_BYTES;
/// qemu's implementation limits: an L1 table of at most 32 MiB, a refcount table of at most
/// 8 MiB. An image beyond them would be written but not opened.
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;

#[derive(Debug)]
pub enum Qcow2Error {
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The backing file name is empty or longer than the format allows.
    BackingName { len: usize },
    /// The virtual size needs a larger L1 table than qemu opens.
    TooLarge { size: u64 },
    /// Guest clusters must be given once each, in increasing order, inside the disk.
    ClusterOrder {
        cluster: u64,
        previous: Option<u64>,
        clusters: u64,
    },
    /// More data for one cluster than a cluster holds.
    ClusterData { cluster: u64, len: usize },
    /// The image grew past what qemu's refcount table can describe.
    ImageTooLarge { host_clusters: u64 },
}

impl std::fmt::Display for Qcow2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Qcow2Error::Io { context, source } => write!(f, "{context}: {source}"),
            Qcow2Error::BackingName { len } => write!(
                f,
                "a qcow2 backing file name must be 1 to {MAX_BACKING_NAME} bytes long, this one is {len}"
            ),
            Qcow2Error::TooLarge { size } => write!(
                f,
                "a disk of {size} bytes needs a larger qcow2 L1 table than qemu opens ({MAX_L1_BYTES} bytes)"
            ),
            Qcow2Error::ClusterOrder {
                cluster,
                previous,
                clusters,
            } => write!(
                f,
                "qcow2 guest cluster {cluster} given out of order (previous {previous:?}, disk of {clusters} clusters)"
            ),
            Qcow2Error::ClusterData { cluster, len } => write!(
                f,
                "{len} bytes given for qcow2 guest cluster {cluster}, more than a cluster ({CLUSTER_SIZE})"
            ),
            Qcow2Error::ImageTooLarge { host_clusters } => write!(
                f,
                "a qcow2 image of {host_clusters} clusters needs a larger refcount table than qemu opens ({MAX_REFCOUNT_TABLE_BYTES} bytes)"
            ),
        }
    }
}

impl std::error::Error for Qcow2Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Qcow2Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T, E = Qcow2Error> = std::result::Result<T, E>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Qcow2Error {
    let context = context.into();
    move |source| Qcow2Error::Io { context, source }
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// What a finished image holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverlaySummary {
    /// Guest clusters stored in the image.
    pub data_clusters: u64,
    /// Guest clusters marked as reading zeros.
    pub zero_clusters: u64,
    /// The image file's length.
    pub file_len: u64,
}

/// Writes a qcow2 overlay into an empty file: give the clusters that differ from the backing
/// file in increasing guest order, then [`OverlayWriter::finish`].
pub struct OverlayWriter<'a> {
    file: &'a File,
    size: u64,
    backing_name: Vec<u8>,
    /// The next free host cluster (cluster 0 is the header).
    next_host_cluster: u64,
    /// (guest cluster, L2 entry) in increasing guest order.
    entries: Vec<(u64, u64)>,
    data_clusters: u64,
}

impl<'a> OverlayWriter<'a> {
    /// An overlay of a disk of `size` bytes over the raw backing file named `backing_name` (as
    /// qemu will resolve it: absolute, or relative to the overlay's directory).
    pub fn new(file: &'a File, size: u64, backing_name: &[u8]) -> Result<Self> {
        if backing_name.is_empty() || backing_name.len() > MAX_BACKING_NAME {
            return Err(Qcow2Error::BackingName {
                len: backing_name.len(),
            });
        }
        if l1_entries(size)
            .checked_mul(8)
            .is_none_or(|b| b > MAX_L1_BYTES)
        {
            return Err(Qcow2Error::TooLarge { size });
        }
        Ok(OverlayWriter {
            file,
            size,
            backing_name: backing_name.to_vec(),
            next_host_cluster: 1,
            entries: Vec::new(),
            data_clusters: 0,
        })
    }

    /// The number of guest clusters of the disk.
    pub fn guest_clusters(&self) -> u64 {
        self.size.div_ceil(CLUSTER_SIZE)
    }

    fn check_next(&self, cluster: u64) -> Result<()> {
        let previous = self.entries.last().map(|e| e.0);
        if cluster >= self.guest_clusters() || previous.is_some_and(|p| p >= cluster) {
            return Err(Qcow2Error::ClusterOrder {
                cluster,
                previous,
                clusters: self.guest_clusters(),
            });
        }
        Ok(())
    }

    /// Stores guest cluster `cluster` with the bytes `data` (at most a cluster; a shorter
    /// cluster, the disk's last, reads zeros after them).
    pub fn data(&mut self, cluster: u64, data: &[u8]) -> Result<()> {
        self.check_next(cluster)?;
        if data.len() > CLUSTER_BYTES {
            return Err(Qcow2Error::ClusterData {
                cluster,
                len: data.len(),
            });
        }
        let host = self.next_host_cluster * CLUSTER_SIZE;
        self.file
            .write_all_at(data, host)
            .map_err(io(format!("cannot write qcow2 data cluster at {host:#x}")))?;
        self.entries.push((cluster, host | OFLAG_COPIED));
        self.next_host_cluster += 1;
        self.data_clusters += 1;
        Ok(())
    }

    /// Marks guest cluster `cluster` as reading zeros (instead of the backing file's bytes).
    pub fn zero(&mut self, cluster: u64) -> Result<()> {
        self.check_next(cluster)?;
        self.entries.push((cluster, OFLAG_ZERO));
        Ok(())
    }

    /// Writes the tables and the header and syncs the file: the image is complete.
    pub fn finish(self) -> Result<OverlaySummary> {
        let l1_size = l1_entries(self.size);
        // L2 tables: one per L1 entry that covers a given cluster.
        let mut l1 = vec![0u64; l1_size as usize];
        let mut host = self.next_host_cluster;
        let mut table = vec![0u8; CLUSTER_BYTES];
        let mut i = 0;
        while i < self.entries.len() {
            let l1_index = self.entries[i].0 / L2_ENTRIES;
            table.fill(0);
            while let Some(&(cluster, entry)) = self.entries.get(i) {
                if cluster / L2_ENTRIES != l1_index {
                    break;
                }
                put_u64(&mut table, (cluster % L2_ENTRIES) as usize * 8, entry);
                i += 1;
            }
            let at = host * CLUSTER_SIZE;
            self.file
                .write_all_at(&table, at)
                .map_err(io(format!("cannot write qcow2 L2 table at {at:#x}")))?;
            l1[l1_index as usize] = at | OFLAG_COPIED;
            host += 1;
        }
        // The L1 table, contiguous.
        let l1_offset = host * CLUSTER_SIZE;
        let l1_clusters = (l1_size * 8).div_ceil(CLUSTER_SIZE).max(1);
        let l1_bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.file
            .write_all_at(&l1_bytes, l1_offset)
            .map_err(io(format!("cannot write qcow2 L1 table at {l1_offset:#x}")))?;
        host += l1_clusters;
        // The refcount blocks and table count every cluster of the file, themselves included.
        let (blocks, table_clusters) = refcount_layout(host)?;
        let total = host + blocks + table_clusters;
        let blocks_offset = host * CLUSTER_SIZE;
        let mut block = vec![0u8; CLUSTER_BYTES];
        let mut rt = vec![0u8; (table_clusters * CLUSTER_SIZE) as usize];
        for b in 0..blocks {
            block.fill(0);
            let first = b * REFCOUNT_BLOCK_ENTRIES;
            let count = (total - first).min(REFCOUNT_BLOCK_ENTRIES);
            for k in 0..count as usize {
                block[k * 2..k * 2 + 2].copy_from_slice(&1u16.to_be_bytes());
            }
            let at = blocks_offset + b * CLUSTER_SIZE;
            self.file
                .write_all_at(&block, at)
                .map_err(io(format!("cannot write qcow2 refcount block at {at:#x}")))?;
            put_u64(&mut rt, b as usize * 8, at);
        }
        let rt_offset = blocks_offset + blocks * CLUSTER_SIZE;
        self.file.write_all_at(&rt, rt_offset).map_err(io(format!(
            "cannot write qcow2 refcount table at {rt_offset:#x}"
        )))?;
        let file_len = total * CLUSTER_SIZE;
        self.file
            .set_len(file_len)
            .map_err(io("cannot size the qcow2 image"))?;
        // The header last: until it is written, the file is no qcow2 image at all.
        let header = self.header(l1_size, l1_offset, rt_offset, table_clusters);
        self.file
            .write_all_at(&header, 0)
            .map_err(io("cannot write the qcow2 header"))?;
        self.file
            .sync_all()
            .map_err(io("cannot sync the qcow2 image"))?;
        let zero_clusters = self.entries.len() as u64 - self.data_clusters;
        Ok(OverlaySummary {
            data_clusters: self.data_clusters,
            zero_clusters,
            file_len,
        })
    }

    /// Cluster 0: the header, the header extensions and the backing file name after them.
    fn header(&self, l1_size: u64, l1_offset: u64, rt_offset: u64, rt_clusters: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LENGTH as usize];
        h[field::MAGIC..field::MAGIC + 4].copy_from_slice(&MAGIC);
        put_u32(&mut h, field::VERSION, VERSION);
        put_u32(&mut h, field::CLUSTER_BITS, CLUSTER_BITS);
        put_u64(&mut h, field::SIZE, self.size);
        put_u32(&mut h, field::CRYPT_METHOD, 0);
        // Fits: `new` checked the L1 table against qemu's 32 MiB limit.
        put_u32(&mut h, field::L1_SIZE, l1_size as u32);
        put_u64(&mut h, field::L1_TABLE_OFFSET, l1_offset);
        put_u64(&mut h, field::REFCOUNT_TABLE_OFFSET, rt_offset);
        // Fits: `refcount_layout` checked the table against qemu's 8 MiB limit.
        put_u32(&mut h, field::REFCOUNT_TABLE_CLUSTERS, rt_clusters as u32);
        put_u32(&mut h, field::NB_SNAPSHOTS, 0);
        put_u64(&mut h, field::SNAPSHOTS_OFFSET, 0);
        put_u64(&mut h, field::INCOMPATIBLE_FEATURES, 0);
        put_u64(&mut h, field::COMPATIBLE_FEATURES, 0);
        put_u64(&mut h, field::AUTOCLEAR_FEATURES, 0);
        put_u32(&mut h, field::REFCOUNT_ORDER, REFCOUNT_ORDER);
        put_u32(&mut h, field::HEADER_LENGTH, HEADER_LENGTH);
        // Extensions: the backing format (padded to 8 bytes), then the end marker.
        let format = BACKING_FORMAT.as_bytes();
        h.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        h.extend_from_slice(&(format.len() as u32).to_be_bytes());
        h.extend_from_slice(format);
        h.resize(h.len().next_multiple_of(8), 0);
        h.extend_from_slice(&EXT_END.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        // The backing file name fills the space after the extensions (not NUL-terminated).
        let name_offset = h.len() as u64;
        put_u64(&mut h, field::BACKING_FILE_OFFSET, name_offset);
        put_u32(
            &mut h,
            field::BACKING_FILE_SIZE,
            self.backing_name.len() as u32,
        );
        h.extend_from_slice(&self.backing_name);
        h
    }
}

/// L1 entries a disk of `size` bytes needs: one per L2 table's worth of guest clusters.
fn l1_entries(size: u64) -> u64 {
    size.div_ceil(CLUSTER_SIZE).div_ceil(L2_ENTRIES)
}

/// The refcount blocks and refcount table clusters that describe a file of `used` clusters
/// plus themselves: the smallest fixed point.
fn refcount_layout(used: u64) -> Result<(u64, u64)> {
    let (mut blocks, mut table) = (1u64, 1u64);
    loop {
        let total = used
            .checked_add(blocks + table)
            .ok_or(Qcow2Error::ImageTooLarge {
                host_clusters: used,
            })?;
        let need_blocks = total.div_ceil(REFCOUNT_BLOCK_ENTRIES);
        let need_table = (need_blocks * 8).div_ceil(CLUSTER_SIZE);
        if need_table * CLUSTER_SIZE > MAX_REFCOUNT_TABLE_BYTES {
            return Err(Qcow2Error::ImageTooLarge {
                host_clusters: total,
            });
        }
        if need_blocks <= blocks && need_table <= table {
            return Ok((blocks, table));
        }
        blocks = blocks.max(need_blocks);
        table = table.max(need_table);
    }
}

#[cfg(test)]
mod tests;
