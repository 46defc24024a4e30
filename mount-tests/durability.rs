//! Durability of what the clone acknowledges, through real mounts: a damaged delta is refused, a
//! full state file system never costs an acknowledged write and is reported by `sidfs umount`,
//! rewrites of blocks already in the delta are synced in the background, and the disk's mtime
//! follows its writes.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
/// Blocks covered by one 4 KiB page of the block map (map.bin): 32768 blocks, 128 MiB of disk.
const BLOCKS_PER_MAP_PAGE: u64 = 32768;

/// A small tmpfs to hold a clone's state, so that it can fill up; unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn new(at: &Path, size: &str) -> SmallFs {
        ok(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at));
        SmallFs(at.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.0).output();
        if !out.map(|o| o.status.success()).unwrap_or(false) {
            // Still busy (a daemon that has not exited yet): detach it now, freed when unused.
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        }
    }
}

/// Unmounts whatever sidfs serves at a mountpoint when dropped (for mounts a test expects to be
/// refused, or whose `sidfs umount` it expects to fail).
struct ClearMount(PathBuf);

impl Drop for ClearMount {
    fn drop(&mut self) {
        let out = sidfs().arg("umount").arg(&self.0).output();
        if !out.map(|o| o.status.success()).unwrap_or(false) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.0)
                .output();
        }
    }
}

