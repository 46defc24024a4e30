//! `sidfs export --format qcow2`: a qcow2 overlay whose backing file is the master, checked with
//! qemu's own tools: `qemu-img check` (clean), `qemu-img info` (backing file and format),
//! `qemu-img compare` against the mounted clone (identical), `qemu-img map` (the overlay holds
//! exactly the clusters where the clone differs from the master), `qemu-io` (a guest write goes
//! into the overlay) and the master's sha256 (never changed).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::*;

const CLUSTER: u64 = 64 << 10;

fn tools_present() -> bool {
    ["qemu-img", "qemu-io", "sha256sum", "tar"]
        .iter()
        .all(|t| have_tool(t))
}

fn export_qcow2(master: &Path, out: &Path, args: &[&str]) -> Output {
    run(sidfs()
        .arg("export")
        .arg("--format")
        .arg("qcow2")
        .arg(master)
        .arg(out)
        .args(args)
        .stdin(Stdio::null()))
}

fn export_ok(master: &Path, out: &Path, args: &[&str]) {
    let o = export_qcow2(master, out, args);
    assert!(
        o.status.success(),
        "sidfs export --format qcow2 failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `qemu-img check` must find no error, leak or corruption.
fn check_clean(image: &Path) {
    let out = ok(Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(image));
    assert!(
        out.contains("No errors were found"),
        "qemu-img check:\n{out}"
    );
}

fn info(image: &Path) -> serde_json::Value {
    let out = ok(Command::new("qemu-img")
        .args(["info", "--output=json", "-f", "qcow2"])
        .arg(image));
    serde_json::from_str(&out).unwrap()
}

/// `qemu-img compare` of the overlay with a raw image must say identical.
fn compare_identical(image: &Path, raw: &Path) {
    let out = ok(Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "raw"])
        .arg(image)
        .arg(raw));
    assert!(
        out.contains("Images are identical"),
        "qemu-img compare:\n{out}"
    );
}

/// The guest clusters the overlay itself holds (depth 0 in `qemu-img map`), data or zeros.
fn overlay_clusters(image: &Path) -> Vec<u64> {
    let out = ok(Command::new("qemu-img")
        .args(["map", "--output=json", "-f", "qcow2"])
        .arg(image));
    let map: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let mut clusters = Vec::new();
    for e in map.iter().filter(|e| e["depth"] == 0) {
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        assert_eq!(start % CLUSTER, 0, "{e}");
        clusters.extend(start / CLUSTER..(start + len).div_ceil(CLUSTER));
    }
    clusters
}

/// The 64 KiB clusters where two images of the same size differ.
fn differing_clusters(a: &Path, b: &Path) -> Vec<u64> {
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let size = fa.metadata().unwrap().len();
    assert_eq!(size, std::fs::metadata(b).unwrap().len());
    let (mut ba, mut bb) = (vec![0u8; CLUSTER as usize], vec![0u8; CLUSTER as usize]);
    let mut v = Vec::new();
    let mut at = 0;
    while at < size {
        let n = (size - at).min(CLUSTER) as usize;
        fa.read_exact_at(&mut ba[..n], at).unwrap();
        fb.read_exact_at(&mut bb[..n], at).unwrap();
        if ba[..n] != bb[..n] {
            v.push(at / CLUSTER);
        }
        at += n as u64;
    }
    v
}

/// Everything a qcow2 export must satisfy against the mounted clone `disk` of `master`.
fn assert_overlay_of(image: &Path, master: &Path, disk: &Path, backing: &str) {
    check_clean(image);
    let i = info(image);
    assert_eq!(i["backing-filename"], backing, "{i}");
    assert_eq!(i["backing-filename-format"], "raw", "{i}");
    assert_eq!(
        i["virtual-size"].as_u64(),
        Some(std::fs::metadata(master).unwrap().len())
    );
    compare_identical(image, disk);
    let differ = differing_clusters(master, disk);
    assert!(
        !differ.is_empty(),
        "the clone does not differ from the master"
    );
    assert_eq!(
        overlay_clusters(image),
        differ,
        "the overlay must hold exactly the clusters where the clone differs"
    );
}

