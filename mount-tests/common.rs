//! Shared harness for mount tests: the real `sidfs` binary, real mounts, real tools.
//! Every mount is undone when its guard drops, also when a test fails.

#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const SIDFS: &str = env!("CARGO_BIN_EXE_sidfs");

/// A scratch directory removed at the end of the test (after the mounts in it are gone).
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let base = std::env::var_os("SIDFS_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("sidfs-mt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when a tool's absence must fail the test instead of skipping it (CI sets this).
fn tools_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("SIDFS_REQUIRE_TOOLS").is_some()
}

/// Whether `tool` is on PATH. When it is not: in CI the test fails; elsewhere it prints why it
/// skips and returns false.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            !tools_required(),
            "required tool {tool} is not installed (run scripts/setup)"
        );
        eprintln!("SKIP: {tool} is not installed (run scripts/setup)");
    }
    found
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sidfs() -> Command {
    Command::new(SIDFS)
}

/// A mounted clone; unmounts on drop.
pub struct Mounted {
    pub mountpoint: PathBuf,
    pub state: PathBuf,
    active: bool,
}

impl Mounted {
    /// `sidfs mount MASTER MP --seed SEED --state STATE [extra...]`, which must succeed.
    pub fn new(
        master: &Path,
        mountpoint: &Path,
        seed: u64,
        state: &Path,
        extra: &[&str],
    ) -> Mounted {
        let out = mount_cmd(master, mountpoint, seed, state, extra);
        assert!(
            out.status.success(),
            "mount failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted {
            mountpoint: mountpoint.to_path_buf(),
            state: state.to_path_buf(),
            active: true,
        }
    }

    /// The clone's `clone.json` (its old and new SID, seed, master, ...).
    pub fn clone_info(&self) -> serde_json::Value {
        serde_json::from_slice(&read_all(&self.mountpoint.join("clone.json"))).unwrap()
    }

    /// The clone's new machine SID, from its `clone.json`.
    pub fn new_sid(&self) -> String {
        self.clone_info()["new_sid"].as_str().unwrap().to_string()
    }

    /// The clone's disk: `disk.img` in a directory mount, the mountpoint in a file mount.
    pub fn disk(&self) -> PathBuf {
        if self.mountpoint.is_dir() {
            self.mountpoint.join("disk.img")
        } else {
            self.mountpoint.clone()
        }
    }

    pub fn pid(&self) -> u32 {
        let s = ok(sidfs().arg("status").arg("--json").arg(&self.mountpoint));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v["serving_pid"].as_u64().expect("a serving pid") as u32
    }

    pub fn status(&self) -> serde_json::Value {
        let s = ok(sidfs().arg("status").arg("--json").arg(&self.state));
        serde_json::from_str(&s).unwrap()
    }

    /// `sidfs umount`, which must succeed.
    pub fn unmount(mut self) {
        self.active = false;
        ok(sidfs().arg("umount").arg(&self.mountpoint));
    }

    /// Forget the mount without unmounting (it was killed; the caller clears it).
    pub fn forget(mut self) {
        self.active = false;
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.active {
            let out = sidfs().arg("umount").arg(&self.mountpoint).output();
            if !out.map(|o| o.status.success()).unwrap_or(false) {
                let _ = Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(&self.mountpoint)
                    .output();
            }
        }
    }
}

pub fn mount_cmd(
    master: &Path,
    mountpoint: &Path,
    seed: u64,
    state: &Path,
    extra: &[&str],
) -> Output {
    run(sidfs()
        .arg("mount")
        .arg(master)
        .arg(mountpoint)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--state")
        .arg(state)
        .args(extra))
}

/// A small deterministic PRNG for workloads (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A sparse master of `size` bytes with random data at `extents` (offset, len).
pub fn sparse_master(path: &Path, size: u64, extents: &[(u64, usize)], seed: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    for &(off, len) in extents {
        f.write_all_at(&rng.bytes(len), off).unwrap();
    }
    f.sync_all().unwrap();
}

