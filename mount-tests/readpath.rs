//! The FUSE read path: how a read of the mounted disk reaches the master.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;

use crate::common::*;

const MIB: u64 = 1 << 20;

/// Master pages of `file` in `[offset, offset + len)` that are in the page cache (mincore).
fn resident_pages(file: &std::fs::File, offset: u64, len: usize) -> usize {
    let page = 4096usize;
    // SAFETY: a read-only shared mapping of a file we hold open, unmapped before returning;
    // mincore writes one byte per page into `vec`, which has that many.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset as libc::off_t,
        );
        assert_ne!(at, libc::MAP_FAILED, "mmap of the master");
        let mut vec = vec![0u8; len.div_ceil(page)];
        let r = libc::mincore(at, len, vec.as_mut_ptr());
        libc::munmap(at, len);
        assert_eq!(r, 0, "mincore of the master");
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }
}

/// Drops the master's clean pages from the page cache (it is synced by `sparse_master`).
fn evict(file: &std::fs::File) {
    // SAFETY: fadvise on a descriptor we own; no memory is involved.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise DONTNEED");
}

/// Prove that a client reading the clone with O_DIRECT (qemu `cache=none`) gets the master's
/// bytes read past the host's page cache: after 8 MiB of aligned O_DIRECT reads (4 KiB and
/// 1 MiB) through a `--keep-sid` mount, none of those master pages is cached (a buffered read
/// of the master, as before, caches every one and more around it by readahead), and the bytes
/// are the master's; a buffered read of the mount still goes through the page cache.
#[test]
fn direct_reads_of_the_mount_bypass_the_master_page_cache() {
    let s = Scratch::new("readpath-direct");
    let master = s.path("master.img");
    sparse_master(&master, 32 * MIB, &[(0, 32 << 20)], 11);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 1, &s.path("state"), &["--keep-sid"]);
    let mf = std::fs::File::open(&master).unwrap();
    evict(&mf);
    let (from, len) = (8 * MIB, 8 << 20);
    assert_eq!(resident_pages(&mf, from, len), 0, "eviction did not work");

    let disk = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(m.disk())
        .unwrap();
    let mut raw = vec![0u8; len + 4096];
    let start = raw.as_ptr().align_offset(4096);
    let got = &mut raw[start..start + len];
    // The first MiB in 4 KiB reads, the rest in 1 MiB reads.
    for i in 0..256 {
        let at = i * 4096;
        assert_eq!(
            disk.read_at(&mut got[at..at + 4096], from + at as u64)
                .unwrap(),
            4096
        );
    }
    let mut at = 1 << 20;
    while at < len {
        let n = disk
            .read_at(&mut got[at..at + (1 << 20)], from + at as u64)
            .unwrap();
        assert_eq!(n, 1 << 20);
        at += n;
    }
    assert_eq!(
        resident_pages(&mf, from, len),
        0,
        "O_DIRECT reads of the mount filled the master's page cache"
    );
    let mut want = vec![0u8; len];
    mf.read_exact_at(&mut want, from).unwrap();
    assert!(
        got == want.as_slice(),
        "O_DIRECT reads differ from the master"
    );

    // A buffered reader of the mount is served from the master's page cache, as before.
    evict(&mf);
    let mut buffered = vec![0u8; 1 << 20];
    std::fs::File::open(m.disk())
        .unwrap()
        .read_exact_at(&mut buffered, 20 * MIB)
        .unwrap();
    assert!(resident_pages(&mf, 20 * MIB, 1 << 20) > 0);
    drop(disk);
    m.unmount();
}