/// The content the tests write to block `block`: its number and a tag, repeated.
fn pattern(block: u64, tag: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(BLOCK as usize);
    while v.len() < BLOCK as usize {
        v.extend_from_slice(&block.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
    }
    v
}

fn open_rw(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn read_block(disk: &std::fs::File, block: u64) -> Vec<u8> {
    let mut buf = vec![0u8; BLOCK as usize];
    disk.read_exact_at(&mut buf, block * BLOCK).unwrap();
    buf
}

/// The errno of a failed write or fsync, which must say the data was not stored.
fn assert_not_stored(e: &std::io::Error, what: &str) {
    let errno = e.raw_os_error();
    assert!(
        errno == Some(libc::ENOSPC) || errno == Some(libc::EIO),
        "{what} failed with {e}, expected ENOSPC or EIO"
    );
}

/// Fills the file system holding `path` with `path` itself, 4 KiB at a time, until it is full.
fn fill(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; BLOCK as usize];
    let mut at = 0;
    loop {
        match f.write_all_at(&chunk, at) {
            Ok(()) => at += BLOCK,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // A failed write may have left a partial page: make the length whole pages.
    f.set_len(at).unwrap();
}

fn mounted_at(mp: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mp = mp.to_string_lossy().into_owned();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(mp.as_str()))
}

/// Prove that a delta.bin cut short (blocks the map holds are beyond its end) is refused with
/// one line naming the damage, instead of re-extending it so the blocks read as zeros; the
/// refused mount leaves the file as it was and no mount behind.
#[test]
fn truncated_delta_is_refused() {
    let s = Scratch::new("dur-trunc");
    let master = s.path("master.img");
    sparse_master(&master, 16 * MIB, &[(0, MIB as usize)], 31);
    let mp = s.mkdir("mp");
    let state = s.path("state");
    let m = Mounted::new(&master, &mp, 1, &state, &["--keep-sid"]);
    let disk = open_rw(&m.disk());
    disk.write_all_at(&pattern(3000, 1), 3000 * BLOCK).unwrap();
    disk.sync_all().unwrap();
    drop(disk);
    m.unmount();

    let delta = state.join("delta.bin");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&delta)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let _clear = ClearMount(mp.clone());
    let out = mount_cmd(&master, &mp, 1, &state, &["--keep-sid"]);
    let err = one_line_error(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("delta.bin") && err.contains("truncated"),
        "the refusal must name the truncated delta: {err}"
    );
    assert!(!mounted_at(&mp), "a refused mount left a mount behind");
    assert_eq!(
        std::fs::metadata(&delta).unwrap().len(),
        8 * MIB,
        "the refused mount must not re-extend the delta"
    );
}

/// Prove the durability rule on a full state file system (a 2 MiB tmpfs under a 1 GiB clone):
/// guest writes fill it; the write that finds no room fails with ENOSPC; space freed later is
/// used by writes into other 128 MiB regions (whose block-map pages must not need new space);
/// `sidfs umount` succeeds, so every write that returned success reads back after a remount.
#[test]
fn full_state_fs_keeps_every_acknowledged_write() {
    let s = Scratch::new("dur-full");
    let master = s.path("master.img");
    let size = 1 << 30;
    sparse_master(&master, size, &[(0, 64 * 1024), (size - MIB, 4096)], 32);
    let before = sha256(&master);
    let statefs = s.mkdir("statefs");
    let _fs = SmallFs::new(&statefs, "2m");
    let mp = s.mkdir("mp");
    let state = statefs.join("state");
    let m = Mounted::new(&master, &mp, 2, &state, &["--keep-sid"]);
    // Room that the test frees once the guest has filled the rest.
    let spare = statefs.join("spare");
    std::fs::write(&spare, vec![0xAAu8; 16 * BLOCK as usize]).unwrap();

    let disk = open_rw(&m.disk());
    // Acknowledged: the write and a later fsync succeeded. Written: the write succeeded.
    let mut written: Vec<(u64, u64)> = Vec::new();
    let mut acked = 0usize;
    let mut failed_write = None;
    // Region 0 (blocks below 32768), an fsync after every 8 writes, until a write fails.
    for block in 1..600u64 {
        match disk.write_all_at(&pattern(block, 1), block * BLOCK) {
            Ok(()) => written.push((block, 1)),
            Err(e) => {
                assert_not_stored(&e, "a write on the full state file system");
                failed_write = Some(block);
                break;
            }
        }
        if block % 8 == 0 {
            match disk.sync_all() {
                Ok(()) => acked = written.len(),
                Err(e) => assert_not_stored(&e, "an fsync"),
            }
        }
    }
    assert!(
        failed_write.is_some(),
        "600 blocks fitted into a 2 MiB state file system"
    );
    if disk.sync_all().is_ok() {
        acked = written.len();
    }
    // Space comes back; writes land in seven other regions of the disk, without fsync.
    std::fs::remove_file(&spare).unwrap();
    let mut second_failed = false;
    'regions: for j in 0..8u64 {
        for region in 1..8u64 {
            let block = region * BLOCKS_PER_MAP_PAGE + j;
            match disk.write_all_at(&pattern(block, 2), block * BLOCK) {
                Ok(()) => written.push((block, 2)),
                Err(e) => {
                    assert_not_stored(&e, "a write on the full state file system");
                    second_failed = true;
                    break 'regions;
                }
            }
        }
    }
    assert!(second_failed, "56 blocks fitted into 64 KiB");
    drop(disk);
    eprintln!(
        "{} writes stored, {acked} acknowledged by fsync",
        written.len()
    );

    let out = run(sidfs().arg("umount").arg(&mp));
    m.forget();
    let _clear = ClearMount(mp.clone());
    assert!(
        out.status.success(),
        "every stored write had its space reserved, yet umount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // umount succeeded: everything the guest wrote is durable, not only what it fsync'ed.
    let m = Mounted::new(&master, &mp, 2, &state, &["--keep-sid"]);
    let disk = std::fs::File::open(m.disk()).unwrap();
    for &(block, tag) in &written {
        assert!(
            read_block(&disk, block) == pattern(block, tag),
            "block {block} was written (and umount reported the state synced), but reads differently after a remount"
        );
    }
    drop(disk);
    m.unmount();
    assert_eq!(sha256(&master), before, "the master must never change");
}

/// Prove that an fsync whose block map cannot be written fails (and the next one too), and that
/// `sidfs umount` then exits 1 with one line saying the state was not synced. The clone's map has
/// a hole (as a map written by an older sidfs may have) and the state file system is full, so
/// writing that map page needs space that is not there. After a remount with space, what was
/// acknowledged reads back and the unacknowledged block reads as the master.
#[test]
fn umount_reports_a_final_sync_that_failed() {
    fsync_fails_while_the_map_cannot_be_written(false);
}

/// Prove that the fsyncs failing for want of map space (as above) succeed again once there is
/// space, and that the write they failed for was kept: it is durable after umount and remount.
#[test]
fn fsync_succeeds_again_once_space_is_back() {
    fsync_fails_while_the_map_cannot_be_written(true);
}

fn fsync_fails_while_the_map_cannot_be_written(space_comes_back: bool) {
    if !have_tool("fallocate") {
        return;
    }
    let s = Scratch::new("dur-umount");
    let master = s.path("master.img");
    let size = 1 << 30;
    sparse_master(&master, size, &[(0, 64 * 1024)], 33);
    let statefs = s.mkdir("statefs");
    let _fs = SmallFs::new(&statefs, "2m");
    let mp = s.mkdir("mp");
    let state = statefs.join("state");
    let m = Mounted::new(&master, &mp, 3, &state, &["--keep-sid"]);
    let disk = open_rw(&m.disk());
    disk.write_all_at(&pattern(5, 1), 5 * BLOCK).unwrap();
    disk.sync_all().unwrap();
    drop(disk);
    m.unmount();

    // The map page for blocks 32768..65535 becomes a hole; then the file system fills up.
    ok(Command::new("fallocate")
        .args(["--punch-hole", "--offset", "8192", "--length", "4096"])
        .arg(state.join("map.bin")));
    let filler = statefs.join("filler");
    fill(&filler);

    let m = Mounted::new(&master, &mp, 3, &state, &["--keep-sid"]);
    let _clear = ClearMount(mp.clone());
    let disk = open_rw(&m.disk());
    let block = BLOCKS_PER_MAP_PAGE + 9;
    let err = disk
        .write_all_at(&pattern(block, 2), block * BLOCK)
        .expect_err("a write into a full state file system succeeded");
    assert_not_stored(&err, "a write on the full state file system");
    // One page of room: enough for the block's data, not for its map page.
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(len - BLOCK)
        .unwrap();
    disk.write_all_at(&pattern(block, 2), block * BLOCK)
        .expect("the write whose data fits");
    let err = disk
        .sync_all()
        .expect_err("an fsync whose block map cannot be written succeeded");
    assert_not_stored(&err, "the fsync");
    let err = disk
        .sync_all()
        .expect_err("a second fsync reported success for the same unsynced write");
    assert_not_stored(&err, "the second fsync");
    if space_comes_back {
        let len = std::fs::metadata(&filler).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap()
            .set_len(len - BLOCK)
            .unwrap();
        disk.sync_all()
            .expect("the fsync once the map page has room");
        drop(disk);
        m.unmount();
        let m = Mounted::new(&master, &mp, 3, &state, &["--keep-sid"]);
        let disk = std::fs::File::open(m.disk()).unwrap();
        assert!(
            read_block(&disk, 5) == pattern(5, 1),
            "the first fsync'ed block was lost"
        );
        assert!(
            read_block(&disk, block) == pattern(block, 2),
            "the block fsync'ed once space was back was lost"
        );
        drop(disk);
        m.unmount();
        return;
    }
    drop(disk);
    let pid = m.pid();
    m.forget();

    let out = run(sidfs().arg("umount").arg(&mp));
    let msg = one_line_error(&out);
    eprintln!("sidfs umount said: {msg}");
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("not synced") || msg.contains("could not sync"),
        "umount must say the state was not synced: {msg}"
    );
    assert!(!mounted_at(&mp), "the clone is still mounted");
    assert!(
        msg.contains(&pid.to_string()),
        "umount must name the daemon: {msg}"
    );

    std::fs::remove_file(&filler).unwrap();
    let m = Mounted::new(&master, &mp, 3, &state, &["--keep-sid"]);
    let disk = std::fs::File::open(m.disk()).unwrap();
    assert!(
        read_block(&disk, 5) == pattern(5, 1),
        "the fsync'ed block was lost"
    );
    assert!(
        read_block(&disk, block) == vec![0u8; BLOCK as usize],
        "the block whose fsync failed must read as the master"
    );
    drop(disk);
    m.unmount();
}

