//! Unit tests of the qcow2 writer: a small reader written from the same specification walks
//! the image back (header, extensions, L1/L2 mapping, refcounts of every cluster); `qemu-img
//! check` and `qemu-img compare` are the independent oracles where qemu-img is installed.

use super::*;
use crate::testutil::{tool_present, TempDir};
use std::os::unix::fs::FileExt;
use std::process::Command;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// What the image says about one guest cluster.
#[derive(Debug, PartialEq, Eq)]
enum Mapping {
    Backing,
    Zero,
    Data(u64),
}

struct Image {
    bytes: Vec<u8>,
}

impl Image {
    fn read(path: &std::path::Path) -> Image {
        Image {
            bytes: std::fs::read(path).unwrap(),
        }
    }

    fn field32(&self, at: usize) -> u32 {
        be32(&self.bytes, at)
    }

    fn field64(&self, at: usize) -> u64 {
        be64(&self.bytes, at)
    }

    fn backing_name(&self) -> Vec<u8> {
        let at = self.field64(field::BACKING_FILE_OFFSET) as usize;
        let len = self.field32(field::BACKING_FILE_SIZE) as usize;
        self.bytes[at..at + len].to_vec()
    }

    /// The header extensions as (type, data).
    fn extensions(&self) -> Vec<(u32, Vec<u8>)> {
        let mut at = self.field32(field::HEADER_LENGTH) as usize;
        let mut v = Vec::new();
        loop {
            let (kind, len) = (be32(&self.bytes, at), be32(&self.bytes, at + 4) as usize);
            if kind == EXT_END {
                return v;
            }
            v.push((kind, self.bytes[at + 8..at + 8 + len].to_vec()));
            at += 8 + len.next_multiple_of(8);
        }
    }

    fn mapping(&self, guest_cluster: u64) -> Mapping {
        let l1 = self.field64(field::L1_TABLE_OFFSET) as usize;
        let l1_index = (guest_cluster / L2_ENTRIES) as usize;
        assert!(l1_index < self.field32(field::L1_SIZE) as usize);
        let l1_entry = be64(&self.bytes, l1 + l1_index * 8);
        let l2 = l1_entry & 0x00ff_ffff_ffff_fe00;
        if l2 == 0 {
            return Mapping::Backing;
        }
        assert_ne!(l1_entry & OFLAG_COPIED, 0, "L1 entry without COPIED");
        let entry = be64(
            &self.bytes,
            l2 as usize + (guest_cluster % L2_ENTRIES) as usize * 8,
        );
        let host = entry & 0x00ff_ffff_ffff_fe00;
        match (host, entry & OFLAG_ZERO) {
            (0, 0) => {
                assert_eq!(entry, 0);
                Mapping::Backing
            }
            (0, _) => Mapping::Zero,
            (h, 0) => {
                assert_ne!(entry & OFLAG_COPIED, 0, "L2 entry without COPIED");
                Mapping::Data(h)
            }
            _ => panic!("a preallocated zero cluster was not written: {entry:#x}"),
        }
    }

    fn refcount(&self, host_cluster: u64) -> u16 {
        let rt = self.field64(field::REFCOUNT_TABLE_OFFSET) as usize;
        let index = (host_cluster / REFCOUNT_BLOCK_ENTRIES) as usize;
        let block = be64(&self.bytes, rt + index * 8) as usize;
        if block == 0 {
            return 0;
        }
        let at = block + (host_cluster % REFCOUNT_BLOCK_ENTRIES) as usize * 2;
        u16::from_be_bytes([self.bytes[at], self.bytes[at + 1]])
    }
}

