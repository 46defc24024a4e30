//! The clone overlay through a real mount (identity patch stage): equality with the master,
//! copy-on-write, durability across remounts and kill -9, refusals, sparse copies. The masters
//! here are random data, which sidfs refuses to clone with a new SID: every mount is a plain
//! copy (`--keep-sid`).

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const MIB: u64 = 1 << 20;

/// Prove that a directory mount and a file mount both present exactly the master (cmp), that
/// clone.json describes the clone, and that reading never writes the master.
#[test]
fn directory_and_file_mountpoints_show_the_master() {
    let s = Scratch::new("equal");
    let master = s.path("master.img");
    sparse_master(
        &master,
        48 * MIB + 1536,
        &[(0, 300_000), (20 * MIB, 1 << 20), (48 * MIB, 1536)],
        1,
    );
    let before = sha256(&master);

    let dir_mp = s.mkdir("dir");
    let m = Mounted::new(&master, &dir_mp, 7, &s.path("state-a"), &["--keep-sid"]);
    let names: BTreeSet<String> = std::fs::read_dir(&dir_mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["clone.json".into(), "disk.img".into()])
    );
    ok(Command::new("cmp").arg(m.disk()).arg(&master));
    let info: serde_json::Value =
        serde_json::from_slice(&read_all(&dir_mp.join("clone.json"))).unwrap();
    assert_eq!(info["seed"], 7);
    assert_eq!(info["disk_size"], 48 * MIB + 1536);
    assert!(std::fs::OpenOptions::new()
        .write(true)
        .open(dir_mp.join("clone.json"))
        .is_err());

    let file_mp = s.path("clone.img");
    std::fs::write(&file_mp, b"").unwrap();
    let f = Mounted::new(&master, &file_mp, 8, &s.path("state-b"), &["--keep-sid"]);
    assert_eq!(std::fs::metadata(&file_mp).unwrap().len(), 48 * MIB + 1536);
    ok(Command::new("cmp").arg(&file_mp).arg(&master));
    f.unmount();
    m.unmount();
    assert_eq!(
        std::fs::metadata(&file_mp).unwrap().len(),
        0,
        "the file mountpoint is restored"
    );
    assert_eq!(sha256(&master), before, "the master must never change");
}

/// Prove copy-on-write against a reference model: random writes at unaligned offsets and
/// lengths, fsync, unmount, remount: the clone equals the model; the delta holds exactly the blocks
/// the writes touched (so every other block is still read from the master); the master is
/// unchanged.
#[test]
fn random_unaligned_writes_survive_remount() {
    let s = Scratch::new("cow");
    let master = s.path("master.img");
    let size = 32 * MIB + 777;
    sparse_master(
        &master,
        size,
        &[
            (0, 2 << 20),
            (10 * MIB, 3 << 20),
            (size - 777 - 4096, 4096 + 777),
        ],
        2,
    );
    let before = sha256(&master);
    let mut model = read_all(&master);
    let mp = s.mkdir("mp");
    let state = s.path("state");
    let mut touched = BTreeSet::new();
    let mut rng = Rng(99);
    {
        let m = Mounted::new(&master, &mp, 1, &state, &["--keep-sid"]);
        let disk = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.disk())
            .unwrap();
        for _ in 0..300 {
            let max = if rng.below(4) == 0 { 300_000 } else { 9000 };
            let len = 1 + rng.below(max);
            let off = rng.below(size - len);
            let data = rng.bytes(len as usize);
            disk.write_all_at(&data, off).unwrap();
            model[off as usize..(off + len) as usize].copy_from_slice(&data);
            for b in off / 4096..=(off + len - 1) / 4096 {
                touched.insert(b);
            }
        }
        disk.sync_all().unwrap();
        // The live view already matches.
        let mut live = vec![0u8; size as usize];
        disk.read_exact_at(&mut live, 0).unwrap();
        assert!(live == model, "live clone differs from the model");
        drop(disk);
        m.unmount();
    }
    let m = Mounted::new(&master, &mp, 1, &state, &["--keep-sid"]);
    let got = read_all(&m.disk());
    assert!(got == model, "remounted clone differs from the model");
    let status = m.status();
    assert_eq!(
        status["delta_blocks"].as_u64().unwrap(),
        touched.len() as u64,
        "the delta must hold exactly the written blocks"
    );
    m.unmount();
    assert_eq!(sha256(&master), before);
}