/// A guest write through qemu lands in the overlay and reads back; the master stays as it was.
fn assert_guest_write_stays_in_overlay(image: &Path, master: &Path, master_sha: &str) {
    ok(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0xab 0 64k"])
        .arg(image));
    let out = ok(Command::new("qemu-io")
        .args(["-f", "qcow2", "-r", "-c", "read -P 0xab 0 64k"])
        .arg(image));
    assert!(out.contains("read 65536/65536"), "qemu-io read:\n{out}");
    check_clean(image);
    assert_eq!(sha256(master), master_sha, "the master changed");
}

/// Prove on a built Windows master: the qcow2 export is clean for qemu-img, names the master as
/// its raw backing file, is identical to the mounted clone of the same seed, holds exactly the
/// clusters where the clone differs, takes a guest write without touching the master, and that
/// a relative master path is recorded relative to the overlay's directory (qemu resolves it
/// from there, whatever the working directory).
#[test]
fn qcow2_export_of_a_built_master_is_the_mounted_clone() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("qcow2-built");
    let (master, _) = build_master(&s, "master.img", &[]);
    let before = sha256(&master);
    let overlay = s.path("clone.qcow2");
    export_ok(&master, &overlay, &["--seed", "5"]);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 5, &s.path("state"), &["--read-only"]);
    assert_overlay_of(&overlay, &master, &m.disk(), master.to_str().unwrap());

    // Relative paths, from a working directory that is neither the master's nor the output's.
    let out_dir = s.mkdir("vms/clones");
    let cwd = s.mkdir("elsewhere");
    let o = run(sidfs()
        .current_dir(&cwd)
        .args(["export", "--format", "qcow2", "../master.img"])
        .arg("../vms/clones/rel.qcow2")
        .args(["--seed", "5"])
        .stdin(Stdio::null()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rel = out_dir.join("rel.qcow2");
    assert_overlay_of(&rel, &master, &m.disk(), "../../master.img");
    m.unmount();
    assert_no_partial_files(&s.dir);
    assert_no_partial_files(&out_dir);

    assert_guest_write_stays_in_overlay(&overlay, &master, &before);
    assert_eq!(sha256(&master), before, "the master changed");
}

/// Prove the same on the real Windows 10 data disk (GPT, MSR, NTFS with shadow-copy data),
/// cloned with --old-sid: clean, identical to the mounted clone, exactly the differing
/// clusters, a guest write kept in the overlay, the master unchanged.
#[test]
fn qcow2_export_of_the_real_data_disk_is_the_mounted_clone() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("qcow2-real");
    let master = real_data_disk(&s);
    let old = REAL_DATA_DISK_SID;
    let before = sha256(&master);
    let overlay = s.path("clone.qcow2");
    export_ok(&master, &overlay, &["--seed", "9", "--old-sid", old]);
    let mp = s.mkdir("mp");
    let m = Mounted::new(
        &master,
        &mp,
        9,
        &s.path("state"),
        &["--old-sid", old, "--read-only"],
    );
    assert_overlay_of(&overlay, &master, &m.disk(), master.to_str().unwrap());
    m.unmount();
    assert_guest_write_stays_in_overlay(&overlay, &master, &before);
}

