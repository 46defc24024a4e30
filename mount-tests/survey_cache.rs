//! The survey cache (src/rewrite/survey_cache.rs): a later clone of a master takes the master's
//! survey from the cache (its log says so) and is byte for byte the clone made with the cache
//! off (`cmp`, `qemu-img compare`); a corrupted or truncated cache file is ignored and replaced,
//! and the clone is still the same; the cache directory is 0700 and its files 0600.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

/// How a command finds the cache: in `dir`, or off.
#[derive(Clone, Copy)]
enum Cache<'a> {
    In(&'a Path),
    Off,
}

fn with_cache<'c>(cmd: &'c mut Command, cache: Cache<'_>) -> &'c mut Command {
    match cache {
        Cache::In(dir) => cmd.env("SIDFS_CACHE_DIR", dir).env_remove("SIDFS_NO_CACHE"),
        Cache::Off => cmd.env("SIDFS_NO_CACHE", "1"),
    }
}

/// A clone mounted with a given cache setting; unmounted on drop.
struct CacheMount {
    mountpoint: PathBuf,
    state: PathBuf,
}

impl CacheMount {
    fn new(s: &Scratch, master: &Path, name: &str, seed: u64, cache: Cache<'_>) -> CacheMount {
        let mountpoint = s.mkdir(&format!("mp-{name}"));
        let state = s.path(&format!("state-{name}"));
        let out = run(with_cache(&mut sidfs(), cache)
            .arg("mount")
            .arg(master)
            .arg(&mountpoint)
            .arg("--seed")
            .arg(seed.to_string())
            .arg("--state")
            .arg(&state));
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        CacheMount { mountpoint, state }
    }

    fn disk(&self) -> PathBuf {
        self.mountpoint.join("disk.img")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("sidfs.log")).unwrap_or_default()
    }
}

impl Drop for CacheMount {
    fn drop(&mut self) {
        let ok = sidfs()
            .arg("umount")
            .arg(&self.mountpoint)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .output();
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The one cache file in `dir`.
fn cache_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "survey"))
        .collect();
    assert_eq!(files.len(), 1, "one cache file per master: {files:?}");
    files.into_iter().next().unwrap()
}

fn same_bytes(a: &Path, b: &Path) {
    ok(Command::new("cmp").arg(a).arg(b));
}

/// Prove that the second mount of a master (another seed) uses the cache and gives the very
/// clone the cache-less mount gives; that a corrupted and a truncated cache file are ignored
/// (logged), replaced, and change nothing in the clone; and the cache's modes.
#[test]
fn later_mounts_use_the_cache_and_give_the_same_clone() {
    let s = Scratch::new("survey-cache-mount");
    let (master, _) = build_master(&s, "master.img", &[]);
    let dir = s.path("cache");

    let first = CacheMount::new(&s, &master, "first", 1, Cache::In(&dir));
    assert!(
        first.log().contains("survey cache: none yet"),
        "{}",
        first.log()
    );
    drop(first);
    assert_eq!(mode(&dir), 0o700, "the cache directory is private");
    let file = cache_file(&dir);
    assert_eq!(mode(&file), 0o600, "the cache file is private");

    let cached = CacheMount::new(&s, &master, "cached", 2, Cache::In(&dir));
    assert!(
        cached.log().contains("survey cache: using"),
        "{}",
        cached.log()
    );
    let plain = CacheMount::new(&s, &master, "plain", 2, Cache::Off);
    assert!(plain.log().contains("survey cache: off"), "{}", plain.log());
    same_bytes(&cached.disk(), &plain.disk());
    drop((cached, plain));

    // A flipped byte in the body: ignored, the clone still the same, the file written again.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let corrupt = CacheMount::new(&s, &master, "corrupt", 3, Cache::In(&dir));
    assert!(
        corrupt.log().contains("ignored (checksum mismatch"),
        "{}",
        corrupt.log()
    );
    let plain3 = CacheMount::new(&s, &master, "plain3", 3, Cache::Off);
    same_bytes(&corrupt.disk(), &plain3.disk());
    drop((corrupt, plain3));
    assert_eq!(mode(&cache_file(&dir)), 0o600);

    // A truncated file: ignored too; the next mount finds a sound one again.
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let cut = CacheMount::new(&s, &master, "cut", 4, Cache::In(&dir));
    assert!(cut.log().contains("ignored (truncated"), "{}", cut.log());
    let plain4 = CacheMount::new(&s, &master, "plain4", 4, Cache::Off);
    same_bytes(&cut.disk(), &plain4.disk());
    drop((cut, plain4));
    let again = CacheMount::new(&s, &master, "again", 5, Cache::In(&dir));
    assert!(
        again.log().contains("survey cache: using"),
        "{}",
        again.log()
    );
}

