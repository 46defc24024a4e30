//! Clone assembly, in one place for `mount`, `export` and `verify`: the master's survey, the
//! checks that refuse what cannot be cloned, the SID and identifier choice, and the clone
//! state's reading and writing.
//!
//! Two rules are written here once:
//! - **Refuse what inspect refuses.** A new clone of a master that `sidfs inspect` cannot read,
//!   or refuses (hibernated, truncated, no Windows, ...), is refused with inspect's reason;
//!   only `--keep-sid` (a plain copy-on-write copy) or `--old-sid` (a data disk) proceed.
//! - **The state fully defines the clone.** Whatever state.json records (seed, old and new SID,
//!   identifiers, plain copy or not) is what a remount or an export of that state gives, without
//!   repeating an option; an option that contradicts the record is refused, naming the record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::info;
use sha2::{Digest, Sha256};

use crate::identity::{FoundIdentifier, IdentityChoice, IdentityMapping, IdentityRequest};
use crate::mount::MountError;
use crate::overlay::{
    state, AttachRequest, CloneDisk, CloneState, MasterImage, MasterPassthrough, PatchStage,
    DEFAULT_BLOCK_SIZE,
};
use crate::rewrite;
use crate::rewrite::stage_builder::{build_stage_cached, choose_sid, SidChoice, SidSource};
use crate::rewrite::survey_cache::{SurveyCache, SurveyFacts};
use crate::sid::MachineSid;

/// Key of the clone's identifiers in state.json.
pub(crate) const IDENTITY_STATE_KEY: &str = "identity";

mod error;
pub use error::CloneError;

fn fail<T>(e: CloneError) -> Result<T, MountError> {
    Err(e.into())
}

/// What makes a clone what it is: its master and the identity it gets. Shared by `mount` and
/// `export`, so that both give the same clone for the same options.
#[derive(Clone, Debug, Default)]
pub struct CloneSpec {
    pub master: PathBuf,
    pub seed: Option<u64>,
    /// An explicit new machine SID instead of one derived from the seed.
    pub sid: Option<MachineSid>,
    /// The machine SID to replace on a disk without a Windows installation (a data disk).
    pub old_sid: Option<MachineSid>,
    /// A plain copy-on-write clone that keeps the master's SID.
    pub keep_sid: bool,
    /// The computer name and which other identifiers to keep (`--hostname`, `--keep`).
    pub identity: IdentityRequest,
}

impl CloneSpec {
    /// Refuses options that contradict each other: a plain copy (`--keep-sid`) changes nothing,
    /// so it takes no new SID, old SID, computer name or identifiers to keep.
    pub fn check_options(&self) -> Result<(), MountError> {
        if !self.keep_sid {
            return Ok(());
        }
        let other = [
            (self.sid.is_some(), "--sid"),
            (self.old_sid.is_some(), "--old-sid"),
            (self.identity.hostname.is_some(), "--hostname"),
            (!self.identity.keep.is_empty(), "--keep"),
        ];
        match other.iter().find(|(given, _)| *given) {
            Some((_, option)) => fail(CloneError::KeepSidWith { option }),
            None => Ok(()),
        }
    }
}

/// Where clone states live unless `--state` says otherwise: `$XDG_STATE_HOME/sidfs`, else
/// `~/.local/state/sidfs`, else `/var/lib/sidfs`.
pub fn state_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("sidfs");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/state/sidfs");
    }
    PathBuf::from("/var/lib/sidfs")
}

/// The default state directory of a clone: named after the master (its file name and a short hash
/// of its absolute path, so two masters called `win.img` never share states) and the seed, or
/// the mountpoint's name when no seed is given.
///
/// A master may move (docs/SEMANTICS.md): when no state has the name of the master's current
/// path, a state of the same seed (or mountpoint name) whose recorded master is gone from its
/// recorded path and whose content fingerprint is this master's is the clone, found again.
pub fn default_state_dir(master: &Path, seed: Option<u64>, mountpoint: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(master).unwrap_or_else(|_| master.to_path_buf());
    let stem = abs
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "master".into());
    let digest = Sha256::digest(abs.as_os_str().as_encoded_bytes());
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let which = match seed {
        Some(s) => format!("seed{s}"),
        None => {
            let mp = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
            let name = mp
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "root".into());
            format!("at-{name}")
        }
    };
    let by_path = state_root().join(format!("{stem}-{tag}-{which}"));
    if by_path.exists() {
        return by_path;
    }
    match moved_master_state(&abs, &which) {
        Some(dir) => {
            info!(
                "{} has no clone state {} yet; found the clone of this master (moved from its recorded path) in {}",
                abs.display(),
                by_path.display(),
                dir.display()
            );
            dir
        }
        None => by_path,
    }
}