#[test]
fn an_empty_overlay_reads_everything_from_its_backing_file() {
    let dir = TempDir::new("qcow2-empty");
    let path = dir.path("o.qcow2");
    let file = File::create(&path).unwrap();
    let size = 3 * (1 << 30) + 4096;
    let summary = OverlayWriter::new(&file, size, b"master.img")
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(summary.data_clusters, 0);
    let img = Image::read(&path);
    assert_eq!(&img.bytes[..4], b"QFI\xfb");
    assert_eq!(img.field32(field::VERSION), 3);
    assert_eq!(img.field32(field::CLUSTER_BITS), 16);
    assert_eq!(img.field64(field::SIZE), size);
    assert_eq!(img.field32(field::REFCOUNT_ORDER), 4);
    assert_eq!(img.field32(field::HEADER_LENGTH), 104);
    assert_eq!(img.field64(field::INCOMPATIBLE_FEATURES), 0);
    // 3 GiB + 4 KiB needs 7 L2 tables' worth of L1 entries (512 MiB each).
    assert_eq!(img.field32(field::L1_SIZE), 7);
    assert_eq!(img.backing_name(), b"master.img");
    assert_eq!(
        img.extensions(),
        vec![(EXT_BACKING_FORMAT, b"raw".to_vec())]
    );
    for c in [0, 1, 8191, 8192, size / CLUSTER_SIZE] {
        assert_eq!(img.mapping(c), Mapping::Backing);
    }
    // Every cluster of the file is counted once, none beyond it.
    let clusters = img.bytes.len() as u64 / CLUSTER_SIZE;
    assert_eq!(img.bytes.len() as u64, summary.file_len);
    for c in 0..clusters {
        assert_eq!(img.refcount(c), 1, "host cluster {c}");
    }
    assert_eq!(img.refcount(clusters), 0);
}

#[test]
fn clusters_map_to_their_data_or_read_as_zeros_in_every_l2_table() {
    let dir = TempDir::new("qcow2-map");
    let path = dir.path("o.qcow2");
    let file = File::create(&path).unwrap();
    // The last cluster is short: the disk ends 1000 bytes into it.
    let size = 2 * L2_ENTRIES * CLUSTER_SIZE + 1000;
    let mut w = OverlayWriter::new(&file, size, b"/abs/master.img").unwrap();
    let last = size / CLUSTER_SIZE;
    w.data(3, &[0xaa; CLUSTER_BYTES]).unwrap();
    w.zero(4).unwrap();
    w.data(L2_ENTRIES + 7, &[0xbb; CLUSTER_BYTES]).unwrap();
    w.data(last, &[0xcc; 1000]).unwrap();
    let summary = w.finish().unwrap();
    assert_eq!((summary.data_clusters, summary.zero_clusters), (3, 1));
    let img = Image::read(&path);
    let data_at = |c| match img.mapping(c) {
        Mapping::Data(h) => h as usize,
        m => panic!("cluster {c}: {m:?}"),
    };
    assert!(img.bytes[data_at(3)..][..CLUSTER_BYTES]
        .iter()
        .all(|&b| b == 0xaa));
    assert!(img.bytes[data_at(L2_ENTRIES + 7)..][..CLUSTER_BYTES]
        .iter()
        .all(|&b| b == 0xbb));
    let tail = &img.bytes[data_at(last)..][..CLUSTER_BYTES];
    assert!(tail[..1000].iter().all(|&b| b == 0xcc));
    assert!(tail[1000..].iter().all(|&b| b == 0));
    assert_eq!(img.mapping(4), Mapping::Zero);
    for c in [0, 2, 5, L2_ENTRIES, L2_ENTRIES + 8, last - 1] {
        assert_eq!(img.mapping(c), Mapping::Backing, "cluster {c}");
    }
    let clusters = img.bytes.len() as u64 / CLUSTER_SIZE;
    for c in 0..clusters {
        assert_eq!(img.refcount(c), 1, "host cluster {c}");
    }
}

