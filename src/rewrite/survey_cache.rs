//! The survey cache: what a clone learns about its master that does not depend on the clone —
//! inspect's verdict, where the stores with checksums are, the SID-like names that constrain a
//! new SID's order, and where the master holds the old SID (the disk ranges a clone can differ
//! in) — kept once per master so that later clones pay only for their own transforms.
//!
//! A cache never decides a clone's bytes on its own word: a file that is truncated, corrupt, of
//! another format or sidfs version, or of another master (another key) is ignored, logged and
//! recomputed; writes are atomic (a temporary file renamed over the old one); a cache that cannot
//! be written is a warning. The key is the master's identity as the file system knows it (device,
//! inode, size, modification and change times: a change time cannot be set back by hand) and its
//! content fingerprint (`MasterImage::fingerprint`); a master on a block device, whose times say
//! nothing about its content, is never cached.
//!
//! File layout (little-endian), in `cache_dir()/<first 16 hex digits of SHA-256(key)>.survey`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SIDFSSC\0` |
//! | 8 | 4 | format version ([`FORMAT_VERSION`]) |
//! | 12 | 4 | reserved, zero (room to grow) |
//! | 16 | 8 | length of the body |
//! | 24 | 32 | SHA-256 of the body |
//! | 56 | n | body: JSON `{"key": …, "facts": …}` |

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::overlay::{state, MasterImage};

/// Puts the cache in this directory instead of the default.
pub const CACHE_DIR_ENV: &str = "SIDFS_CACHE_DIR";
/// Any value but empty or `0` turns the cache off (nothing read, nothing written).
pub const NO_CACHE_ENV: &str = "SIDFS_NO_CACHE";

const MAGIC: &[u8; 8] = b"SIDFSSC\0";
/// Bumped whenever what the facts mean changes; a file of another version is ignored.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 56;
/// A cache file larger than this is not read (a hostile or damaged file must not exhaust memory).
const MAX_BODY: u64 = 256 << 20;

/// Where the cache lives, or `None` when it is turned off: [`CACHE_DIR_ENV`]; else, for root,
/// `/var/cache/sidfs`; else `$XDG_CACHE_HOME/sidfs`, else `~/.cache/sidfs`.
pub fn cache_dir() -> Option<PathBuf> {
    let off = std::env::var(NO_CACHE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    if off {
        return None;
    }
    if let Some(d) = std::env::var_os(CACHE_DIR_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/cache/sidfs"));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("sidfs"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/sidfs"))
}

/// Which master (and which sidfs) a cache file describes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    pub sidfs_version: String,
    pub format_version: u32,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub sample_sha256: String,
}

impl CacheKey {
    /// The key of the master at `path`; `None` for a block device or a master that cannot be
    /// read (then nothing is cached).
    pub fn of(path: &Path) -> Option<CacheKey> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let fingerprint = MasterImage::open(path).and_then(|m| m.fingerprint()).ok()?;
        Some(CacheKey {
            sidfs_version: env!("CARGO_PKG_VERSION").to_string(),
            format_version: FORMAT_VERSION,
            dev: meta.dev(),
            ino: meta.ino(),
            size: fingerprint.size,
            mtime_ns: fingerprint.mtime_ns,
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            sample_sha256: fingerprint.sample_sha256,
        })
    }

    fn file_name(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(json);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}.survey")
    }
}

/// The candidate stores of one volume, by path (`survey::store_paths_with_wals`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStores {
    pub ese: Vec<String>,
    pub logs: Vec<String>,
    pub wals: Vec<String>,
}

/// Where the master holds the old SID: disk ranges (sorted, merged, with the margin of a whole
/// multi-sector record) outside which no clone's byte search can change a byte.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidRanges {
    pub old_sid: String,
    pub ranges: Vec<(u64, u64)>,
}

/// One SID across a fragment junction (`super::junction`): its bytes in the master and the disk
/// offset of each of them (`None` inside a hole).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JunctionSid {
    pub old: Vec<u8>,
    pub at: Vec<Option<u64>>,
}