/// A default-named state (`*-WHICH` under [`state_root`]) of a master that moved to `master`:
/// its recorded master path no longer holds that master (nothing there, another content, or
/// this very file), and its recorded content fingerprint (size and samples) is `master`'s. A
/// copy of a master that is still in its place is not a move: it gets its own clone.
fn moved_master_state(master: &Path, which: &str) -> Option<PathBuf> {
    let suffix = format!("-{which}");
    let mut names: Vec<PathBuf> = std::fs::read_dir(state_root())
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut fingerprint = None;
    let mut found = Vec::new();
    for dir in names {
        let Ok(meta) = state::read_meta(&dir.join(state::STATE_FILE)) else {
            continue;
        };
        let was = &meta.master.fingerprint;
        let same_content = |f: &crate::overlay::MasterFingerprint| {
            f.size == was.size && f.sample_sha256 == was.sample_sha256
        };
        let recorded = &meta.master.path;
        let still_there = recorded.exists()
            && !same_file(recorded, master)
            && MasterImage::open(recorded)
                .and_then(|m| m.fingerprint())
                .is_ok_and(|f| same_content(&f));
        if still_there {
            continue;
        }
        if fingerprint.is_none() {
            fingerprint = Some(
                MasterImage::open(master)
                    .and_then(|m| m.fingerprint())
                    .ok()?,
            );
        }
        if fingerprint.as_ref().is_some_and(same_content) {
            found.push(dir);
        }
    }
    if found.len() > 1 {
        info!(
            "several clone states match the moved master {}: using {} (pass --state for another)",
            master.display(),
            found[0].display()
        );
    }
    found.into_iter().next()
}

/// Whether two paths name one file (same device and inode).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Refuses a master that `sidfs inspect` refuses or cannot read (hibernated, dirty, BitLocker,
/// domain controller, truncated, unreadable, no Windows, ...), with its first reason as one
/// sentence. With `data_disk` (`--old-sid`), a disk without Windows is what the user asked for;
/// its other refusals still apply, and a disk that cannot be read is left to the survey to name.
pub fn refuse_unclonable(master: &Path, data_disk: bool) -> Result<(), MountError> {
    // The stores with checksums are left to the clone's own checks, which refuse them in the
    // words inspect lists (`crate::rewrite::stage_builder::store_decisions`).
    let report = match crate::inspect::inspect_before_clone(master) {
        Ok(r) => r,
        Err(_) if data_disk => return Ok(()),
        Err(source) => return fail(CloneError::Uninspectable { source }),
    };
    let refusals: Vec<_> = report
        .refusals
        .iter()
        .filter(|r| !(data_disk && r.reason == crate::inspect::RefusalReason::NoWindows))
        .collect();
    let Some(first) = refusals.first() else {
        return Ok(());
    };
    fail(CloneError::InspectRefuses {
        master: master.to_path_buf(),
        reason: first.reason,
        message: first.message.clone(),
        more: refusals.len() - 1,
    })
}

/// A clone opened for serving or exporting: its locked state and its disk.
pub struct OpenClone {
    pub state: CloneState,
    pub disk: Arc<CloneDisk>,
    pub sids: Option<SidChoice>,
    /// The clone's other identifiers (`None`: none changed, or a clone made before sidfs changed
    /// them, which keeps its master's so that its bytes never change).
    pub identity: Option<IdentityChoice>,
    pub created: bool,
    /// The master's survey cache (what this run learned is written back by [`open_clone`]; an
    /// export may add more and store it again).
    pub survey_cache: SurveyCache,
    /// The SID rewrite the disk serves (`None` for a plain copy).
    pub sid_stage: Option<Arc<rewrite::stage::SidPatchStage>>,
}

/// The identifiers of the survey's Windows installation.
pub fn discover_identifiers(survey: &rewrite::survey::WindowsSurvey) -> Vec<FoundIdentifier> {
    let Some(windows) = survey.windows() else {
        return Vec::new();
    };
    crate::identity::discover_on_volume(&windows.volume)
}

