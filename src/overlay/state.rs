//! The per-clone state directory: versioned metadata, the exclusive lock, and the delta files.
//!
//! ```text
//! STATE_DIR/
//!   state.json   magic, format version, block size, master fingerprint, seed (written once)
//!   lock         flock()ed by the process serving the clone; holds its pid and mountpoint
//!   delta.bin    see delta.rs
//!   map.bin      see delta.rs
//!   sidfs.log    log of the background mount daemon
//! ```
//! The whole clone is this directory: copy it (with the master) and the clone moves with it.
//!
//! It holds the guest's data, so it is private to its owner: the directory is 0700 and every
//! file in it 0600, set explicitly (whatever the umask) and tightened on attach.
//!
//! Two locks guard it. The directory itself is `flock()`ed by a mount from before it looks at the
//! state until its process ends ([`StateClaim`]): only the holder of that claim may create a
//! clone in it or remove what a first mount that never served left behind. `lock` is held by
//! whichever process has the delta open (a mount or an export).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::delta::{DeltaStore, DELTA_FILE, MAP_FILE};
use super::error::{OverlayError, Result};
use super::master::{MasterFingerprint, MasterImage};
use super::units::Geometry;

pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "lock";
pub const LOG_FILE: &str = "sidfs.log";
/// state.json is written here first and renamed over it.
pub const STATE_TMP_FILE: &str = "state.json.tmp";
/// Every file sidfs keeps in a state directory.
pub const STATE_FILES: [&str; 6] = [
    STATE_FILE,
    STATE_TMP_FILE,
    LOCK_FILE,
    LOG_FILE,
    DELTA_FILE,
    MAP_FILE,
];
/// The state directory's mode: its owner only (it holds the guest's data).
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file in a state directory.
pub const FILE_MODE: u32 = 0o600;
/// How often a lock found busy is tried again before it counts as held: `sidfs status` and
/// `sidfs umount` probe the lock with a shared flock for an instant, which must not make a
/// concurrent mount refuse.
const LOCK_ATTEMPTS: u32 = 5;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);
/// How often the lock file or the directory is reopened when it was replaced (removed by a
/// first mount that never served) between opening it and locking it.
const REOPEN_ATTEMPTS: u32 = 8;
/// Identifies a sidfs state file; a later release reads this to decide whether it understands
/// the clone.
pub const STATE_MAGIC: &str = "sidfs-clone-state";
pub const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MasterRecord {
    /// The path the master had when the clone was created (informational: the fingerprint is the
    /// identity, so a master may move).
    pub path: PathBuf,
    pub fingerprint: MasterFingerprint,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StateMeta {
    pub magic: String,
    pub version: u32,
    pub block_size: u32,
    pub master: MasterRecord,
    /// The seed the clone's identity derives from.
    pub seed: u64,
    /// Whether the seed was chosen at random (no --seed given at creation).
    pub seed_was_random: bool,
    pub created_unix: u64,
    /// The master's machine SID and the clone's new one, recorded the first time the clone is
    /// mounted (absent for a master without Windows), so a remount never re-derives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_sid: Option<String>,
    /// A plain copy-on-write clone: the SID is kept (`--keep-sid`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_sid: bool,
    /// Fields added by later versions land here, so that rewriting the file keeps them.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An opened, locked clone state.
pub struct CloneState {
    dir: PathBuf,
    meta: StateMeta,
    lock: File,
}

/// What the caller asks for when attaching to a state directory.
pub struct AttachRequest<'a> {
    pub dir: &'a Path,
    pub master: &'a MasterImage,
    /// `None`: use the seed recorded in the state, or pick a random one for a new clone.
    pub seed: Option<u64>,
    pub block_size: u32,
    /// Create a plain copy-on-write clone that keeps the master's SID.
    pub keep_sid: bool,
}

impl CloneState {
    /// Opens the clone state at `req.dir`, creating it if it does not exist, and takes its lock.
    /// Refuses a state that belongs to another master or seed. Returns the state, its delta and
    /// whether it was just created.
    pub fn attach(req: &AttachRequest<'_>) -> Result<(Self, DeltaStore, bool)> {
        let dir = req.dir;
        create_private_dir(dir)?;
        let lock = take_lock(dir)?;
        tighten_files(dir)?;
        let state_path = dir.join(STATE_FILE);
        let fingerprint = req.master.fingerprint()?;
        let geometry_for = |block_size| Geometry::new(req.master.size(), block_size);
        let (meta, delta, created) = if state_path.exists() {
            let meta = read_meta(&state_path)?;
            check_compatible(dir, &meta, req, &fingerprint)?;
            let delta = DeltaStore::open(dir, geometry_for(meta.block_size))?;
            (meta, delta, false)
        } else {
            // Without state.json no clone was ever handed out (it is written before the first
            // mount serves), so delta files without it are the leftovers of a first mount that
            // died early (kill -9): under the lock, they are removed and the clone starts afresh.
            for name in [DELTA_FILE, MAP_FILE, STATE_TMP_FILE] {
                let path = dir.join(name);
                match std::fs::remove_file(&path) {
                    Ok(()) => log::warn!(
                        "removed {} left by a first mount that never completed (no {STATE_FILE})",
                        path.display()
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(OverlayError::io("cannot remove", &path, e)),
                }
            }
            let (seed, seed_was_random) = match req.seed {
                Some(s) => (s, false),
                None => (random_seed()?, true),
            };
            let meta = StateMeta {
                magic: STATE_MAGIC.into(),
                version: STATE_VERSION,
                block_size: req.block_size,
                master: MasterRecord {
                    path: absolute(req.master.path()),
                    fingerprint,
                },
                seed,
                seed_was_random,
                created_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                old_sid: None,
                new_sid: None,
                keep_sid: req.keep_sid,
                extra: Default::default(),
            };
            let delta = DeltaStore::create(dir, geometry_for(meta.block_size))?;
            tighten_files(dir)?;
            // state.json last: its presence marks a complete state.
            write_meta_atomically(dir, &meta)?;
            (meta, delta, true)
        };
        Ok((
            CloneState {
                dir: dir.into(),
                meta,
                lock,
            },
            delta,
            created,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &StateMeta {
        &self.meta
    }

    /// Records in the lock file, after the pid, the mountpoint this process serves the clone at,
    /// so that `sidfs status` and `sidfs umount` tell the live mount from a dead one.
    pub fn record_mountpoint(&self, mountpoint: &Path) -> Result<()> {
        let path = self.dir.join(LOCK_FILE);
        let record = LockRecord {
            pid: std::process::id(),
            mountpoint: Some(mountpoint.to_path_buf()),
        };
        write_lock_record(&self.lock, &record)
            .map_err(|e| OverlayError::io("cannot write lock", &path, e))
    }

    /// Records the clone's SIDs in state.json (atomically), once.
    pub fn record_sids(&mut self, old: &str, new: &str) -> Result<()> {
        self.meta.old_sid = Some(old.to_string());
        self.meta.new_sid = Some(new.to_string());
        write_meta_atomically(&self.dir, &self.meta)
    }

    /// Records a field added by a later feature (kept in `extra`, written at once).
    pub fn record_extra(&mut self, key: &str, value: serde_json::Value) -> Result<()> {
        self.meta.extra.insert(key.to_string(), value);
        write_meta_atomically(&self.dir, &self.meta)
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn random_seed() -> Result<u64> {
    let mut b = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| OverlayError::io("cannot read", "/dev/urandom", e))?;
    // Keep seeds readable: 12 decimal digits are plenty of distinct clones.
    Ok(u64::from_le_bytes(b) % 1_000_000_000_000)
}

/// Takes `dir/lock` exclusively and writes this process's pid into it.
fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = lock_exclusively(&path, || {
        create_private_dir(dir)?;
        open_private(
            &path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .map_err(|e| OverlayError::io("cannot open lock", &path, e))
    })?
    .ok_or_else(|| OverlayError::StateInUse {
        state_dir: dir.into(),
        pid: read_lock_record(&path).map(|r| r.pid),
    })?;
    let record = LockRecord {
        pid: std::process::id(),
        mountpoint: None,
    };
    write_lock_record(&file, &record)
        .map_err(|e| OverlayError::io("cannot write lock", &path, e))?;
    Ok(file)
}

/// Opens `path` with `open` and flocks it exclusively; `None` when another process holds it.
/// A file replaced between opening and locking (removed by [`StateClaim::discard`]) is opened
/// again, so that two processes never hold locks on two different files of one name.
fn lock_exclusively(path: &Path, open: impl Fn() -> Result<File>) -> Result<Option<File>> {
    for _ in 0..REOPEN_ATTEMPTS {
        let file = open()?;
        let mut locked = false;
        for attempt in 0..LOCK_ATTEMPTS {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                locked = true;
                break;
            }
            if attempt + 1 < LOCK_ATTEMPTS {
                std::thread::sleep(LOCK_RETRY);
            }
        }
        if !locked {
            return Ok(None);
        }
        let held = file
            .metadata()
            .map_err(|e| OverlayError::io("cannot stat", path, e))?;
        match std::fs::metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(Some(file)),
            _ => continue,
        }
    }
    Err(OverlayError::io(
        "cannot lock",
        path,
        std::io::Error::other("it keeps being replaced by another process"),
    ))
}

/// What the lock file says: the pid of the process holding it and, once its mount exists, the
/// mountpoint it serves. Format: the pid on the first line, the mountpoint (raw bytes) after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRecord {
    pub pid: u32,
    pub mountpoint: Option<PathBuf>,
}

impl LockRecord {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\n", self.pid).into_bytes();
        if let Some(mp) = &self.mountpoint {
            out.extend_from_slice(mp.as_os_str().as_bytes());
            out.push(b'\n');
        }
        out
    }

    fn parse(bytes: &[u8]) -> Option<LockRecord> {
        let (first, rest) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (bytes, &[][..]),
        };
        let pid = std::str::from_utf8(first).ok()?.trim().parse().ok()?;
        let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
        let mountpoint =
            (!rest.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(rest)));
        Some(LockRecord { pid, mountpoint })
    }
}