/// What the fragment-junction pass found on the master for one old SID.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JunctionScan {
    pub old_sid: String,
    pub streams: usize,
    pub junctions: usize,
    pub not_plain: usize,
    pub sids: Vec<JunctionSid>,
}

/// What the cache knows about a master; each fact is `None`/`false` until computed once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyFacts {
    /// `sidfs inspect` found no reason to refuse the master as a Windows master.
    pub inspect_accepted: bool,
    /// The same, for a data disk (`--old-sid`).
    pub inspect_accepted_data_disk: bool,
    /// Candidate stores of each surveyed NTFS volume, in the survey's order.
    pub stores: Option<Vec<VolumeStores>>,
    /// The SID-like names that constrain a new SID's order (upper case).
    pub constraint_names: Option<Vec<String>>,
    /// Where the master holds the old SID (for the qcow2 export of a later clone).
    pub sid_ranges: Option<SidRanges>,
    /// The fragment-junction pass's findings (for every later clone's stage).
    pub junctions: Option<JunctionScan>,
}

#[derive(Serialize, Deserialize)]
struct Body {
    key: CacheKey,
    facts: SurveyFacts,
}

/// The bytes of a cache file.
pub fn encode(key: &CacheKey, facts: &SurveyFacts) -> Vec<u8> {
    let body = serde_json::to_vec(&Body {
        key: key.clone(),
        facts: facts.clone(),
    })
    .unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    out
}

/// Why a cache file was ignored.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheReject {
    Truncated { needed: u64, found: u64 },
    BadMagic,
    OtherVersion(u32),
    TooLarge(u64),
    Checksum,
    Unreadable(String),
    OtherMaster,
}