/// A computer name of another length gives values new data, and one that grows needs free
/// cells: refuse before any state exists (not at the guest's first read of the hive) when a hive
/// has none large enough. Each hive is rewritten from the master as the clone's will be (the SID
/// rewrite before it never moves a cell), so the check and the clone agree.
fn check_identity_fits(
    survey: &rewrite::survey::WindowsSurvey,
    choice: &IdentityChoice,
    master_path: &Path,
) -> Result<(), MountError> {
    let Some(name) = choice.changes.iter().find(|c| {
        c.kind == crate::identity::IdentifierKind::Hostname && c.old.len() != c.new.len()
    }) else {
        return Ok(());
    };
    let (Some(windows), mapping) = (survey.windows(), IdentityMapping::new(choice)?) else {
        return Ok(());
    };
    for hive in &survey.hives {
        let Ok(bytes) = windows
            .volume
            .read_file(&hive.path, "", crate::hive::HIVE_SIZE_LIMIT)
        else {
            continue;
        };
        if let Err(source) = crate::identity::hive::rewrite_identifiers(&bytes, &mapping) {
            return fail(CloneError::HostnameTooLong {
                master: master_path.to_path_buf(),
                new: name.new.clone(),
                old: name.old.clone(),
                hive: hive.path.clone(),
                source,
            });
        }
    }
    Ok(())
}

/// The machine SID a state records as replaced (its `old_sid`), if any.
fn recorded_old_sid(meta: &state::StateMeta, dir: &Path) -> Result<Option<MachineSid>, MountError> {
    match &meta.old_sid {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|source| {
            MountError::from(CloneError::RecordedOldSidUnreadable {
                state_dir: dir.to_path_buf(),
                text: s.clone(),
                source,
            })
        }),
    }
}

/// Surveys an image as a clone (or `sidfs verify`) sees it: a Windows installation with its own
/// SID; else, with `given` (`--old-sid`), a data disk of that SID; else, with `fallback` (the
/// old SID a clone's state records, or the SID `verify` looks for), a data disk of that one. So a
/// data-disk clone remounted without repeating `--old-sid` stays the clone it is.
pub fn survey_image(
    image: &Path,
    with_constraints: bool,
    given: Option<MachineSid>,
    fallback: Option<MachineSid>,
    facts: &mut SurveyFacts,
) -> Result<Option<rewrite::survey::WindowsSurvey>, rewrite::survey::SurveyError> {
    let survey = rewrite::survey::survey_with(image, with_constraints, given, facts)?;
    match (survey, given, fallback) {
        (None, None, Some(old)) => {
            rewrite::survey::survey_with(image, with_constraints, Some(old), facts)
        }
        (survey, _, _) => Ok(survey),
    }
}