fn export_qcow2(master: &Path, out: &Path, seed: u64, cache: Cache<'_>) -> String {
    let o = run(with_cache(&mut sidfs(), cache)
        .env("RUST_LOG", "info")
        .arg("export")
        .arg("--format")
        .arg("qcow2")
        .arg(master)
        .arg(out)
        .arg("--seed")
        .arg(seed.to_string())
        .stdin(Stdio::null()));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "sidfs export failed: {stderr}");
    stderr
}

/// Prove that the qcow2 export of a later clone compares only where the clone can differ (its
/// log says so) and is identical, for qemu, to the export of the same seed with the cache off:
/// same guest bytes and the same clusters in the overlay.
#[test]
fn later_qcow2_export_uses_the_cache_and_is_the_same_overlay() {
    if !have_tool("qemu-img") {
        return;
    }
    let s = Scratch::new("survey-cache-qcow2");
    let (master, _) = build_master(&s, "master.img", &[]);
    let dir = s.path("cache");
    let first = export_qcow2(&master, &s.path("first.qcow2"), 1, Cache::In(&dir));
    assert!(first.contains("found the master's SID places"), "{first}");
    let later = s.path("later.qcow2");
    let log = export_qcow2(&master, &later, 2, Cache::In(&dir));
    assert!(log.contains("where the clone can differ"), "{log}");
    let plain = s.path("plain.qcow2");
    export_qcow2(&master, &plain, 2, Cache::Off);
    let out = ok(Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "qcow2"])
        .arg(&later)
        .arg(&plain));
    assert!(out.contains("Images are identical"), "{out}");
    let map = |p: &Path| {
        ok(Command::new("qemu-img")
            .args(["map", "--output=json", "-f", "qcow2"])
            .arg(p))
    };
    assert_eq!(map(&later), map(&plain), "the same clusters in the overlay");
    // The first clone's overlay is still the clone of seed 1 (the cache changed nothing there).
    let out = ok(Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(s.path("first.qcow2")));
    assert!(out.contains("No errors were found"), "{out}");
}

/// An ntfs-3g read-write mount of a loop device; unmounted on drop (before the loop device).
struct NtfsRw(PathBuf);

impl Drop for NtfsRw {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.0).output();
    }
}

/// Writes `first`, a one-cluster spacer, fills the volume, frees the spacer and appends
/// `second`: the second part lands far from the first, so the SID split between them lies
/// across a fragment junction (as in clone_check.rs).
fn write_split_file(vol: &Path, name: &str, first: &[u8], second: &[u8]) {
    use std::io::Write;
    std::fs::write(vol.join(name), first).unwrap();
    std::fs::write(vol.join("spacer"), vec![b's'; 4096]).unwrap();
    let mut blocker = std::fs::File::create(vol.join("blocker")).unwrap();
    for chunk in [1usize << 20, 4096] {
        while blocker.write_all(&vec![b'Z'; chunk]).is_ok() {}
    }
    drop(blocker);
    std::fs::remove_file(vol.join("spacer")).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(vol.join(name))
        .unwrap();
    f.write_all(second).unwrap();
    f.sync_all().unwrap();
}

/// Prove that the fragment-junction findings taken from the cache give the same clone: on a
/// master with a SID across a fragment junction, the later clone's log reports the same SID
/// across the junction, and its disk is `cmp`-identical to the cache-less clone's.
#[test]
fn cached_junctions_give_the_same_clone() {
    if !have_tool("ntfs-3g") || !have_tool("losetup") {
        return;
    }
    let s = Scratch::new("survey-cache-junction");
    let (built, manifest) = build_master(&s, "built.img", &[]);
    let old = manifest["machine_sid"].as_str().unwrap().to_string();
    let (start, size) = windows_partition(&manifest);
    let master = s.path("fragmented.img");
    std::fs::copy(&built, &master).unwrap();
    let (_, _, triple) = sid_forms(&old);
    let mut first = vec![b'b'; 4096 * 2 - 5];
    first.extend_from_slice(&triple[..5]);
    let mut second = triple[5..].to_vec();
    second.extend(vec![b'B'; 3000]);
    {
        let dev = LoopDev::writable(&master, start, size);
        let vol = s.mkdir("rw");
        ok(Command::new("ntfs-3g").arg(&dev.0).arg(&vol));
        let mounted = NtfsRw(vol.clone());
        write_split_file(&vol, "split.bin", &first, &second);
        drop(mounted);
    }
    let dir = s.path("cache");
    let across = "1 SIDs across them";
    let one = CacheMount::new(&s, &master, "j1", 1, Cache::In(&dir));
    assert!(one.log().contains(across), "{}", one.log());
    drop(one);
    let cached = CacheMount::new(&s, &master, "j2", 2, Cache::In(&dir));
    let log = cached.log();
    assert!(
        log.contains("survey cache: using") && log.contains(across),
        "{log}"
    );
    let plain = CacheMount::new(&s, &master, "j2-off", 2, Cache::Off);
    assert!(plain.log().contains(across), "{}", plain.log());
    same_bytes(&cached.disk(), &plain.disk());
}
