//! The per-clone state directory: versioned metadata, the exclusive lock, and the delta files.
//!
//! ```text
//! STATE_DIR/
//!   state.json   magic, format version, block size, master fingerprint, seed (written once)
//!   lock         flock()ed by the process serving the clone; holds its pid
//!   delta.bin    see delta.rs
//!   map.bin      see delta.rs
//!   sidfs.log    log of the background mount daemon
//! ```
//! The whole clone is this directory: copy it (with the master) and the clone moves with it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::delta::DeltaStore;
use super::error::{OverlayError, Result};
use super::master::{MasterFingerprint, MasterImage};
use super::units::Geometry;

pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "lock";
pub const LOG_FILE: &str = "sidfs.log";
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
    _lock: File,
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
        std::fs::create_dir_all(dir)
            .map_err(|e| OverlayError::io("cannot create state directory", dir, e))?;
        let lock = take_lock(dir)?;
        let state_path = dir.join(STATE_FILE);
        let fingerprint = req.master.fingerprint()?;
        let geometry_for = |block_size| Geometry::new(req.master.size(), block_size);
        if state_path.exists() {
            let meta = read_meta(&state_path)?;
            check_compatible(dir, &meta, req, &fingerprint)?;
            let delta = DeltaStore::open(dir, geometry_for(meta.block_size))?;
            Ok((
                CloneState {
                    dir: dir.into(),
                    meta,
                    _lock: lock,
                },
                delta,
                false,
            ))
        } else {
            if dir.join(super::delta::MAP_FILE).exists()
                || dir.join(super::delta::DELTA_FILE).exists()
            {
                return Err(OverlayError::StateCorrupt {
                    path: state_path,
                    reason: "delta files exist but state.json is missing; move the directory away or pass another --state".into(),
                });
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
            // state.json last: its presence marks a complete state.
            write_meta_atomically(dir, &meta)?;
            Ok((
                CloneState {
                    dir: dir.into(),
                    meta,
                    _lock: lock,
                },
                delta,
                true,
            ))
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &StateMeta {
        &self.meta
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

fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(|e| OverlayError::io("cannot open lock", &path, e))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let mut s = String::new();
        let _ = file.read_to_string(&mut s);
        return Err(OverlayError::StateInUse {
            state_dir: dir.into(),
            pid: s.trim().parse().ok(),
        });
    }
    let pid = std::process::id().to_string();
    file.set_len(0)
        .and_then(|_| file.write_all(pid.as_bytes()))
        .map_err(|e| OverlayError::io("cannot write lock", &path, e))?;
    Ok(file)
}

/// The pid of the process holding the state's lock, if any holds it.
pub fn lock_holder(dir: &Path) -> Option<u32> {
    let path = dir.join(LOCK_FILE);
    let file = File::open(&path).ok()?;
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if r == 0 {
        return None; // nobody holds it
    }
    std::fs::read_to_string(&path).ok()?.trim().parse().ok()
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
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let dst = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(meta).expect("state serializes");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
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