/// Prove crash safety: a writer fsyncs batches while the daemon is killed with SIGKILL. After a
/// remount every fsync'ed batch reads back intact, and every block holds either the master's
/// data or data that was really written to it.
#[test]
fn kill_9_keeps_every_fsynced_write() {
    let s = Scratch::new("kill9");
    let master = s.path("master.img");
    let size = 64 * MIB;
    sparse_master(&master, size, &[(0, 8 << 20)], 3);
    let master_bytes = read_all(&master);
    let mp = s.mkdir("mp");
    let state = s.path("state");
    let m = Mounted::new(&master, &mp, 5, &state, &["--keep-sid"]);
    let pid = m.pid();
    let disk_path = m.disk();

    // Block b in round r holds the pattern (r, b) repeated; remember what was written and what
    // was acknowledged by fsync.
    let pattern = |round: u64, block: u64| -> Vec<u8> {
        let mut v = Vec::with_capacity(4096);
        while v.len() < 4096 {
            v.extend_from_slice(&round.to_le_bytes());
            v.extend_from_slice(&block.to_le_bytes());
        }
        v
    };
    let writer = std::thread::spawn(move || {
        let disk = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk_path)
            .unwrap();
        let mut rng = Rng(7);
        let mut written: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut acked: HashMap<u64, u64> = HashMap::new();
        let start = Instant::now();
        for round in 1.. {
            let mut this_round = Vec::new();
            for _ in 0..64 {
                let block = rng.below(size / 4096);
                if disk
                    .write_all_at(&pattern(round, block), block * 4096)
                    .is_err()
                {
                    return (written, acked);
                }
                written.entry(block).or_default().push(round);
                this_round.push(block);
            }
            if disk.sync_all().is_err() {
                return (written, acked);
            }
            for b in this_round {
                acked.insert(b, round);
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("the daemon was never killed");
            }
        }
        unreachable!()
    });
    std::thread::sleep(Duration::from_millis(1500));
    ok(Command::new("kill").arg("-9").arg(pid.to_string()));
    let (written, acked) = writer.join().unwrap();
    assert!(
        acked.len() > 100,
        "too few acknowledged writes before the kill: {}",
        acked.len()
    );
    m.forget();
    // The dead mount is cleared by sidfs umount.
    ok(sidfs().arg("umount").arg(&mp));
    let m = Mounted::new(&master, &mp, 5, &state, &["--keep-sid"]);
    let got = read_all(&m.disk());
    for (block, rounds) in &written {
        let at = (*block * 4096) as usize;
        let content = &got[at..at + 4096];
        if let Some(&acked_round) = acked.get(block) {
            // The acked version or any later written one, nothing else.
            let ok_rounds: Vec<u64> = rounds
                .iter()
                .copied()
                .filter(|&r| r >= acked_round)
                .collect();
            assert!(
                ok_rounds
                    .iter()
                    .any(|&r| content == pattern(r, *block).as_slice()),
                "block {block}: fsync'ed round {acked_round} lost"
            );
        } else {
            let is_master = content == &master_bytes[at..at + 4096];
            assert!(
                is_master
                    || rounds
                        .iter()
                        .any(|&r| content == pattern(r, *block).as_slice()),
                "block {block} shows data that was never written"
            );
        }
    }
    // Blocks never written read as the master.
    for b in 0..size / 4096 {
        if !written.contains_key(&b) {
            let at = (b * 4096) as usize;
            assert!(
                got[at..at + 4096] == master_bytes[at..at + 4096],
                "unwritten block {b} changed"
            );
        }
    }
    m.unmount();
}

/// Prove O_DIRECT I/O with an independent tool: qemu-io with -t none writes, reads back and
/// verifies patterns at aligned and unaligned offsets.
#[test]
fn qemu_io_direct_write_read_verify() {
    if !have_tool("qemu-io") {
        return;
    }
    let s = Scratch::new("qemuio");
    let master = s.path("master.img");
    sparse_master(&master, 64 * MIB, &[(0, 1 << 20)], 4);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 3, &s.path("state"), &["--keep-sid"]);
    let disk = m.disk();
    let out = ok(Command::new("qemu-io")
        .args(["-f", "raw", "-t", "none"])
        .args(["-c", "write -P 0xab 4096 1M"])
        .args(["-c", "write -P 0x5c 1536 512"])
        .args(["-c", "write -P 0x11 10000k 3584"])
        .args(["-c", "read -P 0xab 8192 1040384"])
        .args(["-c", "read -P 0x5c 1536 512"])
        .args(["-c", "read -P 0x11 10000k 3584"])
        .arg(&disk));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    // And with the page cache, after a remount.
    m.unmount();
    let m = Mounted::new(&master, &mp, 3, &s.path("state"), &["--keep-sid"]);
    let out = ok(Command::new("qemu-io")
        .args(["-f", "raw", "-t", "writeback"])
        .args(["-c", "read -P 0xab 8192 1040384"])
        .args(["-c", "read -P 0x5c 1536 512"])
        .args(["-c", "read -P 0x11 10000k 3584"])
        .arg(m.disk()));
    assert!(!out.contains("Pattern verification failed"), "{out}");
    m.unmount();
}