/// Prove that a rewrite of a block already in the delta, never fsync'ed, is made durable by the
/// daemon's background sync: strace, attached to the daemon, sees an fdatasync of delta.bin
/// after the rewrite, while the guest keeps the disk open (a close would sync by itself).
#[test]
fn background_sync_covers_rewrites_of_present_blocks() {
    if !have_tool("strace") {
        return;
    }
    let s = Scratch::new("dur-bg");
    let master = s.path("master.img");
    sparse_master(&master, 16 * MIB, &[(0, MIB as usize)], 34);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 4, &s.path("state"), &["--keep-sid"]);
    let disk = open_rw(&m.disk());
    disk.write_all_at(&pattern(100, 1), 100 * BLOCK).unwrap();
    disk.sync_all().unwrap();

    let trace = s.path("trace.txt");
    let mut strace = Command::new("strace")
        .args(["-f", "-y", "-e", "trace=fdatasync", "-o"])
        .arg(&trace)
        .arg("-p")
        .arg(m.pid().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace");
    // strace says "Process N attached" on stderr once it traces the daemon.
    let mut stderr = BufReader::new(strace.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("attached") {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = strace.kill();
            panic!("strace could not attach to the daemon");
        }
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stderr.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });

    disk.write_all_at(&pattern(100, 2), 100 * BLOCK).unwrap();
    // The daemon syncs every 5 s; wait for three intervals at most.
    let deadline = Instant::now() + Duration::from_secs(15);
    let synced = loop {
        let text = std::fs::read_to_string(&trace).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("fdatasync(") && l.contains("delta.bin"))
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = strace.kill();
    let _ = strace.wait();
    assert!(
        synced,
        "no fdatasync of delta.bin within 15 s of a rewrite of a present block (trace: {})",
        std::fs::read_to_string(&trace).unwrap_or_default()
    );
    drop(disk);
    m.unmount();
}