pub fn sha256(path: &Path) -> String {
    let out = ok(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_string()
}

pub fn read_all(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Stderr of a failed command, checked to be one line.
pub fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected a refusal, got success");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "a refusal is one line, got:\n{err}");
    err
}

/// Builds a test master with `scripts/build-test-master` (extra args such as `--layout mbr`,
/// `--variant hibernated`); returns its path and its manifest.
pub fn build_master(s: &Scratch, name: &str, args: &[&str]) -> (PathBuf, serde_json::Value) {
    let out = s.path(name);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-test-master");
    ok(Command::new(script).args(args).arg(&out));
    let manifest = std::fs::read(format!("{}.json", out.display())).expect("manifest");
    (out, serde_json::from_slice(&manifest).unwrap())
}

/// The machine SID of the master [`build_master`] makes without options (the builder is
/// deterministic), for tests that put a store holding it into [`windows_master_with`]-style
/// masters; one probe build per test run.
pub fn built_master_sid() -> String {
    static SID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SID.get_or_init(|| {
        let s = Scratch::new("probe-sid");
        let (_, manifest) = build_master(&s, "probe.img", &[]);
        manifest["machine_sid"].as_str().unwrap().to_string()
    })
    .clone()
}

/// The Windows partition's (start, size) from a builder manifest.
pub fn windows_partition(manifest: &serde_json::Value) -> (u64, u64) {
    let index = manifest["windows_partition"].as_u64().unwrap();
    let p = manifest["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["index"].as_u64() == Some(index))
        .unwrap();
    (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap())
}

/// A read-only loop device over part of a file; detached on drop.
pub struct LoopDev(pub String);

impl LoopDev {
    /// A read-only loop device.
    pub fn new(file: &Path, offset: u64, size: u64) -> LoopDev {
        Self::attach(file, offset, size, true)
    }

    /// A writable loop device.
    pub fn writable(file: &Path, offset: u64, size: u64) -> LoopDev {
        Self::attach(file, offset, size, false)
    }

    fn attach(file: &Path, offset: u64, size: u64, read_only: bool) -> LoopDev {
        let (offset, size) = (offset.to_string(), size.to_string());
        let mut args = vec!["-f", "--show", "-o", &offset, "--sizelimit", &size];
        if read_only {
            args.push("-r");
        }
        let dev = ok(Command::new("losetup").args(&args).arg(file));
        LoopDev(dev.trim().to_string())
    }
}
impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).output();
    }
}

/// A read-only ntfs-3g mount of a device or image; unmounted on drop.
pub struct NtfsMount(pub PathBuf);

impl NtfsMount {
    pub fn new(dev: &str, at: &Path) -> NtfsMount {
        std::fs::create_dir_all(at).unwrap();
        ok(Command::new("ntfs-3g")
            .args(["-o", "ro,show_sys_files"])
            .arg(dev)
            .arg(at));
        NtfsMount(at.to_path_buf())
    }
}

impl Drop for NtfsMount {
    fn drop(&mut self) {
        unmount_ntfs3g(&self.0);
    }
}

/// Comma-separated lowercase hex, as `hivexregedit --export` writes binary data.
pub fn hex_csv(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The three encodings of a machine SID "S-1-5-21-a-b-c": (ascii, utf16le, binary triple).
pub fn sid_forms(sid: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ascii = sid.as_bytes().to_vec();
    let utf16: Vec<u8> = sid.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let triple: Vec<u8> = sid
        .trim_start_matches("S-1-5-21-")
        .split('-')
        .flat_map(|p| p.parse::<u32>().unwrap().to_le_bytes())
        .collect();
    (ascii, utf16, triple)
}

pub fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Every byte form of a computer name or GUID that sidfs replaces (docs/IDENTIFIERS.md): text in
/// upper and lower case as ASCII and UTF-16LE, and for GUIDs the 16-byte binary GUID.
pub fn identifier_forms(value: &str) -> Vec<Vec<u8>> {
    let bare = value.trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    for s in [bare.to_ascii_uppercase(), bare.to_ascii_lowercase()] {
        out.push(s.as_bytes().to_vec());
        out.push(s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect());
    }
    if bare.len() == 36 && bare.matches('-').count() == 4 {
        let hex: String = bare.chars().filter(|c| *c != '-').collect();
        let t: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        out.push(vec![
            t[3], t[2], t[1], t[0], t[5], t[4], t[7], t[6], t[8], t[9], t[10], t[11], t[12], t[13],
            t[14], t[15],
        ]);
    }
    out
}

/// A `hivexregedit --export` of the master with the clone's identifiers (clone.json
/// `identity.changes`) replaced in every form, sections sorted: the clone re-sorts the subkey
/// list of a renamed key (an MSDTC CID), so the order of sections may differ.
pub fn map_identifiers(export: &str, info: &serde_json::Value) -> String {
    let mut out = export.to_string();
    for c in info["identity"]["changes"].as_array().into_iter().flatten() {
        let (old, new) = (c["old"].as_str().unwrap(), c["new"].as_str().unwrap());
        let (olds, news) = (identifier_forms(old), identifier_forms(new));
        for (o, n) in olds.iter().zip(&news) {
            out = out.replace(&hex_csv(o), &hex_csv(n));
        }
        let (ob, nb) = (
            old.trim_start_matches('{').trim_end_matches('}'),
            new.trim_start_matches('{').trim_end_matches('}'),
        );
        out = out
            .replace(&ob.to_ascii_uppercase(), &nb.to_ascii_uppercase())
            .replace(&ob.to_ascii_lowercase(), &nb.to_ascii_lowercase());
    }
    sorted_sections(&out)
}

/// The sections (`[key]` and its values) of a hivexregedit export, sorted.
pub fn sorted_sections(export: &str) -> String {
    let mut sections: Vec<&str> = export.split("\n\n").collect();
    sections.sort();
    sections.join("\n\n")
}

/// A file or folder of `../shared/realdata` (tests read the real data where it lies).
/// The real SRUDB.dat of `../shared/realdata/ese-srum`, unpacked (it is stored gzipped).
pub fn real_srudb() -> Vec<u8> {
    let out = run(Command::new("gunzip")
        .arg("-c")
        .arg(realdata("ese-srum/SRUDB.dat.gz")));
    assert!(out.status.success(), "gunzip of SRUDB.dat.gz failed");
    out.stdout
}

pub fn realdata(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/realdata")).join(rel)
}

/// The machine SID of the real Windows 10 data disk (../shared/realdata/ntfs-win10-data-disk).
pub const REAL_DATA_DISK_SID: &str = "S-1-5-21-3544599609-778476966-3151826751";

/// Unpacks the real disk Windows 10 partitioned and formatted (a 5 GiB sparse GPT disk: MSR +
/// NTFS with shadow-copy data; ../shared/realdata/ntfs-win10-data-disk) into the scratch
/// directory, where tests may write next to it; returns its path.
pub fn real_data_disk(s: &Scratch) -> PathBuf {
    let tar = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/realdata/ntfs-win10-data-disk/vss_1_vol.tar.gz"
    );
    ok(Command::new("tar")
        .arg("-xzSf")
        .arg(tar)
        .arg("-C")
        .arg(&s.dir));
    s.path("vss_1_vol.raw")
}