fn write_lock_record(file: &File, record: &LockRecord) -> std::io::Result<()> {
    let bytes = record.to_bytes();
    file.write_all_at(&bytes, 0)?;
    file.set_len(bytes.len() as u64)
}

fn read_lock_record(path: &Path) -> Option<LockRecord> {
    LockRecord::parse(&std::fs::read(path).ok()?)
}

/// The pid of the process holding the state's lock, if any holds it.
pub fn lock_holder(dir: &Path) -> Option<u32> {
    lock_record(dir).map(|r| r.pid)
}

/// The lock file's record, if a process holds the lock.
pub fn lock_record(dir: &Path) -> Option<LockRecord> {
    let path = dir.join(LOCK_FILE);
    let file = File::open(&path).ok()?;
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if r == 0 {
        return None; // nobody holds it
    }
    read_lock_record(&path)
}

/// A mount's claim on a state directory: an exclusive flock of the directory, held from before
/// the mount reads the state until its process ends. Parallel mounts of one state thus decide
/// at once which one proceeds; the others refuse as "in use" and touch nothing.
pub struct StateClaim {
    dir: PathBuf,
    _handle: File,
}

impl StateClaim {
    /// Creates the directory if needed (private: 0700) and claims it.
    pub fn take(dir: &Path) -> Result<StateClaim> {
        let handle = lock_exclusively(dir, || {
            create_private_dir(dir)?;
            File::open(dir).map_err(|e| OverlayError::io("cannot open state directory", dir, e))
        })?
        .ok_or_else(|| OverlayError::StateInUse {
            state_dir: dir.into(),
            pid: lock_holder(dir),
        })?;
        Ok(StateClaim {
            dir: dir.into(),
            _handle: handle,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory holds a clone (state.json).
    pub fn holds_clone(&self) -> bool {
        self.dir.join(STATE_FILE).exists()
    }

    /// Removes everything sidfs keeps in the directory, and the directory if that empties it:
    /// for a first mount that fails before serving (no clone was ever handed out). Nothing is
    /// removed while another process (an export) holds the lock.
    pub fn discard(self) {
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = if lock_path.exists() {
            match lock_exclusively(&lock_path, || {
                File::open(&lock_path).map_err(|e| OverlayError::io("cannot open", &lock_path, e))
            }) {
                Ok(Some(f)) => Some(f),
                _ => return,
            }
        } else {
            None
        };
        for name in STATE_FILES {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        drop(lock);
        // Fails, harmlessly, when the directory holds files that are not sidfs's.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Creates `dir` (and its missing parents) with mode 0700, and tightens an existing `dir` whose
/// mode is anything else, so that no other user reads the guest's data, whatever the umask.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| OverlayError::io("cannot create state directory", dir, e))?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| OverlayError::io("cannot stat state directory", dir, e))?
        .mode();
    if mode & 0o777 != DIR_MODE {
        std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(|e| OverlayError::io("cannot make private (chmod 700)", dir, e))?;
    }
    Ok(())
}

/// Opens a file of a state directory with mode 0600 (fchmod, so neither the umask nor an older
/// release's 0644 leaves it readable by others).
pub fn open_private(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    let file = options.mode(FILE_MODE).open(path)?;
    if file.metadata()?.mode() & 0o777 != FILE_MODE {
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Makes every sidfs file in `dir` 0600 (a state made by an older release, or copied).
fn tighten_files(dir: &Path) -> Result<()> {
    for name in STATE_FILES {
        let path = dir.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() && meta.mode() & 0o777 != FILE_MODE {
            std::fs::set_permissions(&path, Permissions::from_mode(FILE_MODE))
                .map_err(|e| OverlayError::io("cannot make private (chmod 600)", &path, e))?;
        }
    }
    Ok(())
}

pub fn read_meta(path: &Path) -> Result<StateMeta> {
    let corrupt = |reason: String| OverlayError::StateCorrupt {
        path: path.into(),
        reason,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| OverlayError::io("cannot read", path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("not valid JSON ({e})")))?;
    if value.get("magic").and_then(|m| m.as_str()) != Some(STATE_MAGIC) {
        return Err(corrupt(format!(
            "not a sidfs clone state (no \"magic\": \"{STATE_MAGIC}\")"
        )));
    }
    let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version != u64::from(STATE_VERSION) {
        return Err(corrupt(format!(
            "state version {version} is not supported by this sidfs (it reads version {STATE_VERSION}); use the sidfs release that created it"
        )));
    }
    serde_json::from_value(value).map_err(|e| corrupt(format!("unexpected content ({e})")))
}

fn write_meta_atomically(dir: &Path, meta: &StateMeta) -> Result<()> {
    let tmp = dir.join(STATE_TMP_FILE);
    let dst = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(meta).expect("state serializes");
    let write = || -> std::io::Result<()> {
        let mut f = open_private(
            &tmp,
            OpenOptions::new().write(true).create(true).truncate(true),
        )?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dst)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| OverlayError::io("cannot write", &dst, e))
}

fn check_compatible(
    dir: &Path,
    meta: &StateMeta,
    req: &AttachRequest<'_>,
    fingerprint: &MasterFingerprint,
) -> Result<()> {
    let mismatch = |reason: String| OverlayError::StateMismatch {
        state_dir: dir.into(),
        reason,
    };
    let old = &meta.master.fingerprint;
    if old.size != fingerprint.size || old.sample_sha256 != fingerprint.sample_sha256 {
        if meta.master.path == absolute(req.master.path()) {
            return Err(mismatch(format!(
                "belongs to master {}, which has changed since the clone was created ({}): a clone is only valid on the exact master it was made from; restore the master or pass a new --state",
                meta.master.path.display(),
                if old.size != fingerprint.size {
                    format!("size {} is now {}", old.size, fingerprint.size)
                } else {
                    "its content differs".into()
                }
            )));
        }
        return Err(mismatch(format!(
            "belongs to another master ({}, {} bytes), not {}: pass the right master or a new --state",
            meta.master.path.display(),
            old.size,
            req.master.path().display()
        )));
    }
    if old.mtime_ns != fingerprint.mtime_ns {
        return Err(mismatch(format!(
            "was created from master {}, and {} has the same content samples but a different modification time, so it may have been written to; if it was only touched or copied, restore its time with: touch -d @{}.{:09} {}",
            meta.master.path.display(),
            req.master.path().display(),
            old.mtime_ns.div_euclid(1_000_000_000),
            old.mtime_ns.rem_euclid(1_000_000_000),
            req.master.path().display()
        )));
    }
    if req.keep_sid != meta.keep_sid {
        return Err(mismatch(if meta.keep_sid {
            "is a plain copy (created with --keep-sid): mount it with --keep-sid, or pass another --state for a clone with a new SID".to_string()
        } else {
            "is a clone with a new SID: mount it without --keep-sid, or pass another --state for a plain copy".to_string()
        }));
    }
    if let Some(seed) = req.seed {
        if seed != meta.seed {
            return Err(mismatch(format!(
                "was created with seed {}, not {seed}: mount it with --seed {} or pass another --state for a new clone",
                meta.seed, meta.seed
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn master(t: &TempDir) -> MasterImage {
        let path = t.path("master.img");
        let f = File::create(&path).unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_all_at(b"master", 0).unwrap();
        MasterImage::open(&path).unwrap()
    }

    fn attach(dir: &Path, master: &MasterImage) -> Result<(CloneState, DeltaStore, bool)> {
        CloneState::attach(&AttachRequest {
            dir,
            master,
            seed: Some(3),
            block_size: 4096,
            keep_sid: false,
        })
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    /// Prove the lock file's record survives its text form, and that a pid-only lock file (an
    /// older release) still gives the pid.
    #[test]
    fn lock_record_round_trips() {
        for record in [
            LockRecord {
                pid: 42,
                mountpoint: Some("/mnt/a b,c".into()),
            },
            LockRecord {
                pid: 7,
                mountpoint: None,
            },
        ] {
            assert_eq!(LockRecord::parse(&record.to_bytes()), Some(record));
        }
        assert_eq!(
            LockRecord::parse(b"123"),
            Some(LockRecord {
                pid: 123,
                mountpoint: None
            })
        );
        assert_eq!(LockRecord::parse(b""), None);
        assert_eq!(LockRecord::parse(b"x\n/mnt"), None);
    }

    /// Prove that delta files without state.json (a first mount killed before writing it) are
    /// replaced by a fresh clone instead of blocking the state forever.
    #[test]
    fn leftovers_without_state_json_start_afresh() {
        let t = TempDir::new("leftover");
        let m = master(&t);
        let dir = t.path("state");
        drop(attach(&dir, &m).unwrap());
        std::fs::remove_file(dir.join(STATE_FILE)).unwrap();
        std::fs::write(dir.join(STATE_TMP_FILE), b"{").unwrap();
        let (state, _delta, created) = attach(&dir, &m).unwrap();
        assert!(created);
        assert_eq!(state.meta().seed, 3);
        assert!(dir.join(STATE_FILE).exists());
        assert!(!dir.join(STATE_TMP_FILE).exists());
    }

    /// Prove the state directory is 0700 and its files 0600 whatever was there before.
    #[test]
    fn state_is_private_and_tightened() {
        let t = TempDir::new("private");
        let m = master(&t);
        let dir = t.path("state");
        drop(attach(&dir, &m).unwrap());
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        for name in [STATE_FILE, LOCK_FILE, DELTA_FILE, MAP_FILE] {
            std::fs::set_permissions(dir.join(name), Permissions::from_mode(0o644)).unwrap();
        }
        drop(attach(&dir, &m).unwrap());
        assert_eq!(mode_of(&dir), DIR_MODE);
        for name in [STATE_FILE, LOCK_FILE, DELTA_FILE, MAP_FILE] {
            assert_eq!(mode_of(&dir.join(name)), FILE_MODE, "{name}");
        }
    }

    /// Prove a claim is exclusive, that discarding it removes the state and the directory, and
    /// that a claim (or lock) taken afterwards is on the new directory, not the removed one.
    #[test]
    fn claims_are_exclusive_and_discard_removes_the_state() {
        let t = TempDir::new("claim");
        let m = master(&t);
        let dir = t.path("state");
        let claim = StateClaim::take(&dir).unwrap();
        assert!(matches!(
            StateClaim::take(&dir),
            Err(OverlayError::StateInUse { .. })
        ));
        assert!(!claim.holds_clone());
        let (state, delta, _) = attach(&dir, &m).unwrap();
        assert!(claim.holds_clone());
        drop((state, delta));
        claim.discard();
        assert!(!dir.exists());
        let again = StateClaim::take(&dir).unwrap();
        let (_state, _delta, created) = attach(&dir, &m).unwrap();
        assert!(created);
        assert!(matches!(
            take_lock(&dir),
            Err(OverlayError::StateInUse { pid: Some(p), .. }) if p == std::process::id()
        ));
        drop(again);
    }
}