/// Prove that an export of an existing clone (`--state`) carries the guest's writes, and that a
/// cluster the clone's delta holds goes into the overlay even where its bytes equal the
/// master's (the clone owns it: a later change of that master region must not show through).
#[test]
fn qcow2_export_of_a_state_holds_every_cluster_of_its_delta() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("qcow2-state");
    let size = 64u64 << 20;
    let master = s.path("master.img");
    sparse_master(
        &master,
        size,
        &[
            (0, 1 << 20),
            (20 << 20, 3 << 20),
            (size - (1 << 20), 1 << 20),
        ],
        3,
    );
    let before = sha256(&master);
    let mp = s.mkdir("mp");
    let state = s.path("state");
    let m = Mounted::new(&master, &mp, 1, &state, &["--keep-sid"]);
    let disk = std::fs::OpenOptions::new()
        .write(true)
        .open(m.disk())
        .unwrap();
    // Cluster 2: the master's own bytes written back (same bytes, but now the clone's).
    let mut same = vec![0u8; 4096];
    std::fs::File::open(&master)
        .unwrap()
        .read_exact_at(&mut same, 2 * CLUSTER + 4096)
        .unwrap();
    disk.write_all_at(&same, 2 * CLUSTER + 4096).unwrap();
    // Cluster 100 (in a master hole): new bytes; cluster 330: zeros over master data.
    disk.write_all_at(&[0x77; 512], 100 * CLUSTER + 512)
        .unwrap();
    disk.write_all_at(&vec![0u8; CLUSTER as usize], 330 * CLUSTER)
        .unwrap();
    disk.sync_all().unwrap();
    drop(disk);
    m.unmount();

    let overlay = s.path("clone.qcow2");
    export_ok(
        &master,
        &overlay,
        &["--state", state.to_str().unwrap(), "--keep-sid"],
    );
    check_clean(&overlay);
    assert_eq!(overlay_clusters(&overlay), vec![2, 100, 330]);
    let m = Mounted::new(&master, &mp, 1, &state, &["--keep-sid", "--read-only"]);
    compare_identical(&overlay, &m.disk());
    m.unmount();
    assert_eq!(sha256(&master), before, "the master changed");
}