/// A read-write ntfs-3g mount; unmounted on drop (also when the test fails).
pub struct RwMount(pub PathBuf);

impl Drop for RwMount {
    fn drop(&mut self) {
        unmount_ntfs3g(&self.0);
    }
}

/// Size of the data disks [`data_disk`] makes.
pub const DATA_DISK_SIZE: u64 = 64 << 20;

/// A bare NTFS volume (no partition table: a data disk) made by mkntfs, holding `files` (path on
/// the volume, bytes) written through ntfs-3g.
pub fn data_disk(s: &Scratch, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let img = s.path(name);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(DATA_DISK_SIZE)
        .unwrap();
    ok(Command::new("mkntfs").args(["-F", "-Q", "-q"]).arg(&img));
    write_files(s, &img, 0, DATA_DISK_SIZE, files);
    img
}

/// Writes `files` (path on the volume, bytes) into the NTFS volume at `start` (`size` bytes) of
/// `image`, through a writable loop device and ntfs-3g.
pub fn write_files(s: &Scratch, image: &Path, start: u64, size: u64, files: &[(&str, &[u8])]) {
    let dev = LoopDev::writable(image, start, size);
    let name = image.file_name().unwrap().to_string_lossy().into_owned();
    let vol = s.mkdir(&format!("{name}-rw"));
    ok(Command::new("ntfs-3g").arg(&dev.0).arg(&vol));
    let m = RwMount(vol);
    for (path, bytes) in files {
        let p = m.0.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    drop(m);
    drop(dev);
}

/// The files `paths` (paths on the volume) read through a read-only ntfs-3g mount of the NTFS
/// volume at (`start`, `size`) of `image` (a master or a clone's disk), in that order.
pub fn read_volume_files(
    s: &Scratch,
    image: &Path,
    (start, size): (u64, u64),
    paths: &[&str],
) -> Vec<Vec<u8>> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dev = LoopDev::new(image, start, size);
    let at = s.path(&format!("ro-{}", N.fetch_add(1, Ordering::Relaxed)));
    let nm = NtfsMount::new(&dev.0, &at);
    paths.iter().map(|p| read_all(&nm.0.join(p))).collect()
}

/// One file for [`write_fragmented`]: its path on the volume, its first and second part.
pub type FragmentedFile<'a> = (&'a str, &'a [u8], &'a [u8]);