/// Prove that disk.img's mtime and ctime advance with every write (so mtime-based backups and
/// rsync see a changed clone), and that `touch -d` sets its mtime.
#[test]
fn disk_mtime_follows_writes_and_touch() {
    let s = Scratch::new("dur-mtime");
    let master = s.path("master.img");
    sparse_master(&master, 16 * MIB, &[(0, MIB as usize)], 35);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 5, &s.path("state"), &["--keep-sid"]);
    let times = |p: &Path| {
        let md = std::fs::metadata(p).unwrap();
        ((md.mtime(), md.mtime_nsec()), (md.ctime(), md.ctime_nsec()))
    };
    let (m0, c0) = times(&m.disk());
    let disk = open_rw(&m.disk());
    disk.write_all_at(b"changed", 7 * BLOCK + 3).unwrap();
    let (m1, c1) = times(&m.disk());
    assert!(
        m1 > m0,
        "mtime {m1:?} did not advance past {m0:?} with a write"
    );
    assert!(
        c1 > c0,
        "ctime {c1:?} did not advance past {c0:?} with a write"
    );
    // A rewrite of the same (now present) block advances it again.
    disk.write_all_at(b"again", 7 * BLOCK + 3).unwrap();
    let (m2, _) = times(&m.disk());
    assert!(
        m2 > m1,
        "mtime {m2:?} did not advance past {m1:?} with a rewrite"
    );
    drop(disk);
    ok(Command::new("touch")
        .args(["-m", "-d", "@1000000000"])
        .arg(m.disk()));
    let (m3, c3) = times(&m.disk());
    assert_eq!(m3, (1_000_000_000, 0), "touch -d did not set the mtime");
    assert!(c3 >= c1, "ctime went back with touch");
    m.unmount();
}