/// Prove the refusals: an existing output without --force (left as it was), the master itself
/// as output even with --force (and through a symlink), a disk that is no whole number of
/// 512-byte sectors, a block device; each one line on
/// stderr, exit status 1, the master unchanged. With --force an existing output is replaced.
#[test]
fn qcow2_export_refuses_to_overwrite_without_force_or_to_replace_the_master() {
    if !tools_present() {
        return;
    }
    let s = Scratch::new("qcow2-refuse");
    let master = s.path("master.img");
    sparse_master(&master, 8 << 20, &[(0, 1 << 20)], 4);
    let before = sha256(&master);

    let out = s.path("exists.qcow2");
    std::fs::write(&out, b"keep me").unwrap();
    let o = export_qcow2(&master, &out, &["--seed", "1", "--keep-sid"]);
    let err = one_line_error(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");

    let link = s.path("link.img");
    std::os::unix::fs::symlink(&master, &link).unwrap();
    for target in [&master, &link] {
        let o = export_qcow2(&master, target, &["--seed", "1", "--keep-sid", "--force"]);
        let err = one_line_error(&o);
        assert_eq!(o.status.code(), Some(1));
        assert!(err.contains("is the master"), "{err}");
        assert_eq!(sha256(&master), before, "the master changed");
    }

    // A disk that is no whole number of sectors: qemu would show it shorter.
    let odd = s.path("odd.img");
    sparse_master(&odd, (1 << 20) + 100, &[(0, 4096)], 5);
    let o = export_qcow2(&odd, &s.path("odd.qcow2"), &["--seed", "1", "--keep-sid"]);
    let err = one_line_error(&o);
    assert!(
        err.contains("512-byte sectors") && err.contains("--format raw"),
        "{err}"
    );
    assert!(!s.path("odd.qcow2").exists());

    // A block device that is not the master's (a loop device over the master is refused as the
    // master itself, before the format is considered).
    let other = s.path("other.img");
    std::fs::File::create(&other)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let dev = LoopDev::new(&other, 0, 8 << 20);
    let o = export_qcow2(&master, Path::new(&dev.0), &["--seed", "1", "--keep-sid"]);
    let err = one_line_error(&o);
    assert!(err.contains("block device"), "{err}");
    drop(dev);

    export_ok(&master, &out, &["--seed", "1", "--keep-sid", "--force"]);
    check_clean(&out);
    assert_eq!(info(&out)["backing-filename"], master.to_str().unwrap());
    assert_no_partial_files(&s.dir);
    assert_eq!(sha256(&master), before, "the master changed");
}

/// Prove that qemu boots the qcow2 export directly, with no sidfs process anywhere: the guest of
/// the boot master (scripts/build-boot-master) sees the clone's new machine SID, never the
/// master's, its writes land in the overlay (which stays clean for qemu-img), and the master
/// does not change. TCG unless SIDFS_QEMU_ACCEL=kvm; `timeout` ends a VM that hangs.
#[test]
fn qcow2_export_boots_in_qemu_without_sidfs() {
    let qemu = "qemu-system-x86_64";
    if !tools_present()
        || ![
            qemu, "syslinux", "mkfs.fat", "ntfs-3g", "losetup", "timeout",
        ]
        .iter()
        .all(|t| have_tool(t))
    {
        return;
    }
    let s = Scratch::new("qcow2-boot");
    let master = s.path("boot-master.img");
    ok(Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/build-boot-master"
    ))
    .arg(&master));
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_all(&s.path("boot-master.img.json"))).unwrap();
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let before = sha256(&master);
    let overlay = s.path("clone.qcow2");
    let o = export_qcow2(&master, &overlay, &["--seed", "7"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let new = stdout
        .split_whitespace()
        .find(|w| w.starts_with("S-1-5-21-") && *w != old)
        .unwrap_or_else(|| panic!("no new SID in: {stdout}"))
        .to_string();
    let clusters_before = overlay_clusters(&overlay).len();

    let accel = match std::env::var("SIDFS_QEMU_ACCEL").as_deref() {
        Ok("kvm") => "kvm",
        _ => "tcg",
    };
    let console = s.path("console.txt");
    let run = run(Command::new("timeout")
        .args([
            "600",
            qemu,
            "-accel",
            accel,
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
        ])
        .args(["-monitor", "none", "-serial"])
        .arg(format!("file:{}", console.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format=qcow2,cache=none",
            overlay.display()
        ))
        .stdin(Stdio::null()));
    let console = String::from_utf8_lossy(&read_all(&console)).into_owned();
    assert!(
        run.status.success(),
        "qemu failed ({}): {}\nconsole:\n{console}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        console.contains(&format!("SIDFS-GUEST machine-sid {new}")),
        "the guest did not see the clone's SID {new}:\n{console}"
    );
    assert!(
        !console.contains(&old),
        "the guest saw the master's SID:\n{console}"
    );
    assert!(
        console.contains("SIDFS-GUEST wrote guest-wrote.txt"),
        "{console}"
    );
    check_clean(&overlay);
    assert!(
        overlay_clusters(&overlay).len() > clusters_before,
        "the guest's writes are not in the overlay"
    );
    assert_eq!(sha256(&master), before, "the master changed");
}

/// Linux AIO from Python's ctypes (no other tool submits a batch at a moment the test
/// chooses): opens PATH with O_DIRECT, prints "opened", waits for a line on stdin, submits N
/// 4 KiB reads at offsets i * STEP in one io_submit, prints "submitted N" when io_submit
/// returns, waits for all of them and checks their bytes against MASTER.
const AIO_READS: &str = r#"# Submits N O_DIRECT 4 KiB reads of PATH in one io_submit (Linux AIO), reports when io_submit
# returned, waits for every completion and checks the bytes against MASTER.
import ctypes, mmap, os, struct, sys

SYS_IO_SETUP, SYS_IO_GETEVENTS, SYS_IO_SUBMIT = 206, 208, 209
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
path, master, n, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
print("opened", flush=True)
sys.stdin.readline()
ctx = ctypes.c_ulong(0)
if libc.syscall(ctypes.c_long(SYS_IO_SETUP), ctypes.c_long(n), ctypes.byref(ctx)) != 0:
    sys.exit(f"io_setup: errno {ctypes.get_errno()}")
bufs = [mmap.mmap(-1, 4096) for _ in range(n)]
iocbs = []
for i, b in enumerate(bufs):
    addr = ctypes.addressof(ctypes.c_char.from_buffer(b))
    # struct iocb (x86_64): data, key, rw_flags, opcode (0: PREAD), reqprio, fildes, buf,
    # nbytes, offset, reserved2, flags, resfd.
    raw = struct.pack("<QIIHhIQQqQII", i, 0, 0, 0, 0, fd, addr, 4096, i * step, 0, 0, 0)
    iocbs.append(ctypes.create_string_buffer(raw, 64))
ptrs = (ctypes.c_void_p * n)(*[ctypes.addressof(c) for c in iocbs])
r = libc.syscall(ctypes.c_long(SYS_IO_SUBMIT), ctx, ctypes.c_long(n), ptrs)
print(f"submitted {r}", flush=True)
if r != n:
    sys.exit(f"io_submit returned {r}, errno {ctypes.get_errno()}")
events = (ctypes.c_char * (32 * n))()
done = 0
while done < n:
    got = libc.syscall(ctypes.c_long(SYS_IO_GETEVENTS), ctx, ctypes.c_long(1),
                       ctypes.c_long(n - done), ctypes.byref(events, 32 * done), None)
    if got < 0:
        sys.exit(f"io_getevents: errno {ctypes.get_errno()}")
    done += got
with open(master, "rb") as m:
    for k in range(n):
        data, _obj, res, _res2 = struct.unpack_from("<QQqq", events, 32 * k)
        if res != 4096:
            sys.exit(f"read {data}: result {res}")
        m.seek(data * step)
        if bufs[data][:] != m.read(4096):
            sys.exit(f"read {data}: wrong bytes")
print("ok", flush=True)
"#;

/// Sends SIGCONT to a stopped daemon when dropped, so a failing test never leaves it stopped.
struct Stopped(i32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = pid as i32;
        // SAFETY: kill() with a PID this test read from the clone's status; no memory involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Prove that O_DIRECT reads submitted together (qemu's aio=native, fio's libaio) reach the
/// FUSE daemon together: with the daemon stopped, one io_submit of 48 reads must return at
/// once. Without FUSE_ASYNC_DIO the kernel serves each one synchronously inside io_submit (it
/// blocks on the first), and with the kernel's or fuser's background limit (12, 16) it blocks
/// at the 13th or 17th; sidfs asks for 64. After the daemon continues, every read completes
/// with the master's bytes.
#[test]
fn direct_aio_reads_reach_the_fuse_daemon_together() {
    use std::io::{BufRead, BufReader, Write};
    if !have_tool("python3") {
        return;
    }
    let s = Scratch::new("qcow2-aio");
    let master = s.path("master.img");
    sparse_master(&master, 64 << 20, &[(0, 64 << 20)], 6);
    let mp = s.mkdir("mp");
    let m = Mounted::new(&master, &mp, 1, &s.path("state"), &["--keep-sid"]);
    let script = s.path("aio.py");
    std::fs::write(&script, AIO_READS).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(m.disk())
        .arg(&master)
        .args(["48", &(1u64 << 20).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let wait = std::time::Duration::from_secs(60);
    assert_eq!(rx.recv_timeout(wait).as_deref(), Ok("opened"));
    let stopped = Stopped::new(m.pid());
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    // With the fix io_submit returns at once; without it, it cannot return while the daemon
    // is stopped, and this waits out the bound before failing.
    let while_stopped = rx.recv_timeout(wait);
    drop(stopped);
    let done = rx.recv_timeout(wait);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        while_stopped.as_deref(),
        Ok("submitted 48"),
        "io_submit of 48 O_DIRECT reads did not return while the daemon was stopped"
    );
    assert!(
        out.status.success() && done.as_deref() == Ok("ok"),
        "the reads failed: {done:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.unmount();
}

/// No temporary export file is left in `dir`.
fn assert_no_partial_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("sidfs-partial"), "left behind: {name}");
    }
}
