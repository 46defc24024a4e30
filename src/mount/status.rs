//! `sidfs status`: what a clone is and where it is mounted, read without taking its lock.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::MountError;
use crate::clone::IDENTITY_STATE_KEY;
use crate::mountinfo;
use crate::overlay::state;

/// What `sidfs status` reports about a clone.
#[derive(Serialize)]
pub struct CloneStatus {
    pub state_dir: PathBuf,
    /// Where the clone is mounted: the mountpoint its live process serves, or a dead mount.
    pub mountpoint: Option<PathBuf>,
    pub serving_pid: Option<u32>,
    /// Other mounts of this state whose process is gone (kill -9): `sidfs umount` clears them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dead_mounts: Vec<PathBuf>,
    pub seed: u64,
    pub old_sid: Option<String>,
    pub new_sid: Option<String>,
    /// The clone's identifiers as recorded in state.json.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<serde_json::Value>,
    pub master: state::MasterRecord,
    pub block_size: u32,
    pub delta_blocks: u64,
    pub delta_bytes: u64,
    pub bytes_on_disk: u64,
}

/// Status of a clone given its state directory or its mountpoint.
pub fn status(target: &Path) -> Result<CloneStatus, MountError> {
    let state_dir = match mountinfo::mount_at(target).and_then(|m| m.sidfs_state()) {
        Some(st) => st,
        None => std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf()),
    };
    let mut mounted: Vec<PathBuf> = mountinfo::mounts()
        .into_iter()
        .filter(|m| m.sidfs_state().as_deref() == Some(state_dir.as_path()))
        .map(|m| m.mountpoint)
        .collect();
    let holder = state::lock_record(&state_dir);
    // The live mount is the one the lock's holder recorded; any other is dead. A holder that
    // recorded none (an export, or a release that did not record it) leaves the first.
    let live = match holder.as_ref().and_then(|r| r.mountpoint.as_ref()) {
        Some(mp) => mounted
            .iter()
            .position(|m| m == mp)
            .map(|i| mounted.remove(i)),
        None if mounted.is_empty() => None,
        None => Some(mounted.remove(0)),
    };
    let (mountpoint, dead_mounts) = match live {
        Some(mp) => (Some(mp), mounted),
        None if holder.is_none() && !mounted.is_empty() => (Some(mounted.remove(0)), mounted),
        None => (None, mounted),
    };
    let state_file = state_dir.join(state::STATE_FILE);
    if !state_file.exists() {
        return Err(MountError::NotAClone {
            target: target.to_path_buf(),
        });
    }
    let meta = state::read_meta(&state_file)?;
    let (delta_blocks, bytes_on_disk) = read_delta_usage(&state_dir)?;
    Ok(CloneStatus {
        mountpoint,
        serving_pid: holder.map(|r| r.pid),
        dead_mounts,
        seed: meta.seed,
        old_sid: meta.old_sid.clone(),
        new_sid: meta.new_sid.clone(),
        identity: meta.extra.get(IDENTITY_STATE_KEY).cloned(),
        block_size: meta.block_size,
        delta_blocks,
        delta_bytes: delta_blocks * u64::from(meta.block_size),
        bytes_on_disk,
        master: meta.master,
        state_dir,
    })
}

/// Counts the blocks in the on-disk map (what survives a crash right now) and the bytes the state
/// occupies, without taking the clone's lock.
fn read_delta_usage(dir: &Path) -> Result<(u64, u64), MountError> {
    use std::os::unix::fs::MetadataExt;
    let map = std::fs::read(dir.join(crate::overlay::delta::MAP_FILE)).map_err(|source| {
        MountError::BlockMapUnreadable {
            state_dir: dir.to_path_buf(),
            source,
        }
    })?;
    let blocks = map
        .get(4096..)
        .unwrap_or(&[])
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum();
    let mut bytes = 0;
    let entries = std::fs::read_dir(dir).map_err(|source| MountError::StateDirUnlistable {
        state_dir: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        if let Ok(m) = entry.and_then(|e| e.metadata()) {
            bytes += m.blocks() * 512;
        }
    }
    Ok((blocks, bytes))
}