/// Writes files of two parts each through a read-write ntfs-3g mount at `vol`, so that ntfs-3g
/// itself stores each second part away from its first: the first parts are written, then per
/// file a `gap`-byte gap file (0: none; it keeps the spacer from touching the first part) and a
/// `spacer`-byte spacer; the volume is filled up, the spacers deleted, and the second parts
/// appended (the only free clusters left are the spacers'). Prove the result with
/// [`ntfs_run_count`] or [`ntfs_runlist`].
pub fn write_fragmented(vol: &Path, files: &[FragmentedFile<'_>], gap: usize, spacer: usize) {
    use std::io::Write;
    for (i, (name, first, _)) in files.iter().enumerate() {
        let path = vol.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(first).unwrap();
        f.sync_all().unwrap();
        if gap > 0 {
            std::fs::write(vol.join(format!("gap{i}")), vec![b'g'; gap]).unwrap();
        }
        std::fs::write(vol.join(format!("spacer{i}")), vec![b's'; spacer]).unwrap();
    }
    let mut blocker = std::fs::File::create(vol.join("blocker")).unwrap();
    for chunk in [1usize << 20, 4096, 512] {
        while blocker.write_all(&vec![b'Z'; chunk]).is_ok() {}
    }
    drop(blocker);
    for i in 0..files.len() {
        std::fs::remove_file(vol.join(format!("spacer{i}"))).unwrap();
    }
    for (name, _, second) in files {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(vol.join(name))
            .unwrap();
        f.write_all(second).unwrap();
        f.sync_all().unwrap();
    }
}

/// A bare NTFS volume of `size` bytes with `cluster`-byte clusters (mkntfs) holding one file
/// written in two fragments by [`write_fragmented`] (`gap`, `spacer` as there). Returns the image
/// and the number of runs ntfsinfo lists for the file.
pub fn fragmented_data_disk(
    s: &Scratch,
    name: &str,
    (size, cluster): (u64, u64),
    file: FragmentedFile<'_>,
    (gap, spacer): (usize, usize),
) -> (PathBuf, Vec<(u64, u64, u64)>) {
    let img = s.path(name);
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    ok(Command::new("mkntfs")
        .args(["-F", "-Q", "-q", "-c", &cluster.to_string()])
        .arg(&img));
    let dev = LoopDev::writable(&img, 0, size);
    let vol = s.mkdir(&format!("{name}-rw"));
    ok(Command::new("ntfs-3g").arg(&dev.0).arg(&vol));
    let m = RwMount(vol);
    write_fragmented(&m.0, &[file], gap, spacer);
    drop(m);
    let runs = ntfs_runlist(&dev.0, &format!("/{}", file.0));
    drop(dev);
    (img, runs)
}

/// The number of data runs `ntfsinfo` (independent of sidfs) lists for `path` on the volume
/// `dev`: the precondition of a fragmentation test.
pub fn ntfs_run_count(dev: &str, path: &str) -> usize {
    let out = ok(Command::new("ntfsinfo").args(["-v", "-F", path, dev]));
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Total runs: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no run count for {path}:\n{out}"))
}

/// The runlist `ntfsinfo` prints for `path`'s `$DATA` on the volume `dev`: (vcn, lcn, length).
pub fn ntfs_runlist(dev: &str, path: &str) -> Vec<(u64, u64, u64)> {
    let out = ok(Command::new("ntfsinfo").args(["-v", "-F", path, dev]));
    let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok();
    let runs: Vec<(u64, u64, u64)> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Runlist:"))
        .skip(1)
        .map_while(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                [vcn, lcn, len] => Some((hex(vcn)?, hex(lcn)?, hex(len)?)),
                _ => None,
            }
        })
        .collect();
    assert!(!runs.is_empty(), "no runlist for {path}:\n{out}");
    runs
}

/// Unmounts the ntfs-3g mount at `dir` (retrying for up to 3 s while it is busy) and waits (up to
/// 20 s) until its ntfs-3g process has exited: `fusermount3 -u` returns before ntfs-3g has
/// written its last metadata, and a test that reads the image (or detaches its loop device)
/// before then sees a volume half written.
pub fn unmount_ntfs3g(dir: &Path) {
    let serving = || ntfs3g_serving(dir);
    for _ in 0..30 {
        let done = Command::new("fusermount3")
            .arg("-u")
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if done || !is_mount_point(dir) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if is_mount_point(dir) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(dir)
            .status();
    }
    for _ in 0..1000 {
        if !serving() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "ntfs-3g for {} did not exit after its unmount",
        dir.display()
    );
}

/// Whether `dir` is listed as a mount point in /proc/self/mounts.
fn is_mount_point(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .filter_map(|l| l.split(' ').nth(1))
            .any(|p| Path::new(p) == dir)
    })
}

/// Whether an ntfs-3g process whose arguments name `dir` is still running.
fn ntfs3g_serving(dir: &Path) -> bool {
    let want = dir.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            return false;
        };
        let mut args = cmdline.split(|&b| b == 0);
        args.next().is_some_and(|a| a.ends_with(b"ntfs-3g")) && args.any(|a| a == want)
    })
}