/// Opens (or creates) the clone of `spec.master` kept in `state_dir`: checks the options, runs
/// inspect's checks for a new clone, surveys the master, takes the state's lock, decides the SID
/// (recorded, explicit or from the seed) and the identifiers, and builds the disk.
pub fn open_clone(
    spec: &CloneSpec,
    state_dir: &Path,
    read_only: bool,
) -> Result<OpenClone, MountError> {
    spec.check_options()?;
    let CloneSpec {
        master,
        seed,
        sid,
        old_sid,
        keep_sid,
        identity,
    } = spec;
    let (master_path, seed, sid, old_sid, keep_sid, identity_req) =
        (master.as_path(), *seed, *sid, *old_sid, *keep_sid, identity);
    let master = Arc::new(MasterImage::open(master_path)?);
    if master.size() == 0 {
        return fail(CloneError::MasterEmpty {
            master: master_path.to_path_buf(),
        });
    }
    // Learn the Windows installation before creating anything, so a refused image leaves no
    // state behind. A clone that exists already was checked when it was created (and its master
    // is fingerprinted), so its remount skips the checks and the SID constraints.
    let recorded = state::read_meta(&state_dir.join(state::STATE_FILE)).ok();
    let is_new = recorded.as_ref().is_none_or(|m| m.new_sid.is_none());
    let recorded_old = match &recorded {
        Some(meta) if !keep_sid => recorded_old_sid(meta, state_dir)?,
        _ => None,
    };
    if let (Some(rec), Some(given)) = (recorded_old, old_sid) {
        if rec != given {
            return fail(CloneError::OldSidMismatch {
                state_dir: state_dir.to_path_buf(),
                recorded: rec,
                given,
            });
        }
    }
    let mut survey_cache = if keep_sid {
        SurveyCache::disabled()
    } else {
        SurveyCache::open(master_path)
    };
    if is_new && !keep_sid {
        // inspect's verdict on an unchanged master is the same every time: the cache keeps it
        // when it accepted (a refusal is checked again, so its message is always current).
        let data_disk = old_sid.is_some();
        let facts = &mut survey_cache.facts;
        let accepted = if data_disk {
            &mut facts.inspect_accepted_data_disk
        } else {
            &mut facts.inspect_accepted
        };
        if !*accepted {
            refuse_unclonable(master_path, data_disk)?;
            *accepted = true;
        }
    }
    let survey = if keep_sid {
        None
    } else {
        survey_image(
            master_path,
            is_new,
            old_sid,
            recorded_old,
            &mut survey_cache.facts,
        )
        .map_err(|source| {
            MountError::from(CloneError::Survey {
                master: master_path.to_path_buf(),
                source,
            })
        })?
    };
    if survey.is_none() && !keep_sid {
        // Only a plain copy is served unchanged (inspect accepted the disk, so this is a survey
        // that disagrees with it: fail closed).
        return fail(CloneError::NoMachineSid {
            master: master_path.to_path_buf(),
        });
    }
    // The identifiers of a new clone are decided (and a bad --hostname refused) before any
    // state exists; the seed may still be unknown, so this first decision only checks.
    let found = match (&survey, is_new) {
        (Some(s), true) => {
            let found = discover_identifiers(s);
            let first = IdentityChoice::decide(&found, identity_req, seed.unwrap_or(0))?;
            check_identity_fits(s, &first, master_path)?;
            found
        }
        _ => {
            if let Some(h) = &identity_req.hostname {
                crate::identity::check_hostname(h)?;
            }
            Vec::new()
        }
    };
    let (mut state, delta, created) = CloneState::attach(&AttachRequest {
        dir: state_dir,
        master: &master,
        seed,
        block_size: DEFAULT_BLOCK_SIZE,
        keep_sid,
    })?;
    let mut identity = None;
    let mut sid_stage = None;
    let (stage, sids): (Box<dyn PatchStage>, Option<SidChoice>) = match &survey {
        None => {
            info!(
                "{}: a plain copy (--keep-sid): the clone is the master",
                master_path.display()
            );
            (Box::new(MasterPassthrough), None)
        }
        Some(survey) => {
            let meta = state.meta();
            let source = match (&meta.old_sid, &meta.new_sid, sid) {
                (Some(_), Some(n), Some(explicit)) if explicit.to_string() != *n => {
                    return fail(CloneError::SidMismatch {
                        state_dir: state.dir().to_path_buf(),
                        recorded: n.clone(),
                        given: explicit,
                    })
                }
                (Some(o), Some(n), _) => SidSource::Recorded(o, n),
                (_, _, Some(explicit)) => SidSource::Explicit(explicit),
                _ => SidSource::Seed(meta.seed),
            };
            let choice =
                choose_sid(survey, source).map_err(|e| MountError::from(CloneError::from(e)))?;
            let fresh = meta.new_sid.is_none();
            let recorded_identity = meta.extra.get(IDENTITY_STATE_KEY).cloned();
            let seed = meta.seed;
            if fresh {
                state.record_sids(&choice.old.to_string(), &choice.new.to_string())?;
            }
            let chosen = match recorded_identity {
                Some(v) => {
                    let c: IdentityChoice = serde_json::from_value(v).map_err(|source| {
                        MountError::from(CloneError::RecordedIdentityUnreadable { source })
                    })?;
                    check_recorded_identity(&c, identity_req, state.dir())?;
                    Some(c)
                }
                None if fresh => {
                    let c = IdentityChoice::decide(&found, identity_req, seed)?;
                    state.record_extra(
                        IDENTITY_STATE_KEY,
                        serde_json::to_value(&c).expect("identifiers serialize"),
                    )?;
                    Some(c)
                }
                // A clone made before sidfs changed identifiers keeps its master's.
                None => None,
            };
            let mapping = match &chosen {
                Some(c) if !c.changes.is_empty() => Some(Arc::new(IdentityMapping::new(c)?)),
                _ => None,
            };
            let stage = build_stage_cached(
                survey,
                &choice,
                mapping,
                master.size(),
                &mut survey_cache.facts,
            )
            .map_err(|e| MountError::from(CloneError::from(e)))?;
            info!("machine SID {} becomes {}", choice.old, choice.new);
            for c in chosen.iter().flat_map(|c| &c.changes) {
                info!("{} {} becomes {}", c.kind, c.old, c.new);
            }
            identity = chosen;
            let stage = Arc::new(stage);
            sid_stage = Some(stage.clone());
            (Box::new(stage), Some(choice))
        }
    };
    survey_cache.store();
    let disk = Arc::new(CloneDisk::new(master, delta, stage, read_only));
    Ok(OpenClone {
        state,
        disk,
        sids,
        identity,
        created,
        survey_cache,
        sid_stage,
    })
}