/// Prove the clone behaves as a disk for the kernel: a partition inside the mounted disk gets a
/// loop device (losetup -o), mkfs.ext4 and a clean fsck, and its files survive a remount.
#[test]
fn loop_device_on_partition_mkfs_fsck() {
    if !have_tool("losetup") || !have_tool("mkfs.ext4") || !have_tool("sfdisk") {
        return;
    }
    let s = Scratch::new("loop");
    let master = s.path("master.img");
    sparse_master(&master, 96 * MIB, &[], 5);
    let mut sf = Command::new("sfdisk");
    sf.arg("--quiet")
        .arg(&master)
        .stdin(std::process::Stdio::piped());
    let mut child = sf.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=131072, type=83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 9, &s.path("state"), &["--keep-sid"]);
    let (offset, size) = (2048 * 512, 131072u64 * 512);
    let dev = LoopDev::writable(&m.disk(), offset, size);
    ok(Command::new("mkfs.ext4").args(["-q", "-F", &dev.0]));
    ok(Command::new("fsck.ext4").args(["-f", "-n", &dev.0]));
    drop(dev);
    m.unmount();
    // The file system is in the clone (remount), and not in the master.
    let m = Mounted::new(&master, &mp, 9, &s.path("state"), &["--keep-sid"]);
    let dev = LoopDev::new(&m.disk(), offset, size);
    ok(Command::new("fsck.ext4").args(["-f", "-n", &dev.0]));
    drop(dev);
    m.unmount();
    let raw = read_all(&master);
    assert!(
        raw[2048 * 512 + 1024 + 56..2048 * 512 + 1024 + 58] != [0x53, 0xEF],
        "ext4 magic must not reach the master"
    );
}

/// Prove isolation: 8 clones of one master mounted at once, each written at the same offsets
/// with its own data, each reads back only its own; the master is unchanged.
#[test]
fn eight_clones_at_once_have_no_cross_talk() {
    let s = Scratch::new("eight");
    let master = s.path("master.img");
    sparse_master(&master, 16 * MIB, &[(0, 4 << 20)], 6);
    let before = sha256(&master);
    let mounts: Vec<Mounted> = (0..8u64)
        .map(|i| {
            Mounted::new(
                &master,
                &s.mkdir(&format!("mp{i}")),
                100 + i,
                &s.path(&format!("st{i}")),
                &["--keep-sid"],
            )
        })
        .collect();
    let offsets = [0u64, 4095, 1 << 20, 15 * MIB];
    for (i, m) in mounts.iter().enumerate() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(m.disk())
            .unwrap();
        for &off in &offsets {
            f.write_all_at(format!("clone-{i}-at-{off}").as_bytes(), off)
                .unwrap();
        }
        f.sync_all().unwrap();
    }
    for (i, m) in mounts.iter().enumerate() {
        let f = std::fs::File::open(m.disk()).unwrap();
        for &off in &offsets {
            let want = format!("clone-{i}-at-{off}");
            let mut buf = vec![0u8; want.len()];
            f.read_exact_at(&mut buf, off).unwrap();
            assert_eq!(String::from_utf8_lossy(&buf), want);
        }
    }
    for m in mounts {
        m.unmount();
    }
    assert_eq!(sha256(&master), before);
}