#[test]
fn misuse_is_refused_with_typed_errors() {
    let dir = TempDir::new("qcow2-misuse");
    let file = File::create(dir.path("o.qcow2")).unwrap();
    assert!(matches!(
        OverlayWriter::new(&file, 1 << 20, b""),
        Err(Qcow2Error::BackingName { len: 0 })
    ));
    assert!(matches!(
        OverlayWriter::new(&file, 1 << 20, &[b'a'; MAX_BACKING_NAME + 1]),
        Err(Qcow2Error::BackingName { .. })
    ));
    assert!(matches!(
        OverlayWriter::new(&file, u64::MAX, b"m"),
        Err(Qcow2Error::TooLarge { .. })
    ));
    let mut w = OverlayWriter::new(&file, 10 * CLUSTER_SIZE, b"m").unwrap();
    w.data(5, b"x").unwrap();
    assert!(matches!(w.zero(5), Err(Qcow2Error::ClusterOrder { .. })));
    assert!(matches!(
        w.data(2, b"x"),
        Err(Qcow2Error::ClusterOrder { .. })
    ));
    assert!(matches!(w.zero(10), Err(Qcow2Error::ClusterOrder { .. })));
    assert!(matches!(
        w.data(6, &[0; CLUSTER_BYTES + 1]),
        Err(Qcow2Error::ClusterData { .. })
    ));
}

#[test]
fn refcount_blocks_count_themselves_at_every_boundary() {
    for used in [
        1,
        REFCOUNT_BLOCK_ENTRIES - 3,
        REFCOUNT_BLOCK_ENTRIES - 2,
        REFCOUNT_BLOCK_ENTRIES - 1,
        REFCOUNT_BLOCK_ENTRIES,
        10 * REFCOUNT_BLOCK_ENTRIES,
    ] {
        let (blocks, table) = refcount_layout(used).unwrap();
        let total = used + blocks + table;
        assert!(blocks * REFCOUNT_BLOCK_ENTRIES >= total, "used {used}");
        assert!(
            (blocks - 1) * REFCOUNT_BLOCK_ENTRIES < total,
            "used {used}: a block too many"
        );
        assert!(table * CLUSTER_SIZE >= blocks * 8);
    }
    assert!(matches!(
        refcount_layout(u64::MAX / 2),
        Err(Qcow2Error::ImageTooLarge { .. })
    ));
}

/// qemu-img itself: the image is clean and reads as the backing file with the clusters replaced.
#[test]
fn qemu_img_finds_the_image_clean_and_equal_to_the_expected_disk() {
    if !tool_present("qemu-img") {
        eprintln!("SKIP: qemu-img is not installed");
        return;
    }
    let dir = TempDir::new("qcow2-qemu");
    let size = L2_ENTRIES * CLUSTER_SIZE + 5 * CLUSTER_SIZE;
    let master = dir.path("master.img");
    let expected = dir.path("expected.img");
    {
        let m = File::create(&master).unwrap();
        m.set_len(size).unwrap();
        for (i, at) in [0, 4 * CLUSTER_SIZE, (L2_ENTRIES + 2) * CLUSTER_SIZE]
            .into_iter()
            .enumerate()
        {
            m.write_all_at(&[i as u8 + 1; 3 * CLUSTER_BYTES], at)
                .unwrap();
        }
    }
    std::fs::copy(&master, &expected).unwrap();
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(&expected)
        .unwrap();
    let path = dir.path("o.qcow2");
    let file = File::create(&path).unwrap();
    let mut w = OverlayWriter::new(&file, size, b"master.img").unwrap();
    let ours = [0x5au8; CLUSTER_BYTES];
    w.data(1, &ours).unwrap();
    e.write_all_at(&ours, CLUSTER_SIZE).unwrap();
    w.zero(4).unwrap();
    e.write_all_at(&[0; CLUSTER_BYTES], 4 * CLUSTER_SIZE)
        .unwrap();
    w.data(L2_ENTRIES + 3, &ours[..100]).unwrap();
    let mut cluster = vec![0u8; CLUSTER_BYTES];
    cluster[..100].copy_from_slice(&ours[..100]);
    e.write_all_at(&cluster, (L2_ENTRIES + 3) * CLUSTER_SIZE)
        .unwrap();
    w.finish().unwrap();
    let check = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "qemu-img check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "raw"])
        .arg(&path)
        .arg(&expected)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "qemu-img compare: {}{}",
        String::from_utf8_lossy(&cmp.stdout),
        String::from_utf8_lossy(&cmp.stderr)
    );
}