impl std::fmt::Display for CacheReject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheReject::Truncated { needed, found } => {
                write!(f, "truncated: {found} bytes, expected {needed}")
            }
            CacheReject::BadMagic => write!(f, "not a sidfs survey cache (bad magic)"),
            CacheReject::OtherVersion(v) => {
                write!(f, "format version {v}, this sidfs reads {FORMAT_VERSION}")
            }
            CacheReject::TooLarge(n) => write!(f, "a {n}-byte body, over {MAX_BODY}"),
            CacheReject::Checksum => write!(f, "checksum mismatch (corrupt)"),
            CacheReject::Unreadable(e) => write!(f, "unreadable body: {e}"),
            CacheReject::OtherMaster => write!(f, "written for another master or sidfs version"),
        }
    }
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// The facts of a cache file, if it is whole, sound and written for `key`.
pub fn decode(bytes: &[u8], key: &CacheKey) -> Result<SurveyFacts, CacheReject> {
    let found = bytes.len() as u64;
    if bytes.len() < HEADER_LEN {
        return Err(CacheReject::Truncated {
            needed: HEADER_LEN as u64,
            found,
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(CacheReject::BadMagic);
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[8..12]);
    let version = u32::from_le_bytes(v);
    if version != FORMAT_VERSION {
        return Err(CacheReject::OtherVersion(version));
    }
    let len = le_u64(bytes, 16);
    if len > MAX_BODY {
        return Err(CacheReject::TooLarge(len));
    }
    let needed = HEADER_LEN as u64 + len;
    if found != needed {
        return Err(CacheReject::Truncated { needed, found });
    }
    let body = &bytes[HEADER_LEN..];
    if Sha256::digest(body)[..] != bytes[24..HEADER_LEN] {
        return Err(CacheReject::Checksum);
    }
    let body: Body =
        serde_json::from_slice(body).map_err(|e| CacheReject::Unreadable(e.to_string()))?;
    if body.key != *key {
        return Err(CacheReject::OtherMaster);
    }
    Ok(body.facts)
}

/// The cache of one master for one run: the facts loaded (or defaults), and where to write them
/// back when something new was learned.
#[derive(Debug, Default)]
pub struct SurveyCache {
    /// `None`: the cache is off, or this master is not cached.
    file: Option<(PathBuf, CacheKey)>,
    pub facts: SurveyFacts,
    /// What the file on disk holds; `None` when there is no sound file (it is then written).
    stored: Option<SurveyFacts>,
}

impl SurveyCache {
    /// A cache that is never read or written.
    pub fn disabled() -> SurveyCache {
        SurveyCache::default()
    }

    /// The cache of the master at `master` in [`cache_dir`]; a missing, bad or foreign file
    /// gives empty facts (logged).
    pub fn open(master: &Path) -> SurveyCache {
        let Some(dir) = cache_dir() else {
            log::info!("survey cache: off ({NO_CACHE_ENV})");
            return SurveyCache::disabled();
        };
        SurveyCache::open_in(&dir, master)
    }

    /// [`SurveyCache::open`] in the directory `dir`.
    pub fn open_in(dir: &Path, master: &Path) -> SurveyCache {
        let Some(key) = CacheKey::of(master) else {
            log::info!(
                "survey cache: {} is not a regular file, so it is surveyed every time",
                master.display()
            );
            return SurveyCache::disabled();
        };
        let path = dir.join(key.file_name());
        let stored = match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes, &key) {
                Ok(facts) => {
                    log::info!("survey cache: using {}", path.display());
                    Some(facts)
                }
                Err(why) => {
                    log::warn!(
                        "survey cache {} ignored ({why}); surveying the master again",
                        path.display()
                    );
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::info!(
                    "survey cache: none yet at {}; surveying the master",
                    path.display()
                );
                None
            }
            Err(e) => {
                log::warn!(
                    "survey cache {} ignored (cannot read it: {e}); surveying the master again",
                    path.display()
                );
                None
            }
        };
        SurveyCache {
            file: Some((path, key)),
            facts: stored.clone().unwrap_or_default(),
            stored,
        }
    }

    /// The cache file, if this master is cached.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// Writes the facts back if they changed since they were read. A failure is a warning: the
    /// clone does not depend on the cache.
    pub fn store(&mut self) {
        let Some((path, key)) = &self.file else {
            return;
        };
        if self.stored.as_ref() == Some(&self.facts) {
            return;
        }
        match write_atomically(path, &encode(key, &self.facts)) {
            Ok(()) => {
                log::info!("survey cache: wrote {}", path.display());
                self.stored = Some(self.facts.clone());
            }
            Err(e) => log::warn!(
                "cannot write the survey cache {}: {e}; later clones of this master survey it again (set {CACHE_DIR_ENV} to a writable directory, or {NO_CACHE_ENV}=1)",
                path.display()
            ),
        }
    }
}

/// Writes `bytes` to `path` through a private temporary file in the same directory (created
/// 0700 if missing), synced and renamed over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    state::create_private_dir(dir).map_err(|e| e.to_string())?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = state::open_private(
            &temp,
            OpenOptions::new().write(true).create(true).truncate(true),
        )?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key() -> CacheKey {
        CacheKey {
            sidfs_version: "0.1.0".into(),
            format_version: FORMAT_VERSION,
            dev: 1,
            ino: 2,
            size: 3 << 30,
            mtime_ns: 4,
            ctime_ns: 5,
            sample_sha256: "ab".repeat(32),
        }
    }

    fn facts() -> SurveyFacts {
        SurveyFacts {
            inspect_accepted: true,
            inspect_accepted_data_disk: false,
            stores: Some(vec![VolumeStores {
                ese: vec![r"Windows\System32\sru\SRUDB.dat".into()],
                logs: vec![r"Data\x.evtx".into()],
                wals: Vec::new(),
            }]),
            constraint_names: Some(vec!["S-1-5-21-1-2-3-500".into()]),
            sid_ranges: Some(SidRanges {
                old_sid: "S-1-5-21-1-2-3".into(),
                ranges: vec![(0, 65536), (1 << 20, (1 << 20) + 4096)],
            }),
            junctions: Some(JunctionScan {
                old_sid: "S-1-5-21-1-2-3".into(),
                streams: 1,
                junctions: 2,
                not_plain: 0,
                sids: vec![JunctionSid {
                    old: vec![1, 2, 3],
                    at: vec![Some(4096), None, Some(8192)],
                }],
            }),
        }
    }

    /// Prove that what is written is read back whole.
    #[test]
    fn round_trip() {
        let bytes = encode(&key(), &facts());
        assert_eq!(decode(&bytes, &key()), Ok(facts()));
    }

    /// Prove that a cache file cut anywhere is rejected, never half-read.
    #[test]
    fn truncated_is_rejected() {
        let bytes = encode(&key(), &facts());
        for n in [0, 7, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
            assert!(
                matches!(
                    decode(&bytes[..n], &key()),
                    Err(CacheReject::Truncated { .. })
                ),
                "cut at {n}"
            );
        }
    }

    /// Prove that one flipped bit anywhere is caught (magic, version, length or checksum).
    #[test]
    fn corrupt_is_rejected() {
        let bytes = encode(&key(), &facts());
        for at in [0, 9, 17, 30, HEADER_LEN + 3, bytes.len() - 2] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad, &key()).is_err(), "flipped byte {at}");
        }
        let mut body = bytes.clone();
        body[HEADER_LEN + 5] ^= 1;
        assert_eq!(decode(&body, &key()), Err(CacheReject::Checksum));
        let mut version = bytes;
        version[8] = 9;
        assert_eq!(decode(&version, &key()), Err(CacheReject::OtherVersion(9)));
    }

    /// Prove that a cache of another master (or another sidfs) is not used.
    #[test]
    fn other_key_is_rejected() {
        let bytes = encode(&key(), &facts());
        let others = [
            CacheKey {
                ctime_ns: 6,
                ..key()
            },
            CacheKey {
                sample_sha256: "cd".repeat(32),
                ..key()
            },
            CacheKey {
                sidfs_version: "9.9.9".into(),
                ..key()
            },
            CacheKey { ino: 7, ..key() },
        ];
        for other in others {
            assert_eq!(decode(&bytes, &other), Err(CacheReject::OtherMaster));
            assert_ne!(other.file_name(), key().file_name());
        }
    }

    /// Prove that a cache that cannot be written (its directory is under a regular file) is no
    /// failure: `store` returns, nothing is written, and the facts stay usable.
    #[test]
    fn unwritable_cache_is_only_a_warning() {
        let dir = std::env::temp_dir().join(format!("sidfs-cache-ro-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let master = dir.join("master.img");
        std::fs::write(&master, vec![1u8; 4096]).unwrap();
        let blocked = master.join("cache");
        let mut cache = SurveyCache::open_in(&blocked, &master);
        cache.facts = facts();
        cache.store();
        assert!(!blocked.exists());
        assert_eq!(cache.facts, facts());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Prove that the cache of a real file is written privately, read back, and that a
    /// corrupted file is ignored and replaced.
    #[test]
    fn store_and_reopen() {
        let dir = std::env::temp_dir().join(format!("sidfs-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let master = dir.join("master.img");
        std::fs::write(&master, vec![7u8; 1 << 16]).unwrap();
        let cache_dir = dir.join("cache");
        let mut cache = SurveyCache::open_in(&cache_dir, &master);
        assert_eq!(cache.facts, SurveyFacts::default());
        cache.facts = facts();
        cache.store();
        let path = cache.path().unwrap().to_path_buf();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache_dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(SurveyCache::open_in(&cache_dir, &master).facts, facts());
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let mut again = SurveyCache::open_in(&cache_dir, &master);
        assert_eq!(again.facts, SurveyFacts::default());
        again.store();
        assert!(decode(
            &std::fs::read(&path).unwrap(),
            &CacheKey::of(&master).unwrap()
        )
        .is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