/// Prove every refusal is one clear line and leaves no mount behind.
#[test]
fn refusals_are_one_clear_line() {
    let s = Scratch::new("refuse");
    let master = s.path("master.img");
    sparse_master(&master, 8 * MIB, &[(0, 1 << 20)], 8);
    let mp = s.mkdir("mp");

    let err = one_line_error(&mount_cmd(
        &s.path("missing.img"),
        &mp,
        1,
        &s.path("st0"),
        &["--keep-sid"],
    ));
    assert!(err.contains("does not exist"), "{err}");
    let err = one_line_error(&mount_cmd(
        &master,
        &s.path("no-such-dir"),
        1,
        &s.path("st0"),
        &["--keep-sid"],
    ));
    assert!(
        err.contains("mountpoint") && err.contains("does not exist"),
        "{err}"
    );

    // A state made from one master refuses another master...
    let state = s.path("st1");
    Mounted::new(&master, &mp, 1, &state, &["--keep-sid"]).unmount();
    let other = s.path("other.img");
    sparse_master(&other, 8 * MIB, &[(0, 1 << 20)], 20);
    let err = one_line_error(&mount_cmd(&other, &mp, 1, &state, &["--keep-sid"]));
    assert!(err.contains("another master"), "{err}");
    // ...and another seed...
    let err = one_line_error(&mount_cmd(&master, &mp, 2, &state, &["--keep-sid"]));
    assert!(err.contains("seed"), "{err}");
    // ...and the same master once modified.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&master)
        .unwrap();
    f.write_all_at(b"changed", 0).unwrap();
    drop(f);
    let err = one_line_error(&mount_cmd(&master, &mp, 1, &state, &["--keep-sid"]));
    assert!(err.contains("changed"), "{err}");
    // A busy mountpoint.
    let m = Mounted::new(&master, &mp, 3, &s.path("st3"), &["--keep-sid"]);
    let err = one_line_error(&mount_cmd(&master, &mp, 4, &s.path("st4"), &["--keep-sid"]));
    assert!(err.contains("busy"), "{err}");
    // A state in use by a live clone.
    let mp2 = s.mkdir("mp2");
    let err = one_line_error(&mount_cmd(
        &master,
        &mp2,
        3,
        &s.path("st3"),
        &["--keep-sid"],
    ));
    assert!(err.contains("in use"), "{err}");
    m.unmount();
    // Read-only mounts refuse writes.
    let m = Mounted::new(
        &master,
        &mp,
        3,
        &s.path("st3"),
        &["--keep-sid", "--read-only"],
    );
    assert!(std::fs::OpenOptions::new()
        .write(true)
        .open(m.disk())
        .is_err());
    m.unmount();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&s.dir.to_string_lossy().into_owned()),
        "a refused mount left a mount behind"
    );
}

/// Prove sparse-awareness: on a 64 GiB master holding a few MiB, SEEK_DATA/SEEK_HOLE on the
/// clone answer as on the master (plus the delta's blocks), and `cp --sparse=always` of the
/// mounted disk gives a sparse copy equal to the master.
#[test]
fn sparse_64g_master_copies_in_proportion_to_data() {
    let s = Scratch::new("sparse");
    let master = s.path("master.img");
    let size = 64 << 30;
    let extents = [
        (0u64, 1 << 20),
        (5 << 30, 2 << 20),
        (40 << 30, 512 << 10),
        (size - 4096, 4096),
    ];
    sparse_master(&master, size, &extents, 10);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 11, &s.path("state"), &["--keep-sid"]);
    let disk = m.disk();

    let map = |path: &std::path::Path| -> Vec<(u64, u64)> {
        // (data start, hole start) pairs via python's os.lseek: an independent caller.
        let script = format!(
            "import os\nfd=os.open({:?},os.O_RDONLY)\nend=os.fstat(fd).st_size\npos=0\nwhile pos<end:\n  try: d=os.lseek(fd,pos,os.SEEK_DATA)\n  except OSError: break\n  h=os.lseek(fd,d,os.SEEK_HOLE)\n  print(d,h)\n  pos=h\n",
            path.to_string_lossy()
        );
        ok(Command::new("python3").arg("-c").arg(script))
            .lines()
            .map(|l| {
                let mut it = l.split(' ').map(|x| x.parse::<u64>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            })
            .collect()
    };
    assert_eq!(
        map(&disk),
        map(&master),
        "SEEK_DATA/SEEK_HOLE differ from the master's"
    );

    let copy = s.path("copy.img");
    let t = Instant::now();
    ok(Command::new("cp")
        .arg("--sparse=always")
        .arg(&disk)
        .arg(&copy));
    eprintln!(
        "cp --sparse=always of a 64 GiB clone took {:?}",
        t.elapsed()
    );
    let copy_alloc = std::fs::metadata(&copy).unwrap().blocks() * 512;
    assert!(
        copy_alloc < 64 * MIB,
        "the copy is not sparse: {copy_alloc} bytes allocated"
    );
    assert_eq!(map(&copy).len(), map(&master).len());
    let (a, b) = (
        std::fs::File::open(&copy).unwrap(),
        std::fs::File::open(&master).unwrap(),
    );
    for &(off, len) in &extents {
        let mut x = vec![0u8; len];
        let mut y = vec![0u8; len];
        a.read_exact_at(&mut x, off).unwrap();
        b.read_exact_at(&mut y, off).unwrap();
        assert!(x == y, "copy differs from master at {off:#x}");
    }
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), size);

    // A write in a hole becomes data in the clone's map.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(b"delta", 20 << 30).unwrap();
    f.sync_all().unwrap();
    let mut want = map(&master);
    want.push((20 << 30, (20 << 30) + 4096));
    want.sort();
    assert_eq!(map(&disk), want);
    drop(f);
    m.unmount();
}