/// A remount keeps the recorded identifiers; options asking for others are refused.
pub fn check_recorded_identity(
    recorded: &IdentityChoice,
    req: &IdentityRequest,
    dir: &Path,
) -> Result<(), MountError> {
    use crate::identity::IdentifierKind;
    if let Some(h) = &req.hostname {
        let now = recorded.new_value(IdentifierKind::Hostname);
        if !now.is_some_and(|n| n.eq_ignore_ascii_case(h)) {
            return fail(CloneError::HostnameMismatch {
                state_dir: dir.to_path_buf(),
                recorded: now.map(str::to_string),
                given: h.clone(),
            });
        }
    }
    if !req.keep.is_empty() && req.keep != recorded.kept {
        return fail(CloneError::KeepMismatch {
            state_dir: dir.to_path_buf(),
            recorded: recorded.kept.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prove that a plain copy refuses every option that would change its identity, and that
    /// a clone with a new SID takes them.
    #[test]
    fn keep_sid_refuses_identity_options() {
        let sid: MachineSid = "S-1-5-21-1-2-3".parse().unwrap();
        let plain = CloneSpec {
            keep_sid: true,
            ..CloneSpec::default()
        };
        assert!(plain.check_options().is_ok());
        let with = |f: &dyn Fn(&mut CloneSpec)| {
            let mut spec = plain.clone();
            f(&mut spec);
            spec.check_options().unwrap_err().to_string()
        };
        assert!(with(&|s| s.sid = Some(sid)).contains("--sid"));
        assert!(with(&|s| s.old_sid = Some(sid)).contains("--old-sid"));
        assert!(with(&|s| s.identity.hostname = Some("PC-1".into())).contains("--hostname"));
        assert!(
            with(&|s| s.identity.keep = vec![crate::identity::IdentifierKind::Wsus])
                .contains("--keep")
        );
        let resid = CloneSpec {
            sid: Some(sid),
            identity: IdentityRequest {
                hostname: Some("PC-1".into()),
                keep: Vec::new(),
            },
            ..CloneSpec::default()
        };
        assert!(resid.check_options().is_ok());
    }

    /// Prove that clone refusals are typed: the variant carries the option, the old SID text and
    /// the typed parse error, and the sentence is the one the user always read.
    #[test]
    fn refusals_are_typed() {
        let spec = CloneSpec {
            keep_sid: true,
            old_sid: "S-1-5-21-1-2-3".parse().ok(),
            ..CloneSpec::default()
        };
        match spec.check_options() {
            Err(MountError::Clone(e)) => {
                assert!(matches!(
                    *e,
                    CloneError::KeepSidWith {
                        option: "--old-sid"
                    }
                ))
            }
            other => panic!("expected a typed clone refusal, got {other:?}"),
        }
        let source = "S-1-5-21-x".parse::<MachineSid>().unwrap_err();
        let e = MountError::from(CloneError::RecordedOldSidUnreadable {
            state_dir: "/st".into(),
            text: "S-1-5-21-x".into(),
            source,
        });
        let cause = std::error::Error::source(&e).and_then(|c| c.source());
        assert!(cause.is_some_and(|c| c.is::<crate::sid::SidError>()));
        assert!(e.to_string().starts_with(
            "state /st records the old SID \"S-1-5-21-x\", which sidfs cannot read ("
        ));
        assert!(e.to_string().ends_with("): pass another --state"));
    }
}
