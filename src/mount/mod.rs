//! Mounting, unmounting and describing clones: the glue between the CLI, the clone state, the
//! overlay and the FUSE session. Every refusal is one sentence that says what to do
//! ([`MountError`]).
//!
//! One job per file: [`precheck`] (what can be refused before anything is created), this file
//! (claiming the state and opening the clone), [`session`] (serving it, signals), [`unmount`],
//! [`status`], [`daemon`] (the background process `sidfs mount` starts and waits for).

pub mod daemon;
mod error;
mod precheck;
mod session;
mod status;
mod unmount;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use crate::clone::{default_state_dir, open_clone, state_root, CloneSpec, OpenClone};
use crate::fuse::MountKind;
use crate::overlay::{state, CloneDisk, CloneState};
pub use error::{MountError, Occupant};
pub use precheck::precheck;
pub use session::serve;
pub use status::{status, CloneStatus};
pub use unmount::unmount;

#[derive(Clone, Debug)]
pub struct MountRequest {
    pub clone: CloneSpec,
    pub mountpoint: PathBuf,
    pub state: Option<PathBuf>,
    pub read_only: bool,
    pub threads: usize,
    pub allow_other: bool,
}

/// What `clone.json` shows inside a mounted clone.
#[derive(Serialize)]
pub struct CloneInfo<'a> {
    pub sidfs_version: &'static str,
    pub seed: u64,
    pub seed_was_random: bool,
    pub master: &'a state::MasterRecord,
    pub master_path_now: PathBuf,
    pub state_dir: PathBuf,
    pub block_size: u32,
    pub disk_size: u64,
    pub read_only: bool,
    pub patch_stage: &'static str,
    pub old_sid: Option<String>,
    pub new_sid: Option<String>,
    /// The computer name, MachineGuid, WSUS and MSDTC ids: old and new values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::identity::IdentityChoice>,
}

/// A clone ready to be served: state claimed and locked, delta open, mountpoint checked.
pub struct PreparedClone {
    /// Held until the process ends, so no other mount of this state starts meanwhile.
    pub claim: state::StateClaim,
    pub state: CloneState,
    pub disk: Arc<CloneDisk>,
    pub kind: MountKind,
    pub info_json: Vec<u8>,
    pub created: bool,
}

/// Checks the request, claims the state directory and opens the clone. A mount that finds the
/// state claimed by another refuses as "in use" and touches nothing; a first mount that fails
/// removes what it created (under its claim, so never another mount's files).
pub fn prepare(req: &MountRequest, state_dir: &Path) -> Result<PreparedClone, MountError> {
    let kind = match precheck(req, state_dir) {
        Ok(kind) => kind,
        Err(e) => {
            discard_unserved(state_dir);
            return Err(e);
        }
    };
    let claim = state::StateClaim::take(state_dir)?;
    let fresh = !claim.holds_clone();
    match open_claimed(req, state_dir) {
        Ok((state, disk, info_json, created)) => Ok(PreparedClone {
            claim,
            state,
            disk,
            kind,
            info_json,
            created,
        }),
        Err(e) => {
            if fresh {
                claim.discard();
            }
            Err(e)
        }
    }
}

/// Removes an existing state directory that holds no clone (the log and lock of a background
/// mount refused before it claimed the directory), unless another mount has claimed it.
fn discard_unserved(state_dir: &Path) {
    if !state_dir.is_dir() {
        return;
    }
    if let Ok(claim) = state::StateClaim::take(state_dir) {
        if !claim.holds_clone() {
            claim.discard();
        }
    }
}

/// [`prepare`] once the state directory is claimed: the clone, its disk, its clone.json and
/// whether it was just created.
fn open_claimed(
    req: &MountRequest,
    state_dir: &Path,
) -> Result<(CloneState, Arc<CloneDisk>, Vec<u8>, bool), MountError> {
    let state_dir =
        &std::fs::canonicalize(state_dir).map_err(|source| MountError::StateDirUnresolvable {
            state_dir: state_dir.to_path_buf(),
            source,
        })?;
    let OpenClone {
        state,
        disk,
        sids,
        identity,
        created,
        ..
    } = open_clone(&req.clone, state_dir, req.read_only)?;
    let meta = state.meta();
    let info = CloneInfo {
        sidfs_version: env!("CARGO_PKG_VERSION"),
        seed: meta.seed,
        seed_was_random: meta.seed_was_random,
        master: &meta.master,
        master_path_now: std::fs::canonicalize(&req.clone.master)
            .unwrap_or_else(|_| req.clone.master.clone()),
        state_dir: state.dir().to_path_buf(),
        block_size: meta.block_size,
        disk_size: disk.size(),
        read_only: req.read_only,
        patch_stage: disk.stage_name(),
        old_sid: sids.map(|c| c.old.to_string()),
        new_sid: sids.map(|c| c.new.to_string()),
        identity,
    };
    let mut info_json = serde_json::to_vec_pretty(&info).expect("clone info serializes");
    info_json.push(b'\n');
    Ok((state, disk, info_json, created))
}
